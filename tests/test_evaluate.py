"""Evaluation protocol: image metrics against hand-computed values, identity cosines,
the Table 1 classifier protocol on a toy, projections, diversity, paper numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drdpgan import evaluate as ev
from drdpgan import protocol as pr
from drdpgan.models.binary_code import bit_error_rate, float_mse


def _u(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] -> [-1,1] (the package's image range)."""
    return x01 * 2 - 1


# --------------------------------------------------------------------------- image metrics


def test_to_unit_range():
    x = torch.tensor([-1.0, 0.0, 1.0, 1.5, -3.0])
    assert torch.allclose(ev.to_unit_range(x), torch.tensor([0.0, 0.5, 1.0, 1.0, 0.0]))
    assert torch.allclose(ev.to_unit_range(x, clamp=False), torch.tensor([0.0, 0.5, 1.0, 1.25, -1.0]))


def test_mae_known_values():
    a = torch.zeros(2, 3, 4, 4)  # [0,1]: 0.5 everywhere
    b = a.clone()
    b[0] += 0.2  # +0.1 in [0,1] on image 0
    b[1, 0] -= 0.6  # -0.3 in [0,1] on one of three channels of image 1 -> 0.1 per image
    assert ev.mae(a, b) == pytest.approx(0.1, abs=1e-7)
    per = ev.mae(a, b, reduction="none")
    assert per.shape == (2,) and torch.allclose(per, torch.tensor([0.1, 0.1]), atol=1e-7)
    # already in [0,1]
    assert ev.mae(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.25), unit_range=True) == pytest.approx(0.25)


def test_psnr_constant_offset_is_20db():
    x01 = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    y01 = x01 + 0.1  # constant offset 0.1 in [0,1] -> MSE 0.01 -> 20 dB exactly
    # torchmetrics' float32 log form: measured 1.7e-6 dB off
    assert ev.psnr(_u(x01), _u(y01)) == pytest.approx(20.0, abs=1e-5)
    assert ev.psnr(x01, y01, unit_range=True) == pytest.approx(20.0, abs=1e-5)
    # data_range 255 on the same geometry: offset 25.5 of 255 is still 20 dB
    assert ev.psnr(x01 * 255, y01 * 255, unit_range=True, data_range=255.0) == pytest.approx(20.0, abs=1e-5)


def test_psnr_gaussian_noise_and_per_image_mean():
    g = torch.Generator().manual_seed(1)
    x01 = torch.full((4, 3, 64, 64), 0.5)
    sigma = 0.05  # no clipping at 0.5 +- 10 sigma; PSNR ~ -20 log10(sigma) = 26.02 dB
    y01 = x01 + sigma * torch.randn(x01.shape, generator=g)
    assert ev.psnr(_u(x01), _u(y01)) == pytest.approx(-20 * math.log10(sigma), abs=0.1)
    # per-image mean of PSNRs, not PSNR of the mean MSE
    a = torch.full((2, 3, 4, 4), 0.5)
    b = a.clone()
    b[0] += 0.1  # 20 dB
    b[1] += 0.01  # 40 dB
    assert ev.psnr(a, b, unit_range=True) == pytest.approx(30.0, abs=1e-4)
    assert torch.allclose(ev.psnr(a, b, unit_range=True, reduction="none"), torch.tensor([20.0, 40.0]), atol=1e-4)
    # identical images: capped, finite
    assert ev.psnr(a, a, unit_range=True) == pytest.approx(100.0)


def test_ssim_identity_constant_and_noise():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert ev.ssim(x, x) == pytest.approx(1.0, abs=1e-9)
    # constant images a, b in [0,1]: variances 0 -> SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = 0.3, 0.6
    c1 = 0.01**2
    expect = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ev.ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b), unit_range=True)
    assert got == pytest.approx(expect, abs=1e-9)
    # decreasing with noise
    vals = [ev.ssim(x, (x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1)) for s in (0.02, 0.1, 0.4)]
    assert 1.0 > vals[0] > vals[1] > vals[2]
    with pytest.raises(ValueError):
        ev.ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def _analytic_pair():
    i = np.arange(24)[:, None]
    j = np.arange(24)[None, :]
    x = np.stack([0.5 + 0.4 * np.sin(i / 3.0 + c) * np.cos(j / 4.0) for c in range(3)], 0)
    y = np.clip(x + 0.15 * np.sin(i * j / 7.0 + 1.0), 0, 1)
    return torch.from_numpy(y)[None], torch.from_numpy(x)[None]


def test_ssim_matches_skimage_reference_value():
    """Value computed with scikit-image 0.26.0: ``structural_similarity(y, x, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)`` on HWC arrays."""
    y, x = _analytic_pair()
    assert ev.ssim(y, x, unit_range=True) == pytest.approx(0.6754701891903118, abs=1e-9)


def test_ssim_matches_skimage_if_installed():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image not installed (value pinned above)")
    y, x = _analytic_pair()
    ref = skm.structural_similarity(y[0].permute(1, 2, 0).numpy(), x[0].permute(1, 2, 0).numpy(),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=2)
    assert ev.ssim(y, x, unit_range=True) == pytest.approx(float(ref), abs=1e-9)


def test_ssim_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image", reason="torchmetrics not installed")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 40, 40, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    # torchmetrics averages its SSIM map over the reflect-padded border too; Wang / skimage
    # (and ev.ssim) average the valid positions only: crop torchmetrics' full map by 5 px.
    _, full = tm.structural_similarity_index_measure(y, x, data_range=1.0, reduction="none",
                                                     return_full_image=True)
    ref = full[..., 5:-5, 5:-5].flatten(1).mean(1)
    ours = ev.ssim(y, x, unit_range=True, reduction="none")
    assert torch.allclose(ours, ref.float(), atol=1e-5)
    ref_psnr = tm.peak_signal_noise_ratio(y[:1], x[:1], data_range=1.0)
    assert ev.psnr(y[:1], x[:1], unit_range=True) == pytest.approx(float(ref_psnr), abs=1e-3)


def test_ber_and_fmse_reexported():
    pred = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 0]]).float()
    true = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 1]]).float()
    assert bit_error_rate(pred, true) == pytest.approx(2 / 8)
    assert ev.bit_error_rate is bit_error_rate and ev.float_mse is float_mse
    assert float_mse(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])) == pytest.approx(2.5)


# --------------------------------------------------------------------------- identity cosines


def test_cosine_known_vectors():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-1.0, 0.0]])
    assert np.allclose(ev.cosine(a, b), [0.0, 1.0, -1.0])


def test_identity_cosines_with_fake_embed():
    def embed_fn(x):  # mean colour per channel as a 3-d "embedding"
        return x.mean(dim=(2, 3))

    orig = torch.zeros(5, 3, 8, 8)
    orig[:, 0] = 1.0  # red
    same = orig.clone()
    other = torch.zeros(5, 3, 8, 8)
    other[:, 1] = 1.0  # green: orthogonal
    assert np.allclose(ev.identity_cosines(embed_fn, orig, same, batch_size=2), 1.0)
    assert np.allclose(ev.identity_cosines(embed_fn, orig, other, batch_size=3), 0.0)
    with pytest.raises(ValueError):
        ev.identity_cosines(embed_fn, orig, other[:4])


def test_identity_cosines_module_eval_mode_restored():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.Dropout(0.5))
    net.train()
    x = torch.randn(6, 3, 2, 2)
    c1 = ev.identity_cosines(net, x, x)
    assert np.allclose(c1, 1.0)  # eval mode: dropout off, deterministic
    assert net.training


def test_diversity_matrix():
    v = torch.zeros(3, 3, 4, 4)
    v[0, 0] = 1
    v[1, 1] = 1
    v[2, 0] = 1
    v[2, 1] = 1
    m, off = ev.diversity_matrix(lambda x: x.mean(dim=(2, 3)), v)
    s = 1 / math.sqrt(2)
    expect = np.array([[1, 0, s], [0, 1, s], [s, s, 1]])
    assert np.allclose(m, expect)
    assert off == pytest.approx(2 * s / 3)


# --------------------------------------------------------------------------- Table 1 protocol


def test_tensor_face_dataset_items():
    ds = pr.TensorFaceDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0, 1, 1, 2])
    item = ds[2]
    assert set(item) == {"image", "identity", "index"}
    assert item["image"].dtype == torch.float32 and float(item["image"].min()) == -1.0
    assert item["identity"].dtype == torch.int64 and int(item["identity"]) == 1 and item["index"] == 2
    assert ds.n_identities == 3 and ds.image_size == 8 and len(ds) == 4


def _colour_toy(n, shift, gen):
    cols = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    y = torch.arange(n) % 3
    x = cols[(y + shift) % 3][:, :, None, None] * 0.7 + 0.1 * torch.randn(n, 3, 16, 16, generator=gen)
    return x.clamp(-1, 1), y


@pytest.mark.slow
def test_table1_protocol_toy():
    """3 colour 'identities'. Trained on real-like images -> recognises held-out ones; trained on
    'anonymized' images whose colour no longer matches the original label -> accuracy 0."""
    from drdpgan.models.facenet import FaceNetConfig
    from drdpgan.train_priors import FaceNetTrainConfig

    g = torch.Generator().manual_seed(0)
    x_train, y_train = _colour_toy(24, 0, g)
    x_test, y_test = _colour_toy(12, 0, g)
    x_anon, y_anon = _colour_toy(24, 1, g)
    cfg = FaceNetConfig(input_size=75, repeats=(0, 0, 0), dropout_prob=0.0)
    tcfg = FaceNetTrainConfig(epochs=8, batch_size=8, warmup_steps=2, lr=3e-3, shift=0)
    test_ds = pr.TensorFaceDataset(x_test, y_test, n_identities=3)
    rec = pr.table1_classifier_protocol(x_train, y_train, test_ds, 3, cfg=cfg, seed=0, tcfg=tcfg)
    anon = pr.table1_classifier_protocol(x_anon, y_anon, (x_test, y_test), 3, cfg=cfg, seed=0, tcfg=tcfg)
    assert rec["chance"] == pytest.approx(1 / 3) and rec["n_train"] == 24 and rec["n_test"] == 12
    assert rec["acc"] >= 0.9
    assert anon["acc"] <= 0.1
    assert anon["n_test"] == 12


def test_table1_classifier_starts_from_the_evaluator_backbone_when_asked():
    """cls_init: "scratch" gives no initial state, "evaluator" the evaluator's, refused when the classifiers'
    architecture differs; the classifier's embedding network starts from that state (lr 0: it stays there)."""
    from drdpgan.models.facenet import FaceNetConfig, FaceNetEvaluator
    from drdpgan.train_priors import FaceNetTrainConfig

    torch.manual_seed(123)  # not the classifiers' seed, so scratch and evaluator starts differ
    evaluator = FaceNetEvaluator(FaceNetConfig(input_size=75, repeats=(0, 0, 0), n_classes=5)).eval()
    p12 = {"cls_input_size": 75, "cls_repeats": [0, 0, 0], "cls_epochs": 1, "cls_batch_size": 8, "cls_lr": 0.0}
    assert pr.classifier_init({**p12, "cls_init": "scratch"}, evaluator) is None
    assert pr.classifier_init(p12, evaluator) is None  # the default
    state = pr.classifier_init({**p12, "cls_init": "evaluator"}, evaluator)
    assert state.keys() == evaluator.state_dict().keys()
    with pytest.raises(ValueError, match="cls_repeats"):
        pr.classifier_init({**p12, "cls_init": "evaluator", "cls_repeats": [1, 1, 1]}, evaluator)
    with pytest.raises(ValueError, match="'scratch' or 'evaluator'"):
        pr.classifier_init({**p12, "cls_init": "imagenet"}, evaluator)
    g = torch.Generator().manual_seed(0)
    x, y = _colour_toy(8, 0, g)
    cfg, _ = pr.classifier_configs(p12)
    tcfg = FaceNetTrainConfig(epochs=1, batch_size=8, lr=0.0, warmup_steps=0)
    out = {}
    for how in ("scratch", "evaluator"):
        out[how] = pr.table1_classifier_protocol(x, y, (x, y), 3, cfg=cfg, tcfg=tcfg, return_model=True,
                                                 init_state=pr.classifier_init({**p12, "cls_init": how}, evaluator))
    # parameters (batch norm's running statistics move with every training batch, lr or not)
    net = {k: v for k, v in out["evaluator"]["model"].named_parameters() if k.startswith("net.")}
    ev = dict(evaluator.named_parameters())
    assert all(torch.equal(v, ev[k]) for k, v in net.items())
    fresh = dict(out["scratch"]["model"].named_parameters())
    assert not any(torch.equal(fresh[k], v) for k, v in net.items() if v.numel() > 1 and v.std() > 0)
    assert out["evaluator"]["model"].cfg.n_classes == 3  # a new head over the given classes


# --------------------------------------------------------------------------- Figure 8


def _groups(seed=0, n=12, d=16):
    r = np.random.default_rng(seed)
    base = r.normal(size=(n, d))
    return {"original": base, "anonymized": r.normal(size=(n, d)), "recovered": base + 0.1 * r.normal(size=(n, d))}


@pytest.mark.parametrize("method,dims", [("pca", 2), ("pca", 3), ("tsne", 2)])
def test_embedding_projection_shapes_and_determinism(method, dims):
    groups = _groups()
    kw = {"max_iter": 250} if method == "tsne" else {}
    p1 = ev.embedding_projection(groups, method=method, dims=dims, seed=0, **kw)
    p2 = ev.embedding_projection(groups, method=method, dims=dims, seed=0, **kw)
    assert list(p1) == ["original", "anonymized", "recovered"]
    for k in p1:
        assert p1[k].shape == (12, dims)
        assert np.allclose(p1[k], p2[k])
    with pytest.raises(ValueError):
        ev.embedding_projection(groups, method=method, dims=4)


def test_embedding_projection_is_joint():
    """One fit on all groups: a group that repeats another lands on the same points."""
    g = _groups()
    g["copy"] = g["original"].copy()
    p = ev.embedding_projection(g, "pca", 2)
    assert np.allclose(p["copy"], p["original"])


def test_plot_identity_distribution():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = ev.plot_identity_distribution(_groups(), identities=np.arange(12) % 4, title="t")
    assert len(fig.axes) == 2 and fig.axes[0].name == "3d"
    plt.close(fig)


# --------------------------------------------------------------------------- paper numbers


def test_paper_reference_numbers():
    ref = pr.paper_reference()

    def val(key, col, dataset=None):
        rows = ref[ref["key"] == key]
        if dataset:
            rows = rows[rows["dataset"] == dataset]
        assert len(rows) == 1
        return float(rows[col].iloc[0])

    assert val("cls.acc_anonymized", "ours") == pytest.approx(0.0685)
    assert val("cls.acc_recovered", "RiDDLE") == pytest.approx(0.9236)
    assert val("cls.acc_anonymized", "FIT") == pytest.approx(0.0963)
    assert val("anon.cos", "ours") == 0.103 and val("rec.cos", "FIT") == 0.760
    assert val("rec.mae", "ours") == 0.055 and val("rec.psnr", "ours") == 23.029
    assert val("password.fmse", "ours", "CASIA") == 0.0013
    assert val("password.ber", "ours", "CelebA-HQ") == 0.0001
    assert math.isnan(val("password.ber", "RiDDLE", "CASIA"))


def test_comparison_table():
    measured = {"rec.psnr": 25.0, "anon.cos_dlib": 0.2, "rec.ssim": 0.8}
    df = pr.comparison_table(measured, keys=["rec.psnr", "anon.cos_dlib", "rec.ssim", "rec.mae", "password.ber"])
    assert list(df.columns)[:6] == ["metric", "key", "package", "paper", "RiDDLE", "FIT"]
    row = df[df["key"] == "rec.psnr"].iloc[0]
    assert row["package"] == 25.0 and row["paper"] == 23.029 and row["FIT"] == 19.215
    assert df[df["key"] == "anon.cos_dlib"].iloc[0]["paper"] == 0.103  # alias of anon.cos
    assert math.isnan(df[df["key"] == "rec.ssim"].iloc[0]["paper"])
    assert math.isnan(df[df["key"] == "rec.mae"].iloc[0]["package"])
    assert (df["key"] == "password.ber").sum() == 2  # CelebA-HQ and CASIA
    one = pr.comparison_table(measured, keys=["password.ber"], dataset="CASIA")
    assert len(one) == 1 and one.iloc[0]["paper_dataset"] == "CASIA"
    full = pr.comparison_table(measured)
    assert "cls.acc_recovered" in set(full["key"]) and "rec.ssim" in set(full["key"])


def test_ssim_in_chunks_equals_all_at_once():
    """``chunk`` bounds the memory (the cpu profile's 1,200 faces at once asked for 23.8 GB); per-image values and
    their mean do not depend on it."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(7, 3, 16, 16, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    whole = ev.ssim(y, x, unit_range=True, reduction="none", chunk=7)
    assert torch.allclose(ev.ssim(y, x, unit_range=True, reduction="none", chunk=3), whole, atol=1e-7)
    assert ev.ssim(y, x, unit_range=True, chunk=2) == pytest.approx(float(whole.mean()), abs=1e-7)
