"""Continue a StyleGAN2 pretraining checkpoint under changed training settings (a measurement script):

    FROM_CKPT=path/to/ckpt_NNNNNNN.pt .venv/bin/python scripts/stylegan2_diagnostics.py NAME STEPS 'JSON' [PROFILE=lfw]

Copies the checkpoint into ``artifacts/pretrain/<profile>/diagnostics/NAME`` with its stored training config replaced
by the profile's recipe (``drdpgan.pretrain.STYLEGAN2_RECIPES``) with ``JSON`` overriding
:class:`~drdpgan.train_stylegan2.TrainConfig` fields, and trains ``STEPS`` more steps there on the profile's training
faces (the networks, optimisers and data order go on from the checkpoint). Prints D's logits and loss in 100-step
means and the pixel Frechet distance of the EMA generator at the end; the samples are in the folder. For example
the lfw transfer from its step-500 discriminator warm-up (``stylegan2-try2-ramp1000``) with G at 2e-4:

    FROM_CKPT=artifacts/pretrain/lfw/stylegan2-try2-ramp1000/checkpoints/ckpt_0000500.pt \\
        scripts/stylegan2_diagnostics.py glr2e-4 500 '{"g_lr": 2e-4}'
"""
import csv
import json
import os
import sys
from dataclasses import replace

import numpy as np
import torch

from drdpgan import stages
from drdpgan.notebook_params import stylegan2_config
from drdpgan.pretrain import STYLEGAN2_RECIPES, work_dir
from drdpgan.train_stylegan2 import train_stylegan2

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
name, steps, ovr = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
profile = sys.argv[4] if len(sys.argv) > 4 else "lfw"
ck = torch.load(os.environ["FROM_CKPT"], map_location="cpu", weights_only=False)
start = int(ck["step"])
tcfg = replace(STYLEGAN2_RECIPES[profile], steps=start + steps, metric_every=steps, sample_every=max(50, steps // 4),
               checkpoint_every=10**6, **ovr)
ck["tcfg"] = tcfg.to_dict()
out = work_dir(profile, "diagnostics") / name
(out / "checkpoints").mkdir(parents=True, exist_ok=True)
torch.save(ck, out / "checkpoints" / f"ckpt_{start:07d}.pt")
p01 = stages.notebook_params("01_data", profile)
gcfg = stylegan2_config(p01, stages.notebook_params("04_stylegan2", profile))
data = stages.face_data(p01, False)
_, metrics = train_stylegan2(data["train"], gcfg, tcfg, out, progress=False)
with open(out / "losses.csv", newline="") as f:
    rows = [r for r in csv.DictReader(f) if int(r["step"]) > start]
for s in range(0, len(rows), 10):
    chunk = rows[s:s + 10]
    mean = {k: np.mean([float(r[k]) for r in chunk if r[k]]) for k in ("loss_D", "D_real", "D_fake", "r1")}
    print(f"steps {chunk[0]['step']}-{chunk[-1]['step']}: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
print(name, json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}), flush=True)
