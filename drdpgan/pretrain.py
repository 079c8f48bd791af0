"""Pretraining: train a profile's prior networks once, for hours, then ship the weights.

The paper starts from networks pretrained elsewhere (StyleGAN2-FFHQ, ArcFace, Deep3DFaceRecon).
This package trains its own, with its own training code, in a persistent work folder
``artifacts/pretrain/<profile>/<network>/`` that every invocation resumes from (a kill loses at
most ``checkpoint_every`` steps; the resumed run is bit-identical to an uninterrupted one on the
same machine and thread count, see :mod:`drdpgan.train_stylegan2`)::

    python -m drdpgan.pretrain stylegan2 --profile cpu [--steps N] [--threads 1]
    python -m drdpgan.pretrain status --profile cpu

``steps`` is the total to reach; raising it later continues the same run (the recipe below
must otherwise stay the same, which the trainer checks). Every start and resume appends one
line to ``provenance.jsonl`` in the work folder (code commit, whether the tree had
uncommitted changes, command, machine, threads, starting step), so the manifest of a shipped
weight file can say exactly which code produced it.

The recipes (:data:`STYLEGAN2_RECIPES`) are the library's defaults for pretraining, separate
from the notebooks' small live-training budgets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .repro import artifacts_root, project_root

__all__ = ["STYLEGAN2_RECIPES", "work_dir", "record_provenance", "pretrain_stylegan2", "main"]


def _stylegan2_recipes() -> dict[str, Any]:
    from .train_stylegan2 import TrainConfig

    # The cpu profile: the synthetic world at 64 px (12k training faces), generator of notebook 04's
    # cpu budget (channel_max 128, w_dim 128). Differences from the live 300-step budget, each
    # because the run is long: EMA half-life 10 kimg (StyleGAN2's own value; 1 kimg is for runs
    # that see a few thousand images), bf16 autocast (1.05 vs 1.65 s/step at 2 threads, and the same
    # pixel Frechet distance as fp32 after 300 steps: 10.46 vs 10.41, README), checkpoints every
    # 100 steps (a few minutes of CPU time).
    cpu = TrainConfig(steps=12000, batch_size=16, lr=0.001, ema_kimg=10.0, ema_rampup=0.05, seed=0,
                      log_every=10, sample_every=250, checkpoint_every=100, keep_checkpoints=2,
                      metric_every=500, metric_num=512, precision="bf16")
    return {"cpu": cpu, "lfw": replace(cpu)}


STYLEGAN2_RECIPES = _stylegan2_recipes()


def work_dir(profile: str, network: str) -> Path:
    """The persistent pretraining folder of one network (resumed by every invocation)."""
    return artifacts_root() / "pretrain" / profile / network


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True,
                              check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_state() -> dict[str, Any]:
    """The commit the code runs at and whether the package or tests differ from it."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--", "drdpgan", "pyproject.toml", "requirements.txt")
    return {"commit": commit, "dirty": None if dirty is None else bool(dirty)}


def record_provenance(out: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one start/resume record to ``out/provenance.jsonl`` and return it."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **code_state(),
           "command": " ".join([Path(sys.executable).name, "-m", "drdpgan.pretrain", *sys.argv[1:]]),
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "device": "cpu"}, **event}
    with open(out / "provenance.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def pretrain_stylegan2(profile: str, steps: int | None = None, progress: bool = True):
    """Train (or resume) the profile's StyleGAN2 with its pretraining recipe."""
    from . import stages
    from .models.stylegan2 import StyleGAN2Config
    from .train_stylegan2 import latest_checkpoint, train_stylegan2

    if profile not in STYLEGAN2_RECIPES:
        raise ValueError(f"no StyleGAN2 pretraining recipe for profile {profile!r}; "
                         f"known: {sorted(STYLEGAN2_RECIPES)}")
    p01 = stages.notebook_params("01_data", profile)
    p04 = stages.notebook_params("04_stylegan2", profile)
    gcfg = StyleGAN2Config(resolution=int(p01["image_size"]), z_dim=int(p04["w_dim"]), w_dim=int(p04["w_dim"]),
                           channel_max=int(p04["channel_max"]))
    tcfg = STYLEGAN2_RECIPES[profile]
    if steps is not None:
        tcfg = replace(tcfg, steps=int(steps))
    out = work_dir(profile, "stylegan2")
    ck = latest_checkpoint(out)
    start = 0 if ck is None else int(ck.stem.split("_")[-1])
    record_provenance(out, {"network": "stylegan2", "profile": profile, "start_step": start,
                            "target_steps": tcfg.steps})
    data = stages.face_data(p01, progress)
    return train_stylegan2(data["train"], gcfg, tcfg, out, progress=progress)


def status(profile: str) -> dict[str, Any]:
    """What each pretraining folder of ``profile`` holds: latest step and the last logged rows."""
    root = artifacts_root() / "pretrain" / profile
    out: dict[str, Any] = {}
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        cks = sorted((d / "checkpoints").glob("ckpt_*.pt"))
        info: dict[str, Any] = {"latest_checkpoint": cks[-1].name if cks else None}
        for name in ("losses.csv", "metrics.csv"):
            f = d / name
            if f.is_file():
                lines = f.read_text().strip().splitlines()
                info[name] = lines[-1] if len(lines) > 1 else None
        out[d.name] = info
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["stylegan2", "status"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="total steps to reach (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    if a.what == "status":
        print(json.dumps(status(a.profile), indent=1))
        return 0
    import torch

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.what == "stylegan2":
        _, metrics = pretrain_stylegan2(a.profile, a.steps, progress=not a.quiet)
        print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
