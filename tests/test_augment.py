"""DiffAugment: deterministic under its generator, differentiable, each operation does what it says."""

import pytest
import torch

from drdpgan.augment import diff_augment, parse_policy


def _x(b=4, s=16):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_deterministic_and_differentiable():
    x = _x().requires_grad_(True)
    a = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    b = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_shifts_content_with_zeros_entering():
    x = torch.arange(16.0).view(1, 1, 4, 4).expand(64, 3, 4, 4).contiguous() + 1  # all > 0
    y = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    for i in range(len(y)):
        vals = y[i, 0]
        kept = vals[vals != 0]
        assert set(kept.tolist()) <= set(x[0, 0].flatten().tolist())  # only shifted copies of the input
        # a shift keeps rows of consecutive values: each row's non-zeros increase by 1
        for row in vals:
            nz = row[row != 0]
            assert torch.all(nz[1:] - nz[:-1] == 1)
    assert (y == 0).any()  # some shift happened (64 draws of at most +-1 px at 4 px)


def test_cutout_zeroes_a_quarter_square():
    x = torch.ones(32, 3, 16, 16)
    y = diff_augment(x, "cutout", torch.Generator().manual_seed(0))
    zero_frac = (y[:, 0] == 0).float().mean(dim=(1, 2))
    assert torch.all(zero_frac <= 0.25 + 1e-6) and zero_frac.mean() > 0.1  # an 8x8 square, clipped at borders


def test_unknown_policy_refused():
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        parse_policy("color,zoom")
