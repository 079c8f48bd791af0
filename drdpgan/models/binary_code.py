"""Binary code mapping (paper Sec. 3.4.1, Eq. 2-4) and the way back to a float identity (Sec. 3.4.2).

``Password = BinaryCodeMapping(F_id)`` (Eq. 2): three fully connected layers with dropout 0.5
and a sigmoid give a code ``F`` with elements in (0, 1); Eq. 3-4 quantize it with the dynamic
threshold ``F_bar = mean_i F_i``::

    B'_i = q(F_i) = 1 if F_i >= F_bar else 0        (a tie at the mean gives 1)

Sec. 3.4.2 then converts the bits the extractor reads back "into corresponding floating-point
identity information": :class:`BinaryCodeDecoder` is a small MLP from bits in {0, 1} to a unit
identity vector, trained together with the mapping (straight-through estimator through Eq. 4)
to reproduce ``F_id``. FMSE (Sec. 4.2) is the mean squared error between that decoded float
identity and ``F_id``; the cosine between them is reported beside it.

Code length: the paper does not state it. The default is 512 bits, one per dimension of the
512-d identity: with fewer bits the decoded identity's cosine to ``F_id`` drops (measured in
notebook 06), and 512 bits in a 64x64x3 image is 0.04 bit per pixel value, well inside what a
CNN steganography channel carries. It is ``BinaryCodeConfig.code_bits``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BinaryCodeConfig:
    identity_dim: int = 512
    code_bits: int = 512  # l of Eq. 3
    hidden_dim: int = 1024
    dropout: float = 0.5  # Sec. 3.4.1: dropout 0.5 on the FC layers
    decoder_hidden: int = 1024


def mean_threshold_quantize(f: torch.Tensor) -> torch.Tensor:
    """Eq. 3-4: ``q(F_i) = 1 if F_i >= mean(F) else 0`` per row of ``f`` (..., l); float 0/1."""
    thr = f.mean(dim=-1, keepdim=True)
    return (f >= thr).to(f.dtype)


def straight_through_bits(f: torch.Tensor) -> torch.Tensor:
    """Eq. 4 in the forward pass, identity gradient in the backward pass (training only)."""
    return f + (mean_threshold_quantize(f) - f).detach()


class BinaryCodeMapping(nn.Module):
    """Eq. 2: ``F_id`` (B, D) -> code ``F`` in (0,1)^l via FC-dropout-FC-dropout-FC-sigmoid."""

    def __init__(self, cfg: BinaryCodeConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or BinaryCodeConfig()
        self.net = nn.Sequential(
            nn.Linear(cfg.identity_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.code_bits),
        )

    def soft_code(self, f_id: torch.Tensor) -> torch.Tensor:
        """The sigmoid code ``F`` (B, l), elements in (0, 1)."""
        return torch.sigmoid(self.net(f_id))

    def forward(self, f_id: torch.Tensor, straight_through: bool | None = None) -> torch.Tensor:
        """The password bits (B, l) in {0, 1}. During training, with a straight-through gradient."""
        code = self.soft_code(f_id)
        st = self.training if straight_through is None else straight_through
        return straight_through_bits(code) if st else mean_threshold_quantize(code)


class BinaryCodeDecoder(nn.Module):
    """Sec. 3.4.2: bits (B, l) in {0, 1} -> float identity (B, D), unit norm."""

    def __init__(self, cfg: BinaryCodeConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or BinaryCodeConfig()
        self.net = nn.Sequential(
            nn.Linear(cfg.code_bits, cfg.decoder_hidden), nn.ReLU(),
            nn.Linear(cfg.decoder_hidden, cfg.identity_dim),
        )

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(bits * 2 - 1), dim=-1)


def bit_error_rate(pred_bits: torch.Tensor, true_bits: torch.Tensor) -> float:
    """BER (Sec. 4.2): fraction of bits that differ. Inputs are 0/1 tensors of equal shape."""
    if pred_bits.shape != true_bits.shape:
        raise ValueError(f"shape mismatch {tuple(pred_bits.shape)} vs {tuple(true_bits.shape)}")
    return float((pred_bits.round() != true_bits.round()).float().mean())


def float_mse(decoded: torch.Tensor, target: torch.Tensor) -> float:
    """FMSE (Sec. 4.2): mean squared error between decoded float identity and ``F_id``."""
    return float(F.mse_loss(decoded.float(), target.float()))
