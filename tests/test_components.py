"""DR-DPGAN components checked against the paper's equations on small tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drdpgan.losses import (
    LossWeights, adversarial_loss, discriminative_loss, identity_loss_anonymize, identity_loss_recover, total_loss,
)
from drdpgan.models.binary_code import (
    BinaryCodeConfig, BinaryCodeDecoder, BinaryCodeMapping, bit_error_rate, float_mse, mean_threshold_quantize,
    straight_through_bits,
)
from drdpgan.models.encoder import EncoderConfig, MultiScaleEncoder
from drdpgan.models.extractor import ExtractorConfig, PasswordExtractor, add_channel_noise, information_hiding_loss
from drdpgan.models.fake_identity import (
    FakeIdentityConfig, FakeIdentityGenerator, band_hinge, pairwise_mean_cosine,
)
from drdpgan.models.fusion import AdaptiveMaskFusion
from drdpgan.models.latent_mapper import LatentMapper, LatentMapperConfig, concat_features
from drdpgan.repro import make_generator, seed_everything


# ----------------------------------------------------------------- Alg. 1


def test_hinge_zero_inside_band_and_gradient_points_inside():
    s = torch.tensor([-0.5, 0.05, 0.1, 0.25, 0.4, 0.6, 0.9], requires_grad=True)
    loss = band_hinge(s, 0.1, 0.4)
    assert torch.allclose(loss, torch.tensor([0.6, 0.05, 0, 0, 0, 0.2, 0.5]), atol=1e-6)
    loss.sum().backward()
    # Gradient descent moves s by -grad: up below the band, down above it, nowhere inside it.
    assert s.grad.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_algorithm1_lands_in_band_and_leaves_shared_mlp_untouched():
    seed_everything(0)
    gen = FakeIdentityGenerator(FakeIdentityConfig(noise_dim=16, hidden_dim=64, identity_dim=32, steps=100))
    before = [p.clone() for p in gen.parameters()]
    f_id = F.normalize(torch.randn(64, 32, generator=make_generator(1)), dim=-1)
    out = gen.generate(f_id, generator=make_generator(2))
    assert out["fake"].shape == (64, 32)
    assert torch.allclose(out["fake"].norm(dim=-1), torch.ones(64), atol=1e-5)
    assert out["in_band"].float().mean() >= 0.95
    assert torch.allclose(out["cos"], (out["fake"] * f_id).sum(-1), atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, gen.parameters()))
    # early stop: samples already in the band take no step, and no sample exceeds T_g
    assert int(out["steps"].max()) <= 100


def test_algorithm1_unguided_takes_no_step_and_is_deterministic():
    gen = FakeIdentityGenerator(FakeIdentityConfig(noise_dim=16, hidden_dim=64, identity_dim=32))
    f_id = F.normalize(torch.randn(8, 32), dim=-1)
    a = gen.generate(f_id, generator=make_generator(5), guided=False)
    b = gen.generate(f_id, generator=make_generator(5), guided=False)
    assert torch.equal(a["fake"], b["fake"]) and int(a["steps"].sum()) == 0


def test_pairwise_mean_cosine():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert pairwise_mean_cosine(x) == pytest.approx((0 + 1 + 0) * 2 / 6)


# ----------------------------------------------------------------- Eq. 2-4


def test_mean_threshold_quantization_with_ties():
    f = torch.tensor([[0.2, 0.4, 0.6, 0.4], [0.5, 0.5, 0.5, 0.5]])
    # row 1: mean 0.4 -> ties at the mean give 1; row 2: every element equals the mean -> all 1
    assert mean_threshold_quantize(f).tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]


def test_straight_through_forward_is_quantized_backward_is_identity():
    f = torch.tensor([[0.1, 0.9, 0.3]], requires_grad=True)
    b = straight_through_bits(f)
    assert b.tolist() == [[0.0, 1.0, 0.0]]
    b.sum().backward()
    assert f.grad.tolist() == [[1.0, 1.0, 1.0]]


def test_binary_code_mapping_shapes_dropout_and_bits():
    cfg = BinaryCodeConfig(identity_dim=32, code_bits=24, hidden_dim=48, decoder_hidden=40)
    m = BinaryCodeMapping(cfg)
    assert sum(isinstance(x, torch.nn.Linear) for x in m.net) == 3
    assert all(x.p == 0.5 for x in m.net if isinstance(x, torch.nn.Dropout))
    m.eval()
    f = torch.randn(5, 32)
    code = m.soft_code(f)
    assert ((code > 0) & (code < 1)).all()
    bits = m(f)
    assert set(bits.unique().tolist()) <= {0.0, 1.0} and torch.equal(bits, mean_threshold_quantize(code))
    dec = BinaryCodeDecoder(cfg)(bits)
    assert dec.shape == (5, 32) and torch.allclose(dec.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_ber_and_fmse_hand_values():
    a = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]]).float()
    b = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 1]]).float()
    assert bit_error_rate(a, b) == pytest.approx(2 / 8)
    assert float_mse(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0])) == pytest.approx(2.5)


# ----------------------------------------------------------------- Eq. 13-15


def test_extractor_shapes_and_information_loss():
    ext = PasswordExtractor(ExtractorConfig(resolution=32, code_bits=20, base_channels=8, max_channels=16))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    logits = ext(add_channel_noise(x, 0.02, make_generator(0))).detach()
    assert logits.shape == (3, 20)
    bits = torch.randint(0, 2, (3, 20)).float()
    assert information_hiding_loss(logits, bits) == pytest.approx(
        float(F.binary_cross_entropy(torch.sigmoid(logits), bits)), rel=1e-4)
    with pytest.raises(ValueError):
        ext(torch.zeros(1, 3, 64, 64))
    assert torch.equal(add_channel_noise(x, 0.0), x)
    assert not torch.equal(add_channel_noise(x, 0.1, make_generator(0)), x)


def test_extractor_layout_head_stops_at_the_plane_and_refuses_bad_sizes():
    """head="layout": the blocks end at s x s and a conv1x1 predicts the BitLayout plane's slots."""
    cfg = ExtractorConfig(resolution=32, code_bits=20, base_channels=8, max_channels=16, head="layout",
                          layout_channels=2, layout_size=8)
    ext = PasswordExtractor(cfg)
    assert ext(torch.zeros(2, 3, 32, 32)).shape == (2, 20)
    assert ext.features(torch.zeros(1, 3, 32, 32)).shape[-1] == 8  # two stride-2 blocks, not three
    with pytest.raises(ValueError, match="power of two"):
        PasswordExtractor(ExtractorConfig(resolution=32, code_bits=20, head="layout", layout_size=32))
    with pytest.raises(ValueError, match="head"):
        PasswordExtractor(ExtractorConfig(resolution=32, code_bits=20, head="dense"))


# ----------------------------------------------------------------- Eq. 6-7


def test_fusion_matches_eq7_for_a_hand_set_mask():
    torch.manual_seed(0)
    fus = AdaptiveMaskFusion(channels=4, code_bits=6)
    f_out, f_g = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    password = torch.randint(0, 2, (2, 6)).float()
    # Hand-set mask: zero weights, bias b -> M = sigmoid(b) everywhere.
    with torch.no_grad():
        fus.mask.weight.zero_()
        fus.mask.bias.fill_(0.7)
    f_in, m = fus(f_out, f_g, password)
    mval = torch.sigmoid(torch.tensor(0.7))
    hide = F.conv2d((password * 2 - 1)[:, :, None, None], fus.hide.weight, fus.hide.bias)
    expected = mval * f_g + (1 - mval) * f_out + hide
    assert torch.allclose(m, mval.expand_as(m))
    assert torch.allclose(f_in, expected, atol=1e-6)


def test_fusion_mask_is_conv1x1_sigmoid_of_the_three_inputs():
    torch.manual_seed(1)
    fus = AdaptiveMaskFusion(channels=3, code_bits=5)
    torch.nn.init.normal_(fus.mask.weight)
    f_out, f_g = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    pw = torch.tensor([[1.0, 0, 1, 1, 0]])
    _, m = fus(f_out, f_g, pw)
    f_hide = fus.password_map(pw, 4, 4)
    ref = torch.sigmoid(F.conv2d(torch.cat([f_hide, f_g, f_out], 1), fus.mask.weight, fus.mask.bias))
    assert torch.allclose(m, ref, atol=1e-6)


def test_fusion_without_encoder_control():
    fus = AdaptiveMaskFusion(channels=3, code_bits=5, use_encoder=False)
    f_out = torch.randn(2, 3, 4, 4)
    pw = torch.zeros(2, 5)
    f_in, m = fus(f_out, None, pw)
    assert m is None and torch.allclose(f_in, f_out + fus.password_map(pw, 4, 4))


def test_encoder_targets_at_32_64_256():
    for res, targets in [(32, [(8, 16), (16, 16), (32, 8)]), (64, [(8, 32), (16, 32), (32, 16), (64, 8)]),
                         (256, [(8, 16), (64, 8), (256, 4)])]:
        enc = MultiScaleEncoder(EncoderConfig(resolution=res, targets=targets, base_channels=4, max_channels=16))
        feats = enc(torch.zeros(2, 3, res, res))
        assert {r: tuple(f.shape) for r, f in feats.items()} == {r: (2, c, r, r) for r, c in targets}


# ----------------------------------------------------------------- Eq. 1, 5


def test_concat_order_and_t_switch():
    f_id, fake = torch.full((2, 4), 1.0), torch.full((2, 4), 2.0)
    emo, pos = torch.full((2, 3), 3.0), torch.full((2, 2), 4.0)
    a = concat_features(f_id, fake, emo, pos, t=1)
    r = concat_features(f_id, fake, emo, pos, t=0)
    assert a[0].tolist() == [2.0] * 4 + [3.0] * 3 + [4.0] * 2
    assert r[0].tolist() == [1.0] * 4 + [3.0] * 3 + [4.0] * 2
    no3d = concat_features(f_id, fake, emo, pos, t=1, use_prior=False)
    assert no3d[0].tolist() == [2.0] * 4 + [0.0] * 5
    with pytest.raises(ValueError):
        concat_features(f_id, None, emo, pos, t=1)
    with pytest.raises(ValueError):
        concat_features(f_id, fake, emo, pos, t=2)


def test_latent_mapper_spreads_three_level_codes():
    cfg = LatentMapperConfig(in_dim=9, w_dim=6, hidden_dim=8, ws_levels=[0, 0, 1, 1, 1, 2])
    m = LatentMapper(cfg)
    w_avg = torch.arange(6.0)
    x = torch.randn(3, 9)
    ws = m(x, w_avg)
    assert ws.shape == (3, 6, 6)
    assert torch.allclose(ws, w_avg.expand(3, 6, 6))  # zero-initialised offsets: start at w_avg
    torch.nn.init.normal_(m.heads[1][-1].weight)
    ws = m(x, w_avg)
    codes = m.level_codes(x)
    assert torch.allclose(ws[:, 2], ws[:, 4]) and torch.allclose(ws[:, 2], w_avg + codes[:, 1])
    assert torch.allclose(ws[:, 0], w_avg.expand(3, 6)) and torch.allclose(ws[:, 5], w_avg.expand(3, 6))


# ----------------------------------------------------------------- Eq. 9-16


def test_losses_hand_values_and_weights_reach_total():
    assert float(adversarial_loss(torch.zeros(4))) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert float(discriminative_loss(torch.ones(3), torch.zeros(3))) == 0.0
    assert float(discriminative_loss(torch.zeros(3), torch.ones(3))) == 2.0
    e = torch.tensor([[1.0, 0.0]])
    assert float(identity_loss_anonymize(e, f_id=torch.tensor([[0.0, 1.0]]), f_fake=e)) == pytest.approx(0.0)
    assert float(identity_loss_anonymize(e, f_id=e, f_fake=torch.tensor([[0.0, 1.0]]))) == pytest.approx(2.0)
    assert float(identity_loss_anonymize(e, f_id=-e, f_fake=e)) == pytest.approx(0.0)  # max(0, -1) = 0
    assert float(identity_loss_recover(e, e)) == pytest.approx(0.0)
    parts = {"adv": torch.tensor(1.0), "dic": torch.tensor(2.0), "id": torch.tensor(3.0), "info": torch.tensor(4.0)}
    assert float(total_loss(parts, LossWeights())) == pytest.approx(1 + 2 + 3 + 5 * 4)
    assert float(total_loss(parts, LossWeights(adv=0, dic=0, id=2, info=1))) == pytest.approx(6 + 4)
    with pytest.raises(KeyError):
        total_loss({"rec": torch.tensor(1.0)}, LossWeights())
