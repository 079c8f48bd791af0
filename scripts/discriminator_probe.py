"""Can a StyleGAN2 discriminator trained against the shipped generator tell DR-DPGAN's anonymized faces from real
ones? (a measurement script for Eq. 9's C)

    .venv/bin/python scripts/discriminator_probe.py STEPS LR CHECKPOINT

The shipped cpu StyleGAN2 kept no discriminator, so the recipe's C starts fresh. This trains a fresh one with the
StyleGAN2 trainer itself for ``STEPS`` steps, all of them its discriminator warm-up (``TrainConfig.d_warmup_steps``:
D alone against the frozen shipped generator; the cpu pretraining's settings otherwise, at Adam rate ``LR``), into
``artifacts/pretrain/cpu/diagnostics/discriminator_probe`` (its ``losses.csv`` has D's loss and mean logits); then
prints its mean logit, and that of the C stored in ``CHECKPOINT`` (a DR-DPGAN run checkpoint), on 64 held-out real
faces, their anonymized images and 64 generator samples.
"""
import shutil
import sys
from dataclasses import replace

import torch

from drdpgan.models.discriminator import StyleGAN2Discriminator
from drdpgan.pretrain import STYLEGAN2_RECIPES, pretrained_network, work_dir
from drdpgan.pretrain_drdpgan import _anonymize_sealed, _faces, _sample_indices, build_model
from drdpgan.repro import make_generator
from drdpgan.runlog import latest_checkpoint
from drdpgan.stages import images_of
from drdpgan.train_stylegan2 import _gen_ws, train_stylegan2

torch.set_num_threads(1)
steps, lr, ckpt = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
G, _ = pretrained_network("cpu", "stylegan2")
train, held = _faces("cpu", False)
out = work_dir("cpu", "diagnostics") / "discriminator_probe"
shutil.rmtree(out, ignore_errors=True)
tcfg = replace(STYLEGAN2_RECIPES["cpu"], steps=steps, lr=lr, d_warmup_steps=steps, log_every=50, sample_every=0,
               metric_every=-1, checkpoint_every=steps)
train_stylegan2(train, G.cfg, tcfg, out, progress=False, init_state={"G": G.state_dict(), "G_ema": G.state_dict()})
D = StyleGAN2Discriminator(G.cfg)
D.load_state_dict(torch.load(latest_checkpoint(out), weights_only=False)["D"])
print((out / "losses.csv").read_text())

model, _ = build_model("cpu", progress=False)
state = torch.load(ckpt, map_location="cpu", weights_only=False)
model.load_state_dict(state["model"])
model.eval()
run_C = StyleGAN2Discriminator(G.cfg)
run_C.load_state_dict(state["C"])
x = images_of(held, _sample_indices(held, 64)).float()
with torch.no_grad():
    anon = _anonymize_sealed(model, x, make_generator(3))[0].float()
    samples = G.synthesis(_gen_ws(G.eval(), 64, make_generator(9), 0.0, False), noise_mode="const").float()
    for name, C in (("probe D", D.eval()), (f"C of {ckpt}", run_C.eval())):
        r, a, g = C(x), C(anon), C(samples)
        print(f"{name}: mean logit real {r.mean():.3f}, anonymized {a.mean():.3f}, generated {g.mean():.3f}; "
              f"real > 0 {float((r > 0).float().mean()):.2f}, anonymized < 0 {float((a < 0).float().mean()):.2f}")
