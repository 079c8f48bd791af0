"""Differentiable augmentation for training a GAN on few images (DiffAugment, Zhao et al., NeurIPS 2020).

The same random transformation family is applied to every image the discriminator sees, real and
generated, in both the D and the G steps; because each operation is differentiable, G's gradient
passes through it, and D cannot memorise the few real images. Policies (comma-separated), as the
paper's ``color,translation,cutout`` on images in [-1, 1]:

* ``color``: brightness ``+ U(-0.5, 0.5)``, saturation ``x_mean + (x - x_mean) * U(0, 2)`` (mean over
  channels), contrast ``m + (x - m) * U(0.5, 1.5)`` (mean over the image);
* ``translation``: an integer shift of up to 1/8 of the side in x and y, zeros entering;
* ``cutout``: a square of half the side at a random position set to 0.

Every random number comes from the ``generator`` passed in, so a resumed training replays the same
augmentations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import draw_rows

__all__ = ["POLICIES", "diff_augment", "parse_policy"]

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policies {unknown}; known: {POLICIES}")
    return names


def _rand(n: int, gen: torch.Generator, device, dtype) -> torch.Tensor:
    # per-sample draws go through draw_rows: a data-parallel process draws the global batch and keeps its rows
    return draw_rows(lambda m: torch.rand(m, 1, 1, 1, generator=gen), n).to(device=device, dtype=dtype)


def _randint(low: int, high: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return draw_rows(lambda m: torch.randint(low, high, (m,), generator=gen), n)


def _color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    x = x + (_rand(b, gen, x.device, x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(b, gen, x.device, x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(b, gen, x.device, x.dtype) + 0.5) + mean


def _translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sh, sh + 1, b, gen)
    tx = _randint(-sw, sw + 1, b, gen)
    padded = F.pad(x, (sw, sw, sh, sh))  # zeros enter
    rows = (torch.arange(h)[None, :] + sh - ty[:, None]).to(x.device)  # (B, H): source row of each output row
    cols = (torch.arange(w)[None, :] + sw - tx[:, None]).to(x.device)  # (B, W)
    idx_r = rows[:, None, :, None].expand(b, x.shape[1], h, padded.shape[-1])
    out = padded.gather(2, idx_r)
    idx_c = cols[:, None, None, :].expand(b, x.shape[1], h, w)
    return out.gather(3, idx_c)


def _cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - ch % 2), b, gen)
    cx = _randint(0, w + (1 - cw % 2), b, gen)
    ys = torch.arange(h)[None, :] - (cy[:, None] - ch // 2)
    xs = torch.arange(w)[None, :] - (cx[:, None] - cw // 2)
    keep_y = (ys < 0) | (ys >= ch)  # (B, H)
    keep_x = (xs < 0) | (xs >= cw)  # (B, W)
    mask = (keep_y[:, :, None] | keep_x[:, None, :]).to(device=x.device, dtype=x.dtype)  # (B, H, W)
    return x * mask[:, None]


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """Apply the ``policy`` operations, in order, to ``(B,C,H,W)`` images (differentiably)."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    for name in names:
        x = _OPS[name](x, generator)
    return x
