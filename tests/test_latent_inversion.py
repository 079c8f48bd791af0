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
