"""Face verification metrics: pairs, cosines, accuracy at a threshold, ROC AUC, cosine bands.

Used to check the identity encoder ``E_Arcface`` (paper Sec. 3.2) and the FaceNet evaluator
(Sec. 4), and to measure the paper's statistical claim of Sec. 3.2: cosines between
*different* identities mostly fall in ``[s_min, s_max] = [0.1, 0.4]`` and those of the *same*
identity in ``[0.6, 1.0]`` (:func:`cosine_band_stats`).

Protocol of :func:`verification_accuracy`:

* with calibration pairs (``cos_calib``, ``same_calib``, built from *other* identities than
  the test pairs): the threshold maximising accuracy on the calibration pairs is chosen and
  applied unchanged to the test pairs -- an honest held-out estimate;
* without them: the standard LFW protocol -- the test pairs are split into 10 folds; for each
  fold the threshold maximising accuracy on the other 9 folds is applied to it; the reported
  accuracy is the mean over folds (``acc_std`` their standard deviation) and the reported
  threshold the mean of the 10 thresholds. The folds come from a fixed seeded permutation
  (LFW's pair list is already interleaved; ours may be ordered same-then-different).

A pair is predicted "same" when ``cos >= threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

__all__ = [
    "make_pairs",
    "pair_cosines",
    "best_threshold",
    "accuracy_at",
    "verification_accuracy",
    "embed",
    "cosine_band_stats",
    "cosine_distributions",
]


# --------------------------------------------------------------------------- pairs


def make_pairs(labels, n_same: int, n_diff: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample verification pairs from a label array, deterministically.

    Returns ``(idx_a, idx_b, same)``: int64 index arrays into ``labels`` and a bool array, of
    length ``n_same + n_diff``, in a shuffled order. Same pairs: a label with >= 2 items is
    drawn uniformly, then two distinct items of it; different pairs: two items with different
    labels. No self-pairs, and no pair (unordered) is drawn twice while enough distinct pairs
    exist (if fewer exist than asked, repeats are allowed rather than looping forever).
    Uses an explicit ``numpy.random.Generator(PCG64(seed))``.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    rng = np.random.default_rng(seed)
    n = len(labels)
    uniq, inv = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(len(uniq))]
    multi = [m for m in members if len(m) >= 2]
    if n_same > 0 and not multi:
        raise ValueError("no label has two or more items: cannot make same-identity pairs")
    if n_diff > 0 and len(uniq) < 2:
        raise ValueError("fewer than two labels: cannot make different-identity pairs")
    n_same_possible = sum(len(m) * (len(m) - 1) // 2 for m in multi)
    n_diff_possible = (n * (n - 1) // 2) - sum(len(m) * (len(m) - 1) // 2 for m in members)

    def draw(count: int, possible: int, sampler) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        unique_ok = count <= possible
        tries = 0
        while len(out) < count:
            a, b = sampler()
            key = (min(a, b), max(a, b))
            tries += 1
            if unique_ok and key in seen and tries < 50 * count + 1000:
                continue
            seen.add(key)
            out.append((a, b))
        return out

    def same_sampler():
        m = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(m), size=2, replace=False)
        return int(m[a]), int(m[b])

    def diff_sampler():
        while True:
            a, b = rng.integers(n, size=2)
            if labels[a] != labels[b]:
                return int(a), int(b)

    pairs = draw(n_same, n_same_possible, same_sampler) + draw(n_diff, n_diff_possible, diff_sampler)
    same = np.array([True] * n_same + [False] * n_diff, dtype=bool)
    order = rng.permutation(len(pairs))
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)[order]
    return arr[:, 0].copy(), arr[:, 1].copy(), same[order]


def pair_cosines(emb, idx_a, idx_b) -> np.ndarray:
    """Cosine similarity of each pair ``(emb[idx_a[i]], emb[idx_b[i]])`` -> float64 ``(P,)``.

    ``emb`` is ``(N,D)`` (torch or numpy); rows are re-normalised, so raw features work too.
    """
    e = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    a, b = np.asarray(idx_a, np.int64), np.asarray(idx_b, np.int64)
    return np.einsum("ij,ij->i", e[a], e[b])


# --------------------------------------------------------------------------- thresholds


def accuracy_at(cos, same, threshold: float) -> float:
    """Fraction of pairs classified right by ``cos >= threshold`` -> same."""
    cos, same = np.asarray(cos, np.float64), np.asarray(same, bool)
    return float(np.mean((cos >= threshold) == same)) if len(cos) else float("nan")


def best_threshold(cos, same) -> tuple[float, float]:
    """Threshold maximising accuracy of ``cos >= t`` on these pairs -> ``(t, accuracy)``.

    Candidates are all midpoints between consecutive distinct cosines plus one below the
    minimum and one above the maximum (exhaustive, O(P log P)). Ties go to the candidate
    closest to the middle of the best run of equal-accuracy candidates.
    """
    cos, same = np.asarray(cos, np.float64), np.asarray(same, bool)
    if len(cos) == 0:
        raise ValueError("no pairs")
    order = np.argsort(cos, kind="stable")
    c, s = cos[order], same[order]
    uniq = np.unique(c)
    cands = np.concatenate([[uniq[0] - 1e-6], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1] + 1e-6]])
    # pairs with cos < t are predicted "different": correct when not same
    n_below = np.searchsorted(c, cands, side="left")
    diff_below = np.concatenate([[0], np.cumsum(~s)])[n_below]
    same_above = s.sum() - np.concatenate([[0], np.cumsum(s)])[n_below]
    acc = (diff_below + same_above) / len(c)
    best = acc.max()
    hits = np.flatnonzero(acc == best)
    # the longest consecutive run containing the first hit; take its middle
    runs = np.split(hits, np.flatnonzero(np.diff(hits) != 1) + 1)
    run = max(runs, key=len)
    return float(cands[run[len(run) // 2]]), float(best)


def _auc(cos, same) -> float:
    same = np.asarray(same, bool)
    if same.all() or (~same).all():
        return float("nan")
    return float(roc_auc_score(same.astype(int), np.asarray(cos, np.float64)))


def verification_accuracy(cos_test, same_test, cos_calib=None, same_calib=None,
                          n_folds: int = 10, seed: int = 0) -> dict[str, Any]:
    """Verification accuracy of test pairs; see the module docstring for the protocol.

    Returns ``dict(acc, threshold, auc, protocol, n_pairs, acc_calib | acc_std, ...)``
    with ``auc = sklearn.metrics.roc_auc_score(same_test, cos_test)`` (threshold-free).
    ``protocol`` is ``"calibration"`` or ``"10-fold"`` (``f"{n_folds}-fold"``).
    """
    cos_test, same_test = np.asarray(cos_test, np.float64), np.asarray(same_test, bool)
    out: dict[str, Any] = {"auc": _auc(cos_test, same_test), "n_pairs": int(len(cos_test))}
    if cos_calib is not None:
        if same_calib is None:
            raise ValueError("same_calib is required with cos_calib")
        t, acc_cal = best_threshold(cos_calib, same_calib)
        out.update(acc=accuracy_at(cos_test, same_test, t), threshold=t, acc_calib=acc_cal,
                   protocol="calibration", n_calib_pairs=int(len(cos_calib)))
        return out
    k = int(min(n_folds, len(cos_test)))
    if k < 2:
        t, acc = best_threshold(cos_test, same_test)
        out.update(acc=acc, threshold=t, acc_std=0.0, protocol="in-sample")
        return out
    perm = np.random.default_rng(seed).permutation(len(cos_test))
    folds = np.array_split(perm, k)
    accs, ths = [], []
    for i in range(k):
        train = np.concatenate([folds[j] for j in range(k) if j != i])
        t, _ = best_threshold(cos_test[train], same_test[train])
        accs.append(accuracy_at(cos_test[folds[i]], same_test[folds[i]], t))
        ths.append(t)
    out.update(acc=float(np.mean(accs)), acc_std=float(np.std(accs)), threshold=float(np.mean(ths)),
               fold_acc=[float(a) for a in accs], protocol=f"{k}-fold")
    return out


# --------------------------------------------------------------------------- embeddings


@torch.no_grad()
@torch.no_grad()
def embed(model, data, batch_size: int = 256, key: str = "image") -> torch.Tensor:
    """Run ``model`` (a module, in eval mode, or any function of an image batch) over a ``(N,3,H,W)``
    tensor or a dataset, without gradients -> ``(N,D)`` float32 CPU.

    A dataset item is a dict holding ``item[key]`` (the project's data contract) or a tensor /
    a tuple whose first element is the image. A module's train/eval mode is restored after.
    """
    is_module = isinstance(model, torch.nn.Module)
    was_training = is_module and model.training
    if is_module:
        model.eval()
    try:
        outs = []
        if isinstance(data, torch.Tensor):
            for i in range(0, len(data), batch_size):
                out = torch.as_tensor(model(data[i : i + batch_size]))
                outs.append(out.float().cpu().reshape(len(out), -1))
        else:
            loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
            for batch in loader:
                x = batch[key] if isinstance(batch, dict) else (batch[0] if isinstance(batch, (list, tuple)) else batch)
                out = torch.as_tensor(model(x))
                outs.append(out.float().cpu().reshape(len(out), -1))
        if not outs:
            return torch.empty(0, 0)
        return torch.cat(outs)
    finally:
        if is_module:
            model.train(was_training)


# --------------------------------------------------------------------------- distributions


def cosine_band_stats(cos, same, diff_band=(0.1, 0.4), same_band=(0.6, 1.0), bins: int = 50,
                      range_=(-1.0, 1.0)) -> dict[str, Any]:
    """Same/different-identity cosine distributions and the paper's Sec. 3.2 bands, as numbers.

    Returns a dict with ``frac_diff_in_band`` (fraction of different-identity cosines in
    ``diff_band``, default ``[s_min, s_max] = [0.1, 0.4]``), ``frac_diff_below_band``,
    ``frac_diff_above_band``, ``frac_same_in_band`` (same-identity cosines in ``same_band``,
    default ``[0.6, 1.0]``), mean/std/quantiles (5, 50, 95 %) of each population, the
    histogram ``bin_edges`` and counts ``hist_same``/``hist_diff`` (lists; plotting is done
    elsewhere), and ``n_same``/``n_diff``. Bands are closed intervals.
    """
    cos, same = np.asarray(cos, np.float64), np.asarray(same, bool)
    cs, cd = cos[same], cos[~same]
    lo, hi = diff_band
    slo, shi = same_band
    edges = np.linspace(range_[0], range_[1], bins + 1)

    def frac(x, mask):
        return float(mask.mean()) if len(x) else float("nan")

    def describe(x, name):
        if len(x) == 0:
            return {f"{name}_mean": float("nan"), f"{name}_std": float("nan"),
                    f"{name}_q05": float("nan"), f"{name}_q50": float("nan"), f"{name}_q95": float("nan")}
        q = np.quantile(x, [0.05, 0.5, 0.95])
        return {f"{name}_mean": float(x.mean()), f"{name}_std": float(x.std()),
                f"{name}_q05": float(q[0]), f"{name}_q50": float(q[1]), f"{name}_q95": float(q[2])}

    out: dict[str, Any] = {
        "diff_band": [float(lo), float(hi)],
        "same_band": [float(slo), float(shi)],
        "frac_diff_in_band": frac(cd, (cd >= lo) & (cd <= hi)),
        "frac_diff_below_band": frac(cd, cd < lo),
        "frac_diff_above_band": frac(cd, cd > hi),
        "frac_same_in_band": frac(cs, (cs >= slo) & (cs <= shi)),
        "n_same": int(len(cs)),
        "n_diff": int(len(cd)),
        "bin_edges": edges.tolist(),
        "hist_same": np.histogram(np.clip(cs, *range_), edges)[0].tolist(),
        "hist_diff": np.histogram(np.clip(cd, *range_), edges)[0].tolist(),
    }
    out.update(describe(cs, "same"))
    out.update(describe(cd, "diff"))
    return out


#: Alias (the brief calls it the histogram helper).
cosine_distributions = cosine_band_stats
