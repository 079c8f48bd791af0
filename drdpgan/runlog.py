"""The run folder every resumable trainer writes (StyleGAN2, DR-DPGAN): resumable data order,
CSV logs, rotating checkpoints.

    out_dir/checkpoints/ckpt_0000100.pt   atomic; the last ``keep`` kept (:func:`save_rotating`)
    out_dir/losses.csv                    one row per ``log_every`` steps (:class:`CSVLog`)

A resume loads :func:`latest_checkpoint` and first drops the CSV rows logged after it
(:func:`rewrite_csv_upto`), so a killed run's logs end where its state does. Data order comes from
:class:`EpochSampler`, a pure function of (seed, position): the resumed run draws the same batches.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch.utils.data import Sampler

from .repro import atomic_torch_save, atomic_write_text, make_generator, to_jsonable


class DictConfig:
    """Mixin of a trainer's config dataclass: ``to_dict`` (JSON types, as stored in checkpoints) and
    ``from_dict`` (nested configs and tuples rebuilt; keys the class no longer has are ignored, and
    fields a checkpoint predates take their defaults, so old runs still resume)."""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        from .checkpoints import config_from_dict

        names = {f.name for f in fields(cls)}
        return config_from_dict(cls, {k: v for k, v in d.items() if k in names})

__all__ = ["EpochSampler", "checkpoint_dir", "checkpoint_step", "latest_checkpoint", "save_rotating", "rewrite_csv_upto",
           "CSVLog",
           "DictConfig"]


class EpochSampler(Sampler[int]):
    """Seeded per-epoch permutations with a resumable position.

    Epoch e uses ``torch.randperm(n, generator=make_generator(seed * 1_000_003 + e))``, so the
    index stream is a pure function of (seed, position) and a resumed run can start in the
    middle of an epoch without replaying it.
    """

    def __init__(self, n: int, seed: int, start: int = 0):
        self.n, self.seed, self.start = int(n), int(seed), int(start)

    def __iter__(self) -> Iterator[int]:
        pos = self.start
        epoch, off = divmod(pos, self.n)
        while True:
            perm = torch.randperm(self.n, generator=make_generator(self.seed * 1_000_003 + epoch)).tolist()
            for i in perm[off:]:
                yield i
            epoch, off = epoch + 1, 0

    def __len__(self) -> int:  # infinite stream; DataLoader only needs this for len()
        return 2**31


def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "checkpoints"


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``out_dir/checkpoints`` (or None)."""
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return None
    cks = sorted(d.glob("ckpt_*.pt"))
    return cks[-1] if cks else None


def checkpoint_step(path: str | os.PathLike) -> int:
    """The step in a checkpoint's name (``ckpt_0001200.pt`` -> 1200), without loading it."""
    return int(Path(path).stem.split("_")[-1])


def save_rotating(state: Mapping[str, Any], out_dir: str | os.PathLike, step: int, keep: int) -> Path:
    """Write ``out_dir/checkpoints/ckpt_<step>.pt`` atomically and keep only the newest ``keep``."""
    path = atomic_torch_save(dict(state), checkpoint_dir(out_dir) / f"ckpt_{step:07d}.pt")
    for old in sorted(checkpoint_dir(out_dir).glob("ckpt_*.pt"))[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def states_of(objects: Mapping[str, Any]) -> dict[str, Any]:
    """``{name: obj.state_dict()}``: the networks and optimisers a trainer's checkpoint holds."""
    return {name: obj.state_dict() for name, obj in objects.items()}


def load_states(checkpoint: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Load every ``objects[name]`` from ``checkpoint[name]`` (the inverse of :func:`states_of`)."""
    for name, obj in objects.items():
        obj.load_state_dict(checkpoint[name])


def rewrite_csv_upto(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a crash after the last checkpoint), keeping the header."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    si = header.index("step") if "step" in header else 0
    keep = [r for r in body if r and int(float(r[si])) <= step]
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + keep)
    atomic_write_text(path, buf.getvalue())


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


class CSVLog:
    """Append-only CSV with a fixed header (written when the file is new); missing keys stay empty.

    An existing file keeps its own columns in their order (a run resumed by newer code): columns the new header
    adds are appended after them and the file is rewritten once (atomically) with its old rows' new cells empty,
    so old rows never shift and the new columns are logged from then on."""

    def __init__(self, path: Path, header: list[str]):
        self.path = Path(path)
        rows = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
        old = rows[0] if rows else []
        self.header = old + [c for c in header if c not in old]
        if self.header != old:  # a new (or empty) file, or columns to add: old rows padded with empty cells
            atomic_write_text(self.path, _csv_text([self.header] + [r + [""] * (len(self.header) - len(r))
                                                                     for r in rows[1:]]))

    def write(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.header])
