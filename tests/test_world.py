"""The synthetic face world: determinism, coefficient semantics, projection, value ranges."""

import math

import pytest
import torch

from drdpgan.data import render as R
from drdpgan.data.world import (
    COEFF_SIZES,
    IDENTITY_KEYS,
    NUISANCE_KEYS,
    FaceWorld,
    WorldConfig,
    _mul32,
    hash_uniform,
    project,
)


@pytest.fixture(scope="module")
def world():
    return FaceWorld(WorldConfig(seed=3, n_identities=1000))


def _edit(coeffs, **changes):
    out = {k: v.clone() for k, v in coeffs.items()}
    out.update(changes)
    return out


def test_mul32_matches_python():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2**32, (1000,), generator=g, dtype=torch.int64)
    for c in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF):
        ref = torch.tensor([(int(v) * c) % 2**32 for v in x])
        assert torch.equal(_mul32(x, c), ref)


def test_hash_uniform_range_and_determinism():
    ids = torch.arange(50)
    u1 = hash_uniform(7, ids, torch.zeros(50, dtype=torch.int64), 3, 8)
    u2 = hash_uniform(7, ids, torch.zeros(50, dtype=torch.int64), 3, 8)
    assert torch.equal(u1, u2)
    assert (u1 > 0).all() and (u1 < 1).all()
    assert abs(u1.mean().item() - 0.5) < 0.06
    u3 = hash_uniform(8, ids, torch.zeros(50, dtype=torch.int64), 3, 8)
    assert not torch.equal(u1, u3)


def test_render_deterministic_and_batch_independent(world):
    ids = torch.tensor([5, 5, 9, 12])
    smp = torch.tensor([0, 1, 0, 3])
    a = world.render(ids, smp, 32)
    b = world.render(ids, smp, 32)
    assert torch.equal(a["image"], b["image"])
    # the same item rendered alone (different batch composition) gives the same pixels
    c = world.render(ids[2:3], smp[2:3], 32)
    assert torch.allclose(a["image"][2:3], c["image"], atol=1e-5)
    # a fresh world object with the same config reproduces the images
    d = FaceWorld(WorldConfig(seed=3, n_identities=1000)).render(ids, smp, 32)
    assert torch.equal(a["image"], d["image"])
    # another seed is another world
    e = FaceWorld(WorldConfig(seed=4, n_identities=1000)).render(ids, smp, 32)
    assert not torch.allclose(a["image"], e["image"])


def test_identity_vs_nuisance_coefficients(world):
    ids = torch.tensor([5, 5, 5])
    smp = torch.tensor([0, 1, 2])
    c = world.sample_coeffs(ids, smp)
    assert set(c) == set(COEFF_SIZES)
    for k, n in COEFF_SIZES.items():
        assert c[k].shape == (3, n) and c[k].dtype == torch.float32
    for k in IDENTITY_KEYS:  # identity coefficients depend on the identity only
        assert torch.equal(c[k][0], c[k][1]) and torch.equal(c[k][0], c[k][2])
        assert torch.equal(world.identity_coeffs(torch.tensor([5]))[k][0], c[k][0])
    for k in NUISANCE_KEYS:  # nuisance differs between samples
        assert not torch.allclose(c[k][0], c[k][1])
    other = world.sample_coeffs(torch.tensor([6]), torch.tensor([0]))
    assert not torch.allclose(other["identity"][0], c["identity"][0])
    # nuisance of (id, sample) does not depend on what else is in the batch
    alone = world.nuisance_coeffs(torch.tensor([5]), torch.tensor([2]))
    for k in NUISANCE_KEYS:
        assert torch.equal(alone[k][0], c[k][2])
    # pose ranges follow the config
    many = world.sample_coeffs(torch.arange(200), torch.zeros(200, dtype=torch.int64))
    cfg = world.config
    assert many["pose"][:, 0].abs().max() <= math.radians(cfg.max_yaw_deg) + 1e-6
    assert many["pose"][:, 0].abs().max() > 0.8 * math.radians(cfg.max_yaw_deg)
    with pytest.raises(IndexError):
        world.sample_coeffs(torch.tensor([cfg.n_identities]), torch.tensor([0]))


def test_pose_moves_landmarks_as_projected(world):
    size = 96
    base = world.sample_coeffs(torch.tensor([11, 12]), torch.tensor([0, 0]))
    base = _edit(base, translation=torch.zeros(2, 3))
    for pose in ([0.0, 0.0, 0.0], [0.35, 0.0, 0.0], [-0.3, 0.15, 0.1]):
        pose_t = torch.tensor([pose, pose])
        c = _edit(base, pose=pose_t)
        lm = world.landmarks(c, size)
        expected = project(world.landmarks_3d(c), pose_t, c["translation"], size)[..., :2] - 0.5
        expected_sorted = expected.clone()
        for i, j in ((0, 1), (3, 4)):
            swap = expected[:, i, 0] > expected[:, j, 0]
            expected_sorted[swap, i], expected_sorted[swap, j] = expected[swap, j], expected[swap, i]
        assert torch.allclose(lm, expected_sorted, atol=1e-4)
        # the rendered surface seen at each landmark pixel is the landmark's surface point
        out = world.render_coeffs(c, size, return_canon=True)
        dirs = world.landmark_directions(c)
        for b in range(2):
            for k in range(5):
                x, y = lm[b, k].round().long().tolist()
                seen = out["canon"][b, :, y, x]
                want = dirs[b, k] if k in (2,) or abs(pose[0]) < 1e-6 else None
                if want is None:  # left/right may swap names only for extreme yaw; match nearest
                    want = min((dirs[b, kk] for kk in ((0, 1) if k < 2 else (3, 4))),
                               key=lambda d: float((d - seen).norm()))
                # ~1 px of canonical change at 96 px is 0.026; the nose tip is a ridge where the
                # canonical direction varies fast across pixels, so it gets a looser bound
                tol = 0.11 if k == 2 else 0.07
                assert float((seen - want).norm()) < tol, (pose, b, k)
    # positive yaw moves the nose tip towards image right, positive pitch moves it up
    c0 = _edit(base, pose=torch.zeros(2, 3))
    cy = _edit(base, pose=torch.tensor([[0.3, 0.0, 0.0]] * 2))
    cp = _edit(base, pose=torch.tensor([[0.0, 0.3, 0.0]] * 2))
    n0, ny, np_ = (world.landmarks(c, size)[:, 2] for c in (c0, cy, cp))
    assert (ny[:, 0] > n0[:, 0] + 3).all()
    assert (np_[:, 1] < n0[:, 1] - 3).all()
    # crop shift translates landmarks by exactly shift * size
    ct = _edit(c0, translation=torch.tensor([[0.05, -0.03, 0.0]] * 2))
    assert torch.allclose(world.landmarks(ct, size) - world.landmarks(c0, size),
                          torch.tensor([0.05 * size, -0.03 * size]).expand(2, 5, 2), atol=1e-3)


def test_landmark_layout_frontal(world):
    c = world.sample_coeffs(torch.arange(8), torch.zeros(8, dtype=torch.int64))
    c = _edit(c, pose=torch.zeros(8, 3), translation=torch.zeros(8, 3))
    lm = world.landmarks(c, 64)
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 3, 0] < lm[:, 4, 0]).all()
    eye_y = lm[:, :2, 1].mean(1)
    assert (eye_y < lm[:, 2, 1]).all() and (lm[:, 2, 1] < lm[:, 3:, 1].mean(1)).all()
    assert ((lm >= 0) & (lm <= 63)).all()


def test_expression_keeps_identity_and_outline(world):
    size = 64
    c = world.sample_coeffs(torch.tensor([21, 22, 23]), torch.tensor([1, 1, 1]))
    c = _edit(c, pose=torch.zeros(3, 3))
    neutral = _edit(c, expression=torch.zeros(3, 5))
    strong = _edit(c, expression=torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]] * 3))
    a = world.render_coeffs(neutral, size)
    b = world.render_coeffs(strong, size)
    for k in IDENTITY_KEYS:
        assert torch.equal(a["coeffs"][k], b["coeffs"][k])
    ma, mb = a["mask"] > 0.5, b["mask"] > 0.5
    iou = (ma & mb).sum((1, 2, 3)).float() / (ma | mb).sum((1, 2, 3)).float()
    assert (iou > 0.99).all(), iou
    # ... while the face interior changes (mouth / eyes / brows)
    diff = (a["image"] - b["image"]).abs().amax(1)
    assert (diff.flatten(1).amax(1) > 0.3).all()
    # smile lifts the mouth corners in the landmarks
    smile = _edit(c, expression=torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]] * 3))
    la, ls = world.landmarks(neutral, 128), world.landmarks(smile, 128)
    assert (ls[:, 3:, 1] < la[:, 3:, 1] - 1).all()
    assert torch.allclose(ls[:, :3], la[:, :3], atol=1e-4)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_value_ranges_and_shapes(world, size):
    n = 2 if size == 256 else 4
    out = world.render(torch.arange(n), torch.arange(n), size)
    img = out["image"]
    assert img.shape == (n, 3, size, size) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert img.min() >= -1 and img.max() <= 1
    assert img.std() > 0.1  # not blank
    assert out["identity"].shape == (n,) and out["identity"].dtype == torch.int64
    assert out["landmarks"].shape == (n, 5, 2)
    assert torch.isfinite(out["landmarks"]).all()
    assert out["mask"].shape == (n, 1, size, size)
    frac = out["mask"].mean((1, 2, 3))
    assert ((frac > 0.15) & (frac < 0.7)).all(), frac
    for k, v in out["coeffs"].items():
        assert v.shape == (n, COEFF_SIZES[k]) and torch.isfinite(v).all()


def test_rasterizer_square_and_antialiasing():
    # two triangles forming the square [8, 24] x [8, 24] on a 32 px canvas
    scr = torch.tensor([[[8.0, 8.0, 1.0], [24.0, 8.0, 1.0], [24.0, 24.0, 1.0], [8.0, 24.0, 1.0]]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])  # negative signed area = front facing (y down)
    ras = R.rasterize(scr, faces, 32, depth_range=(0.0, 2.0))
    m = ras.mask()[0]
    assert m.sum() == 16 * 16 and m[8:24, 8:24].all()
    # back faces are culled
    assert R.rasterize(scr, faces[:, [0, 2, 1]], 32, depth_range=(0.0, 2.0)).pix.numel() == 0
    # multi-sampled: a half-pixel edge gives 50% coverage
    scr2 = scr.clone()
    scr2[0, :, :2] = torch.tensor([[8.0, 8.0], [24.5, 8.0], [24.5, 24.0], [8.0, 24.0]]) * 2
    ras2 = R.rasterize(scr2, faces, 64, depth_range=(0.0, 2.0), samples=2)
    cov = ras2.mask()[0]
    assert torch.allclose(cov[8:24, 24], torch.full((16,), 0.5))
    assert torch.allclose(cov[8:24, 8:24], torch.ones(16, 16))
    # nearer triangle wins the z-buffer
    scr3 = torch.cat([scr, scr + torch.tensor([4.0, 0.0, -0.5])], 1)
    faces3 = torch.cat([faces, faces + 4])
    ras3 = R.rasterize(scr3, faces3, 32, depth_range=(0.0, 2.0))
    tri = torch.full((32 * 32,), -1)
    tri[ras3.pix] = ras3.tri
    tri = tri.view(32, 32)
    assert (tri[10, 14] >= 2) and (tri[10, 9] < 2)
