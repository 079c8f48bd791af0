"""Configuration flows forward: each notebook's parameters cell repeats the library's defaults
(drdpgan.notebook_params) exactly, and the library resolves a profile without notebooks/ or Papermill."""

import subprocess
import sys

import pytest

from drdpgan.notebook_params import NOTEBOOK_PARAMS, defaults
from drdpgan.pipeline import PipelineError, check_against_library, declared_parameters, list_notebooks


@pytest.mark.parametrize("path", list_notebooks(), ids=lambda p: p.stem)
def test_parameters_cell_matches_library(path):
    assert path.stem in NOTEBOOK_PARAMS
    declared = declared_parameters(path)  # raises on any difference
    assert list(declared) == list(defaults(path.stem))


def test_every_library_entry_has_a_notebook():
    assert sorted(NOTEBOOK_PARAMS) == sorted(p.stem for p in list_notebooks())


def test_a_drifted_cell_is_refused(tmp_path):
    path = tmp_path / "03_prior3d.ipynb"
    lib = defaults("03_prior3d")
    drift = {k: repr(v) for k, v in lib.items()}
    drift["epochs"] = "4"
    with pytest.raises(PipelineError, match="epochs = 4, but drdpgan.notebook_params says 3"):
        check_against_library(path, drift)
    with pytest.raises(PipelineError, match="differ from drdpgan.notebook_params"):
        check_against_library(path, {k: v for k, v in drift.items() if k != "lr"})


def test_library_resolves_profiles_without_notebooks_or_papermill(tmp_path):
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in ('papermill', 'nbformat'):\n"
            "        raise ImportError('papermill must not be needed')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "from drdpgan import stages\n"
            "p = stages.notebook_params('04_stylegan2', 'cpu')\n"
            "assert p['steps'] == 300 and p['channel_max'] == 128, p\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"DRDPGAN_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
