"""Dataset API, caching, identity-aware splits, and the eigenface difficulty measure."""

import numpy as np
import pytest
import torch

from drdpgan.data.datasets import (
    LabeledSubset,
    SyntheticFaceDataset,
    split_identities,
    split_samples_within_identity,
)
from drdpgan.data.difficulty import eigenface_verification
from drdpgan.data.world import COEFF_SIZES, FaceWorld, WorldConfig

CFG = WorldConfig(seed=1, n_identities=500, image_size=32)


@pytest.fixture(scope="module")
def small():
    return SyntheticFaceDataset(CFG, identities=[7, 3, 42], samples_per_identity=4, progress=False)


def test_item_format(small):
    assert len(small) == 12 and small.n_identities == 3 and small.image_size == 32
    assert small.labels.dtype == np.int64 and list(small.labels) == [0] * 4 + [1] * 4 + [2] * 4
    item = small[5]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["identity"].dtype == torch.int64 and item["identity"].ndim == 0 and int(item["identity"]) == 1
    assert item["index"] == 5
    assert item["landmarks"].shape == (5, 2)
    assert set(item["coeffs"]) == set(COEFF_SIZES)
    assert all(item["coeffs"][k].shape == (n,) for k, n in COEFF_SIZES.items())
    # the same item rendered directly by the world (item 5 = identity 3, sample 1)
    ref = FaceWorld(CFG).render(torch.tensor([3]), torch.tensor([1]), 32)
    assert (item["image"] - ref["image"][0]).abs().max() <= 1 / 127.5 + 1e-6
    assert torch.allclose(item["coeffs"]["pose"], ref["coeffs"]["pose"][0])
    # works with a DataLoader (default collate)
    batch = next(iter(torch.utils.data.DataLoader(small, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["identity"].shape == (4,)


def test_cache_roundtrip(tmp_path, small):
    a = SyntheticFaceDataset(CFG, [7, 3, 42], 4, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("synthetic-*.pt"))
    assert len(files) == 1
    b = SyntheticFaceDataset(CFG, [7, 3, 42], 4, cache_dir=tmp_path, progress=False)  # loads
    assert torch.equal(a.images, b.images) and torch.equal(a.images, small.images)
    assert torch.equal(a.coeffs["expression"], b.coeffs["expression"])
    c = SyntheticFaceDataset(CFG, [7, 3, 42], 4, cache_dir=tmp_path, sample_offset=4, progress=False)
    assert len(list(tmp_path.glob("synthetic-*.pt"))) == 2 and not torch.equal(c.images, a.images)


def test_split_identities_disjoint():
    ids = np.arange(100, 200)
    groups = split_identities(ids, (0.7, 0.2, 0.1), seed=0)
    assert [len(g) for g in groups] == [70, 20, 10]
    allg = np.concatenate(groups)
    assert len(np.unique(allg)) == 100 and set(allg) == set(ids)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not set(groups[i]) & set(groups[j])
    again = split_identities(ids, (0.7, 0.2, 0.1), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(groups, again))
    assert not np.array_equal(split_identities(ids, (0.7, 0.3), seed=1)[0], split_identities(ids, (0.7, 0.3), seed=0)[0])
    part = split_identities(ids, (0.5,), seed=0)
    assert len(part) == 1 and len(part[0]) == 50
    with pytest.raises(ValueError):
        split_identities(ids, (0.8, 0.3))


def test_split_samples_within_identity():
    labels = np.repeat(np.arange(10), 5)
    labels = np.r_[labels, [10]]  # an identity with a single item stays in train
    tr, te = split_samples_within_identity(labels, 0.2, seed=0)
    assert not set(tr) & set(te)
    assert len(tr) + len(te) == len(labels)
    assert set(labels[te]) == set(range(10)) and set(labels[tr]) == set(range(11))
    assert all((labels[te] == k).sum() == 1 for k in range(10))


def test_labeled_subset(small):
    sub = LabeledSubset(small, [4, 5, 10, 11], relabel=True)
    assert len(sub) == 4 and sub.n_identities == 2 and list(sub.labels) == [0, 0, 1, 1]
    it = sub[2]
    assert int(it["identity"]) == 1 and it["index"] == 2 and it["parent_index"] == 10
    assert torch.equal(it["image"], small[10]["image"])
    keep = LabeledSubset(small, [4, 10])
    assert list(keep.labels) == [1, 2] and keep.n_identities == 3 and int(keep[1]["identity"]) == 2


def test_eigenface_small_runs():
    tr = SyntheticFaceDataset(CFG, range(0, 15), 4, progress=False)
    te = SyntheticFaceDataset(CFG, range(15, 30), 4, progress=False)
    res = eigenface_verification(tr.images, tr.labels, te.images, te.labels, n_components=20, n_pairs=100)
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["auc"] <= 1.0
    assert res["n_same"] == 100 and res["n_diff"] == 100 and np.isfinite(res["threshold"])


def test_identity_union_offsets_labels_and_keeps_items_collatable():
    """IdentityUnion: disjoint people of several datasets as one set of classes (labels offset by the identities
    before), items with the keys every part has; sizes must agree."""
    from torch.utils.data import default_collate

    from drdpgan.data.datasets import CoefficientFaces, IdentityUnion, LabeledSubset

    a = CoefficientFaces(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), np.zeros((3, 5)), np.zeros((3, 3)))
    b = LabeledSubset(CoefficientFaces(torch.full((4, 3, 8, 8), 255, dtype=torch.uint8), np.zeros((4, 5)),
                                       np.zeros((4, 3))), [0, 2])
    b.labels = np.array([0, 1])  # two people
    b.n_identities = 2
    u = IdentityUnion([a, b])
    assert len(u) == 5 and u.n_identities == 3 and u.labels.tolist() == [0, 0, 0, 1, 2] and u.image_size == 8
    item = u[4]
    assert set(item) == {"image", "identity", "index", "part"} and item["part"] == 1 and item["index"] == 4
    assert float(item["image"].min()) == 1.0 and float(u[0]["image"].max()) == -1.0
    batch = default_collate([u[0], u[3], u[4]])
    assert batch["image"].shape == (3, 3, 8, 8)
    with pytest.raises(IndexError):
        u[5]
    with pytest.raises(ValueError, match="sizes"):
        IdentityUnion([a, CoefficientFaces(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), np.zeros((1, 5)),
                                           np.zeros((1, 3)))])
