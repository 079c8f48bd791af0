"""pytest root configuration.

nbval runs the notebooks headless (static figures, no widgets). Checked cells print only portable
output (shapes, counts, configurations, claims), so the kernels run on whatever thread count the
environment sets (``OMP_NUM_THREADS``; two when it is unset, the count the stored outputs were made
with). Trained numbers are compared with tolerances by ``tests/test_notebook_metrics.py``.

Every test session trains in a fresh artifact cache of its own (``DRDPGAN_ARTIFACTS``, removed at
the end), as on a fresh clone: a cache left by older code or other settings can never make a test
pass. Set ``DRDPGAN_ARTIFACTS`` yourself to reuse a cache across sessions.
"""

import os
import shutil
import tempfile

from drdpgan.notebook_tools import NOTEBOOK_THREADS

os.environ["DRDPGAN_HEADLESS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", str(NOTEBOOK_THREADS))  # inherited by the kernels nbval starts
os.environ.setdefault("MPLBACKEND", "Agg")

_OWN_CACHE = None
if not os.environ.get("DRDPGAN_ARTIFACTS"):
    _OWN_CACHE = tempfile.mkdtemp(prefix="drdpgan-test-artifacts-")
    os.environ["DRDPGAN_ARTIFACTS"] = _OWN_CACHE  # inherited by the kernels nbval starts
    # tests/test_notebook_metrics.py reads what nbval's kernels recorded in this session's cache:
    # the cache is new, so everything in it was written in this session
    os.environ["DRDPGAN_TEST_SESSION_CACHE"] = _OWN_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
