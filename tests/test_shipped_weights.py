"""Shipped pretrained weights: every file matches its manifest (sha256) and re-measures its check
metric on the small fixed evaluation set within the manifest's tolerance; the export refuses
weights whose provenance shows uncommitted code."""

import json

import pytest
import torch

from drdpgan import shipped
from drdpgan.checkpoints import CheckpointError, save_checkpoint
from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor

ENTRIES = sorted(shipped.manifest().items())


@pytest.mark.skipif(not ENTRIES, reason="no weights shipped yet (drdpgan/weights/manifest.json absent)")
@pytest.mark.parametrize("key,entry", ENTRIES, ids=[k for k, _ in ENTRIES])
def test_shipped_file_matches_manifest_and_remeasures(key, entry):
    from drdpgan.pretrain import check_metric, check_set

    path = shipped.WEIGHTS_DIR / entry["file"]
    assert path.is_file(), f"{path} listed in the manifest but missing"
    assert shipped.sha256_of(path) == entry["sha256"]
    assert all(p["dirty"] is False and p["commit"] for p in entry["provenance"])
    for log, digest in entry.get("logs", {}).items():
        assert shipped.sha256_of(shipped.WEIGHTS_DIR / log) == digest, log
    model, info = shipped.load(entry["profile"], entry["network"])
    name, value = check_metric(entry["network"], model, check_set(entry["profile"]))
    assert name == entry["check"]["metric"]
    assert abs(value - entry["check"]["value"]) <= entry["check"]["tolerance"], (value, entry["check"])


def test_manifest_total_size_under_cap():
    total = sum(e["bytes"] for _, e in ENTRIES)
    assert total <= 150 * 2**20, f"shipped weights total {total / 2**20:.1f} MiB > 150 MiB"


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", d)
    monkeypatch.setattr(shipped, "MANIFEST", d / "manifest.json")
    return d


def _run_folder(tmp_path, dirty):
    folder = tmp_path / "run"
    folder.mkdir()
    model = Prior3DRegressor(Prior3DConfig(n_expression=2, working_size=32, stem_width=8, widths=(16, 32),
                                           blocks=(1, 1), hidden=64))
    save_checkpoint(folder / "prior3d.pt", model, metrics={"steps": 3})
    (folder / "provenance.jsonl").write_text(json.dumps({"commit": "abc", "dirty": dirty, "time": "t"}) + "\n")
    return folder, model


def test_export_writes_half_weights_and_loads_back(tmp_path, weights_dir):
    folder, model = _run_folder(tmp_path, dirty=False)
    (folder / "losses.csv").write_text("step,loss\n1,0.5\n")
    entry = shipped.export("toy", "prior3d", folder / "prior3d.pt", folder, {"m": 1.0}, {"m": 1.0},
                           {"metric": "m", "value": 1.0, "tolerance": 0.0}, logs=[folder / "losses.csv"])
    assert (weights_dir / "toy" / "prior3d_logs" / "losses.csv").read_text() == "step,loss\n1,0.5\n"
    assert list(entry["logs"]) == ["toy/prior3d_logs/losses.csv"]
    assert entry["sha256"] == shipped.sha256_of(weights_dir / "toy" / "prior3d.pt")
    assert json.loads((weights_dir / "manifest.json").read_text())["toy/prior3d"]["commits"] == ["abc"]
    raw = torch.load(weights_dir / "toy" / "prior3d.pt", weights_only=False)
    assert all(v.dtype == torch.float16 for v in raw["state_dict"].values() if v.is_floating_point())
    loaded, _ = shipped.load("toy", "prior3d")
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype
        torch.testing.assert_close(got, v.half().to(v.dtype), rtol=0, atol=0)
    # a changed file is refused by name
    (weights_dir / "toy" / "prior3d.pt").write_bytes(b"x" + (weights_dir / "toy" / "prior3d.pt").read_bytes())
    with pytest.raises(CheckpointError, match="prior3d.pt: sha256"):
        shipped.load("toy", "prior3d")


def test_export_refuses_uncommitted_code(tmp_path, weights_dir):
    folder, _ = _run_folder(tmp_path, dirty=True)
    with pytest.raises(ValueError, match="uncommitted"):
        shipped.export("toy", "prior3d", folder / "prior3d.pt", folder, {}, {}, {})
    assert not (weights_dir / "manifest.json").exists()


def test_pretraining_figure_draws_a_prior_history_and_a_stylegan2_run(tmp_path):
    """Notebooks 02-04 draw the run behind a shipped network from the logs shipped beside it."""
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from drdpgan.viz import pretraining_figure

    prior = tmp_path / "prior_logs"
    prior.mkdir()
    (prior / "identity_encoder_history.json").write_text(json.dumps(
        {"step_loss": [3.0 - 0.01 * i for i in range(250)], "step_acc": [0.004 * i for i in range(250)],
         "lr": [0.1] * 250}))
    fig = pretraining_figure(prior, "prior")
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "training accuracy (batch)", "learning rate"]

    gan = tmp_path / "stylegan2_logs"
    gan.mkdir()
    (gan / "losses.csv").write_text("step,loss_G,loss_D\n" + "".join(f"{10 * i},{1 + 1 / i},{1.0}\n" for i in range(1, 30)))
    (gan / "metrics.csv").write_text("step,frechet\n100,5.0\n200,3.0\n")
    Image.new("RGB", (8, 8)).save(gan / "step_0000200.png")
    fig = pretraining_figure(gan)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "samples at step 0000200"


def test_live_params_keep_the_profile_and_take_the_notebook_defaults():
    from drdpgan import stages
    from drdpgan.notebook_params import defaults

    p = stages.live_params("04_stylegan2", {**stages.notebook_params("04_stylegan2", "cpu"), "priors": "shipped"})
    assert p["profile"] == "cpu" and p["priors"] == "train"
    assert p["steps"] == defaults("04_stylegan2")["steps"] != stages.notebook_params("04_stylegan2", "cpu")["steps"]
    p = stages.live_params("09_training", {**stages.notebook_params("09_training", "cpu"), "model": "shipped"})
    assert p["profile"] == "cpu" and p["model"] == "train" and "priors" not in p
    cpu_steps = stages.notebook_params("09_training", "cpu")["train_steps"]
    assert p["train_steps"] == defaults("09_training")["train_steps"] != cpu_steps


@pytest.mark.parametrize("profile,mode", [("smoke", "train"), ("cpu", "shipped"), ("lfw", "train")])
def test_profiles_load_shipped_priors_only_where_all_ship(profile, mode, monkeypatch):
    """A profile loads shipped priors once every one of its networks meets its targets and ships (cpu); the others
    train theirs at the notebooks' budgets (lfw aliases cpu's entries, so it must say ``train`` itself)."""
    from drdpgan import stages

    monkeypatch.delenv("DRDPGAN_RETRAIN", raising=False)
    for stem, nets in stages.PRIOR_NETWORKS.items():
        assert stages.prior_mode(stages.notebook_params(stem, profile)) == mode, stem
        if mode == "shipped":
            assert all(f"{profile}/{n}" in shipped.manifest() for n in nets), stem
    monkeypatch.setenv("DRDPGAN_RETRAIN", "1")
    assert stages.prior_mode(stages.notebook_params("04_stylegan2", profile)) == "train"


def test_shipped_priors_key_later_caches_by_their_digests_only(monkeypatch):
    """With shipped priors, a measurement size or an unused training budget of notebooks 02-04 leaves the key of
    every later cache unchanged; trained priors key it by their parameters."""
    from drdpgan import stages

    monkeypatch.delenv("DRDPGAN_RETRAIN", raising=False)
    before = stages.prior_params("cpu")
    digest = shipped.manifest()["cpu/stylegan2"]["sha256"]
    assert before["04_stylegan2"] == {"priors": "shipped", "shipped_sha256": [digest]}
    real = stages.notebook_params

    def changed(stem, profile):
        p = real(stem, profile)
        return {**p, "realism_num": 7, "steps": 1} if stem == "04_stylegan2" else p

    monkeypatch.setattr(stages, "notebook_params", changed)
    assert stages.prior_params("cpu") == before
    assert stages.prior_params("smoke")["04_stylegan2"]["realism_num"] == 7
