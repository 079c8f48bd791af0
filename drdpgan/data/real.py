"""Real aligned faces as a torch Dataset, read from a manifest written by ``data_scripts/prepare_*.py``.

Items have the same format as the synthetic faces' dataset::

    {"image": FloatTensor (3, H, W) in [-1, 1], "identity": int64 scalar tensor, "index": int}

Identity labels are ``0..n-1`` over the identity names of the selected items (the ``split``),
sorted (numerically when a name is an integer, e.g. CelebA ids); the unknown identity ``-1``
gets label ``-1`` and is not counted in ``n_identities``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .datasets import uint8_to_float

UNKNOWN_IDENTITY = "-1"
REQUIRED_COLUMNS = ("path", "identity", "split")


class ManifestError(ValueError):
    """A manifest that cannot be used: missing, malformed, or naming files that are not there."""


def _name_key(name: str) -> tuple:
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def read_manifest(manifest: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a manifest CSV as dicts, validated (columns, non-empty fields)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest not found (run a data_scripts/prepare_*.py script first)")
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ManifestError(f"{manifest}: empty file, expected a header {','.join(REQUIRED_COLUMNS)},source")
            header = [h.strip() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise ManifestError(f"{manifest}: header {header} lacks column(s) {missing}")
            rows = []
            for lineno, rec in enumerate(reader, start=2):
                if not rec or all(not x.strip() for x in rec):
                    continue
                if len(rec) != len(header):
                    raise ManifestError(f"{manifest}, line {lineno}: {len(rec)} fields, expected {len(header)} ({rec})")
                row = dict(zip(header, (x.strip() for x in rec)))
                for c in REQUIRED_COLUMNS:
                    if not row[c]:
                        raise ManifestError(f"{manifest}, line {lineno}: empty {c!r}")
                row["_line"] = str(lineno)
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{manifest}: not a readable CSV ({e})") from e
    return rows


class ManifestFaceDataset(Dataset):
    """Aligned real faces listed in ``<root>/<manifest>``.

    ``split``: ``"train"``/``"test"`` (or a sequence of them) to keep, None for all rows.
    ``size``: resize to ``size`` x ``size`` when the stored images differ (None: as stored).
    ``in_memory``: decode everything once into a uint8 array (fast epochs; ~12 KB per 64 px face).
    ``check_files``: verify at construction that every listed image exists.
    ``drop_unknown``: leave out images of unknown identity (``-1``, label -1), so labels are
    exactly ``0 .. n_identities - 1`` as in the synthetic dataset.

    Attributes (as the synthetic dataset, see ``drdpgan/data/datasets.py``): ``labels``,
    ``n_identities``, ``image_size``; plus ``identity_names``, ``paths``, ``splits``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | Sequence[str] | None = None,
        size: int | None = None,
        in_memory: bool = False,
        manifest: str = "manifest.csv",
        check_files: bool = True,
        drop_unknown: bool = False,
    ):
        self.root = Path(root)
        self.manifest_path = self.root / manifest
        rows = read_manifest(self.manifest_path)
        if split is not None:
            wanted = {split} if isinstance(split, str) else set(split)
            present = {r["split"] for r in rows}
            unknown = wanted - present
            if unknown and not present & wanted:
                raise ManifestError(f"{self.manifest_path}: no rows with split {sorted(unknown)} (splits present: {sorted(present)})")
            rows = [r for r in rows if r["split"] in wanted]
        if drop_unknown:
            rows = [r for r in rows if r["identity"] != UNKNOWN_IDENTITY]
        if not rows:
            raise ManifestError(f"{self.manifest_path}: no images{'' if split is None else f' in split {split!r}'}")
        if check_files:
            for r in rows:
                if not (self.root / r["path"]).is_file():
                    raise ManifestError(
                        f"{self.manifest_path}, line {r['_line']}: image {r['path']!r} not found under {self.root}"
                    )
        self.size = int(size) if size is not None else None
        self.paths = [r["path"] for r in rows]
        self.splits = [r["split"] for r in rows]
        self.sources = [r.get("source", "") for r in rows]
        names = [r["identity"] for r in rows]
        self.identity_names = sorted({n for n in names if n != UNKNOWN_IDENTITY}, key=_name_key)
        self.name_to_label = {n: i for i, n in enumerate(self.identity_names)}
        self.labels = np.array([self.name_to_label.get(n, -1) for n in names], dtype=np.int64)
        self.n_identities = len(self.identity_names)
        self._cache: np.ndarray | None = None
        if self.size is not None:
            self.image_size = self.size
        else:
            try:
                with Image.open(self.root / self.paths[0]) as im:
                    w, h = im.size
            except OSError as e:
                raise ManifestError(f"{self.manifest_path}: image {self.paths[0]!r} cannot be read ({e})") from e
            self.image_size = int(w)  # square by construction (prepare_* scripts); check_files reads no pixels
        if in_memory:
            first = self._load(0)
            cache = np.empty((len(self),) + first.shape, dtype=np.uint8)
            cache[0] = first
            for i in range(1, len(self)):
                a = self._load(i)
                if a.shape != first.shape:
                    raise ManifestError(
                        f"{self.manifest_path}: {self.paths[i]!r} is {a.shape[1]}x{a.shape[0]}, others "
                        f"{first.shape[1]}x{first.shape[0]}; pass size= to load them in memory"
                    )
                cache[i] = a
            self._cache = cache

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> np.ndarray:
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if self.size is not None and im.size != (self.size, self.size):
                    im = im.resize((self.size, self.size), Image.LANCZOS)
                return np.asarray(im, dtype=np.uint8).copy()
        except FileNotFoundError as e:
            raise ManifestError(f"{self.manifest_path}: image {self.paths[i]!r} not found under {self.root}") from e
        except OSError as e:
            raise ManifestError(f"{self.manifest_path}: image {self.paths[i]!r} cannot be read ({e})") from e

    def image_uint8(self, i: int) -> np.ndarray:
        """Item ``i`` as an (H, W, 3) uint8 array."""
        return self._cache[i] if self._cache is not None else self._load(i)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        a = self.image_uint8(i)
        img = uint8_to_float(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1))
        return {"image": img, "identity": torch.tensor(int(self.labels[i]), dtype=torch.int64), "index": i}

    def __repr__(self) -> str:
        return f"ManifestFaceDataset({str(self.root)!r}, n={len(self)}, identities={self.n_identities})"
