"""Password extractor E_P (paper Sec. 3.4.2) and the information hiding loss (Eq. 13-15).

E_P is "a multi-layer convolutional network" from the (anonymized) image to the hidden bits.
Here: strided conv blocks (conv-BN-LeakyReLU) down to 4x4 and a linear layer from the
flattened 4x4 map to ``code_bits`` logits; a bit is read as ``logit >= 0``. With ``head="layout"``
(the generator lays the bits out with a :class:`~drdpgan.models.fusion.BitLayout`), the blocks stop at the
layout's s x s, a conv1x1 predicts every slot of the plane, and a bit's logit is the mean of its slots.

Information hiding loss::

    Y        = X_gen + eps,  eps ~ N(0, sigma^2)      (Eq. 13)
    Password = E_P(Y)                                  (Eq. 14)
    L_info   = CrossEntropy(Password, V)               (Eq. 15)

with binary cross-entropy on the logits and ``V`` the password bits of Eq. 2-4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ExtractorConfig:
    resolution: int = 64
    code_bits: int = 512
    base_channels: int = 32
    max_channels: int = 256
    noise_sigma: float = 0.02  # sigma of eps in Eq. 13 (images in [-1, 1])
    head: str = "linear"  # "linear" (4x4 map -> bits) | "layout" (s x s plane of BitLayout slots -> bits)
    layout_channels: int = 16  # the BitLayout plane (head "layout")
    layout_size: int = 8


class PasswordExtractor(nn.Module):
    """E_P: image (B, 3, R, R) in [-1, 1] -> bit logits (B, code_bits), R = ``cfg.resolution``."""

    def __init__(self, cfg: ExtractorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ExtractorConfig()
        if cfg.head not in ("linear", "layout"):
            raise ValueError(f"extractor head must be 'linear' or 'layout', got {cfg.head!r}")
        end = 4 if cfg.head == "linear" else cfg.layout_size  # R -> 4x4 (linear) or s x s (layout)
        n_down = int(round(math.log2(cfg.resolution / end)))
        if 2 ** int(math.log2(cfg.resolution)) != cfg.resolution or end * 2 ** n_down != cfg.resolution or n_down < 1:
            raise ValueError(f"resolution must be a power of two >= 2 x {end}, got {cfg.resolution}")
        layers: list[nn.Module] = [nn.Conv2d(3, cfg.base_channels, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = cfg.base_channels
        for _ in range(n_down):
            out = min(ch * 2, cfg.max_channels)
            layers += [
                nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2),
                nn.Conv2d(out, out, 3, padding=1), nn.BatchNorm2d(out), nn.LeakyReLU(0.2),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        if cfg.head == "linear":
            self.head = nn.Linear(ch * 16, cfg.code_bits)  # the 4x4 map keeps where bits were hidden
            self.layout = None
        else:
            from .fusion import BitLayout

            self.head = nn.Conv2d(ch, cfg.layout_channels, 1)  # a logit per slot of the plane
            self.layout = BitLayout(cfg.code_bits, cfg.layout_channels, cfg.layout_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.cfg.resolution:
            raise ValueError(f"extractor built for {self.cfg.resolution} px, got {img.shape[-1]} px")
        h = self.features(img)
        if self.layout is not None:
            return self.layout.read(self.head(h))  # (B, P, s, s) -> (B, code_bits)
        return self.head(h.flatten(1))  # (B, code_bits)

    @staticmethod
    def bits(logits: torch.Tensor) -> torch.Tensor:
        """Hard bits from logits: 1 where ``logit >= 0``."""
        return (logits >= 0).float()


def add_channel_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 13: ``Y = X_gen + eps`` with Gaussian ``eps`` of std ``sigma``."""
    if sigma <= 0:
        return x
    dev = generator.device if generator is not None else x.device  # a CPU generator draws on the CPU
    eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device) * sigma
    return x + eps


def information_hiding_loss(logits: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Eq. 15: binary cross-entropy between the extracted password logits and the target bits V."""
    return F.binary_cross_entropy_with_logits(logits, bits.detach().float())
