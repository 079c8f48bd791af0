"""Hiding the real identity as a password and reading it back (paper Sec. 3.4.1-3.4.2, Eq. 2-4, 13-15).

Two trainers, used by notebook 06:

* :func:`train_binary_code` -- the binary code mapping of Eq. 2 (three FC layers, dropout 0.5,
  sigmoid; :class:`~drdpgan.models.binary_code.BinaryCodeMapping`) and the way back from bits to a
  float identity (Sec. 3.4.2; :class:`~drdpgan.models.binary_code.BinaryCodeDecoder`), trained
  together on identity embeddings ``F_id``::

      F        = sigmoid(FC(drop(FC(drop(FC(F_id))))))          Eq. 2 (dropout only in training)
      B'_i     = q(F_i) = [F_i >= mean(F)]                       Eq. 3-4 (straight-through gradient)
      F_id_hat = decoder(B')                                     Sec. 3.4.2
      L_code   = w_cos * (1 - cos(F_id_hat, F_id)) + w_mse * D * MSE(F_id_hat, F_id)

  Both ``F_id_hat`` and ``F_id`` are unit vectors, so ``D * MSE = ||F_id_hat - F_id||^2 =
  2 (1 - cos)``: the two terms are the same loss up to a factor (and FMSE, Sec. 4.2, is
  ``2 (1 - cos) / D``). The paper states the conversion but no loss for it; ``1 - cos`` is the
  default, as in :mod:`drdpgan.train_drdpgan`.

* :func:`train_hiding` -- the password extractor ``E_P`` (Sec. 3.4.2,
  :class:`~drdpgan.models.extractor.PasswordExtractor`) trained under the information hiding loss::

      Y        = X_hide + eps,  eps ~ N(0, sigma^2)             Eq. 13
      Password = E_P(Y)                                          Eq. 14
      L_info   = CrossEntropy(Password, V)                       Eq. 15 (binary, on logits)

  with ``L = lambda_info * L_info + lambda_l1 * |X_hide - X|_1``. ``X_hide`` comes from the
  **stand-in carrier** :class:`~drdpgan.models.hiding_carrier.HidingCarrier` (a small additive
  embedding network trained jointly with E_P), not from the paper's E_Ste path through StyleGAN2
  (notebooks 07/09): it isolates what the code and E_P do. During training the password hidden in
  a face is that of a *random* training identity, independent of the face, so E_P can only succeed
  by reading the hidden signal -- never by recognising the face (checked: E_P on clean images
  scores chance). Evaluation hides each held-out face's own password, as DR-DPGAN does.

Determinism: every trainer takes a ``seed`` and draws everything (initialisation, dropout, batch
order, password pairing, the noise of Eq. 13) from it inside :func:`torch.random.fork_rng`, so
two runs with the same config give the same numbers and the caller's global RNG is untouched.
``num_threads`` (0: leave torch's setting) sets torch's CPU threads for the duration.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models.binary_code import (
    BinaryCodeConfig,
    BinaryCodeDecoder,
    BinaryCodeMapping,
    bit_error_rate,
    float_mse,
    mean_threshold_quantize,
)
from .models.extractor import ExtractorConfig, PasswordExtractor, add_channel_noise, information_hiding_loss
from .loop import Every, StepLoop
from .losses import warmup_l1_factor
from .models.hiding_carrier import HidingCarrier, HidingCarrierConfig
from .evaluate import psnr
from .repro import batched, make_generator

__all__ = [
    "CodeTrainConfig",
    "HidingTrainConfig",
    "train_binary_code",
    "code_report",
    "passwords",
    "train_hiding",
    "evaluate_hiding",
    "noise_robustness",
    "majority_guess_ber",
]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _seeded(seed: int, num_threads: int = 0) -> Iterator[None]:
    """Global torch RNG seeded with ``seed`` inside, restored afterwards; torch threads likewise."""
    old_threads = torch.get_num_threads()
    if int(num_threads or 0) > 0:
        torch.set_num_threads(int(num_threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            yield
    finally:
        torch.set_num_threads(old_threads)


def _step_loop(desc: str, batches: Iterator[torch.Tensor], steps: int, modules: tuple[nn.Module, ...],
               step_fn: Callable[[int, torch.Tensor], dict[str, float]], eval_every: int,
               eval_fn: Callable[[int], None] | None, progress: bool) -> None:
    """The hiding trainers' use of :class:`~drdpgan.loop.StepLoop`: for each index batch, ``modules`` in train mode
    and ``step_fn(step, idx)`` (one update, ``step`` counted from 1; returns its scalars), then ``eval_fn(step)``
    every ``eval_every`` steps and at the end; ``modules`` in eval mode afterwards."""
    def one_step(done: int) -> dict[str, float]:
        for m in modules:
            m.train()
        return step_fn(done + 1, next(batches))

    loop = StepLoop(desc, steps, progress=progress, postfix=lambda last: {k: f"{v:.3f}" for k, v in last.items()})
    loop.run(one_step, [] if eval_fn is None else [Every(eval_every, eval_fn, final=True)])
    for m in modules:
        m.eval()


def _update(opt: torch.optim.Optimizer, loss: torch.Tensor, desc: str, step: int) -> float:
    """One optimiser step on ``loss``; its value, refused when it is not finite."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"{desc}: loss became {value} at step {step}")
    return value


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` index batches drawn from seeded per-epoch permutations of ``range(n)``."""
    perm, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        yield perm[pos: pos + min(batch_size, n)]
        pos += batch_size


# --------------------------------------------------------------------------- Eq. 2-4: the binary code


@dataclass
class CodeTrainConfig:
    seed: int = 0
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3  # Sec. 4.1.2: "the other trainable parts" at 1e-3 (Adam)
    cos_weight: float = 1.0  # 1 - cos(F_id_hat, F_id)
    mse_weight: float = 0.0  # D * MSE(F_id_hat, F_id) (= 2 (1 - cos) for unit vectors)
    eval_every: int = 25
    num_threads: int = 0


def train_binary_code(
    f_train: torch.Tensor,
    bcfg: BinaryCodeConfig,
    tcfg: CodeTrainConfig,
    f_eval: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[BinaryCodeMapping, BinaryCodeDecoder, dict[str, Any]]:
    """Train the binary code mapping (Eq. 2-4) and its decoder (Sec. 3.4.2) on embeddings ``f_train`` (N, D).

    Training: dropout 0.5 on (``mapping.train()``), bits through the straight-through estimator of
    Eq. 4, Adam on ``L_code`` (module docstring). Every ``eval_every`` steps (and at the end) the
    pair is measured on ``f_eval`` with dropout off and hard bits: ``history["eval"]`` rows
    ``{"step", "cos", "fmse"}``. Returns ``(mapping, decoder, history)`` in eval mode.
    """
    f_train = F.normalize(f_train.detach().float(), dim=-1)
    f_eval = None if f_eval is None else F.normalize(f_eval.detach().float(), dim=-1)
    hist: dict[str, Any] = {"step_loss": [], "eval": []}
    t0 = time.perf_counter()
    with _seeded(tcfg.seed, tcfg.num_threads):
        mapping, decoder = BinaryCodeMapping(bcfg), BinaryCodeDecoder(bcfg)
        opt = torch.optim.Adam(list(mapping.parameters()) + list(decoder.parameters()), lr=tcfg.lr)
        gen = make_generator(tcfg.seed + 1)

        def step_fn(step: int, idx: torch.Tensor) -> dict[str, float]:
            f = f_train[idx]
            bits = mapping(f, straight_through=True)  # Eq. 2-4 with a straight-through gradient
            dec = decoder(bits)
            loss = (tcfg.cos_weight * (1 - (dec * f).sum(-1)).mean()
                    + tcfg.mse_weight * f.shape[-1] * F.mse_loss(dec, f))
            lv = _update(opt, loss, "binary code", step)
            hist["step_loss"].append(lv)
            return {"loss": lv}

        def eval_fn(step: int) -> None:
            r = code_report(mapping, decoder, f_eval)
            hist["eval"].append({"step": step, "cos": r["cos"], "fmse": r["fmse"]})

        _step_loop("binary code", _batches(len(f_train), tcfg.batch_size, tcfg.steps, gen), tcfg.steps,
                   (mapping, decoder), step_fn, tcfg.eval_every, None if f_eval is None else eval_fn, progress)
    hist["time_s"] = time.perf_counter() - t0
    return mapping, decoder, hist


@torch.no_grad()
def passwords(mapping: BinaryCodeMapping, f_id: torch.Tensor) -> torch.Tensor:
    """Eq. 2-4 at use time: dropout off, hard mean-threshold bits (N, l) in {0, 1}."""
    was = mapping.training
    mapping.eval()
    try:
        return mean_threshold_quantize(mapping.soft_code(F.normalize(f_id.float(), dim=-1)))
    finally:
        mapping.train(was)


@torch.no_grad()
def code_report(mapping: BinaryCodeMapping, decoder: BinaryCodeDecoder, f_id: torch.Tensor) -> dict[str, Any]:
    """What the code does on embeddings ``f_id`` (N, D), dropout off.

    ``soft`` (N, l): the sigmoid code F of Eq. 2; ``threshold`` (N,): its row mean F_bar (Eq. 3);
    ``bits`` (N, l): Eq. 4; ``ones_per_row`` (N,): fraction of ones in each password;
    ``ones_per_bit`` (l,): fraction of passwords with a 1 at each position (0.5 = a balanced,
    informative bit; 0 or 1 = a wasted bit); ``margin``: mean |F_i - F_bar| (how far values sit
    from the threshold: small margins flip under small changes); ``decoded`` (N, D) and its
    ``cos`` / ``fmse`` to ``f_id`` (Sec. 4.2) with the code's own bits (no channel).
    """
    f_id = F.normalize(f_id.float(), dim=-1)
    was_m, was_d = mapping.training, decoder.training
    mapping.eval(), decoder.eval()
    try:
        soft = mapping.soft_code(f_id)
        thr = soft.mean(-1)
        bits = mean_threshold_quantize(soft)
        dec = decoder(bits)
    finally:
        mapping.train(was_m), decoder.train(was_d)
    return {
        "soft": soft, "threshold": thr, "bits": bits,
        "ones_per_row": bits.mean(-1), "ones_per_bit": bits.mean(0),
        "margin": float((soft - thr[:, None]).abs().mean()),
        "decoded": dec, "cos": float((dec * f_id).sum(-1).mean()), "fmse": float_mse(dec, f_id),
    }


# --------------------------------------------------------------------------- Eq. 13-15: hiding and extracting


@dataclass
class HidingTrainConfig:
    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3  # Adam, both networks
    noise_sigma: float = 0.02  # sigma of eps in Eq. 13 (images in [-1, 1])
    lambda_info: float = 5.0  # Sec. 4.1.2's weight of L_info
    lambda_l1: float = 1.0  # keeps X_hide close to X
    # StegaStamp's warm-up: the first half of these steps train with L_info alone, the L1 weight then ramps
    # linearly from 0 to lambda_l1 over the second half (0: the L1 at its weight from the first step)
    info_warmup_steps: int = 0
    eval_every: int = 25
    num_threads: int = 0


def train_hiding(
    images: torch.Tensor,
    bits_pool: torch.Tensor,
    ccfg: HidingCarrierConfig,
    ecfg: ExtractorConfig,
    tcfg: HidingTrainConfig,
    eval_set: dict[str, torch.Tensor] | None = None,
    progress: bool = True,
) -> tuple[HidingCarrier, PasswordExtractor, dict[str, Any]]:
    """Train the stand-in carrier and E_P jointly under Eq. 13-15 plus an L1 term.

    ``images`` (N, 3, R, R) in [-1, 1]: the faces that carry passwords; ``bits_pool`` (M, l): the
    training passwords, each batch pairing its faces with passwords drawn at random from the pool
    (independent of the faces). ``eval_set``: ``{"images", "bits", "f_id", "decoder"}`` (held-out
    faces, their own passwords and identities, and the trained bits -> float decoder); every
    ``eval_every`` steps ``history["eval"]`` gets ``{"step", "ber", "fmse", "cos", "psnr"}`` on a
    clean channel (sigma = 0). Returns ``(carrier, extractor, history)`` in eval mode.
    """
    if ecfg.code_bits != ccfg.code_bits or bits_pool.shape[-1] != ccfg.code_bits:
        raise ValueError(f"code lengths differ: carrier {ccfg.code_bits}, extractor {ecfg.code_bits}, "
                         f"passwords {bits_pool.shape[-1]}")
    hist: dict[str, Any] = {"step_loss": [], "step_info": [], "step_l1": [], "step_ber": [], "eval": []}
    t0 = time.perf_counter()
    with _seeded(tcfg.seed, tcfg.num_threads):
        carrier, extractor = HidingCarrier(ccfg), PasswordExtractor(ecfg)
        opt = torch.optim.Adam(list(carrier.parameters()) + list(extractor.parameters()), lr=tcfg.lr)
        gen_batch, gen_pair, gen_noise = (make_generator(tcfg.seed + k) for k in (1, 2, 3))

        def step_fn(step: int, idx: torch.Tensor) -> dict[str, float]:
            x = images[idx]
            v = bits_pool[torch.randint(len(bits_pool), (len(idx),), generator=gen_pair)].float()
            x_hide = carrier(x, v)
            y = add_channel_noise(x_hide, tcfg.noise_sigma, gen_noise)  # Eq. 13
            logits = extractor(y)  # Eq. 14
            l_info = information_hiding_loss(logits, v)  # Eq. 15
            l_l1 = (x_hide - x).abs().mean()
            loss = tcfg.lambda_info * l_info + tcfg.lambda_l1 * warmup_l1_factor(step, tcfg.info_warmup_steps) * l_l1
            lv = _update(opt, loss, "hiding", step)
            hist["step_loss"].append(lv)
            hist["step_info"].append(float(l_info.detach()))
            hist["step_l1"].append(float(l_l1.detach()))
            hist["step_ber"].append(bit_error_rate(PasswordExtractor.bits(logits.detach()), v))
            return {"info": hist["step_info"][-1], "ber": hist["step_ber"][-1]}

        def eval_fn(step: int) -> None:
            r = evaluate_hiding(carrier, extractor, eval_set["decoder"], eval_set["images"], eval_set["bits"],
                                eval_set["f_id"])
            hist["eval"].append({"step": step, **{k: r[k] for k in ("ber", "fmse", "cos", "psnr")}})

        _step_loop("hiding", _batches(len(images), tcfg.batch_size, tcfg.steps, gen_batch), tcfg.steps,
                   (carrier, extractor), step_fn, tcfg.eval_every, None if eval_set is None else eval_fn, progress)
    hist["time_s"] = time.perf_counter() - t0
    return carrier, extractor, hist


@torch.no_grad()
def evaluate_hiding(
    carrier: HidingCarrier | None,
    extractor: PasswordExtractor,
    decoder: BinaryCodeDecoder,
    images: torch.Tensor,
    bits: torch.Tensor,
    f_id: torch.Tensor,
    sigma: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Hide ``bits`` in ``images`` (``carrier`` None: no hiding, the clean-image control), add
    Eq. 13's noise of std ``sigma`` (seeded), read the bits back with E_P and decode them.

    Returns ``ber`` (Sec. 4.2), ``fmse`` and ``cos`` of the decoded identity to ``f_id``,
    ``psnr`` / ``l1`` of the carrying image to the original (images in [0, 1] for PSNR), and the
    ``read`` bits. Networks are put in eval mode for the call and restored.
    """
    mods = [m for m in (carrier, extractor, decoder) if m is not None]
    modes = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        bits = bits.float()
        x_hide = images if carrier is None else batched(carrier, images, bits)
        y = add_channel_noise(x_hide, sigma, make_generator(seed))
        read = PasswordExtractor.bits(batched(extractor, y))
        dec = decoder(read)
    finally:
        for m, was in zip(mods, modes):
            m.train(was)
    f = F.normalize(f_id.float(), dim=-1)
    return {"ber": bit_error_rate(read, bits), "fmse": float_mse(dec, f), "cos": float((dec * f).sum(-1).mean()),
            "psnr": float(psnr(x_hide, images)), "l1": float((x_hide - images).abs().mean()), "read": read}


def noise_robustness(
    carrier: HidingCarrier,
    extractor: PasswordExtractor,
    decoder: BinaryCodeDecoder,
    images: torch.Tensor,
    bits: torch.Tensor,
    f_id: torch.Tensor,
    sigmas: Sequence[float],
    seed: int = 0,
) -> list[dict[str, float]]:
    """BER, FMSE and cosine at several test-time noise levels of Eq. 13 (one seeded draw each)."""
    rows = []
    for s in sigmas:
        r = evaluate_hiding(carrier, extractor, decoder, images, bits, f_id, sigma=float(s), seed=seed)
        rows.append({"sigma": float(s), "ber": r["ber"], "fmse": r["fmse"], "cos": r["cos"]})
    return rows


def majority_guess_ber(train_bits: torch.Tensor, eval_bits: torch.Tensor) -> float:
    """The BER of a reader that never looks at the image: it answers every position's most common
    training value. The honest "chance" level when bit positions are unbalanced (0.5 only when
    every position is a fair coin); a trained E_P on *clean* images should not beat it by much."""
    guess = (train_bits.float().mean(0) >= 0.5).float().expand_as(eval_bits)
    return bit_error_rate(guess, eval_bits.float())
