# drdpgan: two commands do everything on a fresh clone.
#   make reproduce [PROFILE=cpu|smoke|lfw|paper] [FORCE=1] [RETRAIN=1]   run the pipeline, write reports/<profile>/
#                  (RETRAIN=1: train the priors here instead of loading the shipped drdpgan/weights)
#   make pretrain [PROFILE=cpu] [THREADS=1] [HOURS=2]        pretrain what the profile does not ship yet (hours; resumable)
#   make stash [NETWORK=drdpgan] [PROFILE=cpu]               carry an unfinished pretraining run in pretrain_state/
#   make ablations [PROFILE=cpu] [THREADS=2] [HOURS=2]      Table 4's runs for notebook 13 (hours; resumable)
#   make test                                                nbval over the notebooks + unit tests + smoke metric tolerances
# Both create .venv and install the pinned environment first when needed.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= cpu
STAMP   := $(VENV)/.drdpgan-installed
PIP     := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install reproduce pretrain stash ablations test test-metrics unit nbval lab notebooks bench clean-artifacts

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	$(PIP) --no-deps facenet-pytorch==2.6.0
	$(PIP) --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name drdpgan --display-name "Python (drdpgan)" >/dev/null
	@touch $@

reproduce: $(STAMP)
	$(if $(RETRAIN),DRDPGAN_RETRAIN=1 ,)$(PY) -m drdpgan.pipeline --profile $(PROFILE) $(if $(FORCE),--force,)
	$(PY) -m drdpgan.bench drdpgan --profile $(PROFILE) --sizes 64 128 --batches 1 32


# The priors of a profile, then DR-DPGAN from them, each to its recipe (drdpgan/pretrain.py,
# drdpgan/pretrain_drdpgan.py), in a resumable folder under
# artifacts/pretrain/<profile>/; `python -m drdpgan.pretrain export --network N` ships a finished one.
# A network the profile already ships is skipped (RETRAIN=1 trains it again). HOURS=H: DR-DPGAN trains about H
# hours, then stops with a checkpoint and stashes the run in pretrain_state/ (commit it; the next call goes on).
THREADS ?= 0
pretrain: $(STAMP)
	for net in identity prior3d evaluator stylegan2; do \
		$(PY) -m drdpgan.pretrain $$net --profile $(PROFILE) --threads $(THREADS) $(if $(RETRAIN),,--unless-shipped) \
			|| exit 1; done
	$(PY) -m drdpgan.pretrain drdpgan --profile $(PROFILE) --threads $(THREADS) $(if $(RETRAIN),,--unless-shipped) \
		$(if $(HOURS),--max-hours $(HOURS) --stash,)
	$(PY) -m drdpgan.pretrain status --profile $(PROFILE)

# Carry an unfinished StyleGAN2 or DR-DPGAN pretraining run through git (drdpgan/run_stash.py): the next
# `make pretrain` on a fresh clone restores it and goes on. Commit pretrain_state/ after it.
NETWORK ?= drdpgan
stash: $(STAMP)
	$(PY) -m drdpgan.pretrain stash --network $(NETWORK) --profile $(PROFILE)

# Table 4 (drdpgan/pretrain_ablations.py): every experiment x seed trained with the DR-DPGAN recipe's first phase
# from the profile's priors, then measured; each finished run's result lands in pretrain_state/<profile>/ablations/
# (commit it; notebook 13 shows them with ablation_runs="pretrained"). HOURS=H: stop after about H hours with a
# checkpoint of the run in progress (the next call goes on).
ablations: $(STAMP)
	$(PY) -m drdpgan.pretrain ablations --profile $(PROFILE) --threads $(THREADS) $(if $(HOURS),--max-hours $(HOURS),)

# nbval over the notebooks, then the unit tests, in one pytest run (one summary line); the
# notebook-metric test compares the numbers the notebooks recorded (tests/test_notebook_metrics.py).
test: $(STAMP)
	$(PY) -m pytest -q notebooks tests --nbval-lax --nbval-current-env \
		--sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

# The smoke run's trained numbers against tests/smoke_metrics_reference.json (also part of `test`).
test-metrics: $(STAMP)
	$(PY) -m pytest -q tests/test_notebook_metrics.py -p no:cacheprovider

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
