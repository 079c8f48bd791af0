"""pytest root configuration: notebooks checked by nbval run headless (static figures, no widgets)."""

import os

os.environ["DRDPGAN_HEADLESS"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
