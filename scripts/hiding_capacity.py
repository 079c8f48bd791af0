"""How fast can the anonymize pass hide random bits for E_P? (a measurement script, not part of the package API)

Trains only DR-DPGAN's anonymize pass and E_P, from the profile's pretrained priors, on uniformly random
carrier bits with loss ``5 * L_info + W_ANON * L1(x_anon, x)`` (batch 8, bf16 autocast, Adam 1e-4 for the
StyleGAN2 synthesis, LR_OTHER for the rest), and prints E_P's training bit accuracy every 25 steps:

    OVR='{"password_map": "spatial", "code_bits": 64, "carrier_bits": 128}' \\
        .venv/bin/python scripts/hiding_capacity.py STEPS [W_ANON=0.1] [LR_OTHER=1e-3] [GENERATOR_CKPT]

``OVR``: DRDPGANConfig overrides (JSON). ``ONLY=1``: train E_P alone on the frozen, untrained anonymizer (how
hard is the layout to read?), with loss ``5 * L_info``. ``PRECISION=fp32``: no bf16 autocast. ``GRID=PATH``: at the end, save six
faces and their anonymized versions to PATH and print their L1. ``GENERATOR_CKPT``: a StyleGAN2 training checkpoint
whose G_ema to use (default: the profile's shipped generator; the README's table used the cpu run's
ckpt_0012000.pt, whose G_ema the shipped file stores in fp16). The measurements: README, "DR-DPGAN itself".
"""
import json
import os
import sys
import time

import torch

from drdpgan import pretrain, stages
from drdpgan.models.drdpgan import assemble
from drdpgan.models.extractor import add_channel_noise, information_hiding_loss
from drdpgan.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from drdpgan.objective import random_carrier
from drdpgan.repro import make_generator

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
steps = int(sys.argv[1])
w_anon = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
lr_other = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
if len(sys.argv) > 4:
    ck = torch.load(sys.argv[4], map_location="cpu", weights_only=False)
    G = StyleGAN2Generator(StyleGAN2Config.from_dict(ck["gcfg"]))
    G.load_state_dict(ck["G_ema"])
else:
    G, _ = pretrain.pretrained_network("cpu", "stylegan2")
enc, _ = pretrain.pretrained_network("cpu", "identity")
p3d, _ = pretrain.pretrained_network("cpu", "prior3d")
torch.manual_seed(0)
m = assemble(G, enc, p3d, **{"code_bits": 256, "carrier_bits": 512, **json.loads(os.environ.get("OVR", "{}"))})
data = stages.face_data(stages.notebook_params("01_data", "cpu"), False)["train"]
others = [p for n, p in m.named_parameters()
          if p.requires_grad and not n.startswith(("generator.", "identity_encoder.", "prior3d.", "fake_identity."))]
ONLY = os.environ.get("ONLY")  # train E_P alone on the frozen anonymizer
if ONLY:
    opt = torch.optim.Adam(m.extractor.parameters(), lr=lr_other, betas=(0.5, 0.99))
else:
    opt = torch.optim.Adam([{"params": list(m.generator.synthesis.parameters()), "lr": 1e-4},
                        {"params": others, "lr": lr_other}], betas=(0.5, 0.99))
m.train()
m.generator.mapping.requires_grad_(False)
t, acc = time.time(), []
for step in range(steps):
    idx = torch.randint(len(data), (8,), generator=make_generator(step)).tolist()
    x = torch.stack([data[i]["image"] for i in idx])
    car = random_carrier(m, 8, make_generator(10**6 + step))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=os.environ.get("PRECISION", "bf16") == "bf16"):
        if ONLY:
            with torch.no_grad():
                a = m.anonymize(x, generator=make_generator(2 * 10**6 + step), carrier=car)
        else:
            a = m.anonymize(x, generator=make_generator(2 * 10**6 + step), carrier=car)
        logits = m.extractor(add_channel_noise(a["images"], 0.02, make_generator(3 * 10**6 + step)))
        info = information_hiding_loss(logits.float(), car)
        l1 = (a["images"].float() - x).abs().mean()
        loss = 5 * info + (0 if ONLY else w_anon * l1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    acc.append(float(((logits.detach() >= 0).float() == car).float().mean()))
    if (step + 1) % 25 == 0:
        print(step + 1, f"bit accuracy {sum(acc[-25:]) / 25:.3f}  L_info {float(info):.3f}  L1 {float(l1.detach()):.3f}  "
              f"{(time.time() - t) / (step + 1):.2f} s/step", flush=True)
if os.environ.get("GRID"):  # anonymized faces beside the originals, for a look
    from drdpgan import viz

    m.eval()
    with torch.no_grad():
        x = torch.stack([data[i]["image"] for i in range(6)])
        a = m.anonymize(x, seed=0, carrier=random_carrier(m, 6, make_generator(7)))["images"].clamp(-1, 1)
    print(f"6 training faces: anonymization L1 {float((a - x).abs().mean()):.3f}")
    viz.image_grid([list(x), list(a)], row_titles=["original", "anonymized"]).savefig(os.environ["GRID"], dpi=80)
