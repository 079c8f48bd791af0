"""drdpgan.demo: the cached short training, the latent-editing views and the one-batch loss breakdown."""

from __future__ import annotations

import pytest
import torch

from drdpgan.demo import (
    LOSS_TERMS,
    feature_shapes,
    fresh_judges,
    loss_breakdown,
    loss_table,
    mask_maps,
    render_ws,
    swap_level,
    train_cached,
)
from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
from drdpgan.models.fake_identity import FakeIdentityConfig
from drdpgan.models.identity import IdentityEncoder, IdentityEncoderConfig
from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor
from drdpgan.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from drdpgan.repro import ArtifactCache
from drdpgan.train_drdpgan import DRDPGANTrainConfig, train_drdpgan
from drdpgan.runlog import EpochSampler
from toys import ToyCircles

RES = 16


def tiny_model(seed: int = 0, **kw) -> DRDPGAN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = StyleGAN2Generator(StyleGAN2Config(resolution=RES, z_dim=8, w_dim=8, mapping_layers=1,
                                               channel_base=32, channel_max=8))
        enc = IdentityEncoder(IdentityEncoderConfig(working_size=16, stem_width=4, widths=(4, 8), layers=(1, 1),
                                                    embedding_dim=16))
        p3d = Prior3DRegressor(Prior3DConfig(n_expression=2, working_size=16, stem_width=4, widths=(4, 8),
                                             blocks=(1, 1), hidden=8))
        cfg = DRDPGANConfig(resolution=RES, identity_dim=16, n_expression=2, code_bits=12, binary_hidden=16,
                            mapper_hidden=16, mapper_layers=2, encoder_base_channels=4, encoder_max_channels=8,
                            extractor_base_channels=4, extractor_max_channels=8,
                            fake=FakeIdentityConfig(noise_dim=4, hidden_dim=8, steps=3), **kw)
        return DRDPGAN(cfg, g, enc, p3d).eval()


def tiny_cfg(**kw) -> DRDPGANTrainConfig:
    base = dict(steps=2, batch_size=2, log_every=1, checkpoint_every=0, keep_checkpoints=1, r1_every=2, seed=3,
                critic_base_channels=4, critic_max_channels=8)
    return DRDPGANTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return ToyCircles(n=8, resolution=RES, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("cache")
    built = []

    def make():
        built.append(1)
        return tiny_model()

    cache = ArtifactCache("test", root=root)
    first = train_cached("short", {"k": 1}, make, lambda: data, tiny_cfg(), cache, progress=False)
    return first, cache, make, built


def test_train_cached_trains_then_reuses(trained, data):
    first, cache, make, built = trained
    assert first.dir.is_dir() and (first.dir / "model.pt").is_file() and (first.dir / "judges.pt").is_file()
    assert (first.dir / "losses.csv").is_file() and not (first.dir / "checkpoints").exists()
    assert first.result["step"] == 2 and not first.model.training
    # the weights moved away from the initialisation
    init = tiny_model()
    moved = [k for k, v in first.model.state_dict().items() if not torch.equal(v, init.state_dict()[k])]
    assert any(k.startswith("mapper.") for k in moved) and any(k.startswith("fusion.") for k in moved)
    # a second call loads the cached weights instead of training: identical weights, no dataset needed
    second = train_cached("short", {"k": 1}, make, lambda: pytest.fail("dataset must not be read"), tiny_cfg(),
                          cache, progress=False)
    assert second.dir == first.dir
    for (k, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(first.critic.parameters(), second.critic.parameters()):
        assert torch.equal(a, b)


def test_loss_breakdown_matches_the_trainers_first_step(tmp_path, data):
    cfg = tiny_cfg(steps=1, w_hide_footprint=0.5, w_attr=0.3, w_anon_background=0.4,
                   w_rec_background=0.2)  # every term of LOSS_TERMS, the weighed-only included
    model = tiny_model()
    C, critic = fresh_judges(model, cfg)
    sampler = iter(EpochSampler(len(data), cfg.seed, start=0))
    x = torch.stack([data[next(sampler)]["image"] for _ in range(cfg.batch_size)]).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    vals = loss_breakdown(model, C, critic, x, cfg, step=0, train_mode=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing updated
    res = train_drdpgan(model, data, cfg, tmp_path, progress=False)
    for k in list(LOSS_TERMS) + ["loss_G", "loss_C", "loss_critic", "bit_acc"]:
        assert vals[k] == pytest.approx(res["last"][k], rel=1e-5, abs=1e-6), k
    assert vals["loss_G"] == pytest.approx(vals["eq16_ano"] + vals["eq16_rec"] + cfg.w_code * vals["code"]
                                           + cfg.w_rec_pixel * vals["rec_pixel"]
                                           + cfg.w_anon_pixel * vals["anon_pixel"]
                                           + cfg.w_hide_footprint * vals["hide_footprint"]
                                           + cfg.w_attr * vals["attr"]
                                           + cfg.w_anon_background * vals["anon_background"]
                                           + cfg.w_rec_background * vals["rec_background"], rel=1e-5)


def test_loss_table_weights(trained, data):
    first = trained[0]
    x = torch.stack([data[i]["image"] for i in range(2)])
    vals = loss_breakdown(first.model, first.discriminator, first.critic, x, first.config)
    df = loss_table(vals, first.config, digits=None)
    weighed_only = ("hide_footprint", "attr", "anon_background", "rec_background")
    assert not any(k in vals for k in weighed_only)  # computed only when weighed
    assert list(df["term"]) == [k for k in LOSS_TERMS if k not in weighed_only] + ["total"]
    body = df.iloc[:-1]
    assert torch.allclose(torch.tensor(body["weighted"].values), torch.tensor((body["weight"] * body["unweighted"]).values))
    assert df.set_index("term").loc["ano_info", "weight"] == 5.0
    assert df["weighted"].iloc[-1] == pytest.approx(body["weighted"].sum(), rel=1e-5)
    assert body["in Eq. 16"].sum() == 7


def test_views(trained, data):
    model = trained[0].model
    x = torch.stack([data[i]["image"] for i in range(2)])
    with torch.no_grad():
        a = model.anonymize(x, seed=1)
        again = render_ws(model, a["ws"], x, a["password"])
        assert torch.equal(again["images"], a["images"])
        maps = mask_maps(a["masks"])
        assert sorted(maps) == model.generator.inject_resolutions
        assert all(m.shape == (2, r, r) and bool(((m > 0) & (m < 1)).all()) for r, m in maps.items())
        # swapping a level for its own codes changes nothing; for other codes, changes the image
        assert torch.equal(swap_level(model, a, a["ws"], "coarse", x), a["images"])
        donor = a["ws"] + 1.0
        for level in sorted(set(model.generator.ws_levels)):  # at 16 px: coarse and fine only
            assert not torch.equal(swap_level(model, a, donor, level, x), a["images"]), level
    rows = feature_shapes(model, x)
    assert [r["resolution"] for r in rows] == model.generator.inject_resolutions
    assert all(r["E_G"] == r["F_out"] for r in rows)
    # the ablation without E_G has no masks
    ab = tiny_model(use_encoder_control=False)
    with torch.no_grad():
        assert ab.anonymize(x, seed=1)["masks"] == {}
    assert [r["E_G"] for r in feature_shapes(ab, x)] == [None] * len(rows)
