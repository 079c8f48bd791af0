"""Tests of the pure-PyTorch StyleGAN2 generator and its trainer (CPU, small configs)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from drdpgan.models.stylegan2 import (
    StyleGAN2Config,
    StyleGAN2Generator,
    level_of_ws,
    num_ws_for,
    ws_resolution_list,
)
from drdpgan.train_stylegan2 import (
    TrainConfig,
    frechet_distance,
    train_stylegan2,
)
from drdpgan.runlog import latest_checkpoint

from toys import ToyCircles


def tiny_cfg(res: int = 32, **kw) -> StyleGAN2Config:
    base = dict(resolution=res, z_dim=16, w_dim=16, mapping_layers=2, channel_base=res * 8, channel_max=16)
    base.update(kw)
    return StyleGAN2Config(**base)


def make_G(cfg: StyleGAN2Config, seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(cfg).eval()
    # Untrained nets start with noise strength 0; give them some so noise tests see it.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G


# --------------------------------------------------------------------------- shapes / W+


@pytest.mark.parametrize("res", [32, 64, 256])
def test_shapes_and_num_ws(res):
    cfg = tiny_cfg(res, channel_max=8 if res == 256 else 16)
    G = make_G(cfg)
    assert G.num_ws == num_ws_for(res) == 2 * int(math.log2(res)) - 2
    z = torch.randn(2, cfg.z_dim)
    ws = G.mapping(z)
    assert ws.shape == (2, G.num_ws, cfg.w_dim)
    assert torch.equal(ws[:, 0], ws[:, -1])  # broadcast of a single w
    with torch.no_grad():
        img = G(z)
        img2 = G.synthesis(ws)
    assert img.shape == (2, 3, res, res)
    assert torch.equal(img, img2)
    assert torch.isfinite(img).all()
    assert G.block_resolutions == [2**k for k in range(2, int(math.log2(res)) + 1)]
    assert len(G.block_channels) == len(G.block_resolutions)
    assert G.cfg is cfg


def test_num_ws_known_values():
    assert num_ws_for(64) == 10 and num_ws_for(256) == 14 and num_ws_for(32) == 8


def test_layer_ws_index_layout():
    G = make_G(tiny_cfg(64))
    idx = G.layer_ws_index
    assert idx["b4.conv1"] == 0 and idx["b4.torgb"] == 1 and idx["b8.conv0"] == 1
    assert idx["b8.conv1"] == 2 and idx["b8.torgb"] == 3 and idx["b16.conv0"] == 3
    assert idx["b64.conv1"] == 8 and idx["b64.torgb"] == 9
    assert sorted(set(idx.values())) == list(range(G.num_ws))
    assert G.ws_resolution == ws_resolution_list(10) == [4, 8, 8, 16, 16, 32, 32, 64, 64, 64]


def test_levels():
    assert level_of_ws(10) == ["coarse"] * 3 + ["middle"] * 4 + ["fine"] * 3
    assert level_of_ws(14) == ["coarse"] * 3 + ["middle"] * 4 + ["fine"] * 7
    lv32 = level_of_ws(8)
    assert lv32 == ["coarse"] * 3 + ["middle"] * 2 + ["fine"] * 3
    for n in (8, 10, 12, 14):
        assert set(level_of_ws(n)) == {"coarse", "middle", "fine"}
    G = make_G(tiny_cfg(64))
    assert G.level_indices("fine") == [7, 8, 9]


def test_each_ws_index_feeds_exactly_its_layers():
    """Perturbing ws[:, k] changes the style input of exactly the layers mapped to k, and the image."""
    G = make_G(tiny_cfg(32))
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    for name in G.layer_ws_index:
        mod = G.synthesis.get_submodule(f"{name}.affine")
        hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: captured.__setitem__(n, i[0].clone())))
    torch.manual_seed(1)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    with torch.no_grad():
        base_img = G.synthesis(ws)
        base = dict(captured)
        for k in range(G.num_ws):
            ws2 = ws.clone()
            ws2[:, k] += 1.0
            img = G.synthesis(ws2)
            assert not torch.equal(img, base_img), f"ws[:, {k}] has no effect"
            changed = {n for n in base if not torch.equal(base[n], captured[n])}
            expected = {n for n, i in G.layer_ws_index.items() if i == k}
            assert changed == expected, (k, changed, expected)
    for h in hooks:
        h.remove()


def test_truncation_and_w_avg():
    G = make_G(tiny_cfg(32))
    z = torch.randn(3, 16)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))
        ws = G.mapping(z)
        ws0 = G.mapping(z, truncation_psi=0.0)
        wsh = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(ws0, G.w_avg.expand_as(ws0))
    assert torch.allclose(wsh, 0.5 * (ws + G.w_avg), atol=1e-6)
    before = G.w_avg.clone()
    G.mapping(z, update_w_avg=True)
    assert not torch.equal(before, G.w_avg)


def test_modulated_conv_matches_per_sample_weights():
    """Activation-side (de)modulation == conv with per-sample weights W''=d*W*s (StyleGAN2 Eq. 1, 3)."""
    from drdpgan.models.stylegan2 import modulated_conv2d

    torch.manual_seed(0)
    x, w, s = torch.randn(3, 5, 8, 8), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    ww = w[None] * s[:, None, :, None, None]  # (B, O, I, 3, 3)
    ww = ww * (ww.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    ref = torch.nn.functional.conv2d(x.reshape(1, -1, 8, 8), ww.reshape(-1, 5, 3, 3), padding=1, groups=3)
    out = modulated_conv2d(x, w, s, demodulate=True, padding=1)
    assert torch.allclose(out, ref.reshape(3, 7, 8, 8), atol=1e-5)
    # demodulated outputs have ~unit variance for unit-variance inputs
    big = modulated_conv2d(torch.randn(4, 64, 16, 16), torch.randn(64, 64, 3, 3), torch.randn(4, 64) * 3, padding=1)
    assert 0.7 < big[:, :, 1:-1, 1:-1].std().item() < 1.3


# --------------------------------------------------------------------------- noise / determinism


def test_noise_modes_and_determinism():
    G = make_G(tiny_cfg(32))
    z = torch.randn(2, 16)
    with torch.no_grad():
        a = G(z, noise_mode="const")
        b = G(z, noise_mode="const")
        assert torch.equal(a, b)
        r1 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(5))
        r2 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(5))
        r3 = G(z, noise_mode="random", generator=torch.Generator().manual_seed(6))
        assert torch.equal(r1, r2) and not torch.equal(r1, r3)
        n = G(z, noise_mode="none")
        zero = [torch.zeros(1, 1, int(name.split(".")[0][1:]), int(name.split(".")[0][1:])) for name in G.noise_layers]
        assert torch.equal(n, G(z, noise=zero))
        assert not torch.equal(n, a)
        # explicit noise equal to the const buffers reproduces 'const'
        consts = [G.synthesis.get_submodule(nm).noise_const for nm in G.noise_layers]
        assert torch.allclose(G(z, noise=consts, noise_mode="none"), a)
    with pytest.raises(ValueError):
        G(z, noise_mode="bogus")


def test_same_seed_same_weights():
    cfg = tiny_cfg(32)
    sd1 = make_G(cfg, seed=3).state_dict()
    sd2 = make_G(cfg, seed=3).state_dict()
    sd3 = make_G(cfg, seed=4).state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert not all(torch.equal(sd1[k], sd3[k]) for k in sd1)


# --------------------------------------------------------------------------- injection point (Eq. 7-8)


def test_injection_point_zero_change_is_bit_identical():
    G = make_G(tiny_cfg(32))
    z = torch.randn(2, 16)
    seen = []

    def inject_zero(i, r, f):
        seen.append((i, r, tuple(f.shape)))
        assert f.shape[1] == G.block_channels[i] and f.shape[-1] == r
        return f + 0.0 * torch.ones_like(f)

    with torch.no_grad():
        plain = G(z)
        same = G(z, inject=inject_zero)
    assert torch.equal(plain, same)
    assert [s[1] for s in seen] == G.inject_resolutions == [8, 16, 32]
    assert [s[0] for s in seen] == [1, 2, 3]


def test_injection_point_nonzero_changes_output():
    G = make_G(tiny_cfg(32))
    z = torch.randn(2, 16)
    with torch.no_grad():
        plain = G(z)
        add = G(z, inject=lambda i, r, f: f + 0.5 if r == 16 else f)
        mod = torch.nn.Identity()
        as_dict = G(z, inject={16: lambda f: f + 0.5, 8: mod})
        zero_dict = G(z, inject={"16": lambda f: f + torch.zeros_like(f)})

        class AddHalf(torch.nn.Module):
            def forward(self, f):
                return f + 0.5

        as_moduledict = G(z, inject=torch.nn.ModuleDict({"b16": AddHalf()}))
    assert not torch.equal(plain, add)
    assert torch.equal(add, as_dict)
    assert torch.equal(add, as_moduledict)
    assert torch.equal(plain, zero_dict)


def test_injection_gradients_flow():
    G = make_G(tiny_cfg(32))
    ws = G.mapping(torch.randn(2, 16)).detach().requires_grad_(True)
    fusion = torch.nn.Conv2d(G.block_channels[2], G.block_channels[2], 1)
    img = G.synthesis(ws, inject={16: lambda f: f + fusion(f)})
    img.square().mean().backward()
    assert fusion.weight.grad is not None and fusion.weight.grad.abs().sum() > 0
    assert ws.grad is not None and ws.grad.abs().sum() > 0


# --------------------------------------------------------------------------- metric


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    b = rng.normal(size=(500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.2
    # shifted mean by 3 in every dim: distance ~ 4 * 9 = 36
    assert frechet_distance(a, b + 3.0) == pytest.approx(36.0, rel=0.1)
    c = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4))
    assert frechet_distance(a, c) == pytest.approx(frechet_distance(a, c, method="sqrtm"), rel=1e-6)


# --------------------------------------------------------------------------- trainer


def _tiny_run(out, steps, precision="fp32", diffaugment="", init_state=None, **train_cfg):
    ds = ToyCircles(64, 32, seed=0)
    gcfg = tiny_cfg(32)
    tcfg = TrainConfig(steps=steps, batch_size=4, r1_every=2, checkpoint_every=3, sample_every=3,
                       metric_every=3, metric_num=16, num_samples=4, log_every=1, seed=7, precision=precision,
                       diffaugment=diffaugment, **train_cfg)
    return train_stylegan2(ds, gcfg, tcfg, out, progress=False, init_state=init_state)


def test_diffaugment_and_init_state_resume_exactly(tmp_path):
    """DiffAugment draws from the trainer's generator (a resumed run is bit-identical and differs from
    an unaugmented one); init_state starts a new run from another run's networks."""
    G_a, m_a = _tiny_run(tmp_path / "a", 4, diffaugment="color,translation,cutout")
    _tiny_run(tmp_path / "b", 3, diffaugment="color,translation,cutout")
    G_b, _ = _tiny_run(tmp_path / "b", 4, diffaugment="color,translation,cutout")
    assert all(torch.equal(G_a.state_dict()[k], G_b.state_dict()[k]) for k in G_a.state_dict())
    _, m_plain = _tiny_run(tmp_path / "p", 4)
    assert m_a["loss_D"] != m_plain["loss_D"]
    ck = torch.load(latest_checkpoint(tmp_path / "p"), weights_only=False)
    G_i, _ = _tiny_run(tmp_path / "i", 0, init_state=ck)  # zero steps: the initial networks come back
    assert all(torch.equal(G_i.state_dict()[k], ck["G_ema"][k]) for k in ck["G_ema"])


def test_xflip_mirrors_about_half_the_reals_the_same_way_on_every_call(tmp_path):
    """xflip: each row is either the image or its mirror, about half are mirrored, the choice depends on (seed, step)
    alone; a run with it differs from one without, and resumes bit-identically."""
    from drdpgan.train_stylegan2 import xflip_rows

    x = torch.randn(512, 3, 4, 4)
    y = xflip_rows(x, 7, 3)
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0.4 < float(mirrored.float().mean()) < 0.6
    assert torch.equal(y, xflip_rows(x, 7, 3))
    assert not torch.equal(y, xflip_rows(x, 7, 4)) and not torch.equal(y, xflip_rows(x, 8, 3))
    G_a, m_a = _tiny_run(tmp_path / "a", 4, xflip=True)
    _tiny_run(tmp_path / "b", 3, xflip=True)
    G_b, _ = _tiny_run(tmp_path / "b", 4, xflip=True)
    assert all(torch.equal(G_a.state_dict()[k], G_b.state_dict()[k]) for k in G_a.state_dict())
    G_p, _ = _tiny_run(tmp_path / "p", 4)
    assert not all(torch.equal(G_a.state_dict()[k], G_p.state_dict()[k]) for k in G_a.state_dict())


def test_d_warmup_trains_D_alone_against_a_generator_that_came_without_one(tmp_path):
    """d_warmup_steps: from an init_state without D, the first steps move D only (G, its EMA and w_avg stay the
    given generator's, loss_G is still logged); G trains after them, and a run resumed across the boundary is
    bit-identical to an uninterrupted one."""
    _tiny_run(tmp_path / "p", 3)
    ck = torch.load(latest_checkpoint(tmp_path / "p"), weights_only=False)
    given = {"G": ck["G_ema"], "G_ema": ck["G_ema"]}  # a shipped generator: its EMA weights, no D
    G_w, m_w = _tiny_run(tmp_path / "w", 3, init_state=given, d_warmup_steps=3)
    assert all(torch.equal(G_w.state_dict()[k], v) for k, v in ck["G_ema"].items())
    after = torch.load(latest_checkpoint(tmp_path / "w"), weights_only=False)
    assert all(torch.equal(after["G"][k], v) for k, v in ck["G_ema"].items())
    _tiny_run(tmp_path / "z", 0, init_state=given)  # zero steps: the fresh D the warm-up starts from
    fresh_D = torch.load(latest_checkpoint(tmp_path / "z"), weights_only=False)["D"]
    assert not all(torch.equal(fresh_D[k], ck["D"][k]) for k in ck["D"])  # not the other run's D
    assert not all(torch.equal(after["D"][k], fresh_D[k]) for k in fresh_D)  # and trained
    assert math.isfinite(m_w["loss_G"]) and math.isfinite(m_w["loss_D"])
    rows = _read_csv(tmp_path / "w" / "losses.csv")
    assert len(rows) == 3 and all(math.isfinite(float(r["loss_G"])) for r in rows)
    G_a, _ = _tiny_run(tmp_path / "a", 5, init_state=given, d_warmup_steps=3)
    assert not all(torch.equal(G_a.state_dict()[k], v) for k, v in ck["G_ema"].items())  # G moved after step 3
    G_b, _ = _tiny_run(tmp_path / "w", 5, init_state=given, d_warmup_steps=3)  # resumes the 3-step run
    assert all(torch.equal(G_a.state_dict()[k], G_b.state_dict()[k]) for k in G_a.state_dict())


def test_g_rampup_scales_G_lr_linearly_after_the_D_warmup(tmp_path):
    """g_rampup_steps: G's lr is 0 during the D warm-up, then rises linearly to its full value; the ramp is a function
    of the step, so a run resumed inside it is bit-identical, and it changes the run (G moves less on its first
    step than without it)."""
    t = TrainConfig(lr=1e-3, d_warmup_steps=2, g_rampup_steps=4)
    assert [t.g_lr_scale(s) for s in range(8)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert TrainConfig(g_rampup_steps=0).g_lr_scale(0) == 1.0
    _tiny_run(tmp_path / "p", 3)
    ck = torch.load(latest_checkpoint(tmp_path / "p"), weights_only=False)
    given = {"G": ck["G_ema"], "G_ema": ck["G_ema"]}
    G_r, _ = _tiny_run(tmp_path / "r", 3, init_state=given, d_warmup_steps=2, g_rampup_steps=4)
    G_n, _ = _tiny_run(tmp_path / "n", 3, init_state=given, d_warmup_steps=2)
    after_r = torch.load(latest_checkpoint(tmp_path / "r"), weights_only=False)["G"]
    after_n = torch.load(latest_checkpoint(tmp_path / "n"), weights_only=False)["G"]
    moved = {name: sum(float((after[k] - ck["G_ema"][k]).abs().sum()) for k in ck["G_ema"])
             for name, after in (("ramp", after_r), ("none", after_n))}
    assert 0 < moved["ramp"] < 0.5 * moved["none"]  # one G step at a quarter of the lr
    G_a, _ = _tiny_run(tmp_path / "a", 5, init_state=given, d_warmup_steps=2, g_rampup_steps=4)
    G_b, _ = _tiny_run(tmp_path / "r", 5, init_state=given, d_warmup_steps=2, g_rampup_steps=4)  # resumes at 3
    assert all(torch.equal(G_a.state_dict()[k], G_b.state_dict()[k]) for k in G_a.state_dict())


def test_bf16_autocast_trains_resumes_and_differs_from_fp32(tmp_path):
    """bf16 autocast: finite losses, exact resume, fp32 weights (only the compute is bf16), and
    numbers that differ from the fp32 run (the switch really changes the arithmetic)."""
    G_a, m_a = _tiny_run(tmp_path / "a", 4, "bf16")
    _tiny_run(tmp_path / "b", 2, "bf16")
    G_b, m_b = _tiny_run(tmp_path / "b", 4, "bf16")
    assert all(torch.equal(G_a.state_dict()[k], G_b.state_dict()[k]) for k in G_a.state_dict())
    assert all(v.dtype == torch.float32 for v in G_a.state_dict().values() if v.is_floating_point())
    _, m_f = _tiny_run(tmp_path / "f", 4, "fp32")
    assert math.isfinite(m_a["loss_G"]) and m_a["loss_G"] != m_f["loss_G"]
    with pytest.raises(ValueError, match=r"differs in \['precision'\]"):  # a bf16 run is not resumed as fp32
        _tiny_run(tmp_path / "a", 6, "fp32")
    with pytest.raises(ValueError, match="precision must be"):
        _tiny_run(tmp_path / "x", 2, "fp16")


def _read_csv(p):
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_trainer_resume_equivalence(tmp_path):
    """6 steps straight == 3 steps, restart, 3 more steps (exact equality of all weights)."""
    rng_before = torch.get_rng_state()
    G_a, m_a = _tiny_run(tmp_path / "a", 6)
    assert torch.equal(rng_before, torch.get_rng_state())  # the caller's global RNG is untouched
    _tiny_run(tmp_path / "b", 3)
    assert latest_checkpoint(tmp_path / "b").name == "ckpt_0000003.pt"
    G_b, m_b = _tiny_run(tmp_path / "b", 6)
    ck_a = torch.load(latest_checkpoint(tmp_path / "a"), weights_only=False)
    ck_b = torch.load(latest_checkpoint(tmp_path / "b"), weights_only=False)
    assert ck_a["step"] == ck_b["step"] == 6
    for key in ("G", "G_ema", "D"):
        for name in ck_a[key]:
            assert torch.equal(ck_a[key][name], ck_b[key][name]), (key, name)
    sa, sb = G_a.state_dict(), G_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert m_a["loss_G"] == m_b["loss_G"] and m_a["frechet"] == m_b["frechet"]
    la = [(r["step"], r["loss_G"], r["loss_D"]) for r in _read_csv(tmp_path / "a" / "losses.csv")]
    lb = [(r["step"], r["loss_G"], r["loss_D"]) for r in _read_csv(tmp_path / "b" / "losses.csv")]
    assert la == lb and len(la) == 6
    assert (tmp_path / "a" / "samples" / "step_0000006.png").is_file()
    assert len(_read_csv(tmp_path / "a" / "metrics.csv")) == 2
    G_l = StyleGAN2Generator(tiny_cfg(32))
    G_l.load_state_dict(torch.load(latest_checkpoint(tmp_path / "a"), weights_only=False)["G_ema"])
    assert all(torch.equal(G_l.state_dict()[k], sa[k]) for k in sa)
    # a finished run is not retrained: it returns the same generator
    G_c, _ = _tiny_run(tmp_path / "a", 6)
    assert all(torch.equal(G_c.state_dict()[k], sa[k]) for k in sa)
