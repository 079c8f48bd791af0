"""One Dataset API for synthetic and real faces, and identity-aware splits.

Item format
-----------
Every face dataset in ``drdpgan.data`` (:class:`SyntheticFaceDataset` here, the real-photo
datasets in ``drdpgan/data/real.py``) returns from ``__getitem__`` a dict::

    {
        "image":    FloatTensor (3, H, W), RGB in [-1, 1],
        "identity": int64 scalar tensor, the identity label 0 .. n_identities - 1 *within
                    this dataset* (contiguous; the order of the dataset's identity list),
        "index":    int, the item's position in this dataset,
        # optional keys
        "coeffs":   dict[str, FloatTensor (K,)]  -- synthetic only, the ground truth of the
                    face world (see drdpgan.data.world.COEFF_SIZES): "identity" (33) and
                    "albedo" (26) who the person is; "expression" (5, = the paper's F_emo),
                    "pose" (3, yaw/pitch/roll radians, = F_pos), "translation" (3),
                    "lighting" (7), "background" (49) -- the non-identity content,
        "landmarks": FloatTensor (5, 2), (x, y) pixel-index coordinates of left eye, right eye,
                    nose tip, mouth left, mouth right ("left" = smaller x in the image),
    }

and exposes

* ``labels``: ``np.ndarray`` (len,) int64, the identity label of every item (no image
  loading needed, so splits and samplers can use it);
* ``n_identities``: int, number of distinct labels (labels are ``0 .. n_identities - 1``);
* ``image_size``: int (square images).

Splits
------
* :func:`split_identities` -- identity-disjoint groups (train a recognizer on some people,
  verify on people it never saw);
* :func:`split_samples_within_identity` -- identity-overlapping train/test *items* (Table-1
  protocol: a classifier is tested on held-out images of the identities it was trained on);
* :class:`LabeledSubset` -- a ``Subset`` that keeps ``labels`` / ``n_identities`` consistent
  (optionally relabelling to ``0 .. k-1``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..repro import atomic_torch_save, config_hash
from .world import COEFF_SIZES, WORLD_VERSION, FaceWorld, WorldConfig

ITEM_KEYS = ("image", "identity", "index")
OPTIONAL_ITEM_KEYS = ("coeffs", "landmarks")


def uint8_to_float(img: torch.Tensor) -> torch.Tensor:
    """uint8 (…, 3, H, W) in [0, 255] -> float in [-1, 1]."""
    return img.float().div_(127.5).sub_(1.0)


def float_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (rounded)."""
    return ((img.clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


class FaceDataset(Dataset):
    """Base class: the attributes every face dataset exposes (see the module docstring)."""

    labels: np.ndarray
    n_identities: int
    image_size: int

    def __len__(self) -> int:
        return int(len(self.labels))


class SyntheticFaceDataset(FaceDataset):
    """Faces of the embedded world, rendered once (in batches) and held in memory as uint8.

    world_config:          the :class:`WorldConfig` (seed, nuisance ranges, ...)
    identities:            world identity indices; dataset label ``k`` = ``identities[k]``
    samples_per_identity:  items per identity; item ``(k, j)`` is world sample
                           ``sample_offset + j`` of identity ``identities[k]``
    image_size:            render size (default ``world_config.image_size``)
    cache_dir:             if given, the rendered tensors are saved to / loaded from one
                           ``.pt`` file there (named by a hash of everything above)
    Items are ordered identity-major: index ``k * samples_per_identity + j``.
    Extra attributes: ``world_identities`` (len,) world identity index per item,
    ``sample_indices`` (len,) world sample index per item, ``images`` (N, 3, H, W) uint8,
    ``coeffs`` dict of (N, K) float tensors, ``landmarks`` (N, 5, 2).
    """

    def __init__(
        self,
        world_config: WorldConfig | None,
        identities: Sequence[int],
        samples_per_identity: int,
        image_size: int | None = None,
        cache_dir: str | Path | None = None,
        sample_offset: int = 0,
        batch_size: int = 256,
        progress: bool = True,
        return_coeffs: bool = True,
    ):
        self.world_config = world_config or WorldConfig()
        self.identities = np.asarray(list(identities), dtype=np.int64)
        if len(np.unique(self.identities)) != len(self.identities):
            raise ValueError("identities must be distinct")
        self.samples_per_identity = int(samples_per_identity)
        self.image_size = int(image_size or self.world_config.image_size)
        self.sample_offset = int(sample_offset)
        self.return_coeffs = return_coeffs
        n_id, spi = len(self.identities), self.samples_per_identity
        self.n_identities = n_id
        self.labels = np.repeat(np.arange(n_id, dtype=np.int64), spi)
        self.world_identities = np.repeat(self.identities, spi)
        self.sample_indices = np.tile(np.arange(spi, dtype=np.int64) + self.sample_offset, n_id)

        path = None
        if cache_dir is not None:
            key = {
                "world": asdict(self.world_config),
                "identities": self.identities.tolist(),
                "spi": spi,
                "size": self.image_size,
                "offset": self.sample_offset,
                "world_version": WORLD_VERSION,
            }
            path = Path(cache_dir) / f"synthetic-{config_hash(key, 16)}.pt"
        if path is not None and path.is_file():
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            data = self._render_all(batch_size, progress)
            if path is not None:
                atomic_torch_save(data, path)
        self.images: torch.Tensor = data["images"]  # (N, 3, H, W) uint8
        self.coeffs: dict[str, torch.Tensor] = data["coeffs"]  # (N, K) float32 each
        self.landmarks: torch.Tensor = data["landmarks"]  # (N, 5, 2) float32
        assert self.images.shape[0] == len(self.labels)

    def _render_all(self, batch_size: int, progress: bool) -> dict:
        world = FaceWorld(self.world_config)
        N = len(self.labels)
        H = self.image_size
        images = torch.empty(N, 3, H, H, dtype=torch.uint8)
        coeffs = {k: torch.empty(N, n) for k, n in COEFF_SIZES.items()}
        landmarks = torch.empty(N, 5, 2)
        ids = torch.from_numpy(self.world_identities)
        smp = torch.from_numpy(self.sample_indices)
        starts = range(0, N, batch_size)
        if progress:
            try:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"render {N} faces @{H}px", unit="batch", leave=False)
            except ImportError:  # pragma: no cover
                pass
        for s in starts:
            out = world.render(ids[s:s + batch_size], smp[s:s + batch_size], H)
            images[s:s + batch_size] = float_to_uint8(out["image"])
            for k in coeffs:
                coeffs[k][s:s + batch_size] = out["coeffs"][k]
            landmarks[s:s + batch_size] = out["landmarks"]
        return {"images": images, "coeffs": coeffs, "landmarks": landmarks}

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        item = {
            "image": uint8_to_float(self.images[i]),
            "identity": torch.tensor(int(self.labels[i]), dtype=torch.int64),
            "index": i,
            "landmarks": self.landmarks[i],
        }
        if self.return_coeffs:
            item["coeffs"] = {k: v[i] for k, v in self.coeffs.items()}
        return item

    def image_tensor(self, indices=None) -> torch.Tensor:
        """All (or the given) images as one float tensor (n, 3, H, W) in [-1, 1]."""
        imgs = self.images if indices is None else self.images[torch.as_tensor(np.asarray(indices), dtype=torch.int64)]
        return uint8_to_float(imgs)


class LabeledSubset(FaceDataset):
    """A subset of a face dataset that keeps ``labels`` / ``n_identities`` consistent.

    ``relabel=True`` maps the labels present to ``0 .. k-1`` (in increasing order of the
    parent's labels) and rewrites ``item["identity"]`` accordingly; otherwise labels stay the
    parent's and ``n_identities`` is the parent's. ``item["index"]`` is the position in the
    subset; ``item["parent_index"]`` the position in the parent.
    """

    def __init__(self, dataset: FaceDataset, indices: Sequence[int], relabel: bool = False):
        self.dataset = dataset
        self.indices = np.asarray(list(indices), dtype=np.int64)
        parent = np.asarray(dataset.labels)[self.indices]
        self.image_size = getattr(dataset, "image_size", None)
        if relabel:
            uniq, inv = np.unique(parent, return_inverse=True)
            self.labels = inv.astype(np.int64)
            self.n_identities = int(len(uniq))
            self._map = {int(u): k for k, u in enumerate(uniq)}
        else:
            self.labels = parent.astype(np.int64)
            self.n_identities = int(dataset.n_identities)
            self._map = None

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[int(i)])
        item = dict(self.dataset[j])
        item["parent_index"] = j
        item["index"] = int(i)
        if self._map is not None:
            item["identity"] = torch.tensor(self._map[int(item["identity"])], dtype=torch.int64)
        return item


class IdentityUnion(FaceDataset):
    """Several face datasets of disjoint people as one: the k-th dataset's labels are offset by the identities of
    the ones before it, so ``n_identities`` is their sum (e.g. real training faces beside synthetic ones, one
    recognizer's classes). Images must share a size. Items hold ``image``, ``identity`` (offset), ``index`` (the
    position in the union) and ``part`` (which dataset it came from): the keys every part has, so batches collate."""

    def __init__(self, parts: Sequence[FaceDataset]):
        if not parts:
            raise ValueError("IdentityUnion needs at least one dataset")
        sizes = {int(getattr(p, "image_size", 0)) for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"the datasets' image sizes differ: {sorted(sizes)}")
        self.parts = list(parts)
        self.image_size = sizes.pop()
        self._offsets = np.cumsum([0] + [int(p.n_identities) for p in self.parts])
        self._starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.labels = np.concatenate([np.asarray(p.labels, dtype=np.int64) + off
                                      for p, off in zip(self.parts, self._offsets)])
        self.n_identities = int(self._offsets[-1])

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        item = self.parts[k][i - int(self._starts[k])]
        return {"image": item["image"], "identity": torch.tensor(int(item["identity"]) + int(self._offsets[k]),
                                                                 dtype=torch.int64), "index": i, "part": k}


def split_identities(ids: Sequence[int], fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Shuffle ``ids`` (seeded) and cut them into identity-disjoint groups.

    ``fractions`` must sum to <= 1; group sizes are ``floor(f * n)`` except that when the
    fractions sum to 1 the last group takes the remainder (every id is used). Each group is
    returned sorted.
    """
    ids = np.asarray(list(ids), dtype=np.int64)
    fr = np.asarray(list(fractions), dtype=np.float64)
    if (fr < 0).any() or fr.sum() > 1 + 1e-9:
        raise ValueError("fractions must be >= 0 and sum to <= 1")
    perm = np.random.default_rng(seed).permutation(len(ids))
    sizes = np.floor(fr * len(ids)).astype(int)
    if abs(fr.sum() - 1) < 1e-9:
        sizes[-1] = len(ids) - sizes[:-1].sum()
    out, s = [], 0
    for n in sizes:
        out.append(np.sort(ids[perm[s:s + n]]))
        s += n
    return out


def split_samples_within_identity(labels: Sequence[int], test_fraction: float = 0.2, seed: int = 0
                                  ) -> tuple[np.ndarray, np.ndarray]:
    """Identity-overlapping item split: ``(train_indices, test_indices)``, both sorted.

    For every identity with ``n >= 2`` items, ``max(1, round(test_fraction * n))`` (but at most
    ``n - 1``) random items go to test, the rest to train; identities with a single item stay
    in train. No item is in both.
    """
    labels = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        idx = idx[rng.permutation(len(idx))]
        n_test = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(test_fraction * len(idx)))))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


class CoefficientFaces(FaceDataset):
    """Face images with 3D-prior targets from anywhere: ``images`` ``(N,3,H,W)`` uint8, ``expression``
    ``(N,Ke)`` and ``pose`` ``(N,3)`` float (for real faces: landmark pseudo-labels,
    :mod:`drdpgan.landmark_labels`). :meth:`concat` joins several (e.g. rendered faces with true
    coefficients and real faces with pseudo-labels, the real ones repeated). Items carry
    ``coeffs = {"expression", "pose"}`` and identity 0 (the 3D prior ignores identity)."""

    def __init__(self, images: torch.Tensor, expression, pose):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be (N,3,H,W) uint8, got {tuple(images.shape)} {images.dtype}")
        self.images = images
        self.coeffs = {"expression": torch.as_tensor(np.asarray(expression), dtype=torch.float32),
                       "pose": torch.as_tensor(np.asarray(pose), dtype=torch.float32)}
        n = len(images)
        if any(len(v) != n for v in self.coeffs.values()):
            raise ValueError(f"{n} images but {[len(v) for v in self.coeffs.values()]} coefficient rows")
        self.labels = np.zeros(n, dtype=np.int64)
        self.n_identities = 1
        self.image_size = int(images.shape[-1])

    @classmethod
    def concat(cls, parts: Sequence[tuple["CoefficientFaces", int]]) -> "CoefficientFaces":
        """``[(dataset, repeats), ...]`` -> one dataset (each dataset's items ``repeats`` times)."""
        return cls(torch.cat([d.images.repeat(r, 1, 1, 1) for d, r in parts]),
                   torch.cat([d.coeffs["expression"].repeat(r, 1) for d, r in parts]),
                   torch.cat([d.coeffs["pose"].repeat(r, 1) for d, r in parts]))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        return {"image": uint8_to_float(self.images[i]), "identity": torch.tensor(0, dtype=torch.int64), "index": i,
                "coeffs": {k: v[i] for k, v in self.coeffs.items()}}

    def image_tensor(self, indices=None) -> torch.Tensor:
        imgs = self.images if indices is None else self.images[torch.as_tensor(np.asarray(indices), dtype=torch.int64)]
        return uint8_to_float(imgs)
