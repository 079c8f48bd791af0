"""drdpgan.hiding and the stand-in carrier (notebook 06): tiny configs, a few seconds in all."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drdpgan import hiding
from drdpgan.losses import warmup_l1_factor
from drdpgan.models.binary_code import BinaryCodeConfig, BinaryCodeDecoder, mean_threshold_quantize
from drdpgan.models.extractor import ExtractorConfig
from drdpgan.models.hiding_carrier import HidingCarrier, HidingCarrierConfig

RES, BITS = 16, 16


def _toy(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # smooth toy "faces": a 4x4 random colour field upsampled to RES x RES
    images = F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 1.6 - 0.8, size=RES, mode="bilinear")
    bits = torch.randint(0, 2, (n, BITS), generator=g).float()
    return images, bits


def _cfgs(steps: int, seed: int = 0, **kw):
    ccfg = HidingCarrierConfig(resolution=RES, code_bits=BITS, map_channels=4, hidden_channels=8, strength=0.5)
    ecfg = ExtractorConfig(resolution=RES, code_bits=BITS, base_channels=8, max_channels=16)
    tcfg = hiding.HidingTrainConfig(seed=seed, steps=steps, batch_size=16, lr=1e-2, eval_every=10, **kw)
    return ccfg, ecfg, tcfg


def test_carrier_residual_is_bounded_and_checks_shapes():
    torch.manual_seed(0)
    c = HidingCarrier(HidingCarrierConfig(resolution=RES, code_bits=BITS, strength=0.05))
    x, b = _toy(3, 0)
    with torch.no_grad():
        y = c(x, b)
        r = c.residual(x, b)
    assert y.shape == x.shape and torch.allclose(y - x, r, atol=1e-6)
    assert float(r.abs().max()) <= 0.05 + 1e-6
    assert c.password_map(b).shape == (3, 8, RES, RES)
    with pytest.raises(ValueError):
        c(torch.zeros(1, 3, 32, 32), b[:1])
    with pytest.raises(ValueError):
        c(x, torch.zeros(3, BITS + 1))


def test_a_few_steps_lower_the_information_loss():
    images, pool = _toy(64, 1)
    _, _, hist = hiding.train_hiding(images, pool, *_cfgs(steps=40), progress=False)
    first, last = sum(hist["step_info"][:5]) / 5, sum(hist["step_info"][-5:]) / 5
    assert last < first - 0.05, (first, last)


def test_trained_toy_reads_bits_below_chance_and_clean_images_do_not():
    images, pool = _toy(64, 2)
    test_images, test_bits = _toy(48, 3)
    dec = BinaryCodeDecoder(BinaryCodeConfig(identity_dim=8, code_bits=BITS, decoder_hidden=8))
    f_id = F.normalize(torch.randn(48, 8), dim=-1)
    carrier, extractor, hist = hiding.train_hiding(
        images, pool, *_cfgs(steps=80), progress=False,
        eval_set={"images": test_images, "bits": test_bits, "f_id": f_id, "decoder": dec})
    r = hiding.evaluate_hiding(carrier, extractor, dec, test_images, test_bits, f_id)
    assert r["ber"] < 0.3, r["ber"]  # chance is 0.5 for these balanced random bits
    assert hist["eval"][-1]["ber"] == pytest.approx(r["ber"])
    assert not carrier.training and not extractor.training
    clean = hiding.evaluate_hiding(None, extractor, dec, test_images, test_bits, f_id)
    assert clean["ber"] > 0.35, clean["ber"]  # nothing hidden: E_P cannot read the bits
    rob = hiding.noise_robustness(carrier, extractor, dec, test_images, test_bits, f_id, [0.0, 1.0])
    assert rob[0]["ber"] == pytest.approx(r["ber"]) and rob[1]["ber"] > rob[0]["ber"]


def test_hiding_training_is_deterministic_and_leaves_global_rng_alone():
    images, pool = _toy(32, 4)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    c1, e1, h1 = hiding.train_hiding(images, pool, *_cfgs(steps=6, seed=5), progress=False)
    after = torch.rand(1)
    assert torch.equal(before, after)
    c2, e2, h2 = hiding.train_hiding(images, pool, *_cfgs(steps=6, seed=5), progress=False)
    assert h1["step_loss"] == h2["step_loss"]
    for a, b in zip(list(c1.state_dict().values()) + list(e1.state_dict().values()),
                    list(c2.state_dict().values()) + list(e2.state_dict().values())):
        assert torch.equal(a, b)
    _, _, h3 = hiding.train_hiding(images, pool, *_cfgs(steps=6, seed=6), progress=False)
    assert h3["step_loss"] != h1["step_loss"]


def test_info_warmup_schedule_and_loss():
    assert [warmup_l1_factor(s, 0) for s in (1, 50)] == [1.0, 1.0]
    # warm-up 8: L_info alone for steps 1-4, then the L1 factor 0.25, 0.5, 0.75, 1 at steps 5-8, 1 after
    assert [warmup_l1_factor(s, 8) for s in range(1, 11)] == [0, 0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    images, pool = _toy(32, 4)
    _, _, h = hiding.train_hiding(images, pool, *_cfgs(steps=8, info_warmup_steps=8), progress=False)
    lam = hiding.HidingTrainConfig().lambda_info
    for s in range(8):  # the logged loss is lambda_info * L_info + ramp * L1, step by step
        want = lam * h["step_info"][s] + warmup_l1_factor(s + 1, 8) * h["step_l1"][s]
        assert h["step_loss"][s] == pytest.approx(want, rel=1e-5)
    _, _, h0 = hiding.train_hiding(images, pool, *_cfgs(steps=8), progress=False)
    assert h0["step_loss"][0] == pytest.approx(lam * h0["step_info"][0] + h0["step_l1"][0], rel=1e-5)
    assert h0["step_loss"][0] != pytest.approx(h["step_loss"][0])


def test_code_length_mismatch_is_refused():
    images, pool = _toy(8, 0)
    ccfg, ecfg, tcfg = _cfgs(steps=1)
    with pytest.raises(ValueError):
        hiding.train_hiding(images, pool[:, :-1], ccfg, ecfg, tcfg, progress=False)


def test_binary_code_training_improves_decoding_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(10, 32, generator=g), dim=-1)
    f = F.normalize(centres.repeat_interleave(8, 0) + 0.2 * torch.randn(80, 32, generator=g), dim=-1)
    bcfg = BinaryCodeConfig(identity_dim=32, code_bits=24, hidden_dim=64, decoder_hidden=64)
    tcfg = hiding.CodeTrainConfig(seed=0, steps=80, batch_size=16, lr=3e-3, eval_every=20)
    m, d, hist = hiding.train_binary_code(f, bcfg, tcfg, f_eval=f, progress=False)
    assert not m.training and not d.training
    assert hist["eval"][-1]["cos"] > hist["eval"][0]["cos"] + 0.05 or hist["eval"][-1]["cos"] > 0.8
    rep = hiding.code_report(m, d, f)
    assert torch.equal(rep["bits"], hiding.passwords(m, f))
    assert torch.equal(rep["bits"], mean_threshold_quantize(rep["soft"]))
    assert rep["fmse"] == pytest.approx(float(((rep["decoded"] - f) ** 2).mean()))
    # FMSE = 2 (1 - cos) / D for unit vectors
    assert rep["fmse"] == pytest.approx(float((2 * (1 - (rep["decoded"] * f).sum(-1)) / 32).mean()), rel=1e-4)
    m2, d2, hist2 = hiding.train_binary_code(f, bcfg, tcfg, f_eval=f, progress=False)
    assert hist2["step_loss"] == hist["step_loss"]
    assert torch.equal(hiding.passwords(m2, f), rep["bits"])


def test_majority_guess_ber_hand_value():
    train = torch.tensor([[1, 0, 1], [1, 0, 0], [1, 1, 0]]).float()  # majority guess: 1, 0, 0
    held = torch.tensor([[1, 1, 0], [0, 0, 0]]).float()
    assert hiding.majority_guess_ber(train, held) == pytest.approx(2 / 6)
