"""Alignment: template, Umeyama estimation, warping accuracy, and the MTCNN aligner on real faces."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from drdpgan.data.align import (
    ARCFACE_TEMPLATE_112,
    align_with_landmarks,
    select_face,
    template_for_size,
    transform_points,
    umeyama,
)
from drdpgan.repro import shared_data_dir

LFW = shared_data_dir() / "lfw"


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1.0]])


def test_template_scales_arcface():
    np.testing.assert_allclose(template_for_size(112), ARCFACE_TEMPLATE_112, atol=1e-9)
    t64 = template_for_size(64)
    # continuous coordinates scale exactly by 64/112
    np.testing.assert_allclose(t64 + 0.5, (ARCFACE_TEMPLATE_112 + 0.5) * 64 / 112, atol=1e-9)
    # a margin shrinks the template around the image centre
    tm = template_for_size(64, margin=0.5)
    d0 = np.linalg.norm(t64[1] - t64[0])
    assert np.linalg.norm(tm[1] - tm[0]) == pytest.approx(d0 / 1.5)


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    T = _similarity(0.3, 1.7, 12.0, -4.0)
    dst = transform_points(T, src)
    np.testing.assert_allclose(umeyama(src, dst), T, atol=1e-9)
    # noisy points: still the least-squares fit, residual of the noise's order
    noisy = dst + rng.normal(0, 0.5, size=dst.shape)
    est = umeyama(src, noisy)
    assert np.abs(transform_points(est, src) - noisy).max() < 2.0
    with pytest.raises(ValueError):
        umeyama(np.zeros((5, 2)), dst)


def _blob_image(points: np.ndarray, w: int, h: int, sigma: float) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    a = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).convert("RGB")


@pytest.mark.parametrize("size", [32, 64, 128])
def test_align_with_landmarks_maps_points_onto_template(size):
    """Bright blobs at known landmarks end up on the template (centroids within 1 px)."""
    rng = np.random.default_rng(size)
    tmpl = template_for_size(size)
    for source_scale in (0.8, 2.5):  # output upsampled, and downsampled (antialiased path)
        angle = rng.uniform(-0.4, 0.4)
        T = _similarity(angle, source_scale, 0, 0)
        pts = transform_points(T, tmpl - tmpl.mean(0)) + np.array([160 + rng.uniform(-20, 20), 120])
        img = _blob_image(pts, 320, 240, sigma=max(1.5, 1.2 * source_scale * size / 64))
        out, M = align_with_landmarks(img, pts, size, return_matrix=True)
        assert out.size == (size, size) and out.mode == "RGB"
        # the estimated transform takes the landmarks onto the template
        np.testing.assert_allclose(transform_points(M, pts), tmpl, atol=1e-6)
        # and the warped pixels agree: each blob's centroid sits on its template point
        a = np.asarray(out, dtype=np.float64)[..., 0]
        yy, xx = np.mgrid[0:size, 0:size]
        for tx, ty in tmpl:
            w = a * (((xx - tx) ** 2 + (yy - ty) ** 2) < (size / 14) ** 2)
            cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
            assert np.hypot(cx - tx, cy - ty) < 1.0, (size, source_scale, cx, cy, tx, ty)


def test_align_with_landmarks_rejects_bad_landmarks():
    img = Image.new("RGB", (50, 50))
    with pytest.raises(ValueError):
        align_with_landmarks(img, np.zeros((4, 2)), 64)
    with pytest.raises(ValueError):
        align_with_landmarks(img, np.full((5, 2), np.nan), 64)


def test_align_grayscale_input_gives_rgb():
    tmpl = template_for_size(64)
    out = align_with_landmarks(Image.new("L", (64, 64), 128), tmpl, 64)
    assert out.mode == "RGB" and out.size == (64, 64)
    # identity landmarks -> (near) identity warp
    assert np.abs(np.asarray(out, dtype=int) - 128).max() <= 1


def test_select_face_prefers_large_central():
    boxes = np.array([[0, 0, 40, 40], [60, 60, 140, 140], [150, 150, 200, 200]], dtype=float)
    assert select_face(boxes, (200, 200)) == 1
    # a slightly bigger face far in the corner loses to a big central one
    boxes = np.array([[0, 0, 85, 85], [60, 60, 140, 140]], dtype=float)
    assert select_face(boxes, (200, 200)) == 1


@pytest.mark.lfw
@pytest.mark.skipif(not (LFW / "images").is_dir(), reason=f"shared LFW copy not found at {LFW}")
def test_face_aligner_on_lfw():
    from drdpgan.data.align import FaceAligner

    files = sorted((LFW / "images").glob("*.jpg"))[:6]
    imgs = [Image.open(f).convert("RGB") for f in files]
    aligner = FaceAligner(size=64)
    singles = [aligner.align(im) for im in imgs[:2]]
    batch = aligner.align_batch(imgs)
    n_ok = 0
    for (a, info) in batch:
        if a is None:
            assert info["reason"] == "no_face"
            continue
        n_ok += 1
        assert a.size == (64, 64) and info["reason"] == "ok" and 0.9 <= info["prob"] <= 1.0
        M = umeyama(np.array(info["landmarks"]), template_for_size(64))
        # the 5 detected points land near the template (residual of a 4-dof fit to 5 points)
        assert np.abs(transform_points(M, info["landmarks"]) - template_for_size(64)).max() < 6
    assert n_ok >= 5
    for (a1, i1), (a2, i2) in zip(singles, batch[:2]):
        np.testing.assert_allclose(i1["landmarks"], i2["landmarks"], atol=1.0)
    # a flat image has no face
    none, info = aligner.align(Image.new("RGB", (120, 120), (90, 140, 200)))
    assert none is None and info["reason"] == "no_face"
    # a large image is scanned on a reduced copy and warped from the original
    # (compared with a direct detection at that reduced size: MTCNN's points move a little with scale)
    big = imgs[0].resize((900, 900), Image.BICUBIC)
    out, info = FaceAligner(size=64, detect_max_side=300).align(big)
    assert out is not None and out.size == (64, 64)
    _, ref = aligner.align(big.resize((300, 300), Image.BILINEAR, reducing_gap=2.0))
    lm_big = (np.array(info["landmarks"]) + 0.5) / 3.0 - 0.5
    np.testing.assert_allclose(lm_big, ref["landmarks"], atol=1.0)


@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_border_modes_keep_alignment(border):
    """A face at the photo's corner: mirrored (no black) or black fill, landmarks still exact."""
    size = 64
    tmpl = template_for_size(size)
    pts = tmpl * 1.5 - 20  # face partly outside the top-left of the photo
    img = _blob_image(pts, 120, 100, sigma=2.0)
    arr = np.asarray(img).copy()
    arr[..., 2] = 200  # blue everywhere in the photo, so black pixels mean "outside"
    img = Image.fromarray(arr)
    out = np.asarray(align_with_landmarks(img, pts, size, border=border), dtype=np.float64)
    blue = out[..., 2]
    if border == "reflect":
        assert blue.min() > 150
    else:
        assert blue[:3, :3].max() < 20 and blue[-5:, -5:].min() > 150
    a = out[..., 0]
    yy, xx = np.mgrid[0:size, 0:size]
    for tx, ty in tmpl:
        w = a * (((xx - tx) ** 2 + (yy - ty) ** 2) < 4.0**2)
        cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        assert np.hypot(cx - tx, cy - ty) < 1.0
