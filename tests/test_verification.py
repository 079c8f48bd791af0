"""Verification metrics (used for E_Arcface, paper Sec. 3.2, and the FaceNet evaluator, Sec. 4)."""

import numpy as np
import pytest
import torch

from drdpgan.verification import (
    accuracy_at,
    best_threshold,
    cosine_band_stats,
    embed,
    make_pairs,
    pair_cosines,
    verification_accuracy,
)


def test_make_pairs_counts_no_self_pairs_deterministic():
    labels = np.repeat(np.arange(10), 5)
    a, b, same = make_pairs(labels, 30, 50, seed=7)
    assert len(a) == len(b) == len(same) == 80
    assert same.sum() == 30 and (~same).sum() == 50
    assert np.all(a != b)
    np.testing.assert_array_equal(labels[a] == labels[b], same)
    # distinct unordered pairs while enough exist
    keys = {(min(i, j), max(i, j)) for i, j in zip(a, b)}
    assert len(keys) == 80
    a2, b2, s2 = make_pairs(labels, 30, 50, seed=7)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(same, s2)
    a3, _, _ = make_pairs(labels, 30, 50, seed=8)
    assert not np.array_equal(a, a3)


def test_make_pairs_skips_singletons_and_errors():
    labels = np.array([0, 0, 1, 2, 3])  # only label 0 has two items
    a, b, same = make_pairs(labels, 3, 4, seed=0)
    assert set(np.concatenate([a[same], b[same]])) == {0, 1}
    with pytest.raises(ValueError):
        make_pairs(np.array([0, 1, 2]), 1, 1, seed=0)


def test_pair_cosines_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    c = pair_cosines(emb, [0, 0, 1], [1, 2, 2])
    np.testing.assert_allclose(c, [0.0, 1 / np.sqrt(2), 1 / np.sqrt(2)], atol=1e-12)


def test_perfectly_separable():
    cos = np.array([0.9, 0.8, 0.7, 0.2, 0.1, -0.3] * 5)
    same = np.array([True, True, True, False, False, False] * 5)
    t, acc = best_threshold(cos, same)
    assert acc == 1.0 and 0.2 < t < 0.7
    res = verification_accuracy(cos, same)
    assert res["acc"] == 1.0 and res["auc"] == 1.0
    assert res["protocol"] == "10-fold" and len(res["fold_acc"]) == 10


def test_calibration_threshold_applied_to_test():
    # calibration pairs: separable at any t in (0.4, 0.6); best_threshold takes the midpoint 0.5
    cos_cal = np.array([0.9, 0.6, 0.4, 0.1])
    same_cal = np.array([True, True, False, False])
    t, acc = best_threshold(cos_cal, same_cal)
    assert t == pytest.approx(0.5) and acc == 1.0
    # test pairs: at t = 0.5 predictions are [F, T, F, T] vs truth [T, T, F, F] -> 0.5
    cos_te = np.array([0.45, 0.55, 0.3, 0.7])
    same_te = np.array([True, True, False, False])
    res = verification_accuracy(cos_te, same_te, cos_cal, same_cal)
    assert res["protocol"] == "calibration"
    assert res["threshold"] == pytest.approx(0.5)
    assert res["acc"] == pytest.approx(0.5)
    assert res["acc_calib"] == 1.0
    # AUC by hand: same scores {0.45, 0.55}, diff {0.3, 0.7}: 2 of 4 orderings right -> 0.5
    assert res["auc"] == pytest.approx(0.5)
    assert accuracy_at(cos_te, same_te, 0.0) == 0.5


def test_best_threshold_by_hand():
    cos = np.array([0.1, 0.2, 0.3, 0.4])
    same = np.array([False, True, False, True])
    t, acc = best_threshold(cos, same)
    # t in (0.3, 0.4] -> [F,F,F,T]: 3/4; t in (0.1, 0.2] -> [F,T,T,T]: 3/4; nothing gets 4/4
    assert acc == 0.75
    assert accuracy_at(cos, same, t) == 0.75


def test_embed_tensor_and_dataset_restores_mode():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)

        def forward(self, x):
            assert not self.training and not torch.is_grad_enabled()
            return self.lin(x.mean(dim=(2, 3)))

    class DS(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"image": self.x[i], "identity": torch.tensor(0), "index": i}

    m = M().train()
    x = torch.randn(10, 3, 8, 8)
    e1 = embed(m, x, batch_size=3)
    e2 = embed(m, DS(x), batch_size=4)
    assert e1.shape == (10, 4) and m.training
    torch.testing.assert_close(e1, e2)


def test_cosine_band_stats_by_hand():
    cos = np.array([0.05, 0.1, 0.25, 0.4, 0.5, 0.65, 0.9, 0.55])
    same = np.array([False, False, False, False, False, True, True, True])
    st = cosine_band_stats(cos, same)
    assert st["n_diff"] == 5 and st["n_same"] == 3
    assert st["frac_diff_in_band"] == pytest.approx(3 / 5)  # 0.1, 0.25, 0.4 (closed band)
    assert st["frac_diff_below_band"] == pytest.approx(1 / 5)
    assert st["frac_diff_above_band"] == pytest.approx(1 / 5)
    assert st["frac_same_in_band"] == pytest.approx(2 / 3)
    assert st["same_mean"] == pytest.approx((0.65 + 0.9 + 0.55) / 3)
    assert sum(st["hist_same"]) == 3 and sum(st["hist_diff"]) == 5
    assert len(st["bin_edges"]) == len(st["hist_same"]) + 1
    assert st["diff_band"] == [0.1, 0.4] and st["same_band"] == [0.6, 1.0]
