"""Small helpers for the teaching notebooks 07 (latent editing, E_Ste masks) and 08 (losses).

The notebooks explain parts of DR-DPGAN that only mean something once the model has moved a
little from its initialisation (e.g. E_Ste's masks start at exactly 0.5 everywhere, because the
mask convolution of Eq. 6 is zero-initialised). :func:`short_training` trains the profile's
DR-DPGAN for a few dozen steps with the package trainer (:func:`drdpgan.train_drdpgan.train_drdpgan`)
and caches the result under ``artifacts/<profile>/drdpgan-short-<hash>/``, so the two notebooks
share one run and a rerun only loads it. **A few dozen steps is barely trained**: the notebook
that trains DR-DPGAN properly is 09.

The rest are views of the model that the notebooks draw:

* :func:`untrained_model` (from :mod:`drdpgan.stages`): the model before training, seeded (what
  :func:`short_training` starts from);
* :func:`render_ws`: a generator pass with given W+ codes and E_Ste fusion (Eq. 6-8), for level edits;
* :func:`swap_level`: replace one level's codes (Eq. 5: coarse / middle / fine) and regenerate;
* :func:`mask_maps`: E_Ste masks ``M_i`` (Eq. 6) averaged over channels, one map per resolution;
* :func:`feature_shapes`: shapes of ``E_G(x, i)`` and ``F_out^i`` at every injection point;
* :func:`mask_figure`: those maps as pictures, one row per face;
* :func:`loss_breakdown` / :func:`loss_table`: every term of the trainer's objective (Eq. 9-16 and
  the package's extra terms) on one batch, without updating anything.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .losses import LossWeights
from .models.critic import SteganalysisCritic
from .models.discriminator import StyleGAN2Discriminator
from .models.drdpgan import DRDPGAN
from .repro import ArtifactCache, atomic_torch_save
from .stages import untrained_model  # noqa: F401  (the notebooks' name for it)

__all__ = [
    "ShortTraining",
    "untrained_model",
    "fresh_judges",
    "train_cached",
    "short_training",
    "render_ws",
    "swap_level",
    "mask_maps",
    "feature_shapes",
    "loss_breakdown",
    "loss_table",
    "LOSS_TERMS",
    "mask_figure",
]


# --------------------------------------------------------------------------- the short training


@dataclass
class ShortTraining:
    """A briefly trained DR-DPGAN with its two judges, as stored in the cache.

    ``model``: the :class:`DRDPGAN` in eval mode; ``discriminator``: ``C`` of Eq. 9 (StyleGAN2
    discriminator); ``critic``: the steganalysis critic of Eq. 10; ``config``: the
    :class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig` it ran with; ``dir``: the cache folder
    (``losses.csv``, ``losses.png``, ``final_metrics.json``, ``model.pt``, ``judges.pt``);
    ``result``: the trainer's ``final_metrics.json``.
    """

    model: DRDPGAN
    discriminator: StyleGAN2Discriminator
    critic: SteganalysisCritic
    config: Any
    dir: Path
    result: dict[str, Any]

    @property
    def losses_csv(self) -> Path:
        return self.dir / "losses.csv"


def fresh_judges(model: DRDPGAN, cfg) -> tuple[StyleGAN2Discriminator, SteganalysisCritic]:
    """``C`` and the critic exactly as :func:`~drdpgan.train_drdpgan.train_drdpgan` initialises them
    for ``cfg`` (seeded by ``cfg.seed``), in train mode as the trainer uses them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        C = StyleGAN2Discriminator(model.generator.cfg)
        critic = SteganalysisCritic(cfg.critic_config(model.cfg.resolution))
    return C.train(), critic.train()


def train_cached(
    name: str,
    key: dict[str, Any],
    make_model: Callable[[], DRDPGAN],
    get_dataset: Callable[[], Any],
    cfg,
    cache: ArtifactCache,
    progress: bool = True,
) -> ShortTraining:
    """Train ``make_model()`` on ``get_dataset()`` with ``cfg`` once, cached as ``cache.get(name, key)``.

    The folder keeps the trainer's ``losses.csv`` / ``losses.png`` / ``final_metrics.json`` and the
    weights (``model.pt``: the model in the one DR-DPGAN file format, :func:`~drdpgan.checkpoints.save_drdpgan`;
    ``judges.pt``: C's and the critic's state dicts); the trainer's resumable checkpoints (with optimiser
    states) are deleted. Whether it was just trained or found in the cache, the returned model is the one
    **loaded from** ``model.pt`` (:func:`~drdpgan.checkpoints.load_model`), so both cases give identical weights.
    """
    from .checkpoints import load_model, save_drdpgan
    from .runlog import latest_checkpoint
    from .train_drdpgan import train_drdpgan

    def build(d: Path) -> None:
        model = make_model()
        result = train_drdpgan(model, get_dataset(), cfg, d, progress=progress)
        ck = torch.load(latest_checkpoint(d), map_location="cpu", weights_only=False)
        save_drdpgan(d / "model.pt", model, metrics=result.get("final", {}))
        atomic_torch_save({"C": ck["C"], "critic": ck["critic"]}, d / "judges.pt")
        shutil.rmtree(d / "checkpoints", ignore_errors=True)
        (d / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")

    path = cache.get(name, {**key, "model_file": "save_drdpgan"}, build)  # older folders hold a bare state dict
    model, _ = load_model(path / "model.pt")
    C, critic = fresh_judges(model, cfg)
    judges = torch.load(path / "judges.pt", map_location="cpu", weights_only=True)
    C.load_state_dict(judges["C"])
    critic.load_state_dict(judges["critic"])
    result = json.loads((path / "final_metrics.json").read_text()) if (path / "final_metrics.json").is_file() else {}
    return ShortTraining(model, C.eval(), critic.eval(), cfg, path, result)


def short_training(
    profile: str,
    steps: int = 40,
    seed: int = 0,
    batch_size: int = 8,
    log_every: int = 5,
    progress: bool = True,
    **config_overrides,
) -> ShortTraining:
    """DR-DPGAN of ``profile`` (:func:`untrained_model`) trained ``steps`` steps on the profile's
    training faces with :func:`~drdpgan.train_drdpgan.train_drdpgan` at its defaults (Eq. 16
    weights (1, 1, 1, 5) plus the documented extra terms), cached under
    ``artifacts/<profile>/drdpgan-short-<hash>/``.

    The cache key holds the parameters of notebooks 01-04 for the profile (which fix the priors
    the model wraps), ``seed``, the training config and the ``DRDPGANConfig`` overrides.
    Meant for demonstrations: a few dozen steps at batch 8 (about 0.8 s per step on a 2-core CPU
    at the smoke profile's 32 px) leave the model barely trained.
    """
    from . import stages
    from .train_drdpgan import DRDPGANTrainConfig

    cfg = DRDPGANTrainConfig(steps=int(steps), batch_size=int(batch_size), seed=int(seed),
                             log_every=int(log_every), checkpoint_every=0, keep_checkpoints=1)
    priors = stages.prior_params(profile)
    key = {"priors": priors, "seed": int(seed), "train": cfg.to_dict(),
           "model_overrides": dict(sorted(config_overrides.items()))}
    return train_cached(
        "drdpgan-short", key,
        make_model=lambda: untrained_model(profile, seed, progress=progress, **config_overrides),
        get_dataset=lambda: stages.face_data(profile, progress)["train"],
        cfg=cfg, cache=ArtifactCache(profile), progress=progress)


# --------------------------------------------------------------------------- latent editing views


def render_ws(model: DRDPGAN, ws: torch.Tensor, source: torch.Tensor, password: torch.Tensor) -> dict:
    """A generator pass with the given W+ codes ``ws`` (B, num_ws, w_dim) and E_Ste fusion of
    ``E_G(source)`` and ``password`` at every block (Eq. 6-8): :meth:`DRDPGAN.render`, what
    :meth:`DRDPGAN.synthesize` does after E_MLP. Returns ``{"images", "masks", "feats"}``."""
    return model.render(ws, source, password)


def swap_level(model: DRDPGAN, out: dict, donor_ws: torch.Tensor, level: str, source: torch.Tensor) -> torch.Tensor:
    """Eq. 5 by hand: replace the W+ vectors of one ``level`` ("coarse" / "middle" / "fine") of
    ``out["ws"]`` (an :meth:`~DRDPGAN.anonymize` / :meth:`~DRDPGAN.recover` output) by those of
    ``donor_ws`` (same shape, or (num_ws, w_dim) / (w_dim,) broadcast) and regenerate with the
    same E_Ste inputs (``source`` image, ``out["password"]`` or ``out["bits"]``). Returns images."""
    ws = out["ws"].clone()
    donor = donor_ws.expand_as(ws) if donor_ws.dim() < 3 else donor_ws
    idx = model.generator.level_indices(level)
    ws[:, idx] = donor[:, idx]
    password = out["password"] if "password" in out else out["bits"]
    return render_ws(model, ws, source, password)["images"]


def mask_maps(masks: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """E_Ste masks ``{res: (B, C, r, r)}`` -> ``{res: (B, r, r)}``, the mean over channels of ``M_i``:
    near 1 where the block takes the encoder's feature ``E_G(x, i)``, near 0 where it keeps the
    generator's ``F_out^i`` (Eq. 7)."""
    return {r: m.detach().mean(dim=1) for r, m in sorted(masks.items())}


@torch.no_grad()
def feature_shapes(model: DRDPGAN, images: torch.Tensor) -> list[dict[str, Any]]:
    """Per injection resolution: the shapes of ``E_G(x, i)`` (encoder) and ``F_out^i`` (generator,
    after the block's first style convolution), and the W+ indices that block's convolutions read."""
    out = model.anonymize(images, seed=0)
    feats = model.encoder(images) if model.encoder is not None else {}
    seen: dict[int, tuple] = {}

    def inject(_block: int, res: int, f_out: torch.Tensor) -> torch.Tensor:
        seen[res] = tuple(f_out.shape)
        return model.fusion[str(res)](f_out, feats.get(res), out["password"])[0]

    model.generator.synthesis(out["ws"], noise_mode=model.cfg.noise_mode, inject=inject)
    ws_res = model.generator.ws_resolution
    rows = []
    for res in model.generator.inject_resolutions:
        rows.append({"resolution": res, "E_G": tuple(feats[res].shape) if res in feats else None,
                     "F_out": seen.get(res), "ws_indices": [i for i, r in enumerate(ws_res) if r == res]})
    return rows


# --------------------------------------------------------------------------- losses on one batch

#: The terms of :func:`loss_breakdown`: key -> (equation, what it is, in the paper's Eq. 16?).
LOSS_TERMS: dict[str, tuple[str, str, bool]] = {
    "ano_adv": ("Eq. 9", "adversarial, anonymized image: softplus(-C(x_anon))", True),
    "ano_dic": ("Eq. 10 (G side)", "critic should call x_anon a carrier: (1 - Critic(x_anon))^2", True),
    "ano_id": ("Eq. 11", "1 - cos(F'_id, E(x_anon)) + max(0, cos(F_id, E(x_anon)))", True),
    "ano_info": ("Eq. 13-15", "BCE(E_P(x_anon + eps), Password)", True),
    "rec_adv": ("Eq. 9", "adversarial, recovered image: softplus(-C(x_rec))", True),
    "rec_dic": ("Eq. 10 (G side)", "(1 - Critic(x_rec))^2", True),
    "rec_id": ("Eq. 12", "1 - cos(F_id, E(x_rec))", True),
    "code": ("extra", "1 - cos(decoder(Password), F_id)", False),
    "rec_pixel": ("extra", "L1(x_rec, x)", False),
    "anon_pixel": ("extra", "L1(x_anon, x)", False),
    "hide_footprint": ("extra", "L1(x_anon, the same pass without the password); only when weighed", False),
    "attr": ("extra", "L1(3D prior(x_anon), 3D prior(x)), expression and pose; only when weighed", False),
    "anon_background": ("extra", "L1(x_anon, x) outside the face ellipse; only when weighed", False),
    "rec_background": ("extra", "L1(x_rec, x) outside the face ellipse; only when weighed", False),
}


def loss_breakdown(
    model: DRDPGAN,
    C: nn.Module,
    critic: nn.Module,
    x: torch.Tensor,
    cfg,
    step: int = 0,
    train_mode: bool = False,
) -> dict[str, float]:
    """Every term of the trainer's objective on the batch ``x`` (B, 3, R, R), nothing updated.

    The same computation as the generator side and the judges' side of one step of
    :func:`~drdpgan.train_drdpgan.train_drdpgan` with config ``cfg`` at ``step`` (the same
    per-step seeds for the fake identity noise, the Eq. 13 noise and dropout): with
    ``train_mode=True`` (dropout on, E_P's batch norm on batch statistics; run on a copy, so the
    model's running statistics are untouched) the values equal the trainer's logged ones for
    that step before its update (tested). ``train_mode=False`` judges the model as it is used.

    Returns the unweighted terms of :data:`LOSS_TERMS`, ``loss_G`` (the weighted total the
    trainer minimises), ``eq16_ano`` / ``eq16_rec`` (Eq. 16 for each process, paper terms only),
    the judges' own losses ``loss_C`` (StyleGAN2 logistic, anonymized and recovered fakes
    averaged) and ``loss_critic`` (Eq. 10), and diagnostics (mean critic scores, identity cosines,
    bit accuracy).
    """
    from .objective import diagnostics, generator_objective, judge_losses, step_seed

    m = copy.deepcopy(model).train() if train_mode else model
    sigma = cfg.noise_sigma if cfg.noise_sigma is not None else model.cfg.extractor_noise_sigma
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(step_seed(cfg.seed, step, 2))
        with torch.no_grad():
            o = generator_objective(m, C, critic, x, cfg, step, sigma)
            j = judge_losses(C, critic, x, o["x_anon"], o["x_rec"], cfg.critic_on_rec)
            diag = diagnostics(o)
            out = {
                **o["terms"], "loss_G": o["loss_G"], "eq16_ano": o["eq16_ano"], "eq16_rec": o["eq16_rec"],
                "loss_C": j["loss_C"], "loss_critic": j["loss_critic"],
                "critic_real": j["s_real"].mean(), "critic_anon": j["s_anon"].mean(),
                **{k: v for k, v in diag.items() if k != "cos_decoded_real"},
            }
    return {k: float(v) for k, v in out.items()}


_WEIGHT_OF = {"ano_adv": "adv", "ano_dic": "dic", "ano_id": "id", "ano_info": "info", "rec_adv": "adv",
              "rec_dic": "dic", "rec_id": "id", "code": "code", "rec_pixel": "rec_pixel", "anon_pixel": "anon_pixel",
              "hide_footprint": "hide_footprint", "attr": "attr",
              "anon_background": "anon_background", "rec_background": "rec_background"}


def loss_table(values: dict[str, float], cfg, digits: int | None = 4):
    """A pandas table of :func:`loss_breakdown`'s terms: equation, what it computes, whether it is
    one of Eq. 16's four terms, its weight in the trainer's total (``cfg``), unweighted and
    weighted value; a last row with the total (``loss_G``)."""
    import pandas as pd

    w: LossWeights = cfg.weights
    weight = {"adv": w.adv, "dic": w.dic, "id": w.id, "info": w.info,
              "code": cfg.w_code, "rec_pixel": cfg.w_rec_pixel, "anon_pixel": cfg.w_anon_pixel,
              "hide_footprint": cfg.w_hide_footprint, "attr": cfg.w_attr,
              "anon_background": cfg.w_anon_background, "rec_background": cfg.w_rec_background}
    rows = []
    for key, (eq, what, in_paper) in LOSS_TERMS.items():
        if key not in values:  # a term the objective computes only when weighed (hide_footprint, attr, the backgrounds)
            continue
        lam = weight[_WEIGHT_OF[key]]
        v = values[key]
        rows.append({"term": key, "equation": eq, "computes": what, "in Eq. 16": in_paper,
                     "weight": lam, "unweighted": v, "weighted": lam * v})
    rows.append({"term": "total", "equation": "Eq. 16 (ano + rec) + extras", "computes": "what the trainer minimises",
                 "in Eq. 16": False, "weight": float("nan"), "unweighted": float("nan"),
                 "weighted": values["loss_G"]})
    df = pd.DataFrame(rows)
    if digits is not None:
        df[["unweighted", "weighted"]] = df[["unweighted", "weighted"]].round(digits)
    return df


# --------------------------------------------------------------------------- figures


def mask_figure(images: torch.Tensor, maps: dict[str, dict[int, torch.Tensor]], cell: float = 1.25,
                shared_scale: bool = False):
    """E_Ste masks as pictures: one row per face (``images`` (B, 3, R, R) in [-1, 1]), the face first,
    then for every entry ``title -> {res: (B, r, r)}`` of ``maps`` (:func:`mask_maps`) one panel per
    resolution. Each panel has its own colour scale (printed in its title) unless ``shared_scale``
    (then [0, 1]): early in training the masks move only a little away from 0.5."""
    import matplotlib.pyplot as plt

    from .viz import to_display

    cols = [(t, r) for t, mm in maps.items() for r in mm]
    n = images.shape[0]
    fig, axes = plt.subplots(n, 1 + len(cols), figsize=(cell * (1 + len(cols)), cell * n + 0.5), squeeze=False)
    for i in range(n):
        axes[i][0].imshow(to_display(images[i]), interpolation="nearest")
        for j, (t, r) in enumerate(cols, start=1):
            m = maps[t][r][i].cpu().numpy()
            lo, hi = (0.0, 1.0) if shared_scale else (float(m.min()), float(m.max()))
            if hi - lo < 1e-6:
                lo, hi = lo - 0.05, hi + 0.05
            axes[i][j].imshow(m, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
            axes[i][j].set_xlabel(f"[{m.min():.3f}, {m.max():.3f}]", fontsize=6)
            if i == 0:
                axes[i][j].set_title(f"{t}\nM @ {r} px", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("face", fontsize=7)
    fig.tight_layout()
    return fig
