"""Training loops for the three prior networks the paper takes pretrained.

* :func:`train_identity_encoder` -- ``E_Arcface`` (paper Sec. 3.2 / 3.4): the IResNet of
  :mod:`drdpgan.models.identity` with an ArcFace additive-angular-margin head.
* :func:`train_facenet` / :func:`train_facenet_classifier` -- the FaceNet evaluator of the
  experiments (Sec. 4, Tables 1-2), facenet-pytorch's InceptionResnetV1 from scratch; the
  classifier variant is the Table 1 protocol (train on anonymized/recovered images labelled
  with the original identities, test on real held-out images: :func:`classifier_accuracy`).
* :func:`train_prior3d` -- the Deep3DFaceRecon stand-in (Sec. 3.3) regressing the synthetic
  world's expression and pose coefficients.

All trainers: an explicit ``seed`` in their train config (``seed_everything`` is called first,
so model initialisation, the shuffling ``DataLoader`` -- ``num_workers=0``, seeded
``generator`` -- and the augmentation generator are all determined by it), a tqdm progress
bar, and a ``history`` dict (per-step loss / accuracy, per-epoch summaries, wall time).

CPU threads: on a 2-core machine shared with other processes, torch's default 2 intra-op
threads can be several times *slower* than 1 (OpenMP threads spin-waiting for a busy core:
measured 0.8 s vs 4-7 s per identity-encoder step at batch 128 under load 5); alone on the
machine 2 threads take ~0.37 s. ``num_threads`` in each train config sets the thread count for
the duration of the training (restored afterwards).
Datasets follow the project's contract: items ``{"image": (3,H,W) in [-1,1], "identity":
int64, "index": int, ["coeffs": {"expression": (Ke,), "pose": (3,)}]}``, with ``.labels`` and
``.n_identities`` on the dataset.

Augmentation: random horizontal flip (on by default for identity/FaceNet -- a mirror face is
the same person; in the synthetic world the flip negates yaw/roll, which does not matter for
identity) and optional random translation by up to ``shift`` pixels (reflect padding). For the
3D prior the flip is off by default; when enabled, the target pose becomes
``(-yaw, pitch, -roll)`` and the expression is permuted by ``flip_expression_perm`` (the
world's eye closures swap; None keeps it, for a left/right-symmetric basis).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models.facenet import FaceNetConfig, FaceNetEvaluator, classifier_accuracy
from .models.identity import ArcFaceHead, IdentityEncoder, IdentityEncoderConfig, count_parameters
from .models.prior3d import (
    Prior3DConfig,
    Prior3DRegressor,
    flip_pose,
    pose_flip_consistency,
    predict_prior3d,
    r2_per_coefficient,
)
from . import distributed as ddp
from .checkpoints import save_checkpoint
from .loop import Every, StepLoop, step_schedule
from .runlog import latest_checkpoint, load_states, save_rotating, states_of
from .distributed import draw_rows
from .repro import atomic_write_json, make_generator, seed_everything

__all__ = [
    "IdentityTrainConfig",
    "FaceNetTrainConfig",
    "Prior3DTrainConfig",
    "train_identity_encoder",
    "train_facenet",
    "train_facenet_classifier",
    "classifier_accuracy",
    "train_prior3d",
    "r2_per_coefficient",
    "pose_flip_consistency",
    "predict_prior3d",
    "augment_batch",
    "dataset_n_classes",
]


# --------------------------------------------------------------------------- configs


@dataclass
class LoopConfig:
    """What every prior's training loop (:func:`_fit`) reads: optimizer, schedule, augmentation,
    checkpoints. ``max_steps`` caps the total steps (None: all ``epochs``); ``channels_last`` speeds
    up CPU convolutions; ``checkpoint_every`` > 0 writes a resumable state into ``out_dir``."""

    seed: int = 0
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 128
    optimizer: str = "adamw"  # "sgd" | "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 20
    lr_schedule: str = "cosine"  # "cosine" | "constant"
    flip_p: float = 0.5
    shift: int = 2
    channels_last: bool = True
    grad_clip: float | None = 5.0
    checkpoint_every: int = 0  # steps between resumable states in out_dir (0: none)
    num_threads: int | None = None  # torch CPU threads during training (None: leave as is)
    # where the networks and batches live; random numbers are drawn on the CPU either way (exact resume
    # is tested on the CPU only: dropout on a GPU draws from the device's RNG)
    device: str = "cpu"


@dataclass
class IdentityTrainConfig(LoopConfig):
    """Training of ``E_Arcface`` (insightface-like recipe, shortened for CPU).

    SGD (momentum 0.9, wd 5e-4) with linear lr warm-up then cosine decay; ArcFace ``s``/``m``
    (``m`` ramped linearly from 0 over ``margin_warmup_steps``, which makes from-scratch
    training on few identities start reliably).

    Measured (synthetic world, 500 identities x 16 faces at 64 px, 6 epochs = 372 steps):
    unseen-identity verification 0.897 (AUC 0.958), training accuracy still rising (0.47) --
    under-trained; the pretraining recipe (drdpgan.pretrain) trains far longer.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    warmup_steps: int = 50
    arcface_s: float = 32.0
    arcface_m: float = 0.5
    easy_margin: bool = False
    margin_warmup_steps: int = 200


@dataclass
class FaceNetTrainConfig(LoopConfig):
    """Training of the FaceNet evaluator (both modes). AdamW, warm-up + cosine, short by default.

    A different default ``seed`` than the identity encoder's. One step at batch 32, 96 px costs
    ~0.7-1.1 s on 2 CPU cores: the defaults (3 epochs) suit a few thousand images.
    """

    seed: int = 1
    epochs: int = 3
    batch_size: int = 32


@dataclass
class Prior3DTrainConfig(LoopConfig):
    """Training of the 3D prior regressor: MSE on standardised (expression, pose) targets."""

    seed: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    flip_p: float = 0.0  # see module docstring before enabling
    shift: int = 0  # translation is fine for expression/pose; off to keep targets exact
    pose_weight: float = 1.0  # weight of the 3 pose outputs relative to the Ke expression outputs
    # expression coefficients of the mirrored face: expression[:, flip_expression_perm] (None: unchanged).
    # The synthetic world's is (0, 1, 2, 4, 3): the two eye closures swap (drdpgan.data.world.EXPRESSION_FLIP).
    flip_expression_perm: tuple[int, ...] | None = None


# --------------------------------------------------------------------------- helpers


def dataset_n_classes(dataset) -> int:
    """``dataset.n_identities`` if present, else ``max(labels) + 1``."""
    n = getattr(dataset, "n_identities", None)
    if n is not None:
        return int(n)
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [int(dataset[i]["identity"]) for i in range(len(dataset))]
    return int(np.max(np.asarray(labels))) + 1


def augment_batch(images: torch.Tensor, gen: torch.Generator, flip_p: float = 0.5, shift: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip (prob ``flip_p``) and translation (<= ``shift`` px, reflect pad).

    ``(B,3,H,W) -> (B,3,H,W)``, plus the ``(B,)`` bool flip mask (to fix flip-dependent targets).
    All randomness comes from ``gen``.
    """
    b = images.shape[0]
    # per-sample draws through draw_rows: a data-parallel process draws the global batch's and keeps its rows
    flipped = draw_rows(lambda n: torch.rand(n, generator=gen), b) < flip_p if flip_p > 0 else torch.zeros(
        b, dtype=torch.bool)
    flipped = flipped.to(images.device)
    x = torch.where(flipped[:, None, None, None], images.flip(-1), images) if flip_p > 0 else images
    if shift > 0:
        h, w = x.shape[-2:]
        padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
        offs = draw_rows(lambda n: torch.randint(0, 2 * shift + 1, (n, 2), generator=gen), b)
        x = torch.stack([padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
    return x, flipped


def _make_optimizer(params, tcfg) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if tcfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    if tcfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    raise ValueError(f"unknown optimizer {tcfg.optimizer!r}")


def _lr_factor(step: int, total: int, tcfg) -> float:
    if tcfg.warmup_steps > 0 and step < tcfg.warmup_steps:
        return (step + 1) / tcfg.warmup_steps
    if tcfg.lr_schedule == "constant":
        return 1.0
    span = max(total - tcfg.warmup_steps, 1)
    t = min(max(step - tcfg.warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _loader(dataset, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        num_workers=0,
        generator=make_generator(seed),
    )


def _fit(
    modules: list[nn.Module],
    loader: torch.utils.data.DataLoader,
    tcfg,
    step_fn: Callable[[dict, int], tuple[torch.Tensor, float | None]],
    desc: str,
    progress: bool,
    state_dir=None,
    generators: dict[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Generic loop: ``step_fn(batch, step) -> (loss, acc or None)``; returns the history.

    ``state_dir``: resumable training. Every ``tcfg.checkpoint_every`` steps (when > 0) the
    modules, optimizer, step, history, the loader's shuffling generator as it was at the start of
    the epoch, the ``generators`` step_fn draws from and the global torch RNG (dropout) are written
    atomically to ``state_dir/checkpoints/ckpt_<step>.pt`` (the run-folder format of every resumable
    trainer, :mod:`drdpgan.runlog`; the newest one kept); a later call with the same ``state_dir``
    resumes there (or from an older run's ``state_dir/train_state.pt``) and replays the epoch's batch
    order, so it ends bit-identical to an uninterrupted run on the same machine and thread count
    (tests/test_train_priors.py)."""
    old_threads = torch.get_num_threads()
    if getattr(tcfg, "num_threads", None):
        torch.set_num_threads(int(tcfg.num_threads))
    try:
        return _fit_inner(modules, loader, tcfg, step_fn, desc, progress, state_dir, generators or {})
    finally:
        torch.set_num_threads(old_threads)


_LEGACY_STATE_FILE = "train_state.pt"  # the priors' single state file before the run-folder checkpoints


def resumable_state(state_dir) -> Path | None:
    """The priors' training state to resume from in ``state_dir``: its newest checkpoint, else an older run's
    ``train_state.pt``, else None."""
    if state_dir is None:
        return None
    legacy = Path(state_dir) / _LEGACY_STATE_FILE
    return latest_checkpoint(state_dir) or (legacy if legacy.is_file() else None)


def _named_modules(modules) -> dict[str, nn.Module]:
    return {f"module{i}": m for i, m in enumerate(modules)}


def _to_device(batch, dev: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(dev)
    if isinstance(batch, dict):
        return {k: _to_device(v, dev) for k, v in batch.items()}
    return batch


def _batch_len(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    return len(batch)


def _shard(batch, rows: slice):
    if isinstance(batch, torch.Tensor):
        return batch[rows]
    if isinstance(batch, dict):
        return {k: _shard(v, rows) for k, v in batch.items()}
    if isinstance(batch, list):
        return batch[rows]
    return batch


def _fit_inner(modules, loader, tcfg, step_fn_user, desc, progress, state_dir, generators) -> dict[str, Any]:
    dev = torch.device(getattr(tcfg, "device", "cpu"))
    main = ddp.is_main()  # under torchrun (drdpgan.distributed): shards of each batch, averaged gradients
    for m in modules:
        m.to(dev)
    ddp.broadcast_parameters(*modules)
    params = [p for m in modules for p in m.parameters()]
    opt = _make_optimizer(params, tcfg)
    steps_per_epoch = len(loader)
    total = tcfg.epochs * steps_per_epoch
    if tcfg.max_steps is not None:
        total = min(total, int(tcfg.max_steps))
    hist: dict[str, Any] = {"step_loss": [], "step_acc": [], "epochs": [], "lr": []}
    for m in modules:
        m.train()
    step, epoch, skip, t_before = 0, 0, 0, 0.0
    epoch_sums = [0.0, 0.0, 0]  # the current epoch's loss sum, accuracy sum and steps
    every = int(getattr(tcfg, "checkpoint_every", 0) or 0)
    state_path = resumable_state(state_dir)
    shuffle_gen = loader.generator
    trained = {**_named_modules(modules), "opt": opt}  # what a checkpoint holds (runlog.states_of)
    if state_path is not None:
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        if "modules" in st:  # a train_state.pt of an older run
            st.update({f"module{i}": sd for i, sd in enumerate(st.pop("modules"))})
        volatile = {"epochs", "max_steps", "checkpoint_every", "num_threads", "device"}
        diff = sorted(k for k, v in asdict(tcfg).items() if k not in volatile and st["tcfg"].get(k) != v)
        if diff:
            raise ValueError(f"{state_path}: saved with a different training config ({diff}); use another folder")
        load_states(st, trained)
        step, epoch, hist, t_before = st["step"], st["epoch"], st["hist"], st["time_s"]
        epoch_sums = list(st.get("epoch_sums", epoch_sums))  # older states: the epoch's summary restarts
        skip = step - epoch * steps_per_epoch
        for name, g in generators.items():
            g.set_state(st["generators"][name])
        torch.set_rng_state(st["torch_rng"])
        shuffle_gen.set_state(st["epoch_shuffle_state"])
    loop = StepLoop(desc, total, step, progress=progress and main, seconds_before=t_before,
                    postfix=lambda last: {"loss": f"{last['loss']:.3f}",
                                          **({"acc": f"{last['acc']:.2f}"} if "acc" in last else {})})
    batches, epoch_shuffle_state = None, None

    def end_epoch() -> None:
        nonlocal epoch, epoch_sums
        e_loss, e_acc, e_n = epoch_sums
        hist["epochs"].append({"epoch": epoch, "loss": e_loss / max(e_n, 1),
                               "acc": (e_acc / max(e_n, 1)) if hist["step_acc"] else None,
                               "steps": e_n, "time_s": loop.seconds})
        epoch, epoch_sums = epoch + 1, [0.0, 0.0, 0]

    def next_batch():
        """The next batch of the epoch's order (the first ``skip`` of a resumed epoch are passed over)."""
        nonlocal batches, epoch_shuffle_state, skip
        while True:
            if batches is None:
                epoch_shuffle_state = shuffle_gen.get_state()
                batches = itertools.islice(iter(loader), skip, None)
                skip = 0
            batch = next(batches, None)
            if batch is not None:
                return batch
            batches = None
            end_epoch()

    schedule = step_schedule(opt, lambda s: _lr_factor(s, total, tcfg), step, [tcfg.lr] * len(opt.param_groups))

    def step_fn(step: int) -> dict[str, float]:
        batch = next_batch()
        lr = opt.param_groups[0]["lr"]
        rows, n = None, _batch_len(batch)
        if ddp.world_size() > 1:
            rows = ddp.shard_rows(n)
            batch = _shard(batch, rows)
        with ddp.sharded_draws(n, rows):
            loss, acc = step_fn_user(_to_device(batch, dev), step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ddp.average_gradients(params)
        if tcfg.grad_clip:
            nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        schedule.step()
        avg = ddp.average_scalars({"loss": float(loss.detach()), "acc": float("nan") if acc is None else float(acc)})
        hist["step_loss"].append(avg["loss"])
        hist["lr"].append(lr)
        epoch_sums[0] += avg["loss"]
        epoch_sums[2] += 1
        if acc is None:
            return {"loss": avg["loss"]}
        hist["step_acc"].append(avg["acc"])
        epoch_sums[1] += avg["acc"]
        return {"loss": avg["loss"], "acc": avg["acc"]}

    def save_state(step: int) -> None:
        save_rotating({
            **states_of(trained), "step": step, "epoch": epoch, "epoch_sums": list(epoch_sums), "hist": hist,
            "time_s": loop.seconds, "tcfg": asdict(tcfg),
            "generators": {n: g.get_state() for n, g in generators.items()},
            "torch_rng": torch.get_rng_state(), "epoch_shuffle_state": epoch_shuffle_state,
        }, state_dir, step, keep=1)
        if (Path(state_dir) / _LEGACY_STATE_FILE).is_file():  # superseded by the checkpoint just written
            (Path(state_dir) / _LEGACY_STATE_FILE).unlink()

    loop.run(step_fn, [Every(every if state_dir is not None and main else 0, save_state, final=False)])
    if batches is not None:  # the last epoch, cut short by ``total`` or ended with its last batch
        end_epoch()
    for m in modules:
        m.cpu().eval()
    hist["steps"] = loop.step
    hist["time_s"] = loop.seconds
    hist["s_per_step"] = hist["time_s"] / max(loop.step, 1)
    return hist


def _images(batch: dict, channels_last: bool) -> torch.Tensor:
    x = batch["image"].float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _save(out_dir, name: str, model: nn.Module, history: dict, extra: dict | None = None) -> None:
    """``out_dir/<name>.pt`` in the package's one checkpoint format (:mod:`drdpgan.checkpoints`); rank 0 alone
    writes under ``torchrun``."""
    if out_dir is None or not ddp.is_main():
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in history.items() if isinstance(v, (int, float))}
    save_checkpoint(out / f"{name}.pt", model, metrics=metrics, extra=extra)
    atomic_write_json(out / f"{name}_history.json", history)


# --------------------------------------------------------------------------- identity encoder


def train_identity_encoder(
    train_dataset,
    cfg: IdentityEncoderConfig | None = None,
    tcfg: IdentityTrainConfig | None = None,
    out_dir=None,
    progress: bool = True,
    init_state: dict | None = None,
) -> tuple[IdentityEncoder, dict]:
    """Train ``E_Arcface`` with an ArcFace head on ``train_dataset``'s identities.

    ``init_state``: an encoder state dict to start from (fine-tuning); the head is always new.
    Returns ``(encoder in eval mode, history)``. The ArcFace head (class centres) is only a
    training device; it is saved with the encoder when ``out_dir`` is given
    (``identity_encoder.pt`` + ``identity_encoder_history.json``) and discarded otherwise.
    """
    cfg = cfg or IdentityEncoderConfig()
    tcfg = tcfg or IdentityTrainConfig()
    seed_everything(tcfg.seed)
    n_classes = dataset_n_classes(train_dataset)
    encoder = IdentityEncoder(cfg)
    if init_state is not None:  # fine-tuning (e.g. real faces from the synthetic-pretrained encoder)
        encoder.load_state_dict(init_state)
    head = ArcFaceHead(cfg.embedding_dim, n_classes, s=tcfg.arcface_s, m=0.0, easy_margin=tcfg.easy_margin)
    if tcfg.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    loader = _loader(train_dataset, tcfg.batch_size, tcfg.seed)
    gen = make_generator(tcfg.seed + 1)

    def step_fn(batch, step):
        m = tcfg.arcface_m * min(1.0, (step + 1) / max(tcfg.margin_warmup_steps, 1))
        head.set_margin(m)
        x, _ = augment_batch(_images(batch, tcfg.channels_last), gen, tcfg.flip_p, tcfg.shift)
        y = batch["identity"].long()
        feats = encoder(x, normalize=False)
        logits = head(feats, y)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            acc = (head.cosine(feats).argmax(1) == y).float().mean().item()
        return loss, acc

    hist = _fit([encoder, head], loader, tcfg, step_fn, "identity encoder", progress,
                state_dir=out_dir, generators={"augment": gen})
    head.set_margin(tcfg.arcface_m)
    hist.update(n_classes=n_classes, n_params=count_parameters(encoder), n_train=len(train_dataset),
                cfg=asdict(cfg), tcfg=asdict(tcfg))
    _save(out_dir, "identity_encoder", encoder, hist,
          extra={"tcfg": asdict(tcfg), "head_state_dict": head.state_dict(), "n_classes": n_classes})
    return encoder.eval(), hist


# --------------------------------------------------------------------------- FaceNet evaluator


def train_facenet(
    train_dataset,
    cfg: FaceNetConfig | None = None,
    tcfg: FaceNetTrainConfig | None = None,
    out_dir=None,
    progress: bool = True,
    n_classes: int | None = None,
    init_state: dict | None = None,
) -> tuple[FaceNetEvaluator, dict]:
    """Train the FaceNet evaluator with a classification head -> ``(model in eval mode, history)``.

    The same run serves both modes: ``model(images)`` gives the 512-d L2-normalised embedding
    (identity cosines), ``model.predict(images)`` the closed-set class. ``n_classes`` defaults to
    ``cfg.n_classes`` or the dataset's number of identities. Saved to
    ``out_dir/facenet.pt`` (+ history) when given. ``init_state``: a FaceNetEvaluator state dict
    whose embedding network (``net.*``) is the starting point (fine-tuning); the head is new.
    """
    cfg = replace(cfg) if cfg is not None else FaceNetConfig()
    tcfg = tcfg or FaceNetTrainConfig()
    n_classes = int(n_classes or cfg.n_classes or dataset_n_classes(train_dataset))
    cfg.n_classes = n_classes
    seed_everything(tcfg.seed)
    model = FaceNetEvaluator(cfg)
    if init_state is not None:  # fine-tuning: the embedding network only (the class head is new)
        model.net.load_state_dict({k[len("net."):]: v for k, v in init_state.items() if k.startswith("net.")})
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = _loader(train_dataset, tcfg.batch_size, tcfg.seed)
    gen = make_generator(tcfg.seed + 1)

    def step_fn(batch, step):
        x, _ = augment_batch(_images(batch, tcfg.channels_last), gen, tcfg.flip_p, tcfg.shift)
        y = batch["identity"].long()
        loss, logits = model.loss(x, y)
        return loss, (logits.detach().argmax(1) == y).float().mean().item()

    hist = _fit([model], loader, tcfg, step_fn, "facenet", progress, state_dir=out_dir, generators={"augment": gen})
    hist.update(n_classes=n_classes, n_params=count_parameters(model), n_train=len(train_dataset),
                cfg=asdict(model.cfg), tcfg=asdict(tcfg))
    _save(out_dir, "facenet", model, hist, extra={"tcfg": asdict(tcfg)})
    return model.eval(), hist


def train_facenet_classifier(
    train_dataset,
    n_classes: int,
    cfg: FaceNetConfig | None = None,
    progress: bool = True,
    tcfg: FaceNetTrainConfig | None = None,
    out_dir=None,
    init_state: dict | None = None,
) -> FaceNetEvaluator:
    """Table 1 protocol: a FaceNet closed-set classifier over ``n_classes`` original identities.

    Train on (anonymized / recovered / real) images whose ``identity`` is the *original*
    identity, then score with :func:`classifier_accuracy` on real held-out images of the same
    identities. Returns the model (eval mode); its training history is ``model.train_history``.
    ``init_state``: start the embedding network from this evaluator state dict (:func:`train_facenet`).
    """
    model, hist = train_facenet(train_dataset, cfg, tcfg, out_dir=out_dir, progress=progress, n_classes=n_classes,
                                init_state=init_state)
    model.train_history = hist
    return model


# --------------------------------------------------------------------------- 3D prior


def _coeff_targets(dataset, n_expression: int) -> torch.Tensor:
    """All ``(N, Ke+3)`` targets of a dataset (from ``dataset.coeffs`` arrays when present)."""
    coeffs = getattr(dataset, "coeffs", None)
    if isinstance(coeffs, dict) and "expression" in coeffs and "pose" in coeffs:
        e = torch.as_tensor(np.asarray(coeffs["expression"]), dtype=torch.float32)
        p = torch.as_tensor(np.asarray(coeffs["pose"]), dtype=torch.float32)
        if len(e) == len(dataset):
            return _check_targets(torch.cat([e.reshape(len(e), -1), p.reshape(len(p), -1)], 1), n_expression)
    loader = torch.utils.data.DataLoader(dataset, batch_size=512, shuffle=False, num_workers=0)
    out = []
    for b in loader:
        if "coeffs" not in b:
            raise ValueError("train_prior3d needs items with 'coeffs' (the synthetic world)")
        out.append(torch.cat([b["coeffs"]["expression"].float(), b["coeffs"]["pose"].float()], 1))
    return _check_targets(torch.cat(out), n_expression)


def _check_targets(t: torch.Tensor, n_expression: int) -> torch.Tensor:
    if t.shape[1] != n_expression + 3:
        raise ValueError(f"dataset has {t.shape[1] - 3} expression coefficients, cfg.n_expression={n_expression}")
    return t


def train_prior3d(
    train_dataset,
    cfg: Prior3DConfig | None = None,
    tcfg: Prior3DTrainConfig | None = None,
    out_dir=None,
    progress: bool = True,
) -> tuple[Prior3DRegressor, dict]:
    """Train the 3D prior regressor on the synthetic world's ``coeffs`` -> ``(model, history)``.

    Loss: mean squared error on standardised targets (per-coefficient mean/std of the training
    set, stored in the model's buffers), pose outputs weighted by ``tcfg.pose_weight``.
    ``history["step_acc"]`` stays empty (regression). Saved to ``out_dir/prior3d.pt``.
    """
    cfg = cfg or Prior3DConfig()
    tcfg = tcfg or Prior3DTrainConfig()
    seed_everything(tcfg.seed)
    targets = _coeff_targets(train_dataset, cfg.n_expression)
    model = Prior3DRegressor(cfg)
    model.set_target_stats(targets.mean(0), targets.std(0))
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = _loader(train_dataset, tcfg.batch_size, tcfg.seed)
    gen = make_generator(tcfg.seed + 1)
    ke = cfg.n_expression
    w = torch.ones(cfg.n_outputs)
    w[ke:] = tcfg.pose_weight
    w = w / w.mean()

    def step_fn(batch, step):
        x, flipped = augment_batch(_images(batch, tcfg.channels_last), gen, tcfg.flip_p, tcfg.shift)
        expr = batch["coeffs"]["expression"].float()
        pose = batch["coeffs"]["pose"].float()
        pose = torch.where(flipped[:, None], flip_pose(pose), pose)
        if tcfg.flip_expression_perm is not None:
            expr = torch.where(flipped[:, None], expr[:, list(tcfg.flip_expression_perm)], expr)
        t = (torch.cat([expr, pose], 1) - model.target_mean) / model.target_std  # (B,Ke+3)
        pred = model.forward_standardized(x)
        return ((pred - t) ** 2 * w.to(pred.device)).mean(), None

    hist = _fit([model], loader, tcfg, step_fn, "3D prior", progress, state_dir=out_dir, generators={"augment": gen})
    hist.update(n_params=count_parameters(model), n_train=len(train_dataset), cfg=asdict(cfg), tcfg=asdict(tcfg),
                target_mean=model.target_mean.tolist(), target_std=model.target_std.tolist())
    _save(out_dir, "prior3d", model, hist, extra={"tcfg": asdict(tcfg)})
    return model.eval(), hist
