"""E_MLP started from an inversion of the pretrained generator's own faces (a departure; Eq. 5's mapper).

The paper trains E_MLP (Eq. 5) jointly from scratch, its output starting at StyleGAN2's mean latent: every
anonymized face begins as the average face, and the identity losses (Eq. 11-12) must teach the mapper
what an identity looks like in W+ while the generator, E_G and E_Ste are free to satisfy them by other
means. On this CPU they did (README, runs 6-7): the anonymized images kept the input's face and changed
only texture the frozen identity encoder reads (L1 weight 1.0), or became textures that fool it (0.1).

This stage gives the mapper the way in first. The pretrained generator's own samples are faces whose
latent is known: ``w = mapping(z)``, ``x = G(w)``. Their identity ``F_id = E(x)`` and 3D prior
``(F_emo, F_pos)`` are what the mapper receives in training (Eq. 1), so a regression

    E_MLP(Concat(E(G(w)), F_emo(G(w)), F_pos(G(w))))  ->  w     (each level's code, Eq. 5)

teaches it to render an identity and a pose before the joint objective starts: an identity it is shown
(recovery, t = 0) comes back as that face, and a fake identity (anonymization, t = 1) as a new one.
:func:`init_mapper` reports how well: on held-out samples, the W-space R^2 and the identity cosine
``cos(E(G(E_MLP(...))), F_id)`` of the re-rendered faces, beside the mean latent's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .models.latent_mapper import concat_features
from .repro import make_generator
from .runlog import DictConfig

__all__ = ["MapperInitConfig", "generator_bank", "init_mapper"]


@dataclass
class MapperInitConfig(DictConfig):
    """``n_samples`` generator faces (the last ``n_heldout`` held out), ``truncation_psi`` of their latents,
    ``steps`` Adam steps of ``batch_size`` at ``lr`` on the mapper alone; ``seed`` fixes the latents."""

    n_samples: int = 8192
    n_heldout: int = 512
    truncation_psi: float = 1.0
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    eval_every: int = 500


@torch.no_grad()
def generator_bank(model, n: int, seed: int, psi: float = 1.0, batch_size: int = 64,
                   progress: bool = False) -> dict[str, torch.Tensor]:
    """``n`` samples of the model's generator: ``w`` (n, w_dim) their latent, ``f_concat`` (n, in_dim) Eq. 1's
    input for them (identity from the frozen encoder, expression and pose from the frozen 3D prior, t = 0),
    ``f_id`` (n, D)."""
    from tqdm.auto import tqdm

    G = model.generator
    z_all = torch.randn(n, G.cfg.z_dim, generator=make_generator(seed))  # (n, z_dim), whatever the batching
    ws, fc, fid = [], [], []
    for s in tqdm(range(0, n, batch_size), disable=not progress, desc="generator faces"):
        z = z_all[s:s + batch_size]
        w = G.mapping(z, truncation_psi=psi)  # (b, num_ws, w_dim), the same w in every slot
        x = G.synthesis(w, noise_mode=model.cfg.noise_mode).clamp(-1, 1)
        f_id = model.identity(x)
        f_emo, f_pos = model.prior(x)
        ws.append(w[:, 0])
        fc.append(concat_features(f_id, None, f_emo, f_pos, t=0, use_prior=model.cfg.use_3d_prior))
        fid.append(f_id)
    return {"w": torch.cat(ws), "f_concat": torch.cat(fc), "f_id": torch.cat(fid)}


@torch.no_grad()
def _rendered_identity_cos(model, ws: torch.Tensor, f_id: torch.Tensor, batch_size: int = 64) -> float:
    """Mean ``cos(E(G(ws)), f_id)``; ``ws`` (N, num_ws, w_dim)."""
    out = []
    for s in range(0, len(ws), batch_size):
        x = model.generator.synthesis(ws[s:s + batch_size], noise_mode=model.cfg.noise_mode).clamp(-1, 1)
        out.append(F.cosine_similarity(model.identity(x), f_id[s:s + batch_size], dim=-1))
    return float(torch.cat(out).mean())


def init_mapper(model, cfg: MapperInitConfig, progress: bool = False) -> dict[str, Any]:
    """Fit ``model.mapper`` (in place) to invert generator samples; returns the history
    ``{"eval": [{"step", "train_mse", "heldout_r2", "heldout_id_cos"}], "mean_latent_id_cos", "random_pair_id_cos"}``.

    ``heldout_id_cos``: identity cosine of held-out faces re-rendered from the mapper's W+;
    ``mean_latent_id_cos``: the same for the untrained mapper's output (the mean latent, every face alike);
    ``random_pair_id_cos``: two different held-out generator faces (what "another person" scores)."""
    from tqdm.auto import tqdm

    if cfg.n_heldout >= cfg.n_samples:
        raise ValueError(f"n_heldout {cfg.n_heldout} leaves no training samples of {cfg.n_samples}")
    bank = generator_bank(model, cfg.n_samples, cfg.seed, cfg.truncation_psi, progress=progress)
    w_avg = model.generator.w_avg.detach()
    target = bank["w"] - w_avg  # (N, w_dim): every level's code is the same w
    n_train = cfg.n_samples - cfg.n_heldout
    f_tr, t_tr = bank["f_concat"][:n_train], target[:n_train]
    f_ho, t_ho, id_ho = bank["f_concat"][n_train:], target[n_train:], bank["f_id"][n_train:]
    mapper = model.mapper
    num_ws = mapper.num_ws

    def evaluate(step: int, train_mse: float) -> dict[str, float]:
        mapper.eval()
        with torch.no_grad():
            codes = mapper.level_codes(f_ho)  # (n, 3, w_dim)
            resid = (codes - t_ho[:, None]).square().sum() / (t_ho[:, None] - t_ho.mean(0)).square().sum().mul(3)
            ws = mapper(f_ho, w_avg)
        mapper.train()
        return {"step": step, "train_mse": train_mse, "heldout_r2": float(1 - resid),
                "heldout_id_cos": _rendered_identity_cos(model, ws, id_ho)}

    mean_cos = _rendered_identity_cos(model, w_avg.expand(len(id_ho), num_ws, -1), id_ho)
    random_cos = float(F.cosine_similarity(id_ho, id_ho.roll(1, 0), dim=-1).mean())
    opt = torch.optim.Adam(mapper.parameters(), lr=cfg.lr)
    gen = make_generator(cfg.seed + 1)
    hist: list[dict[str, float]] = []
    mapper.train()
    for step in tqdm(range(1, cfg.steps + 1), disable=not progress, desc="E_MLP inversion"):
        idx = torch.randint(n_train, (cfg.batch_size,), generator=gen)
        loss = (mapper.level_codes(f_tr[idx]) - t_tr[idx][:, None]).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            hist.append(evaluate(step, float(loss.detach())))
    mapper.eval()
    k = model.fake_identity.cfg.bank_size
    if k > 0:  # FakeIdentityConfig.bank_size: the fakes snap to identities of the generator's training faces here
        if k > n_train:
            raise ValueError(f"a fake identity bank of {k} needs as many training faces, the stage has {n_train}")
        model.fake_identity.set_bank(bank["f_id"][:k])
    return {"eval": hist, "mean_latent_id_cos": mean_cos, "random_pair_id_cos": random_cos,
            "config": cfg.to_dict()}
