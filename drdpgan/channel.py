"""What an anonymized image meets between anonymize and recover, for training E_P to read through it.

The paper trains E_P through Gaussian noise only (Eq. 13, :func:`drdpgan.models.extractor.add_channel_noise`).
A shared photo is also stored with 8 bits per channel, re-encoded as JPEG and resized. Each of these
is a differentiable stand-in here, applied to ``x_anon`` (B, 3, R, R) in [-1, 1] before E_P:

* ``quantize``: rounding to the 256 levels of an 8-bit PNG, straight-through gradient (the rounding
  in the forward pass, identity in the backward pass);
* ``jpeg``: kornia's differentiable JPEG (``kornia.enhance.jpeg_codec_differentiable``), quality drawn
  uniformly from ``JPEG_QUALITY``;
* ``resize``: bilinear down-scaling by a factor drawn from ``RESIZE_FACTOR`` and back up;
* ``none``: unchanged.

:func:`distort` draws one of the configured names per step (from an explicit generator) and applies
it to the whole batch, as HiDDeN's combined-noise training does. Evaluation uses the real operations
(PIL JPEG, :func:`drdpgan.protocol.as_saved_image`), never these stand-ins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTORTIONS", "JPEG_QUALITY", "RESIZE_FACTOR", "quantize_ste", "jpeg", "resize", "distort"]

JPEG_QUALITY = (60.0, 98.0)
RESIZE_FACTOR = (0.5, 0.9)
DISTORTIONS = ("none", "quantize", "jpeg", "resize")


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """8-bit rounding of ``x`` in [-1, 1] (clamped) with a straight-through gradient."""
    q = torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    return x + (q - x).detach()


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    """Differentiable JPEG at ``quality`` (kornia) of ``x`` in [-1, 1]; returns [-1, 1]."""
    from kornia.enhance import jpeg_codec_differentiable

    with torch.autocast(x.device.type, enabled=False):  # the codec's colour and DCT transforms in fp32
        y = jpeg_codec_differentiable(((x.float() + 1) / 2).clamp(0, 1), torch.tensor([float(quality)], device=x.device))
    return y * 2 - 1


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear (antialiased) down-scaling by ``factor`` and back to the input size."""
    r = x.shape[-1]
    small = F.interpolate(x, size=max(4, int(round(r * factor))), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=r, mode="bilinear", align_corners=False)


def distort(x: torch.Tensor, names: tuple[str, ...], generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """One distortion of ``names`` drawn with ``generator`` (and its strength), applied to the batch ``x``.
    Returns ``(distorted, name)``; an empty ``names`` returns ``x`` unchanged (the paper's setting)."""
    unknown = set(names) - set(DISTORTIONS)
    if unknown:
        raise ValueError(f"unknown distortions {sorted(unknown)}; known: {DISTORTIONS}")
    if not names:
        return x, "none"
    name = names[int(torch.randint(len(names), (), generator=generator))]
    u = float(torch.rand((), generator=generator))
    if name == "quantize":
        return quantize_ste(x), name
    if name == "jpeg":
        return jpeg(x, JPEG_QUALITY[0] + u * (JPEG_QUALITY[1] - JPEG_QUALITY[0])), name
    if name == "resize":
        return resize(x, RESIZE_FACTOR[0] + u * (RESIZE_FACTOR[1] - RESIZE_FACTOR[0])), name
    return x, name
