"""ManifestFaceDataset: item format, labels, splits, in-memory mode, clear errors on bad manifests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from drdpgan.data.real import ManifestError, ManifestFaceDataset, read_manifest


def _make(root, rows, size=16):
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["path,identity,split,source"]
    for k, (ident, split) in enumerate(rows):
        p = f"images/{ident}_{k}.png"
        val = (k * 37) % 256
        Image.new("RGB", (size, size), (val, 255 - val, 128)).save(root / p)
        lines.append(f"{p},{ident},{split},test:{p}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


ROWS = [("bob", "train"), ("alice", "train"), ("bob", "train"), ("carol", "test"), ("10", "train"), ("9", "train"), ("-1", "train")]


def test_items_match_synthetic_format(tmp_path):
    ds = ManifestFaceDataset(_make(tmp_path, ROWS))
    assert len(ds) == len(ROWS)
    item = ds[0]
    assert set(item) == {"image", "identity", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 16, 16)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["identity"].dtype == torch.int64 and item["identity"].dim() == 0
    assert item["index"] == 0
    assert ds.image_size == 16
    # names sorted (integers numerically first), the unknown identity -1 gets label -1
    assert ds.identity_names == ["9", "10", "alice", "bob", "carol"]
    assert ds.n_identities == 5
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [3, 2, 3, 4, 1, 0, -1]
    # pixel values: (v / 127.5 - 1)
    np.testing.assert_allclose(item["image"][0, 0, 0].item(), 0 / 127.5 - 1)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 16, 16) and batch["identity"].shape == (3,)


def test_split_size_and_memory(tmp_path):
    root = _make(tmp_path, ROWS)
    train = ManifestFaceDataset(root, split="train")
    test = ManifestFaceDataset(root, split="test")
    assert len(train) == 6 and len(test) == 1
    assert test.identity_names == ["carol"] and test.labels.tolist() == [0]
    big = ManifestFaceDataset(root, split=["train", "test"], size=32)
    assert big.image_size == 32
    assert big[3]["image"].shape == (3, 32, 32)
    mem = ManifestFaceDataset(root, in_memory=True)
    lazy = ManifestFaceDataset(root)
    for i in range(len(lazy)):
        assert torch.equal(mem[i]["image"], lazy[i]["image"])
    known = ManifestFaceDataset(root, drop_unknown=True)
    assert len(known) == 6 and known.labels.min() == 0
    with pytest.raises(ManifestError, match="split"):
        ManifestFaceDataset(root, split="val")


def test_missing_file_is_named(tmp_path):
    root = _make(tmp_path, ROWS)
    (root / "images" / "carol_3.png").unlink()
    with pytest.raises(ManifestError, match=r"line 5.*carol_3\.png.*not found"):
        ManifestFaceDataset(root)


@pytest.mark.parametrize(
    "text, match",
    [
        ("path,identity\nimages/a.png,a\n", "lacks column"),
        ("path,identity,split,source\nimages/a.png,a,train\n", "line 2: 3 fields"),
        ("path,identity,split,source\n,a,train,x\n", "line 2: empty 'path'"),
        ("", "empty file"),
    ],
)
def test_malformed_manifest(tmp_path, text, match):
    (tmp_path / "manifest.csv").write_text(text)
    with pytest.raises(ManifestError, match=match) as e:
        ManifestFaceDataset(tmp_path)
    assert "manifest.csv" in str(e.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "manifest.csv")
