"""E_MLP's inversion stage (drdpgan.latent_inversion) on a tiny model."""

from __future__ import annotations

import pytest
import torch

from drdpgan.latent_inversion import MapperInitConfig, generator_bank, init_mapper
from test_drdpgan import tiny_model


def test_generator_bank_gives_latents_and_eq1_inputs_of_generator_faces():
    m = tiny_model(32)
    bank = generator_bank(m, 10, seed=0, batch_size=4)
    assert bank["w"].shape == (10, 16) and bank["f_concat"].shape == (10, 32 + 4 + 3)
    assert torch.equal(bank["f_concat"][:, :32], bank["f_id"])  # identity first (Eq. 1, t = 0)
    again = generator_bank(m, 10, seed=0, batch_size=5)  # the same faces, whatever the batching
    assert torch.allclose(again["w"], bank["w"], atol=1e-6) and torch.allclose(again["f_id"], bank["f_id"], atol=1e-5)


def test_init_mapper_fits_the_latents_deterministically_and_reports_identity_cosines():
    cfg = MapperInitConfig(n_samples=64, n_heldout=16, steps=60, batch_size=16, lr=3e-3, eval_every=30)
    a, b = tiny_model(32), tiny_model(32)
    before = [p.clone() for p in a.mapper.parameters()]
    ha, hb = init_mapper(a, cfg), init_mapper(b, cfg)
    assert [r["step"] for r in ha["eval"]] == [30, 60]
    assert ha == hb and all(torch.equal(p, q) for p, q in zip(a.mapper.parameters(), b.mapper.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(before, a.mapper.parameters()))
    # the untrained mapper predicts the mean latent (R^2 0 by construction); fitting moves it above
    assert ha["eval"][-1]["train_mse"] < ha["eval"][0]["train_mse"] * 1.5
    assert -1 <= ha["mean_latent_id_cos"] <= 1 and -1 <= ha["eval"][-1]["heldout_id_cos"] <= 1
    assert not a.mapper.training
    with pytest.raises(ValueError, match="n_heldout"):
        init_mapper(a, MapperInitConfig(n_samples=8, n_heldout=8))


def test_fake_identities_snap_to_the_bank_inside_the_band():
    """FakeIdentityConfig.bank_size (a departure): each Alg. 1 fake becomes the nearest bank identity whose
    cosine to F_id is in [s_min, s_max]; the bank comes from the inversion stage's training faces."""
    import torch.nn.functional as F

    from drdpgan.models.fake_identity import FakeIdentityConfig, FakeIdentityGenerator

    g = FakeIdentityGenerator(FakeIdentityConfig(noise_dim=8, hidden_dim=16, identity_dim=6, steps=5, bank_size=32))
    assert "bank" in g.state_dict() and "bank" not in FakeIdentityGenerator(FakeIdentityConfig()).state_dict()
    f_id = F.normalize(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    with pytest.raises(RuntimeError, match="empty"):
        g.generate(f_id, generator=torch.Generator().manual_seed(1))
    g.set_bank(torch.randn(32, 6, generator=torch.Generator().manual_seed(2)))
    out = g.generate(f_id, generator=torch.Generator().manual_seed(1))
    in_bank = (out["fake"][:, None] - g.bank[None]).abs().sum(-1).min(1).values
    assert torch.all(in_bank < 1e-6)
    to_real = f_id @ g.bank.T
    has = ((to_real >= 0.1) & (to_real <= 0.4)).any(1)
    assert torch.all(out["in_band"][has])  # where the bank has an identity in the band, the fake is one
    assert torch.equal(out["fake"], g.generate(f_id, generator=torch.Generator().manual_seed(1))["fake"])
    with pytest.raises(ValueError, match="bank holds"):
        g.set_bank(torch.randn(3, 6))
    m = tiny_model(32)
    m.fake_identity = FakeIdentityGenerator(FakeIdentityConfig(**{**m.fake_identity.cfg.__dict__, "bank_size": 8}))
    init_mapper(m, MapperInitConfig(n_samples=24, n_heldout=8, steps=2, batch_size=8, eval_every=2))
    assert float(m.fake_identity.bank.abs().sum()) > 0
    assert m.anonymize(torch.rand(2, 3, 32, 32) * 2 - 1, seed=0)["images"].shape == (2, 3, 32, 32)


def test_a_model_with_a_fake_identity_bank_saves_and_loads_it(tmp_path):
    import dataclasses

    from drdpgan.checkpoints import load_model, save_drdpgan
    from drdpgan.models.drdpgan import DRDPGAN
    from drdpgan.models.fake_identity import FakeIdentityConfig

    m = tiny_model(32)
    cfg = dataclasses.replace(m.cfg, fake=FakeIdentityConfig(**{**m.cfg.fake.__dict__, "bank_size": 8}))
    banked = DRDPGAN(cfg, m.generator, m.identity_encoder, m.prior3d)
    banked.fake_identity.set_bank(torch.randn(8, 32, generator=torch.Generator().manual_seed(0)))
    save_drdpgan(tmp_path / "m.pt", banked)
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.fake_identity.cfg.bank_size == 8
    assert torch.equal(loaded.fake_identity.bank, banked.fake_identity.bank)


def test_uniform_bank_pick_spreads_fakes_over_every_in_band_identity():
    """bank_pick="uniform": the noise picks an in-band bank identity uniformly (Phi of its first coordinate), the same
    noise the same identity; over many draws every in-band identity comes up, none outside the band."""
    import torch.nn.functional as F

    from drdpgan.models.fake_identity import FakeIdentityConfig, FakeIdentityGenerator

    with pytest.raises(ValueError, match="bank_pick"):
        FakeIdentityConfig(bank_pick="closest")
    g = FakeIdentityGenerator(FakeIdentityConfig(noise_dim=8, hidden_dim=16, identity_dim=6, bank_size=64,
                                                 bank_pick="uniform"))
    g.set_bank(torch.randn(64, 6, generator=torch.Generator().manual_seed(2)))
    f_id = F.normalize(torch.randn(1, 6, generator=torch.Generator().manual_seed(0)), dim=-1).repeat(4000, 1)
    to_real = (f_id[0] @ g.bank.T)
    in_band = set(torch.nonzero((to_real >= 0.1) & (to_real <= 0.4)).flatten().tolist())
    assert 3 <= len(in_band) < 64
    z = g.sample_noise(4000, torch.Generator().manual_seed(1))
    out = g.generate(f_id, z=z)
    assert bool(out["in_band"].all())
    _, idx = g.pick_from_bank(z, f_id)
    assert set(idx.tolist()) == in_band
    counts = torch.bincount(idx, minlength=64)[sorted(in_band)].float()
    assert float(counts.min()) > 0.6 * 4000 / len(in_band)  # near uniform (binomial spread is far smaller)
    assert torch.equal(g.generate(f_id[:5], z=z[:5])["fake"], out["fake"][:5])
    # Table 4 without the control of F_id (guided False): the noise picks among the whole bank, the band ignored
    # (before the fix the bank path returned the guided pick, so experiments 1 and 2 trained identically)
    _, idx_free = g.pick_from_bank(z, f_id, guided=False)
    assert set(idx_free.tolist()) == set(range(64))
    free = g.generate(f_id, z=z, guided=False)
    assert not bool(free["in_band"].all()) and torch.equal(free["fake"], g.bank[idx_free])
    near = FakeIdentityGenerator(FakeIdentityConfig(noise_dim=8, hidden_dim=16, identity_dim=6, bank_size=64))
    near.set_bank(g.bank)
    snapped_guided = near.generate(f_id[:200], z=z[:200], steps=0)
    snapped_free = near.generate(f_id[:200], z=z[:200], guided=False)
    assert bool(snapped_guided["in_band"].all()) and not bool(snapped_free["in_band"].all())
    assert torch.equal(snapped_free["fake"], near.bank[(near(z[:200]) @ near.bank.T).argmax(1)])
