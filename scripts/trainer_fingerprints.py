"""Fingerprints of every trainer's output, to show a refactor leaves training bit-identical (a measurement script).

    .venv/bin/python scripts/trainer_fingerprints.py > after.json

run from the checkout's root, then the same script (same interpreter) from the root of a worktree of the older
commit into ``before.json``; ``diff before.json after.json`` shows only the ``"src"`` line when nothing changed.

Tiny runs, one thread, of the identity encoder (warm-up, cosine, rotating state), StyleGAN2 (R1, samples,
metrics), DR-DPGAN (an evaluation hook; resumed after ``stop_after``; the hiding warm-up and joint ramp, resumed),
the hiding stand-in and the binary code; prints hashes of their weights, of their CSV rows without the timing
columns, and of their histories. The package and ``tests/`` are imported from the current folder.
"""
import csv, hashlib, json, sys, tempfile
from pathlib import Path
import torch
sys.path[:0] = [".", "tests"]
torch.set_num_threads(1)
from toys import ColourWorld, ToyCircles, tiny_model, RES
from drdpgan.models.identity import IdentityEncoderConfig
from drdpgan.train_priors import IdentityTrainConfig, train_identity_encoder
from drdpgan.train_stylegan2 import TrainConfig, train_stylegan2
from drdpgan.train_drdpgan import DRDPGANTrainConfig, train_drdpgan
from drdpgan import hiding
from test_stylegan2 import tiny_cfg
from test_hiding import _toy, _cfgs
import torch.nn.functional as F
from drdpgan.models.binary_code import BinaryCodeConfig

def h(obj):
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    m = hashlib.sha256()
    for k in sorted(obj):
        m.update(k.encode()); m.update(obj[k].detach().float().numpy().tobytes())
    return m.hexdigest()[:16]

def csvh(p):
    rows = list(csv.DictReader(open(p)))
    keep = [{k: v for k, v in r.items() if k not in ("time", "sec_per_step")} for r in rows]
    return hashlib.sha256(json.dumps(keep).encode()).hexdigest()[:16], len(rows)

out = {}
tmp = Path(tempfile.mkdtemp())
data = ColourWorld(per_class=12, size=32)
cfg = IdentityEncoderConfig(widths=(8, 16, 16, 32), layers=(1, 1, 1, 1), embedding_dim=32)
tcfg = IdentityTrainConfig(seed=3, epochs=3, batch_size=8, lr=0.05, warmup_steps=2, margin_warmup_steps=5, shift=2, checkpoint_every=4)
m, hist = train_identity_encoder(data, cfg, tcfg, out_dir=tmp / "id", progress=False)
out["identity"] = (h(m), hashlib.sha256(json.dumps([hist["step_loss"], hist["step_acc"], [(e["epoch"], e["loss"], e["acc"], e["steps"]) for e in hist["epochs"]]]).encode()).hexdigest()[:16])

ds = ToyCircles(64, 32, seed=0)
t = TrainConfig(steps=7, batch_size=4, r1_every=2, checkpoint_every=3, sample_every=3, metric_every=3, metric_num=16, num_samples=4, log_every=2, seed=7)
G, met = train_stylegan2(ds, tiny_cfg(32), t, tmp / "sg", progress=False)
out["stylegan2"] = (h(G), csvh(tmp / "sg/losses.csv"), csvh(tmp / "sg/metrics.csv"), {k: v for k, v in met.items()})

d = ToyCircles(n=16, resolution=RES, seed=0)
c = DRDPGANTrainConfig(steps=5, batch_size=2, log_every=2, checkpoint_every=2, r1_every=2, seed=3, critic_base_channels=4, critic_max_channels=8, eval_every=2)
model = tiny_model()
r = train_drdpgan(model, d, c, tmp / "dr", progress=False, evaluate=lambda mm: {"x": float(sum(p.sum() for p in mm.parameters()))})
out["drdpgan"] = (h(model), csvh(tmp / "dr/losses.csv"), csvh(tmp / "dr/metrics.csv"), r["final"], r["last"])
model2 = tiny_model()
c2 = DRDPGANTrainConfig(**{**c.__dict__, "stop_after": 3})
train_drdpgan(model2, d, c2, tmp / "dr2", progress=False)
r2 = train_drdpgan(model2, d, c, tmp / "dr2", progress=False)
out["drdpgan_resumed"] = (h(model2), csvh(tmp / "dr2/losses.csv"), r2["final"])

model3 = tiny_model()
c3 = DRDPGANTrainConfig(**{**c.__dict__, "hiding_warmup_steps": 1, "joint_lr_ramp_steps": 3, "steps": 6})
train_drdpgan(model3, d, DRDPGANTrainConfig(**{**c3.__dict__, "stop_after": 2}), tmp / "dr3", progress=False)
r3 = train_drdpgan(model3, d, c3, tmp / "dr3", progress=False)
out["drdpgan_ramp_resumed"] = (h(model3), csvh(tmp / "dr3/losses.csv"), r3["final"])

images, bits = _toy(64, 0)
cc, ec, ht = _cfgs(25)
car, ext, hh = hiding.train_hiding(images, bits, cc, ec, ht, progress=False)
out["hiding"] = (h(car), h(ext), hashlib.sha256(json.dumps([hh["step_loss"], hh["step_ber"]]).encode()).hexdigest()[:16])
g = torch.Generator().manual_seed(0)
f = F.normalize(torch.randn(80, 32, generator=g), dim=-1)
bcfg = BinaryCodeConfig(identity_dim=32, code_bits=24, hidden_dim=64, decoder_hidden=64)
mm, dd, hb = hiding.train_binary_code(f, bcfg, hiding.CodeTrainConfig(seed=0, steps=30, batch_size=16, lr=3e-3, eval_every=10), f_eval=f, progress=False)
out["code"] = (h(mm), h(dd), hashlib.sha256(json.dumps([hb["step_loss"], hb["eval"]]).encode()).hexdigest()[:16])
import drdpgan; out["src"] = drdpgan.__file__
print(json.dumps(out, indent=1, default=str))
