"""Maintenance of the numbered notebooks (not used by the notebooks themselves).

    python -m drdpgan.notebook_tools execute-in-place notebooks/01_data.ipynb ...
    python -m drdpgan.notebook_tools from-percent SRC.py notebooks/NN_name.ipynb

``execute-in-place`` re-runs a notebook at its own defaults (the ``smoke`` profile) and stores
the outputs, which is what nbval compares against. ``from-percent`` builds a notebook from a
jupytext percent script (``# %%`` cells, ``# %% tags=["parameters"]`` for the parameters
cell), keeping the parameters tag; jupytext is a development dependency.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .repro import atomic_write_text, project_root

KERNEL_NAME = "drdpgan"
#: torch threads of every kernel whose outputs are stored or checked (here and by nbval, see the
#: root conftest.py): a training run's numbers depend on the thread count.
NOTEBOOK_THREADS = 2


def execute_in_place(path: Path, timeout: int = 1800, kernel_name: str = KERNEL_NAME) -> float:
    """Execute ``path`` at its defaults in ``notebooks/`` and write it back atomically."""
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    from .pipeline import ensure_kernel

    ensure_kernel(kernel_name)
    os.environ["OMP_NUM_THREADS"] = str(NOTEBOOK_THREADS)  # inherited by the kernel
    os.environ["DRDPGAN_HEADLESS"] = "1"
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    ep = ExecutePreprocessor(timeout=timeout, kernel_name=kernel_name)
    ep.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python (drdpgan)", "language": "python"}
    atomic_write_text(path, nbformat.writes(nb) + "\n")
    return time.perf_counter() - t0


def from_percent(src: Path, dst: Path) -> None:
    """Build ``dst`` (.ipynb) from a jupytext percent script, without outputs."""
    import jupytext
    import nbformat

    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (drdpgan)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    atomic_write_text(dst, nbformat.writes(nb) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.notebook_tools")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute-in-place", help="run notebooks at their defaults and store outputs")
    ex.add_argument("paths", nargs="+", type=Path)
    fp = sub.add_parser("from-percent", help="build a notebook from a jupytext percent script")
    fp.add_argument("src", type=Path)
    fp.add_argument("dst", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "execute-in-place":
        for p in args.paths:
            p = p if p.is_absolute() else (Path.cwd() / p)
            print(f"{p.relative_to(project_root())}: ", end="", flush=True)
            print(f"{execute_in_place(p):.1f} s")
    else:
        from_percent(args.src, args.dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
