"""The main experiment (notebooks 09-12): train DR-DPGAN, run both paths on held-out faces, measure.

Training (notebook 09, :func:`trained_drdpgan`), two stages, both cached under
``artifacts/<profile>/``:

1. **Binary code mapping** (Eq. 2-4) and its decoder (Sec. 3.4.2) pretrained on the identity
   embeddings ``F_id`` of the training faces with :func:`drdpgan.hiding.train_binary_code`
   (dropout 0.5 during this stage, as Sec. 3.4.1 says), then kept fixed in stage 2
   (``freeze_code_mapping``). The paper trains everything at once; trained jointly, the mapping's
   dropout changes ~20 % of a face's bits from one step to the next (measured), so E_P and the
   decoder chase a moving password. The decoder keeps training in stage 2.
2. **Joint training** of the anonymization (t = 1) and recovery (t = 0) processes with
   :func:`drdpgan.train_drdpgan.train_drdpgan` (Eq. 9-17, Adam 1e-4 / 1e-3, batch 8), in a
   persistent work folder ``drdpgan-<hash>-work`` beside the cache entry: a killed run resumes
   from its last checkpoint and ends bit-identical to an uninterrupted one.

The finished model is one self-contained file, ``model.pt``
(:func:`drdpgan.checkpoints.save_drdpgan`; :func:`drdpgan.checkpoints.load_model` reads it), which
is also what the command line (``python -m drdpgan``) uses.

Evaluation protocol (notebooks 10-12, :func:`protocol_split`, :func:`run_paths`,
:func:`protocol_outputs`): the held-out identities (never seen by any network) are split per
identity into *protected* images (anonymized and recovered; Tables 2-3 are measured on them; the
Table 1 classifiers train on their anonymized / recovered / original versions, labelled with the
original identity) and *real test* images (the Table 1 classifiers are tested on them).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .notebook_params import derived_seed
from .repro import ArtifactCache, atomic_torch_save, atomic_write_json, make_generator

__all__ = [
    "TrainedDRDPGAN",
    "train_config",
    "trained_drdpgan",
    "pretrained_code",
    "protocol_split",
    "run_paths",
    "as_saved_image",
    "protocol_outputs",
    "table2_metrics",
    "table3_metrics",
    "classifier_configs",
    "ABLATIONS",
    "ablation_result",
]

#: Table 4: experiment number -> (use_fid_control, use_3d_prior, use_encoder_control). 7 is the full model.
ABLATIONS: dict[int, dict[str, bool]] = {
    1: {"use_fid_control": False, "use_3d_prior": False, "use_encoder_control": False},
    2: {"use_fid_control": True, "use_3d_prior": False, "use_encoder_control": False},
    3: {"use_fid_control": False, "use_3d_prior": True, "use_encoder_control": False},
    4: {"use_fid_control": False, "use_3d_prior": False, "use_encoder_control": True},
    5: {"use_fid_control": True, "use_3d_prior": True, "use_encoder_control": False},
    6: {"use_fid_control": False, "use_3d_prior": True, "use_encoder_control": True},
    7: {"use_fid_control": True, "use_3d_prior": True, "use_encoder_control": True},
}


@dataclass
class TrainedDRDPGAN:
    """``model`` (eval mode), its cache folder ``dir`` (``model.pt``, ``losses.csv``, ``losses.png``,
    ``final_metrics.json``, ``code_history.json``), the trainer's ``result`` and the notebook ``params``."""

    model: Any
    dir: Path
    result: dict[str, Any]
    params: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.dir / "model.pt"

    @property
    def losses_csv(self) -> Path:
        return self.dir / "losses.csv"


def train_config(p: Mapping[str, Any]):
    """Notebook 09's parameters -> :class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig`."""
    from .losses import LossWeights
    from .train_drdpgan import DRDPGANTrainConfig

    return DRDPGANTrainConfig(
        steps=int(p["train_steps"]), batch_size=int(p["batch_size"]), seed=int(p["seed"]),
        lr_stylegan=float(p["lr_stylegan"]), lr_other=float(p["lr_other"]),
        weights=LossWeights(*[float(v) for v in p["loss_weights"]]),
        w_code=float(p["w_code"]), w_rec_pixel=float(p["w_rec_pixel"]), w_anon_pixel=float(p["w_anon_pixel"]),
        freeze_code_mapping=bool(p["pretrain_code"]), log_every=int(p["log_every"]),
        checkpoint_every=int(p["checkpoint_every"]), keep_checkpoints=2)


def pretrained_code(profile: str, p: Mapping[str, Any], model_cfg, progress: bool = True) -> Path:
    """Stage 1 (module docstring): the binary code mapping and decoder trained on the identity
    embeddings of the profile's training faces, cached as ``artifacts/<profile>/drdpgan-code-<hash>/``
    (``code.pt``, ``code_history.json``); shared by every model with the same code settings and
    seed (e.g. the Table 4 experiments, whose switches do not touch the code)."""
    from . import stages
    from .hiding import CodeTrainConfig, train_binary_code
    from .models.binary_code import BinaryCodeConfig

    seed = int(p["seed"])
    bcfg = BinaryCodeConfig(identity_dim=model_cfg.identity_dim, code_bits=model_cfg.code_bits,
                            hidden_dim=model_cfg.binary_hidden, decoder_hidden=model_cfg.binary_hidden)
    tcfg = CodeTrainConfig(seed=derived_seed(seed, "code_mapping"), steps=int(p["code_steps"]), batch_size=int(p["code_batch_size"]))
    key = {"priors": stages.prior_params(profile), "bcfg": bcfg.__dict__, "tcfg": tcfg.__dict__}

    def build(d: Path) -> None:
        enc, _ = stages.identity_encoder(profile, progress=False)
        data = stages.face_data(stages.notebook_params("01_data", profile), progress)
        mapping, decoder, hist = train_binary_code(_embed(enc, data["train"]), bcfg, tcfg,
                                                   f_eval=_embed(enc, data["heldout"]), progress=progress)
        atomic_torch_save({"mapping": mapping.state_dict(), "decoder": decoder.state_dict()}, d / "code.pt")
        (d / "code_history.json").write_text(json.dumps({"eval": hist["eval"], "time_s": hist["time_s"]}))

    return ArtifactCache(profile).get("drdpgan-code", key, build)


def trained_drdpgan(profile: str, progress: bool = True, params: Mapping[str, Any] | None = None,
                    **model_overrides) -> TrainedDRDPGAN:
    """DR-DPGAN of ``profile`` trained as notebook 09's parameters say (module docstring); cached.

    ``params``: notebook 09's parameters (default: the profile's); ``model_overrides``: fields of
    :class:`~drdpgan.models.drdpgan.DRDPGANConfig` (the Table 4 switches, notebook 13).
    """
    from . import stages
    from .checkpoints import load_model, save_drdpgan
    from .demo import untrained_model
    from .train_drdpgan import train_drdpgan

    p = dict(params) if params is not None else stages.notebook_params("09_training", profile)
    p.pop("num_threads", None)
    cfg = train_config(p)
    train_key = {k: v for k, v in cfg.to_dict().items() if k == "steps" or k not in cfg.VOLATILE}
    key = {"priors": stages.prior_params(profile), "train": train_key,
           "code": {k: p[k] for k in ("pretrain_code", "code_steps", "code_batch_size")},
           "model_overrides": dict(sorted(model_overrides.items()))}
    cache = ArtifactCache(profile)
    final = cache.path("drdpgan", key)
    work = final.with_name(final.name + "-work")

    def build(d: Path) -> None:
        seed = int(p["seed"])
        model = untrained_model(profile, seed, progress=progress, **model_overrides)
        if p["pretrain_code"]:
            code_dir = pretrained_code(profile, p, model.cfg, progress)
            state = torch.load(code_dir / "code.pt", map_location="cpu", weights_only=True)
            model.binary_code.load_state_dict(state["mapping"])
            model.decoder.load_state_dict(state["decoder"])
            shutil.copy(code_dir / "code_history.json", d / "code_history.json")
        data = stages.face_data(stages.notebook_params("01_data", profile), progress)
        result = train_drdpgan(model, data["train"], cfg, work, progress=progress)
        if result["stopped_early"]:
            raise RuntimeError(f"training in {work} stopped early at step {result['step']}")
        save_drdpgan(d / "model.pt", model, metrics=result.get("final", {}),
                     extra={"profile": profile, "notebook_params": p, "model_overrides": model_overrides})
        for f in ("losses.csv", "losses.png", "final_metrics.json"):
            if (work / f).is_file():
                shutil.copy(work / f, d / f)
        shutil.rmtree(work / "checkpoints", ignore_errors=True)  # finished: model.pt holds everything

    path = cache.get("drdpgan", key, build)
    model, _ = load_model(path / "model.pt")
    result = json.loads((path / "final_metrics.json").read_text()) if (path / "final_metrics.json").is_file() else {}
    return TrainedDRDPGAN(model, path, result, p)


@torch.no_grad()
def _embed(embed_fn: Callable, dataset) -> torch.Tensor:
    from .evaluate import _embed_all
    from .stages import images_of

    return _embed_all(embed_fn, images_of(dataset), batch_size=256)


# --------------------------------------------------------------------------- protocol


def protocol_split(labels, test_fraction: float = 0.4, max_identities: int = 0, seed: int = 0
                   ) -> dict[str, np.ndarray]:
    """Split held-out images per identity into ``protected`` and real ``test`` indices (Table 1).

    Identities with fewer than 2 images are left out (they cannot be both protected and tested).
    For an identity with ``n`` images (in index order), the last ``max(1, round(n * test_fraction))``
    are test images, the others protected. ``max_identities > 0`` keeps that many identities,
    drawn with ``seed``. Returns ``{"protected", "test"}`` (dataset indices), ``"protected_labels"`` /
    ``"test_labels"`` (identities renumbered 0..K-1) and ``"identities"`` (the original labels).
    """
    labels = np.asarray(labels)
    ids = [i for i in np.unique(labels) if np.sum(labels == i) >= 2]
    if max_identities and len(ids) > max_identities:
        ids = sorted(np.random.default_rng(seed).choice(ids, size=max_identities, replace=False).tolist())
    if not ids:
        raise ValueError("no identity has 2 or more images: the Table 1 protocol needs some")
    prot, test, pl, tl = [], [], [], []
    for k, ident in enumerate(ids):
        idx = np.flatnonzero(labels == ident)
        n_test = min(len(idx) - 1, max(1, int(round(len(idx) * test_fraction))))
        prot += idx[:-n_test].tolist()
        test += idx[-n_test:].tolist()
        pl += [k] * (len(idx) - n_test)
        tl += [k] * n_test
    return {"protected": np.array(prot), "test": np.array(test), "protected_labels": np.array(pl),
            "test_labels": np.array(tl), "identities": np.array(ids)}


def as_saved_image(x: torch.Tensor) -> torch.Tensor:
    """What survives writing ``x`` (in [-1, 1]) to an 8-bit PNG and reading it back: clamped to
    [-1, 1] and rounded to the 256 levels per channel."""
    from .data.datasets import float_to_uint8, uint8_to_float

    return uint8_to_float(float_to_uint8(x))


@torch.no_grad()
def run_paths(model, images: torch.Tensor, seed: int = 0, batch_size: int = 32, progress: bool = False,
              as_image: bool = True) -> dict[str, torch.Tensor]:
    """Anonymize (fake identity noise from ``seed``) then recover (bits read by E_P) ``images`` (N,3,R,R).

    ``as_image``: the anonymized output is stored as an image before recovery reads it
    (:func:`as_saved_image`: clamped to [-1, 1], 8 bits per channel), as the command line does: the
    password must survive what a real anonymized photo goes through. ``False`` hands recovery the
    generator's raw float output.

    Returns, all on CPU: ``anonymized``, ``recovered`` (N,3,R,R) in [-1, 1]; ``bits_true`` (the
    password hidden, Eq. 2-4) and ``bits_read`` (E_P's, Sec. 3.4.2) (N, l); ``f_id`` (N, D) the
    identity of the inputs, ``f_fake`` the fake identity, ``f_decoded`` the identity decoded from
    the read bits; ``fake_cos`` (N,) cos(F'_id, F_id).
    """
    from tqdm.auto import tqdm

    model.eval()
    gen = make_generator(int(seed))
    keys = ("anonymized", "recovered", "bits_true", "bits_read", "f_id", "f_fake", "f_decoded", "fake_cos")
    out: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for s in tqdm(range(0, len(images), batch_size), disable=not progress, desc="anonymize+recover"):
        x = images[s:s + batch_size].float()
        a = model.anonymize(x, generator=gen)
        x_anon = as_saved_image(a["images"]) if as_image else a["images"]
        r = model.recover(x_anon)
        for k, v in (("anonymized", x_anon), ("recovered", r["images"]), ("bits_true", a["password"]),
                     ("bits_read", r["bits"]), ("f_id", a["f_id"]), ("f_fake", a["f_fake"]),
                     ("f_decoded", r["f_id_decoded"]), ("fake_cos", a["fake_cos"])):
            out[k].append(v.detach().cpu())
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in out.items()}


def protocol_outputs(profile: str, progress: bool = True, trained: TrainedDRDPGAN | None = None,
                     max_identities: int | None = None) -> dict[str, Any]:
    """The held-out protected faces of ``profile`` run through both paths (notebook 10's parameters:
    ``test_fraction``, ``max_identities``, ``anon_seed``), cached as ``outputs.pt`` beside the model.
    ``max_identities`` (when given) replaces notebook 10's value.

    Returns :func:`protocol_split`'s arrays, ``originals`` / ``test_images`` (tensors) and
    :func:`run_paths`'s outputs.
    """
    from . import stages

    p10 = stages.notebook_params("10_anonymization", profile)
    trained = trained or trained_drdpgan(profile, progress)
    data = stages.face_data(stages.notebook_params("01_data", profile), progress)
    n_ids = int(p10["max_identities"] if max_identities is None else max_identities)
    split = protocol_split(data["heldout"].labels, float(p10["test_fraction"]), n_ids, int(p10["seed"]))
    name = f"outputs-png-{float(p10['test_fraction'])}-{n_ids}-{int(p10['seed'])}-{int(p10['anon_seed'])}.pt"
    path = trained.dir / name
    originals = stages.images_of(data["heldout"], split["protected"])
    if path.is_file():
        outs = torch.load(path, map_location="cpu", weights_only=True)
    else:
        outs = run_paths(trained.model, originals, seed=int(p10["anon_seed"]), progress=progress)
        atomic_torch_save(outs, path)
    return {**split, "originals": originals, "test_images": stages.images_of(data["heldout"], split["test"]),
            **outs, "model": trained.model, "trained": trained}


# --------------------------------------------------------------------------- Tables 2 and 3


def classifier_configs(p12: Mapping[str, Any]):
    """Notebook 12's parameters -> ``(FaceNetConfig, FaceNetTrainConfig)`` of the Table 1 classifiers."""
    from .models.facenet import FaceNetConfig
    from .train_priors import FaceNetTrainConfig

    return (FaceNetConfig(input_size=int(p12["cls_input_size"]), repeats=tuple(p12["cls_repeats"])),
            FaceNetTrainConfig(epochs=int(p12["cls_epochs"]), batch_size=int(p12["cls_batch_size"]),
                               lr=float(p12["cls_lr"])))


def table2_metrics(originals: torch.Tensor, anonymized: torch.Tensor, recovered: torch.Tensor,
                   recognizers: Mapping[str, Callable] | None = None) -> dict[str, float]:
    """Table 2 on images in [-1, 1]: identity cosines per recognizer and the recovery pixel metrics.

    ``recognizers``: suffix -> embedding function; ``""`` is the independent evaluator (``anon.cos``,
    ``rec.cos``), ``"_train_encoder"`` the training identity encoder, etc. Pixel metrics in [0, 1] (inputs in [-1, 1] are mapped there):
    ``rec.mae``, ``rec.psnr`` (mean of per-image PSNR), ``rec.ssim``; ``anon.mae`` for reference.
    """
    from .evaluate import identity_cosines, mae, psnr, ssim

    out: dict[str, float] = {}
    for suffix, fn in (recognizers or {}).items():
        out[f"anon.cos{suffix}"] = float(np.mean(identity_cosines(fn, originals, anonymized)))
        out[f"rec.cos{suffix}"] = float(np.mean(identity_cosines(fn, originals, recovered)))
    out["rec.mae"] = float(mae(recovered, originals))
    out["rec.psnr"] = float(psnr(recovered, originals))
    out["rec.ssim"] = float(ssim(recovered, originals))
    return out


def table3_metrics(bits_true: torch.Tensor, bits_read: torch.Tensor, f_id: torch.Tensor,
                   f_decoded: torch.Tensor) -> dict[str, float]:
    """Table 3: ``password.ber`` (fraction of wrong bits) and ``password.fmse`` (MSE between the
    real identity and the one decoded from the read bits, Sec. 4.2), plus the decoded identity's
    cosine to the real one (``password.decoded_cos``, not a paper number)."""
    from .models.binary_code import bit_error_rate, float_mse

    return {"password.ber": float(bit_error_rate(bits_read, bits_true)),
            "password.fmse": float(float_mse(f_decoded, f_id)),
            "password.decoded_cos": float(F.cosine_similarity(f_decoded.float(), f_id.float(), dim=-1).mean())}


# --------------------------------------------------------------------------- Table 4 (notebook 13)


def ablation_result(profile: str, experiment_no: int, seed: int, train_steps: int, cls_epochs: int,
                    max_identities: int = 0, progress: bool = True) -> dict[str, float]:
    """Train Table 4's experiment ``experiment_no`` (:data:`ABLATIONS`) with notebook 09's recipe of
    ``profile`` but ``train_steps`` steps and ``seed``, then measure it with the protocol of
    notebooks 10-12: ``rec_cos`` and ``anon_cos`` (independent evaluator), ``rec_psnr``, and
    ``cls_acc_recovered`` (a FaceNet classifier trained on the recovered protected images, tested
    on the real test images; notebook 12's classifier settings, ``cls_epochs`` epochs).

    The trained model is cached like notebook 09's (its key holds the switches, steps and seed), so
    the full model (experiment 7) at notebook 09's own steps and seed is the very model of 09.
    The result is cached beside it as ``ablation-<...>.json``.
    """
    from . import stages
    from .evaluate import table1_classifier_protocol

    p09 = {**stages.notebook_params("09_training", profile), "train_steps": int(train_steps), "seed": int(seed)}
    p10 = stages.notebook_params("10_anonymization", profile)
    trained = trained_drdpgan(profile, progress, params=p09, **ABLATIONS[int(experiment_no)])
    path = trained.dir / f"ablation-{int(cls_epochs)}-{int(max_identities)}-{float(p10['test_fraction'])}.json"
    if path.is_file():
        return json.loads(path.read_text())
    out = protocol_outputs(profile, progress=False, trained=trained, max_identities=int(max_identities))
    evaluator, _ = stages.facenet_evaluator(profile, progress=False)
    t2 = table2_metrics(out["originals"], out["anonymized"], out["recovered"], {"": evaluator})
    t3 = table3_metrics(out["bits_true"], out["bits_read"], out["f_id"], out["f_decoded"])
    n_classes = len(out["identities"])
    p12 = stages.notebook_params("12_evaluation", profile)
    ccfg, tcfg = classifier_configs({**p12, "cls_epochs": cls_epochs})
    cls = table1_classifier_protocol(
        out["recovered"], torch.as_tensor(out["protected_labels"]),
        (out["test_images"], torch.as_tensor(out["test_labels"])), n_classes, cfg=ccfg, tcfg=tcfg,
        seed=derived_seed(p12["seed"], "table4_classifier"))
    res = {"experiment": int(experiment_no), "seed": int(seed), "train_steps": int(train_steps),
           **{k: bool(v) for k, v in ABLATIONS[int(experiment_no)].items()},
           "rec_cos": t2["rec.cos"], "anon_cos": t2["anon.cos"], "rec_psnr": t2["rec.psnr"],
           "cls_acc_recovered": cls["acc"], "chance": 1.0 / n_classes, "password_ber": t3["password.ber"]}
    atomic_write_json(path, res)
    return res
