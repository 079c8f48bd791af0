"""drdpgan.pretrain_ablations: Table 4 from the pretraining recipe's first phase, on the tiny model."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest
import torch

from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
from drdpgan.runlog import latest_checkpoint
from drdpgan.train_drdpgan import DRDPGANTrainConfig
from toys import RES, ToyCircles, tiny_model


@pytest.fixture
def toy_recipe(tmp_path, monkeypatch):
    """A "toy" profile: the tiny model (with the switches asked for), toy faces, no stages, a fake measurement."""
    import drdpgan.pretrain_ablations as pa
    import drdpgan.pretrain_drdpgan as pd_mod
    import drdpgan.protocol as protocol

    first = DRDPGANTrainConfig(steps=50, batch_size=2, log_every=1, checkpoint_every=100, r1_every=0, seed=9,
                               critic_base_channels=4, critic_max_channels=8, w_attr=0.5)
    monkeypatch.setitem(pd_mod.DRDPGAN_RECIPES, "toy", {"earlier_phases": (first,), "train": first, "init_seed": 5})
    monkeypatch.setitem(pa.ABLATION_RECIPES, "toy", {"steps": 3, "seeds": (0, 1), "experiments": (2, 7),
                                                     "cls_epochs": 1, "max_identities": 4})
    monkeypatch.setattr(pa, "work_dir", lambda profile, net: tmp_path / "artifacts" / profile / net)
    monkeypatch.setattr(pa, "stash_dir", lambda profile, net: tmp_path / "pretrain_state" / profile / net)
    data = ToyCircles(n=16, resolution=RES, seed=0)
    built = []

    def build(profile, progress=True, init_seed=None, **overrides):
        built.append((init_seed, overrides))
        m = tiny_model(seed=init_seed)
        cfg = DRDPGANConfig(**{**m.cfg.__dict__, **overrides})
        return DRDPGAN(cfg, m.generator, m.identity_encoder, m.prior3d).eval(), {"identity": "toy"}

    monkeypatch.setattr(pd_mod, "build_model", build)
    monkeypatch.setattr(pd_mod, "_faces", lambda profile, progress: (data, data))
    for stage in ("_code_stage", "_mapper_stage"):
        monkeypatch.setattr(pd_mod, stage, lambda *a, **k: None)

    def provenance(out, event):
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "provenance.jsonl", "a") as f:
            f.write(json.dumps({"commit": "c0ffee", "dirty": False, **event}) + "\n")

    monkeypatch.setattr(pa, "record_provenance", provenance)
    measured = []

    def measure(profile, trained, cls_epochs, max_identities=0):
        measured.append((trained.model.cfg.use_3d_prior, cls_epochs, max_identities, trained.dir.name))
        return {"rec_cos": 0.5, "anon_cos": 0.1, "rec_psnr": 20.0, "cls_acc_recovered": 0.3, "chance": 0.25,
                "password_ber": 0.01}

    monkeypatch.setattr(protocol, "ablation_metrics", measure)
    return {"pa": pa, "built": built, "measured": measured, "root": tmp_path}


def test_every_run_trains_to_the_budget_from_its_seed_and_survives_a_lost_artifacts_folder(toy_recipe, monkeypatch):
    pa, root = toy_recipe["pa"], toy_recipe["root"]
    import drdpgan.train_drdpgan as tdr

    cfgs, real_train = [], tdr.train_drdpgan

    def spy(model, dataset, cfg, out, **kw):
        cfgs.append((out.name, cfg))
        if cfg.max_seconds is not None:  # the budget runs out after one step
            cfg = dataclasses.replace(cfg, stop_after=1)
        return real_train(model, dataset, cfg, out, **kw)

    monkeypatch.setattr(tdr, "train_drdpgan", spy)
    first = pa.pretrain_ablations("toy", progress=False, max_seconds=600)
    assert first["stopped_early"] and first["done"] == 0 and first["total"] == 4
    assert latest_checkpoint(root / "artifacts" / "toy" / "ablations" / "exp2-seed0").name == "ckpt_0000001.pt"

    done = pa.pretrain_ablations("toy", progress=False)
    assert not done["stopped_early"] and done["done"] == 4
    runs = [name for name, _ in cfgs[1:]]
    assert runs == ["exp2-seed0", "exp2-seed1", "exp7-seed0", "exp7-seed1"]
    for name, cfg in cfgs[1:]:
        seed = int(name[-1])
        assert cfg.steps == 3 and cfg.seed == seed
        assert cfg.w_attr == (0.5 if name.startswith("exp7") else 0.0)  # no 3DPC: no attribute term (the prior's)
    assert toy_recipe["built"][1:] == [
        (5, {"use_fid_control": True, "use_3d_prior": False, "use_encoder_control": False}),
        (6, {"use_fid_control": True, "use_3d_prior": False, "use_encoder_control": False}),
        (5, {"use_fid_control": True, "use_3d_prior": True, "use_encoder_control": True}),
        (6, {"use_fid_control": True, "use_3d_prior": True, "use_encoder_control": True})]
    assert [m[1:] for m in toy_recipe["measured"]] == [(1, 4, r) for r in runs]
    # the exp2-seed0 run resumed its step-1 checkpoint: its loss log holds each step once
    log = root / "artifacts" / "toy" / "ablations" / "exp2-seed0" / "losses.csv"
    assert pd.read_csv(log)["step"].tolist() == [1, 2, 3]

    results = pa.collect_results("toy")
    assert [r["run"] for r in results] == runs and all(r["commit"] == "c0ffee" for r in results)
    assert all(r["train_steps"] == 3 and r["train_seconds"] > 0 and r["measure"]["cls_epochs"] == 1 for r in results)
    assert [r["use_3d_prior"] for r in results] == [False, False, True, True]

    shutil.rmtree(root / "artifacts")  # a new checkout: the finished runs are in pretrain_state/, nothing retrains
    n_calls = len(cfgs)
    again = pa.pretrain_ablations("toy", progress=False)
    assert len(cfgs) == n_calls and again["done"] == 4 and not again["stopped_early"]
    assert [r["run"] for r in pa.collect_results("toy")] == runs


def test_the_budget_is_the_recipes_first_phase_and_unknown_profiles_are_refused():
    from drdpgan.pretrain_ablations import ABLATION_RECIPES, train_config
    from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES

    first = DRDPGAN_RECIPES["cpu"]["earlier_phases"][0]
    full = train_config("cpu", 7, 1)
    assert full == dataclasses.replace(first, steps=ABLATION_RECIPES["cpu"]["steps"], seed=1)
    assert full.steps > first.hiding_warmup_steps  # joint steps after the warm-up
    assert train_config("cpu", 4, 0).w_attr == 0.0 and train_config("cpu", 3, 0).w_attr == first.w_attr
    assert len(ABLATION_RECIPES["cpu"]["seeds"]) >= 2 and ABLATION_RECIPES["cpu"]["experiments"] == tuple(range(1, 8))
    with pytest.raises(ValueError, match="no Table 4 pretraining recipe"):
        train_config("smoke", 7, 0)


def test_the_command_passes_its_budget_and_refuses_a_stash(tmp_path, monkeypatch):
    import drdpgan.pretrain as pretrain
    import drdpgan.pretrain_ablations as pa

    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(pretrain, "_START_STATE", None)  # main() records its code state there: not for later tests
    seen = {}

    def fake(profile, progress=True, max_seconds=None):
        seen.update(profile=profile, max_seconds=max_seconds)
        return {"done": 0, "total": 14, "stopped_early": True, "results": []}

    monkeypatch.setattr(pa, "pretrain_ablations", fake)
    assert pretrain.main(["ablations", "--profile", "cpu", "--quiet", "--max-hours", "0.5"]) == 0
    assert seen == {"profile": "cpu", "max_seconds": 1800}
    with pytest.raises(SystemExit):  # finished runs keep themselves in pretrain_state/; nothing to stash
        pretrain.main(["ablations", "--profile", "cpu", "--stash"])


def test_notebook_13_gets_the_pretrained_runs_only_when_all_have_finished(toy_recipe):
    pa, root = toy_recipe["pa"], toy_recipe["root"]
    for n, s in ((2, 0), (2, 1), (7, 0)):
        d = root / "pretrain_state" / "toy" / "ablations" / pa.run_name(n, s)
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"experiment": n, "seed": s, "rec_cos": 0.5}))
        (d / "provenance.jsonl").write_text('{"commit": "abc", "dirty": false}\n')
    with pytest.raises(FileNotFoundError, match=r"1 of 4 runs .*exp7-seed1.*python -m drdpgan.pretrain ablations"):
        pa.finished_results("toy")
    d = root / "artifacts" / "toy" / "ablations" / "exp7-seed1"  # finished in the work folder, not yet copied
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"experiment": 7, "seed": 1, "rec_cos": 0.6}))
    (d / "provenance.jsonl").write_text('{"commit": "def", "dirty": true}\n')
    got = pa.finished_results("toy")
    assert [(r["run"], r["commit"], r["dirty"]) for r in got] == [
        ("exp2-seed0", "abc", False), ("exp2-seed1", "abc", False), ("exp7-seed0", "abc", False),
        ("exp7-seed1", "def", True)]


def test_status_lists_the_finished_runs_only_once_there_are_any(toy_recipe, monkeypatch):
    import drdpgan.pretrain as pretrain

    pa, root = toy_recipe["pa"], toy_recipe["root"]
    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(root / "none"))
    assert "ablations" not in pretrain.status("toy")
    d = root / "pretrain_state" / "toy" / "ablations" / pa.run_name(7, 1)
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"experiment": 7, "seed": 1}))
    (d / "provenance.jsonl").write_text('{"commit": "abc"}\n')
    assert pretrain.status("toy")["ablations"] == {"finished": ["exp7-seed1"], "total": 4}
