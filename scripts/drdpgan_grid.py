"""Look at a DR-DPGAN pretraining checkpoint: held-out faces, anonymized under two noises, recovered.

    .venv/bin/python scripts/drdpgan_grid.py CHECKPOINT OUT.png [PROFILE=cpu] [N=8]

CHECKPOINT: a training checkpoint of ``python -m drdpgan.pretrain drdpgan`` (``artifacts/pretrain/<profile>/
drdpgan/checkpoints/ckpt_*.pt``). Rows: original, anonymized (noise seed 0), anonymized (seed 1), recovered
from the seed-0 image after 8-bit storage, through E_P's bits and the public evaluation key
(:func:`drdpgan.protocol.run_paths`). Prints the per-row PSNR to the originals and how many payloads opened.
"""
import sys

import torch

from drdpgan import protocol, viz
from drdpgan.evaluate import psnr
from drdpgan.pretrain_drdpgan import _faces, _sample, checkpoint_model

torch.set_num_threads(1)
ckpt, out = sys.argv[1], sys.argv[2]
profile = sys.argv[3] if len(sys.argv) > 3 else "cpu"
n = int(sys.argv[4]) if len(sys.argv) > 4 else 8
model, _ = checkpoint_model(ckpt, profile)
_, heldout = _faces(profile, progress=False)
x = _sample(heldout, n).float()
p0, p1 = protocol.run_paths(model, x, seed=0), protocol.run_paths(model, x, seed=1)
rows = {"original": x, "anonymized (seed 0)": p0["anonymized"], "anonymized (seed 1)": p1["anonymized"],
        "recovered": p0["recovered"]}
for name, v in list(rows.items())[1:]:
    print(f"{name:20s} PSNR to the original {float(psnr(v, x)):.2f} dB")
print(f"payloads opened: {int(p0['opened'].sum())} of {n}")
viz.image_grid([list(v) for v in rows.values()], row_titles=list(rows)).savefig(out, dpi=80)
