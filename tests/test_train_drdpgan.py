"""DR-DPGAN trainer (Eq. 9-17): finite losses and CSV, which parameters move, lr groups, exact resume."""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest
import torch

from drdpgan.models.critic import CriticConfig, SteganalysisCritic
from drdpgan.models.drdpgan import DRDPGAN, DRDPGANConfig
from drdpgan.train_drdpgan import (
    LOSS_COLUMNS,
    DRDPGANTrainConfig,
    build_optimizers,
    plot_losses,
    recover_teacher_forced,
    train_drdpgan,
)
import drdpgan.train_drdpgan as tdr
from drdpgan.runlog import latest_checkpoint
from toys import RES, ToyCircles, tiny_model

def tiny_cfg(**kw) -> DRDPGANTrainConfig:
    base = dict(steps=4, batch_size=2, log_every=1, checkpoint_every=100, r1_every=2, seed=3,
                critic_base_channels=4, critic_max_channels=8)
    return DRDPGANTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data():
    return ToyCircles(n=16, resolution=RES, seed=0)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_critic_scores_in_unit_interval():
    c = SteganalysisCritic(CriticConfig(resolution=RES, base_channels=4, max_channels=8))
    s = c(torch.rand(3, 3, RES, RES) * 2 - 1)
    assert s.shape == (3,) and bool(((s > 0) & (s < 1)).all())


def test_linear_critic_scores_are_its_raw_logits_unbounded():
    """critic_output "linear": Eq. 10 on the raw output (least-squares GAN), the same weights' logits."""
    torch.manual_seed(0)
    c = SteganalysisCritic(CriticConfig(resolution=RES, base_channels=4, max_channels=8, output="linear"))
    x = torch.rand(3, 3, RES, RES) * 2 - 1
    assert torch.equal(c(x), c.logits(x))
    with torch.no_grad():
        c.head.bias.fill_(5.0)
    assert bool((c(x) > 1).all())
    with pytest.raises(ValueError, match="sigmoid"):
        SteganalysisCritic(CriticConfig(resolution=RES, output="tanh"))


def test_critic_restart_step_gives_a_fresh_critic_and_optimiser_at_that_step(tmp_path, data, monkeypatch):
    """critic_restart_step: the critic entering that step is the seeded fresh one (its optimiser without state),
    whatever it had learnt; the rest of the run goes on; a run resumed across it is bit-identical."""
    cfg = tiny_cfg(steps=4, critic_restart_step=2, critic_output="linear")
    seen = {}
    real_step = tdr._train_step

    def spy(model, C, critic, opts, x, cfg_, step, *args, **kwargs):
        seen[step] = (_snapshot(critic), len(opts[2].state))
        return real_step(model, C, critic, opts, x, cfg_, step, *args, **kwargs)

    monkeypatch.setattr(tdr, "_train_step", spy)
    train_drdpgan(tiny_model(), data, cfg, tmp_path / "a", progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 2)
        fresh = SteganalysisCritic(cfg.critic_config(RES)).state_dict()
    assert all(torch.equal(seen[2][0][k], fresh[k]) for k in fresh) and seen[2][1] == 0
    assert not all(torch.equal(seen[1][0][k], fresh[k]) for k in fresh) and seen[1][1] > 0
    assert not all(torch.equal(seen[3][0][k], fresh[k]) for k in fresh)  # and it trains on
    monkeypatch.setattr(tdr, "_train_step", real_step)
    train_drdpgan(tiny_model(), data, dataclasses.replace(cfg, stop_after=2), tmp_path / "b", progress=False)
    train_drdpgan(tiny_model(), data, cfg, tmp_path / "b", progress=False)
    a, b = (torch.load(latest_checkpoint(tmp_path / n), weights_only=False) for n in ("a", "b"))
    assert all(torch.equal(a["critic"][k], b["critic"][k]) for k in a["critic"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_steps_finite_csv_columns_and_plot(tmp_path, data):
    m = tiny_model()
    res = train_drdpgan(m, data, tiny_cfg(steps=3), tmp_path, progress=False)
    assert res["step"] == 3 and not res["stopped_early"]
    assert all(torch.isfinite(torch.tensor(v)) for v in res["last"].values())
    df = pd.read_csv(tmp_path / "losses.csv")
    assert list(df.columns) == ["step", "images"] + LOSS_COLUMNS + ["sec_per_step", "time"]
    assert df["step"].tolist() == [1, 2, 3]
    weighed_only = ["hide_footprint", "attr", "anon_background", "rec_background", "rec_perceptual", "rec_face",
                   "rec_detail"]
    cols = [c for c in LOSS_COLUMNS if c != "r1" and c not in weighed_only]  # r1 on lazy-R1 steps; others when weighed
    assert df[weighed_only].isna().all().all()
    assert df[cols].notna().all().all() and df[cols].map(lambda v: abs(v) < 1e6).all().all()
    assert df["r1"].notna().any()
    assert (tmp_path / "losses.png").is_file() and (tmp_path / "final_metrics.json").is_file()
    assert len(plot_losses(tmp_path / "losses.csv").axes) == 5


def test_trainable_parts_move_frozen_parts_do_not(tmp_path, data):
    m = tiny_model()
    init = _snapshot(m)
    train_drdpgan(m, data, tiny_cfg(steps=2, checkpoint_every=1, keep_checkpoints=5), tmp_path, progress=False)
    c1, c2 = (torch.load(tmp_path / "checkpoints" / f"ckpt_{s:07d}.pt", weights_only=False) for s in (1, 2))

    def moved(a, b, prefix=""):
        return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix) and a[k].is_floating_point())

    assert moved(c1["C"], c2["C"]), "C did not change"
    assert moved(c1["critic"], c2["critic"]), "critic did not change"
    for prefix in ("generator.synthesis.", "extractor.", "mapper.", "encoder.", "fusion.", "binary_code.",
                   "decoder."):
        assert moved(c1["model"], c2["model"], prefix), f"{prefix} did not change"
        assert moved(init, c1["model"], prefix), f"{prefix} did not change in step 1"
    final = m.state_dict()
    for prefix in ("identity_encoder.", "prior3d.", "generator.mapping.", "fake_identity."):
        assert not moved(init, final, prefix), f"frozen {prefix} changed"


def test_optimizer_groups_have_the_paper_learning_rates():
    m = tiny_model()
    cfg = tiny_cfg()
    m.generator.mapping.requires_grad_(False)
    C = torch.nn.Linear(1, 1)
    critic = SteganalysisCritic(cfg.critic_config(RES))
    opt_G, opt_C, opt_critic = build_optimizers(m, C, critic, cfg)
    groups = {g["name"]: g for g in opt_G.param_groups}
    assert groups["stylegan2"]["lr"] == 1e-4 and groups["other"]["lr"] == 1e-3
    sg = {id(p) for p in groups["stylegan2"]["params"]}
    assert sg == {id(p) for p in m.generator.synthesis.parameters()}  # mapping frozen, left out
    other = {id(p) for p in groups["other"]["params"]}
    for mod in (m.extractor, m.mapper, m.encoder, m.fusion, m.binary_code, m.decoder):
        assert all(id(p) in other for p in mod.parameters())
    assert opt_critic.param_groups[0]["lr"] == 1e-3
    assert opt_C.param_groups[0]["lr"] == pytest.approx(1e-4 * 2 / 3)  # lazy R1 adjustment, r1_every=2


def test_teacher_forced_recovery_equals_model_recover():
    m = tiny_model()
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        a = m.anonymize(x, seed=0)
        r1 = m.recover(a["images"], password=a["password"])["images"]
        r2 = recover_teacher_forced(m, a["images"], a["password"])["images"]
    assert torch.equal(r1, r2)


def test_resume_is_bit_identical(tmp_path, data):
    """4 straight steps vs 2 steps, a 'kill', a restart from the checkpoint and 2 more: tolerance 0."""
    cfg = tiny_cfg(steps=4)
    straight = tiny_model()
    res_a = train_drdpgan(straight, data, cfg, tmp_path / "a", progress=False)

    first = tiny_model()
    r = train_drdpgan(first, data, tiny_cfg(steps=4, stop_after=2), tmp_path / "b", progress=False)
    assert r["stopped_early"] and r["step"] == 2
    del first
    resumed = tiny_model()
    with torch.no_grad():  # perturb the trainable parts: they must all come from the checkpoint
        for n, p in resumed.named_parameters():
            if not n.startswith(("identity_encoder.", "prior3d.")):
                p.add_(torch.randn_like(p))
    res_b = train_drdpgan(resumed, data, cfg, tmp_path / "b", progress=False)
    assert res_b["step"] == 4
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ca = torch.load(latest_checkpoint(tmp_path / "a"), weights_only=False)
    cb = torch.load(latest_checkpoint(tmp_path / "b"), weights_only=False)
    for part in ("C", "critic"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
    assert res_a["last"] == res_b["last"]
    da, db = pd.read_csv(tmp_path / "a" / "losses.csv"), pd.read_csv(tmp_path / "b" / "losses.csv")
    assert da["step"].tolist() == db["step"].tolist() == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(da[LOSS_COLUMNS], db[LOSS_COLUMNS])
    # a finished run re-entered does nothing and reports the stored result
    again = train_drdpgan(copy.deepcopy(resumed), data, cfg, tmp_path / "b", progress=False)
    assert again["step"] == 4 and again["last"] == res_b["last"]


def test_changed_config_on_resume_is_refused(tmp_path, data):
    m = tiny_model()
    train_drdpgan(m, data, tiny_cfg(steps=2, stop_after=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"ckpt_0000001\.pt.*train\.w_rec_pixel"):
        train_drdpgan(tiny_model(), data, tiny_cfg(steps=2, w_rec_pixel=0.0), tmp_path, progress=False)
    with pytest.raises(ValueError, match="frozen identity encoder"):
        train_drdpgan(tiny_model(seed=1), data, tiny_cfg(steps=2), tmp_path, progress=False)
    # steps / logging intervals may change
    res = train_drdpgan(tiny_model(), data, tiny_cfg(steps=3, log_every=2), tmp_path, progress=False)
    assert res["step"] == 3


def test_a_later_phase_starts_from_the_earlier_phases_last_checkpoint_under_its_own_rates(tmp_path, data,
                                                                                         monkeypatch):
    """earlier=: a checkpoint saved under an earlier phase at that phase's last step starts this phase, whose learning
    rates (not the checkpoint's) then apply; one mid-phase, or of a phase not named, is refused."""
    first = tiny_cfg(steps=2, r1_every=0)
    second = dataclasses.replace(first, steps=4, lr_C=5e-3, lr_other=2e-3, w_attr=0.5)
    train_drdpgan(tiny_model(), data, dataclasses.replace(first, stop_after=1), tmp_path / "mid", progress=False)
    with pytest.raises(ValueError, match=r"ckpt_0000001\.pt.*differs"):  # phase one is not over at step 1
        train_drdpgan(tiny_model(), data, second, tmp_path / "mid", progress=False, earlier=[first])
    train_drdpgan(tiny_model(), data, first, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="differs"):  # without the earlier phase named
        train_drdpgan(tiny_model(), data, second, tmp_path / "run", progress=False)
    seen = {}
    real_step = tdr._train_step

    def spy(model, C, critic, opts, *args, **kwargs):
        seen.setdefault("lrs", ([g["lr"] for g in opts[0].param_groups], opts[1].param_groups[0]["lr"]))
        return real_step(model, C, critic, opts, *args, **kwargs)

    monkeypatch.setattr(tdr, "_train_step", spy)
    res = train_drdpgan(tiny_model(), data, second, tmp_path / "run", progress=False, earlier=[first])
    assert res["step"] == 4 and not res["stopped_early"]
    lr_groups, lr_C = seen["lrs"]
    assert sorted(set(lr_groups)) == [1e-4, 2e-3] and lr_C == 5e-3  # this phase's rates (C has no lazy R1 here)
    assert torch.load(latest_checkpoint(tmp_path / "run"), weights_only=False)["configs"]["train"]["w_attr"] == 0.5


def test_keyed_model_trains_on_random_carriers_under_bf16(tmp_path, data):
    """A keyed model (carrier 40 bits, code 24) trains with uniformly random carrier bits, bf16 autocast:
    finite losses, E_P's bit accuracy is measured against the carrier (about 0.5 before training)."""
    from toys import tiny_model as toy

    m = toy()
    keyed = DRDPGAN(DRDPGANConfig(**{**m.cfg.__dict__, "carrier_bits": 40}), m.generator, m.identity_encoder,
                    m.prior3d)
    res = train_drdpgan(keyed, data, tiny_cfg(steps=2, precision="bf16", distortions=("jpeg", "resize"), distortions_from=1),
                        tmp_path, progress=False)
    assert res["step"] == 2 and all(torch.isfinite(torch.tensor(v)) for v in res["last"].values())
    assert 0.2 < res["last"]["bit_acc"] < 0.8
    with pytest.raises(ValueError, match="precision"):
        train_drdpgan(toy(), data, tiny_cfg(steps=1, precision="fp16"), tmp_path / "b", progress=False)


def test_evaluation_hook_writes_metrics_and_leaves_training_unchanged(tmp_path, data):
    """evaluate every 2 steps: metrics.csv rows at steps 2 and 4; the weights equal a run without it."""
    x = torch.rand(3, 3, RES, RES) * 2 - 1

    def evaluate(m):
        assert not m.training
        return {"mean_anon": float(m.anonymize(x, seed=0)["images"].mean()), "noise": float(torch.rand(()))}

    a, b = tiny_model(), tiny_model()
    train_drdpgan(a, data, tiny_cfg(steps=4, eval_every=2), tmp_path / "a", progress=False, evaluate=evaluate)
    train_drdpgan(b, data, tiny_cfg(steps=4), tmp_path / "b", progress=False)
    df = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert df["step"].tolist() == [2, 4] and list(df.columns) == ["step", "images", "mean_anon", "noise", "time"]
    assert not (tmp_path / "b" / "metrics.csv").exists()
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hiding_warmup_trains_only_the_hiding_channel_then_everything(tmp_path, data):
    """hiding_warmup_steps=2 of 3: steps 1-2 log only the hiding terms and leave the judges untouched;
    step 3 is a full step."""
    m = tiny_model()
    res = train_drdpgan(m, data, tiny_cfg(steps=3, hiding_warmup_steps=2, r1_every=0), tmp_path, progress=False)
    df = pd.read_csv(tmp_path / "losses.csv")
    assert df.loc[:1, ["ano_info", "anon_pixel", "bit_acc"]].notna().all().all()
    assert df.loc[:1, ["rec_id", "rec_pixel", "ano_adv", "loss_C", "loss_critic"]].isna().all().all()
    assert df.loc[2, ["rec_id", "rec_pixel", "ano_adv", "loss_C", "loss_critic"]].notna().all()
    assert res["step"] == 3
    # the first half of the warm-up is the hiding loss alone (lambda_info = 5), the L1 only logged
    assert df.loc[:1, "loss_G"].tolist() == pytest.approx((5 * df.loc[:1, "ano_info"]).tolist(), rel=1e-5)


def test_hiding_warmup_without_the_ramp_keeps_the_anonymization_l1_from_step_one(tmp_path, data):
    """hiding_warmup_l1_ramp=False: every warm-up step minimises lambda_info L_info + w_anon_pixel L1."""
    cfg = tiny_cfg(steps=2, hiding_warmup_steps=2, hiding_warmup_l1_ramp=False, r1_every=0, w_anon_pixel=0.5)
    train_drdpgan(tiny_model(), data, cfg, tmp_path, progress=False)
    df = pd.read_csv(tmp_path / "losses.csv")
    want = 5 * df["ano_info"] + 0.5 * df["anon_pixel"]
    assert df["loss_G"].tolist() == pytest.approx(want.tolist(), rel=1e-5)


def test_hiding_warmup_w_anon_pixel_weighs_the_warmup_l1_and_leaves_the_joint_steps_alone(tmp_path, data):
    """hiding_warmup_w_anon_pixel: the warm-up's L1 weight; the joint steps keep w_anon_pixel."""
    cfg = tiny_cfg(steps=3, hiding_warmup_steps=2, hiding_warmup_l1_ramp=False, r1_every=0, w_anon_pixel=0.5,
                   hiding_warmup_w_anon_pixel=2.0)
    train_drdpgan(tiny_model(), data, cfg, tmp_path / "a", progress=False)
    df = pd.read_csv(tmp_path / "a" / "losses.csv")
    want = 5 * df.loc[:1, "ano_info"] + 2.0 * df.loc[:1, "anon_pixel"]
    assert df.loc[:1, "loss_G"].tolist() == pytest.approx(want.tolist(), rel=1e-5)
    j = df.loc[2]  # the joint step: Eq. 16 for both processes + the extras at their weights, L1 at w_anon_pixel
    joint = (j.ano_adv + j.ano_dic + j.ano_id + 5 * j.ano_info + j.rec_adv + j.rec_dic + j.rec_id
             + cfg.w_code * j.code + cfg.w_rec_pixel * j.rec_pixel + 0.5 * j.anon_pixel)
    assert j.loss_G == pytest.approx(joint, rel=1e-5)
    same = tiny_cfg(steps=3, hiding_warmup_steps=2, hiding_warmup_l1_ramp=False, r1_every=0, w_anon_pixel=0.5)
    train_drdpgan(tiny_model(), data, same, tmp_path / "b", progress=False)
    other = pd.read_csv(tmp_path / "b" / "losses.csv")
    assert df.loc[:1, "loss_G"].tolist() != pytest.approx(other.loc[:1, "loss_G"].tolist(), rel=1e-5)


@pytest.mark.parametrize("detached", [False, True])
def test_recover_detached_keeps_recovery_gradients_off_the_anonymized_image(detached):
    """recover_detached (G2Face's teacher forcing): the recovery losses do not reach x_anon; by default they do."""
    from drdpgan.models.discriminator import StyleGAN2Discriminator
    from drdpgan.objective import generator_objective

    m = tiny_model().train()
    C = StyleGAN2Discriminator(m.generator.cfg)
    critic = SteganalysisCritic(CriticConfig(resolution=RES, base_channels=4, max_channels=8))
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    o = generator_objective(m, C, critic, x, tiny_cfg(recover_detached=detached), step=0, sigma=0.0)
    o["x_anon"].retain_grad()
    (o["terms"]["rec_pixel"] + o["terms"]["rec_id"]).backward()
    g = o["x_anon"].grad
    assert (g is None or float(g.abs().sum()) == 0) == detached


def test_recover_grad_scale_scales_the_recovery_gradient_reaching_the_anonymized_image():
    """recover_grad_scale: the same forward pass (the same losses), and the recovery losses' gradient on x_anon times
    the scale, between the joint objective (1) and recover_detached (0)."""
    from drdpgan.models.discriminator import StyleGAN2Discriminator
    from drdpgan.objective import generator_objective

    x = torch.rand(2, 3, RES, RES) * 2 - 1
    grads, losses = {}, {}
    for scale in (1.0, 0.3):
        m = tiny_model().train()
        torch.manual_seed(0)
        C = StyleGAN2Discriminator(m.generator.cfg)
        critic = SteganalysisCritic(CriticConfig(resolution=RES, base_channels=4, max_channels=8))
        o = generator_objective(m, C, critic, x, tiny_cfg(recover_grad_scale=scale), step=0, sigma=0.0)
        o["x_anon"].retain_grad()
        loss = o["terms"]["rec_pixel"] + o["terms"]["rec_id"]
        loss.backward()
        grads[scale], losses[scale] = o["x_anon"].grad, float(loss.detach())
    assert losses[0.3] == losses[1.0] and float(grads[1.0].abs().sum()) > 0
    torch.testing.assert_close(grads[0.3], 0.3 * grads[1.0], rtol=1e-4, atol=1e-8)


def test_joint_lr_ramp_scales_the_generator_side_after_the_warmup_only(tmp_path, data):
    """joint_lr_ramp_steps: lr factor 1 in the warm-up, (k+1)/ramp for the k-th joint step, then 1; the judges untouched."""
    from drdpgan.train_drdpgan import joint_lr_factor

    cfg = tiny_cfg(hiding_warmup_steps=2, joint_lr_ramp_steps=4)
    assert [joint_lr_factor(cfg, s) for s in range(8)] == [1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert joint_lr_factor(tiny_cfg(), 0) == 1.0  # off by default
    # a run stopped mid-ramp and resumed is the uninterrupted run (the factor follows from the step)
    cfg = tiny_cfg(steps=5, hiding_warmup_steps=1, joint_lr_ramp_steps=3, r1_every=0)
    m1, m2 = tiny_model(), tiny_model()
    train_drdpgan(m1, data, cfg, tmp_path / "a", progress=False)
    train_drdpgan(m2, data, dataclasses.replace(cfg, stop_after=2), tmp_path / "b", progress=False)
    m3 = tiny_model()
    train_drdpgan(m3, data, cfg, tmp_path / "b", progress=False)
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m3.state_dict().values()))
    ramped = pd.read_csv(tmp_path / "a" / "losses.csv")["loss_G"]
    flat = tiny_cfg(steps=5, hiding_warmup_steps=1, r1_every=0)
    train_drdpgan(tiny_model(), data, flat, tmp_path / "c", progress=False)
    assert ramped.tolist()[2:] != pytest.approx(pd.read_csv(tmp_path / "c" / "losses.csv")["loss_G"].tolist()[2:])


def test_lr_decay_is_a_half_cosine_on_its_own_length_after_the_ramp():
    """lr_decay_*: factor 1 before lr_decay_from, then a half cosine to lr_decay_final over lr_decay_steps, then flat;
    it multiplies the ramp; off by default."""
    from drdpgan.train_drdpgan import joint_lr_factor

    cfg = tiny_cfg(lr_decay_from=4, lr_decay_steps=4, lr_decay_final=0.2)
    assert [joint_lr_factor(cfg, s) for s in range(10)] == pytest.approx(
        [1, 1, 1, 1, 1.0, 0.2 + 0.8 * (1 + 2 ** -0.5) / 2, 0.6, 0.2 + 0.8 * (1 - 2 ** -0.5) / 2, 0.2, 0.2])
    both = tiny_cfg(hiding_warmup_steps=0, joint_lr_ramp_steps=4, lr_decay_from=2, lr_decay_steps=2,
                    lr_decay_final=0.5)
    assert [joint_lr_factor(both, s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 0.75])
    assert all(joint_lr_factor(tiny_cfg(), s) == 1.0 for s in range(0, 10**6, 10**5))


def _objective_without_and_with(**weights):
    """One tiny model's generator objective on one batch, with the default weights and with ``weights``:
    ``(model, judges, x, off, on, cfg)``; the same dropout draws for both (the global RNG reseeded)."""
    from drdpgan.models.discriminator import StyleGAN2Discriminator
    from drdpgan.objective import generator_objective

    m = tiny_model().train()
    judges = (StyleGAN2Discriminator(m.generator.cfg),
              SteganalysisCritic(CriticConfig(resolution=RES, base_channels=4, max_channels=8)))
    x = torch.rand(2, 3, RES, RES) * 2 - 1
    torch.manual_seed(0)  # the binary code mapping's dropout draws from the global RNG
    off = generator_objective(m, *judges, x, tiny_cfg(), step=0, sigma=0.0)
    assert not set(weights) & {f"w_{k}" for k in off["terms"]}  # the terms are computed only when weighed
    torch.manual_seed(0)
    cfg = tiny_cfg(**weights)
    on = generator_objective(m, *judges, x, cfg, step=0, sigma=0.0)
    return m, judges, x, off, on, cfg


def test_hide_footprint_is_weighed_in_and_trains_the_password_term_only_against_a_fixed_cover():
    """w_hide_footprint: the term is |x_anon - cover| (the cover rendered without the password, no gradient), it
    enters loss_G with its weight, and its gradient reaches E_Ste's conv1x1(Password); weight 0 leaves it out."""
    m, _, _, off, on, _ = _objective_without_and_with(w_hide_footprint=2.0)
    fp = on["terms"]["hide_footprint"]
    assert float(fp) > 0
    assert float(on["loss_G"] - off["loss_G"]) == pytest.approx(2.0 * float(fp), rel=1e-4, abs=1e-6)
    m.zero_grad()
    fp.backward()
    hide = [f.hide.weight.grad for f in m.fusion.values()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in hide)


def test_rec_perceptual_compares_the_identity_encoders_pyramid_and_trains_the_recovery_path():
    """w_rec_perceptual: LPIPS's unweighted distance over the frozen identity encoder's feature maps of x_rec and x:
    0 for equal images, invariant to a map's per-position scale, weighed into loss_G, its gradient reaching the
    recovery path (E_G)."""
    from drdpgan.losses import perceptual_distance

    a, b = [torch.rand(2, 4, 5, 5)], [torch.rand(2, 4, 5, 5)]
    assert float(perceptual_distance(a, a)) == 0.0 and float(perceptual_distance(a, b)) > 0
    assert float(perceptual_distance(a, [3 * a[0]])) == pytest.approx(0.0, abs=1e-6)  # unit-normalised per position
    with pytest.raises(ValueError, match="same"):
        perceptual_distance(a, a + b)
    m, _, x, off, on, _ = _objective_without_and_with(w_rec_perceptual=2.0)
    maps = m.identity_encoder.feature_maps(x)
    assert len(maps) == 1 + len(m.identity_encoder.stages) and maps[-1].shape[0] == 2
    perc = on["terms"]["rec_perceptual"]
    assert float(perc.detach()) > 0
    want = perceptual_distance(m.identity_encoder.feature_maps(on["x_rec"].detach()), maps)
    assert float(perc.detach()) == pytest.approx(float(want), rel=1e-4)
    assert float((on["loss_G"] - off["loss_G"]).detach()) == pytest.approx(2.0 * float(perc.detach()), rel=1e-4,
                                                                           abs=1e-6)
    m.zero_grad()
    perc.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.encoder.parameters())


def test_rec_face_and_detail_weigh_the_recovered_face_and_its_fine_detail():
    """w_rec_face: L1 of x_rec against x inside the face ellipse only; w_rec_detail: the same on the images minus
    their 3 x 3 blur, 0 for a constant offset; both weighed into loss_G, their gradient reaching the recovery path."""
    from drdpgan.losses import face_region_weight, high_pass, region_l1

    x = torch.rand(2, 3, 16, 16)
    face = face_region_weight(16, (0.5, 0.5, 0.3, 0.3))
    y = x.clone()
    y[..., 0, 0] += 1.0  # a corner pixel: outside the face
    assert float(region_l1(y, x, face)) == 0.0 and float(region_l1(y, x, 1 - face)) > 0
    assert float(region_l1(high_pass(x + 0.5), high_pass(x), face)) == pytest.approx(0.0, abs=1e-6)
    blur = x - high_pass(x)
    assert float(region_l1(high_pass(blur), high_pass(x), face)) > 0  # a blur loses detail the term sees
    m, _, x, off, on, cfg = _objective_without_and_with(w_rec_face=2.0, w_rec_detail=3.0)
    face = face_region_weight(x.shape[-1], tuple(cfg.face_region))
    rec = on["x_rec"].detach()
    assert float(on["terms"]["rec_face"].detach()) == pytest.approx(float(region_l1(rec, x, face)), rel=1e-4)
    assert float(on["terms"]["rec_detail"].detach()) == pytest.approx(
        float(region_l1(high_pass(rec), high_pass(x), face)), rel=1e-4)
    extra = 2.0 * float(on["terms"]["rec_face"].detach()) + 3.0 * float(on["terms"]["rec_detail"].detach())
    assert float((on["loss_G"] - off["loss_G"]).detach()) == pytest.approx(extra, rel=1e-4, abs=1e-6)
    m.zero_grad()
    on["terms"]["rec_detail"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.encoder.parameters())


def test_face_region_weight_is_the_ellipse_with_a_feathered_edge():
    from drdpgan.losses import face_region_weight

    w = face_region_weight(64, (0.5, 0.5, 0.25, 0.375), feather=0.04)
    assert w.shape == (1, 1, 64, 64) and float(w.min()) == 0.0 and float(w.max()) == 1.0
    assert float(w[0, 0, 32, 32]) == 1.0 and float(w[0, 0, 0, 0]) == 0.0
    assert float(w[0, 0, 32, 32 + 15]) == 1.0 and float(w[0, 0, 32, 32 + 20]) == 0.0  # rx = 16 px, edge ~2.6 px
    assert float(w[0, 0, 32 + 23, 32]) == 1.0 and float(w[0, 0, 32 + 28, 32]) == 0.0  # ry = 24 px
    assert torch.equal(w, w.flip(-1)) and torch.equal(w, w.flip(-2))  # centred
    assert 0.0 < float(w[0, 0, 32, 32 + 17]) < 1.0  # the feather
    with pytest.raises(ValueError, match="semi-axes"):
        face_region_weight(64, (0.5, 0.5, 0.0, 0.3))


def test_anon_background_compares_only_outside_the_face_region_and_trains_the_anonymizer():
    """w_anon_background: mean |x_anon - x| over the pixels outside DRDPGANTrainConfig.face_region, weighed into
    loss_G; an x that differs only inside the face ellipse gives the same term; its gradient reaches E_G."""
    from drdpgan.losses import background_l1, face_region_weight
    from drdpgan.objective import generator_objective

    face = face_region_weight(RES, (0.5, 0.5, 0.3, 0.3))
    a, b = torch.rand(2, 3, RES, RES), torch.rand(2, 3, RES, RES)
    b_face_changed = b + 0.7 * (face == 1).float()
    assert float(background_l1(a, b, face)) == pytest.approx(float(background_l1(a, b_face_changed, face)), rel=1e-6)
    assert float(background_l1(a, b, face)) != pytest.approx(float((a - b).abs().mean()), rel=1e-3)
    assert float(background_l1(a, a, face)) == 0.0
    m, judges, x, off, on, cfg = _objective_without_and_with(w_anon_background=3.0)
    bg = on["terms"]["anon_background"]
    want = background_l1(on["x_anon"].detach(), x, face_region_weight(RES, tuple(cfg.face_region)))
    assert float(bg) == pytest.approx(float(want), rel=1e-5)
    assert float(on["loss_G"] - off["loss_G"]) == pytest.approx(3.0 * float(bg), rel=1e-4, abs=1e-6)
    m.zero_grad()
    bg.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.encoder.parameters())
    torch.manual_seed(0)  # w_rec_background: the same term on x_rec
    both_cfg = tiny_cfg(w_anon_background=3.0, w_rec_background=2.0)
    both = generator_objective(m, *judges, x, both_cfg, step=0, sigma=0.0)
    want = background_l1(both["x_rec"].detach(), x, face_region_weight(RES, tuple(cfg.face_region)))
    assert float(both["terms"]["rec_background"]) == pytest.approx(float(want), rel=1e-5)
    assert float(both["loss_G"] - on["loss_G"]) == pytest.approx(2.0 * float(want), rel=1e-4, abs=1e-6)


def test_a_run_resumes_when_a_later_option_is_missing_from_its_checkpoint_at_its_default(tmp_path, data):
    """A training field added after a run started is absent from its checkpoint's config; at its default (the
    behaviour the run had) the run resumes, and set otherwise it is refused as any changed field is."""
    cfg = tiny_cfg(steps=2, r1_every=0)
    train_drdpgan(tiny_model(), data, dataclasses.replace(cfg, stop_after=1), tmp_path, progress=False)
    ck_path = sorted((tmp_path / "checkpoints").glob("ckpt_*.pt"))[-1]
    ck = torch.load(ck_path, weights_only=False)
    for k in ("w_anon_background", "w_rec_background", "face_region"):
        del ck["configs"]["train"][k]
    torch.save(ck, ck_path)
    with pytest.raises(ValueError, match="w_anon_background"):
        train_drdpgan(tiny_model(), data, dataclasses.replace(cfg, w_anon_background=1.0), tmp_path, progress=False)
    res = train_drdpgan(tiny_model(), data, cfg, tmp_path, progress=False)
    assert res["step"] == 2 and not res["stopped_early"]


def test_attr_term_holds_the_3d_priors_expression_and_pose_of_the_anonymized_image():
    """w_attr: |P(x_anon) - P(x)| in the frozen 3D prior's standardised units, weighed into loss_G; its gradient
    reaches the anonymizer (E_MLP) through the frozen prior and leaves the prior's weights alone."""
    m, _, x, off, on, _ = _objective_without_and_with(w_attr=0.7)
    attr = on["terms"]["attr"]
    with torch.no_grad():
        want = (m.prior3d.forward_standardized(on["x_anon"]) - m.prior3d.forward_standardized(x)).abs().mean()
    assert float(attr) == pytest.approx(float(want), rel=1e-4)
    assert float(on["loss_G"] - off["loss_G"]) == pytest.approx(0.7 * float(attr), rel=1e-4, abs=1e-6)
    m.zero_grad()
    attr.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.mapper.parameters())
    assert all(p.grad is None for p in m.prior3d.parameters())


def test_fake_band_phase_trains_and_saves_the_model_with_its_band(tmp_path, data, monkeypatch):
    """fake_band: a phase after one at the model's band (the paper's [0.1, 0.4]) steers its fakes into its own band,
    the saved model keeps that band, the model as built is what resume compares, and a
    resume inside the phase is bit-identical."""
    from drdpgan.checkpoints import load_model, save_drdpgan

    first = tiny_cfg(steps=2, r1_every=0)
    second = dataclasses.replace(first, steps=4, fake_band=(0.1, 0.2))
    band = {}
    real_step = tdr._train_step

    def spy(model, C, critic, opts, x, cfg_, step, *args, **kwargs):
        band[step] = (model.fake_identity.cfg.s_min, model.fake_identity.cfg.s_max)  # what Alg. 1 steers into
        return real_step(model, C, critic, opts, x, cfg_, step, *args, **kwargs)

    monkeypatch.setattr(tdr, "_train_step", spy)
    built = tiny_model()
    band_before = (built.cfg.fake.s_min, built.cfg.fake.s_max)
    train_drdpgan(built, data, first, tmp_path / "a", progress=False)
    assert (built.cfg.fake.s_min, built.cfg.fake.s_max) == band_before == (0.1, 0.4)
    model = tiny_model()
    shared_fake_cfg = model.cfg.fake
    train_drdpgan(model, data, second, tmp_path / "a", progress=False, earlier=[first])
    assert (model.cfg.fake.s_max, model.fake_identity.cfg.s_max) == (0.2, 0.2) and shared_fake_cfg.s_max == 0.4
    assert band == {0: (0.1, 0.4), 1: (0.1, 0.4), 2: (0.1, 0.2), 3: (0.1, 0.2)}
    loaded, _ = load_model(save_drdpgan(tmp_path / "m.pt", model))
    assert (loaded.cfg.fake.s_max, loaded.fake_identity.cfg.s_max) == (0.2, 0.2)
    monkeypatch.setattr(tdr, "_train_step", real_step)
    train_drdpgan(tiny_model(), data, first, tmp_path / "b", progress=False)
    train_drdpgan(tiny_model(), data, dataclasses.replace(second, stop_after=3), tmp_path / "b", progress=False,
                  earlier=[first])
    train_drdpgan(tiny_model(), data, second, tmp_path / "b", progress=False, earlier=[first])
    a, b = (torch.load(latest_checkpoint(tmp_path / n), weights_only=False) for n in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    with pytest.raises(ValueError, match="band"):
        tiny_model().set_fake_band(0.4, 0.1)


def test_anon_id_views_average_eq11_over_views_of_the_anonymized_image():
    """anon_id_views: Eq. 11 on x_anon averaged with Eq. 11 on each view (blur, resize) of it, the same draws
    otherwise; the views are differentiable; an unknown view is refused by name."""
    from drdpgan.losses import identity_loss_anonymize, identity_view
    from drdpgan.models.discriminator import StyleGAN2Discriminator
    from drdpgan.objective import generator_objective

    x = torch.rand(2, 3, RES, RES) * 2 - 1
    outs = {}
    for views in ((), ("blur", "resize")):
        m = tiny_model().train()
        torch.manual_seed(0)
        C = StyleGAN2Discriminator(m.generator.cfg)
        critic = SteganalysisCritic(CriticConfig(resolution=RES, base_channels=4, max_channels=8))
        outs[views] = (m, generator_objective(m, C, critic, x, tiny_cfg(anon_id_views=views), step=0, sigma=0.0))
    m, o = outs[("blur", "resize")]
    plain = outs[()][1]
    assert torch.equal(o["x_anon"].detach(), plain["x_anon"].detach())
    with torch.no_grad():
        want = (plain["terms"]["ano_id"]
                + sum(identity_loss_anonymize(m.identity_encoder(identity_view(o["x_anon"], v)), o["f_id"], o["f_fake"])
                      for v in ("blur", "resize"))) / 3
    torch.testing.assert_close(o["terms"]["ano_id"].detach(), want)
    assert not torch.allclose(o["terms"]["ano_id"].detach(), plain["terms"]["ano_id"].detach())
    img = torch.rand(1, 3, RES, RES, requires_grad=True) * 2 - 1
    for v in ("blur", "resize"):
        assert identity_view(img, v).shape == img.shape
    identity_view(img, "blur").sum().backward()
    with pytest.raises(ValueError, match="unknown identity view 'jpeg'"):
        identity_view(img, "jpeg")
