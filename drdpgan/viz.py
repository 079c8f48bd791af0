"""Figures for the notebooks (matplotlib) and the widget/static-figure switch.

Interactive controls (ipywidgets) are shown only in a live Jupyter session. Under the pipeline
runner, nbval and ``notebook_tools execute-in-place`` the environment variable
``DRDPGAN_HEADLESS=1`` is set and notebooks draw one static figure at their defaults instead.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import matplotlib

if os.environ.get("DRDPGAN_HEADLESS") == "1" and "MPLBACKEND" not in os.environ:
    # Keep inline display in kernels; only plain scripts get the non-GUI backend.
    try:
        get_ipython  # type: ignore[name-defined]  # noqa: B018
    except NameError:
        matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch


def headless() -> bool:
    """True when no person is looking: pipeline runner, nbval, batch execution, or no ipywidgets."""
    if os.environ.get("DRDPGAN_HEADLESS") == "1":
        return True
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    return False


def interactive_or_static(build_widget: Callable[[], object], draw_static: Callable[[], object]):
    """Show an ipywidgets control in a live session, else draw the static figure at the defaults."""
    if headless():
        return draw_static()
    from IPython.display import display

    w = build_widget()
    display(w)
    return w


# --------------------------------------------------------------------------- the pipeline figure

_STAGES_ANON = [
    ("original\nimage x", "#dfe8f5"),
    ("E_Arcface\nF_id", "#f5e3df"),
    ("fake identity\nF'_id (Alg. 1)", "#f5e3df"),
    ("3D prior\nF_emo, F_pos (Eq. 1)", "#e6f2dc"),
    ("E_MLP -> W+\n(Eq. 5)", "#efe3f5"),
    ("StyleGAN2 +\nE_Ste fusion (Eq. 6-8)", "#efe3f5"),
    ("anonymized\nimage", "#dfe8f5"),
]
_STAGES_REC = [
    ("anonymized\nimage", "#dfe8f5"),
    ("password\nextractor E_P", "#f5f0d6"),
    ("bits -> float\nF_id", "#f5f0d6"),
    ("3D prior\nF_emo, F_pos", "#e6f2dc"),
    ("E_MLP -> W+\n(t = 0)", "#efe3f5"),
    ("StyleGAN2 +\nE_Ste fusion", "#efe3f5"),
    ("recovered\nimage", "#dfe8f5"),
]


def draw_pipeline(figsize=(14, 5.2)):
    """DR-DPGAN's two paths (Sec. 3.1): anonymize (t = 1) above, recover (t = 0) below."""
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, len(_STAGES_ANON) * 2)
    ax.set_ylim(0, 6)
    ax.axis("off")

    def row(stages, y, title):
        ax.text(0.05, y + 1.05, title, fontsize=11, weight="bold", va="bottom")
        for i, (label, color) in enumerate(stages):
            x = i * 2 + 0.1
            ax.add_patch(plt.Rectangle((x, y - 0.6), 1.7, 1.2, facecolor=color, edgecolor="#555", lw=1))
            ax.text(x + 0.85, y, label, ha="center", va="center", fontsize=8.5)
            if i:
                ax.annotate("", xy=(x, y), xytext=(x - 0.3, y), arrowprops=dict(arrowstyle="->", lw=1.2))

    row(_STAGES_ANON, 4.2, "Anonymize (t = 1): fake identity in W+, real identity hidden as a password")
    row(_STAGES_REC, 1.2, "Recover (t = 0): password read back, same generator path with the real identity")
    # The password: binary code mapping of F_id (Eq. 2-4) enters every E_Ste block.
    ax.annotate(
        "binary code mapping (Eq. 2-4):\nF_id -> Password -> conv1x1 in every E_Ste block",
        xy=(11.0, 3.6), xytext=(5.3, 2.75), fontsize=8.5, ha="center",
        arrowprops=dict(arrowstyle="->", lw=1, color="#8a6d00"), color="#8a6d00",
    )
    ax.annotate(
        "E_G(x): identity-free features\n(background, lighting) fused by mask M_i",
        xy=(10.9, 4.8), xytext=(12.2, 5.75), fontsize=8.5, ha="center",
        arrowprops=dict(arrowstyle="->", lw=1, color="#3a5f99"), color="#3a5f99",
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- image grids


def to_display(img: torch.Tensor) -> np.ndarray:
    """(3,H,W) in [-1, 1] -> (H,W,3) float in [0, 1] for imshow."""
    x = (img.detach().float().cpu().clamp(-1, 1) + 1) / 2
    return x.permute(1, 2, 0).numpy()


def image_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    cell: float = 1.3,
):
    """A figure of images laid out in rows; each image (3,H,W) in [-1, 1]."""
    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(cell * nc, cell * nr + 0.2), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(r):
                ax.imshow(to_display(r[j]), interpolation="nearest")
            if j == 0 and row_titles:
                ax.set_ylabel(row_titles[i], fontsize=8)
            if i == 0 and col_titles and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the synthetic world


def edited_renders(world, identity: int, edits: Sequence[dict], size: int, sample: int = 0) -> list[torch.Tensor]:
    """Render one identity under coefficient edits: each edit maps a coefficient group
    (``"pose"``, ``"expression"``, ...) to a (K,) tensor that replaces it; everything else is
    the identity's sample ``sample``."""
    base = world.sample_coeffs(torch.tensor([identity]), torch.tensor([sample]))
    out = []
    for e in edits:
        c = {k: v.clone() for k, v in base.items()}
        for k, v in e.items():
            c[k] = torch.as_tensor(v, dtype=torch.float32).view(1, -1)
        out.append(world.render_coeffs(c, size)["image"][0])
    return out


def coefficient_histograms(coeffs: dict[str, torch.Tensor], names: dict[str, Sequence[str]], groups: Sequence[str]):
    """One row of histograms per coefficient group (e.g. expression, pose) of a dataset."""
    ncols = max(len(names[g]) for g in groups)
    fig, axes = plt.subplots(len(groups), ncols, figsize=(2.2 * ncols, 1.9 * len(groups)), squeeze=False)
    for i, g in enumerate(groups):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(names[g]):
                ax.axis("off")
                continue
            v = coeffs[g][:, j].numpy()
            if g == "pose":
                v = np.degrees(v)
            ax.hist(v, bins=30, color="#4a78b5")
            ax.set_title(f"{g}: {names[g][j]}" + (" (deg)" if g == "pose" else ""), fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def landmarks_figure(images: Sequence[torch.Tensor], landmarks: Sequence[torch.Tensor | None], titles: Sequence[str]):
    """Images with their 5 landmarks (pixel-index coordinates) drawn on top."""
    fig, axes = plt.subplots(1, len(images), figsize=(2.4 * len(images), 2.6), squeeze=False)
    for ax, img, lm, t in zip(axes[0], images, landmarks, titles):
        ax.imshow(to_display(img) if isinstance(img, torch.Tensor) else img)
        if lm is not None:
            lm = np.asarray(lm)
            ax.scatter(lm[:, 0], lm[:, 1], s=14, c="#ff3b30", marker="x")
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- pretraining runs


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    n = max(1, min(n, len(y)))
    return np.convolve(y, np.ones(n) / n, mode="valid")


def pretraining_figure(log_dir, title: str = "", frechet_features: str = "8x8 pixel"):
    """The training run behind a shipped network, from the logs shipped beside it
    (``drdpgan/weights/<profile>/<network>_logs``): a prior's ``*_history.json`` (per-step loss and
    accuracy, smoothed over ~1 % of the run, and the learning rate), or StyleGAN2's ``losses.csv``,
    ``metrics.csv`` (Frechet distance on ``frechet_features``) and last sample grid (beside the logs,
    or in ``samples/`` of a training folder)."""
    import json
    from pathlib import Path

    import pandas as pd

    log_dir = Path(log_dir)
    hist_files = sorted(log_dir.glob("*_history.json"))
    if hist_files:
        h = json.loads(hist_files[0].read_text())
        loss = np.asarray(h["step_loss"], dtype=float)
        acc = np.asarray(h.get("step_acc") or [], dtype=float)
        n = max(1, len(loss) // 100)
        fig, axes = plt.subplots(1, 2 + bool(len(acc)), figsize=(4 * (2 + bool(len(acc))), 3))
        axes[0].plot(np.arange(len(loss) - n + 1) + n, _smooth(loss, n))
        axes[0].set_title("training loss", fontsize=9)
        k = 1
        if len(acc):
            axes[1].plot(np.arange(len(acc) - n + 1) + n, _smooth(acc, n))
            axes[1].set_title("training accuracy (batch)", fontsize=9)
            k = 2
        axes[k].plot(h["lr"])
        axes[k].set_title("learning rate", fontsize=9)
        for ax in axes:
            ax.set_xlabel("step")
    else:
        losses = pd.read_csv(log_dir / "losses.csv")
        samples = sorted(log_dir.glob("step_*.png")) or sorted(log_dir.glob("samples/step_*.png"))
        fig, axes = plt.subplots(1, 2 + bool(samples), figsize=(4 * (2 + bool(samples)), 3))
        n = max(1, len(losses) // 100)
        for key in ("loss_G", "loss_D"):
            axes[0].plot(losses["step"][n - 1:], _smooth(losses[key].to_numpy(float), n), label=key)
        axes[0].legend(fontsize=8)
        axes[0].set_title("losses", fontsize=9)
        axes[0].set_xlabel("step")
        if (log_dir / "metrics.csv").is_file():
            m = pd.read_csv(log_dir / "metrics.csv")
            axes[1].plot(m["step"], m["frechet"], "o-")
        axes[1].set_title(f"Frechet distance, {frechet_features} features (not FID)", fontsize=9)
        axes[1].set_xlabel("step")
        if samples:
            from PIL import Image

            axes[2].imshow(np.asarray(Image.open(samples[-1])))
            axes[2].set_title(f"samples at {samples[-1].stem.replace('_', ' ')}", fontsize=9)
            axes[2].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
