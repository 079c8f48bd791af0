"""Check that every Table 4 switch setting trains with the pretraining recipe (a check script, not a test: it needs
the shipped cpu priors and about 1-2 min at one thread):

    .venv/bin/python scripts/ablation_switch_check.py [PROFILE]

For each experiment of drdpgan.protocol.ABLATIONS: the model of drdpgan.pretrain_ablations (the recipe's model with
the switches, init seed 1), one training step of its Table 4 config in the hiding warm-up and one joint step (fp32,
sharing distortions on, batch 4 random images; the fake identity bank filled with random unit vectors, as the
mapper stage would fill it), printing loss_G and any NaN term; then, for the settings without 3DPC, three steps of
the E_MLP inversion stage and both paths of the protocol (drdpgan.protocol.run_paths) on six random images.
"""
import dataclasses
import sys

import torch

from drdpgan.latent_inversion import init_mapper
from drdpgan.pretrain_ablations import train_config
from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES, build_model
from drdpgan.protocol import ABLATIONS, run_paths
from drdpgan.train_drdpgan import _train_step, step_harness

torch.set_num_threads(1)
profile = sys.argv[1] if len(sys.argv) > 1 else "cpu"
for n, switches in ABLATIONS.items():
    model, _ = build_model(profile, progress=False, init_seed=1, **switches)
    model.fake_identity.set_bank(torch.nn.functional.normalize(torch.randn(2048, model.cfg.identity_dim), dim=1))
    for warm in (True, False):
        cfg = dataclasses.replace(train_config(profile, n, 1), precision="fp32", distortions_from=0,
                                  hiding_warmup_steps=5 if warm else 0, joint_lr_ramp_steps=0)
        with torch.random.fork_rng(devices=[]):
            m, C, critic, opts, x, cfg = step_harness(model, 4, cfg, 0)
            out = _train_step(m, C, critic, opts, x, cfg, 1, m.cfg.extractor_noise_sigma, float(cfg.r1_gamma))
        print(n, switches, "warm-up" if warm else "joint", f"loss_G {out['loss_G']:.3f}",
              "NaN terms:", [k for k, v in out.items() if v != v], flush=True)
    if not switches["use_3d_prior"]:
        cfg = dataclasses.replace(DRDPGAN_RECIPES[profile]["mapper_init"], n_samples=2100, n_heldout=52, steps=3,
                                  eval_every=3)
        hist = init_mapper(model, cfg)
        paths = run_paths(model.eval(), torch.rand(6, 3, model.cfg.resolution, model.cfg.resolution) * 2 - 1)
        print(n, "E_MLP inversion", hist["eval"][-1], "recovered", tuple(paths["recovered"].shape), flush=True)
