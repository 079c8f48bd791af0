"""The evaluation protocol (notebooks 10-12), the DR-DPGAN checkpoint and the frozen code mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drdpgan.checkpoints import CheckpointError, load_model, save_drdpgan
from drdpgan.protocol import ABLATIONS, protocol_split, run_paths, table2_metrics, table3_metrics
from drdpgan.train_drdpgan import DRDPGANTrainConfig, train_drdpgan
from toys import RES, ToyCircles, tiny_model


def test_protocol_split_per_identity():
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 2, 3, 3, 3])  # identity 2 has one image: left out
    s = protocol_split(labels, test_fraction=0.4)
    assert s["identities"].tolist() == [0, 1, 3]
    # identity 0: 5 images -> 2 test; identity 1: 2 -> 1 test; identity 3: 3 -> 1 test
    assert s["test"].tolist() == [3, 4, 6, 10]
    assert s["protected"].tolist() == [0, 1, 2, 5, 8, 9]
    assert s["protected_labels"].tolist() == [0, 0, 0, 1, 2, 2]
    assert s["test_labels"].tolist() == [0, 0, 1, 2]
    assert not set(s["test"]) & set(s["protected"])
    sub = protocol_split(labels, max_identities=2, seed=0)
    assert len(sub["identities"]) == 2
    with pytest.raises(ValueError, match="2 or more"):
        protocol_split(np.array([0, 1, 2]))


def test_table3_hand_values():
    true = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    read = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 1]], dtype=torch.float32)  # 2 wrong bits of 8
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    t3 = table3_metrics(true, read, f, d)
    assert t3["password.ber"] == pytest.approx(0.25)
    assert t3["password.fmse"] == pytest.approx(((0.4**2) + (0.8**2)) / 4)
    assert t3["password.decoded_cos"] == pytest.approx((0.6 + 1.0) / 2)


def test_table2_identical_images_and_known_offset():
    x = torch.zeros(4, 3, 16, 16)
    t2 = table2_metrics(x, x + 0.2, x + 0.2, {"": lambda v: v.flatten(1) + 1.0})
    # +0.2 in [-1, 1] is +0.1 in [0, 1]: MAE 0.1, PSNR exactly 20 dB
    assert t2["rec.mae"] == pytest.approx(0.1, abs=1e-6)
    assert t2["rec.psnr"] == pytest.approx(20.0, abs=1e-4)
    assert t2["anon.cos"] == pytest.approx(1.0)  # constant embeddings: cosine 1
    assert 0 < t2["rec.ssim"] <= 1


def test_ablation_table_has_seven_distinct_configs_and_7_is_full():
    assert sorted(ABLATIONS) == list(range(1, 8))
    assert len({tuple(v.values()) for v in ABLATIONS.values()}) == 7
    assert all(ABLATIONS[7].values())


def test_run_paths_shapes_and_seed():
    model = tiny_model()
    x = torch.rand(5, 3, RES, RES) * 2 - 1
    a = run_paths(model, x, seed=3, batch_size=2)
    b = run_paths(model, x, seed=3, batch_size=2)
    c = run_paths(model, x, seed=4, batch_size=2)
    assert a["anonymized"].shape == a["recovered"].shape == (5, 3, RES, RES)
    assert a["bits_true"].shape == a["bits_read"].shape == (5, model.cfg.code_bits)
    assert torch.equal(a["anonymized"], b["anonymized"])
    assert not torch.equal(a["f_fake"], c["f_fake"])
    # the paper's layout: the hidden bits are the code, and every face "opens"
    assert torch.equal(a["code_true"], a["bits_true"]) and torch.equal(a["code_read"], a["bits_read"])
    assert a["opened"].all()


def test_run_paths_seals_a_keyed_models_code_and_gives_nothing_back_when_it_does_not_open():
    from drdpgan.password import PayloadLayout, open_batch
    from drdpgan.pretrain_drdpgan import EVAL_KEY
    from toys import keyed_recording_model

    model = keyed_recording_model()
    x = torch.rand(3, 3, RES, RES) * 2 - 1
    a = run_paths(model, x, seed=3, batch_size=2)
    layout = model.cfg.payload_layout()
    assert isinstance(layout, PayloadLayout) and a["bits_true"].shape == (3, layout.carrier_bits)
    codes, outcomes, _ = open_batch(a["bits_true"], EVAL_KEY, layout, model.cfg.code_bits)  # sealed with EVAL_KEY
    assert outcomes == ["ok"] * 3 and torch.equal(torch.stack(codes), a["code_true"])
    assert a["opened"].all() and torch.equal(a["code_read"], a["code_true"])
    assert not torch.equal(a["recovered"], a["anonymized"])
    model.extractor.flip = model.cfg.payload_bch_t + 3  # beyond what BCH corrects
    b = run_paths(model, x, seed=3, batch_size=2)
    assert not b["opened"].any() and torch.equal(b["recovered"], b["anonymized"])
    assert not b["code_read"].any() and not b["f_decoded"].any()


def test_drdpgan_checkpoint_round_trip(tmp_path):
    model = tiny_model(seed=1)
    with torch.no_grad():  # move away from the initialisation so a wrong load would show
        for p in model.mapper.parameters():
            p.add_(0.01)
    path = save_drdpgan(tmp_path / "model.pt", model, metrics={"x": 1.0})
    loaded, info = load_model(path)
    assert info["kind"] == "drdpgan" and info["metrics"] == {"x": 1.0}
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.anonymize(x, seed=0)["images"], loaded.anonymize(x, seed=0)["images"])
    bad = tmp_path / "bad.pt"
    payload = torch.load(path, weights_only=False)
    payload.pop("parts")
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_model(bad)


def test_frozen_code_mapping_stays_fixed_and_deterministic(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.binary_code.state_dict().items()}
    cfg = DRDPGANTrainConfig(steps=2, batch_size=2, log_every=1, checkpoint_every=0, seed=0, r1_every=2,
                             critic_base_channels=4, critic_max_channels=8, freeze_code_mapping=True)
    train_drdpgan(model, ToyCircles(n=8, resolution=RES, seed=0), cfg, tmp_path, progress=False)
    for k, v in model.binary_code.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_paper_profile_takes_one_training_step_at_256px(tmp_path):
    """The `paper` profile's network sizes (notebooks 02-04 of profiles.yaml) at 256 px: one full
    training step (both processes, C and the critic) gives finite losses. Batch 2 keeps CI fast;
    the batch size does not change what code runs."""
    from drdpgan.bench import profile_model

    model = profile_model("paper", 256)
    assert model.generator.img_resolution == 256 and model.generator.num_ws == 2 * 8 - 2
    assert model.generator.w_dim == 512
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    data = [{"image": xi, "identity": 0, "index": i} for i, xi in enumerate(x)]
    cfg = DRDPGANTrainConfig(steps=1, batch_size=2, log_every=1, checkpoint_every=0, freeze_code_mapping=True)
    res = train_drdpgan(model, data, cfg, tmp_path, progress=False)
    assert res["step"] == 1
    assert all(np.isfinite(v) for v in res["last"].values())


def test_notebook_09_model_shipped_loads_the_shipped_drdpgan(tmp_path, monkeypatch):
    """``model="shipped"``: the sha256-checked shipped file, its logs copied into a cache folder of its own;
    ``DRDPGAN_RETRAIN=1`` and the Table 4 overrides still train (not exercised here: they take minutes)."""
    from drdpgan import experiment, shipped
    from drdpgan.notebook_params import defaults

    model = tiny_model(seed=2)
    weights = tmp_path / "weights"
    (weights / "toy" / "drdpgan_logs").mkdir(parents=True)
    save_drdpgan(weights / "toy" / "drdpgan.pt", model, metrics={})
    (weights / "toy" / "drdpgan_logs" / "metrics.csv").write_text("step,ber\n250,0.1\n")
    entry = {"file": "toy/drdpgan.pt", "sha256": shipped.sha256_of(weights / "toy" / "drdpgan.pt"),
             "metrics_stored": {"rec.psnr": 30.0, "steps": 500}, "images_seen": 4000, "train_seconds": 9.0}
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(shipped, "manifest", lambda: {"toy/drdpgan": entry})
    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.delenv("DRDPGAN_RETRAIN", raising=False)
    run = experiment.trained_drdpgan("toy", params={**defaults("09_training"), "model": "shipped"})
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        assert torch.equal(run.model.anonymize(x, seed=0)["images"], model.anonymize(x, seed=0)["images"])
    assert run.result["metrics"]["rec.psnr"] == 30.0 and run.result["step"] == 500 and run.result["shipped"]
    assert (run.dir / "metrics.csv").read_text().startswith("step,ber") and str(tmp_path / "artifacts") in str(run.dir)
    (weights / "toy" / "drdpgan.pt").write_bytes(b"changed")
    with pytest.raises(Exception, match="sha256"):
        experiment.trained_drdpgan("toy", params={**defaults("09_training"), "model": "shipped"})
    with pytest.raises(ValueError, match="model must be one of"):
        experiment.trained_drdpgan("toy", params={**defaults("09_training"), "model": "download"})
