"""Steganalysis critic ``Critic`` of DR-DPGAN's discriminative loss (paper Sec. 3.5.2, Eq. 10).

Eq. 10::

    L_dic = (1 - Critic(X_ori))^2 + (Critic(X_gen) - 0)^2

The critic judges whether an image is a *carrier* (an original, target 1) or a *stego* image
(a generated image that carries the hidden password, target 0). Because Eq. 10 is a
least-squares loss on targets 0 and 1, :class:`SteganalysisCritic` outputs a **score in (0, 1)
through a sigmoid** by default (``forward``); ``logits`` gives the raw pre-sigmoid score.

The paper says only that C (the adversarial discriminator of Eq. 9) resembles StyleGAN2's
discriminator; of the critic it gives no architecture. This one is a light steganalysis CNN in
the spirit of Xu-Net / SRNet, sized for CPU:

    residual filter (fixed 5x5 KV high-pass, per colour channel, + the image itself)
                                                (B, 3, R, R) -> (B, 6, R, R)
    conv3x3(6 -> c0), lrelu                     (B, c0, R, R)
    n x [conv3x3 stride 2, lrelu]               (B, c_k, R/2^k, R/2^k), channels doubling to ``max_channels``
    global average pool -> linear -> 1          (B,)

The fixed high-pass (the "KV" kernel of the SRM family, Fridrich & Kodovsky 2012) exposes the
low-amplitude noise residual where CNN steganography usually leaves its traces; passing the
image too lets the critic also see colour statistics. ``highpass=False`` drops the filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CriticConfig", "SteganalysisCritic", "KV_KERNEL"]

# The 5x5 "KV" high-pass kernel of spatial-rich-model steganalysis, normalised by 1/12.
KV_KERNEL = torch.tensor([
    [-1, 2, -2, 2, -1],
    [2, -6, 8, -6, 2],
    [-2, 8, -12, 8, -2],
    [2, -6, 8, -6, 2],
    [-1, 2, -2, 2, -1],
], dtype=torch.float32) / 12.0


@dataclass
class CriticConfig:
    resolution: int = 64
    base_channels: int = 16
    max_channels: int = 128
    n_down: int | None = None  # stride-2 stages; None: down to 4x4 (log2(R) - 2)
    highpass: bool = True
    # "sigmoid": the score is sigmoid(logits), in (0, 1); "linear": the raw logits, the least-squares GAN's critic
    # (Mao et al. 2017), whose squared error against 1 / 0 does not saturate (DRDPGANTrainConfig.critic_output)
    output: str = "sigmoid"


class SteganalysisCritic(nn.Module):
    """``Critic``: image (B, 3, R, R) in [-1, 1] -> score (B,) in (0, 1) (1 = carrier / original).

    ``forward(x)`` = ``sigmoid(logits(x))`` (``cfg.output`` "linear": ``logits(x)``, unbounded); use it in
    Eq. 10 (``drdpgan.losses.discriminative_loss`` and ``discriminative_generator_loss``). No batch norm,
    so a batch of originals and a batch of stego images are judged independently of each other.
    """

    def __init__(self, cfg: CriticConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CriticConfig()
        if cfg.output not in ("sigmoid", "linear"):
            raise ValueError(f"critic output must be 'sigmoid' or 'linear', got {cfg.output!r}")
        n_down = cfg.n_down if cfg.n_down is not None else int(math.log2(cfg.resolution)) - 2
        if n_down < 1:
            raise ValueError(f"resolution {cfg.resolution} too small for the critic")
        if cfg.highpass:
            self.register_buffer("kv", KV_KERNEL.expand(3, 1, 5, 5).clone())  # depthwise (3, 1, 5, 5)
        in_ch = 6 if cfg.highpass else 3
        layers: list[nn.Module] = [nn.Conv2d(in_ch, cfg.base_channels, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = cfg.base_channels
        for _ in range(n_down):
            out = min(ch * 2, cfg.max_channels)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)

    def residual(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) -> (B, 6, R, R): the image and its KV high-pass residual (x4 so it is O(1))."""
        res = F.conv2d(F.pad(img, (2, 2, 2, 2), mode="reflect"), self.kv, groups=3) * 4.0
        return torch.cat([img, res], dim=1)

    def logits(self, img: torch.Tensor) -> torch.Tensor:
        """Raw score (B,) before the sigmoid."""
        x = self.residual(img) if self.cfg.highpass else img
        x = self.features(x)  # (B, C, 4, 4)
        return self.head(x.mean(dim=(2, 3))).squeeze(-1)  # (B,)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        z = self.logits(img)  # (B,)
        return z if self.cfg.output == "linear" else torch.sigmoid(z)  # (B,), in (0, 1) for "sigmoid"
