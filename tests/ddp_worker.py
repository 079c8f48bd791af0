"""A tiny DR-DPGAN run for tests/test_distributed.py, launched by ``torchrun`` (or alone).

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT_DIR STEPS [STOP_AFTER] [exact] [stylegan2 | fit]

Trains :func:`toys.tiny_model` on :class:`toys.ToyCircles` with a global batch of 4 for STEPS steps (ending this
call after STOP_AFTER, a simulated kill; 0 for none), single-threaded per process, and writes nothing but the
trainer's own files (rank 0). ``exact``: without the layers whose output depends on which samples share a batch
(E_P's BatchNorm replaced by the identity, C without its minibatch standard deviation), so that a shard's step is
the single process's step up to float summation order. ``stylegan2``: the StyleGAN2 trainer instead (32 px,
global batch 4, DiffAugment on, style mixing; ``exact`` drops D's minibatch standard deviation; STOP_AFTER is
ignored, a kill is simulated by a shorter STEPS). ``fit``: the priors' training loop on a small BatchNorm-free
classifier with the priors' flips and shifts, 8 per batch, ``step_loss.json`` written.
"""
import dataclasses
import sys

import torch
from torch import nn

from drdpgan import distributed as ddp
from drdpgan.models.discriminator import StyleGAN2Discriminator
from drdpgan.train_drdpgan import DRDPGANTrainConfig, train_drdpgan
from toys import RES, ToyCircles, tiny_model

torch.set_num_threads(1)
out, steps = sys.argv[1], int(sys.argv[2])
stop_after = int(sys.argv[3]) if len(sys.argv) > 3 and int(sys.argv[3]) > 0 else None
exact = "exact" in sys.argv[4:]
ddp.init_from_env("cpu")
if "fit" in sys.argv[4:]:  # the priors' loop (train_priors._fit) on a BatchNorm-free classifier with augment_batch
    import json

    import torch.nn.functional as F

    from drdpgan.train_priors import IdentityTrainConfig, _fit, _loader, augment_batch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    data = ToyCircles(n=32, resolution=RES, seed=0)
    tcfg = IdentityTrainConfig(batch_size=8, epochs=2, max_steps=steps, lr=0.05, shift=2, flip_p=0.5,
                               checkpoint_every=2, num_threads=1, warmup_steps=0,
                               lr_schedule="constant")  # a shorter max_steps (the simulated kill) keeps the lr
    gen = torch.Generator().manual_seed(5)

    def step_fn(batch, step):
        x, _ = augment_batch(batch["image"], gen, tcfg.flip_p, tcfg.shift)
        y = batch["identity"].long() % 4
        logits = net(x)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean().item()

    hist = _fit([net], _loader(data, tcfg.batch_size, tcfg.seed), tcfg, step_fn, "fit", False, state_dir=out,
                generators={"augment": gen})
    if ddp.is_main():
        json.dump(hist["step_loss"], open(f"{out}/step_loss.json", "w"))
    ddp.shutdown()
    sys.exit(0)
if "stylegan2" in sys.argv[4:]:
    from drdpgan.models.stylegan2 import StyleGAN2Config
    from drdpgan.train_stylegan2 import TrainConfig, train_stylegan2

    gcfg = StyleGAN2Config(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16,
                           mbstd_num_channels=0 if exact else 1)
    tcfg = TrainConfig(steps=steps, batch_size=4, r1_every=2, checkpoint_every=100, sample_every=0, metric_every=-1,
                       num_samples=4, log_every=1, seed=7, diffaugment="color,translation,cutout",
                       style_mixing_prob=0.9)
    train_stylegan2(ToyCircles(n=16, resolution=32, seed=0), gcfg, tcfg, out, progress=False)
    ddp.shutdown()
    sys.exit(0)
cfg = DRDPGANTrainConfig(steps=steps, batch_size=4, log_every=1, checkpoint_every=100, r1_every=2, seed=3,
                         critic_base_channels=4, critic_max_channels=8, stop_after=stop_after,
                         w_hide_footprint=0.5, w_attr=0.5, w_anon_background=0.5, w_rec_background=0.5,
                         freeze_code_mapping=True)
model, C = tiny_model(), None
if exact:
    for name, mod in list(model.extractor.named_modules()):
        for child, sub in list(mod.named_children()):
            if isinstance(sub, nn.BatchNorm2d):
                setattr(mod, child, nn.Identity())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        C = StyleGAN2Discriminator(dataclasses.replace(model.generator.cfg, mbstd_num_channels=0))
train_drdpgan(model, ToyCircles(n=16, resolution=RES, seed=0), cfg, out, progress=False, discriminator=C)
ddp.shutdown()
