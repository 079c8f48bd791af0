"""DR-DPGAN's objective, computed in one place (Eq. 9-16).

:func:`generator_objective` is the generator side of one training step: anonymize (t = 1) with the
step's fake-identity noise, read the bits back through the channel noise of Eq. 13, recover (t = 0)
teacher-forced with the true bits, and the loss terms

    anonymize:  adv (Eq. 9), dic (Eq. 10, G side), id (Eq. 11), info (Eq. 15)
    recover:    adv, dic, id (Eq. 12)
    extras:     code (1 - cos(decode(bits), F_id)), rec_pixel, anon_pixel, hide_footprint, attr,
                anon_background, rec_background, rec_perceptual, rec_face, rec_detail   (weights 0 = the paper)
    loss_G = Eq. 16 for each process + the weighted extras

:func:`judge_losses` is the judges' side: the StyleGAN2 discriminator C (logistic, anonymized and
recovered fakes averaged) and the steganalysis critic (Eq. 10). The trainer
(:func:`drdpgan.train_drdpgan.train_drdpgan`) minimises them; notebook 08's teaching breakdown
(:func:`drdpgan.demo.loss_breakdown`) evaluates the same functions without updating anything.

Randomness per step: the fake-identity noise and the Eq. 13 noise come from generators seeded by
:func:`step_seed` ``(run seed, step, stream)``; dropout (the binary code mapping, Eq. 2) draws from
the global RNG, which the caller seeds with stream 2; a keyed model's carrier bits (uniformly random,
as an AES-CTR ciphertext is to anyone without the key) come from stream 3.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .channel import distort
from .losses import (
    adversarial_loss,
    background_l1,
    discriminative_generator_loss,
    discriminative_loss,
    discriminator_logistic_loss,
    face_region_weight,
    high_pass,
    identity_loss_anonymize,
    identity_loss_recover,
    identity_view,
    perceptual_distance,
    region_l1,
    total_loss,
    warmup_l1_factor,
)
from .models.drdpgan import DRDPGAN
from .models.extractor import add_channel_noise, information_hiding_loss
from .repro import make_generator, step_seed  # step_seed: the training streams, documented there

__all__ = ["step_seed", "recover_teacher_forced", "generator_objective", "diagnostics", "judge_losses"]


def recover_teacher_forced(model: DRDPGAN, x_anon: torch.Tensor, bits: torch.Tensor,
                           carrier: torch.Tensor | None = None) -> dict:
    """``model.recover(x_anon, password=carrier, code=bits)`` without E_P's (unused) forward pass.

    Sec. 3.1 t = 0: ``F_id_hat = decoder(bits)``; ``F_emo, F_pos = prior(x_anon)``;
    ``x_rec = G(E_MLP(Concat(F_id_hat, F_emo, F_pos)); E_Ste(E_G(x_anon), carrier))``; ``carrier``
    defaults to ``bits`` (the paper's layout).
    """
    carrier = bits if carrier is None else carrier
    f_id_hat = model.decoder(bits)  # (B, identity_dim)
    f_emo, f_pos = model.prior(x_anon)
    out = model.synthesize(x_anon, f_id_hat, f_emo, f_pos, carrier, t=0)
    return {**out, "bits": bits, "carrier": carrier, "f_id_decoded": f_id_hat, "f_emo": f_emo, "f_pos": f_pos}


def random_carrier(model: DRDPGAN, batch: int, generator: torch.Generator) -> torch.Tensor | None:
    """A keyed model's training carrier: uniform random bits (B, hidden_bits), what a sealed payload looks
    like without the key; None for the paper's layout (the image carries the code itself)."""
    if not model.cfg.keyed:
        return None
    bits = torch.randint(0, 2, (batch, model.cfg.hidden_bits), generator=generator).float()
    return bits.to(next(model.parameters()).device)


def _rows_of_noise(x: torch.Tensor, n: int, rows: slice, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Eq. 13's eps for ``rows`` of a batch of ``n`` images shaped like ``x`` (:func:`add_channel_noise` of the
    whole batch, sliced); zero when ``sigma`` is 0."""
    if sigma <= 0:
        return torch.zeros_like(x)
    full = torch.zeros((n, *x.shape[1:]), dtype=x.dtype)
    return (add_channel_noise(full, sigma, generator)[rows]).to(x.device)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)  # (B,)


def generator_objective(model: DRDPGAN, C: nn.Module, critic: nn.Module, x: torch.Tensor, cfg, step: int,
                        sigma: float, rows: slice | None = None) -> dict[str, Any]:
    """The generator side of step ``step`` on the batch ``x`` (B, 3, R, R); ``cfg`` is a
    :class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig` (weights, extras' weights, seed).

    ``rows``: ``x`` is these rows of a global batch of ``cfg.batch_size`` (:func:`drdpgan.distributed.shard_rows`
    under ``torchrun``); the step's per-sample random draws are made for the whole global batch and sliced, so
    a shard sees exactly the noise a single process gives those rows.

    Returns tensors: ``loss_G``, ``terms`` (``ano_adv, ano_dic, ano_id, ano_info, rec_adv, rec_dic,
    rec_id, code, rec_pixel, anon_pixel``), ``eq16_ano`` / ``eq16_rec``, and the intermediate
    ``x_anon, x_rec, bits, logits_bits, f_id, f_fake, e_anon, e_rec, f_id_decoded``.
    """
    w = cfg.weights
    n = x.shape[0] if rows is None else cfg.batch_size  # the batch the draws are made for
    rows = slice(0, n) if rows is None else rows
    g_fake = make_generator(step_seed(cfg.seed, step, 0))  # Alg. 1 noise z
    g_noise = make_generator(step_seed(cfg.seed, step, 1))  # Eq. 13 eps
    carrier = random_carrier(model, n, make_generator(step_seed(cfg.seed, step, 3)))  # drawn on the CPU
    carrier = None if carrier is None else carrier[rows]
    z = model.fake_identity.sample_noise(n, g_fake)[rows].to(x.device)  # (B, d), as anonymize(generator=) draws it
    a = model.anonymize(x, z=z, carrier=carrier)
    x_anon = a["images"]  # (B, 3, R, R)
    f_id, f_fake, bits = a["f_id"], a["f_fake"], a["password"]  # (B, D), (B, D), (B, l)
    hidden = a["carrier"]  # (B, n): the bits in the image (= bits in the paper's layout)
    warm = cfg.hiding_warmup_steps
    if step >= warm:  # (before E_P, as always: the order of the backward passes fixes the float sums)
        e_anon = model.identity_encoder(x_anon)  # (B, D), frozen weights, grads to x_anon
    # Eq. 13-14, after one of the configured sharing distortions (drdpgan.channel; none in the paper)
    names = tuple(cfg.distortions) if step >= cfg.distortions_from else ()
    shared, _ = distort(x_anon, names, make_generator(step_seed(cfg.seed, step, 4)))
    logits_bits = model.extractor(shared + _rows_of_noise(shared, n, rows, sigma, g_noise))  # (B, l)
    if step < warm:
        # warm-up (StegaStamp): the hiding channel alone, Eq. 15, for the first half; then the anonymization L1
        # ramped in linearly to its weight (or at its weight throughout: hiding_warmup_l1_ramp False); no
        # recovery pass and no judges, about half a full step
        ramp = warmup_l1_factor(step, warm) if cfg.hiding_warmup_l1_ramp else 1.0
        terms = {"ano_info": information_hiding_loss(logits_bits, hidden), "anon_pixel": (x_anon - x).abs().mean()}
        w_l1 = cfg.w_anon_pixel if cfg.hiding_warmup_w_anon_pixel is None else cfg.hiding_warmup_w_anon_pixel
        return {"loss_G": w.info * terms["ano_info"] + ramp * w_l1 * terms["anon_pixel"], "terms": terms,
                "warmup": True, "x_anon": x_anon, "bits": bits, "carrier": hidden, "logits_bits": logits_bits,
                "f_id": f_id, "f_fake": f_fake}
    ano = {
        "adv": adversarial_loss(C(x_anon)),  # Eq. 9
        "dic": discriminative_generator_loss(critic(x_anon)),  # Eq. 10, G side
        "id": _anonymize_identity_loss(model, x_anon, e_anon, f_id, f_fake, cfg.anon_id_views),  # Eq. 11
        "info": information_hiding_loss(logits_bits, hidden),  # Eq. 15
    }
    # G2Face's teacher forcing also detaches the anonymized image: recovery's losses then train the recovery
    # path only, not the anonymizer (DRDPGANTrainConfig.recover_detached; False, gradients flow through x_anon, scaled
    # by recover_grad_scale)
    r = recover_teacher_forced(model, _scale_grad(x_anon, 0.0 if cfg.recover_detached else cfg.recover_grad_scale),
                               bits, hidden)
    x_rec = r["images"]  # (B, 3, R, R)
    e_rec = model.identity_encoder(x_rec)
    rec = {
        "adv": adversarial_loss(C(x_rec)),
        "dic": discriminative_generator_loss(critic(x_rec)),
        "id": identity_loss_recover(e_rec, f_id),  # Eq. 12
    }
    extras = {
        "code": (1 - _cos(r["f_id_decoded"], f_id)).mean(),
        "rec_pixel": (x_rec - x).abs().mean(),
        "anon_pixel": (x_anon - x).abs().mean(),
    }
    if cfg.w_hide_footprint > 0:  # |x_anon - cover|: the cover is the same pass without the password, a fixed target
        with torch.no_grad():
            cover = model.render(a["ws"], x, None, feats=a["feats"])["images"]
        extras["hide_footprint"] = (x_anon - cover).abs().mean()
    if max(cfg.w_anon_background, cfg.w_rec_background, cfg.w_rec_face, cfg.w_rec_detail) > 0:
        face = face_region_weight(x.shape[-1], tuple(cfg.face_region), device=x.device)  # (1, 1, R, R)
        if cfg.w_anon_background > 0:  # L1 outside the face ellipse: the background E_G should carry into x_anon
            extras["anon_background"] = background_l1(x_anon, x, face)
        if cfg.w_rec_background > 0:  # and from x_anon on into x_rec
            extras["rec_background"] = background_l1(x_rec, x, face)
        if cfg.w_rec_face > 0:  # L1 inside it: the recovered face's pixels ...
            extras["rec_face"] = region_l1(x_rec, x, face)
        if cfg.w_rec_detail > 0:  # ... and their fine detail
            extras["rec_detail"] = region_l1(high_pass(x_rec), high_pass(x), face)
    if cfg.w_rec_perceptual > 0:  # the frozen identity encoder's feature pyramid of x_rec against x's
        with torch.no_grad():
            target_maps = model.identity_encoder.feature_maps(x)
        extras["rec_perceptual"] = perceptual_distance(model.identity_encoder.feature_maps(x_rec), target_maps)
    if cfg.w_attr > 0:  # the frozen 3D prior's expression and pose of x_anon against x's, standardised units
        with torch.no_grad():
            target = model.prior3d.forward_standardized(x)  # (B, Ke + 3)
        extras["attr"] = (model.prior3d.forward_standardized(x_anon) - target).abs().mean()
    eq16_ano, eq16_rec = total_loss(ano, w), total_loss(rec, w)  # Eq. 16 per process
    loss_G = (eq16_ano + eq16_rec + cfg.w_code * extras["code"] + cfg.w_rec_pixel * extras["rec_pixel"]
              + cfg.w_anon_pixel * extras["anon_pixel"] + cfg.w_hide_footprint * extras.get("hide_footprint", 0.0)
              + cfg.w_attr * extras.get("attr", 0.0)
              + cfg.w_anon_background * extras.get("anon_background", 0.0)
              + cfg.w_rec_background * extras.get("rec_background", 0.0)
              + cfg.w_rec_perceptual * extras.get("rec_perceptual", 0.0)
              + cfg.w_rec_face * extras.get("rec_face", 0.0) + cfg.w_rec_detail * extras.get("rec_detail", 0.0))
    terms = {**{f"ano_{k}": v for k, v in ano.items()}, **{f"rec_{k}": v for k, v in rec.items()}, **extras}
    return {"loss_G": loss_G, "terms": terms, "eq16_ano": eq16_ano, "eq16_rec": eq16_rec, "x_anon": x_anon,
            "x_rec": x_rec, "bits": bits, "carrier": hidden, "logits_bits": logits_bits, "f_id": f_id, "f_fake": f_fake,
            "e_anon": e_anon, "e_rec": e_rec, "f_id_decoded": r["f_id_decoded"]}


def _anonymize_identity_loss(model: DRDPGAN, x_anon, e_anon, f_id, f_fake, views: tuple[str, ...]) -> torch.Tensor:
    """Eq. 11 on ``x_anon``, averaged with Eq. 11 on each of ``views`` of it (:func:`drdpgan.losses.identity_view`;
    none: the paper's), so that the change of identity survives what does not change a face to a person."""
    loss = identity_loss_anonymize(e_anon, f_id, f_fake)
    for name in views:
        loss = loss + identity_loss_anonymize(model.identity_encoder(identity_view(x_anon, name)), f_id, f_fake)
    return loss / (1 + len(views))


def _scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` in the forward pass; its gradient times ``scale`` in the backward pass (0: detached, 1: ``x`` itself)."""
    if scale == 1:
        return x
    if scale == 0:
        return x.detach()
    return x.detach() + scale * (x - x.detach())


@torch.no_grad()
def diagnostics(o: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Bit accuracy and identity cosines of a :func:`generator_objective` result."""
    f_id = o["f_id"]
    bit_acc = ((o["logits_bits"] >= 0).float() == o.get("carrier", o["bits"]).round()).float().mean()
    if o.get("warmup"):
        return {"bit_acc": bit_acc, "cos_fake_real": _cos(o["f_fake"], f_id).mean()}
    return {
        "bit_acc": bit_acc,
        "cos_anon_real": _cos(o["e_anon"], f_id).mean(), "cos_anon_fake": _cos(o["e_anon"], o["f_fake"]).mean(),
        "cos_rec_real": _cos(o["e_rec"], f_id).mean(), "cos_fake_real": _cos(o["f_fake"], f_id).mean(),
        "cos_decoded_real": _cos(o["f_id_decoded"], f_id).mean(),
    }


def judge_losses(C: nn.Module, critic: nn.Module, x_real: torch.Tensor, x_anon: torch.Tensor, x_rec: torch.Tensor,
                 critic_on_rec: bool = False) -> dict[str, torch.Tensor]:
    """The judges' losses on real, anonymized and recovered images (pass detached fakes to train them):
    ``loss_C`` = StyleGAN2 logistic loss of C, anonymized and recovered fakes averaged; ``loss_critic``
    = Eq. 10 (carrier -> 1, stego -> 0; also on recovered images when ``critic_on_rec``); with the
    raw outputs ``c_real, c_anon, c_rec`` (B, 1) logits and ``s_real, s_anon`` (B,) scores."""
    c_real, c_anon, c_rec = C(x_real), C(x_anon), C(x_rec)
    loss_C = 0.5 * (discriminator_logistic_loss(c_real, c_anon) + discriminator_logistic_loss(c_real, c_rec))
    s_real, s_anon = critic(x_real.detach()), critic(x_anon)
    loss_critic = discriminative_loss(s_real, s_anon)
    if critic_on_rec:
        loss_critic = 0.5 * (loss_critic + discriminative_loss(s_real, critic(x_rec)))
    return {"loss_C": loss_C, "c_real": c_real, "c_anon": c_anon, "c_rec": c_rec, "loss_critic": loss_critic,
            "s_real": s_real, "s_anon": s_anon}
