"""Tests of the StyleGAN2 residual discriminator, minibatch-std and the R1 / logistic losses."""

from __future__ import annotations

import pytest
import torch

from drdpgan.models.discriminator import MinibatchStdLayer, StyleGAN2Discriminator
from drdpgan.models.stylegan2 import StyleGAN2Config
from drdpgan.losses import adversarial_loss as g_nonsaturating_loss
from drdpgan.losses import discriminator_logistic_loss as d_logistic_loss
from drdpgan.train_stylegan2 import r1_penalty


def tiny_cfg(res: int = 32, **kw) -> StyleGAN2Config:
    base = dict(resolution=res, z_dim=16, w_dim=16, mapping_layers=2, channel_base=res * 8, channel_max=16)
    base.update(kw)
    return StyleGAN2Config(**base)


@pytest.mark.parametrize("res", [32, 64, 256])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_shapes(res, batch):
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(tiny_cfg(res, channel_max=8 if res == 256 else 16))
    x = torch.randn(batch, 3, res, res)
    out = D(x)
    assert out.shape == (batch, 1) and torch.isfinite(out).all()
    out2, feats = D(x, return_features=True)
    assert torch.equal(out, out2)
    assert [f.shape[-1] for f in feats] == [r // 2 for r in D.block_resolutions]
    assert D.cfg.resolution == res


def test_minibatch_std_values():
    layer = MinibatchStdLayer(group_size=4, num_channels=1)
    x = torch.randn(8, 5, 4, 4)
    y = layer(x)
    assert y.shape == (8, 6, 4, 4)
    assert torch.equal(y[:, :5], x)
    # groups: sample n is in group n % 2 -> {0,2,4,6} and {1,3,5,7}
    for g in range(2):
        members = x[g::2]  # (4, 5, 4, 4)
        std = (members.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[g::2, 5], std.expand(4, 4, 4), atol=1e-6)
    # identical samples -> std ~ sqrt(1e-8)
    same = layer(torch.ones(4, 2, 4, 4))
    assert torch.allclose(same[:, 2], torch.full((4, 4, 4), 1e-4), atol=1e-6)
    # group size reduced to a divisor of the batch
    assert layer.group_for(3) == 3 and layer.group_for(6) == 3 and layer.group_for(2) == 2 and layer.group_for(1) == 1
    assert layer(torch.randn(6, 2, 4, 4)).shape == (6, 3, 4, 4)


def test_minibatch_std_couples_samples():
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(tiny_cfg(32)).eval()
    x = torch.randn(4, 3, 32, 32)
    a = D(x)
    x2 = x.clone()
    x2[1] += 1.0
    b = D(x2)
    assert not torch.equal(a[0], b[0])  # other samples' logits see the changed sample via mbstd
    Dn = StyleGAN2Discriminator(tiny_cfg(32, mbstd_num_channels=0)).eval()
    assert torch.equal(Dn(x)[0], Dn(x2)[0])


def test_determinism_same_seed():
    torch.manual_seed(5)
    D1 = StyleGAN2Discriminator(tiny_cfg(32))
    torch.manual_seed(5)
    D2 = StyleGAN2Discriminator(tiny_cfg(32))
    s1, s2 = D1.state_dict(), D2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_r1_penalty():
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(tiny_cfg(32))
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits = D(x)
    r1 = r1_penalty(logits, x)
    assert r1.shape == (4,) and (r1 >= 0).all() and r1.sum() > 0
    (r1.mean()).backward()  # double backward works
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())

    # a D that ignores its input has zero R1 (zero-gradient case)
    class Const(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.ones(1))

        def forward(self, img):
            return (img * 0).sum(dim=[1, 2, 3]).unsqueeze(1) + self.b

    y = torch.randn(3, 3, 8, 8, requires_grad=True)
    assert torch.equal(r1_penalty(Const()(y), y), torch.zeros(3))

    # linear D: grad is the weight -> R1 = ||w||^2 exactly
    w = torch.randn(3, 8, 8)
    y = torch.randn(2, 3, 8, 8, requires_grad=True)
    logits = (y * w).sum(dim=[1, 2, 3])
    assert torch.allclose(r1_penalty(logits, y), w.square().sum().expand(2))


def test_logistic_losses():
    zero = torch.zeros(5, 1)
    ln2 = torch.log(torch.tensor(2.0))
    assert torch.allclose(g_nonsaturating_loss(zero), ln2)
    assert torch.allclose(d_logistic_loss(zero, zero), 2 * ln2)
    assert g_nonsaturating_loss(torch.full((2, 1), 10.0)) < 1e-3
