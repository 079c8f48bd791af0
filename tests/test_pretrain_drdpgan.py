"""DR-DPGAN pretraining pieces: the keyed payload layout, the training-time metrics, the evaluation key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
from drdpgan.password import PasswordError, open_payload, seal
from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES, EVAL_KEY, quick_metrics
from toys import RES, tiny_model


def keyed_toy(carrier_bits: int = 256, bch_t: int = 4) -> DRDPGAN:
    m = tiny_model()
    cfg = DRDPGANConfig(**{**m.cfg.__dict__, "carrier_bits": carrier_bits, "payload_bch_t": bch_t})
    return DRDPGAN(cfg, m.generator, m.identity_encoder, m.prior3d).eval()


def test_recipe_layout_seals_the_model_code_and_opens_it_through_bit_errors():
    cfg = DRDPGANConfig(**DRDPGAN_RECIPES["cpu"]["model"])
    layout = cfg.payload_layout()
    assert cfg.keyed and layout.carrier_bits == 256 and layout.code_bits == cfg.code_bits == 128
    assert layout.tag_bits == 24 and layout.used_bits <= layout.carrier_bits
    code = np.random.default_rng(0).integers(0, 2, 128).astype(np.uint8)
    payload = seal(code, EVAL_KEY, layout, nonce=b"\0\1\2\3")
    flipped = payload.copy()
    flipped[np.random.default_rng(1).choice(layout.used_bits, layout.bch_t, replace=False)] ^= 1
    got, n_err = open_payload(flipped, EVAL_KEY, layout)
    assert n_err == layout.bch_t and np.array_equal(got, code)
    with pytest.raises(ValueError, match="at most"):
        seal(np.zeros(layout.code_bits + 1, np.uint8), EVAL_KEY, layout)
    with pytest.raises(ValueError, match="seals at most"):
        DRDPGANConfig(code_bits=400, carrier_bits=512, payload_bch_t=16).payload_layout()
    assert DRDPGANConfig().payload_layout() is None  # the paper's layout has no key


def test_a_keyed_payload_does_not_open_with_another_key():
    from drdpgan.password import generate_key

    layout = DRDPGANConfig(**DRDPGAN_RECIPES["cpu"]["model"]).payload_layout()
    payload = seal(np.ones(128, np.uint8), EVAL_KEY, layout)
    with pytest.raises(PasswordError) as e:
        open_payload(payload, generate_key(), layout)
    assert e.value.reason == "wrong_key"


@pytest.mark.parametrize("keyed", [False, True])
def test_quick_metrics_are_finite_and_do_not_touch_the_rng(keyed):
    m = keyed_toy() if keyed else tiny_model()
    x = torch.rand(5, 3, RES, RES) * 2 - 1
    torch.manual_seed(7)
    before = torch.get_rng_state()
    q = quick_metrics(m, x)
    assert torch.equal(before, torch.get_rng_state())
    assert set(q) == {"rec_psnr_oracle", "rec_psnr", "ber", "anon_cos", "rec_cos", "anon_psnr"}
    assert all(np.isfinite(v) for v in q.values()) and 0 <= q["ber"] <= 1
    assert q == quick_metrics(m, x)  # deterministic


@pytest.mark.parametrize("keyed", [False, True])
def test_measure_drdpgan_reports_every_key(keyed, monkeypatch):
    """The full measurement on a toy model and toy faces: every key present and in range. The untrained
    toy's E_P reads noise, so a keyed payload never opens (rejection rates 1, exact rate 0)."""
    from drdpgan import pretrain_drdpgan as P, stages
    from toys import ToyCircles

    m = keyed_toy() if keyed else tiny_model()
    monkeypatch.setattr(stages, "face_data", lambda *a, **k: {"heldout": ToyCircles(n=40, resolution=RES, seed=2)})
    monkeypatch.setattr(stages, "notebook_params", lambda *a, **k: {})
    monkeypatch.setattr(P, "pretrained_network", lambda profile, net: (m.identity_encoder, {"init": "toy"}))
    out = P.measure_drdpgan(m, "toy", n=40, realism_n=0)
    assert out["measure.n"] == 40 and 0 <= out["password.ber"] <= 1
    for k in ("password.exact_rate", "password.exact_rate_jpeg90", "password.exact_rate_jpeg75"):
        assert 0 <= out[k] <= 1
    assert np.isfinite(out["rec.psnr_oracle"]) and -1 <= out["anon.diversity_cos"] <= 1
    if keyed:
        assert out["password.wrong_key_reject_rate"] == out["password.foreign_reject_rate"] == 1.0
        assert out["password.exact_rate"] == 0.0 and "rec.psnr" not in out
        assert out["password.outcomes"]["ok"] == 0
    else:
        assert "password.wrong_key_reject_rate" not in out and out["rec.n"] == 40
        assert np.isfinite(out["rec.psnr"]) and np.isfinite(out["password.fmse"])


def test_attribute_preservation_against_the_worlds_ground_truth():
    """On synthetic faces: an 'anonymizer' that returns the input keeps pose and expression exactly as well
    as the prior reads them and has an infinite-like background PSNR; one that returns noise does not."""
    from drdpgan.data.datasets import SyntheticFaceDataset
    from drdpgan.data.world import WorldConfig
    from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor
    from drdpgan.pretrain_drdpgan import attribute_preservation
    from drdpgan.stages import images_of

    faces = SyntheticFaceDataset(WorldConfig(image_size=RES), range(3), 4, progress=False)
    m = tiny_model()
    torch.manual_seed(0)
    prior = Prior3DRegressor(Prior3DConfig(n_expression=5, working_size=32, stem_width=8, widths=(8, 16),
                                           blocks=(1, 1), hidden=16)).eval()
    model = DRDPGAN(DRDPGANConfig(**{**m.cfg.__dict__, "n_expression": 5}), m.generator, m.identity_encoder, prior)
    idx = list(range(12))
    same = attribute_preservation(model, faces, idx, images_of(faces, idx))
    assert same["anon.pose_err_deg"] == pytest.approx(same["prior3d.pose_err_deg"])
    assert same["anon.expression_r2"] == pytest.approx(same["prior3d.expression_r2"])
    assert same["anon.background_psnr"] > 90 and 0.2 < same["anon.background_fraction"] < 0.95
    noise = attribute_preservation(model, faces, idx, torch.rand(12, 3, RES, RES) * 2 - 1)
    assert noise["anon.background_psnr"] < 12


def test_every_key_the_measurement_reports_is_documented(monkeypatch):
    """measure_drdpgan's numeric keys go to metrics.json one day: each must be in results.METRIC_KEYS."""
    from drdpgan import pretrain_drdpgan as P, stages
    from drdpgan.results import documented_key
    from toys import ToyCircles

    m = keyed_toy()
    monkeypatch.setattr(stages, "face_data", lambda *a, **k: {"heldout": ToyCircles(n=8, resolution=RES, seed=2)})
    monkeypatch.setattr(stages, "notebook_params", lambda *a, **k: {})
    monkeypatch.setattr(P, "pretrained_network", lambda profile, net: (m.identity_encoder, {"init": "toy"}))
    out = P.measure_drdpgan(m, "toy", n=8, realism_n=0)
    numeric = [k for k, v in out.items() if isinstance(v, float) and not k.startswith("measure.")]
    assert numeric and [k for k in numeric if documented_key(k) is None] == []
    rob = P.password_robustness(m, torch.rand(4, 3, RES, RES) * 2 - 1, torch.zeros(4, 256), torch.zeros(4, 24),
                                jpeg_qualities=(90,), resize_factors=(0.5,))
    assert rob["distortion"].tolist() == ["png", "jpeg", "resize"] and rob["exact_rate"].between(0, 1).all()


def test_password_init_std_sets_how_loud_the_password_starts():
    m = tiny_model()
    for std in (0.01, 0.1):
        cfg = DRDPGANConfig(**{**m.cfg.__dict__, "password_init_std": std})
        torch.manual_seed(0)
        w = torch.cat([f.hide.weight.flatten() for f in DRDPGAN(cfg, m.generator, m.identity_encoder,
                                                                 m.prior3d).fusion.values()])
        assert abs(float(w.std()) - std) < 0.15 * std


def test_fusion_mask_bias_sets_where_eq6s_mask_starts():
    m = tiny_model()
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    for bias in (0.0, -4.0):
        cfg = DRDPGANConfig(**{**m.cfg.__dict__, "fusion_mask_bias": bias})
        with torch.no_grad():
            masks = DRDPGAN(cfg, m.generator, m.identity_encoder, m.prior3d).eval().anonymize(x, seed=0)["masks"]
        assert masks and all(torch.allclose(v, torch.full_like(v, 1 / (1 + np.exp(-bias)))) for v in masks.values())


def test_password_map_upsample_bilinear_smooths_the_plane_between_cells():
    from drdpgan.models.fusion import AdaptiveMaskFusion

    plane = torch.zeros(1, 2, 2, 2)
    plane[:, :, 0, 0] = 1.0  # one lit cell of a 2 x 2 plane
    near = AdaptiveMaskFusion(4, 8, use_encoder=False, map_channels=2)
    bil = AdaptiveMaskFusion(4, 8, use_encoder=False, map_channels=2, map_upsample="bilinear")
    bil.load_state_dict(near.state_dict())
    a, b = near.password_map(plane, 8, 8), bil.password_map(plane, 8, 8)
    assert len(torch.unique(a[0, 0])) == 2 and len(torch.unique(b[0, 0])) > 2  # steps against a ramp
    with pytest.raises(ValueError, match="map_upsample"):
        AdaptiveMaskFusion(4, 8, map_channels=2, map_upsample="cubic")


def test_a_run_goes_on_with_the_first_phase_that_ends_after_its_latest_checkpoint():
    from types import SimpleNamespace

    from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES, first_phase

    phases = [SimpleNamespace(steps=s) for s in (100, 300, 1000)]
    assert [first_phase(phases, d) for d in (0, 99, 100, 299, 300, 999, 1000, 5000)] == [0, 0, 1, 1, 2, 2, 2, 2]
    for name, r in DRDPGAN_RECIPES.items():  # each recipe's phases end in order, each keeps the data order's seed
        ends = [p.steps for p in (*r.get("earlier_phases", ()), r["train"])]
        assert ends == sorted(set(ends)), name
        assert len({p.seed for p in (*r.get("earlier_phases", ()), r["train"])}) == 1, name


def test_the_lfw_recipe_is_the_cpu_recipe_with_a_face_ellipse_that_holds_the_crops_faces():
    """lfw's crops are aligned to the ArcFace template, the jaw at the crop's edges (scripts/face_region_fit.py): its
    background terms use a larger ellipse, every phase alike, and nothing else of the recipe differs from cpu's."""
    from dataclasses import replace

    from drdpgan.losses import face_region_weight
    from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES

    cpu, lfw = DRDPGAN_RECIPES["cpu"], DRDPGAN_RECIPES["lfw"]
    phases = [*lfw["earlier_phases"], lfw["train"]]
    region = lfw["train"].face_region
    assert {p.face_region for p in phases} == {region} and region != cpu["train"].face_region
    assert [replace(p, face_region=cpu["train"].face_region) for p in phases] == [*cpu["earlier_phases"], cpu["train"]]
    assert {k: v for k, v in lfw.items() if k not in ("earlier_phases", "train")} == \
        {k: v for k, v in cpu.items() if k not in ("earlier_phases", "train")}
    w = face_region_weight(64, region)[0, 0]
    assert w[63, 32] > 0.5 and w[40, 1] > 0.5 and w[40, 62] > 0.5  # chin and cheeks at the crop's edges: face
    assert w[0, 0] == 0 and w[0, 63] == 0  # the top corners: background


def test_checkpoint_model_takes_the_band_of_the_phase_that_saved_it(tmp_path, monkeypatch):
    """checkpoint_model: the weights, the saving phase's fake_band (none stored: the model's own band), and FAKE_CFG
    fields on top."""
    import drdpgan.pretrain_drdpgan as pd_

    monkeypatch.setattr(pd_, "build_model", lambda profile, progress=True: (tiny_model(seed=1), {}))
    trained = tiny_model(seed=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": trained.state_dict(), "configs": {"train": {"fake_band": [0.1, 0.2]}}}, path)
    model, state = pd_.checkpoint_model(path, "cpu")
    assert (model.cfg.fake.s_max, model.fake_identity.cfg.s_max) == (0.2, 0.2) and not model.training
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    torch.save({"model": trained.state_dict()}, path)  # a diagnostic's model.pt: no training config
    assert pd_.checkpoint_model(path, "cpu")[0].fake_identity.cfg.s_max == 0.4
    assert pd_.checkpoint_model(path, "cpu", {"s_max": 0.25})[0].fake_identity.cfg.s_max == 0.25
