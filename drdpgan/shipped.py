"""Pretrained weights shipped inside the package, with their provenance.

``drdpgan/weights/<profile>/<network>.pt`` are checkpoints in the package's one format
(:mod:`drdpgan.checkpoints`), their floating-point tensors stored as fp16 where the measured
metric does not move (the loader casts them back to fp32). ``drdpgan/weights/manifest.json``
describes each file::

    {"cpu/identity": {"file": "cpu/identity.pt", "sha256": ..., "bytes": ..., "dtype": "float16",
                      "network": "identity", "profile": "cpu", "kind": "identity_encoder",
                      "provenance": [one record per start/resume: commit, command, machine, ...],
                      "commits": [...], "steps": ..., "images_seen": ..., "train_seconds": ...,
                      "metrics": {...fp32 weights...}, "metrics_stored": {...the shipped fp16 weights...},
                      "check": {"metric": ..., "value": ..., "tolerance": ..., "eval_set": ...}}}

Every file is written by :func:`export` from a folder of ``python -m drdpgan.pretrain``, which
refuses a run whose provenance shows uncommitted code. ``tests/test_shipped_weights.py``
checks each file's sha256 and re-measures its ``check`` metric on a small fixed evaluation set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["WEIGHTS_DIR", "MANIFEST", "manifest", "available", "weight_path", "load", "sha256_of",
           "half_state_dict", "export"]

WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST = WEIGHTS_DIR / "manifest.json"


def manifest() -> dict[str, Any]:
    """The manifest (``{}`` when nothing is shipped)."""
    if not MANIFEST.is_file():
        return {}
    try:
        return json.loads(MANIFEST.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{MANIFEST}: not valid JSON ({e})") from e


def available(profile: str, network: str) -> bool:
    return f"{profile}/{network}" in manifest()


def _entry(profile: str, network: str) -> dict[str, Any]:
    entry = manifest().get(f"{profile}/{network}")
    if entry is None:
        raise FileNotFoundError(f"no shipped {network} weights for profile {profile!r} in {MANIFEST}")
    return entry


def weight_path(profile: str, network: str) -> Path:
    return WEIGHTS_DIR / _entry(profile, network)["file"]


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(profile: str, network: str, verify: bool = True):
    """``(model in eval mode, info)`` from the shipped file; ``verify`` checks its sha256 first."""
    from .checkpoints import CheckpointError, load_model

    entry = _entry(profile, network)
    path = WEIGHTS_DIR / entry["file"]
    if verify:
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in {MANIFEST.name} but missing (a partial checkout? "
                                  "git lfs is not used; re-clone)")
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            raise CheckpointError(f"{path}: sha256 {digest[:12]}... does not match the manifest's "
                                  f"{entry['sha256'][:12]}... (file changed or truncated)")
    model, info = load_model(path)
    info["manifest"] = entry
    return model, info


def half_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors as fp16 (integers and buffers like ``num_batches_tracked`` unchanged)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def read_provenance(folder: Path) -> list[dict[str, Any]]:
    f = folder / "provenance.jsonl"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no provenance log; weights must come from python -m drdpgan.pretrain")
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def export(profile: str, network: str, checkpoint: str | Path, folder: str | Path, metrics: dict[str, Any],
           metrics_stored: dict[str, Any], check: dict[str, Any], dtype: str = "float16",
           extra: dict[str, Any] | None = None, logs: list[Path] | None = None,
           provenance: list[dict[str, Any]] | None = None, referenced_parts: dict | None = None) -> dict[str, Any]:
    """Write ``weights/<profile>/<network>.pt`` from a pretraining checkpoint and its manifest entry.

    ``folder`` is the pretraining work folder (its ``provenance.jsonl`` goes into the manifest; a
    record with uncommitted code is refused). ``metrics`` were measured on the fp32 weights,
    ``metrics_stored`` on the stored ``dtype`` weights; ``check`` is the small re-measurement the
    tests repeat. ``provenance`` replaces the folder's records (for records tied to a commit by
    :func:`drdpgan.pretrain.attest_provenance`). ``referenced_parts`` (a DR-DPGAN's frozen parts that
    equal shipped networks, :func:`drdpgan.checkpoints.strip_referenced_parts`) are left out of the file."""
    from .checkpoints import read_checkpoint
    from .repro import atomic_torch_save, atomic_write_bytes, atomic_write_json

    folder = Path(folder)
    prov = read_provenance(folder) if provenance is None else provenance
    dirty = [p for p in prov if p.get("dirty") is not False or not p.get("commit")]
    if dirty:
        raise ValueError(f"{folder}/provenance.jsonl: {len(dirty)} start(s) ran with uncommitted or unknown code "
                         f"(first: {dirty[0].get('time')}); a shipped file must come from committed code")
    payload = read_checkpoint(checkpoint)
    if referenced_parts:
        from .checkpoints import strip_referenced_parts

        strip_referenced_parts(payload, referenced_parts)
    if dtype == "float16":
        payload["state_dict"] = half_state_dict(payload["state_dict"])
    elif dtype != "float32":
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    payload["metrics"] = metrics_stored
    rel = f"{profile}/{network}.pt"
    out = WEIGHTS_DIR / rel
    atomic_torch_save(payload, out)
    log_dir = WEIGHTS_DIR / profile / f"{network}_logs"  # training curves and samples, for the notebooks
    shipped_logs = {}
    for src in logs or []:
        dst = log_dir / Path(src).name
        atomic_write_bytes(dst, Path(src).read_bytes())
        shipped_logs[dst.relative_to(WEIGHTS_DIR).as_posix()] = sha256_of(dst)
    entry = {"file": rel, "sha256": sha256_of(out), "bytes": out.stat().st_size, "dtype": dtype, "logs": shipped_logs,
             "network": network, "profile": profile, "kind": payload["kind"],
             "commits": sorted({p["commit"] for p in prov}), "provenance": prov,
             "metrics": metrics, "metrics_stored": metrics_stored, "check": check, **(extra or {})}
    man = manifest()
    man[f"{profile}/{network}"] = entry
    atomic_write_json(MANIFEST, dict(sorted(man.items())))
    return entry
