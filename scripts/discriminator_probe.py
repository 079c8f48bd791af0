"""Can a StyleGAN2 discriminator trained against the shipped generator tell DR-DPGAN's anonymized faces from real
ones? (a measurement script for Eq. 9's C)

    .venv/bin/python scripts/discriminator_probe.py STEPS LR CHECKPOINT

The shipped cpu StyleGAN2 kept no discriminator, so the recipe's C starts fresh. This trains a fresh
:class:`~drdpgan.models.discriminator.StyleGAN2Discriminator` for ``STEPS`` steps (batch 16, Adam at ``LR`` with the
lazy-R1 adjustment, betas (0, 0.99), R1 gamma 1 every 16 steps, bf16 autocast: the StyleGAN2 pretraining's D
settings) on the pretraining faces against the frozen shipped generator's own samples (style mixing 0.9), printing
its loss and mean logits every 50 steps; then prints its mean logit, and that of the C stored in ``CHECKPOINT`` (a
DR-DPGAN run checkpoint), on 64 held-out real faces, their anonymized images and 64 generator samples.
"""
import sys
import time

import torch

from drdpgan.losses import discriminator_logistic_loss
from drdpgan.models.discriminator import StyleGAN2Discriminator
from drdpgan.pretrain import pretrained_network
from drdpgan.pretrain_drdpgan import _anonymize_sealed, _faces, _sample_indices, build_model
from drdpgan.repro import make_generator
from drdpgan.runlog import EpochSampler
from drdpgan.stages import images_of
from drdpgan.train_stylegan2 import _gen_ws, r1_penalty

torch.set_num_threads(1)
steps, lr, ckpt = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
G, _ = pretrained_network("cpu", "stylegan2")
G.eval().requires_grad_(False)
torch.manual_seed(0)
D = StyleGAN2Discriminator(G.cfg)
mb = 16 / 17  # lazy R1 every 16 steps (StyleGAN2)
opt = torch.optim.Adam(D.parameters(), lr=lr * mb, betas=(0.0, 0.99**mb))
train, held = _faces("cpu", False)
z_gen, order, B, t0 = make_generator(1), iter(EpochSampler(len(train), 0)), 16, time.time()
for s in range(steps):
    reals = torch.stack([train[next(order)]["image"] for _ in range(B)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fake = G.synthesis(_gen_ws(G, B, z_gen, 0.9, False), noise_mode="random", generator=z_gen).float()
    do_r1 = s % 16 == 0
    reals.requires_grad_(do_r1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not do_r1):
        real_logits, fake_logits = D(reals).float(), D(fake).float()
    loss = discriminator_logistic_loss(real_logits, fake_logits)
    total = loss + r1_penalty(real_logits, reals).mean() * 0.5 * 16 if do_r1 else loss
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if s % 50 == 0 or s == steps - 1:
        print(f"step {s}: loss {loss.item():.3f}, real {real_logits.mean().item():.3f}, "
              f"generated {fake_logits.mean().item():.3f} ({time.time() - t0:.0f} s)", flush=True)

model, _ = build_model("cpu", progress=False)
state = torch.load(ckpt, map_location="cpu", weights_only=False)
model.load_state_dict(state["model"])
model.eval()
run_C = StyleGAN2Discriminator(G.cfg)
run_C.load_state_dict(state["C"])
x = images_of(held, _sample_indices(held, 64)).float()
with torch.no_grad():
    anon = _anonymize_sealed(model, x, make_generator(3))[0].float()
    samples = G.synthesis(_gen_ws(G, 64, make_generator(9), 0.0, False), noise_mode="const").float()
    for name, C in (("probe D", D.eval()), (f"C of {ckpt}", run_C.eval())):
        r, a, g = C(x), C(anon), C(samples)
        print(f"{name}: mean logit real {r.mean():.3f}, anonymized {a.mean():.3f}, generated {g.mean():.3f}; "
              f"real > 0 {float((r > 0).float().mean()):.2f}, anonymized < 0 {float((a < 0).float().mean()):.2f}")
