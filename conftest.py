"""pytest root configuration for nbval: notebooks run headless (static figures, no widgets) and on
a fixed number of torch threads, so that trained numbers in checked cells repeat on any machine
(float reductions, and hence a training run, depend on the thread count)."""

import os

from drdpgan.notebook_tools import NOTEBOOK_THREADS

os.environ["DRDPGAN_HEADLESS"] = "1"
os.environ["OMP_NUM_THREADS"] = str(NOTEBOOK_THREADS)  # inherited by the kernels nbval starts
os.environ.setdefault("MPLBACKEND", "Agg")
