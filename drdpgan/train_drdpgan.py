"""Train DR-DPGAN: the anonymization (t = 1) and recovery (t = 0) paths jointly (paper Sec. 3.5, Eq. 9-17).

One training step on a batch ``x`` (B, 3, R, R) in [-1, 1]::

    # ---- anonymization, t = 1 (Sec. 3.1)
    a        = model.anonymize(x, generator=g_step)            fake identity from a per-step seeded generator
    x_anon   = a["images"]                                     (B, 3, R, R)
    L_adv    = softplus(-C(x_anon))                            Eq. 9
    L_dic    = (1 - Critic(x_anon))^2                          generator side of Eq. 10
    L_id     = 1 - cos(F'_id, E(x_anon)) + max(0, cos(F_id, E(x_anon)))      Eq. 11
    L_info   = BCE(E_P(x_anon + eps), Password)                Eq. 13-15
    # ---- recovery, t = 0, from x_anon (teacher-forced password, see below)
    x_rec    = recover(x_anon, password=a["password"])
    L_adv, L_dic on x_rec                                      Eq. 9, 10
    L_id     = 1 - cos(F_id, E(x_rec))                         Eq. 12
    # ---- generator total (Eq. 16 for each process, then Eq. 17's minimisation)
    L_G      = sum_{p in ano, rec} (l_adv L_adv^p + l_dic L_dic^p + l_id L_id^p) + l_info L_info^ano
               + w_code L_code + w_rec_pixel L_rec_pixel + w_anon_pixel L_anon_pixel
               + w_hide_footprint L_hide_footprint + w_attr L_attr
               + w_anon_background L_bg(x_anon) + w_rec_background L_bg(x_rec)
               + w_rec_perceptual L_perc(x_rec, x)                                             (extras)

``E`` is the frozen identity encoder (E_Arcface); its weights never change but gradients flow
through it into ``x_anon`` / ``x_rec``. The 3D prior is frozen and only read (no gradient).
Gradients of the recovery losses flow back through ``x_anon`` into the anonymizer too: the
anonymizer learns to keep what recovery needs.

Reading of Eq. 17 (``min over theta_G, theta_D of L_total``): the two judges are trained on
their own side of their games (a min-max in practice), as is standard and as
:mod:`drdpgan.losses` documents:

* ``C`` (a :class:`~drdpgan.models.discriminator.StyleGAN2Discriminator`) with StyleGAN2's
  logistic loss, real = ``x``, fake = ``x_anon`` and ``x_rec`` (the two fake terms averaged:
  ``softplus(-C(x)) + (softplus(C(x_anon)) + softplus(C(x_rec))) / 2``), plus the lazy R1
  penalty on reals (every ``r1_every`` steps, gamma scaled by ``r1_every``; C's Adam lr and
  betas adjusted by ``r1_every / (r1_every + 1)`` as in StyleGAN2);
* ``Critic`` (:class:`~drdpgan.models.critic.SteganalysisCritic`, score in (0, 1)) with Eq. 10
  itself, carrier = ``x`` -> 1, stego = ``x_anon`` -> 0 (``critic_on_rec`` adds ``x_rec`` as
  stego, averaged).

Both judges use the images produced by the same step's generator forward (detached, before the
generator's update): no second generator pass, which halves the cost on CPU.

Teacher forcing: during training the recovery path gets the *true* password bits
``a["password"]`` (with the straight-through gradient of Eq. 4), not the bits E_P reads from
``x_anon``: E_P is trained by L_info at the same time, and early in training its bits are
noise, which would give the recovery path nothing to learn from. At evaluation,
``model.recover(x_anon)`` uses the extracted bits (the paper's pipeline); BER measures how far
those are from the truth. The recovery pass here skips ``recover``'s E_P forward (its logits
are unused when the password is given); :func:`recover_teacher_forced` equals
``model.recover(x_anon, password=bits)`` otherwise (tested).

Extra terms (not among Eq. 16's four weights; each weighted, switchable with weight 0, and
logged separately):

* ``code`` = ``1 - cos(decoder(Password), F_id)``: learns the bits -> float identity way back of
  Sec. 3.4.2 (``model.decoder``), which FMSE measures and recovery needs; the paper states the
  conversion but no loss for it.
* ``rec_pixel`` = ``L1(x_rec, x)``: the paper reports recovery MAE / PSNR but lists no pixel
  loss; with Eq. 12 alone, recovery only needs the right *identity*. Default weight 1.0;
  **weight 0 is the paper-literal setting**.
* ``anon_pixel`` = ``L1(x_anon, x)``, default 0.1: "non-identity feature consistency" of the
  Sec. 3.5 introduction, which the written losses do not enforce on their own (E_Ste's mask
  fusion of E_G features is the architectural part of it). Weight 0 is paper-literal.
* ``hide_footprint`` = ``L1(x_anon, cover)``, default 0: what the password adds to the anonymized image,
  against the same pass rendered without it (:class:`DRDPGANTrainConfig` ``w_hide_footprint``).
* ``attr`` = ``L1(P(x_anon), P(x))`` with ``P`` the frozen 3D prior's standardised expression and pose, default 0:
  the attributes Eq. 1 conditions on, held by a loss (:class:`DRDPGANTrainConfig` ``w_attr``).
* ``anon_background`` = ``L1(x_anon, x)`` outside the aligned crop's face ellipse, default 0: the background E_G
  should carry (:class:`DRDPGANTrainConfig` ``w_anon_background``, ``face_region``); ``rec_background`` the same
  for ``x_rec`` (``w_rec_background``).

Optimisers (Sec. 4.1.2): Adam, StyleGAN2 blocks (the generator's synthesis network) at
``lr_stylegan = 1e-4``, the other trainable parts (E_MLP, E_G, E_Ste fusion, binary code
mapping and decoder, E_P) at ``lr_other = 1e-3``; batch 8. The StyleGAN2 mapping network is
unused (E_MLP replaces it) and frozen by default (``freeze_generator_mapping``); the fake
identity MLP is not trained (Alg. 1 steps a per-sample copy of it). ``C`` at ``lr_C`` (default
``lr_stylegan``: it is a StyleGAN2 block, trained at its generator's pace), the critic at
``lr_critic`` (default ``lr_other``). Betas (0.5, 0.99) for all: the paper gives none; 0.5 is
the usual GAN first moment for jointly trained encoders / decoders (DCGAN), 0.99 the StyleGAN2
second moment.

Determinism and resume: every random draw of a step comes from seeds that are a pure function
of ``(seed, step)``: the fake-identity noise, the channel noise of Eq. 13, and (through a
per-step ``torch.manual_seed`` inside :func:`torch.random.fork_rng`, so the caller's global RNG
is untouched) the dropout of the binary code mapping. Data order is :class:`EpochSampler`'s
seeded per-epoch permutation at position ``step * batch_size``; batches are assembled without
a DataLoader (``num_workers = 0`` in effect). A checkpoint
(``out_dir/checkpoints/ckpt_XXXXXXX.pt``, written atomically every ``checkpoint_every`` steps,
the last ``keep_checkpoints`` kept) holds the model (generator included), C, the critic, the
three optimisers, the step, the data position, the configs, the partial log averages and, for
the record, the global RNG states. A killed and restarted run resumes from the latest one and
ends **bit-identical** to an uninterrupted run with the same seed on the same machine and
thread count (tested: ``torch.equal`` on every parameter; tolerance 0).

Outputs in ``out_dir``: ``losses.csv`` (every ``log_every`` steps: each term averaged over the
steps since the previous row), ``losses.png`` (:func:`plot_losses`), ``checkpoints/``,
``final_metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import distributed as ddp
from .loop import Every, StepLoop, step_schedule
from .losses import LossWeights
from .models.critic import CriticConfig, SteganalysisCritic
from .models.discriminator import StyleGAN2Discriminator
from .models.drdpgan import DRDPGAN
from .objective import diagnostics, generator_objective, judge_losses, recover_teacher_forced, step_seed
from .repro import atomic_write_json, make_generator, resolve_precision
from .runlog import (CSVLog, DictConfig, EpochSampler, checkpoint_dir, latest_checkpoint, load_states, rewrite_csv_upto,
                     save_rotating, states_of)
from .train_stylegan2 import r1_penalty

__all__ = [
    "DRDPGANTrainConfig",
    "train_drdpgan",
    "recover_teacher_forced",
    "plot_losses",
    "build_optimizers",
    "LOSS_COLUMNS",
    "time_training_step",
]


# --------------------------------------------------------------------------- config


@dataclass
class DRDPGANTrainConfig(DictConfig):
    """Hyper-parameters of :func:`train_drdpgan` (defaults: paper Sec. 4.1.2 where it says).

    weights: Eq. 16's ``(lambda_adv, lambda_dic, lambda_id, lambda_info) = (1, 1, 1, 5)``.
    w_code / w_rec_pixel / w_anon_pixel: the extra terms (module docstring); 0 switches one off.
        ``w_rec_pixel = w_anon_pixel = 0`` is the paper-literal objective.
    noise_sigma: std of eps in Eq. 13 (images in [-1, 1]); None: the model's
        ``extractor_noise_sigma`` (0.02).
    r1_gamma / r1_every: lazy R1 on reals for C (StyleGAN2); ``r1_gamma = 0`` switches it off.
    d_every: update C and the critic every ``d_every`` steps.
    critic_on_rec: also show ``x_rec`` to the critic as a stego image (default: only ``x_anon``,
        the stego image proper).
    freeze_generator_mapping: freeze the StyleGAN2 z -> w mapping (unused: E_MLP replaces it).
    freeze_code_mapping: keep the binary code mapping of Eq. 2-4 fixed and in eval mode (no
        dropout), for a mapping pretrained on identity embeddings (:func:`drdpgan.hiding.train_binary_code`,
        as notebook 09 does). Trained jointly, its dropout of 0.5 changes ~20 % of a face's bits
        from step to step (measured), a moving target for E_P and the decoder.
    grad_clip: clip the generator-side gradient norm (None: no clipping, the paper's setting).
    precision: ``"fp32"`` or ``"bf16"`` (autocast of every forward pass of the generator side and the
        judges; parameters, optimiser states and the R1 step stay fp32), as the StyleGAN2 trainer;
        ``"auto"``, bf16 where the hardware has it (:func:`drdpgan.repro.resolve_precision`).
    distortions: what E_P reads through besides Eq. 13's noise, one drawn per step
        (:mod:`drdpgan.channel`: ``"none"``, ``"quantize"``, ``"jpeg"``, ``"resize"``) from step
        ``distortions_from`` on; empty, the paper.
    hiding_warmup_steps: the first that many steps train the hiding channel alone (StegaStamp's warm-up:
        ``lambda_info * L_info``, the anonymization L1 ramped in over the second half; no recovery pass,
        no judges; about half a full step); 0, the paper (everything jointly from the start). With the L1
        at its full weight throughout, E_P's bit accuracy stayed at 0.50 for 1,120 steps while the
        anonymized image converged to a copy of the input (L1 0.06; cpu run 1, README).
    hiding_warmup_l1_ramp: True (StegaStamp), the warm-up's anonymization L1 is off for its first half and
        ramped in over the second; False, it stays at ``w_anon_pixel`` throughout the warm-up (the schedule of
        ``scripts/hiding_capacity.py``). With L_info alone the generator's output drifts away from any image
        (anonymization L1 0.81 -> 2.03 over the first 250 steps of cpu run 3; run 2 diverged the same way).
    joint_lr_ramp_steps: the generator side's learning rates ramp linearly from 0 over that many steps after the
        hiding warm-up (:func:`joint_lr_factor`); 0, none (the paper). Adam's second moments hold the warm-up's
        small gradients when the joint losses arrive, so its first joint steps are many times lr: in cpu run 8 the
        anonymization L1 went from 0.066 to 1.06 in 20 steps, with or without each of Eq. 9, 10 and 11.
    lr_decay_from / lr_decay_steps / lr_decay_final: the generator side's learning rates follow a half cosine from
        1 at step ``lr_decay_from`` down to ``lr_decay_final`` at ``lr_decay_from + lr_decay_steps``, and stay there
        (:func:`joint_lr_factor`); ``lr_decay_from`` None, a constant rate (the paper). Its own length, not
        ``steps``, so extending a run does not move the schedule.
    recover_detached: the recovery pass reads a detached ``x_anon`` (G2Face's teacher forcing): Eq. 12 and the
        recovery L1 train the recovery path only, not the anonymizer; False (the paper's joint objective), their
        gradients also reach the anonymized image.
    recover_grad_scale: with ``recover_detached`` False, the recovery losses' gradient through ``x_anon`` is scaled
        by this (1, the paper's; the forward pass is unchanged): between the paper's joint objective and G2Face's
        teacher forcing. The anonymizer keeps what helps recovery less (0 is ``recover_detached``).
    anon_id_views: Eq. 11 is also taken on these views of ``x_anon`` (:data:`drdpgan.losses.IDENTITY_VIEWS`: ``"blur"``,
        ``"resize"``) and averaged with it (a departure; empty, the paper's). The frozen encoder can be fooled by
        changes a blur removes (scripts/anon_identity_transfer.py); the views ask for a change that survives them.
        Measured from the cpu run's step 12,300 with the recovery gradient at 0.15, 300 steps (README): evaluator
        anon.cos 0.114 against 0.116 without them; unused.
    hiding_warmup_w_anon_pixel: the anonymization L1's weight during the warm-up; None, ``w_anon_pixel`` (one
        weight throughout). A heavy L1 keeps the faces intact while the channel opens; after it, the identity
        losses need room to change the face.
    w_hide_footprint: weight of the password's footprint after the hiding warm-up (a departure; 0, the paper):
        the L1 between the anonymized image and the cover, the same pass rendered with no password
        (``DRDPGAN.render(..., password=None)``, no gradient), so the password has to hide in the face instead of
        painting it (HiDDeN's encoder loss against its cover). In cpu run 10 (step 700) E_P read every bit while
        the password term alone covered each anonymized face in coloured grain (the same faces rendered without
        it are clean, README), and Eq. 10's critic, meant to punish that, had saturated at 1 on every image.
    w_attr: weight of the attribute term after the hiding warm-up (a departure; 0, the paper): L1 between the frozen
        3D prior's expression and pose (standardised units) of the anonymized image and of the input. Eq. 1 feeds them
        to E_MLP but no written loss keeps them, and the issue's ``anon.pose_err_deg`` measures exactly that.
    w_anon_background: weight of the background term after the hiding warm-up (a departure; 0, the paper): the
        L1 between the anonymized image and the input outside ``face_region``
        (:func:`drdpgan.losses.background_l1`), so identity changes stay in the face and E_G carries the rest, as
        Sec. 3.4.3 says it should ("the background of the image"). With the whole-image L1 alone the anonymized
        backgrounds of cpu run 12 were generated, not copied (``anon.background_psnr`` 15.1 dB at step 1500).
    w_rec_background: the same term between the recovered image and the input (a departure; 0, the paper). The
        recovery L1 (``w_rec_pixel``) covers the whole image; with the anonymized background copied, the recovered
        one still came out worse than it (run 12 continued to step 1,900 with ``w_anon_background=10``: recovered
        background 20.6 dB, anonymized 25.2 dB, 32 held-out faces, outside the renderer's head mask).
    w_rec_perceptual: weight of a perceptual distance between the recovered image and the input (a departure; 0,
        the paper): LPIPS's unweighted distance over the frozen identity encoder's feature pyramid
        (:func:`drdpgan.losses.perceptual_distance`; G2Face adds a perceptual term to its pixel L1). The pixel L1
        leaves the fine structure an identity network reads: the evaluator's cosine of held-out faces to copies with
        Gaussian noise at 28 dB is 0.85, to blurred copies at 31 dB 0.83 (run 14 recovered at 27.7 dB with cosine 0.80).
    w_rec_face: weight of the L1 between the recovered image and the input inside ``face_region``
        (:func:`drdpgan.losses.region_l1`; a departure, 0 the paper). The recovery's error sits in the face: at the cpu
        run's step 12,300 (128 held-out faces) the recovered faces read 26.6 dB inside the ellipse and 37.6 dB
        outside, and pasting the original background under the recovered face leaves the evaluator's cosine at 0.830
        (0.830 with the recovered background), while the whole-image L1 and ``w_rec_background`` weigh the
        background more than the face.
    w_rec_detail: weight of the same L1 on the images' fine detail, each minus its 3 x 3 box blur
        (:func:`drdpgan.losses.high_pass`), inside ``face_region`` (a departure; 0, the paper). An identity network
        reads that detail: a 3 x 3 blur of the held-out faces (29.7 dB) drops the evaluator's cosine to 0.76, where
        Gaussian noise at 34 dB keeps 0.98; an L1 alone recovers the blurred mean of what it cannot tell.
        Measured from the cpu run's step 12,300, 300 steps of its last phase with each at 10 (README): ``rec.cos``
        0.847 (face) / 0.840 (detail) against 0.842 for the phase alone, ``rec.psnr`` 28.9 / 28.5 against 28.4 dB,
        ``rec.ssim`` 0.908 / 0.904 against 0.899; neither moves the evaluator's cosine, and both stay off.
    face_region: the face ellipse ``(cx, cy, rx, ry)`` of an aligned crop, fractions of the image side
        (:func:`drdpgan.losses.face_region_weight`). The default covers the synthetic world's heads: over 512
        held-out faces the renderer's head mask spans x 9.9-53.1 px and y 3.8-57.2 px of 64 (std 2.6 px each),
        and the ellipse adds about 3 px to that.
    critic_*: :class:`~drdpgan.models.critic.CriticConfig` sizes.
    critic_output: Eq. 10 on the critic's ``"sigmoid"`` score (the package's first reading; saturates) or on its
        ``"linear"`` raw output, the least-squares GAN's form (Mao et al. 2017; a departure only in that the paper
        does not say which). Measured in cpu run 14: the sigmoid critic separated carriers from the grainy
        anonymized faces (scores 1.0 / 0.0004 at step 9,000), where its squared error against 1 has no gradient
        left for G (``ano_dic`` 1.0), then sat at 1.0 on every image from step 10,000 on (``loss_critic`` 1.0).
    fake_band: ``(s_min, s_max)``, Alg. 1's cosine band for this phase, kept by the model it trains
        (:meth:`~drdpgan.models.drdpgan.DRDPGAN.set_fake_band`; what a saved model anonymizes with); None: the
        model's own (the paper's [0.1, 0.4] by default). A narrower band picks fakes less like the real person.
    critic_restart_step: at this step the critic and its optimiser start afresh (the critic's seeded
        initialisation); None, never. For a phase that changes ``critic_output`` after a saturated critic.
    stop_after / max_seconds: end *this call* after that many steps / seconds with a checkpoint
        (simulates a kill in tests; budgets long runs). Not part of the run's identity.
    device: where the networks train (``"cpu"``, ``"cuda"``); every random number is still drawn on the
        CPU from the step's seeded generators, so a run may move between devices when it resumes.
    eval_every: call :func:`train_drdpgan`'s ``evaluate`` every that many steps (0: never); its
        numbers go to ``metrics.csv``. Evaluation runs in eval mode under ``no_grad`` with the RNG
        forked, so it does not change the training run.
    """

    steps: int = 2000
    batch_size: int = 8
    lr_stylegan: float = 1e-4
    lr_other: float = 1e-3
    lr_C: float | None = None  # None: lr_stylegan
    lr_critic: float | None = None  # None: lr_other
    betas: tuple[float, float] = (0.5, 0.99)
    eps: float = 1e-8
    weights: LossWeights = field(default_factory=LossWeights)
    w_code: float = 1.0
    w_rec_pixel: float = 1.0
    w_anon_pixel: float = 0.1
    noise_sigma: float | None = None
    r1_gamma: float = 1.0
    r1_every: int = 16
    d_every: int = 1
    critic_on_rec: bool = False
    freeze_generator_mapping: bool = True
    freeze_code_mapping: bool = False
    grad_clip: float | None = None
    precision: str = "fp32"
    distortions: tuple[str, ...] = ()
    distortions_from: int = 0
    hiding_warmup_steps: int = 0
    hiding_warmup_l1_ramp: bool = True
    hiding_warmup_w_anon_pixel: float | None = None
    recover_detached: bool = False
    recover_grad_scale: float = 1.0
    anon_id_views: tuple[str, ...] = ()
    joint_lr_ramp_steps: int = 0
    lr_decay_from: int | None = None
    lr_decay_steps: int = 0
    lr_decay_final: float = 0.1
    w_hide_footprint: float = 0.0
    w_attr: float = 0.0
    w_anon_background: float = 0.0
    w_rec_background: float = 0.0
    w_rec_perceptual: float = 0.0
    w_rec_face: float = 0.0
    w_rec_detail: float = 0.0
    face_region: tuple[float, float, float, float] = (0.50, 0.485, 0.39, 0.47)
    critic_base_channels: int = 16
    critic_max_channels: int = 128
    critic_highpass: bool = True
    critic_output: str = "sigmoid"
    critic_restart_step: int | None = None
    fake_band: tuple[float, float] | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    stop_after: int | None = None
    max_seconds: float | None = None
    eval_every: int = 0
    device: str = "cpu"

    # fields that may differ between a run and its resumption
    VOLATILE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "stop_after", "max_seconds",
                "eval_every", "device")

    def critic_config(self, resolution: int) -> CriticConfig:
        return CriticConfig(resolution=resolution, base_channels=self.critic_base_channels,
                            max_channels=self.critic_max_channels, highpass=self.critic_highpass,
                            output=self.critic_output)


# Every per-step quantity written to losses.csv (besides step / images / timing).
LOSS_COLUMNS = [
    "loss_G",  # the generator total (Eq. 16 ano + Eq. 16 rec + extras)
    "ano_adv", "ano_dic", "ano_id", "ano_info",  # Eq. 9, 10 (G side), 11, 13-15 on x_anon
    "rec_adv", "rec_dic", "rec_id",  # Eq. 9, 10 (G side), 12 on x_rec
    "code", "rec_pixel", "anon_pixel", "hide_footprint", "attr", "anon_background", "rec_background",  # extras
    "rec_perceptual", "rec_face", "rec_detail",
    "loss_C", "C_real", "C_anon", "C_rec", "r1",  # C's logistic loss, mean logits, R1
    "loss_critic", "critic_real", "critic_anon",  # Eq. 10 (critic side), mean scores
    "bit_acc",  # E_P's bit accuracy on x_anon + eps (train mode)
    "cos_anon_real", "cos_anon_fake", "cos_rec_real", "cos_fake_real", "cos_decoded_real",
]


# --------------------------------------------------------------------------- pieces


def build_optimizers(model: DRDPGAN, C: nn.Module, critic: nn.Module, cfg: DRDPGANTrainConfig
                     ) -> tuple[torch.optim.Adam, torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator side (groups "stylegan2" at ``lr_stylegan``, "other" at ``lr_other``),
    C (lazy-R1-adjusted lr / betas) and the critic. Frozen parameters are left out."""
    groups = []
    for g in model.param_groups(cfg.lr_stylegan, cfg.lr_other):
        params = [p for p in g["params"] if p.requires_grad]
        if params:
            groups.append({**g, "params": params})
    opt_G = torch.optim.Adam(groups, betas=cfg.betas, eps=cfg.eps)
    mb = cfg.r1_every / (cfg.r1_every + 1) if (cfg.r1_every > 0 and cfg.r1_gamma > 0) else 1.0
    lr_C = cfg.lr_C if cfg.lr_C is not None else cfg.lr_stylegan
    lr_critic = cfg.lr_critic if cfg.lr_critic is not None else cfg.lr_other
    opt_C = torch.optim.Adam(C.parameters(), lr=lr_C * mb, betas=tuple(b**mb for b in cfg.betas), eps=cfg.eps)
    opt_critic = torch.optim.Adam(critic.parameters(), lr=lr_critic, betas=cfg.betas, eps=cfg.eps)
    return opt_G, opt_C, opt_critic


def _apply_freezing(model: DRDPGAN, cfg: DRDPGANTrainConfig) -> None:
    if cfg.freeze_generator_mapping:
        model.generator.mapping.requires_grad_(False)
    if cfg.freeze_code_mapping:
        model.binary_code.requires_grad_(False)


def _set_train_mode(model: DRDPGAN, cfg: DRDPGANTrainConfig) -> None:
    model.train()
    if cfg.freeze_code_mapping:
        model.binary_code.eval()  # a fixed, pretrained Eq. 2-4: no dropout


def _frozen_fingerprint(model: DRDPGAN) -> str:
    """SHA-256 of the frozen identity encoder and 3D prior (parameters and buffers)."""
    h = hashlib.sha256()
    for prefix in ("identity_encoder.", "prior3d."):
        for k, v in model.state_dict().items():
            if k.startswith(prefix):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _configs(model: DRDPGAN, C: nn.Module, cfg: DRDPGANTrainConfig) -> dict[str, Any]:
    return {"train": cfg.to_dict(), "model": json.loads(json.dumps(asdict(model.cfg))),
            "generator": model.generator.cfg.to_dict(), "discriminator": C.cfg.to_dict(),
            "frozen": _frozen_fingerprint(model)}


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The fields whose values differ between a checkpoint's configs and this call's. A training field the
    checkpoint does not know (added to :class:`DRDPGANTrainConfig` after the run started) counts at its
    default, which is the behaviour the run was trained with (every new option's default is the old one)."""
    diff = []
    for part in sorted(set(old) | set(new)):
        a, b = old.get(part), new.get(part)
        if part == "train":
            defaults = DRDPGANTrainConfig().to_dict()
            a = {k: v for k, v in {**defaults, **(a or {})}.items() if k not in DRDPGANTrainConfig.VOLATILE}
            b = {k: v for k, v in {**defaults, **(b or {})}.items() if k not in DRDPGANTrainConfig.VOLATILE}
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            diff += [f"{part}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diff.append(part if part != "frozen" else "frozen identity encoder / 3D prior weights")
    return diff


def _rng_record() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


# --------------------------------------------------------------------------- one step


def _autocast(cfg: DRDPGANTrainConfig, x: torch.Tensor, enabled: bool = True):
    bf16 = resolve_precision(cfg.precision, x.device) == "bf16"
    return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled and bf16)


def joint_lr_factor(cfg: DRDPGANTrainConfig, step: int) -> float:
    """The generator side's learning-rate factor at ``step``: the ramp, ``(k + 1) / joint_lr_ramp_steps`` at the
    ``k``-th step after the hiding warm-up while ``k < joint_lr_ramp_steps`` (else 1), times the decay, a half
    cosine from 1 at ``lr_decay_from`` to ``lr_decay_final`` over ``lr_decay_steps`` steps (1 before it or when
    ``lr_decay_from`` is None)."""
    k = step - cfg.hiding_warmup_steps
    ramp = 1.0 if cfg.joint_lr_ramp_steps <= 0 or k < 0 else min(1.0, (k + 1) / cfg.joint_lr_ramp_steps)
    if cfg.lr_decay_from is None or step < cfg.lr_decay_from:
        return ramp
    t = min(1.0, (step - cfg.lr_decay_from) / max(cfg.lr_decay_steps, 1))
    return ramp * (cfg.lr_decay_final + (1.0 - cfg.lr_decay_final) * 0.5 * (1.0 + math.cos(math.pi * t)))


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def _train_step(model: DRDPGAN, C: nn.Module, critic: nn.Module, opts, x: torch.Tensor,
                cfg: DRDPGANTrainConfig, step: int, sigma: float, gamma: float,
                rows: slice | None = None) -> dict[str, float]:
    """One step on ``x``: the whole batch, or (under ``torchrun``) this process's ``rows`` of the global batch, with
    every gradient averaged over the processes before its optimiser steps (:mod:`drdpgan.distributed`)."""
    opt_G, opt_C, opt_critic = opts
    torch.manual_seed(step_seed(cfg.seed, step, 2))  # dropout of the binary code mapping (Eq. 2)

    # ---------------- generator side (drdpgan.objective)
    C.requires_grad_(False)
    critic.requires_grad_(False)
    with _autocast(cfg, x):
        o = generator_objective(model, C, critic, x, cfg, step, sigma, rows)
    opt_G.zero_grad(set_to_none=True)
    o["loss_G"].backward()
    ddp.average_gradients(_params(opt_G))
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(_params(opt_G), cfg.grad_clip)
    opt_G.step()  # at the rate train_drdpgan's schedule set for this step (joint_lr_factor)
    out = {"loss_G": o["loss_G"], **o["terms"], **diagnostics(o)}

    # ---------------- judges (on this step's images, detached; not during the hiding warm-up)
    if cfg.d_every > 0 and step % cfg.d_every == 0 and not o.get("warmup"):
        C.requires_grad_(True)
        critic.requires_grad_(True)
        do_r1 = cfg.r1_every > 0 and gamma > 0 and step % cfg.r1_every == 0
        reals = x.detach().requires_grad_(do_r1)
        with _autocast(cfg, x, enabled=not do_r1):  # R1's double backward in fp32, as the StyleGAN2 trainer
            j = judge_losses(C, critic, reals, o["x_anon"].detach().float(), o["x_rec"].detach().float(),
                             cfg.critic_on_rec)
        total_C = j["loss_C"]
        if do_r1:
            r1 = r1_penalty(j["c_real"], reals).mean()
            total_C = total_C + r1 * (gamma / 2) * cfg.r1_every
            out["r1"] = r1.detach()
        opt_C.zero_grad(set_to_none=True)
        total_C.backward()
        ddp.average_gradients(_params(opt_C))
        opt_C.step()
        opt_critic.zero_grad(set_to_none=True)
        j["loss_critic"].backward()
        ddp.average_gradients(_params(opt_critic))
        opt_critic.step()
        out.update({"loss_C": j["loss_C"], "C_real": j["c_real"].mean(), "C_anon": j["c_anon"].mean(),
                    "C_rec": j["c_rec"].mean(), "loss_critic": j["loss_critic"], "critic_real": j["s_real"].mean(),
                    "critic_anon": j["s_anon"].mean()})
    C.requires_grad_(True)
    critic.requires_grad_(True)
    return {k: float(v.detach()) for k, v in out.items()}


# --------------------------------------------------------------------------- training


def train_drdpgan(
    model: DRDPGAN,
    dataset,
    cfg: DRDPGANTrainConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
    discriminator: StyleGAN2Discriminator | None = None,
    evaluate: Callable[[DRDPGAN], Mapping[str, float]] | None = None,
    earlier: Sequence[DRDPGANTrainConfig] = (),
) -> dict[str, Any]:
    """Train ``model`` in place on ``dataset`` (items ``{"image": (3,R,R) in [-1,1], "identity", "index"}``).

    ``evaluate(model) -> {name: number}``: measured every ``cfg.eval_every`` steps into ``metrics.csv``.

    Under ``torchrun`` (:mod:`drdpgan.distributed`) every process runs this with the same arguments: each takes its
    rows of the configured global batch, gradients are averaged, and rank 0 alone logs, evaluates and writes
    checkpoints; the result is the single-process run's up to the batch statistics of E_P's BatchNorm and C's
    minibatch standard deviation (tested).

    ``discriminator``: an optional (e.g. pretrained StyleGAN2) ``C`` to start from; by default a
    fresh :class:`StyleGAN2Discriminator` of the generator's config, seeded by ``cfg.seed``. The
    critic is always fresh. Resumes from the latest checkpoint in ``out_dir/checkpoints``
    (``ValueError`` naming the file if the configs or the frozen networks differ, apart from
    ``DRDPGANTrainConfig.VOLATILE`` fields). Leaves ``model`` in eval mode.

    ``earlier``: the configs of the phases of a recipe before this one (each with ``steps`` its last step). A
    checkpoint saved under one of them at its last step starts this phase: the networks, optimisers and data order
    go on from there under ``cfg``.

    Returns ``{"step", "steps", "stopped_early", "sec_per_step", "steps_per_sec", "out_dir",
    "last": {term: value at the last step}, "final": {term: average over the last log interval}}``.
    """
    out = Path(out_dir)
    main = ddp.is_main()
    rows = ddp.shard_rows(cfg.batch_size) if ddp.world_size() > 1 else None  # this process's rows of each batch
    if main:
        checkpoint_dir(out).mkdir(parents=True, exist_ok=True)
    ddp.barrier()
    R = model.cfg.resolution
    dev = torch.device(cfg.device)
    _apply_freezing(model, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        C = discriminator if discriminator is not None else StyleGAN2Discriminator(model.generator.cfg)
        critic = SteganalysisCritic(cfg.critic_config(R))
    model.to(dev), C.to(dev), critic.to(dev)
    ddp.broadcast_parameters(model, C, critic)  # the replicas start equal whatever each process built
    if C.img_resolution != R:
        raise ValueError(f"discriminator is {C.img_resolution} px, the model {R} px")
    opts = build_optimizers(model, C, critic, cfg)
    opt_G, opt_C, opt_critic = opts
    sigma = cfg.noise_sigma if cfg.noise_sigma is not None else model.cfg.extractor_noise_sigma
    gamma = float(cfg.r1_gamma)
    configs = _configs(model, C, cfg)
    trained = {"model": model, "C": C, "critic": critic, "opt_G": opt_G, "opt_C": opt_C, "opt_critic": opt_critic}
    step, sums = 0, {}  # sums: the log interval's per-term [sum, count] (StepLoop.sums)

    ck_path = latest_checkpoint(out)
    if ck_path is not None:
        ck = torch.load(ck_path, map_location=dev, weights_only=False)
        diff = _config_diff(ck["configs"], configs)
        phase = next((p for p in earlier if int(ck["step"]) == p.steps
                      and not _config_diff(ck["configs"], _configs(model, C, p))), None)
        if diff and phase is None:
            raise ValueError(f"cannot resume from {ck_path}: the configuration differs in {diff}; "
                             f"use a new out_dir or the original configuration")
        configured = [[{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] for o in opts]
        load_states(ck, trained)
        for o, groups in zip(opts, configured):  # this call's rates and betas, not the checkpoint's (a new phase)
            for g, c in zip(o.param_groups, groups):
                g.pop("base_lr", None)  # older checkpoints' record of the configured rate
                g.update(c)
        step, sums = int(ck["step"]), ck.get("log_acc", {})
        if main:
            rewrite_csv_upto(out / "losses.csv", step)
            rewrite_csv_upto(out / "metrics.csv", step)
    if cfg.fake_band is not None:  # after the resume checks: the configs above are the model as built
        model.set_fake_band(*cfg.fake_band)
    ddp.barrier()
    log = CSVLog(out / "losses.csv", ["step", "images"] + LOSS_COLUMNS + ["sec_per_step", "time"]) if main else None
    loop = StepLoop("drdpgan", cfg.steps, step, progress=progress and main, sums=sums, postfix=lambda last: {
        "G": f"{last['loss_G']:.3f}", "info": f"{last['ano_info']:.3f}", "bits": f"{last['bit_acc']:.3f}",
        **{short: f"{last.get(term, float('nan')):.3f}" for short, term in
           (("id_a", "ano_id"), ("id_r", "rec_id"), ("C", "loss_C"), ("crit", "loss_critic"))}})
    saved_at = [-1]

    def save_checkpoint(step: int) -> Path | None:
        """Rank 0 writes (every replica holds the same state); the others wait for it."""
        path = None
        if main:
            state = {
                **states_of(trained), "step": step, "data": {"sampler_seed": cfg.seed, "position": step * cfg.batch_size},
                "configs": configs, "log_acc": loop.sums, "rng": _rng_record(),
            }
            path = save_rotating(state, out, step, cfg.keep_checkpoints)
        ddp.barrier()
        saved_at[0] = step
        return path

    def log_row(step: int) -> None:
        means, sec_per_step = loop.take_interval()
        final.clear()
        final.update(means)
        if main:
            log.write({"step": step, "images": step * cfg.batch_size, **means, "sec_per_step": sec_per_step,
                       "time": time.time()})

    def run_evaluation(step: int) -> None:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            m = {k: float(v) for k, v in evaluate(model).items()}
        _set_train_mode(model, cfg)
        CSVLog(out / "metrics.csv", ["step", "images", *m, "time"]).write({"step": step, "images": step * cfg.batch_size, **m, "time": time.time()})

    sampler = iter(EpochSampler(len(dataset), cfg.seed, start=step * cfg.batch_size))

    schedule = step_schedule(opt_G, lambda s: joint_lr_factor(cfg, s), step)  # the judges keep their rates

    def step_fn(step: int) -> dict[str, float]:
        idx = [next(sampler) for _ in range(cfg.batch_size)]  # the global batch
        idx = idx if rows is None else idx[rows]
        x = torch.stack([dataset[i]["image"] for i in idx]).float().to(dev)  # (B, 3, R, R)
        if step == cfg.critic_restart_step:  # a fresh critic (cfg.critic_restart_step), the same on every process
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed + step)
                critic.load_state_dict(SteganalysisCritic(cfg.critic_config(R)).state_dict())
            opt_critic.state.clear()
        scalars = ddp.average_scalars(_train_step(model, C, critic, opts, x, cfg, step, sigma, gamma, rows))
        schedule.step()
        return scalars

    def stop(step: int) -> str | None:
        if cfg.stop_after is not None and loop.steps_run >= cfg.stop_after:
            return "stop_after"
        if cfg.max_seconds is not None and time.perf_counter() - t0 >= cfg.max_seconds:
            return "max_seconds"
        return None

    final: dict[str, float] = {}
    t0 = time.perf_counter()
    _set_train_mode(model, cfg)
    C.train()
    critic.train()
    try:
        with torch.random.fork_rng(devices=[]):
            stopped = loop.run(step_fn, [
                Every(cfg.log_every, log_row, final=True),
                Every(cfg.eval_every if evaluate is not None and main else 0, run_evaluation),
                Every(cfg.checkpoint_every, save_checkpoint, final=False),
            ], stop=stop) is not None
        if stopped and saved_at[0] != loop.step:
            save_checkpoint(loop.step)
    finally:
        model.eval()
    step, last = loop.step, loop.last

    elapsed, n_run = time.perf_counter() - t0, loop.steps_run
    result: dict[str, Any] = {"step": step, "steps": cfg.steps, "stopped_early": stopped,
                              "sec_per_step": elapsed / n_run if n_run else float("nan"),
                              "steps_per_sec": n_run / elapsed if n_run and elapsed > 0 else float("nan"),
                              "out_dir": str(out), "last": last, "final": final}
    if stopped:
        return result
    final_ckpt = checkpoint_dir(out) / f"ckpt_{step:07d}.pt"
    metrics_path = out / "final_metrics.json"
    if not final_ckpt.is_file() or n_run > 0:
        save_checkpoint(step)
        if main:
            atomic_write_json(metrics_path, {k: v for k, v in result.items() if k != "out_dir"})
            try:
                fig = plot_losses(out / "losses.csv")
                fig.savefig(out / "losses.png", dpi=100)
            except Exception as e:  # a plot must never lose a finished run
                print(f"[train_drdpgan] loss plot failed: {e}")
    elif metrics_path.is_file():
        prev = json.loads(metrics_path.read_text())
        result.update({k: prev[k] for k in ("last", "final", "sec_per_step", "steps_per_sec") if k in prev})
    return result


# --------------------------------------------------------------------------- plotting


def plot_losses(csv_path: str | os.PathLike):
    """``losses.csv`` -> a matplotlib ``Figure`` with five panels: Eq. 16 terms of the anonymization
    process, of the recovery process, the extra terms, the judges (C, critic), and diagnostics
    (E_P bit accuracy, identity cosines)."""
    import pandas as pd
    from matplotlib.figure import Figure

    df = pd.read_csv(csv_path)
    panels = [
        ("anonymization (Eq. 9-11, 15)", ["ano_adv", "ano_dic", "ano_id", "ano_info"]),
        ("recovery (Eq. 9, 10, 12)", ["rec_adv", "rec_dic", "rec_id"]),
        ("extra terms", ["code", "rec_pixel", "anon_pixel", "hide_footprint", "attr", "anon_background",
                         "rec_background", "rec_perceptual", "rec_face", "rec_detail"]),
        ("judges", ["loss_C", "loss_critic", "r1"]),
        ("diagnostics", ["bit_acc", "cos_anon_real", "cos_anon_fake", "cos_rec_real", "cos_decoded_real"]),
    ]
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, cols) in zip(axes, panels):
        for c in cols:
            if c in df and df[c].notna().any():
                ax.plot(df["step"], df[c], label=c, lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- timing


def step_harness(model: DRDPGAN, batch_size: int = 8, cfg: DRDPGANTrainConfig | None = None, seed: int = 0):
    """``(copy of model in train mode, fresh C, fresh critic, optimisers, random images (B, 3, R, R), cfg)``: what
    one :func:`_train_step` needs, for timing and counting (:func:`time_training_step`,
    :func:`drdpgan.bench.training_step_flops`); seeds the global RNG with ``seed`` (call inside ``fork_rng``)."""
    import copy

    m = copy.deepcopy(model)
    cfg = cfg or DRDPGANTrainConfig(batch_size=batch_size)
    _apply_freezing(m, cfg)
    torch.manual_seed(seed)
    C = StyleGAN2Discriminator(m.generator.cfg)
    critic = SteganalysisCritic(cfg.critic_config(m.cfg.resolution))
    opts = build_optimizers(m, C, critic, cfg)
    R = m.cfg.resolution
    x = torch.rand(batch_size, 3, R, R, generator=make_generator(seed)) * 2 - 1
    _set_train_mode(m, cfg)
    return m, C, critic, opts, x, cfg


def time_training_step(model: DRDPGAN, batch_size: int = 8, n_steps: int = 3, warmup: int = 1,
                       cfg: DRDPGANTrainConfig | None = None, seed: int = 0, cpu_time: bool = False):
    """Median seconds per training step (generator + C + critic updates) on random images.

    With ``cpu_time=True`` returns ``(wall, cpu)``: the median process CPU seconds per step too,
    which on a contended machine with one torch thread approximates the uncontended wall time.

    Works on a deep copy of ``model``; nothing is written. Includes every R1-free step cost
    (the lazy R1 adds its share once per ``r1_every`` steps; step 0 is an R1 step and is the
    warm-up one).
    """
    with torch.random.fork_rng(devices=[]):
        m, C, critic, opts, x, cfg = step_harness(model, batch_size, cfg, seed)
        times, cpu = [], []
        for s in range(warmup + n_steps):
            t, c = time.perf_counter(), time.process_time()
            _train_step(m, C, critic, opts, x, cfg, s, m.cfg.extractor_noise_sigma, float(cfg.r1_gamma))
            if s >= warmup:
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
    return (float(np.median(times)), float(np.median(cpu))) if cpu_time else float(np.median(times))
