"""Seconds per DR-DPGAN training step of the cpu recipe, alone or under torchrun (README, "Several processes").

    .venv/bin/python scripts/ddp_step_time.py OUT_DIR [STEPS=12] [THREADS=2]
    torchrun --standalone --nproc_per_node=2 scripts/ddp_step_time.py OUT_DIR [STEPS=12] [THREADS=1]

The recipe's model around the shipped priors and its joint objective from the first step (no hiding warm-up,
untrained E_MLP and code mapping: speed does not depend on the weights), the recipe's global batch, into a
scratch OUT_DIR (deleted first). Prints the median seconds per step over the steps after the first two, from
rank 0's ``losses.csv``, and the images per second that makes.
"""
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from drdpgan import distributed as ddp
from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES, build_model
from drdpgan.train_drdpgan import train_drdpgan

out = Path(sys.argv[1])
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
ddp.init_from_env("cpu")
if ddp.is_main():
    shutil.rmtree(out, ignore_errors=True)
ddp.barrier()
model, _ = build_model("cpu", progress=False)
if model.fake_identity.cfg.bank_size > 0:  # random identities stand in for the mapper stage's bank
    model.fake_identity.set_bank(torch.randn(model.fake_identity.bank.shape, generator=torch.Generator().manual_seed(0)))
R = model.cfg.resolution
faces = [{"image": torch.rand(3, R, R, generator=torch.Generator().manual_seed(i)) * 2 - 1, "identity": i, "index": i}
         for i in range(64)]
cfg = replace(DRDPGAN_RECIPES["cpu"]["train"], steps=steps, hiding_warmup_steps=0, joint_lr_ramp_steps=0,
              log_every=1, eval_every=0, checkpoint_every=0)
train_drdpgan(model, faces, cfg, out, progress=False)
if ddp.is_main():
    sec = float(pd.read_csv(out / "losses.csv")["sec_per_step"].iloc[2:].median())
    print(f"world {ddp.world_size()}: {sec:.3f} s/step, {cfg.batch_size / sec:.2f} images/s (global batch {cfg.batch_size})")
ddp.shutdown()
