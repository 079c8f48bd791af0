"""Pretraining bookkeeping: provenance lines name the commit and whether the code was committed; the
status command reads a run folder; the recipes are complete for the shipped profiles."""

import json
from dataclasses import replace

import pytest
import torch

from drdpgan import pretrain


def test_provenance_records_commit_and_cleanliness(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain, "code_state", lambda: {"commit": "abc123", "dirty": False})
    rec = pretrain.record_provenance(tmp_path / "run", {"network": "x", "start_step": 0})
    pretrain.record_provenance(tmp_path / "run", {"network": "x", "start_step": 100})
    lines = [json.loads(x) for x in (tmp_path / "run" / "provenance.jsonl").read_text().splitlines()]
    assert [line["start_step"] for line in lines] == [0, 100]
    assert rec["commit"] == "abc123" and rec["dirty"] is False and "drdpgan.pretrain" in rec["command"]
    assert rec["machine"]["device"] == "cpu" and rec["machine"]["threads"] >= 1
    from drdpgan.repro import cpu_setting

    assert {k: rec["machine"][k] for k in ("cpu", "flags", "torch")} == {k: cpu_setting()[k] for k in ("cpu", "flags",
                                                                                                      "torch")}


def test_code_state_is_this_checkout():
    state = pretrain.code_state()
    if state["commit"] is None:
        pytest.skip("not a git checkout")
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)


def _export_source(commit: str, dest):
    """The package source at ``commit`` as files, like the copy a lent GPU machine gets (no .git)."""
    import io
    import subprocess
    import tarfile

    tar = subprocess.run(["git", "archive", commit, "--", *pretrain.SOURCE_PATHS], cwd=pretrain.project_root(),
                         capture_output=True, check=True).stdout
    tarfile.open(fileobj=io.BytesIO(tar)).extractall(dest, filter="data")
    return dest


def test_source_fingerprint_of_a_copy_without_git_names_its_commit(tmp_path):
    if pretrain.code_state()["commit"] is None:
        pytest.skip("not a git checkout")
    head = pretrain._git("rev-parse", "HEAD").strip()
    copy = _export_source(head, tmp_path / "copy")
    (copy / "drdpgan" / "__pycache__").mkdir(exist_ok=True)
    (copy / "drdpgan" / "__pycache__" / "x.pyc").write_bytes(b"compiled")  # not source
    fp = pretrain.source_fingerprint(copy)
    assert fp == pretrain.commit_fingerprint(head)
    (copy / "drdpgan" / "pretrain.py").write_text("# edited\n")
    assert pretrain.source_fingerprint(copy) != fp  # one changed file changes it

    prov = [{"commit": None, "dirty": None, "source_sha256": fp, "time": "t0"},
            {"commit": None, "dirty": None, "source_sha256": "0" * 64, "time": "t1"},
            {"commit": "abc", "dirty": False, "time": "t2"},
            # a copy whose .git is older than its files: dirty against that commit, but the source is HEAD's
            {"commit": "old", "dirty": True, "dirty_paths": ["drdpgan/x.py"], "source_sha256": fp, "time": "t3"},
            {"commit": "old", "dirty": True, "dirty_paths": ["drdpgan/x.py"], "time": "t4"}]
    out = pretrain.attest_provenance(prov)
    assert out[0]["commit"] == head and out[0]["dirty"] is False and out[0]["commit_matched_by"] == "source_sha256"
    assert out[1]["commit"] is None and out[2] == prov[2]  # no commit has that source; git records unchanged
    assert out[3]["commit"] == head and out[3]["dirty"] is False and out[3]["git_at_run"]["commit"] == "old"
    assert out[4] == prov[4]  # dirty without a fingerprint: nothing to match, export refuses it


def test_status_reads_a_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path))
    run = tmp_path / "pretrain" / "toy" / "stylegan2"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt_0000100.pt").write_bytes(b"")
    (run / "losses.csv").write_text("step,loss_G\n10,1.0\n100,0.5\n")
    st = pretrain.status("toy")
    assert st == {"stylegan2": {"latest_checkpoint": "ckpt_0000100.pt", "losses.csv": "100,0.5"}}
    import drdpgan.run_stash as run_stash

    monkeypatch.setattr(run_stash, "stash_dir", lambda profile, net: tmp_path / "state" / profile / net)
    (tmp_path / "state" / "toy" / "drdpgan").mkdir(parents=True)
    (tmp_path / "state" / "toy" / "drdpgan" / "stash.json").write_text('{"step": 300}')
    st = pretrain.status("toy")  # a run carried in pretrain_state/ is listed even with no work folder
    assert st["drdpgan"] == {"stashed_step": 300} and "stashed_step" not in st["stylegan2"]


def test_recipes_cover_the_profiles():
    for profile in ("cpu", "lfw"):
        assert profile in pretrain.STYLEGAN2_RECIPES
        assert {"identity", "evaluator", "prior3d"} <= set(pretrain.PRIOR_RECIPES[profile])
        assert pretrain.STYLEGAN2_RECIPES[profile].checkpoint_every > 0
        for net in ("identity", "evaluator", "prior3d"):
            assert pretrain.PRIOR_RECIPES[profile][net].checkpoint_every > 0
    lfw = pretrain.STYLEGAN2_RECIPES["lfw"]
    assert lfw.diffaugment and lfw.xflip and not pretrain.STYLEGAN2_RECIPES["cpu"].xflip
    with pytest.raises(ValueError, match="no StyleGAN2 pretraining recipe"):
        pretrain.pretrain_stylegan2("smoke", steps=1)


def test_a_stylegan2_pretraining_from_another_profiles_generator_warms_a_fresh_discriminator(tmp_path, monkeypatch):
    """STYLEGAN2_INIT: the run starts from the other profile's generator (pretrained_network: shipped or finished),
    which comes without a discriminator; D trains alone for d_warmup_steps, then both; provenance names the source."""
    from drdpgan import stages
    from drdpgan.models.stylegan2 import StyleGAN2Generator
    from drdpgan.train_stylegan2 import TrainConfig

    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path))
    gcfg = pretrain.stylegan2_config(stages.notebook_params("01_data", "smoke"),
                                     stages.notebook_params("04_stylegan2", "smoke"))
    torch.manual_seed(3)
    source = StyleGAN2Generator(gcfg).eval()
    calls = []

    def fake_pretrained(profile, network):
        calls.append((profile, network))
        return source, {"init": f"shipped {profile}/{network}", "sha256": "ab" * 32}

    monkeypatch.setattr(pretrain, "pretrained_network", fake_pretrained)
    monkeypatch.setitem(pretrain.STYLEGAN2_INIT, "smoke", "cpu")
    monkeypatch.setitem(pretrain.STYLEGAN2_RECIPES, "smoke", TrainConfig(
        steps=2, batch_size=4, d_warmup_steps=2, log_every=1, checkpoint_every=1, sample_every=0, metric_every=-1,
        num_samples=4, seed=0))
    G, _ = pretrain.pretrain_stylegan2("smoke", progress=False)
    assert calls == [("cpu", "stylegan2")]
    assert all(torch.equal(G.state_dict()[k], v) for k, v in source.state_dict().items())  # the warm-up moved D only
    prov = [json.loads(line) for line in (tmp_path / "pretrain" / "smoke" / "stylegan2" / "provenance.jsonl").open()]
    assert prov[-1]["init"] == "shipped cpu/stylegan2" and prov[-1]["init_sha256"] == "ab" * 32
    monkeypatch.setitem(pretrain.STYLEGAN2_RECIPES, "smoke", replace(pretrain.STYLEGAN2_RECIPES["smoke"], steps=3))
    G, _ = pretrain.pretrain_stylegan2("smoke", progress=False)  # resumes: no second init, and G trains now
    assert calls == [("cpu", "stylegan2")]
    assert not all(torch.equal(G.state_dict()[k], v) for k, v in source.state_dict().items())


def test_pretrain_prior_end_to_end_on_a_tiny_recipe(tmp_path, monkeypatch):
    """identity, evaluator and 3D prior through pretrain_prior on the smoke world with a few steps:
    trained, measured as the notebooks measure, saved in the package format, with a provenance line."""
    from drdpgan.checkpoints import load_model
    from drdpgan.train_priors import FaceNetTrainConfig, IdentityTrainConfig, Prior3DTrainConfig

    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path))
    monkeypatch.setitem(pretrain.PRIOR_RECIPES, "smoke", {
        "extra_identities": 4, "samples_per_identity": 2,
        "identity": IdentityTrainConfig(max_steps=2, batch_size=16, checkpoint_every=1, num_threads=1),
        "evaluator": FaceNetTrainConfig(max_steps=2, batch_size=8, checkpoint_every=1, num_threads=1),
        "prior3d": Prior3DTrainConfig(max_steps=2, batch_size=16, checkpoint_every=1, num_threads=1)})
    expected = {"identity": "identity.verif_acc", "evaluator": "evaluator.verif_acc", "prior3d": "prior3d.r2_pose"}
    for network, key in expected.items():
        metrics = pretrain.pretrain_prior(network, "smoke", progress=False)
        assert key in metrics and metrics["steps"] == 2, metrics
        assert metrics["n_train"] == (60 + 4) * 2 or network == "evaluator"
        model, info = load_model(tmp_path / "pretrain" / "smoke" / network / f"{network}.pt")
        assert info["metrics"][key] == metrics[key]
        assert (tmp_path / "pretrain" / "smoke" / network / "provenance.jsonl").is_file()
    with pytest.raises(ValueError, match="unknown prior"):
        pretrain.pretrain_prior("stylegan3", "smoke", progress=False)


def test_real_face_priors_can_train_beside_synthetic_identities(monkeypatch):
    """<network>_synthetic_identities: the real training faces (the evaluator's own split of them) and, as more
    classes, the first (identity encoder) or last (evaluator) that many synthetic identities; labels disjoint."""
    import numpy as np

    from drdpgan import stages
    from drdpgan.data.datasets import FaceDataset, IdentityUnion, LabeledSubset

    class People(FaceDataset):
        def __init__(self, n_people, per_person):
            self.labels = np.repeat(np.arange(n_people), per_person)
            self.n_identities, self.image_size = n_people, 8

        def __getitem__(self, i):
            return {"image": torch.zeros(3, 8, 8), "identity": torch.tensor(int(self.labels[i])), "index": int(i)}

    real, synthetic = People(10, 2), People(6, 3)
    monkeypatch.setattr(stages, "notebook_params", lambda stem, profile: {
        "dataset": "lfw", "seed": 0, "eval_identity_fraction": 0.5})
    monkeypatch.setattr(stages, "face_data", lambda p01, progress=True: {"train": real})
    monkeypatch.setattr(pretrain, "pretraining_faces", lambda profile, progress=True: synthetic)
    monkeypatch.setattr(pretrain, "_initial_weights", lambda profile, network: ({}, {"init": profile}))
    n_syn = 2
    r = {"init_from": "cpu", "synthetic_from": "cpu", "identity_synthetic_identities": n_syn,
         "evaluator_synthetic_identities": n_syn}
    for network in ("identity", "evaluator"):
        train, init, info = pretrain._training_set(network, "lfw", r, progress=False)
        assert isinstance(train, IdentityUnion) and info["n_synthetic"] == len(train.parts[1]) > 0
        real_part, syn_part = train.parts
        assert isinstance(syn_part, LabeledSubset)
        picked = np.unique(np.asarray(synthetic.labels)[syn_part.indices])
        want = (np.arange(n_syn) if network == "identity"
                else np.arange(synthetic.n_identities - n_syn, synthetic.n_identities))
        assert picked.tolist() == want.tolist()
        assert train.n_identities == real_part.n_identities + n_syn
        assert (real_part is real) == (network == "identity")  # the evaluator: its split of the real identities
        assert set(train.labels[len(real_part):]) == set(range(real_part.n_identities, train.n_identities))
    train, _, info = pretrain._training_set("identity", "lfw", {"init_from": "cpu"}, progress=False)
    assert train is real and "n_synthetic" not in info


def test_a_network_that_ships_is_not_trained_again_unless_asked(monkeypatch, capsys):
    """make pretrain passes --unless-shipped (not with RETRAIN=1): on a fresh clone it goes straight to what does
    not ship yet instead of spending hours retraining the shipped priors."""
    from drdpgan import shipped

    called = []
    monkeypatch.setattr(pretrain, "pretrain_prior", lambda *a, **k: called.append(a) or {})
    monkeypatch.setattr(pretrain, "_START_STATE", None)  # main() records its code state there: not for later tests
    assert shipped.available("cpu", "identity")
    assert pretrain.main(["identity", "--profile", "cpu", "--unless-shipped"]) == 0
    assert called == [] and "not trained again" in capsys.readouterr().out
    assert pretrain.main(["identity", "--profile", "cpu"]) == 0 and called == [("identity", "cpu")]
