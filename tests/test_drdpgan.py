"""The assembled DR-DPGAN: anonymize then recover at 32, 64 and 256 px; ablation switches; param groups."""

from __future__ import annotations

import pytest
import torch

from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
from drdpgan.models.fake_identity import FakeIdentityConfig
from drdpgan.models.identity import IdentityEncoder, IdentityEncoderConfig
from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor
from drdpgan.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from drdpgan.repro import seed_everything


def tiny_model(res: int, **switches) -> DRDPGAN:
    seed_everything(0)
    g = StyleGAN2Generator(StyleGAN2Config(resolution=res, z_dim=16, w_dim=16, mapping_layers=2,
                                           channel_base=64 * res // 32, channel_max=16))
    enc = IdentityEncoder(IdentityEncoderConfig(working_size=32, stem_width=8, widths=(8, 16), layers=(1, 1),
                                                embedding_dim=32))
    p3d = Prior3DRegressor(Prior3DConfig(n_expression=4, working_size=32, stem_width=8, widths=(8, 16),
                                         blocks=(1, 1), hidden=16))
    cfg = DRDPGANConfig(resolution=res, identity_dim=32, n_expression=4, code_bits=24, binary_hidden=32,
                        mapper_hidden=32, mapper_layers=2, encoder_base_channels=4, encoder_max_channels=16,
                        extractor_base_channels=4, extractor_max_channels=16,
                        fake=FakeIdentityConfig(noise_dim=8, hidden_dim=16, steps=20), **switches)
    return DRDPGAN(cfg, g, enc, p3d).eval()


@pytest.mark.parametrize("res", [32, 64, 256])
def test_anonymize_then_recover_shapes(res):
    m = tiny_model(res)
    x = torch.rand(2, 3, res, res) * 2 - 1
    with torch.no_grad():
        a = m.anonymize(x, seed=1)
        r = m.recover(a["images"])
    assert a["images"].shape == r["images"].shape == (2, 3, res, res)
    assert a["password"].shape == r["bits"].shape == (2, 24)
    assert a["f_fake"].shape == a["f_id"].shape == r["f_id_decoded"].shape == (2, 32)
    assert sorted(a["masks"]) == [2**k for k in range(3, res.bit_length())]
    assert all(((mk >= 0) & (mk <= 1)).all() for mk in a["masks"].values())
    assert a["ws"].shape == (2, m.generator.num_ws, 16)


def test_seed_selects_the_fake_identity_deterministically():
    m = tiny_model(32)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a1, a2, b = m.anonymize(x, seed=1), m.anonymize(x, seed=1), m.anonymize(x, seed=2)
    assert torch.equal(a1["images"], a2["images"])
    assert not torch.equal(a1["f_fake"], b["f_fake"])


def test_ablation_switches_change_the_model():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    no_eg = tiny_model(32, use_encoder_control=False)
    assert no_eg.encoder is None
    with torch.no_grad():
        out = no_eg.anonymize(x, seed=0)
    assert out["masks"] == {}
    no3d = tiny_model(32, use_3d_prior=False)
    with torch.no_grad():
        f = no3d.anonymize(x, seed=0)["f_concat"]
    assert torch.count_nonzero(f[:, 32:]) == 0  # F_emo, F_pos zeroed (3DPC off)
    unguided = tiny_model(32, use_fid_control=False)
    with torch.no_grad():
        assert int(unguided.fake_identity.generate(torch.nn.functional.normalize(torch.randn(3, 32), dim=-1))[
            "steps"].sum()) == 0


def test_param_groups_follow_sec_4_1_2_and_exclude_frozen_priors():
    m = tiny_model(32)
    groups = {g["name"]: g for g in m.param_groups()}
    assert groups["stylegan2"]["lr"] == 1e-4 and groups["other"]["lr"] == 1e-3
    ids = {id(p) for g in groups.values() for p in g["params"]}
    assert not any(id(p) in ids for p in m.identity_encoder.parameters())
    assert not any(id(p) in ids for p in m.prior3d.parameters())
    assert all(id(p) in ids for p in m.extractor.parameters())
    m.train()
    assert not m.identity_encoder.training and not m.prior3d.training and m.extractor.training


def test_gradients_reach_generator_mapper_and_extractor_through_both_paths():
    m = tiny_model(32).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = m.anonymize(x, seed=0)
    r = m.recover(a["images"], password=a["password"])
    (a["images"].mean() + r["images"].mean() + r["bit_logits"].mean()).backward()
    assert m.mapper.heads[0][-1].weight.grad is not None
    assert m.extractor.head.weight.grad is not None
    assert any(p.grad is not None for p in m.generator.parameters())
    assert m.binary_code.net[0].weight.grad is not None  # straight-through Eq. 4 in training


def test_keyed_model_hides_a_longer_carrier_and_asks_for_it():
    """carrier_bits != code_bits: E_Ste and E_P carry the (sealed) carrier, the decoder reads the code."""
    m = tiny_model(32, carrier_bits=40)
    assert m.cfg.keyed and m.cfg.hidden_bits == 40 and m.extractor.cfg.code_bits == 40
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    carrier = torch.randint(0, 2, (2, 40)).float()
    with torch.no_grad():
        with pytest.raises(ValueError, match="sealed carrier"):
            m.anonymize(x, seed=1)
        with pytest.raises(ValueError, match="carries 40 bits"):
            m.anonymize(x, seed=1, carrier=carrier[:, :24])
        a = m.anonymize(x, seed=1, carrier=carrier)
        assert a["password"].shape == (2, 24) and torch.equal(a["carrier"], carrier)
        with pytest.raises(ValueError, match="open it with the key"):
            m.recover(a["images"])
        r = m.recover(a["images"], code=a["password"])
    assert r["bits"].shape == (2, 40) and r["f_id_decoded"].shape == (2, 32)
    assert not tiny_model(32).cfg.keyed  # the paper's layout: the code is what the image carries


def test_spatial_password_map_option_carries_gradients_to_its_plane():
    """password_map="spatial" (a departure): the bits become a P x s x s plane before E_Ste's conv1x1."""
    m = tiny_model(32, password_map="spatial", password_map_channels=4, password_map_size=4)
    assert m.password_plane is not None and all(f.spatial and f.hide.in_channels == 4 for f in m.fusion.values())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = m.anonymize(x, seed=0)
    assert a["images"].shape == (2, 3, 32, 32)
    a["images"].square().mean().backward()
    assert m.password_plane.linear.weight.grad is not None and m.password_plane.linear.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="password_map"):
        tiny_model(32, password_map="diagonal")
    assert tiny_model(32).password_plane is None  # the paper's tiled layout


def test_bit_layout_deals_every_bit_slots_and_reads_them_back():
    """BitLayout: each bit holds P s^2 / l slots (+-1), the same seeded layout every time, and read() inverts it."""
    from drdpgan.models.fusion import BitLayout

    lay = BitLayout(24, channels=4, size=4)  # 64 slots for 24 bits: 2 or 3 each
    assert sorted(set(lay.slots_per_bit.tolist())) == [2.0, 3.0] and int(lay.slots_per_bit.sum()) == 64
    assert torch.equal(lay.slot_bit, BitLayout(24, channels=4, size=4).slot_bit)
    assert not torch.equal(lay.slot_bit, BitLayout(24, channels=4, size=4, seed=1).slot_bit)
    bits = (torch.rand(3, 24, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    plane = lay(bits)
    assert plane.shape == (3, 4, 4, 4) and set(plane.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(lay.read(plane), bits * 2 - 1)
    assert "slot_bit" not in lay.state_dict()  # rebuilt from its seed, not stored
    with pytest.raises(ValueError, match="slots"):
        BitLayout(100, channels=1, size=8)


def test_layout_password_map_pairs_the_generator_plane_with_the_extractor_head():
    """password_map="layout": a fixed plane into E_Ste's conv1x1 and an E_P that predicts that plane's slots."""
    m = tiny_model(32, password_map="layout", password_map_channels=4, password_map_size=8)
    assert m.extractor.layout is not None and torch.equal(m.extractor.layout.slot_bit, m.password_plane.slot_bit)
    assert all(f.spatial and f.hide.in_channels == 4 for f in m.fusion.values())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = m.anonymize(x, seed=0)
    logits = m.extractor(a["images"])
    assert logits.shape == (2, 24)
    logits.square().mean().backward()
    assert all(f.hide.weight.grad.abs().sum() > 0 for f in m.fusion.values())
    assert m.extractor.head.weight.grad.abs().sum() > 0


def test_demo_render_ws_is_the_models_pass_with_a_spatial_password_map():
    """demo.render_ws goes through DRDPGAN.render, so it lays out a spatial password map as anonymize does."""
    from drdpgan.demo import render_ws

    m = tiny_model(32, password_map="spatial", password_map_channels=4, password_map_size=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = m.anonymize(x, seed=0)
        again = render_ws(m, a["ws"], x, a["password"])["images"]
    assert torch.equal(again, a["images"])


@pytest.mark.parametrize("password_map", ["tiled", "layout"])
def test_render_without_a_password_is_the_pass_with_a_silent_password_term(password_map):
    """render(..., password=None) (the cover of DRDPGANTrainConfig.w_hide_footprint) is the same pass with every
    E_Ste conv1x1(Password) at zero, and differs from the pass that hides bits."""
    m = tiny_model(32, password_map=password_map, password_map_channels=4, password_map_size=8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = m.anonymize(x, seed=0)
        cover = m.render(a["ws"], x, None)["images"]
        assert not torch.allclose(cover, a["images"], atol=1e-4)
        for f in m.fusion.values():
            f.hide.weight.zero_()
            f.hide.bias.zero_()
        silent = m.render(a["ws"], x, a["password"])["images"]
    assert torch.allclose(cover, silent, atol=1e-6)
