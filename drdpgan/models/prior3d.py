"""3D prior extractor (paper Sec. 3.3): image -> expression ``F_emo`` and pose ``F_pos``.

The paper runs a pretrained 3D face reconstruction network (Deep3DFaceRecon, a ResNet-50
regressing 3DMM coefficients) on the input and keeps two groups of coefficients: the
"morphological variation" (expression) ``F_emo`` and the "placement posture" (pose) ``F_pos``.
They are concatenated with the (fake or real) identity, Eq. (1):
``F_concat = Concat(F'_id or F_id, F_emo, F_pos)``, so the generator keeps the geometry of the
face while the identity is swapped (t = 1) or restored (t = 0).

Here there is no pretrained 3DMM regressor and no download, so :class:`Prior3DRegressor` is
a small ResNet trained by :func:`drdpgan.train_priors.train_prior3d` on the *synthetic world*,
whose renderer knows the ground-truth ``coeffs["expression"]`` (Ke values) and
``coeffs["pose"]`` (yaw, pitch, roll in radians). Targets are standardised for the MSE; their
mean/std live in the model's buffers so :meth:`Prior3DRegressor.forward` answers in the
original units.

On real faces (LFW etc.) there are no ground-truth coefficients and the regressor is the same
network, trained only on synthetic faces: a domain gap. Its outputs on real faces are
whatever the synthetic-trained features make of them -- not validated 3DMM coefficients.
The one check available without labels is symmetry: a horizontal flip must negate yaw and
roll (:func:`pose_flip_consistency`); it tells whether the pose outputs respond to real faces
sensibly, not whether they are accurate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import r2_score

from .identity import resize_to

__all__ = [
    "Prior3DConfig",
    "Prior3DRegressor",
    "flip_pose",
    "predict_prior3d",
    "r2_per_coefficient",
    "pose_flip_consistency",
    "POSE_NAMES",
]

#: Order of the pose coefficients (radians).
POSE_NAMES = ("yaw", "pitch", "roll")
#: Sign of each pose coefficient under a horizontal image flip (yaw and roll change sign).
POSE_FLIP_SIGN = (-1.0, 1.0, -1.0)


def flip_pose(pose: torch.Tensor) -> torch.Tensor:
    """Pose ``(..., 3)`` of the horizontally flipped image: ``(-yaw, pitch, -roll)``."""
    return pose * pose.new_tensor(POSE_FLIP_SIGN)


@dataclass
class Prior3DConfig:
    """Architecture of :class:`Prior3DRegressor`.

    n_expression: Ke, the number of expression coefficients (must match the dataset's).
    n_pose: 3 (yaw, pitch, roll).
    working_size: inputs are resized to this square size (px).
    stem_width / widths / blocks: a ResNet-18-like trunk, much narrower (stem stride 2, then
        stride-2 stages of ``blocks`` basic blocks).
    pool_size: the last map is average-pooled to ``pool_size x pool_size`` and flattened
        (keeps coarse layout, which pose needs) before a ``hidden``-unit MLP.
    """

    n_expression: int = 5  # drdpgan.data.world.COEFF_SIZES['expression']
    n_pose: int = 3
    working_size: int = 64
    stem_width: int = 32
    widths: tuple[int, ...] = (32, 64, 128, 192)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    pool_size: int = 2
    hidden: int = 256

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.blocks = tuple(int(b) for b in self.blocks)
        if len(self.widths) != len(self.blocks):
            raise ValueError("widths and blocks must have the same length")

    @property
    def n_outputs(self) -> int:
        return self.n_expression + self.n_pose


class _BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, ReLU. ``(B,cin,H,W)->(B,cout,H/s,W/s)``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        nn.init.zeros_(self.bn2.weight)  # residual branch starts at zero
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + s)


class Prior3DRegressor(nn.Module):
    """Deep3DFaceRecon stand-in: ``images (B,3,H,W) in [-1,1] -> dict(expression, pose)``.

    ``forward`` returns a **dict** ``{"expression": (B,Ke) F_emo, "pose": (B,3) F_pos}`` in the
    dataset's original units (pose in radians: yaw, pitch, roll), de-standardised with the
    ``target_mean`` / ``target_std`` buffers ``(Ke+3,)`` set by the trainer.
    ``forward_standardized`` gives the raw ``(B,Ke+3)`` network output (training space);
    ``geometry`` gives ``Concat(F_emo, F_pos)`` ``(B,Ke+3)``, the 3D part of Eq. (1).
    Paper Sec. 3.3.
    """

    def __init__(self, cfg: Prior3DConfig | None = None):
        super().__init__()
        cfg = cfg or Prior3DConfig()
        self.cfg = cfg
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.stem_width, 3, 2, 1, bias=False),  # (B,C0,S/2,S/2)
            nn.BatchNorm2d(cfg.stem_width),
            nn.ReLU(inplace=True),
        )
        stages, cin = [], cfg.stem_width
        for w, n in zip(cfg.widths, cfg.blocks):
            stages.append(nn.Sequential(_BasicBlock(cin, w, 2), *[_BasicBlock(w, w, 1) for _ in range(n - 1)]))
            cin = w
        self.stages = nn.Sequential(*stages)  # (B,C_last,S/2^(k+1),..)
        self.pool = nn.AdaptiveAvgPool2d(cfg.pool_size)  # (B,C_last,p,p)
        self.head = nn.Sequential(
            nn.Linear(cin * cfg.pool_size**2, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, cfg.n_outputs),
        )
        self.register_buffer("target_mean", torch.zeros(cfg.n_outputs))
        self.register_buffer("target_std", torch.ones(cfg.n_outputs))

    def set_target_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-coefficient target mean/std ``(Ke+3,)`` (std floored at 1e-6)."""
        self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.target_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-6))

    def forward_standardized(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_to(images, self.cfg.working_size)
        x = self.stages(self.stem(x))
        return self.head(self.pool(x).flatten(1))  # (B,Ke+3), standardised units

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.forward_standardized(images) * self.target_std + self.target_mean  # (B,Ke+3)
        ke = self.cfg.n_expression
        return {"expression": z[:, :ke], "pose": z[:, ke:]}

    def geometry(self, images: torch.Tensor) -> torch.Tensor:
        """``Concat(F_emo, F_pos)`` ``(B,Ke+3)`` -- appended to the identity in Eq. (1)."""
        out = self.forward(images)
        return torch.cat([out["expression"], out["pose"]], dim=1)


def _batches(data, batch_size: int, need_coeffs: bool):
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i : i + batch_size], None
        return
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    for b in loader:
        if need_coeffs and "coeffs" not in b:
            raise ValueError("dataset items carry no 'coeffs' (only the synthetic world has them)")
        yield b["image"], (b["coeffs"] if need_coeffs else None)


@torch.no_grad()
def predict_prior3d(model: Prior3DRegressor, data, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Predictions over a tensor or dataset -> ``dict(expression (N,Ke), pose (N,3))`` numpy."""
    was = model.training
    model.eval()
    try:
        ex, po = [], []
        for x, _ in _batches(data, batch_size, need_coeffs=False):
            out = model(x)
            ex.append(out["expression"].cpu())
            po.append(out["pose"].cpu())
        return {"expression": torch.cat(ex).numpy(), "pose": torch.cat(po).numpy()}
    finally:
        model.train(was)


@torch.no_grad()
def r2_per_coefficient(model: Prior3DRegressor, dataset, batch_size: int = 256) -> dict:
    """Coefficient of determination (``sklearn.metrics.r2_score``) of each predicted coefficient.

    Needs the synthetic world's ``coeffs`` -> ``dict(expression=[Ke floats], pose=[3 floats],
    expression_mean, pose_mean)``; R^2 = 1 is perfect, 0 is "predicts the mean".
    """
    was = model.training
    model.eval()
    try:
        pe, pp, te, tp = [], [], [], []
        for x, c in _batches(dataset, batch_size, need_coeffs=True):
            out = model(x)
            pe.append(out["expression"].cpu())
            pp.append(out["pose"].cpu())
            te.append(torch.as_tensor(c["expression"]).float())
            tp.append(torch.as_tensor(c["pose"]).float())
    finally:
        model.train(was)
    pe, pp, te, tp = (torch.cat(v).numpy() for v in (pe, pp, te, tp))
    r2e = [float(v) for v in r2_score(te, pe, multioutput="raw_values")]
    r2p = [float(v) for v in r2_score(tp, pp, multioutput="raw_values")]
    return {"expression": r2e, "pose": r2p,
            "expression_mean": float(np.mean(r2e)), "pose_mean": float(np.mean(r2p))}


@torch.no_grad()
def pose_flip_consistency(model: Prior3DRegressor, images, batch_size: int = 256,
                          min_abs: float = 0.0) -> dict:
    """Label-free check of the pose output on any faces (e.g. real ones): flip symmetry.

    A horizontal flip of a face negates its yaw and roll and keeps its pitch. For each image
    the yaw (and roll) predicted on the image and on its mirror are compared:

    * ``yaw_sign_flip_rate``: fraction of images whose predicted yaw changes sign under the
      flip (1.0 = perfectly consistent), counted over images with ``|yaw| > min_abs``
      (near-frontal faces have an ill-defined sign);
    * ``roll_sign_flip_rate``: the same for roll;
    * ``yaw_flip_corr`` / ``roll_flip_corr``: Pearson correlation of ``yaw(x)`` with
      ``-yaw(flip(x))`` (1.0 = antisymmetric); ``pitch_flip_corr``: of ``pitch(x)`` with
      ``pitch(flip(x))``;
    * ``yaw_abs_mean``: mean ``|yaw|`` predicted, ``n`` / ``n_yaw`` / ``n_roll`` counts.

    ``images``: a ``(N,3,H,W)`` tensor in [-1,1] or a dataset of the project's dicts.
    On real faces this is the synthetic-trained regressor across a domain gap; passing this
    check does not make its coefficients accurate, failing it shows they are not.
    """
    was = model.training
    model.eval()
    try:
        p, q = [], []
        for x, _ in _batches(images, batch_size, need_coeffs=False):
            p.append(model(x)["pose"].cpu())
            q.append(model(torch.flip(x, dims=[-1]))["pose"].cpu())
    finally:
        model.train(was)
    p, q = torch.cat(p).double().numpy(), torch.cat(q).double().numpy()

    def rate(a, b):
        keep = np.abs(a) > min_abs
        if keep.sum() == 0:
            return float("nan"), 0
        return float(np.mean(np.sign(a[keep]) == -np.sign(b[keep]))), int(keep.sum())

    def corr(a, b):
        if len(a) < 2 or a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])

    yr, ny = rate(p[:, 0], q[:, 0])
    rr, nr = rate(p[:, 2], q[:, 2])
    return {
        "yaw_sign_flip_rate": yr,
        "roll_sign_flip_rate": rr,
        "yaw_flip_corr": corr(p[:, 0], -q[:, 0]),
        "roll_flip_corr": corr(p[:, 2], -q[:, 2]),
        "pitch_flip_corr": corr(p[:, 1], q[:, 1]),
        "yaw_abs_mean": float(np.abs(p[:, 0]).mean()) if len(p) else float("nan"),
        "n": int(len(p)),
        "n_yaw": ny,
        "n_roll": nr,
    }
