"""The trained DR-DPGAN of a profile (notebook 09), built once and cached.

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

The evaluation protocol (notebooks 10-13) is :mod:`drdpgan.protocol`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .notebook_params import derived_seed
from .repro import ArtifactCache, atomic_torch_save

__all__ = [
    "TrainedDRDPGAN",
    "train_config",
    "trained_drdpgan",
    "shipped_drdpgan",
    "pretrained_code",
    "fit_code",
]



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
    from .hiding import CodeTrainConfig
    from .models.binary_code import BinaryCodeConfig

    seed = int(p["seed"])
    bcfg = BinaryCodeConfig(identity_dim=model_cfg.identity_dim, code_bits=model_cfg.code_bits,
                            hidden_dim=model_cfg.binary_hidden, decoder_hidden=model_cfg.binary_hidden)
    tcfg = CodeTrainConfig(seed=derived_seed(seed, "code_mapping"), steps=int(p["code_steps"]), batch_size=int(p["code_batch_size"]))
    key = {"priors": stages.prior_params(profile), "bcfg": bcfg.__dict__, "tcfg": tcfg.__dict__}

    def build(d: Path) -> None:
        enc, _ = stages.identity_encoder(profile, progress=False)
        data = stages.face_data(stages.notebook_params("01_data", profile), progress)
        fit_code(enc, data["train"], data["heldout"], bcfg, tcfg, d, progress)

    return ArtifactCache(profile).get("drdpgan-code", key, build)


def fit_code(encoder, train, heldout, bcfg, tcfg, out_dir: Path, progress: bool = True) -> None:
    """Train the binary code mapping and its decoder on ``encoder``'s embeddings of the ``train`` faces
    (:func:`drdpgan.hiding.train_binary_code`, measured on ``heldout``); write ``out_dir/code.pt``
    (``{"mapping", "decoder"}`` state dicts) and ``out_dir/code_history.json``."""
    from .hiding import train_binary_code
    from .repro import atomic_write_json

    mapping, decoder, hist = train_binary_code(_embed(encoder, train), bcfg, tcfg, f_eval=_embed(encoder, heldout),
                                               progress=progress)
    atomic_write_json(out_dir / "code_history.json", {"eval": hist["eval"], "time_s": hist["time_s"]})
    atomic_torch_save({"mapping": mapping.state_dict(), "decoder": decoder.state_dict()}, out_dir / "code.pt")


def trained_drdpgan(profile: str, progress: bool = True, params: Mapping[str, Any] | None = None,
                    **model_overrides) -> TrainedDRDPGAN:
    """DR-DPGAN of ``profile`` trained as notebook 09's parameters say (module docstring); cached.

    ``params``: notebook 09's parameters (default: the profile's); ``model_overrides``: fields of
    :class:`~drdpgan.models.drdpgan.DRDPGANConfig` (the Table 4 switches, notebook 13).
    """
    from . import stages
    from .checkpoints import load_model, save_drdpgan
    from .stages import untrained_model
    from .train_drdpgan import train_drdpgan

    p = dict(params) if params is not None else stages.notebook_params("09_training", profile)
    p.pop("num_threads", None)
    if not model_overrides and stages.prior_mode(p, "model") == "shipped":
        return shipped_drdpgan(profile, p)
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


def shipped_drdpgan(profile: str, params: Mapping[str, Any] | None = None) -> TrainedDRDPGAN:
    """The profile's shipped DR-DPGAN (``drdpgan/weights/<profile>/drdpgan.pt``, sha256-checked), as a
    :class:`TrainedDRDPGAN` whose ``dir`` is a cache folder of its own (``artifacts/<profile>/drdpgan-shipped-
    <hash of the file's sha256>``, where the protocol caches its outputs) holding copies of the shipped
    training logs (``losses.csv``, ``metrics.csv``); ``result`` holds the manifest's measured metrics
    (``metrics``), ``step``, ``images_seen`` and ``train_seconds``."""
    from . import shipped

    model, info = shipped.load(profile, "drdpgan")
    entry = info["manifest"]
    d = ArtifactCache(profile).path("drdpgan-shipped", {"sha256": entry["sha256"]})
    d.mkdir(parents=True, exist_ok=True)
    logs = shipped.WEIGHTS_DIR / profile / "drdpgan_logs"
    for name in ("losses.csv", "metrics.csv"):
        if (logs / name).is_file() and not (d / name).is_file():
            shutil.copy(logs / name, d / name)
    metrics = dict(entry.get("metrics_stored", {}))
    result = {"shipped": True, "metrics": metrics, "step": metrics.get("steps"),
              "images_seen": entry.get("images_seen"), "train_seconds": entry.get("train_seconds")}
    return TrainedDRDPGAN(model.eval(), d, result, dict(params or {}))


@torch.no_grad()
def _embed(embed_fn: Callable, dataset) -> torch.Tensor:
    from .evaluate import _embed_all
    from .stages import images_of

    return _embed_all(embed_fn, images_of(dataset), batch_size=256)
