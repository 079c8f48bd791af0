"""Carry an unfinished pretraining run from one machine (or session) to the next through git.

A pretraining run lives in ``artifacts/pretrain/<profile>/<network>/``, an ignored cache: a fresh
clone, or a machine that keeps nothing between sessions, starts it again from step 0, and a CPU
recipe of many hours never ends. :func:`stash` copies what the run needs to go on into the tracked
folder ``pretrain_state/<profile>/<network>/``; :func:`restore` (called by ``python -m
drdpgan.pretrain`` when the work folder has no checkpoint) puts it back, and the run resumes
**exactly** where it stopped (the trainer's resume is bit-identical, :mod:`drdpgan.train_drdpgan`)::

    python -m drdpgan.pretrain stash --network drdpgan --profile cpu    # then commit pretrain_state/

A stash is a *training state*, not a model: nothing but the pretraining command reads it, the
pipeline never loads it, and it is deleted once the run finishes and its model ships
(:mod:`drdpgan.shipped`). What it holds:

* the latest checkpoint, whole (weights and optimiser moments in their own dtype, the step, the
  data position, the log averages), except the frozen parts that equal shipped networks
  (:func:`drdpgan.checkpoints.strip_referenced_parts`: the DR-DPGAN's identity encoder and 3D
  prior), which it names by their sha256 and :func:`restore` loads back from ``drdpgan/weights``,
  and those that equal a stage cache it carries (:data:`STAGE_PARTS`);
* the run folder's other top-level files: stage caches (``code.pt``, ``mapper_init.pt``),
  ``provenance.jsonl``, the CSV logs and histories;
* ``stash.json``: the step, each file's sha256 (checked on restore), and the code state of the stash.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .repro import atomic_torch_save, atomic_write_json, project_root
from .shipped import sha256_of

__all__ = ["NETWORKS", "stash_dir", "stash", "restore", "STASH_NOTE"]

STASH_NOTE = ("resumable training state of an unfinished pretraining run (python -m drdpgan.pretrain); "
              "not a shipped model: nothing but that command loads it")

#: the networks whose runs keep their resumable state in ``checkpoints/`` (the priors' ``state/`` is not carried)
NETWORKS = ("stylegan2", "drdpgan")
#: the largest top-level file a stash carries besides the checkpoint (stage caches are ~10 MB)
MAX_FILE_BYTES = 32 * 2**20
#: model parts a stage cache of the run folder holds too: attribute -> (file, key of its state dict there). A
#: stash leaves such a part out of the checkpoint when it equals the cached one (DR-DPGAN's frozen binary code
#: mapping, Eq. 2-4, 6.8 MB, is ``code.pt``'s "mapping" while ``freeze_code_mapping`` holds)
STAGE_PARTS = {"binary_code": ("code.pt", "mapping")}


def stash_dir(profile: str, network: str, root: str | Path | None = None) -> Path:
    """``pretrain_state/<profile>/<network>/`` in the checkout (tracked, unlike ``artifacts/``)."""
    return Path(root or project_root()) / "pretrain_state" / profile / network


def stash(run_folder: str | Path, dest: str | Path, refs: dict[str, tuple[torch.nn.Module, dict[str, Any]]]
          | None = None) -> dict[str, Any]:
    """Copy the resumable state of ``run_folder`` into ``dest`` (replacing what was there) and return
    ``stash.json``'s content. ``refs``: the checkpoint's model parts to leave out, each a shipped network
    (:func:`drdpgan.checkpoints.strip_referenced_parts`, which refuses a part that differs from it)."""
    from .checkpoints import strip_referenced_parts
    from .pretrain import code_state
    from .runlog import checkpoint_step, latest_checkpoint

    run_folder, dest = Path(run_folder), Path(dest)
    ck_path = latest_checkpoint(run_folder)
    if ck_path is None:
        raise FileNotFoundError(f"{run_folder}: no checkpoint in checkpoints/ to stash")
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    if refs:
        payload = {"state_dict": ck["model"]}
        strip_referenced_parts(payload, refs)
        ck["model"], ck["referenced_parts"] = payload["state_dict"], payload["referenced_parts"]
    for attr, (name, key) in STAGE_PARTS.items():
        cached = torch.load(run_folder / name, map_location="cpu", weights_only=True)[key] \
            if (run_folder / name).is_file() else {}
        own = {k[len(attr) + 1:]: k for k in ck["model"] if k.startswith(attr + ".")}
        if own and set(own) == set(cached) and all(torch.equal(ck["model"][own[k]], cached[k]) for k in own):
            for k in own.values():
                del ck["model"][k]
            ck.setdefault("stage_parts", {})[attr] = [name, key]
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_torch_save(ck, tmp / ck_path.name)
    for f in sorted(run_folder.iterdir()):
        # not a finished run's model and measurements: those are exported (drdpgan.shipped), not stashed
        if f.is_file() and f.name not in (f"{run_folder.name}.pt", "final_metrics.json") and f.name[0] != ".":
            if f.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"{f}: {f.stat().st_size / 2**20:.0f} MiB, over the stash's {MAX_FILE_BYTES >> 20} "
                                 "MiB per file; a run folder holds stage caches and logs only")
            shutil.copy2(f, tmp / f.name)
    info = {"note": STASH_NOTE, "step": checkpoint_step(ck_path), "checkpoint": ck_path.name,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "code": code_state(),
            "referenced_parts": ck.get("referenced_parts", {}),
            "files": {f.name: sha256_of(f) for f in sorted(tmp.iterdir())}}
    atomic_write_json(tmp / "stash.json", info)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old)
    else:
        tmp.rename(dest)
    return info


def restore(dest: str | Path, run_folder: str | Path) -> dict[str, Any] | None:
    """Put the stash in ``dest`` back into ``run_folder`` when the folder has no checkpoint of its own
    (it never overwrites a run's own state); returns ``stash.json``'s content, or None when nothing was
    restored. Every file's sha256 is checked first, and each referenced part must still be the shipped
    file it names (:func:`drdpgan.checkpoints._fill_referenced_parts`)."""
    from .checkpoints import CheckpointError, _fill_referenced_parts
    from .runlog import checkpoint_dir, latest_checkpoint

    dest, run_folder = Path(dest), Path(run_folder)
    manifest = dest / "stash.json"
    if not manifest.is_file() or latest_checkpoint(run_folder) is not None:
        return None
    try:
        info = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest}: not valid JSON ({e})") from e
    for name, digest in info["files"].items():
        f = dest / name
        if not f.is_file():
            raise FileNotFoundError(f"{f}: listed in {manifest} but missing")
        if sha256_of(f) != digest:
            raise CheckpointError(f"{f}: sha256 does not match {manifest} (file changed or truncated)")
    ck = torch.load(dest / info["checkpoint"], map_location="cpu", weights_only=False)
    for attr, (name, key) in ck.pop("stage_parts", {}).items():
        cached = torch.load(dest / name, map_location="cpu", weights_only=True)[key]
        ck["model"].update({f"{attr}.{k}": v for k, v in cached.items()})
    if ck.get("referenced_parts"):
        payload = {"state_dict": ck["model"], "referenced_parts": ck.pop("referenced_parts")}
        _fill_referenced_parts(payload, dest / info["checkpoint"])
        ck["model"] = payload["state_dict"]
    run_folder.mkdir(parents=True, exist_ok=True)
    for name in info["files"]:
        if name != info["checkpoint"]:
            shutil.copy2(dest / name, run_folder / name)
    atomic_torch_save(ck, checkpoint_dir(run_folder) / info["checkpoint"])
    return info
