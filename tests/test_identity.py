"""E_Arcface (paper Sec. 3.2): IResNet encoder shapes, ArcFace margin logits, determinism, training."""

import math

import pytest
import torch

from drdpgan.models.identity import ArcFaceHead, IdentityEncoder, IdentityEncoderConfig, count_parameters
from drdpgan.repro import seed_everything
from drdpgan.checkpoints import load_model
from drdpgan.train_priors import IdentityTrainConfig, train_identity_encoder
from drdpgan.verification import embed, make_pairs, pair_cosines, verification_accuracy
from toys import ColourWorld

TINY = IdentityEncoderConfig(working_size=32, stem_width=8, widths=(8, 16), layers=(1, 1))




@pytest.mark.parametrize("size", [32, 64, 256])
def test_default_encoder_shapes_and_unit_norm(size):
    seed_everything(0)
    enc = IdentityEncoder(IdentityEncoderConfig()).eval()
    with torch.no_grad():
        out = enc(torch.rand(2, 3, size, size) * 2 - 1)
    assert out.shape == (2, 512)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)


def test_default_encoder_is_cpu_sized():
    enc = IdentityEncoder()
    assert enc.cfg == IdentityEncoderConfig()
    assert 1_000_000 <= count_parameters(enc) <= 3_000_000
    # the frozen BN1d scale of insightface's embedding head
    assert not enc.features.weight.requires_grad


def test_arcface_target_logit_is_s_cos_theta_plus_m():
    torch.manual_seed(0)
    s, m = 64.0, 0.5
    head = ArcFaceHead(8, 5, s=s, m=m)
    emb = torch.randn(3, 8)
    labels = torch.tensor([0, 3, 4])
    with torch.no_grad():
        # put each target class centre at a known angle (0.3, 1.0, 2.0 rad) from its embedding
        e = emb / emb.norm(dim=1, keepdim=True)
        for i, (y, th) in enumerate(zip(labels.tolist(), [0.3, 1.0, 2.0])):
            ortho = torch.randn(8)
            ortho -= (ortho @ e[i]) * e[i]
            ortho /= ortho.norm()
            head.weight[y] = math.cos(th) * e[i] + math.sin(th) * ortho
    logits = head(emb, labels)
    cos = head.cosine(emb)
    # hand computation
    for i, (y, th) in enumerate(zip(labels.tolist(), [0.3, 1.0, 2.0])):
        assert cos[i, y].item() == pytest.approx(math.cos(th), abs=1e-5)
        assert logits[i, y].item() == pytest.approx(s * math.cos(th + m), abs=1e-3)
        others = [j for j in range(5) if j != y]
        torch.testing.assert_close(logits[i, others], s * cos[i, others])
    # without labels: plain scaled cosines
    torch.testing.assert_close(head(emb), s * cos)


def test_arcface_threshold_and_easy_margin():
    m, s = 0.5, 32.0
    for easy in (False, True):
        head = ArcFaceHead(2, 2, s=s, m=m, easy_margin=easy)
        with torch.no_grad():
            head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        th = 3.0  # theta + m > pi: cos(theta) < cos(pi - m)
        emb = torch.tensor([[math.cos(th), math.sin(th)]])
        logit = head(emb, torch.tensor([0]))[0, 0].item()
        c = math.cos(th)
        if easy:
            expected = c  # cos < 0: no margin
        else:
            expected = c - math.sin(math.pi - m) * m  # linear continuation of the reference
        assert logit == pytest.approx(s * expected, abs=1e-4)
        # a small angle gets the margin in both modes
        emb2 = torch.tensor([[math.cos(0.2), math.sin(0.2)]])
        assert head(emb2, torch.tensor([0]))[0, 0].item() == pytest.approx(s * math.cos(0.7), abs=1e-4)


def test_encoder_deterministic_under_seed():
    x = torch.rand(3, 3, 40, 40) * 2 - 1
    outs = []
    for _ in range(2):
        seed_everything(123)
        enc = IdentityEncoder(TINY).eval()
        with torch.no_grad():
            outs.append(enc(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_tiny_training_lowers_loss_and_separates_colours(tmp_path):
    ds = ColourWorld(per_class=16, seed=0)
    tcfg = IdentityTrainConfig(seed=3, epochs=6, batch_size=16, lr=0.05, warmup_steps=2, margin_warmup_steps=1,
                               arcface_s=16.0, arcface_m=0.3, shift=1, grad_clip=5.0, num_threads=1)
    enc, hist = train_identity_encoder(ds, TINY, tcfg, out_dir=tmp_path, progress=False)
    assert hist["steps"] == 6 * 4
    first, last = hist["epochs"][0]["loss"], hist["epochs"][-1]["loss"]
    assert last < first
    assert not enc.training
    # embeddings of held-out noise samples verify perfectly by colour
    test = ColourWorld(per_class=8, seed=1)
    e = embed(enc, test)
    a, b, same = make_pairs(test.labels, 40, 40, seed=0)
    res = verification_accuracy(pair_cosines(e, a, b), same)
    assert res["auc"] > 0.95
    # same seed -> same history; checkpoint round trip
    _, hist2 = train_identity_encoder(ds, TINY, tcfg, progress=False)
    assert hist2["step_loss"] == hist["step_loss"]
    enc2, _ = load_model(tmp_path / "identity_encoder.pt")
    torch.testing.assert_close(embed(enc2, test), e)
    assert (tmp_path / "identity_encoder_history.json").is_file()
