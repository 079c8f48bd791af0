"""drdpgan.run_stash: an unfinished run carried through a tracked folder resumes bit-identically."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

import drdpgan.shipped as shipped
from drdpgan.checkpoints import CheckpointError
from drdpgan.run_stash import restore, stash, stash_dir
from drdpgan.runlog import latest_checkpoint
from drdpgan.train_drdpgan import LOSS_COLUMNS, DRDPGANTrainConfig, train_drdpgan
from toys import RES, ToyCircles, tiny_model


def tiny_cfg(**kw) -> DRDPGANTrainConfig:
    base = dict(steps=4, batch_size=2, log_every=1, checkpoint_every=100, r1_every=2, seed=3,
                critic_base_channels=4, critic_max_channels=8)
    return DRDPGANTrainConfig(**{**base, **kw})


@pytest.fixture
def shipped_priors(monkeypatch):
    """The tiny model's frozen identity encoder and 3D prior as if they were shipped networks."""
    frozen = tiny_model()
    nets = {"identity": frozen.identity_encoder, "prior3d": frozen.prior3d}
    monkeypatch.setattr(shipped, "load", lambda profile, net, verify=True: (
        nets[net], {"manifest": {"sha256": f"sha-of-{net}"}}))
    return {attr: (nets[net], {"profile": "toy", "network": net, "sha256": f"sha-of-{net}"})
            for attr, net in (("identity_encoder", "identity"), ("prior3d", "prior3d"))}


def test_a_stashed_run_restored_elsewhere_ends_bit_identical_to_an_uninterrupted_one(tmp_path, shipped_priors):
    data = ToyCircles(n=16, resolution=RES, seed=0)
    straight = tiny_model()
    train_drdpgan(straight, data, tiny_cfg(), tmp_path / "straight", progress=False)

    run = tmp_path / "machine1" / "drdpgan"
    r = train_drdpgan(tiny_model(), data, tiny_cfg(stop_after=2), run, progress=False)
    assert r["stopped_early"] and r["step"] == 2
    model_at_2 = torch.load(latest_checkpoint(run), weights_only=False)["model"]
    code = {k[len("binary_code."):]: v for k, v in model_at_2.items() if k.startswith("binary_code.")}
    torch.save({"mapping": code, "decoder": {}}, run / "code.pt")  # a stage cache holding the same mapping
    (run / "provenance.jsonl").write_text('{"commit": "abc"}\n')
    dest = stash_dir("toy", "drdpgan", root=tmp_path / "checkout")
    info = stash(run, dest, shipped_priors)
    assert info["step"] == 2 and set(info["referenced_parts"]) == {"identity_encoder", "prior3d"}
    stored = torch.load(dest / info["checkpoint"], weights_only=False)
    assert not any(k.startswith(("identity_encoder.", "prior3d.", "binary_code.")) for k in stored["model"])
    assert stored["stage_parts"] == {"binary_code": ["code.pt", "mapping"]}
    assert set(info["files"]) == {info["checkpoint"], "code.pt", "provenance.jsonl", "losses.csv"}
    assert json.loads((dest / "stash.json").read_text())["files"] == info["files"]

    fresh = tmp_path / "machine2" / "drdpgan"  # a fresh clone: no artifacts
    assert restore(dest, fresh)["step"] == 2
    assert (fresh / "code.pt").read_bytes() == (run / "code.pt").read_bytes()
    resumed = tiny_model()
    with torch.no_grad():  # every trained weight must come from the stash
        for n, p in resumed.named_parameters():
            if not n.startswith(("identity_encoder.", "prior3d.")):
                p.add_(torch.randn_like(p))
    assert train_drdpgan(resumed, data, tiny_cfg(), fresh, progress=False)["step"] == 4
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    da, db = pd.read_csv(tmp_path / "straight" / "losses.csv"), pd.read_csv(fresh / "losses.csv")
    assert db["step"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(da[LOSS_COLUMNS], db[LOSS_COLUMNS])


def test_restore_never_overwrites_a_runs_own_state_and_checks_every_file(tmp_path, shipped_priors):
    data = ToyCircles(n=16, resolution=RES, seed=0)
    run = tmp_path / "run"
    train_drdpgan(tiny_model(), data, tiny_cfg(steps=1), run, progress=False)
    dest = tmp_path / "stash"
    info = stash(run, dest, shipped_priors)
    assert restore(dest, run) is None  # the folder has its own checkpoint
    assert restore(tmp_path / "nothing", tmp_path / "new") is None  # no stash
    (dest / "losses.csv").write_text("step\n1\n")
    with pytest.raises(CheckpointError, match=r"losses\.csv: sha256"):
        restore(dest, tmp_path / "new")
    assert latest_checkpoint(tmp_path / "new") is None
    # a stash replaces the one before it whole; a stage cache whose mapping is not the model's leaves it stored
    (run / "extra.json").write_text("{}")
    torch.save({"mapping": tiny_model(seed=1).binary_code.state_dict()}, run / "code.pt")
    assert "extra.json" in stash(run, dest, shipped_priors)["files"] and info["step"] == 1
    stored = torch.load(dest / info["checkpoint"], weights_only=False)
    assert "stage_parts" not in stored and any(k.startswith("binary_code.") for k in stored["model"])
    assert not list(dest.parent.glob(".*"))


def test_stash_refuses_a_frozen_part_that_is_not_the_shipped_network(tmp_path, shipped_priors):
    data = ToyCircles(n=16, resolution=RES, seed=0)
    run = tmp_path / "run"
    train_drdpgan(tiny_model(), data, tiny_cfg(steps=1), run, progress=False)
    other = tiny_model(seed=1).identity_encoder
    refs = {**shipped_priors, "identity_encoder": (other, shipped_priors["identity_encoder"][1])}
    with pytest.raises(CheckpointError, match="identity_encoder differs"):
        stash(run, tmp_path / "stash", refs)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        stash(tmp_path / "empty", tmp_path / "stash", refs)


def test_the_pretraining_command_restores_a_stash_before_it_trains(tmp_path, monkeypatch, shipped_priors):
    import drdpgan.pretrain as pretrain
    import drdpgan.pretrain_drdpgan as pd_mod
    import drdpgan.run_stash as run_stash

    data = ToyCircles(n=16, resolution=RES, seed=0)
    run = tmp_path / "old" / "drdpgan"
    train_drdpgan(tiny_model(), data, tiny_cfg(steps=1), run, progress=False)
    (run / "provenance.jsonl").write_text('{"commit": "abc"}\n')
    dest = tmp_path / "checkout" / "pretrain_state" / "cpu" / "drdpgan"
    stash(run, dest, shipped_priors)
    monkeypatch.setenv("DRDPGAN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(run_stash, "stash_dir", lambda profile, network: dest)
    monkeypatch.setattr(pretrain, "_START_STATE", None)  # main() records its code state there: not for later tests
    seen = {}

    def fake_pretrain(profile, steps, progress, max_seconds=None):
        seen["checkpoint"] = latest_checkpoint(pretrain.work_dir(profile, "drdpgan"))
        seen["max_seconds"] = max_seconds
        return {"stopped_early": max_seconds is not None}

    monkeypatch.setattr(pd_mod, "pretrain_drdpgan", fake_pretrain)
    assert pretrain.main(["drdpgan", "--profile", "cpu", "--quiet"]) == 0
    out = tmp_path / "artifacts" / "pretrain" / "cpu" / "drdpgan"
    assert seen["checkpoint"] == out / "checkpoints" / "ckpt_0000001.pt"
    prov = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert prov[0] == {"commit": "abc"} and prov[1]["restored_from_stash"] == 1
    assert pretrain.main(["drdpgan", "--profile", "cpu", "--quiet"]) == 0  # its own state now: no second restore
    assert len((out / "provenance.jsonl").read_text().splitlines()) == 2
    # a time-budgeted call that ends unfinished stashes the run (its own folder, provenance included)
    before = json.loads((dest / "stash.json").read_text())["time"]
    (out / "provenance.jsonl").write_text((out / "provenance.jsonl").read_text() + '{"event": "more"}\n')
    assert pretrain.main(["drdpgan", "--profile", "cpu", "--quiet", "--max-hours", "0.5", "--stash"]) == 0
    assert seen["max_seconds"] == 1800
    assert (dest / "provenance.jsonl").read_text().splitlines()[-1] == '{"event": "more"}'
    assert json.loads((dest / "stash.json").read_text())["time"] >= before
    with pytest.raises(SystemExit):  # the priors' trainers have no budget to stop at
        pretrain.main(["identity", "--profile", "cpu", "--max-hours", "1"])


def test_a_time_budgeted_pretraining_call_stops_with_a_checkpoint_and_the_next_goes_on(tmp_path, monkeypatch):
    """pretrain_drdpgan(max_seconds=): each phase gets what is left of the budget, the call ends early with a
    checkpoint, and the next call resumes from it (here: the first of two phases, on the tiny model)."""
    import drdpgan.pretrain_drdpgan as pd_mod

    data = ToyCircles(n=16, resolution=RES, seed=0)
    first, second = tiny_cfg(steps=3, r1_every=0), tiny_cfg(steps=6, r1_every=0, w_attr=0.5)
    monkeypatch.setitem(pd_mod.DRDPGAN_RECIPES, "toy", {"earlier_phases": (first,), "train": second})
    monkeypatch.setattr(pd_mod, "work_dir", lambda profile, net: tmp_path / "run")
    monkeypatch.setattr(pd_mod, "build_model", lambda profile, progress=True: (tiny_model(), {}))
    monkeypatch.setattr(pd_mod, "_faces", lambda profile, progress: (data, data))
    for stage in ("_code_stage", "_mapper_stage"):
        monkeypatch.setattr(pd_mod, stage, lambda *a, **k: None)
    monkeypatch.setattr(pd_mod, "record_provenance", lambda out, event: event)
    import drdpgan.train_drdpgan as tdr

    budgets, real_train = [], tdr.train_drdpgan

    def spy(model, dataset, cfg, out, **kw):
        budgets.append(cfg.max_seconds)
        if cfg.max_seconds is not None:  # the budget runs out after one step
            cfg = dataclasses.replace(cfg, stop_after=1)
        return real_train(model, dataset, cfg, out, **kw)

    monkeypatch.setattr(tdr, "train_drdpgan", spy)
    r = pd_mod.pretrain_drdpgan("toy", progress=False, max_seconds=600)
    assert r["stopped_early"] and r["step"] == 1 and len(budgets) == 1 and 500 < budgets[0] <= 600
    assert latest_checkpoint(tmp_path / "run").name == "ckpt_0000001.pt"
    monkeypatch.setattr(pd_mod, "measure_drdpgan", lambda model, profile, progress=False: {"measured": 1})
    done = pd_mod.pretrain_drdpgan("toy", progress=False)
    assert budgets[1:] == [None, None] and done["steps"] == 6 and done["measured"] == 1
    assert pd.read_csv(tmp_path / "run" / "losses.csv")["step"].tolist() == [1, 2, 3, 4, 5, 6]
