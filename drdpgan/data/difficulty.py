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

    from ..notebook_params import derived_seed
    from ..verification import accuracy_at, make_pairs, pair_cosines, verification_accuracy

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
    ca, cb, cs = make_pairs(ytr, n_pairs, n_pairs, seed=seed)
    ta, tb, ts = make_pairs(yte, n_pairs, n_pairs, seed=derived_seed(seed, "test_pairs"))
    cal = pair_cosines(Ztr, ca, cb)
    s = pair_cosines(Zte, ta, tb)
    ver = verification_accuracy(s, ts, cal, cs)
    acc, thr, same = ver["acc"], ver["threshold"], ts
    tr_acc = accuracy_at(cal, cs, thr)
    return {
        "accuracy": acc,
        "threshold": thr,
        "auc": ver["auc"],
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
