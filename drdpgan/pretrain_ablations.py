"""Table 4 from the pretraining recipe (issue 15): every experiment of :data:`drdpgan.protocol.ABLATIONS`, with
several seeds, trained from the profile's pretrained priors at one budget and measured as notebook 13 measures.

    python -m drdpgan.pretrain ablations --profile cpu [--max-hours H] [--threads 2]

Notebook 13 trains its experiments with notebook 09's short recipe, which at a notebook's budget leaves every
experiment at chance. Here each experiment is the DR-DPGAN pretraining recipe's first phase
(:data:`drdpgan.pretrain_drdpgan.DRDPGAN_RECIPES`: the hiding warm-up, then joint steps at the paper's constant rates)
with the experiment's switches, for ``ABLATION_RECIPES[profile]["steps"]`` steps. A switch takes its own parts with
it: without 3DPC (``use_3d_prior``) the attribute term ``w_attr``, which compares the 3D prior's coefficients, is off
too. Seed ``s`` initialises the fresh components with the recipe's ``init_seed + s`` and drives the training's
randomness (``DRDPGANTrainConfig.seed``), so experiment 7 with seed 0 starts as the shipped model's run did.

Each run lives in ``artifacts/pretrain/<profile>/ablations/exp<n>-seed<s>/`` (resumable checkpoints, ``losses.csv``,
``metrics.csv``, ``provenance.jsonl``). The binary code mapping (Eq. 2-4), which no switch touches, is trained once
for all in ``ablations/code/``; the E_MLP inversion once per run (it starts from the run's initialisation and reads
the 3D prior's coefficients only with 3DPC). A finished run is measured (:func:`drdpgan.protocol.ablation_metrics`:
the evaluator's recovered and anonymized cosines, recovery PSNR, BER and a Table 1 classifier on the recovered
images) and its ``result.json`` and provenance are copied into the tracked ``pretrain_state/<profile>/ablations/``
(a few kB a run): finished runs survive a lost ``artifacts/`` folder and are not trained again.
:func:`collect_results` gathers them for notebook 13 (``runs="pretrained"``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .pretrain import record_provenance, work_dir
from .repro import atomic_write_json
from .run_stash import stash_dir

__all__ = ["ABLATION_RECIPES", "run_name", "state_dir", "pretrain_ablation", "pretrain_ablations", "collect_results",
           "finished_results"]

#: The Table 4 budget per profile. ``steps``: the recipe's first phase run to this step (300 hiding warm-up steps,
#: then joint steps). The full cpu run's held-out health (``metrics.csv``, 64 faces, training encoder) at steps
#: 500 / 750 / 1,000: recovered cosine 0.71 / 0.83 / 0.87, anonymized 0.59 / 0.45 / 0.34, recovery 24.2 / 23.2 /
#: 23.8 dB: by 800 the full model recovers the person and has begun to anonymize. ``seeds``: two, the spread the
#: issue asks for. ``cls_epochs`` / ``max_identities``: notebook 13's measurement settings of the profile.
ABLATION_RECIPES: dict[str, dict[str, Any]] = {
    "cpu": {"steps": 800, "seeds": (0, 1), "experiments": (1, 2, 3, 4, 5, 6, 7), "cls_epochs": 3,
            "max_identities": 100},
}
ABLATION_RECIPES["lfw"] = dict(ABLATION_RECIPES["cpu"])


def run_name(experiment: int, seed: int) -> str:
    return f"exp{int(experiment)}-seed{int(seed)}"


def state_dir(profile: str) -> Path:
    """The tracked folder of finished runs' results: ``pretrain_state/<profile>/ablations/``."""
    return stash_dir(profile, "ablations")


def _recipe(profile: str) -> dict[str, Any]:
    if profile not in ABLATION_RECIPES:
        raise ValueError(f"no Table 4 pretraining recipe for profile {profile!r}; known: {sorted(ABLATION_RECIPES)}")
    return ABLATION_RECIPES[profile]


def train_config(profile: str, experiment: int, seed: int, max_seconds: float | None = None):
    """The run's :class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig`: the DR-DPGAN recipe's first phase to the
    budget's step, with the run's seed, and ``w_attr`` 0 without 3DPC."""
    from .pretrain_drdpgan import DRDPGAN_RECIPES
    from .protocol import ABLATIONS

    steps = int(_recipe(profile)["steps"])
    r = DRDPGAN_RECIPES[profile]
    first = (r.get("earlier_phases") or (r["train"],))[0]
    switches = ABLATIONS[int(experiment)]
    return replace(first, steps=steps, seed=int(seed),
                   w_attr=first.w_attr if switches["use_3d_prior"] else 0.0, max_seconds=max_seconds)


def _finished_dir(profile: str, experiment: int, seed: int) -> Path | None:
    """The folder holding the run's ``result.json``: ``pretrain_state/``'s copy, else the work folder; None while it
    has not finished."""
    for d in (state_dir(profile), work_dir(profile, "ablations")):
        if (d / run_name(experiment, seed) / "result.json").is_file():
            return d / run_name(experiment, seed)
    return None


def _finished(profile: str, experiment: int, seed: int) -> dict[str, Any] | None:
    d = _finished_dir(profile, experiment, seed)
    return None if d is None else json.loads((d / "result.json").read_text())


def pretrain_ablation(profile: str, experiment: int, seed: int, progress: bool = True,
                      max_seconds: float | None = None) -> dict[str, Any] | None:
    """Train (or resume) and measure one Table 4 run; its result, or None when ``max_seconds`` ran out first (the
    run then has a checkpoint to go on from)."""
    from .experiment import TrainedDRDPGAN
    from .pretrain_drdpgan import (DRDPGAN_RECIPES, _code_stage, _faces, _mapper_stage, _sample, build_model,
                                   quick_metrics)
    from .protocol import ABLATIONS, ablation_metrics
    from .train_drdpgan import train_drdpgan

    done = _finished(profile, experiment, seed)
    if done is not None:
        return done
    rec = _recipe(profile)
    switches = ABLATIONS[int(experiment)]
    root = work_dir(profile, "ablations")
    out = root / run_name(experiment, seed)
    t0 = time.time()
    model, records = build_model(profile, progress, init_seed=int(DRDPGAN_RECIPES[profile]["init_seed"]) + int(seed),
                                 **switches)
    train, heldout = _faces(profile, progress)
    out.mkdir(parents=True, exist_ok=True)
    code = _code_stage(model, profile, train, heldout, root / "code", progress)
    mapper = _mapper_stage(model, profile, out, progress)
    tcfg = train_config(profile, experiment, seed,
                        None if max_seconds is None else max(1.0, max_seconds - (time.time() - t0)))
    record_provenance(out, {"network": "ablations", "profile": profile, "run": run_name(experiment, seed),
                            "experiment": int(experiment), "seed": int(seed), "switches": switches,
                            "target_steps": tcfg.steps, "priors": records, "code_stage": code, "mapper_stage": mapper})
    probe = _sample(heldout, 64)  # the held-out faces of metrics.csv, as the full run's
    result = train_drdpgan(model, train, tcfg, out, progress=progress, evaluate=lambda m: quick_metrics(m, probe))
    if result["stopped_early"]:
        return None
    model.cpu().eval()
    measured = ablation_metrics(profile, TrainedDRDPGAN(model, out, result, {}), int(rec["cls_epochs"]),
                                int(rec["max_identities"]))
    res = {"experiment": int(experiment), "seed": int(seed), "train_steps": int(result["step"]),
           **{k: bool(v) for k, v in switches.items()}, **measured,
           "measure": {"cls_epochs": int(rec["cls_epochs"]), "max_identities": int(rec["max_identities"])},
           "train_seconds": _train_seconds(out)}
    atomic_write_json(out / "result.json", res)
    keep = state_dir(profile) / run_name(experiment, seed)
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "provenance.jsonl", "metrics.csv"):  # metrics.csv: when the budget reached eval_every
        if (out / name).is_file():
            shutil.copy(out / name, keep / name)
    return res


def _train_seconds(out: Path) -> float:
    """Training time over every segment of a run (``losses.csv``: seconds per step times the logging interval)."""
    import csv

    with open(out / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    gaps = [b - a for a, b in zip([0, *steps], steps)]
    return float(sum(float(r["sec_per_step"]) * g for r, g in zip(rows, gaps) if r.get("sec_per_step")))


def pretrain_ablations(profile: str, progress: bool = True, max_seconds: float | None = None) -> dict[str, Any]:
    """Every run of the profile's Table 4 recipe in turn (finished ones skipped), until all are done or
    ``max_seconds`` runs out; ``{"done", "total", "stopped_early", "results"}``."""
    rec = _recipe(profile)
    t0 = time.time()
    results, stopped = [], False
    for n in rec["experiments"]:
        for s in rec["seeds"]:
            left = None if max_seconds is None else max_seconds - (time.time() - t0)
            if left is not None and left <= 0 and _finished(profile, n, s) is None:
                stopped = True
                break
            res = pretrain_ablation(profile, n, s, progress, left)
            if res is None:
                stopped = True
                break
            results.append(res)
        if stopped:
            break
    total = len(rec["experiments"]) * len(rec["seeds"])
    return {"done": len(results), "total": total, "stopped_early": stopped or len(results) < total,
            "results": results}


def collect_results(profile: str) -> list[dict[str, Any]]:
    """The finished runs' results (``pretrain_state/<profile>/ablations/*/result.json``, else the work folders'), in
    the recipe's order; each with ``run`` (its folder name) and ``commit`` (the code of its last provenance line)."""
    rec = _recipe(profile)
    out = []
    for n in rec["experiments"]:
        for s in rec["seeds"]:
            d = _finished_dir(profile, n, s)
            if d is not None:
                prov = (d / "provenance.jsonl").read_text().splitlines()
                last = json.loads(prov[-1]) if prov else {}
                out.append({**json.loads((d / "result.json").read_text()), "run": run_name(n, s),
                            "commit": last.get("commit"), "dirty": last.get("dirty")})
    return out


def finished_results(profile: str) -> list[dict[str, Any]]:
    """:func:`collect_results` when every run of the profile's recipe has finished (notebook 13's
    ``ablation_runs="pretrained"``); else a ``FileNotFoundError`` naming the missing runs and the command."""
    rec = _recipe(profile)
    got = collect_results(profile)
    missing = sorted({run_name(n, s) for n in rec["experiments"] for s in rec["seeds"]} - {r["run"] for r in got})
    if missing:
        raise FileNotFoundError(
            f"Table 4 of profile {profile!r}: {len(missing)} of {len(rec['experiments']) * len(rec['seeds'])} runs "
            f"have no result in {state_dir(profile)} ({', '.join(missing)}): run python -m drdpgan.pretrain "
            f"ablations --profile {profile} (make ablations PROFILE={profile}; hours, resumable)")
    return got
