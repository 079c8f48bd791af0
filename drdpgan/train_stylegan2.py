"""Train the CPU-sized StyleGAN2 (:mod:`drdpgan.models.stylegan2`) on a face dataset.

Follows StyleGAN2 (Karras et al., CVPR 2020) / ``stylegan2-ada-pytorch`` training:

* non-saturating logistic loss: ``L_G = softplus(-D(G(z)))`` (the form of DR-DPGAN's
  Eq. 9), ``L_D = softplus(D(G(z))) + softplus(-D(x))``;
* R1 penalty on reals, ``gamma/2 * ||grad_x D(x)||^2``, applied lazily every
  ``r1_every`` steps with gamma scaled by ``r1_every`` and D's Adam lr / betas adjusted by
  ``r1_every / (r1_every + 1)`` (StyleGAN2 Sec. 4 / App. B "lazy regularization");
* style mixing regularization (two z's, random crossover point, prob. 0.9);
* generator EMA with a half-life given in images (``ema_kimg`` of the official code, with
  its ``ema_rampup``), and the ``w_avg`` tracking used by truncation;
* Adam, betas (0, 0.99).

Options: ``precision="bf16"`` (autocast of synthesis and D), ``diffaugment`` (DiffAugment,
:mod:`drdpgan.augment`, on every image D sees: the known way to train a GAN on a few thousand
real faces), ``xflip`` (mirrored real images, the official trainers' ``--mirror``), ``init_state``
(start from another run's networks).

Not implemented (documented): path-length regularization (``pl_weight = 0``, as in the
official small/CIFAR configuration of StyleGAN2-ADA; it needs a double backward through G,
too slow here), adaptive augmentation probability (ADA).

Outputs in ``out_dir``: ``losses.csv`` (per ``log_every`` steps), ``metrics.csv`` (the
Frechet distance over training), ``samples/step_XXXXXXX.png`` (a fixed z set through the EMA
generator), ``checkpoints/ckpt_XXXXXXX.pt`` (atomic; resumed from automatically),
``final_metrics.json``.

Resume: the latest checkpoint in ``out_dir/checkpoints`` is loaded (networks, optimizers,
step / images seen, and the state of the one ``torch.Generator`` that draws latents,
style-mixing cut-offs and noise; the global RNG states are stored too, for the record). Data order is a seeded permutation per epoch
(:class:`EpochSampler`), so a resumed run continues the exact same batch sequence; a resumed
run ends bit-identical to an uninterrupted one with the same seed on the same machine and
thread count (tested in ``tests/test_stylegan2.py``, tolerance: exact equality).
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import distributed as ddp
from .augment import diff_augment, parse_policy
from .losses import adversarial_loss, discriminator_logistic_loss
from .models.discriminator import StyleGAN2Discriminator
from .models.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from .repro import atomic_write_bytes, atomic_write_json, batched, make_generator, resolve_precision, step_seed
from .loop import Every, StepLoop
from .runlog import (CSVLog, DictConfig, EpochSampler, checkpoint_dir, latest_checkpoint, load_states, rewrite_csv_upto,
                     save_rotating, states_of)

__all__ = [
    "TrainConfig",
    "train_stylegan2",
    "frechet_distance",
    "pixel_features",
    "r1_penalty",
    "save_image_grid",
]


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig(DictConfig):
    """Training hyper-parameters. Defaults follow StyleGAN2 where CPU-sensible.

    lr: Adam lr of both nets. StyleGAN2 uses 0.002-0.0025; we default to 0.001, which was
        the stable choice in our 32 px CPU sanity runs (0.0025 let D pull ahead after ~250 steps).
    r1_gamma: R1 weight (default 1.0, the StyleGAN2-ADA ``paper256`` value); None -> the
        StyleGAN2-ADA heuristic ``0.0002 * R^2 / batch_size``.
    ema_kimg: EMA half-life in thousands of images (official: 10; we default to 1 because
        CPU runs see few images); ``ema_rampup`` caps the half-life at ``rampup * images seen``.
    metric_every / metric_num: the Frechet distance (see :func:`frechet_distance`) between
        ``metric_num`` real and EMA-generated images is computed every ``metric_every``
        steps (0 = only at the end, negative = never).
    """

    steps: int = 1000
    batch_size: int = 16
    lr: float = 0.001
    g_lr: float | None = None  # None: lr
    d_lr: float | None = None  # None: lr
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    r1_gamma: float | None = 1.0
    r1_every: int = 16
    style_mixing_prob: float = 0.9
    ema_kimg: float = 1.0
    ema_rampup: float | None = 0.05
    seed: int = 0
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    metric_every: int = 500
    metric_num: int = 256
    num_samples: int = 16
    truncation_psi_samples: float = 1.0
    # "fp32" | "bf16": bf16 autocast of the synthesis network and D in the G and D steps (losses,
    # mapping network, optimizer and EMA stay fp32; the lazy-R1 steps run D in fp32 because R1
    # differentiates D's output with respect to its input). "fp32" is the reference setting; "auto", bf16
    # where the hardware has it (drdpgan.repro.resolve_precision).
    precision: str = "fp32"
    # "cpu" | "cuda" | ...: where G, D and the batches live. Every random number is still drawn on the
    # CPU from the trainer's generators, so the run's randomness does not depend on the device; exact
    # equality of a resumed run is tested on the CPU only.
    device: str = "cpu"
    # DiffAugment policy for every image D sees ("" = none; "color,translation,cutout" for few real
    # images, Zhao et al. 2020; drdpgan.augment)
    diffaugment: str = ""
    # the first that many steps train D alone against the initial G (G, its EMA and the latents' w_avg unchanged;
    # loss_G is then G's loss on the D step's fakes, logged, not stepped): a discriminator for a generator that
    # comes without one (the lfw pretraining starts from the shipped cpu generator). 0: both from the first step
    d_warmup_steps: int = 0
    # after the D warm-up, G's lr ramps linearly from 0 to its full value over that many steps (0: full at once). A
    # fresh Adam moves every parameter by about lr per step (its first steps are lr * sign(grad)), and a warmed D's
    # Adam scales its steps by gradients it met against a G that stood still: the first lfw transfer (d_warmup_steps
    # 500, no ramp) had G fool D within 10 steps (D's fake logit -4.5 -> +0.2) and D sat at chance after that
    g_rampup_steps: int = 0
    # mirror the real images: each real image of a batch is flipped left-right with probability 0.5 (the "--mirror"
    # of the official trainers, which doubles a small dataset; faces are near-symmetric). Drawn from the seed and the
    # step alone (:func:`xflip_rows`), so a resumed run flips the same images. False: the reals as they are
    xflip: bool = False

    def g_lr_scale(self, step: int) -> float:
        """The factor on G's lr at ``step`` (0 during the D warm-up, then the linear ramp, then 1)."""
        if step < self.d_warmup_steps:
            return 0.0
        if self.g_rampup_steps <= 0:
            return 1.0
        return min(1.0, (step - self.d_warmup_steps + 1) / self.g_rampup_steps)

    def gamma_for(self, resolution: int) -> float:
        if self.r1_gamma is not None:
            return float(self.r1_gamma)
        return 0.0002 * resolution**2 / self.batch_size


# --------------------------------------------------------------------------- losses


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """Per-sample ``||grad_x D(x)||^2`` (B,) on real images (Mescheder et al. 2018), >= 0.

    ``real_images`` must have ``requires_grad=True`` and ``real_logits = D(real_images)``.
    The loss term is ``gamma / 2 * r1_penalty(...).mean()``.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=create_graph)
    return grad.square().sum(dim=[1, 2, 3])


# --------------------------------------------------------------------------- quality metric


def frechet_distance(feats_a: np.ndarray | torch.Tensor, feats_b: np.ndarray | torch.Tensor,
                     eps: float = 1e-6, method: str = "eigh") -> float:
    """Frechet distance between Gaussian fits of two feature sets (N_a, D), (N_b, D).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (Dowson & Landau 1982), the
    formula of FID (Heusel et al. 2017) -- but this is **not Inception FID**: the number
    depends entirely on the features passed in (the package uses its own identity encoder,
    or :func:`pixel_features` by default) and is only comparable between runs that use the
    same feature function and sample counts.

    ``method="eigh"`` (default) gets ``Tr (S_a S_b)^{1/2}`` as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix ``S_a^{1/2} S_b S_a^{1/2}`` (same spectrum as
    ``S_a S_b``): two symmetric eigendecompositions, fast and stable. ``method="sqrtm"`` uses
    ``scipy.linalg.sqrtm`` of ``S_a S_b`` as in the reference FID code (``eps`` added to the
    diagonals when the product is singular). The two agree to numerical precision.
    """
    a = np.asarray(feats_a.detach().cpu() if isinstance(feats_a, torch.Tensor) else feats_a, dtype=np.float64)
    b = np.asarray(feats_b.detach().cpu() if isinstance(feats_b, torch.Tensor) else feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) feature arrays with equal D, got {a.shape} and {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    diff = mu1 - mu2
    if method == "eigh":
        lam, vec = np.linalg.eigh(s1)
        sq1 = (vec * np.sqrt(np.clip(lam, 0, None))) @ vec.T  # S_a^{1/2}
        m = sq1 @ s2 @ sq1
        tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    elif method == "sqrtm":
        from scipy import linalg

        covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
        tr_covmean = float(np.trace(covmean.real if np.iscomplexobj(covmean) else covmean))
    else:
        raise ValueError("method must be 'eigh' or 'sqrtm'")
    fd = diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return float(max(fd, 0.0))


def pixel_features(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Default offline features: images (N, C, H, W) -> area-downsampled to size x size, flattened (N, C*size^2).

    A crude but dependency-free stand-in used when no ``feature_fn`` is passed.
    """
    return F.adaptive_avg_pool2d(images.float(), size).flatten(1)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 4, padding: int = 2) -> Path:
    """Write images (N, C, H, W) in [-1, 1] as one PNG grid (atomically; like
    ``torchvision.utils.save_image`` without importing torchvision, which is slow to import)."""
    from PIL import Image

    from .data.datasets import float_to_uint8

    x = float_to_uint8(images.detach().float()).cpu()
    n, c, h, w = x.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = torch.zeros(c, nrows * (h + padding) + padding, ncol * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y0:y0 + h, x0:x0 + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- data


def _collate_images(batch: list[Mapping[str, Any]]) -> torch.Tensor:
    return torch.stack([b["image"] if isinstance(b, Mapping) else b[0] for b in batch])  # (B, 3, H, W)


# --------------------------------------------------------------------------- checkpoints / logs


def _rng_state() -> dict[str, Any]:
    """Global RNG states, saved for the record. Training never draws from them (all of its
    randomness comes from the explicit ``z_gen`` generator and the seeded :class:`EpochSampler`),
    so a resume restores ``z_gen`` only and leaves the caller's global RNG alone."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


# --------------------------------------------------------------------------- training


def _requires_grad(m: nn.Module, flag: bool) -> None:
    for p in m.parameters():
        p.requires_grad_(flag)


@torch.no_grad()
def _ema_update(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    for pe, p in zip(G_ema.parameters(), G.parameters()):
        pe.copy_(p.detach().lerp(pe, beta))
    for be, b in zip(G_ema.buffers(), G.buffers()):
        be.copy_(b)


def _gen_ws(G: StyleGAN2Generator, batch: int, z_gen: torch.Generator, mixing_prob: float,
            update_w_avg: bool, rows: slice | None = None) -> torch.Tensor:
    """Mapping with StyleGAN style-mixing regularization (all random numbers from ``z_gen``). ``rows``: a
    data-parallel process's rows of the ``batch`` latents (every process maps the whole batch, so the tracked
    ``w_avg`` follows the global batch as in one process)."""
    dev = next(G.parameters()).device
    z = torch.randn(batch, G.z_dim, generator=z_gen).to(dev)
    ws = G.mapping(z, update_w_avg=update_w_avg)  # (B, num_ws, w_dim)
    if mixing_prob > 0:
        u = torch.rand((), generator=z_gen).item()
        cutoff = int(torch.randint(1, ws.shape[1], (), generator=z_gen).item())
        z2 = torch.randn(batch, G.z_dim, generator=z_gen).to(dev)
        if u < mixing_prob:
            ws = ws.clone()
            ws[:, cutoff:] = G.mapping(z2)[:, cutoff:]
    return ws if rows is None else ws[rows]


def _generate(G: StyleGAN2Generator, z: torch.Tensor, batch: int = 32, psi: float = 1.0) -> torch.Tensor:
    return batched(lambda zz: G(zz, truncation_psi=psi, noise_mode="const"), z, batch_size=batch)


def _features(feature_fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int = 64) -> np.ndarray:
    return batched(lambda x: torch.as_tensor(feature_fn(x)).float().cpu().reshape(len(x), -1), images,
                   batch_size=batch).numpy()


def _gan_step(nets: Mapping[str, Any], reals: torch.Tensor, tcfg: TrainConfig, step: int, gamma: float,
              z_gen: torch.Generator, rows: slice | None, augment: Callable, autocast: Callable
              ) -> tuple[dict[str, float], float | None]:
    """One StyleGAN2 update of ``nets`` (``G``, ``D``, ``opt_G``, ``opt_D``) on this process's ``reals``
    (B', 3, R, R): G's non-saturating loss (Eq. 9), then D's logistic loss with the lazy R1 penalty every
    ``r1_every`` steps (D alone during ``tcfg.d_warmup_steps``). Returns the scalars averaged over processes and the
    R1 value (None on steps without)."""
    G, D, opt_G, opt_D = nets["G"], nets["D"], nets["opt_G"], nets["opt_D"]
    B = tcfg.batch_size  # the global batch; every draw is sharded to this process's rows
    train_G = step >= tcfg.d_warmup_steps

    # -- G: non-saturating loss
    if train_G:
        _requires_grad(G, True)
        _requires_grad(D, False)
        ws = _gen_ws(G, B, z_gen, tcfg.style_mixing_prob, update_w_avg=True, rows=rows)
        with autocast(), ddp.sharded_draws(B, rows):
            fake_logits = D(augment(G.synthesis(ws, noise_mode="random", generator=z_gen)))
        loss_G = adversarial_loss(fake_logits.float())  # non-saturating, DR-DPGAN Eq. 9
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        ddp.average_gradients(G.parameters())
        g_lr = tcfg.g_lr if tcfg.g_lr is not None else tcfg.lr
        for group in opt_G.param_groups:  # TrainConfig.g_rampup_steps
            group["lr"] = g_lr * tcfg.g_lr_scale(step)
        opt_G.step()

    # -- D: logistic loss (+ lazy R1 on reals)
    _requires_grad(G, False)
    _requires_grad(D, True)
    with torch.no_grad():
        ws = _gen_ws(G, B, z_gen, tcfg.style_mixing_prob, update_w_avg=False, rows=rows)
        with autocast(), ddp.sharded_draws(B, rows):
            fake = G.synthesis(ws, noise_mode="random", generator=z_gen).float()
    do_r1 = tcfg.r1_every > 0 and gamma > 0 and step % tcfg.r1_every == 0
    reals_in = reals.detach().requires_grad_(do_r1)
    with autocast(enabled=not do_r1), ddp.sharded_draws(B, rows):
        real_logits = D(augment(reals_in)).float()
        fake_logits = D(augment(fake)).float()
    loss_D = discriminator_logistic_loss(real_logits, fake_logits)
    if not train_G:  # D's warm-up: G's loss on these fakes, for the log
        loss_G = adversarial_loss(fake_logits.detach())
    total_D = loss_D
    r1_val = None
    if do_r1:
        r1 = r1_penalty(real_logits, reals_in).mean()
        total_D = total_D + r1 * (gamma / 2) * tcfg.r1_every
        r1_val = ddp.average_scalars({"r1": float(r1.detach())})["r1"]
    opt_D.zero_grad(set_to_none=True)
    total_D.backward()
    ddp.average_gradients(D.parameters())
    opt_D.step()
    return ddp.average_scalars({"loss_G": float(loss_G.detach()), "loss_D": float(loss_D.detach()),
                                "D_real": float(real_logits.detach().mean()),
                                "D_fake": float(fake_logits.detach().mean())}), r1_val


def xflip_rows(x: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """``x`` (B, C, H, W) with each row flipped left-right with probability 0.5 (``TrainConfig.xflip``); which rows
    is a function of ``(seed, step)`` alone (:func:`~drdpgan.repro.step_seed`, stream 5): a resumed run draws the
    same."""
    flip = torch.rand(x.shape[0], generator=make_generator(step_seed(seed, step, 5))) < 0.5
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)


def train_stylegan2(
    dataset: Dataset,
    gcfg: StyleGAN2Config,
    tcfg: TrainConfig,
    out_dir: str | os.PathLike,
    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    init_state: Mapping[str, Any] | None = None,
) -> tuple[StyleGAN2Generator, dict[str, Any]]:
    """Train StyleGAN2 on ``dataset`` (items ``{"image": (3,R,R) in [-1,1], ...}``).

    Resumes from the latest checkpoint in ``out_dir`` when present (configs must match,
    except ``steps`` and the logging/saving intervals). ``feature_fn(images (N,3,R,R) in
    [-1,1]) -> (N, D)`` supplies features for the Frechet distance tracked over training
    (NOT Inception FID; default :func:`pixel_features`). Returns ``(G_ema in eval mode,
    final metrics dict)``. ``init_state`` (``{"G", "G_ema", "D"}`` state dicts, e.g. a checkpoint of
    another run; without ``"D"`` a fresh D, for ``tcfg.d_warmup_steps``) is the starting point of a new run; a resume
    ignores it.

    Under ``torchrun`` (:mod:`drdpgan.distributed`) every process runs this with the same arguments: each takes its
    rows of the global batch and of every per-sample draw (latents, style mixing, noise inputs, DiffAugment),
    gradients are averaged, and rank 0 alone writes; the losses equal one process's up to D's minibatch standard
    deviation over the shard (tested).
    """
    out = Path(out_dir)
    main = ddp.is_main()  # under torchrun (drdpgan.distributed) rank 0 alone writes
    rows = ddp.shard_rows(tcfg.batch_size) if ddp.world_size() > 1 else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        checkpoint_dir(out).mkdir(exist_ok=True)
    ddp.barrier()
    feat_fn = feature_fn if feature_fn is not None else pixel_features
    feat_name = getattr(feature_fn, "__name__", type(feature_fn).__name__) if feature_fn is not None else "pixel8"

    bf16 = resolve_precision(tcfg.precision, tcfg.device) == "bf16"

    aug_policy = parse_policy(tcfg.diffaugment)

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, aug_policy, z_gen) if aug_policy else x

    dev = torch.device(tcfg.device)

    def autocast(enabled: bool = True):
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=enabled and bf16)

    # ---- build everything from the seed; the caller's global RNG is left untouched (fork_rng)
    # and training itself draws only from explicit generators.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tcfg.seed)
        G = StyleGAN2Generator(gcfg)
        D = StyleGAN2Discriminator(gcfg)
    G, D = G.to(dev), D.to(dev)
    G_ema = copy.deepcopy(G).eval()
    _requires_grad(G_ema, False)
    g_lr = tcfg.g_lr if tcfg.g_lr is not None else tcfg.lr
    d_lr = tcfg.d_lr if tcfg.d_lr is not None else tcfg.lr
    mb = tcfg.r1_every / (tcfg.r1_every + 1) if tcfg.r1_every > 0 else 1.0
    opt_G = torch.optim.Adam(G.parameters(), lr=g_lr, betas=tcfg.betas, eps=tcfg.eps)
    opt_D = torch.optim.Adam(D.parameters(), lr=d_lr * mb, betas=tuple(b**mb for b in tcfg.betas), eps=tcfg.eps)
    trained = {"G": G, "G_ema": G_ema, "D": D, "opt_G": opt_G, "opt_D": opt_D}  # what a checkpoint holds
    z_gen = make_generator(tcfg.seed + 1)  # latents, style mixing, noise
    fixed_z = torch.randn(tcfg.num_samples, gcfg.z_dim, generator=make_generator(tcfg.seed + 2))
    metric_z = torch.randn(tcfg.metric_num, gcfg.z_dim, generator=make_generator(tcfg.seed + 3))
    gamma = tcfg.gamma_for(gcfg.resolution)
    step, cur_nimg = 0, 0

    if init_state is not None:  # fine-tuning start (e.g. real faces from the synthetic generator)
        G.load_state_dict(init_state["G"])
        G_ema.load_state_dict(init_state["G_ema"])
        if "D" in init_state:  # else D starts fresh (see TrainConfig.d_warmup_steps)
            D.load_state_dict(init_state["D"])

    # ---- resume
    ck_path = latest_checkpoint(out)
    if ck_path is not None:
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)
        if StyleGAN2Config.from_dict(ck["gcfg"]) != gcfg:
            raise ValueError(f"{ck_path}: generator config differs from the requested one")
        old = TrainConfig.from_dict(ck["tcfg"])
        volatile = {"steps", "log_every", "sample_every", "checkpoint_every", "keep_checkpoints",
                    "metric_every", "device"}
        diff = [k for k in old.to_dict() if k not in volatile and old.to_dict()[k] != tcfg.to_dict()[k]]
        if diff:
            raise ValueError(f"{ck_path}: training config differs in {diff}; use a new out_dir")
        load_states(ck, trained)
        z_gen.set_state(ck["z_gen"])
        step, cur_nimg = int(ck["step"]), int(ck["cur_nimg"])
        if main:
            for name in ("losses.csv", "metrics.csv"):
                rewrite_csv_upto(out / name, step)
    ddp.broadcast_parameters(G, G_ema, D)  # the replicas start equal whatever each process built
    ddp.barrier()
    if main:
        loss_log = CSVLog(out / "losses.csv", ["step", "kimg", "loss_G", "loss_D", "r1", "D_real", "D_fake",
                                                "sec_per_step", "time"])
        metric_log = CSVLog(out / "metrics.csv", ["step", "kimg", "frechet", "features", "num"])

    # ---- data: explicit seeded generator, num_workers=0, resumable order
    sampler = EpochSampler(len(dataset), tcfg.seed, start=cur_nimg)
    loader = DataLoader(dataset, batch_size=tcfg.batch_size, sampler=sampler, num_workers=0,
                        drop_last=True, collate_fn=_collate_images, generator=make_generator(tcfg.seed))
    batches = iter(loader)

    real_feats: np.ndarray | None = None

    def compute_metric(step: int) -> float:
        nonlocal real_feats
        if real_feats is None:
            idx = torch.randperm(len(dataset), generator=make_generator(tcfg.seed + 4))[:tcfg.metric_num]
            reals = torch.stack([dataset[int(i)]["image"] for i in idx])
            real_feats = _features(feat_fn, reals)
        fakes = _generate(G_ema, metric_z.to(dev))
        fd = frechet_distance(real_feats, _features(feat_fn, fakes))
        metric_log.write({"step": step, "kimg": cur_nimg / 1000, "frechet": fd, "features": feat_name,
                          "num": tcfg.metric_num})
        return fd

    def save_samples(step: int) -> None:
        imgs = _generate(G_ema, fixed_z.to(dev), psi=tcfg.truncation_psi_samples)
        nrow = max(1, int(math.sqrt(tcfg.num_samples)))
        save_image_grid(imgs, out / "samples" / f"step_{step:07d}.png", nrow=nrow)

    def save_checkpoint(step: int) -> None:
        if main:  # every replica holds the same state (and z_gen, drawn for the global batch on each)
            state = {
                **states_of(trained), "step": step, "cur_nimg": cur_nimg,
                "gcfg": gcfg.to_dict(), "tcfg": tcfg.to_dict(),
                "z_gen": z_gen.get_state(), "rng": _rng_state(),
            }
            save_rotating(state, out, step, tcfg.keep_checkpoints)
        ddp.barrier()

    if step == 0 and main:
        save_samples(step)

    last_fd: float | None = None
    r1_val = float("nan")  # the latest R1 value (computed every r1_every steps), logged with each row
    G.train()
    D.train()

    def step_fn(step: int) -> dict[str, float]:
        nonlocal cur_nimg, r1_val
        reals = next(batches)  # (B, 3, R, R), the global batch
        if tcfg.xflip:
            reals = xflip_rows(reals, tcfg.seed, step)
        scalars, r1 = _gan_step(trained, (reals if rows is None else reals[rows]).to(dev), tcfg, step, gamma, z_gen,
                                rows, augment, autocast)
        r1_val = r1_val if r1 is None else r1
        cur_nimg += tcfg.batch_size
        if step < tcfg.d_warmup_steps:  # G did not move
            return scalars
        ema_nimg = tcfg.ema_kimg * 1000
        if tcfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, cur_nimg * tcfg.ema_rampup)
        _ema_update(G_ema, G, 0.5 ** (tcfg.batch_size / max(ema_nimg, 1e-8)))
        return scalars

    def log_row(step: int) -> None:
        _, sec_per_step = loop.take_interval()
        loss_log.write({"step": step, "kimg": cur_nimg / 1000, **loop.last, "r1": r1_val,
                        "sec_per_step": sec_per_step, "time": time.time()})

    def metric_row(step: int) -> None:
        nonlocal last_fd
        last_fd = compute_metric(step)

    loop = StepLoop("stylegan2", tcfg.steps, step, progress=progress and main, postfix=lambda last: {
        "G": f"{last['loss_G']:.3f}", "D": f"{last['loss_D']:.3f}", "fd": "-" if last_fd is None else f"{last_fd:.3g}"})
    loop.run(step_fn, [
        Every(tcfg.log_every if main else 0, log_row, final=True),
        Every(tcfg.sample_every if main else 0, save_samples),
        Every(tcfg.metric_every if main else 0, metric_row, final=False),
        Every(tcfg.checkpoint_every, save_checkpoint, final=False),
    ])
    step, last = loop.step, loop.last

    # ---- final artifacts (also on a resume that had nothing left to do)
    final_ckpt = checkpoint_dir(out) / f"ckpt_{step:07d}.pt"
    ddp.barrier()  # every process looks before rank 0 writes it
    finished_before = final_ckpt.is_file()
    ddp.barrier()
    if not finished_before:
        if main:
            save_samples(step)
            if tcfg.metric_every >= 0:
                last_fd = compute_metric(step)
        save_checkpoint(step)
        metrics = {"step": step, "kimg": cur_nimg / 1000, "frechet": last_fd, "features": feat_name, **last}
        if main:
            atomic_write_json(out / "final_metrics.json", metrics)
    else:
        p = out / "final_metrics.json"
        metrics = json.loads(p.read_text()) if p.is_file() else {"step": step, "kimg": cur_nimg / 1000}
        G_ema.load_state_dict(torch.load(final_ckpt, map_location="cpu", weights_only=False)["G_ema"])
    G_ema = G_ema.cpu().eval()
    return G_ema, metrics
