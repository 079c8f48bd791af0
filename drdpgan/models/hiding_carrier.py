"""A stand-in steganography carrier for notebook 06: ``(image, bits) -> image + small residual``.

**Not part of the paper's architecture.** In DR-DPGAN the password enters the *generated* image
through ``conv1x1(Password)`` inside every E_Ste block of StyleGAN2 (Eq. 6-7,
:mod:`drdpgan.models.fusion`; notebooks 07 and 09 train that path). To study the binary code
(Eq. 2-4) and the password extractor E_P with the information hiding loss (Eq. 13-15) on their
own, notebook 06 needs *some* image that carries the bits without training the whole generator.
This module is that carrier: a small network that adds a bounded, learned residual to a real
face image::

    P      = Linear(2 * bits - 1)  reshaped to (C, R/4, R/4), upsampled to R x R   (the password map)
    r      = conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU -> conv1x1 ([x, P])
    x_hide = x + strength * tanh(r)                                                 (|x_hide - x| <= strength)

It is trained jointly with E_P (:func:`drdpgan.hiding.train_hiding`): E_P reads the bits back
from ``x_hide + eps`` (Eq. 13-14) under the binary cross-entropy of Eq. 15, while an L1 term
keeps ``x_hide`` close to ``x``. What it shows is what E_P and the code need from a channel --
not how well the full generator hides the password (that is Table 3, notebook 11).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HidingCarrierConfig:
    resolution: int = 64
    code_bits: int = 512
    map_channels: int = 8  # channels of the password map at R/4 x R/4
    hidden_channels: int = 32
    strength: float = 0.1  # largest change of a pixel value (images in [-1, 1])


class HidingCarrier(nn.Module):
    """Additive embedding network: (B, 3, R, R) in [-1, 1] and (B, l) bits -> (B, 3, R, R)."""

    def __init__(self, cfg: HidingCarrierConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or HidingCarrierConfig()
        if cfg.resolution % 4:
            raise ValueError(f"resolution must be a multiple of 4, got {cfg.resolution}")
        self.map_size = cfg.resolution // 4
        self.password = nn.Linear(cfg.code_bits, cfg.map_channels * self.map_size ** 2)
        h = cfg.hidden_channels
        self.net = nn.Sequential(
            nn.Conv2d(3 + cfg.map_channels, h, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(h, h, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(h, 3, 1),
        )

    def password_map(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, l) bits in {0, 1} -> (B, map_channels, R, R): the bits spread over the image plane."""
        b = bits.shape[0]
        p = self.password(bits.float() * 2 - 1).view(b, self.cfg.map_channels, self.map_size, self.map_size)
        return F.interpolate(p, size=(self.cfg.resolution,) * 2, mode="nearest")

    def residual(self, img: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """The change the carrier makes, ``strength * tanh(r)``: bounded by ``strength`` per pixel value."""
        if img.shape[-1] != self.cfg.resolution:
            raise ValueError(f"carrier built for {self.cfg.resolution} px, got {img.shape[-1]} px")
        if bits.shape[-1] != self.cfg.code_bits:
            raise ValueError(f"carrier built for {self.cfg.code_bits} bits, got {bits.shape[-1]}")
        r = self.net(torch.cat([img, self.password_map(bits)], dim=1))
        return self.cfg.strength * torch.tanh(r)

    def forward(self, img: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """``x_hide = x + strength * tanh(r(x, bits))`` (not clamped: E_P sees exactly what was added)."""
        return img + self.residual(img, bits)
