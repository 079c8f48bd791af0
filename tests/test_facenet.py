"""FaceNet evaluator (paper Sec. 4, Tables 1-2): facenet-pytorch InceptionResnetV1 from scratch."""

import pytest
import torch

from drdpgan.models.facenet import FULL_REPEATS, FaceNetConfig, FaceNetEvaluator, classifier_accuracy
from drdpgan.models.identity import count_parameters
from drdpgan.repro import seed_everything
from drdpgan.checkpoints import load_model
from drdpgan.train_priors import FaceNetTrainConfig, train_facenet, train_facenet_classifier
from toys import ColourWorld

SMALL = FaceNetConfig(input_size=75, repeats=(1, 1, 1))




@pytest.fixture(scope="module")
def full_model():
    seed_everything(0)
    return FaceNetEvaluator(FaceNetConfig(n_classes=7)).eval()


@pytest.mark.parametrize("size", [32, 64, 256])
def test_full_network_forward_shapes(full_model, size):
    model = full_model
    assert model.cfg.repeats == FULL_REPEATS and model.cfg.input_size == 96
    assert 23_000_000 < count_parameters(model.net) < 24_000_000
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        emb = model(x)
        logits = model.logits(x)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    assert logits.shape == (2, 7)
    assert model.predict(x).shape == (2,)


def test_config_validation_and_truncation():
    with pytest.raises(ValueError):
        FaceNetConfig(input_size=64)
    with pytest.raises(ValueError):
        FaceNetConfig(repeats=(6, 10, 5))
    small = FaceNetEvaluator(SMALL)
    assert len(small.net.repeat_1) == 1 and len(small.net.repeat_2) == 1 and len(small.net.repeat_3) == 1
    assert small.head is None
    with pytest.raises(RuntimeError):
        small.logits(torch.zeros(1, 3, 75, 75))


def test_classifier_accuracy_matches_predict():
    seed_everything(0)
    model = FaceNetEvaluator(FaceNetConfig(input_size=75, repeats=(1, 1, 1), n_classes=4))
    ds = ColourWorld(per_class=3)
    pred = model.eval().predict(ds.x)
    expected = float((pred == torch.as_tensor(ds.labels)).float().mean())
    assert classifier_accuracy(model, ds, batch_size=5) == pytest.approx(expected)
    assert classifier_accuracy(model, (ds.x, torch.as_tensor(ds.labels))) == pytest.approx(expected)


def test_tiny_classifier_training_on_colours(tmp_path):
    train, test = ColourWorld(per_class=8, seed=0), ColourWorld(per_class=4, seed=1)
    tcfg = FaceNetTrainConfig(seed=5, epochs=6, batch_size=8, lr=2e-3, warmup_steps=1, shift=0, num_threads=1)
    model = train_facenet_classifier(train, 4, SMALL, progress=False, tcfg=tcfg, out_dir=tmp_path)
    hist = model.train_history
    assert hist["steps"] == 24 and hist["n_classes"] == 4
    assert hist["epochs"][-1]["loss"] < hist["epochs"][0]["loss"]
    acc = classifier_accuracy(model, test)
    assert acc >= 0.75
    loaded, _ = load_model(tmp_path / "facenet.pt")
    assert classifier_accuracy(loaded, test) == acc


def test_arcface_head_variant_trains_one_step():
    ds = ColourWorld(per_class=4)
    cfg = FaceNetConfig(input_size=75, repeats=(1, 1, 1), head="arcface", arcface_s=16.0)
    model, hist = train_facenet(ds, cfg, FaceNetTrainConfig(max_steps=1, batch_size=16, num_threads=1), progress=False)
    assert hist["steps"] == 1
    assert model(ds.x[:2]).shape == (2, 512)
    assert model.predict(ds.x[:2]).shape == (2,)
