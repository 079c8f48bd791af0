"""3D prior regressor (paper Sec. 3.3): F_emo / F_pos shapes, standardisation, R^2, flip check."""

import numpy as np
import pytest
import torch

from drdpgan.models.prior3d import (
    Prior3DConfig,
    Prior3DRegressor,
    flip_pose,
    pose_flip_consistency,
    r2_per_coefficient,
)
from drdpgan.repro import seed_everything
from drdpgan.checkpoints import load_model
from drdpgan.train_priors import Prior3DTrainConfig, train_prior3d

TINY = Prior3DConfig(n_expression=2, working_size=32, stem_width=8, widths=(16, 32), blocks=(1, 1), hidden=64)


class RampWorld(torch.utils.data.Dataset):
    """Toy synthetic world: the coefficients are simple functions of the image.

    red = e0 + yaw * x-ramp, green = e1 + pitch * y-ramp, blue = roll * x-ramp * y-ramp,
    so a horizontal flip negates yaw and roll exactly as for a face.
    """

    def __init__(self, n=256, size=32, seed=0, offset=(0.0, 0.0)):
        g = torch.Generator().manual_seed(seed)
        self.expr = torch.rand(n, 2, generator=g) - 0.5 + torch.tensor(offset)
        self.pose = (torch.rand(n, 3, generator=g) - 0.5) * 1.0
        r = torch.linspace(-1, 1, size)
        rx, ry = r[None, :].expand(size, size), r[:, None].expand(size, size)
        red = self.expr[:, 0, None, None] + self.pose[:, 0, None, None] * rx
        green = self.expr[:, 1, None, None] + self.pose[:, 1, None, None] * ry
        blue = self.pose[:, 2, None, None] * rx * ry
        self.x = torch.stack([red, green, blue], 1) + 0.02 * torch.randn(n, 3, size, size, generator=g)
        self.labels = np.zeros(n, dtype=np.int64)
        self.n_identities = 1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "identity": torch.tensor(0), "index": i,
                "coeffs": {"expression": self.expr[i], "pose": self.pose[i], "shape": torch.zeros(4)}}


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shapes(size):
    seed_everything(0)
    model = Prior3DRegressor(Prior3DConfig(n_expression=10)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size) * 2 - 1)
        geo = model.geometry(torch.rand(2, 3, size, size))
    assert set(out) == {"expression", "pose"}
    assert out["expression"].shape == (2, 10) and out["pose"].shape == (2, 3)
    assert geo.shape == (2, 13)


def test_buffers_destandardise_outputs():
    seed_everything(0)
    model = Prior3DRegressor(TINY).eval()
    x = torch.rand(3, 3, 32, 32)
    z = model.forward_standardized(x)
    mean, std = torch.arange(5.0), torch.full((5,), 2.0)
    model.set_target_stats(mean, std)
    out = model(x)
    torch.testing.assert_close(torch.cat([out["expression"], out["pose"]], 1), z * 2.0 + mean)
    assert "target_mean" in model.state_dict()


def test_deterministic_under_seed():
    x = torch.rand(2, 3, 32, 32)
    outs = []
    for _ in range(2):
        seed_everything(11)
        outs.append(Prior3DRegressor(TINY).eval().forward_standardized(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_training_reaches_r2_and_roundtrip(tmp_path):
    train, test = RampWorld(256, seed=0, offset=(0.3, -0.2)), RampWorld(128, seed=1, offset=(0.3, -0.2))
    tcfg = Prior3DTrainConfig(seed=4, epochs=12, batch_size=32, lr=3e-3, warmup_steps=5, num_threads=1)
    model, hist = train_prior3d(train, TINY, tcfg, out_dir=tmp_path, progress=False)
    assert hist["epochs"][-1]["loss"] < hist["epochs"][0]["loss"]
    # target stats are the training set's, in original units
    torch.testing.assert_close(model.target_mean[:2], train.expr.mean(0), atol=1e-5, rtol=0)
    r2 = r2_per_coefficient(model, test)
    assert len(r2["expression"]) == 2 and len(r2["pose"]) == 3
    assert r2["expression_mean"] > 0.5 and r2["pose_mean"] > 0.5, r2
    loaded, _ = load_model(tmp_path / "prior3d.pt")
    assert r2_per_coefficient(loaded, test) == r2
    # wrong Ke is refused with a clear message
    with pytest.raises(ValueError, match="expression coefficients"):
        train_prior3d(train, Prior3DConfig(n_expression=5), Prior3DTrainConfig(max_steps=1), progress=False)


def test_flip_pose_signs():
    torch.testing.assert_close(flip_pose(torch.tensor([[0.3, 0.2, -0.1]])), torch.tensor([[-0.3, 0.2, 0.1]]))


class _AnalyticPose(Prior3DRegressor):
    """Reads yaw/roll straight from the RampWorld image: perfectly flip-consistent."""

    def forward(self, images):
        r = torch.linspace(-1, 1, images.shape[-1])
        yaw = (images[:, 0] * r[None, None, :]).mean(dim=(1, 2))
        roll = (images[:, 2] * r[None, None, :] * r[None, :, None]).mean(dim=(1, 2))
        pitch = (images[:, 1] * r[None, :, None]).mean(dim=(1, 2))
        return {"expression": images.new_zeros(len(images), 2), "pose": torch.stack([yaw, pitch, roll], 1)}


class _ConstantPose(Prior3DRegressor):
    def forward(self, images):
        return {"expression": images.new_zeros(len(images), 2), "pose": images.new_tensor([0.2, 0.0, 0.1]).expand(len(images), 3)}


def test_pose_flip_consistency():
    ds = RampWorld(64, seed=2)
    good = pose_flip_consistency(_AnalyticPose(TINY), ds.x, min_abs=0.01)
    assert good["yaw_sign_flip_rate"] == 1.0 and good["roll_sign_flip_rate"] == 1.0
    assert good["yaw_flip_corr"] == pytest.approx(1.0, abs=1e-3)
    assert good["pitch_flip_corr"] == pytest.approx(1.0, abs=1e-3)
    bad = pose_flip_consistency(_ConstantPose(TINY), ds)
    assert bad["yaw_sign_flip_rate"] == 0.0 and bad["roll_sign_flip_rate"] == 0.0
    assert bad["n"] == 64
