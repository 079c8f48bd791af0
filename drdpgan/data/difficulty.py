"""How hard is the face world? Eigenface (pixel PCA) verification on unseen identities.

If raw pixels could verify identities, the synthetic world would not test a recognizer at all.
:func:`eigenface_verification` fits PCA on the images of *training* identities, embeds images
as PCA coefficients, scores pairs by cosine similarity, chooses the accuracy-maximising
threshold on same/different pairs of the training identities, and reports accuracy (and AUC)
on balanced same/different pairs of *unseen* identities.

``python -m drdpgan.data.difficulty --train-ids 300 --test-ids 300 --spi 12 --size 64``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def sample_pairs(labels: np.ndarray, n_same: int, n_diff: int, rng: np.random.Generator):
    """Random index pairs: ``(i, j, same)`` with ``n_same`` same-label and ``n_diff`` different-label pairs."""
    labels = np.asarray(labels)
    uniq, inv = np.unique(labels, return_inverse=True)
    groups = [np.flatnonzero(inv == k) for k in range(len(uniq))]
    multi = [g for g in groups if len(g) >= 2]
    if not multi:
        raise ValueError("need identities with at least 2 items for same pairs")
    gi = rng.integers(0, len(multi), n_same)
    si, sj = [], []
    for g in gi:
        a, b = rng.choice(multi[g], 2, replace=False)
        si.append(a)
        sj.append(b)
    di, dj = [], []
    while len(di) < n_diff:
        a, b = rng.integers(0, len(labels), 2)
        if labels[a] != labels[b]:
            di.append(a)
            dj.append(b)
    i = np.array(si + di, dtype=np.int64)
    j = np.array(sj + dj, dtype=np.int64)
    same = np.r_[np.ones(n_same, bool), np.zeros(n_diff, bool)]
    return i, j, same


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold maximising accuracy of ``score >= t`` predicting ``same``: (t, accuracy)."""
    order = np.argsort(-scores)
    s, y = scores[order], same[order].astype(np.int64)
    tp = np.cumsum(y)  # predicting "same" for the first k+1 pairs
    fp = np.cumsum(1 - y)
    tn = (1 - y).sum() - fp
    acc = (tp + tn) / len(y)
    k = int(np.argmax(acc))
    thr = s[k] if k + 1 >= len(s) else 0.5 * (s[k] + s[k + 1])
    # also consider predicting "different" for everything
    all_diff = (1 - y).sum() / len(y)
    if all_diff > acc[k]:
        return float(s[0] + 1e-6), float(all_diff)
    return float(thr), float(acc[k])


def eigenface_verification(
    train_images,
    train_labels,
    test_images,
    test_labels,
    n_components: int = 100,
    n_pairs: int = 3000,
    seed: int = 0,
) -> dict:
    """Pixel-PCA + cosine verification accuracy on unseen identities.

    train_images / test_images: (N, 3, H, W) tensors or arrays (any range; float or uint8);
    the two label sets should be disjoint identities. PCA (sklearn, randomized) is fitted on
    the training images; the threshold is chosen on ``n_pairs`` same + ``n_pairs`` different
    pairs of the *training* identities; accuracy and AUC are measured on ``n_pairs`` same +
    ``n_pairs`` different pairs of the *test* identities.
    Returns ``dict(accuracy, threshold, auc, train_accuracy, n_components, n_same, n_diff)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    def flat(x):
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return x.reshape(len(x), -1).astype(np.float32)

    Xtr, Xte = flat(train_images), flat(test_images)
    ytr, yte = np.asarray(train_labels), np.asarray(test_labels)
    k = int(min(n_components, Xtr.shape[0] - 1, Xtr.shape[1]))
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(Xtr)

    def embed(X):
        z = pca.transform(X)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)

    Ztr, Zte = embed(Xtr), embed(Xte)
    rng = np.random.default_rng(seed)
    i, j, same = sample_pairs(ytr, n_pairs, n_pairs, rng)
    thr, tr_acc = best_threshold((Ztr[i] * Ztr[j]).sum(1), same)
    i, j, same = sample_pairs(yte, n_pairs, n_pairs, rng)
    s = (Zte[i] * Zte[j]).sum(1)
    acc = float(((s >= thr) == same).mean())
    return {
        "accuracy": acc,
        "threshold": thr,
        "auc": float(roc_auc_score(same, s)),
        "train_accuracy": tr_acc,
        "n_components": k,
        "n_same": int(same.sum()),
        "n_diff": int((~same).sum()),
    }


def measure_world_difficulty(
    config=None,
    n_train_identities: int = 300,
    n_test_identities: int = 300,
    samples_per_identity: int = 12,
    image_size: int | None = None,
    n_pairs: int = 3000,
    n_components: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Render a training population (identities ``0..n_train-1``) and a disjoint test population
    (the next ``n_test`` identities) and run :func:`eigenface_verification` on them."""
    from .datasets import SyntheticFaceDataset
    from .world import WorldConfig

    config = config or WorldConfig()
    size = int(image_size or config.image_size)
    tr = SyntheticFaceDataset(config, range(n_train_identities), samples_per_identity, size, progress=progress)
    te = SyntheticFaceDataset(config, range(n_train_identities, n_train_identities + n_test_identities),
                              samples_per_identity, size, progress=progress)
    out = eigenface_verification(tr.images, tr.labels, te.images, te.labels, n_components, n_pairs, seed)
    out.update(image_size=size, n_train_identities=n_train_identities, n_test_identities=n_test_identities,
               samples_per_identity=samples_per_identity)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.data.difficulty")
    ap.add_argument("--train-ids", type=int, default=300)
    ap.add_argument("--test-ids", type=int, default=300)
    ap.add_argument("--spi", type=int, default=12, help="samples per identity")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    args = ap.parse_args(argv)
    from .world import WorldConfig

    t0 = time.perf_counter()
    res = measure_world_difficulty(WorldConfig(seed=args.seed), args.train_ids, args.test_ids, args.spi, args.size,
                                   args.pairs, args.components, progress=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    for k, v in res.items():
        print(f"{k:>20}: {v:.4f}" if isinstance(v, float) else f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
