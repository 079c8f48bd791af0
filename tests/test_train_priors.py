"""The priors' training loop resumes exactly: a run killed after a saved state and restarted in the
same folder ends bit-identical to an uninterrupted run (same machine, same thread count)."""

import pytest
import torch

import drdpgan.loop as training_loop
from drdpgan.models.identity import IdentityEncoderConfig
from drdpgan.train_priors import IdentityTrainConfig, Prior3DTrainConfig, train_identity_encoder, train_prior3d

from test_prior3d import TINY, RampWorld
from toys import ColourWorld


_REAL_TQDM = training_loop.tqdm


class _Killed(RuntimeError):
    pass


def _killing_tqdm(at_step: int):
    """tqdm stand-in whose bar dies when the loop reports step ``at_step`` (before that step's state is saved)."""
    class KillAt(_REAL_TQDM):
        starts: list[int] = []

        def __init__(self, *args, initial=0, **kwargs):
            super().__init__(*args, initial=initial, **kwargs)
            self.steps_seen = initial
            self.starts.append(initial)

        def update(self, n=1):
            super().update(n)
            self.steps_seen += n
            if self.steps_seen >= at_step:
                raise _Killed(f"killed at step {self.steps_seen}")

    return KillAt


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind,legacy", [("identity", False), ("prior3d", False), ("identity", True)])
def test_resume_is_bit_identical(tmp_path, monkeypatch, kind, legacy):
    """``legacy``: the killed run's state rewritten as the single ``train_state.pt`` older runs left (modules as a
    list); the resume reads it and, at its next save, replaces it with a run-folder checkpoint."""
    torch.set_num_threads(1)
    if kind == "identity":
        data = ColourWorld(per_class=12, size=32)
        cfg = IdentityEncoderConfig(widths=(8, 16, 16, 32), layers=(1, 1, 1, 1), embedding_dim=32)
        tcfg = IdentityTrainConfig(seed=3, epochs=3, batch_size=8, lr=0.05, warmup_steps=2, margin_warmup_steps=5,
                                   shift=2, checkpoint_every=4)

        def train(out):
            return train_identity_encoder(data, cfg, tcfg, out_dir=out, progress=False)
    else:
        data = RampWorld(64, seed=0)
        tcfg = Prior3DTrainConfig(seed=4, epochs=3, batch_size=16, lr=3e-3, warmup_steps=2, flip_p=0.5,
                                  flip_expression_perm=(1, 0), checkpoint_every=3)

        def train(out):
            return train_prior3d(data, TINY, tcfg, out_dir=out, progress=False)

    full, hist_full = train(tmp_path / "full")
    # killed mid-epoch (step 10 is inside the second or third epoch), after a saved state
    monkeypatch.setattr(training_loop, "tqdm", _killing_tqdm(10))
    with pytest.raises(_Killed):
        train(tmp_path / "resumed")
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").glob("*.pt")] == (
        ["ckpt_0000008.pt"] if kind == "identity" else ["ckpt_0000009.pt"])  # the newest state alone
    if legacy:
        ck_path = tmp_path / "resumed" / "checkpoints" / "ckpt_0000008.pt"
        st = torch.load(ck_path, weights_only=False)
        st["modules"] = [st.pop(k) for k in sorted(k for k in list(st) if k.startswith("module"))]
        del st["epoch_sums"]  # older states did not keep the epoch's running sums
        torch.save(st, tmp_path / "resumed" / "train_state.pt")
        ck_path.unlink()
    resuming = _killing_tqdm(10**9)
    monkeypatch.setattr(training_loop, "tqdm", resuming)
    resumed, hist_res = train(tmp_path / "resumed")
    assert resuming.starts == [8] if kind == "identity" else resuming.starts == [9]  # the last saved state
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert hist_res["step_loss"] == hist_full["step_loss"]
    assert hist_res["steps"] == hist_full["steps"]
    summary = [[e[k] for k in ("epoch", "loss", "acc", "steps")] for e in hist_full["epochs"]]
    resumed_summary = [[e[k] for k in ("epoch", "loss", "acc", "steps")] for e in hist_res["epochs"]]
    if legacy:  # the resumed epoch's summary covers the steps since the resume
        assert resumed_summary[0] == summary[0] and resumed_summary[1][3] < summary[1][3]
        assert not (tmp_path / "resumed" / "train_state.pt").exists()
    else:
        assert resumed_summary == summary


def test_resume_refuses_another_recipe(tmp_path, monkeypatch):
    data = RampWorld(64, seed=0)
    tcfg = Prior3DTrainConfig(seed=4, epochs=2, batch_size=16, checkpoint_every=2)
    monkeypatch.setattr(training_loop, "tqdm", _killing_tqdm(3))
    with pytest.raises(_Killed):
        train_prior3d(data, TINY, tcfg, out_dir=tmp_path, progress=False)
    monkeypatch.setattr(training_loop, "tqdm", _REAL_TQDM)
    with pytest.raises(ValueError, match="different training config.*lr"):
        train_prior3d(data, TINY, Prior3DTrainConfig(seed=4, epochs=2, batch_size=16, lr=1e-2, checkpoint_every=2),
                      out_dir=tmp_path, progress=False)


def test_coefficient_faces_concat():
    from drdpgan.data.datasets import CoefficientFaces

    a = CoefficientFaces(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.zeros(3, 5), torch.zeros(3, 3))
    b = CoefficientFaces(torch.full((2, 3, 8, 8), 255, dtype=torch.uint8), torch.ones(2, 5), torch.ones(2, 3))
    c = CoefficientFaces.concat([(a, 1), (b, 3)])
    assert len(c) == 9 and c.coeffs["pose"].shape == (9, 3)
    item = c[8]
    assert item["image"].max() == 1.0 and torch.equal(item["coeffs"]["expression"], torch.ones(5))
    with pytest.raises(ValueError, match="coefficient rows"):
        CoefficientFaces(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 5), torch.zeros(3, 3))
