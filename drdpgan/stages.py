"""What each notebook produces, findable from any later notebook.

A notebook that trains or generates something calls a function of this module with its own
parameters; a later notebook calls the same function with the parameters the earlier notebook
would have under the same profile (:func:`notebook_params`). Both land on the same
:class:`~drdpgan.repro.ArtifactCache` entry (keyed by the config), so a notebook opened on its own
either finds what the earlier one built or builds it, with a progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import get_profile
from .notebook_params import (
    derived_seed,
    evaluator_config,
    evaluator_train_config,
    identity_encoder_config,
    identity_train_config,
    prior3d_config,
    prior3d_train_config,
    stylegan2_config,
    stylegan2_train_config,
)
from .repro import ArtifactCache, project_root


def notebook_params(stem: str, profile: str) -> dict[str, Any]:
    """The full parameters notebook ``stem`` runs with under ``profile``: the library's defaults
    (:mod:`drdpgan.notebook_params`, which the notebook's ``parameters`` cell repeats) + the profile's
    overrides. Needs neither ``notebooks/`` nor Papermill."""
    from .notebook_params import defaults as library_defaults

    defaults = library_defaults(stem)
    overrides = get_profile(profile).overrides_for(stem, set(defaults))
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"profile {profile!r} sets {sorted(unknown)} not declared by {stem}.ipynb")
    defaults.update(overrides)
    return defaults


# --------------------------------------------------------------------------- data (notebook 01)


def _params(params_or_profile: dict[str, Any] | str, stem: str) -> dict[str, Any]:
    return notebook_params(stem, params_or_profile) if isinstance(params_or_profile, str) else params_or_profile


def world_config(params: dict[str, Any] | str):
    """The synthetic world of a profile (notebook 01's ``seed`` and ``image_size``)."""
    from .data.world import WorldConfig

    p = _params(params, "01_data")
    return WorldConfig(seed=int(p["seed"]), image_size=int(p["image_size"]))


def synthetic_data(params: dict[str, Any] | str, progress: bool = True) -> dict[str, Any]:
    """Rendered synthetic faces of a profile, cached under ``artifacts/<profile>/``.

    ``train``: world identities ``0 .. n_identities-1`` (what every network trains on);
    ``heldout``: the next ``n_heldout_identities`` identities, never trained on (verification,
    anonymization and recovery are measured on them). Both carry the ground-truth coefficients.
    """
    from .data.datasets import SyntheticFaceDataset
    from .data.world import WORLD_VERSION

    p = _params(params, "01_data")
    wc = world_config(p)
    n_tr, n_ho = int(p["n_identities"]), int(p["n_heldout_identities"])
    parts = {
        "train": (range(0, n_tr), int(p["samples_per_identity"])),
        "heldout": (range(n_tr, n_tr + n_ho), int(p["heldout_samples_per_identity"])),
    }
    out = {}
    for name, (ids, spi) in parts.items():
        spec = {"world": wc.__dict__, "version": WORLD_VERSION, "identities": [ids.start, ids.stop],
                "samples_per_identity": spi}

        def build(d, ids=ids, spi=spi):
            SyntheticFaceDataset(wc, ids, spi, cache_dir=d, progress=progress)

        path = ArtifactCache(p["profile"]).get(f"synthetic-{name}", spec, build)
        out[name] = SyntheticFaceDataset(wc, ids, spi, cache_dir=path, progress=False)
    return out


def unseen_identity_faces(params: dict[str, Any] | str, n: int, batch_size: int = 256) -> "torch.Tensor":
    """One face (sample 0) of each of ``n`` synthetic identities that no network trained on:
    the held-out identities first, then further world identities after them (rendered on the fly,
    a few seconds for 1,000 at 64 px). Lets a measurement cover more identities than the profile's
    held-out split (e.g. notebook 05's 1,000). Synthetic profiles only."""
    import torch

    from .data.world import FaceWorld

    p = _params(params, "01_data")
    if p["dataset"] != "synthetic":
        raise ValueError(f"unseen_identity_faces renders synthetic identities; profile {p['profile']!r} "
                         f"uses {p['dataset']!r}")
    world = FaceWorld(world_config(p))
    start = int(p["n_identities"])
    ids = torch.arange(start, start + int(n))
    out = [world.render(ids[i:i + batch_size], torch.zeros(len(ids[i:i + batch_size]), dtype=torch.long))["image"]
           for i in range(0, len(ids), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 3, int(p["image_size"]), int(p["image_size"]))


def lfw_source_dir(params: dict[str, Any] | str) -> Path:
    """Where the profile expects LFW (``lfw_source``, relative to the project root; env ``DRDPGAN_LFW`` wins)."""
    p = _params(params, "01_data")
    src = Path(os.environ.get("DRDPGAN_LFW") or p["lfw_source"])
    return src if src.is_absolute() else (project_root() / src).resolve()


def lfw_aligned_dir(params: dict[str, Any] | str, progress: bool = True) -> Path:
    """LFW aligned by ``data_scripts/prepare_lfw.py`` at the profile's size (resumable, cached)."""
    import subprocess
    import sys

    p = _params(params, "01_data")
    src = lfw_source_dir(p)
    if not src.exists():
        raise FileNotFoundError(
            f"LFW not found at {src}: set the lfw_source parameter (or DRDPGAN_LFW) to a folder or archive "
            f"of LFW, or run data_scripts/prepare_lfw.py --download on a machine with a network")
    size = int(p["image_size"])
    out = ArtifactCache(p["profile"]).path("lfw-aligned", {"src": str(src), "size": size, "seed": int(p["seed"])})
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        # The script is resumable on its own: an interrupted run continues where it stopped.
        root = project_root()  # the script runs there with project-relative paths: nothing machine-specific is printed
        cmd = [sys.executable, os.path.relpath(root / "data_scripts" / "prepare_lfw.py", root),
               "--src", os.path.relpath(src, root), "--out", os.path.relpath(out, root), "--size", str(size),
               "--seed", str(int(p["seed"]))]
        if int(p.get("lfw_limit", 0) or 0) > 0:
            cmd += ["--limit", str(int(p["lfw_limit"]))]
        if not progress:
            cmd.append("--quiet")
        print("[lfw] aligning with MTCNN:", " ".join(cmd[1:]))
        subprocess.run(cmd, check=True, cwd=root)
    return out


def face_data(params: dict[str, Any] | str, progress: bool = True) -> dict[str, Any]:
    """The profile's faces as ``{"train", "heldout"}`` datasets of the package's item format.

    ``dataset = "synthetic"``: the rendered world (:func:`synthetic_data`). ``dataset = "lfw"``:
    the MTCNN-aligned LFW crops, identity-disjoint ``train`` / ``test`` splits of the manifest.
    ``dataset = "manifest"``: any folder ``manifest_dir`` written by ``data_scripts/prepare_*.py``
    (CelebA-HQ, CASIA-WebFace for the ``paper`` profile).
    """
    p = _params(params, "01_data")
    if p["dataset"] == "synthetic":
        return synthetic_data(p, progress)
    if p["dataset"] == "lfw":
        from .data.real import ManifestFaceDataset

        root = lfw_aligned_dir(p, progress)
        return {"train": ManifestFaceDataset(root, split="train", in_memory=True),
                "heldout": ManifestFaceDataset(root, split="test", in_memory=True)}
    if p["dataset"] == "manifest":
        from .data.real import ManifestFaceDataset

        root = Path(p["manifest_dir"])
        root = root if root.is_absolute() else project_root() / root
        if not (root / "manifest.csv").is_file():
            raise FileNotFoundError(f"{root / 'manifest.csv'}: prepare the dataset first with data_scripts/prepare_*.py")
        return {"train": ManifestFaceDataset(root, split="train", in_memory=True, drop_unknown=True),
                "heldout": ManifestFaceDataset(root, split="test", in_memory=True, drop_unknown=True)}
    raise ValueError(f"dataset must be 'synthetic', 'lfw' or 'manifest', got {p['dataset']!r}")


def collect(stem: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """A notebook's parameters as it runs: the names its ``parameters`` cell declares, read from
    ``namespace`` (``globals()`` in the notebook: injected or edited values included)."""
    from .notebook_params import names as declared

    names = declared(stem)
    missing = [n for n in names if n not in namespace]
    if missing:
        raise NameError(f"{stem}: parameters {missing} are not defined; run the parameters cell first")
    return {n: namespace[n] for n in names}


def images_of(dataset, indices=None) -> "torch.Tensor":
    """All (or the given) images of a dataset as one float tensor (N, 3, H, W) in [-1, 1]."""
    import torch

    if hasattr(dataset, "image_tensor"):
        return dataset.image_tensor(indices)
    idx = range(len(dataset)) if indices is None else indices
    return torch.stack([dataset[int(i)]["image"] for i in idx])


# --------------------------------------------------------------------------- priors (notebooks 02-04)

#: ``priors`` parameter of notebooks 02-04: "train" (train here at the notebook's budget, cached) or
#: "shipped" (load ``drdpgan/weights/<profile>/<network>.pt``, pretrained by ``python -m
#: drdpgan.pretrain``). ``DRDPGAN_RETRAIN=1`` (``make reproduce RETRAIN=1``) forces "train".
PRIOR_MODES = ("train", "shipped")


def prior_mode(p: dict[str, Any], name: str = "priors") -> str:
    """The mode in force of parameter ``name`` (``priors`` of notebooks 02-04, ``model`` of notebook 09)."""
    mode = str(p.get(name, "train"))
    if mode not in PRIOR_MODES:
        raise ValueError(f"{name} must be one of {PRIOR_MODES}, got {mode!r}")
    return "train" if os.environ.get("DRDPGAN_RETRAIN") == "1" else mode


def live_params(stem: str, params: dict[str, Any]) -> dict[str, Any]:
    """For a notebook that loaded shipped networks (``priors="shipped"``, notebook 09's ``model="shipped"``): its
    parameters with the training budget of its own defaults (the small run nbval checks), on the profile's data,
    and its mode parameter at ``"train"``, to run the training loop live in a minute or two beside the pretrained
    network."""
    from .notebook_params import defaults

    p = defaults(stem)
    mode = "model" if "model" in p else "priors"
    return {**p, "profile": params["profile"], "seed": params["seed"], mode: "train"}


def _shipped(profile: str, network: str):
    """A shipped pretrained network as ``(model, info)``; ``info['metrics']`` are the manifest's
    (measured on the stored weights) plus the training cost, ``info['dir']`` the shipped logs."""
    from . import shipped

    model, info = shipped.load(profile, network)
    entry = info["manifest"]
    info["metrics"] = {**entry["metrics_stored"], "train_seconds": entry.get("train_seconds"),
                       "images_seen": entry.get("images_seen")}
    info["dir"] = shipped.WEIGHTS_DIR / profile / f"{network}_logs"
    return model, info


#: the shipped networks each prior notebook loads (``priors="shipped"``)
PRIOR_NETWORKS = {"02_identity_encoder": ("identity", "evaluator"), "03_prior3d": ("prior3d",),
                  "04_stylegan2": ("stylegan2",)}


def prior_params(profile: str) -> dict[str, dict[str, Any]]:
    """Parameters of notebooks 01-04 for ``profile`` (what fixes the priors a DR-DPGAN wraps), without
    ``num_threads`` (threads do not change what is trained): the prior part of later cache keys. A notebook whose
    networks are shipped contributes its mode and the shipped files' digests only: its training budget is not what
    is loaded, and its measurement sizes (``realism_num``, ``verif_pairs``) change no network."""
    from . import shipped

    out = {}
    for stem in ("01_data", "02_identity_encoder", "03_prior3d", "04_stylegan2"):
        p = notebook_params(stem, profile)
        p.pop("num_threads", None)
        if stem in PRIOR_NETWORKS:  # what is actually loaded: the mode in force and the shipped files' digests
            p["priors"] = prior_mode(p)
            if p["priors"] == "shipped":
                man = shipped.manifest()
                p = {"priors": "shipped",
                     "shipped_sha256": [man.get(f"{profile}/{n}", {}).get("sha256") for n in PRIOR_NETWORKS[stem]]}
        out[stem] = p
    return out


def _data_key(p01: dict[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "image_size", "seed", "n_identities", "samples_per_identity", "n_heldout_identities",
            "heldout_samples_per_identity", "lfw_source", "lfw_limit", "manifest_dir")
    return {k: p01[k] for k in keys}


def _set_threads(n: int) -> None:
    import torch

    if int(n or 0) > 0:
        torch.set_num_threads(int(n))


def verification_report(model, train, heldout, n_pairs: int, seed: int, band=(0.1, 0.4),
                        lfw_pairs: tuple | None = None) -> dict[str, Any]:
    """Verification of ``model`` on identities it never saw (``heldout``), threshold calibrated on
    pairs of ``train`` identities (other people). ``lfw_pairs = (idx_a, idx_b, same)`` replaces the
    sampled test pairs by the official LFW pairs whose identities are all held out."""
    import numpy as np

    from .verification import cosine_band_stats, embed, make_pairs, pair_cosines, verification_accuracy

    emb_tr, emb_ho = embed(model, train), embed(model, heldout)
    ca, cb, cs = make_pairs(train.labels, n_pairs, n_pairs, seed=seed)
    if lfw_pairs is None:
        ta, tb, ts = make_pairs(heldout.labels, n_pairs, n_pairs, seed=derived_seed(seed, "test_pairs"))
    else:
        ta, tb, ts = (np.asarray(v) for v in lfw_pairs)
    cos_cal, cos_test = pair_cosines(emb_tr, ca, cb), pair_cosines(emb_ho, ta, tb)
    ver = verification_accuracy(cos_test, ts, cos_cal, cs)
    stats = cosine_band_stats(cos_test, ts, diff_band=tuple(band))
    return {"acc": ver["acc"], "auc": ver["auc"], "threshold": ver["threshold"], "cos": cos_test,
            "same": np.asarray(ts, bool), "band": stats, "n_same": int(np.sum(ts)), "n_diff": int(np.sum(~np.asarray(ts, bool)))}


def lfw_test_pairs(p01: dict[str, Any], heldout) -> tuple | None:
    """The official LFW pairs whose two images are in the held-out split, as heldout indices."""
    import csv

    import numpy as np

    if p01["dataset"] != "lfw":
        return None
    root = lfw_aligned_dir(p01, progress=False)
    pos = {str(p): i for i, p in enumerate(heldout.paths)}
    a, b, s = [], [], []
    with (root / "pairs.csv").open() as f:
        for r in csv.DictReader(f):
            if r["split"] == "test" and r["path_a"] in pos and r["path_b"] in pos:
                a.append(pos[r["path_a"]]), b.append(pos[r["path_b"]]), s.append(int(r["same"]) == 1)
    return np.array(a), np.array(b), np.array(s)


def identity_encoder(params: dict[str, Any] | str, progress: bool = True):
    """E_Arcface of the profile (notebook 02): ``(encoder, info)``; trained and cached when missing."""
    from .checkpoints import load_model
    from .train_priors import train_identity_encoder

    p = _params(params, "02_identity_encoder")
    if prior_mode(p) == "shipped":
        return _shipped(p["profile"], "identity")
    p01 = notebook_params("01_data", p["profile"])
    cfg, tcfg = identity_encoder_config(p), identity_train_config(p)
    key = {"data": _data_key(p01), "cfg": cfg.__dict__, "tcfg": tcfg.__dict__, "verif_pairs": p["verif_pairs"]}

    def build(d):
        _set_threads(p["num_threads"])
        data = face_data(p01, progress)
        enc, hist = train_identity_encoder(data["train"], cfg, tcfg, out_dir=d, progress=progress)
        rep = verification_report(enc, data["train"], data["heldout"], int(p["verif_pairs"]), int(p["seed"]),
                                  lfw_pairs=lfw_test_pairs(p01, data["heldout"]))
        from .checkpoints import save_checkpoint

        save_checkpoint(d / "identity_encoder.pt", enc, metrics={
            "identity.verif_acc": rep["acc"], "identity.roc_auc": rep["auc"], "train_seconds": hist.get("time_s")},
            extra={"history": {k: v for k, v in hist.items() if k in ("loss", "acc", "step_loss", "step_acc")}})

    path = ArtifactCache(p["profile"]).get("identity-encoder", key, build)
    model, info = load_model(path / "identity_encoder.pt")
    return model, info


def evaluator_subset(train, p02: dict[str, Any]):
    """The evaluator's own split of the training identities: ``eval_identity_fraction`` of them (at
    least 2), drawn with the ``evaluator_split`` seed, relabelled ``0..k-1``."""
    import numpy as np

    from .data.datasets import LabeledSubset

    rng = np.random.default_rng(derived_seed(p02["seed"], "evaluator_split"))
    k = max(2, int(round(train.n_identities * float(p02["eval_identity_fraction"]))))
    ids = rng.permutation(train.n_identities)[:k]
    return LabeledSubset(train, np.flatnonzero(np.isin(train.labels, ids)), relabel=True)


def facenet_evaluator(params: dict[str, Any] | str, progress: bool = True):
    """The independent evaluator (notebook 02): facenet-pytorch's InceptionResnetV1 trained from scratch
    on a different split (``eval_identity_fraction`` of the train identities, another seed). Never used
    inside a training loss."""
    from .checkpoints import load_model
    from .train_priors import train_facenet

    p = _params(params, "02_identity_encoder")
    if prior_mode(p) == "shipped":
        return _shipped(p["profile"], "evaluator")
    p01 = notebook_params("01_data", p["profile"])
    cfg, tcfg = evaluator_config(p), evaluator_train_config(p)
    key = {"data": _data_key(p01), "cfg": cfg.__dict__, "tcfg": tcfg.__dict__,
           "fraction": p["eval_identity_fraction"], "verif_pairs": p["verif_pairs"]}

    def build(d):
        _set_threads(p["num_threads"])
        data = face_data(p01, progress)
        train = data["train"]
        model, hist = train_facenet(evaluator_subset(train, p), cfg, tcfg, out_dir=d, progress=progress)
        rep = verification_report(model, train, data["heldout"], int(p["verif_pairs"]), int(p["seed"]),
                                  lfw_pairs=lfw_test_pairs(p01, data["heldout"]))
        from .checkpoints import save_checkpoint

        save_checkpoint(d / "facenet.pt", model, metrics={"evaluator.verif_acc": rep["acc"],
                                                          "train_seconds": hist.get("time_s")})

    path = ArtifactCache(p["profile"]).get("facenet-evaluator", key, build)
    return load_model(path / "facenet.pt")


def prior3d(params: dict[str, Any] | str, progress: bool = True):
    """The 3D prior (notebook 03): trained on the synthetic world's coefficients, whatever the profile's
    faces are (real faces carry no ground-truth 3D coefficients)."""
    from .checkpoints import load_model, save_checkpoint
    from .models.prior3d import r2_per_coefficient
    from .train_priors import train_prior3d

    p = _params(params, "03_prior3d")
    if prior_mode(p) == "shipped":
        return _shipped(p["profile"], "prior3d")
    p01 = {**notebook_params("01_data", p["profile"]), "dataset": "synthetic"}
    cfg, tcfg = prior3d_config(p), prior3d_train_config(p)
    key = {"data": _data_key(p01), "cfg": cfg.__dict__, "tcfg": tcfg.__dict__}

    def build(d):
        _set_threads(p["num_threads"])
        data = synthetic_data(p01, progress)
        model, hist = train_prior3d(data["train"], cfg, tcfg, out_dir=d, progress=progress)
        r2 = r2_per_coefficient(model, data["heldout"])
        save_checkpoint(d / "prior3d.pt", model, metrics={
            "prior3d.r2_expression": r2["expression_mean"], "prior3d.r2_pose": r2["pose_mean"],
            "train_seconds": hist.get("time_s")})

    path = ArtifactCache(p["profile"]).get("prior3d", key, build)
    return load_model(path / "prior3d.pt")


def stylegan2(params: dict[str, Any] | str, progress: bool = True):
    """StyleGAN2 of the profile (notebook 04): ``(G_ema, info)``. Training runs in a persistent work
    folder beside the cache entry, so a killed run resumes from its last checkpoint."""
    import json

    from .checkpoints import load_model, save_checkpoint
    from .train_stylegan2 import train_stylegan2

    p = _params(params, "04_stylegan2")
    if prior_mode(p) == "shipped":
        return _shipped(p["profile"], "stylegan2")
    p01 = notebook_params("01_data", p["profile"])
    gcfg, tcfg = stylegan2_config(p01, p), stylegan2_train_config(p)
    key = {"data": _data_key(p01), "gcfg": gcfg.to_dict(), "tcfg": tcfg.__dict__,
           "features": "identity_encoder" if p["frechet_features"] == "identity" else "pixel8"}
    cache = ArtifactCache(p["profile"])
    work = cache.path("stylegan2", key).with_name(cache.path("stylegan2", key).name + "-work")

    def build(d):
        _set_threads(p["num_threads"])
        data = face_data(p01, progress)
        feature_fn = None
        if p["frechet_features"] == "identity":
            enc, _ = identity_encoder(p["profile"], progress)

            def identity_features(x):
                import torch

                with torch.no_grad():
                    return enc(x)

            feature_fn = identity_features
        G, metrics = train_stylegan2(data["train"], gcfg, tcfg, work, feature_fn=feature_fn, progress=progress)
        save_checkpoint(d / "generator.pt", G, metrics={"stylegan2.frechet_id": metrics.get("frechet"), **{
            k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
        for f in ("losses.csv", "metrics.csv"):
            if (work / f).is_file():
                (d / f).write_bytes((work / f).read_bytes())
        samples = sorted((work / "samples").glob("*.png"))
        (d / "samples").mkdir()
        for s in samples:
            (d / "samples" / s.name).write_bytes(s.read_bytes())
        (d / "final_metrics.json").write_text(json.dumps(metrics))

    path = cache.get("stylegan2", key, build)
    G, info = load_model(path / "generator.pt")
    info["dir"] = path
    return G, info


# --------------------------------------------------------------------------- DR-DPGAN (notebooks 05-)


def drdpgan_model(profile: str, progress: bool = True, **config_overrides):
    """A :class:`~drdpgan.models.drdpgan.DRDPGAN` around the profile's trained priors (notebooks 02-04):
    the identity encoder and 3D prior frozen, a copy of the StyleGAN2 generator (its EMA weights) to
    fine-tune, and freshly initialised DR-DPGAN components. ``config_overrides`` set fields of
    :class:`~drdpgan.models.drdpgan.DRDPGANConfig` (e.g. the ablation switches)."""
    from .models.drdpgan import assemble

    enc, _ = identity_encoder(profile, progress)
    p3d, _ = prior3d(profile, progress)
    G, _ = stylegan2(profile, progress)
    return assemble(G, enc, p3d, **config_overrides)


def untrained_model(profile: str, seed: int = 0, progress: bool = True, **config_overrides):
    """:func:`drdpgan_model` with its fresh components initialised from ``seed`` (the caller's global RNG is
    left untouched); eval mode. What every DR-DPGAN training of the pipeline starts from."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = drdpgan_model(profile, progress=progress, **config_overrides)
    return model.eval()
