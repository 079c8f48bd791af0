"""One checkpoint format and one loading API for every network of the package.

A checkpoint is a single ``.pt`` file written atomically::

    {"format": 1, "kind": "identity_encoder", "config": {...}, "state_dict": {...},
     "metrics": {...}, "extra": {...}}

``kind`` names an entry of :data:`MODEL_KINDS` (model class and config dataclass, imported
lazily); :func:`load_model` rebuilds the model from its config and loads its weights, so a
notebook never needs to know how a network was configured to use it.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from .repro import atomic_torch_save, to_jsonable

FORMAT = 1

#: kind -> ("module:ModelClass", "module:ConfigClass")
MODEL_KINDS: dict[str, tuple[str, str]] = {
    "identity_encoder": ("drdpgan.models.identity:IdentityEncoder", "drdpgan.models.identity:IdentityEncoderConfig"),
    "prior3d": ("drdpgan.models.prior3d:Prior3DRegressor", "drdpgan.models.prior3d:Prior3DConfig"),
    "facenet_evaluator": ("drdpgan.models.facenet:FaceNetEvaluator", "drdpgan.models.facenet:FaceNetConfig"),
    "stylegan2_generator": ("drdpgan.models.stylegan2:StyleGAN2Generator", "drdpgan.models.stylegan2:StyleGAN2Config"),
    "stylegan2_discriminator": (
        "drdpgan.models.discriminator:StyleGAN2Discriminator",
        "drdpgan.models.stylegan2:StyleGAN2Config",
    ),
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: names the file and the problem."""


def _resolve(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def kind_of(model: torch.nn.Module) -> str:
    for kind, (model_spec, _) in MODEL_KINDS.items():
        module, name = model_spec.split(":")
        if type(model).__name__ == name and type(model).__module__ == module:
            return kind
    raise CheckpointError(f"{type(model).__name__} is not registered in drdpgan.checkpoints.MODEL_KINDS")


def config_from_dict(cls, data: dict[str, Any]):
    """Rebuild a (possibly nested) config dataclass from its ``asdict`` form; unknown keys are an error."""
    names = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise CheckpointError(f"config for {cls.__name__} has unknown fields {sorted(unknown)}")
    kwargs = {}
    for k, v in data.items():
        ftype = names[k].type
        target = _resolve_type(cls, ftype)
        kwargs[k] = config_from_dict(target, v) if target is not None and isinstance(v, dict) else v
        if isinstance(kwargs[k], list) and isinstance(getattr(cls, k, None), tuple):
            kwargs[k] = tuple(kwargs[k])
    return cls(**kwargs)


def _resolve_type(cls, ftype):
    if is_dataclass(ftype):
        return ftype
    if isinstance(ftype, str):
        mod = importlib.import_module(cls.__module__)
        cand = getattr(mod, ftype, None)
        if cand is not None and is_dataclass(cand):
            return cand
    return None


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    kind: str | None = None,
) -> Path:
    """Write ``model`` (which must have a dataclass ``.cfg``) with its config and metrics, atomically."""
    kind = kind or kind_of(model)
    cfg = getattr(model, "cfg", None)
    if cfg is None or not is_dataclass(cfg):
        raise CheckpointError(f"{type(model).__name__} has no dataclass .cfg; cannot checkpoint it")
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": to_jsonable(asdict(cfg)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": to_jsonable(metrics or {}),
        "extra": extra or {},
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, validated (clear errors for missing, corrupt or foreign files)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "kind" not in payload:
        raise CheckpointError(f"{path}: not a drdpgan checkpoint (format {FORMAT} with a 'kind')")
    if payload["kind"] not in MODEL_KINDS and payload["kind"] != DRDPGAN_KIND:
        raise CheckpointError(f"{path}: unknown model kind {payload['kind']!r}")
    return payload


#: The composite DR-DPGAN checkpoint: the model config plus the configs of the three networks it wraps.
DRDPGAN_KIND = "drdpgan"
_DRDPGAN_PARTS = {  # attribute -> kind of the wrapped network
    "generator": "stylegan2_generator",
    "identity_encoder": "identity_encoder",
    "prior3d": "prior3d",
}


def save_drdpgan(path: str | Path, model: torch.nn.Module, metrics: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write a whole :class:`~drdpgan.models.drdpgan.DRDPGAN` (generator, frozen priors and every
    DR-DPGAN component) as one self-contained file, atomically; :func:`load_model` reads it back."""
    payload = {
        "format": FORMAT,
        "kind": DRDPGAN_KIND,
        "config": to_jsonable(asdict(model.cfg)),
        "parts": {attr: to_jsonable(asdict(getattr(model, attr).cfg)) for attr in _DRDPGAN_PARTS},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": to_jsonable(metrics or {}),
        "extra": extra or {},
    }
    return atomic_torch_save(payload, path)


def _build_drdpgan(payload: dict[str, Any], path: Path) -> torch.nn.Module:
    from .models.drdpgan import DRDPGAN, DRDPGANConfig

    parts = payload.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(_DRDPGAN_PARTS):
        raise CheckpointError(f"{path}: drdpgan checkpoint lacks the configs of {sorted(_DRDPGAN_PARTS)}")
    built = {}
    for attr, kind in _DRDPGAN_PARTS.items():
        model_spec, cfg_spec = MODEL_KINDS[kind]
        built[attr] = _resolve(model_spec)(config_from_dict(_resolve(cfg_spec), parts[attr]))
    return DRDPGAN(config_from_dict(DRDPGANConfig, payload["config"]), built["generator"],
                   built["identity_encoder"], built["prior3d"])


def _fill_referenced_parts(payload: dict[str, Any], path: Path) -> None:
    """A shipped DR-DPGAN file may leave out its frozen networks and name the shipped files they equal
    (``payload["referenced_parts"]``: attribute -> ``{"profile", "network", "sha256"}``); put their weights
    back from those files, whose sha256 must still be the one recorded."""
    from . import shipped

    for attr, ref in (payload.get("referenced_parts") or {}).items():
        try:
            part, info = shipped.load(ref["profile"], ref["network"])
        except (FileNotFoundError, CheckpointError) as e:
            raise CheckpointError(f"{path}: its {attr} is the shipped {ref['profile']}/{ref['network']}, which "
                                  f"cannot be loaded ({e})") from e
        if info["manifest"]["sha256"] != ref["sha256"]:
            raise CheckpointError(f"{path}: its {attr} was the shipped {ref['profile']}/{ref['network']} with sha256 "
                                  f"{ref['sha256'][:12]}..., the shipped file is now {info['manifest']['sha256'][:12]}...")
        payload["state_dict"].update({f"{attr}.{k}": v for k, v in part.state_dict().items()})


def strip_referenced_parts(payload: dict[str, Any], refs: dict[str, tuple[torch.nn.Module, dict[str, Any]]]) -> None:
    """Drop the weights of DR-DPGAN parts that equal shipped networks (``refs``: attribute -> (that network
    as loaded, its reference ``{"profile", "network", "sha256"}``)) and record the reference instead.
    Refuses when a part's weights differ from the network it names."""
    for attr, (net, ref) in refs.items():
        own = {k[len(attr) + 1:]: v for k, v in payload["state_dict"].items() if k.startswith(attr + ".")}
        theirs = net.state_dict()
        if set(own) != set(theirs) or any(not torch.equal(own[k].float(), theirs[k].float()) for k in own):
            raise CheckpointError(f"the DR-DPGAN's {attr} differs from the shipped {ref['profile']}/{ref['network']}")
        for k in own:
            del payload["state_dict"][f"{attr}.{k}"]
        payload.setdefault("referenced_parts", {})[attr] = dict(ref)


def load_model(path: str | Path, eval_mode: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network stored at ``path``; returns ``(model, info)`` with info = config, metrics, extra."""
    payload = read_checkpoint(path)
    if payload["kind"] == DRDPGAN_KIND:
        _fill_referenced_parts(payload, Path(path))
        model = _build_drdpgan(payload, Path(path))
    else:
        model_spec, cfg_spec = MODEL_KINDS[payload["kind"]]
        model = _resolve(model_spec)(config_from_dict(_resolve(cfg_spec), payload["config"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {payload['kind']} with its stored config ({e})") from e
    if eval_mode:
        model.eval()
    info = {k: payload[k] for k in ("kind", "config", "metrics", "extra")}
    return model, info
