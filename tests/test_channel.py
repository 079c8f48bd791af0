"""Training stand-ins for what a shared image meets (drdpgan.channel) against the real operations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from drdpgan.channel import distort, jpeg, quantize_ste, resize
from drdpgan.data.datasets import float_to_uint8, uint8_to_float
from drdpgan.protocol import as_saved_image


def smooth_image(seed: int = 0, r: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=r, mode="bicubic", align_corners=False).clamp(-1, 1)


def test_quantize_is_the_png_rounding_with_an_identity_gradient():
    x = (torch.rand(2, 3, 16, 16) * 2.2 - 1.1).requires_grad_(True)
    y = quantize_ste(x)
    assert torch.allclose(y, as_saved_image(x.detach()), atol=1e-6)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_differentiable_jpeg_is_close_to_pil_jpeg():
    x = smooth_image()
    buf = io.BytesIO()
    Image.fromarray(float_to_uint8(x[0]).permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=75)
    real = uint8_to_float(torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1))[None]
    approx = jpeg(x, 75)
    err_approx, err_real = float((approx - real).abs().mean()), float((x - real).abs().mean())
    assert err_approx < 0.6 * err_real + 0.01  # closer to what PIL's JPEG gives than the input is
    assert approx.shape == x.shape


def test_distort_is_deterministic_per_generator_and_checks_names():
    x = smooth_image(1).repeat(2, 1, 1, 1)
    a = distort(x, ("quantize", "jpeg", "resize", "none"), torch.Generator().manual_seed(3))
    b = distort(x, ("quantize", "jpeg", "resize", "none"), torch.Generator().manual_seed(3))
    assert a[1] == b[1] and torch.equal(a[0], b[0])
    seen = {distort(x, ("quantize", "jpeg", "resize", "none"), torch.Generator().manual_seed(s))[1] for s in range(40)}
    assert seen == {"quantize", "jpeg", "resize", "none"}
    assert distort(x, (), torch.Generator())[0] is x
    assert resize(x, 0.5).shape == x.shape
    with pytest.raises(ValueError, match="unknown distortions"):
        distort(x, ("blur",), torch.Generator())
