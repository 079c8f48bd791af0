# drdpgan: two commands do everything on a fresh clone.
#   make reproduce [PROFILE=cpu|smoke|lfw|paper] [FORCE=1]   run the pipeline, write reports/<profile>/
#   make test                                                unit tests + nbval over the notebooks
# Both create .venv and install the pinned environment first when needed.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
STAMP   := $(VENV)/.drdpgan-installed
PIP     := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install reproduce test unit nbval lab notebooks bench clean-artifacts

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps facenet-pytorch==2.6.0
	$(PIP) --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name drdpgan --display-name "Python (drdpgan)" >/dev/null
	@touch $@

reproduce: $(STAMP)
	$(PY) -m drdpgan.pipeline --profile $(PROFILE) $(if $(FORCE),--force,)
	$(PY) -m drdpgan.bench drdpgan --profile $(PROFILE) --sizes 64 128 --batches 1 32


# Unit tests and nbval in one pytest run (one summary line).
test: $(STAMP)
	$(PY) -m pytest -q tests notebooks --nbval-lax --nbval-current-env \
		--sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest -q tests

nbval: $(STAMP)
	$(PY) -m pytest -q notebooks --nbval-lax --nbval-current-env --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks

# Re-execute every notebook at its defaults and store the outputs (what nbval compares against).
notebooks: $(STAMP)
	$(PY) -m drdpgan.notebook_tools execute-in-place notebooks/[0-9][0-9]_*.ipynb

bench: $(STAMP)
	$(PY) -m drdpgan.bench render --sizes 32 64 128
	$(PY) -m drdpgan.bench drdpgan --profile $(PROFILE)

clean-artifacts:
	rm -rf artifacts
