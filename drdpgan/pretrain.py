"""Pretraining: train a profile's prior networks once, for hours, then ship the weights.

The paper starts from networks pretrained elsewhere (StyleGAN2-FFHQ, ArcFace, Deep3DFaceRecon).
This package trains its own, with its own training code, in a persistent work folder
``artifacts/pretrain/<profile>/<network>/`` that every invocation resumes from (a kill loses at
most ``checkpoint_every`` steps; the resumed run is bit-identical to an uninterrupted one on the
same machine and thread count, see :mod:`drdpgan.train_stylegan2`)::

    python -m drdpgan.pretrain stylegan2 --profile cpu [--steps N] [--threads 1]
    python -m drdpgan.pretrain identity|evaluator|prior3d --profile cpu [--threads 1]
    python -m drdpgan.pretrain drdpgan --profile cpu    (DR-DPGAN itself, from the above: drdpgan.pretrain_drdpgan)
    python -m drdpgan.pretrain status --profile cpu
    python -m drdpgan.pretrain stash --network drdpgan --profile cpu   (carry an unfinished run in git: drdpgan.run_stash)

``steps`` is the total to reach; raising it later continues the same run (the recipe below
must otherwise stay the same, which the trainer checks). Every start and resume appends one
line to ``provenance.jsonl`` in the work folder (code commit, whether the tree had
uncommitted changes, command, machine, threads, starting step), so the manifest of a shipped
weight file can say exactly which code produced it.

The recipes (:data:`STYLEGAN2_RECIPES`) are the library's defaults for pretraining, separate
from the notebooks' small live-training budgets.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .notebook_params import evaluator_config, identity_encoder_config, prior3d_config, stylegan2_config
from .repro import artifacts_root, bf16_is_fast, cpu_setting, project_root

__all__ = ["STYLEGAN2_RECIPES", "PRIOR_RECIPES", "work_dir", "record_provenance", "pretrain_stylegan2",
           "pretraining_faces", "pretrain_prior", "main"]


def _stylegan2_recipes() -> dict[str, Any]:
    from .train_stylegan2 import TrainConfig

    # The cpu profile: the synthetic world at 64 px (12k training faces), generator of notebook 04's
    # cpu budget (channel_max 128, w_dim 128). Differences from the live 300-step budget, each
    # because the run is long: EMA half-life 10 kimg (StyleGAN2's own value; 1 kimg is for runs
    # that see a few thousand images), bf16 autocast where the CPU has bf16 hardware ("auto": 1.05 vs 1.65
    # s/step at 2 threads there, and the same pixel Frechet distance as fp32 after 300 steps: 10.46 vs 10.41,
    # README; the shipped generator trained in bf16; without such hardware bf16 is emulated and far slower),
    # checkpoints every 100 steps (a few minutes of CPU time).
    cpu = TrainConfig(steps=12000, batch_size=16, lr=0.001, ema_kimg=10.0, ema_rampup=0.05, seed=0,
                      log_every=10, sample_every=250, checkpoint_every=100, keep_checkpoints=2,
                      metric_every=500, metric_num=512, precision="auto")
    # lfw: real faces (6,193 training crops) from the cpu generator with DiffAugment, the known way to train a GAN on
    # a few thousand images. The cpu generator is the shipped one (what a fresh clone has; its pretraining folder,
    # with the discriminator, is not kept), so a fresh D first trains alone against it for 500 steps: a D at chance
    # would steer the generator at random while it catches up (scripts/discriminator_probe.py: against the synthetic
    # world's faces a fresh D still sat at logistic loss 1.29-1.48 at steps 400-600); 6,000 steps of both after that.
    # Its first run (commit 07bec64, no G ramp) warmed D (logits 2.4 / -4.5 at step 500), but G fooled D within 10
    # steps of starting (fake logit -4.5 -> +0.2), D sat at chance after that and the samples took on a checkered
    # texture by step 1,000 (README): so G's lr now ramps in over 1,000 steps after the warm-up (g_rampup_steps)
    # Its second run (commit 3a05419, the ramp) held D while G's rate was small, then D fell to chance as the rate
    # passed about 2e-4 (step 800) and the faces turned into streaks by step 1,750; G at 2e-4 (scripts/
    # stylegan2_diagnostics.py) followed the same path, slower (D's loss 1.27 by step 1,300), and R1 at gamma 0.1 from
    # its step 1,000 the same again (1.26 by step 1,300). Those transfers (STYLEGAN2_INIT["lfw"] = "cpu",
    # d_warmup_steps 500, g_rampup_steps 1000, 6,500 steps) are one setting away.
    # Try 3 (commit bbb047a): from scratch, as DiffAugment itself trains on a few thousand images (Zhao et al. 2020:
    # StyleGAN2 on 100-shot and 1k-5k FFHQ subsets), with the reals mirrored (xflip, the official trainers' --mirror:
    # 12,386 training images instead of 6,193) and the cpu run's length (12,000 steps, 192k images seen). Its first
    # 1,120 steps (README): D's loss 0.80 -> 1.24 in 100-step means (the cpu run's settled at 1.10-1.18; tries 1-2 sat
    # at chance, 1.37-1.52), pixel Frechet 12.5 / 8.3 at steps 500 / 1,000, a central face-coloured mass by 1,000
    lfw = replace(cpu, diffaugment="color,translation,cutout", xflip=True)
    return {"cpu": cpu, "lfw": lfw}


#: where each profile's StyleGAN2 pretraining starts: None, from scratch; a profile, from that profile's generator
#: (:func:`pretrained_network`: the shipped one, else its finished run) with a fresh discriminator (lfw's tries 1-2)
STYLEGAN2_INIT = {"cpu": None, "lfw": None}


STYLEGAN2_RECIPES = _stylegan2_recipes()

# Extra synthetic identities for the priors' pretraining: world identities from
# EXTRA_IDENTITY_START on, far beyond every evaluation range the notebooks use (held-out identities
# n_identities .. n_identities + n_heldout, and notebook 05's unseen identities after them). More
# identities is the known lever for verification on unseen people (ArcFace trains on 85k).
EXTRA_IDENTITY_START = 50_000


def _prior_recipes() -> dict[str, dict[str, Any]]:
    from .data.world import EXPRESSION_FLIP
    from .train_priors import FaceNetTrainConfig, IdentityTrainConfig, Prior3DTrainConfig

    cpu = {
        # identities 0..n_identities-1 of the profile plus extra_identities more, 20 faces each
        "extra_identities": 2400,
        "samples_per_identity": 20,
        "identity": IdentityTrainConfig(seed=0, epochs=12, batch_size=128, lr=0.1, margin_warmup_steps=500,
                                        checkpoint_every=100),
        "evaluator": FaceNetTrainConfig(seed=101, epochs=4, batch_size=64, lr=1e-3, warmup_steps=100,
                                        checkpoint_every=100),
        # mirror augmentation (pose (-yaw, pitch, -roll), eye closures swapped): the first run without it
        # (20 epochs) overfit, train loss 0.06 against held-out R2 0.74 expression / 0.963 pose
        "prior3d": Prior3DTrainConfig(seed=2, epochs=30, batch_size=128, lr=2e-3, warmup_steps=100, flip_p=0.5,
                                      flip_expression_perm=EXPRESSION_FLIP, checkpoint_every=100),
    }

    lfw = {
        # identity encoder and evaluator: fine-tuned on the LFW training identities from the cpu
        # pretraining (synthetic faces: the pretraining that real-face data this scarce needs)
        "init_from": "cpu",
        # The identity encoder on LFW alone (commit d3dc124): LFW test pairs 0.780 (ROC AUC 0.874) from the cpu
        # encoder's 0.639, training accuracy 0.87 on 3,425 people with 1.8 photos each. Beside the first 1,000 synthetic
        # identities (20 faces each, identity_synthetic_identities 1000) as more classes, 12 epochs (commit 810feab,
        # folder identity-try2-mix1000): 0.722 (ROC AUC 0.801), worse
        "identity": IdentityTrainConfig(seed=0, epochs=30, batch_size=128, lr=0.01, warmup_steps=50,
                                        margin_warmup_steps=100, checkpoint_every=100),
        "evaluator": FaceNetTrainConfig(seed=101, epochs=15, batch_size=64, lr=3e-4, warmup_steps=50,
                                        checkpoint_every=100),
        # the 3D prior of real faces: the cpu pretraining faces (true coefficients) plus the LFW
        # training crops with landmark pseudo-labels (drdpgan.landmark_labels), repeated
        # real_repeats times; mirror augmentation with the pose and eye-closure flip
        "synthetic_from": "cpu",
        "real_repeats": 4,
        "prior3d": Prior3DTrainConfig(seed=2, epochs=8, batch_size=128, lr=2e-3, warmup_steps=100, flip_p=0.5,
                                      flip_expression_perm=EXPRESSION_FLIP, checkpoint_every=100),
    }
    return {"cpu": cpu, "lfw": lfw}


PRIOR_RECIPES = _prior_recipes()


def work_dir(profile: str, network: str) -> Path:
    """The persistent pretraining folder of one network (resumed by every invocation)."""
    return artifacts_root() / "pretrain" / profile / network


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True,
                              check=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None


#: the files whose content is "the code" of a run (drdpgan/weights holds outputs, not code)
SOURCE_PATHS = ("drdpgan", "pyproject.toml", "requirements.txt")


def _is_source(rel: str) -> bool:
    return not (rel.startswith("drdpgan/weights/") or "__pycache__" in rel.split("/") or rel.endswith(".pyc"))


def _fingerprint(entries: list[tuple[str, str]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for rel, blob in sorted(entries):
        h.update(f"{rel} {blob}\n".encode())
    return h.hexdigest()


def source_fingerprint(root: str | Path | None = None) -> str:
    """sha256 over ``(path, git blob id)`` of the package source on disk (:data:`SOURCE_PATHS`).

    It equals :func:`commit_fingerprint` of the commit the files come from, so a run on a copy of
    the tree without ``.git`` (a lent GPU machine) can still be tied to a commit at export."""
    import hashlib

    root = Path(root or project_root())
    entries = []
    for name in SOURCE_PATHS:
        top = root / name
        for f in [top] if top.is_file() else sorted(q for q in top.rglob("*") if q.is_file()):
            rel = f.relative_to(root).as_posix()
            if _is_source(rel):
                data = f.read_bytes()
                entries.append((rel, hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()))
    return _fingerprint(entries)


def commit_fingerprint(commit: str) -> str | None:
    """:func:`source_fingerprint` of the package source at ``commit`` (from git's tree)."""
    out = _git("ls-tree", "-r", commit, "--", *SOURCE_PATHS)
    if out is None:
        return None
    entries = []
    for line in out.splitlines():
        meta, rel = line.split("\t", 1)
        if meta.split()[1] == "blob" and _is_source(rel):
            entries.append((rel, meta.split()[2]))
    return _fingerprint(entries)


def code_state() -> dict[str, Any]:
    """The commit the code runs at, whether the package differs from it, which paths do, and the
    :func:`source_fingerprint` (the only one of these a copy without ``.git`` can record)."""
    commit = _git("rev-parse", "HEAD")
    # the shipped weights are outputs, not code: a new export in drdpgan/weights does not make the code dirty
    dirty = _git("status", "--porcelain", "--", *SOURCE_PATHS, ":!drdpgan/weights")
    return {"commit": commit.strip() if commit else None, "dirty": None if dirty is None else bool(dirty.strip()),
            "dirty_paths": [] if not dirty else [line[3:] for line in dirty.splitlines() if line.strip()],
            "source_sha256": source_fingerprint()}


def attest_provenance(prov: list[dict[str, Any]], search: int = 500) -> list[dict[str, Any]]:
    """Tie the provenance records whose git state does not name their code to the commit whose
    package source has their ``source_sha256``.

    That happens on a lent GPU machine: its copy of the tree may have no ``.git`` (``commit`` None)
    or an older one than its files (``dirty`` True against that commit). The source fingerprint is
    computed from the files themselves, so a match means the run's code is exactly that commit's:
    ``commit`` is set to it, ``dirty`` to False, ``commit_matched_by`` says how, and ``git_at_run``
    keeps what git said on the machine. Records that match no commit among the last ``search``
    stay as they are (and :func:`drdpgan.shipped.export` refuses them)."""
    def unnamed(p: dict[str, Any]) -> bool:
        return (not p.get("commit") or p.get("dirty") is not False) and bool(p.get("source_sha256"))

    wanted = {p["source_sha256"] for p in prov if unnamed(p)}
    found: dict[str, str] = {}
    if wanted:
        for c in (_git("rev-list", f"--max-count={search}", "HEAD") or "").split():
            fp = commit_fingerprint(c)
            if fp in wanted and fp not in found:
                found[fp] = c
            if len(found) == len(wanted):
                break
    out = []
    for p in prov:
        if unnamed(p) and p["source_sha256"] in found:
            p = {**p, "commit": found[p["source_sha256"]], "dirty": False, "dirty_paths": [],
                 "commit_matched_by": "source_sha256",
                 "git_at_run": {k: p.get(k) for k in ("commit", "dirty", "dirty_paths")}}
        out.append(p)
    return out


#: the code state when this process loaded its modules (set by :func:`main` before it imports them)
_START_STATE: dict[str, Any] | None = None
#: where the networks train (``--device``); the CPU is the default and what CI exercises
_DEVICE = "cpu"


def _device_name() -> dict[str, str]:
    import torch

    if _DEVICE.startswith("cuda") and torch.cuda.is_available():
        return {"accelerator": torch.cuda.get_device_name(torch.device(_DEVICE))}
    return {}


def set_device(device: str) -> None:
    """Train every recipe on ``device`` (``cuda``: all random numbers are still drawn on the CPU; the
    recipes are otherwise unchanged, so a GPU run follows the same schedule as a CPU run)."""
    global _DEVICE
    _DEVICE = device
    if device.startswith("cuda"):
        import torch

        torch.backends.cudnn.benchmark = True  # fastest kernels for the fixed shapes; numerics unchanged
    for name, cfg in STYLEGAN2_RECIPES.items():
        STYLEGAN2_RECIPES[name] = replace(cfg, device=device)
    from .pretrain_drdpgan import DRDPGAN_RECIPES

    for recipe in [*PRIOR_RECIPES.values(), *DRDPGAN_RECIPES.values()]:
        for key, cfg in recipe.items():
            if hasattr(cfg, "device"):
                recipe[key] = replace(cfg, device=device)


def record_provenance(out: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one start/resume record to ``out/provenance.jsonl`` and return it."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(_START_STATE or code_state()),
           "command": " ".join([Path(sys.executable).name, "-m", "drdpgan.pretrain", *sys.argv[1:]]),
           "machine": {**cpu_setting(), "cores": os.cpu_count(), "device": _DEVICE, **_device_name(),
                       "bf16_hardware": bf16_is_fast(torch.device(_DEVICE).type)}, **event}
    with open(out / "provenance.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def pretrain_stylegan2(profile: str, steps: int | None = None, progress: bool = True):
    """Train (or resume) the profile's StyleGAN2 with its pretraining recipe (also under ``torchrun``: rank 0
    prepares the data and records provenance first, and alone saves the final network)."""
    from . import distributed as ddp
    from . import stages
    from .runlog import latest_checkpoint
    from .train_stylegan2 import train_stylegan2

    if profile not in STYLEGAN2_RECIPES:
        raise ValueError(f"no StyleGAN2 pretraining recipe for profile {profile!r}; "
                         f"known: {sorted(STYLEGAN2_RECIPES)}")
    p01 = stages.notebook_params("01_data", profile)
    p04 = stages.notebook_params("04_stylegan2", profile)
    gcfg = stylegan2_config(p01, p04)
    tcfg = STYLEGAN2_RECIPES[profile]
    if steps is not None:
        tcfg = replace(tcfg, steps=int(steps))
    out = work_dir(profile, "stylegan2")
    ck = latest_checkpoint(out)
    start = 0 if ck is None else int(ck.stem.split("_")[-1])
    init_state, init_info = None, {}
    if ck is None and STYLEGAN2_INIT.get(profile):
        G0, rec = pretrained_network(STYLEGAN2_INIT[profile], "stylegan2")
        if G0.cfg != gcfg:
            raise ValueError(f"{profile} starts from the {STYLEGAN2_INIT[profile]} generator ({rec['init']}), whose "
                             f"config differs from {profile}'s: {G0.cfg} against {gcfg}")
        init_state = {"G": G0.state_dict(), "G_ema": G0.state_dict()}  # no D: tcfg.d_warmup_steps trains a fresh one
        init_info = {"init": rec["init"], "init_sha256": rec["sha256"]}
    main = ddp.is_main()
    with ddp.main_first():  # rank 0 builds the data caches; the others then read them
        if main:
            record_provenance(out, {"network": "stylegan2", "profile": profile, "start_step": start,
                                    "target_steps": tcfg.steps, "world_size": ddp.world_size(), **init_info})
        data = stages.face_data(p01, progress and main)
    t0 = time.time()
    G, metrics = train_stylegan2(data["train"], gcfg, tcfg, out, progress=progress, init_state=init_state)
    G = G.cpu()
    if not main:
        return G, metrics
    from .checkpoints import save_checkpoint

    with open(out / "losses.csv", newline="") as f:  # training time over every segment of the run
        sec = sum(float(r["sec_per_step"]) * tcfg.log_every for r in csv.DictReader(f) if r["sec_per_step"])
    save_checkpoint(out / "stylegan2.pt", G, metrics={**metrics, "steps": metrics.get("step"),
                                                      "images_seen": int(round(metrics.get("kimg", 0) * 1000)),
                                                      "train_seconds": sec, "wall_seconds_this_call": time.time() - t0})
    return G, metrics


def pretraining_faces(profile: str, progress: bool = True):
    """The synthetic faces the priors pretrain on: the profile's training identities plus
    ``extra_identities`` from :data:`EXTRA_IDENTITY_START` (``samples_per_identity`` each), as one
    :class:`~drdpgan.data.datasets.SyntheticFaceDataset` cached in ``artifacts/pretrain/<profile>/data``."""
    from . import stages
    from .data.datasets import SyntheticFaceDataset

    r = PRIOR_RECIPES[profile]
    p01 = stages.notebook_params("01_data", profile)
    if p01["dataset"] != "synthetic":
        raise ValueError(f"pretraining_faces renders the synthetic world; profile {profile!r} uses {p01['dataset']!r}")
    ids = list(range(int(p01["n_identities"]))) + list(
        range(EXTRA_IDENTITY_START, EXTRA_IDENTITY_START + int(r["extra_identities"])))
    return SyntheticFaceDataset(stages.world_config(p01), ids, int(r["samples_per_identity"]),
                                cache_dir=work_dir(profile, "data"), progress=progress)


def real_face_labels(profile: str, split: str, progress: bool = True):
    """The profile's real faces of ``split`` (``train`` / ``heldout``) with landmark pseudo-labels, as
    :class:`~drdpgan.data.datasets.CoefficientFaces`; cached in ``artifacts/pretrain/<profile>/labels``
    (dlib's 68-point landmarks take about 16 ms per face)."""
    import torch

    from . import stages
    from .data.datasets import CoefficientFaces, float_to_uint8
    from .landmark_labels import label_real_faces
    from .repro import atomic_torch_save

    p01 = stages.notebook_params("01_data", profile)
    if p01["dataset"] == "synthetic":
        raise ValueError(f"profile {profile!r} has no real faces to pseudo-label")
    path = work_dir(profile, "labels") / f"{split}.pt"
    if not path.is_file():
        images = stages.images_of(stages.face_data(p01, progress)[split])
        lab = label_real_faces(images, stages.world_config(p01), progress=progress)
        atomic_torch_save({"images": float_to_uint8(images), **{k: lab[k] for k in ("pose", "expression")},
                           "n_fallbacks": lab["n_fallbacks"]}, path)
    d = torch.load(path, weights_only=False)
    return CoefficientFaces(d["images"], d["expression"], d["pose"])


def measure_real_prior3d(model, profile: str, progress: bool = False) -> dict[str, Any]:
    """The real-face 3D prior's keys: mirror consistency of yaw on the first 512 held-out real faces
    (as notebook 03), mean |yaw - landmark PnP yaw| in degrees on all held-out real faces, and R^2 on
    the synthetic held-out faces."""
    import numpy as np

    from . import stages
    from .models.prior3d import pose_flip_consistency, predict_prior3d, r2_per_coefficient

    held = real_face_labels(profile, "heldout", progress)
    flip = pose_flip_consistency(model, held.image_tensor(range(min(512, len(held)))))
    pred = predict_prior3d(model, held.image_tensor())
    yaw_err = float(np.degrees(np.abs(np.asarray(pred["pose"])[:, 0] - held.coeffs["pose"][:, 0].numpy())).mean())
    p01 = stages.notebook_params("01_data", profile)
    r2 = r2_per_coefficient(model, stages.synthetic_data({**p01, "dataset": "synthetic"}, progress)["heldout"])
    return {"prior3d.flip_yaw_sign_rate": flip["yaw_sign_flip_rate"], "prior3d.yaw_err_deg": yaw_err,
            "prior3d.r2_expression": r2["expression_mean"], "prior3d.r2_pose": r2["pose_mean"]}


def pretrained_network(profile: str, network: str):
    """``(model, record)``: the profile's shipped ``network`` when there is one, else its finished
    pretraining run; the record names the file and its sha256."""
    from . import shipped
    from .checkpoints import load_model

    if shipped.available(profile, network):
        model, info = shipped.load(profile, network)
        return model, {"init": f"shipped {profile}/{network}", "sha256": info["manifest"]["sha256"]}
    path = work_dir(profile, network) / f"{network}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrain {network} --profile {profile} first (it is needed here)")
    model, _ = load_model(path)
    return model, {"init": str(path.relative_to(artifacts_root())), "sha256": shipped.sha256_of(path)}


def _initial_weights(profile: str, network: str) -> tuple[dict, dict[str, Any]]:
    """State dict to fine-tune from (:func:`pretrained_network`), with a record of which file it was."""
    model, record = pretrained_network(profile, network)
    return model.state_dict(), record


def _training_set(network: str, profile: str, r: dict[str, Any], progress: bool):
    """``(dataset, init_state or None, provenance extras)`` of one prior's pretraining:

    * synthetic profiles: :func:`pretraining_faces` (the evaluator on its own identity split);
    * real-face profiles: the identity encoder and evaluator fine-tune the ``init_from`` profile's
      networks on the real training faces (with ``<network>_synthetic_identities`` set, beside the first that many
      identities of the ``synthetic_from`` profile's pretraining faces, as more classes: the evaluator the last that
      many, beside its own split of the real identities); the 3D prior trains on
      the synthetic pretraining faces plus the real ones with landmark pseudo-labels, repeated ``real_repeats``
      times."""
    from . import stages
    from .data.datasets import CoefficientFaces, IdentityUnion, LabeledSubset

    p01 = stages.notebook_params("01_data", profile)
    p02 = stages.notebook_params("02_identity_encoder", profile)
    if p01["dataset"] == "synthetic":
        train = pretraining_faces(profile, progress)
        return (stages.evaluator_subset(train, p02) if network == "evaluator" else train), None, {}
    if network == "prior3d":
        synthetic = pretraining_faces(r["synthetic_from"], progress)
        real = real_face_labels(profile, "train", progress)
        train = CoefficientFaces.concat([(CoefficientFaces(synthetic.images, synthetic.coeffs["expression"],
                                                           synthetic.coeffs["pose"]), 1), (real, int(r["real_repeats"]))])
        return train, None, {"n_real": len(real)}
    train = stages.face_data(p01, progress)["train"]
    init, info = _initial_weights(r["init_from"], network)
    if network == "evaluator":
        train = stages.evaluator_subset(train, p02)
    n_syn = r.get(f"{network}_synthetic_identities")
    if n_syn:  # the identity encoder takes the first n_syn synthetic identities, the evaluator the last n_syn
        synthetic = pretraining_faces(r["synthetic_from"], progress)
        labels = np.asarray(synthetic.labels)
        keep = np.flatnonzero(labels < int(n_syn) if network == "identity"
                              else labels >= synthetic.n_identities - int(n_syn))
        train = IdentityUnion([train, LabeledSubset(synthetic, keep, relabel=True)])
        info = {**info, "n_real": len(train.parts[0]), "n_synthetic": len(keep)}
    return train, init, info


def pretrain_prior(network: str, profile: str, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one prior network of ``profile`` (``identity``, ``evaluator`` or ``prior3d``)
    with its recipe on :func:`_training_set`, measure it with :func:`measure` (as the notebooks do),
    and save ``<work>/<network>.pt`` (the package's checkpoint format) with the metrics."""
    from . import distributed as ddp
    from . import stages
    from .checkpoints import save_checkpoint
    from .repro import atomic_write_json
    from .train_priors import resumable_state, train_facenet, train_identity_encoder, train_prior3d

    if profile not in PRIOR_RECIPES:
        raise ValueError(f"no prior pretraining recipe for profile {profile!r}; known: {sorted(PRIOR_RECIPES)}")
    builders = {"identity": ("02_identity_encoder", identity_encoder_config, train_identity_encoder),
                "evaluator": ("02_identity_encoder", evaluator_config, train_facenet),
                "prior3d": ("03_prior3d", prior3d_config, train_prior3d)}
    if network not in builders:
        raise ValueError(f"unknown prior {network!r}; expected one of {sorted(builders)}")
    stem, config_of, trainer = builders[network]
    r, out = PRIOR_RECIPES[profile], work_dir(profile, network)
    main = ddp.is_main()  # under torchrun: rank 0 builds the data caches first, and alone records and saves
    with ddp.main_first():
        train, init, info = _training_set(network, profile, r, progress and main)
        if main:
            record_provenance(out, {"network": network, "profile": profile, "n_train": len(train), **info,
                                    "resumed": resumable_state(out / "state") is not None,
                                    "world_size": ddp.world_size()})
    t0 = time.time()
    model, hist = trainer(train, config_of(stages.notebook_params(stem, profile)), r[network], out_dir=out / "state",
                          progress=progress, **({"init_state": init} if init is not None else {}))
    model = model.cpu()  # measured and saved on the CPU, wherever it trained (as export measures it)
    if not main:
        return {}
    metrics = {**measure(network, profile, model, progress), "steps": hist["steps"],
               "images_seen": hist["steps"] * r[network].batch_size, "train_seconds": hist["time_s"],
               "n_train": len(train), "n_train_identities": int(train.n_identities), **info}
    save_checkpoint(out / f"{network}.pt", model, metrics=metrics)
    atomic_write_json(out / "final_metrics.json", {**metrics, "wall_seconds_this_call": time.time() - t0})
    return metrics


# --------------------------------------------------------------------------- shipping


def check_set(profile: str):
    """The small fixed evaluation set the shipped-weights test re-measures on: the first 50 held-out
    identities of the profile's synthetic world, 10 faces each (rendered in a few seconds, no cache)."""
    from . import stages
    from .data.datasets import SyntheticFaceDataset

    p01 = {**stages.notebook_params("01_data", profile), "dataset": "synthetic"}
    start = int(p01["n_identities"])
    return SyntheticFaceDataset(stages.world_config(p01), range(start, start + 50), 10, progress=False)


def check_metric(network: str, model, data) -> tuple[str, float]:
    """``(name, value)`` of the one metric re-measured per shipped network on :func:`check_set`."""
    from sklearn.metrics import roc_auc_score

    from .verification import embed, make_pairs, pair_cosines

    if network in ("identity", "evaluator"):
        a, b, same = make_pairs(data.labels, 500, 500, seed=0)
        return f"{network}.check_auc", float(roc_auc_score(same, pair_cosines(embed(model, data), a, b)))
    if network == "prior3d":
        from .models.prior3d import r2_per_coefficient

        return "prior3d.check_r2_pose", float(r2_per_coefficient(model, data)["pose_mean"])
    if network == "stylegan2":
        import torch

        from .repro import batched, make_generator
        from .train_stylegan2 import frechet_distance, pixel_features

        z = torch.randn(len(data), model.z_dim, generator=make_generator(0))
        fakes = batched(lambda zz: model(zz, noise_mode="const"), z, batch_size=50)
        reals = data.image_tensor()
        return "stylegan2.check_frechet_pixel8", float(frechet_distance(pixel_features(reals).numpy(),
                                                                        pixel_features(fakes).numpy()))
    if network == "drdpgan":
        from .pretrain_drdpgan import quick_metrics

        return "drdpgan.check_rec_psnr_oracle", quick_metrics(model, data.image_tensor()[:128])["rec_psnr_oracle"]
    raise ValueError(f"unknown network {network!r}")


def measure(network: str, profile: str, model, progress: bool = False) -> dict[str, Any]:
    """The network's full metrics as the pretraining run reports them (held-out identities of the profile)."""
    from . import stages

    p01 = stages.notebook_params("01_data", profile)
    p02 = stages.notebook_params("02_identity_encoder", profile)
    if network in ("identity", "evaluator"):
        faces = stages.face_data(p01, progress)
        rep = stages.verification_report(model, faces["train"], faces["heldout"], int(p02["verif_pairs"]),
                                         int(p02["seed"]), lfw_pairs=stages.lfw_test_pairs(p01, faces["heldout"]))
        return {f"{network}.verif_acc": rep["acc"], f"{network}.roc_auc": rep["auc"]}
    if network == "prior3d" and p01["dataset"] != "synthetic":
        return measure_real_prior3d(model, profile, progress)
    if network == "prior3d":
        from .models.prior3d import r2_per_coefficient

        r2 = r2_per_coefficient(model, stages.synthetic_data(p01, progress)["heldout"])
        return {"prior3d.r2_expression": r2["expression_mean"], "prior3d.r2_pose": r2["pose_mean"],
                "prior3d.r2_expression_each": r2["expression"], "prior3d.r2_pose_each": r2["pose"]}
    if network == "stylegan2":
        return measure_stylegan2(model, profile, progress)
    if network == "drdpgan":
        from .pretrain_drdpgan import measure_drdpgan

        return measure_drdpgan(model, profile, progress=progress)
    raise ValueError(f"unknown network {network!r}")


#: samples for the StyleGAN2 realism keys (issue 14: 2,048; the held-out set may be smaller, then all of it)
REALISM_N = 2048


def measure_stylegan2(G, profile: str, progress: bool = False, n: int = REALISM_N) -> dict[str, Any]:
    """The generator's realism (:func:`drdpgan.realism.generator_realism`): Frechet distance in the
    profile's pretrained evaluator's features, generated vs held-out real faces, over the same distance
    between training and held-out real faces; MTCNN face-detection rate of samples and real faces."""
    import torch

    from . import stages
    from .realism import generator_realism
    from .repro import make_generator

    evaluator, record = pretrained_network(profile, "evaluator")
    faces = stages.face_data(stages.notebook_params("01_data", profile), progress)

    def pick(ds, seed):
        return stages.images_of(ds, torch.randperm(len(ds), generator=make_generator(seed))[:n].tolist())

    real_train, real_heldout = pick(faces["train"], 1), pick(faces["heldout"], 2)
    out = generator_realism(G.eval(), real_train, real_heldout, evaluator.eval(), n=min(n, len(real_heldout)), seed=0)
    return {**out, "stylegan2.fd_evaluator": record}


#: tolerance of each check metric: same weights, same inputs, so only float kernels differ between
#: machines. Measured under AVX-512 / AVX2 kernels and 1 / 2 threads: the cpu identity encoder and
#: evaluator identical to the last digit (AUC 0.999884, 0.999252; an AUC over 500 x 500 pairs moves by
#: 4e-6 per swapped pair, so 1e-4 allows 25 swaps); the cpu 3D prior's pose R^2 0.96941638 vs
#: 0.96941636 (2e-8 apart; 1e-5 leaves room for other CPUs' float32 kernels); the cpu StyleGAN2's pixel
#: Frechet distance 1.9068153628023907 under all four settings (1e-4 is 5e-5 of it). DR-DPGAN's value is a
#: placeholder until its first export measures its spread the same way.
CHECK_TOLERANCE = {"identity": 1e-4, "evaluator": 1e-4, "prior3d": 1e-5, "stylegan2": 1e-4, "drdpgan": 1e-2}


def export_network(network: str, profile: str, dtype: str = "float16") -> dict[str, Any]:
    """Ship the finished pretraining run of ``network``: measure fp32 and stored-dtype weights, write
    the file and its manifest entry (:func:`drdpgan.shipped.export`)."""
    import copy

    from .checkpoints import load_model
    from .shipped import export, half_state_dict, read_provenance

    folder = work_dir(profile, network)
    ck = folder / f"{network}.pt"
    if not ck.is_file():
        raise FileNotFoundError(f"{ck}: run python -m drdpgan.pretrain {network} --profile {profile} to the end first")
    model, info = load_model(ck)
    stored = copy.deepcopy(model)
    if dtype == "float16":
        stored.load_state_dict(half_state_dict(model.state_dict()))
    metrics, metrics_stored = measure(network, profile, model), measure(network, profile, stored)
    train_info = {k: info["metrics"].get(k) for k in ("steps", "images_seen", "train_seconds", "n_train",
                                                        "n_train_identities")}
    train_info["exported"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **code_state(),
                              "command": f"python -m drdpgan.pretrain export --network {network} --profile {profile}"}
    name, value = check_metric(network, stored, check_set(profile))
    check = {"metric": name, "value": value, "tolerance": CHECK_TOLERANCE[network],
             "eval_set": "drdpgan.pretrain.check_set: 50 held-out world identities x 10 faces"}
    logs = [folder / name for name in ("losses.csv", "metrics.csv") if (folder / name).is_file()]
    logs += sorted((folder / "samples").glob("step_*.png"))[-1:]  # the last sample grid
    logs += sorted((folder / "state").glob("*_history.json")) + sorted(folder.glob("code_history.json"))
    entry = export(profile, network, ck, folder, metrics, metrics_stored, check, dtype=dtype, extra=train_info,
                   logs=logs, provenance=attest_provenance(read_provenance(folder)),
                   referenced_parts=frozen_shipped_parts(profile, network) or None)
    from .run_stash import stash_dir

    shutil.rmtree(stash_dir(profile, network), ignore_errors=True)  # the run's carried state: its model ships now
    return entry


def frozen_shipped_parts(profile: str, network: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The frozen parts of ``network`` that are the profile's shipped networks, named instead of stored again
    in an export or a stash (:func:`drdpgan.checkpoints.strip_referenced_parts`): attribute -> (the shipped
    network as loaded, ``{"profile", "network", "sha256"}``); empty for every network but DR-DPGAN."""
    if network != "drdpgan":
        return {}
    from . import shipped

    refs = {}
    for attr, net in (("identity_encoder", "identity"), ("prior3d", "prior3d")):
        part, info = shipped.load(profile, net)
        refs[attr] = (part, {"profile": profile, "network": net, "sha256": info["manifest"]["sha256"]})
    return refs


def stash_run(profile: str, network: str) -> dict[str, Any]:
    """Carry the unfinished pretraining run of ``network`` in ``pretrain_state/`` (:func:`drdpgan.run_stash.stash`,
    leaving out its :func:`frozen_shipped_parts`); returns ``stash.json``'s content."""
    from .run_stash import stash, stash_dir

    return stash(work_dir(profile, network), stash_dir(profile, network), frozen_shipped_parts(profile, network))


def status(profile: str) -> dict[str, Any]:
    """What each pretraining folder of ``profile`` holds: latest step and the last logged rows; and each run
    carried in ``pretrain_state/`` (:mod:`drdpgan.run_stash`): the step it was stashed at."""
    from .run_stash import NETWORKS, stash_dir
    from .train_priors import resumable_state

    root = artifacts_root() / "pretrain" / profile
    out: dict[str, Any] = {}
    for net in NETWORKS:
        f = stash_dir(profile, net) / "stash.json"
        if f.is_file():
            out.setdefault(net, {})["stashed_step"] = json.loads(f.read_text())["step"]
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        cks = sorted((d / "checkpoints").glob("ckpt_*.pt"))
        info: dict[str, Any] = {"latest_checkpoint": cks[-1].name if cks else None}
        state = resumable_state(d / "state")  # the priors' resumable state
        if state is not None:
            import torch

            info["resumable_step"] = int(torch.load(state, map_location="cpu", weights_only=False)["step"])
        if (d / "final_metrics.json").is_file():
            info["finished"] = json.loads((d / "final_metrics.json").read_text())
        for name in ("losses.csv", "metrics.csv"):
            f = d / name
            if f.is_file():
                lines = f.read_text().strip().splitlines()
                info[name] = lines[-1] if len(lines) > 1 else None
        out[d.name] = {**info, **out.get(d.name, {})}
    from .pretrain_ablations import ABLATION_RECIPES, collect_results

    finished = [x["run"] for x in collect_results(profile)] if profile in ABLATION_RECIPES else []
    if finished or "ablations" in out:  # Table 4's runs (drdpgan.pretrain_ablations): which have finished
        r = ABLATION_RECIPES[profile]
        out["ablations"] = {"finished": finished, "total": len(r["experiments"]) * len(r["seeds"])}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["stylegan2", "identity", "evaluator", "prior3d", "drdpgan", "ablations", "status",
                                     "export", "stash"])
    ap.add_argument("--network", help="for export: which finished run to ship; for stash: which unfinished run to "
                                      "carry in pretrain_state/ (drdpgan.run_stash)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="for export")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="total steps to reach (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the networks train")
    ap.add_argument("--max-hours", type=float, default=None,
                    help="drdpgan, ablations: train about this long, then stop with a checkpoint (resumed by the next "
                         "call)")
    ap.add_argument("--unless-shipped", action="store_true",
                    help="do nothing when the profile already ships this network (make pretrain without RETRAIN=1)")
    ap.add_argument("--stash", action="store_true", help="drdpgan: when this call ends unfinished, carry the run in "
                                                         "pretrain_state/ (drdpgan.run_stash)")
    a = ap.parse_args(argv)
    if (a.max_hours is not None and a.what not in ("drdpgan", "ablations")) or (a.stash and a.what != "drdpgan"):
        ap.error("--max-hours is for drdpgan and ablations, --stash for drdpgan (the other trainers stop at their "
                 "recipe's end or a kill; python -m drdpgan.pretrain stash --network stylegan2 carries a killed "
                 "StyleGAN2 run; finished Table 4 runs are kept in pretrain_state/<profile>/ablations/ by themselves)")
    if a.unless_shipped and a.what not in ("status", "export", "stash", "ablations"):
        from . import shipped

        if shipped.available(a.profile, a.what):
            print(f"{a.what}: {shipped.weight_path(a.profile, a.what)} ships for profile {a.profile}; not trained "
                  "again (RETRAIN=1, or without --unless-shipped, trains it)", flush=True)
            return 0
    if a.what == "status":
        print(json.dumps(status(a.profile), indent=1))
        return 0
    if a.what == "export":
        if not a.network:
            ap.error("export needs --network")
        entry = export_network(a.network, a.profile, a.dtype)
        print(json.dumps({k: v for k, v in entry.items() if k != "provenance"}, indent=1, default=float))
        return 0
    if a.what == "stash":
        from . import run_stash

        if a.network not in run_stash.NETWORKS:
            ap.error(f"stash needs --network {' or '.join(run_stash.NETWORKS)} (the runs that resume from checkpoints/)")
        info = stash_run(a.profile, a.network)
        print(json.dumps({k: v for k, v in info.items() if k != "code"}, indent=1))
        return 0
    import torch

    # load every module a pretraining run uses now: the code state recorded at its start is then the
    # code that runs, even if files change during the run (modules are otherwise imported lazily)
    import importlib

    global _START_STATE
    _START_STATE = code_state()
    for name in ("checkpoints", "stages", "train_priors", "train_stylegan2", "verification", "landmark_labels",
                 "shipped", "data.datasets", "data.world", "data.real", "models.facenet", "models.identity",
                 "models.prior3d", "models.stylegan2", "models.discriminator", "models.drdpgan", "train_drdpgan",
                 "objective", "hiding", "password", "pretrain_drdpgan", "pretrain_ablations", "protocol", "evaluate",
                 "latent_inversion"):
        importlib.import_module(f"{__package__}.{name}")

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.device != "cpu":
        set_device(a.device)
    from . import distributed as ddp

    ddp.init_from_env(a.device)  # under torchrun --nproc_per_node=N: join the process group (drdpgan.distributed)
    from . import run_stash

    if a.what in run_stash.NETWORKS and ddp.is_main():  # a run carried over in pretrain_state/ goes on from there
        out = work_dir(a.profile, a.what)
        info = run_stash.restore(run_stash.stash_dir(a.profile, a.what), out)
        if info is not None:
            record_provenance(out, {"network": a.what, "profile": a.profile, "restored_from_stash": info["step"],
                                    "stash_time": info["time"], "stash_commit": info["code"].get("commit")})
            print(f"restored {out} at step {info['step']} from {run_stash.stash_dir(a.profile, a.what)}", flush=True)
    ddp.barrier()
    if a.what == "stylegan2":
        metrics = pretrain_stylegan2(a.profile, a.steps, progress=not a.quiet)[1]
    elif a.what == "drdpgan":
        from .pretrain_drdpgan import pretrain_drdpgan

        metrics = pretrain_drdpgan(a.profile, a.steps, progress=not a.quiet,
                                   max_seconds=None if a.max_hours is None else 3600 * a.max_hours)
    elif a.what == "ablations":  # Table 4 (drdpgan.pretrain_ablations)
        from .pretrain_ablations import pretrain_ablations

        metrics = pretrain_ablations(a.profile, progress=not a.quiet,
                                     max_seconds=None if a.max_hours is None else 3600 * a.max_hours)
    else:
        metrics = pretrain_prior(a.what, a.profile, progress=not a.quiet)
    if a.stash and ddp.is_main() and metrics.get("stopped_early"):
        info = stash_run(a.profile, a.what)
        print(f"stashed step {info['step']} in {run_stash.stash_dir(a.profile, a.what)}: commit it", flush=True)
    if ddp.is_main():
        print(json.dumps(metrics, indent=1, default=float))
    ddp.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
