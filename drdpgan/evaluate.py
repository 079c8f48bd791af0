"""The measurements of the paper's evaluation (Sec. 4.2-4.3): image, identity and password metrics, figures.

Image metrics (Table 2 "MAE" / "PSNR", plus SSIM): the project's images live in ``[-1, 1]``;
the paper measures on ``[0, 1]`` images, so every image metric here first maps its inputs
with :func:`to_unit_range` (clamped to ``[-1, 1]`` first, as a saved image would be) and then
measures in ``[0, 1]``. Pass ``unit_range=True`` when the inputs are already in ``[0, 1]``.
All image metrics are computed **per image and then averaged over images** (the convention of
image-restoration papers); ``reduction="none"`` returns the per-image values.

Identity metrics (Table 1 and Table 2 "Cosine Similarity"):

* :func:`identity_cosines` -- per-image cosine between the embedding of an original and that
  of its anonymized (Table 2 col. 1, lower = better) or recovered (col. 2, higher = better)
  version, under an *evaluator* network (never the identity encoder of the training losses).
* Table 1's classifiers: :func:`drdpgan.protocol.table1_classifier_protocol`.

Password metrics (Table 3): :func:`drdpgan.models.binary_code.bit_error_rate` and
:func:`drdpgan.models.binary_code.float_mse`, re-exported here (not re-implemented).

Figures: :func:`embedding_projection` / :func:`plot_identity_distribution` (Figure 8: original,
anonymized and recovered identity embeddings projected jointly to 2-D and 3-D) and
:func:`diversity_matrix` (Figures 6-7: one face anonymized under several noises).

The protocol that uses these (splits, Tables 1-4, the paper's numbers) is :mod:`drdpgan.protocol`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

from .models.binary_code import bit_error_rate, float_mse

__all__ = [
    "to_unit_range",
    "mae",
    "psnr",
    "ssim",
    "bit_error_rate",
    "float_mse",
    "cosine",
    "identity_cosines",
    "embedding_projection",
    "plot_identity_distribution",
    "diversity_matrix",
]


# --------------------------------------------------------------------------- image metrics


def to_unit_range(x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """``[-1, 1] -> [0, 1]``: ``(x + 1) / 2`` in float32 (clamped to ``[0, 1]`` when ``clamp``)."""
    y = (torch.as_tensor(x).float() + 1.0) / 2.0
    return y.clamp(0.0, 1.0) if clamp else y


def _pair(a, b, unit_range: bool) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 3:  # a single (C,H,W) image
        a, b = a[None], b[None]
    if a.dim() != 4:
        raise ValueError(f"expected (B,C,H,W) or (C,H,W) images, got shape {tuple(a.shape)}")
    if unit_range:
        return a.double(), b.double()
    return to_unit_range(a).double(), to_unit_range(b).double()


def _reduce(v: torch.Tensor, reduction: str):
    if reduction == "mean":
        return float(v.mean())
    if reduction == "none":
        return v.float()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def mae(a, b, unit_range: bool = False, reduction: str = "mean"):
    """Mean absolute error (Table 2 "MAE") between two image batches, measured in ``[0, 1]``.

    ``a``, ``b``: ``(B,C,H,W)`` (or one ``(C,H,W)``) in ``[-1, 1]`` (``unit_range=True``: already
    in ``[0, 1]``). Per image: ``mean |a01 - b01|`` over all channels and pixels; then the mean
    over images (equal to the global mean since all images have the same size).
    ``reduction="none"`` -> the ``(B,)`` per-image values.
    """
    x, y = _pair(a, b, unit_range)
    return _reduce((x - y).abs().flatten(1).mean(1), reduction)


def psnr(a, b, data_range: float = 1.0, unit_range: bool = False, reduction: str = "mean",
         max_db: float = 100.0):
    """Peak signal-to-noise ratio in dB (Table 2 "PSNR"), measured in ``[0, 1]``.

    Per image ``i``: ``MSE_i = mean (a01 - b01)^2`` over channels and pixels and
    ``PSNR_i = 10 log10(data_range^2 / MSE_i)``; the result is the **mean of the per-image
    PSNRs** (not the PSNR of the mean MSE, which is lower by Jensen's inequality). An identical
    pair (``MSE_i = 0``) is capped at ``max_db`` (default 100 dB) so the mean stays finite.
    Example: a constant offset of 0.1 in ``[0, 1]`` gives exactly 20 dB. Computed with
    ``torchmetrics.functional.image.peak_signal_noise_ratio`` per image.
    """
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, y = _pair(a, b, unit_range)
    v = peak_signal_noise_ratio(x, y, data_range=data_range, reduction="none", dim=(1, 2, 3))  # (B,)
    return _reduce(v.clamp(max=max_db), reduction)


def ssim(a, b, data_range: float = 1.0, unit_range: bool = False, reduction: str = "mean",
         window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03, chunk: int = 64):
    """Structural similarity (Wang et al. 2004), Gaussian window 11x11, sigma 1.5, in ``[0, 1]``.

    Local means, variances and covariance are Gaussian-weighted averages (population, i.e.
    biased, moments) over the window, computed per channel at every position where the whole
    window fits inside the image ("valid" positions, no padding);
    ``SSIM = (2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))``
    with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range``. Per image: the mean of the SSIM
    map over channels and valid positions; then the mean over images.

    This is the convention of Wang et al.'s reference MATLAB code (``filter2(..., 'valid')``) and
    of ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)`` (reflect-filtered, then the 5-px border
    cropped before averaging = valid positions; a pinned value is in the tests). Computed with
    ``torchmetrics`` 1.9's ``structural_similarity_index_measure``, whose full map is cropped by
    half a window before averaging (torchmetrics alone averages the reflect-padded border too,
    ~1e-3 different on 40 px noisy images). Images smaller than the window are refused. ``chunk`` images at a
    time: all at once, the 1,200 protected 64 px faces of the cpu profile asked for a 23.8 GB buffer (notebook 11
    killed for memory on a 24 GB machine).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = _pair(a, b, unit_range)
    h, w = x.shape[-2:]
    if h < window or w < window:
        raise ValueError(f"images of {h}x{w} are smaller than the {window}x{window} SSIM window")
    r = window // 2
    per_image = []
    for s in range(0, len(x), chunk):  # torch's CPU conv unfolds each 11 x 11 window: ~30 MB per 64 px image
        _, full = structural_similarity_index_measure(x[s:s + chunk], y[s:s + chunk], gaussian_kernel=True,
                                                      sigma=sigma, kernel_size=window, data_range=data_range, k1=k1,
                                                      k2=k2, reduction="none",
                                                      return_full_image=True)  # (b, C, H, W) map, reflect-padded
        per_image.append(full[..., r:h - r, r:w - r].flatten(1).mean(1))
    return _reduce(torch.cat(per_image).to(x.dtype), reduction)


# --------------------------------------------------------------------------- identity metrics


def cosine(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N,D)`` arrays/tensors -> float64 ``(N,)``.

    Rows are L2-normalised first (raw or normalised embeddings both work)."""
    a = a.detach().cpu().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    b = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=-1)


@torch.no_grad()
def _embed_all(embed_fn: Callable, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Embed ``(N,3,H,W)`` images in batches (:func:`drdpgan.verification.embed`: no gradients, a module
    in eval mode, restored after)."""
    from .verification import embed

    return embed(embed_fn, torch.as_tensor(images), batch_size=batch_size)


def identity_cosines(embed_fn: Callable, originals: torch.Tensor, others: torch.Tensor,
                     batch_size: int = 64) -> np.ndarray:
    """Per-image identity cosine between originals and their anonymized/recovered versions.

    ``embed_fn``: images ``(B,3,H,W)`` in ``[-1, 1]`` -> embeddings ``(B,D)`` (e.g. the FaceNet
    evaluator, or :class:`drdpgan.dlib_face.DlibFaceDescriptor`); an ``nn.Module`` is run in
    eval mode under ``no_grad``. ``originals[i]`` is paired with ``others[i]``. Returns float64
    ``(N,)`` cosines; Table 2 reports their mean (anonymized: lower is better; recovered:
    higher is better).
    """
    if len(originals) != len(others):
        raise ValueError(f"{len(originals)} originals vs {len(others)} others")
    ea = _embed_all(embed_fn, originals, batch_size)
    eb = _embed_all(embed_fn, others, batch_size)
    return cosine(ea, eb)


# --------------------------------------------------------------------------- Figure 8


def _as_np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def embedding_projection(embeddings_by_group: Mapping[str, Any], method: str = "pca", dims: int = 2,
                         seed: int = 0, normalize: bool = True, perplexity: float | None = None,
                         n_threads: int | None = 1, **tsne_kwargs) -> dict[str, np.ndarray]:
    """Project several groups of embeddings **jointly** to ``dims`` (2 or 3) dimensions.

    ``embeddings_by_group``: e.g. ``{"original": (N,D), "anonymized": (N,D), "recovered": (N,D)}``.
    The groups are concatenated (rows L2-normalised first when ``normalize``, so distances
    reflect cosines), one projection is fitted on all rows -- so the groups share one
    coordinate system, as in Figure 8 -- and split back: returns ``{group: (N_g, dims)}``
    float64. ``method="pca"``: ``sklearn.decomposition.PCA(dims, random_state=seed)``;
    ``"tsne"``: ``sklearn.manifold.TSNE(dims, init="pca", random_state=seed,
    perplexity=min(30, (n-1)/3), **tsne_kwargs)`` (e.g. ``max_iter=250`` to be faster; t-SNE
    needs n >= 4 rows). Deterministic for a fixed seed. The fit runs under
    ``threadpoolctl.threadpool_limits(n_threads)`` (default 1: on the shared 2-core machine
    OpenMP threads spin-wait -- t-SNE on 36 points took 4 s of CPU with the default threads
    and 0.05 s with one); ``None`` leaves the thread pools as they are.
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    names = list(embeddings_by_group)
    arrays = [_as_np(embeddings_by_group[k]).reshape(len(embeddings_by_group[k]), -1) for k in names]
    x = np.concatenate(arrays, 0)
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < dims + 1:
        raise ValueError(f"need at least {dims + 1} rows to project to {dims} dims, got {n}")
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    with threadpool_limits(int(n_threads)) if n_threads else nullcontext():
        if method == "pca":
            from sklearn.decomposition import PCA

            z = PCA(n_components=dims, random_state=seed).fit_transform(x)
        else:
            from sklearn.manifold import TSNE

            p = perplexity if perplexity is not None else min(30.0, max((n - 1) / 3.0, 1.0))
            z = TSNE(n_components=dims, init="pca", random_state=seed, perplexity=p,
                     **tsne_kwargs).fit_transform(x)
    out, s = {}, 0
    for k, a in zip(names, arrays):
        out[k] = np.asarray(z[s : s + len(a)], np.float64)
        s += len(a)
    return out


_GROUP_COLOURS = {"original": "tab:blue", "anonymized": "tab:red", "recovered": "tab:green"}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def plot_identity_distribution(embeddings_by_group: Mapping[str, Any], identities=None, method: str = "pca",
                               seed: int = 0, title: str | None = None, figsize=(11, 4.8), **tsne_kwargs):
    """Figure 8: original / anonymized / recovered identity embeddings in 3-D (a) and 2-D (b).

    Both panels come from :func:`embedding_projection` (fitted jointly on all groups). Colour =
    group (original blue, anonymized red, recovered green; others from the default cycle);
    ``identities`` (one label array, the same for every group, rows aligned) -> marker per
    identity (cycling through 12 markers). Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    p3 = embedding_projection(embeddings_by_group, method, 3, seed, **tsne_kwargs)
    p2 = embedding_projection(embeddings_by_group, method, 2, seed, **tsne_kwargs)
    fig = plt.figure(figsize=figsize)
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax2 = fig.add_subplot(1, 2, 2)
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["k"])
    ids = None if identities is None else np.asarray(identities).ravel()
    uniq = [] if ids is None else list(np.unique(ids))
    for gi, name in enumerate(p2):
        col = _GROUP_COLOURS.get(name, cycle[gi % len(cycle)])
        n = len(p2[name])
        if ids is not None and len(ids) != n:
            raise ValueError(f"identities has {len(ids)} entries, group {name!r} has {n} rows")
        groups = [(np.arange(n), "o")] if ids is None else [
            (np.flatnonzero(ids == u), _MARKERS[k % len(_MARKERS)]) for k, u in enumerate(uniq)]
        for j, (rows, mk) in enumerate(groups):
            lab = name if j == 0 else None
            ax3.scatter(p3[name][rows, 0], p3[name][rows, 1], p3[name][rows, 2], c=col, marker=mk, s=18,
                        alpha=0.8, label=lab)
            ax2.scatter(p2[name][rows, 0], p2[name][rows, 1], c=col, marker=mk, s=18, alpha=0.8, label=lab)
    ax3.set_title(f"(a) 3-D {method.upper()}", fontsize=9)
    ax2.set_title(f"(b) 2-D {method.upper()}", fontsize=9)
    ax2.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Figures 6-7


def diversity_matrix(embed_fn: Callable, variants: torch.Tensor, batch_size: int = 64
                     ) -> tuple[np.ndarray, float]:
    """Identity diversity of one input's anonymized versions under K noises (Figures 6-7).

    ``variants``: ``(K,3,H,W)`` in ``[-1, 1]``, the same face anonymized with K different noise
    draws. Returns ``(M, mean_offdiag)``: ``M`` the ``(K,K)`` float64 matrix of pairwise cosines
    of their embeddings under ``embed_fn`` (diagonal 1), and the mean of its ``K(K-1)``
    off-diagonal entries (lower = more diverse fake identities; NaN when K < 2).
    """
    e = _as_np(_embed_all(embed_fn, torch.as_tensor(variants), batch_size))
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    m = e @ e.T
    k = len(m)
    off = float((m.sum() - np.trace(m)) / (k * (k - 1))) if k >= 2 else float("nan")
    return m, off
