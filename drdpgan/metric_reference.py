"""Trained numbers of the smoke run, compared with tolerances instead of exact notebook outputs.

A trained number depends on the CPU's kernels (AVX2, AVX-512, AMX; oneDNN paths), the thread count
and library builds, so nbval checks only portable cell outputs. The numbers themselves are
regression-tested here: ``tests/smoke_metrics_reference.json`` holds the **observations** (what smoke
runs measured, each with the machine setting it ran under) and, rebuilt from them, for each key of
the smoke run's ``metrics.json`` a reference value, an absolute tolerance, the spread over the
observations and a one-line reason; keys that cannot be compared (timings, values pinned at chance at
the smoke budget, values too variable to tell a trained network from an untrained one) are listed
with the reason they are excluded. No tolerance is written by hand: ``rebuild`` derives all of them.

    python -m drdpgan.metric_reference run OUT_DIR                          # one smoke run, fresh cache (+ setting.json)
    python -m drdpgan.metric_reference spread RUN_DIR [RUN_DIR ...]         # per-key spread table
    python -m drdpgan.metric_reference add [--fresh] RUN_DIR [RUN_DIR ...]  # complete observations, then rebuild
    python -m drdpgan.metric_reference observe NAME "SETTING" KEY=VALUE ... # a partial one (e.g. a CI log), rebuild
    python -m drdpgan.metric_reference rebuild                              # tolerances from the stored observations

The setting of a run (CPU model and flags, thread count, kernel caps) is whatever the environment of
``run`` says (``OMP_NUM_THREADS``, ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``); ``run`` writes it
to ``OUT_DIR/setting.json`` (:func:`drdpgan.repro.cpu_setting`) and ``add`` stores it with the numbers.
A failing key in ``tests/test_notebook_metrics.py`` names the setting it ran under, so the values a
new kind of machine printed can be stored with ``observe``.

``run`` executes the smoke notebooks through the pipeline runner into ``OUT_DIR/reports`` with a
fresh artifact cache in ``OUT_DIR/artifacts``, so every number is trained under the current
settings. The test ``tests/test_notebook_metrics.py`` calls the same function.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .repro import project_root, temporary_environ

REFERENCE_FILE = project_root() / "tests" / "smoke_metrics_reference.json"


#: How many times the measured spread (max - min over the settings) a tolerance is, on either side
#: of the midpoint ("a few times that spread, no more"). For 4 settings the range is about 2 standard
#: deviations, so +-2 ranges is about +-4 sigma. 3 was tried first: it left every DR-DPGAN key wide
#: enough to pass a DR-DPGAN that never trained (measured, see UNTRAINED_FILE).
SPREAD_FACTOR = 2.0

#: The least tolerance of a continuous key, relative to its value: twice the largest relative move
#: measured on a machine outside the reference's settings of a key that had not moved across them
#: (``identity.roc_auc``: 0.6193111 on four AVX-512 EPYC settings, 0.619344 on an AMX Xeon's CI, 5.3e-5
#: relative). 1e-6 before, which that Xeon's CI failed.
CONTINUOUS_FLOOR = 1.1e-4

#: Smoke runs with one network's training switched off: the value of each key for a model that did
#: not train. :func:`rebuild` refuses (excludes, with the numbers) a key whose tolerance reaches any of them.
UNTRAINED_FILE = project_root() / "tests" / "smoke_metrics_untrained.json"

_SATURATED = ("the smoke evaluator maps every smoke image to nearly one embedding (cosine >= 0.9998 for any "
              "pair): cannot tell trained from untrained")

_SMOKE_REALISM = ('smoke: 128 samples of a 32 px generator after 40 steps; with 512-d evaluator features a Frechet distance over 128 images is dominated by its sampling floor, and MTCNN on 32 px faces by the upscale; the realism keys are measured on the shipped cpu/lfw generators')

#: Keys of the smoke run that are not compared, with the reason.
EXCLUDED_KEYS: dict[str, str] = {
    "data.render_images_per_s": "a speed of this machine, not a result",
    "stylegan2.ms_per_image_64": "a speed of this machine, not a result",
    "train.sec_per_step": "a speed of this machine, not a result",
    "stylegan2.fd_ratio": _SMOKE_REALISM,
    "stylegan2.fd_generated": _SMOKE_REALISM,
    "stylegan2.fd_real": _SMOKE_REALISM,
    "stylegan2.fd_n": "a configuration (the smoke realism sample count)",
    "stylegan2.face_detect_rate": _SMOKE_REALISM,
    "data.face_detect_rate": _SMOKE_REALISM,
    "cls.acc_original": "pinned at chance (1/40) by the smoke budget: cannot tell trained from untrained",
    "cls.acc_anonymized": "pinned at chance (1/40) by the smoke budget: cannot tell trained from untrained",
    "cls.acc_recovered": "pinned at chance (1/40) by the smoke budget: cannot tell trained from untrained",
    "ablation.<n>.cls_acc_recovered": "pinned at chance (1/20) by the smoke ablation budget",
    "ablation.full_model_best_cls_acc": "a tie of chance-level accuracies at the smoke budget",
    "ablation.full_model_best_rec_cos": "an argmax over rec_cos values closer together than their spread",
    # The smoke FaceNet evaluator (2 epochs on 480 faces) gives cosine 0.9998-0.9999 for any two
    # smoke images, so evaluator cosines cannot tell a trained DR-DPGAN from an untrained one.
    "anon.cos": _SATURATED,
    "rec.cos": _SATURATED,
    "anon.diversity_cos": _SATURATED,
    "ablation.<n>.rec_cos": _SATURATED,
    "ablation.<n>.anon_cos": _SATURATED,
    # 10 steps per experiment: the seven rec_psnr values moved by 0.6-2.2 dB across the four settings,
    # and an untrained DR-DPGAN gives 10.0-10.5 dB, inside six of the seven tolerances; the one whose
    # four values happened to lie within 0.6 dB is not evidence that it is stable.
    "ablation.<n>.rec_psnr": "10 GAN steps per experiment: moves by 0.6-2.2 dB across settings, and an untrained "
    "DR-DPGAN (10.0-10.5 dB) lies inside the tolerance of most experiments",
}
# Every other key is compared unless its tolerance reaches a chance value (CHANCE) or the value of
# an untrained network (UNTRAINED_FILE): rebuild then excludes it with the numbers.

#: Keys fixed by the configuration: compared exactly.
CONFIG_KEYS = {"data.n_identities", "data.n_train_images", "train.steps", "ablation.n_seeds", "cls.chance"}

#: Fractions over a finite set at the smoke defaults: the smallest change (one item) is the floor
#: of their tolerance, and the reason names the set.
FRACTION_RESOLUTION: dict[str, tuple[float, str]] = {
    "data.eigenface_verif_acc": (1 / 1000, "500 same + 500 different pairs"),
    "identity.verif_acc": (1 / 600, "300 same + 300 different pairs"),
    "evaluator.verif_acc": (1 / 600, "300 same + 300 different pairs"),
    "identity.diff_in_band_fraction": (1 / 300, "300 different pairs"),
    "identity.same_above_0.6_fraction": (1 / 300, "300 same pairs"),
    "fig.in_band_fraction": (1 / 1000, "1,000 unseen identities"),
    "prior3d.flip_yaw_sign_rate": (1 / 320, "320 held-out faces"),
}

#: Chance values, known without a run: verification and bit accuracy 0.5, BER 0.5, R^2 0 (the mean).
CHANCE: dict[str, float] = {
    "identity.verif_acc": 0.5, "evaluator.verif_acc": 0.5, "data.eigenface_verif_acc": 0.5,
    "hiding.ber": 0.5, "password.ber": 0.5, "train.bit_acc": 0.5, "short.bit_acc": 0.5,
    "prior3d.r2_expression": 0.0, "prior3d.r2_pose": 0.0,
}


def untrained_values(key: str, untrained_runs: Mapping[str, Mapping]) -> dict[str, float]:
    """``{source: value}``: chance and the untrained-network runs (the parsed :data:`UNTRAINED_FILE`)
    that apply to ``key``."""
    out = {"chance": CHANCE[key]} if key in CHANCE else {}
    for name, run in untrained_runs.items():
        if any(key.startswith(p) for p in run["applies_to"]) and key in run["metrics"]:
            out[name] = float(run["metrics"][key])
    return out


@dataclass(frozen=True)
class Tolerance:
    value: float
    abs_tol: float
    spread: float  # max - min over the observations the reference was rebuilt from
    why: str
    untrained: Mapping[str, float] | None = None  # values of untrained networks: the tolerance must not reach them


def _read(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the metric reference ({e})") from e


def load_reference(path: Path = REFERENCE_FILE) -> tuple[dict[str, Tolerance], dict[str, str]]:
    """``(compared keys, excluded keys with their reasons)`` of the reference file."""
    data = _read(path)
    compared = {}
    for key, spec in data["compared"].items():
        missing = {"value", "abs_tol", "spread", "why"} - set(spec)
        if missing:
            raise ValueError(f"{path}: key {key!r} lacks {sorted(missing)}")
        compared[key] = Tolerance(float(spec["value"]), float(spec["abs_tol"]), float(spec["spread"]),
                                  str(spec["why"]), spec.get("untrained"))
    return compared, dict(data["excluded"])


def load_observations(path: Path = REFERENCE_FILE) -> list[dict]:
    """The observations stored in the reference file (see :func:`rebuild`)."""
    return list(_read(path).get("observations", []))


def run_smoke(out_dir: Path, progress: bool = False) -> dict[str, float]:
    """Run the smoke notebooks with a fresh artifact cache under ``out_dir``; return the merged metrics.

    The torch thread count and kernel ISA are whatever the environment says (``OMP_NUM_THREADS``,
    ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``); ``out_dir/setting.json`` records them."""
    from .pipeline import run_pipeline
    from .repro import atomic_write_json, cpu_setting

    out_dir = Path(out_dir)
    with temporary_environ(DRDPGAN_ARTIFACTS=str(out_dir / "artifacts")):
        run_pipeline("smoke", out_root=out_dir / "reports", html=False, progress=progress)
    atomic_write_json(out_dir / "setting.json", cpu_setting())
    return json.loads(_run_metrics(out_dir).read_text())


def compare(metrics: Mapping[str, float], compared: Mapping[str, Tolerance]) -> list[str]:
    """One message per compared key that is missing or outside its tolerance (empty: all hold)."""
    problems = []
    for key, tol in compared.items():
        if key not in metrics:
            problems.append(f"{key}: not recorded by the smoke run")
            continue
        got = float(metrics[key])
        if not math.isfinite(got) or abs(got - tol.value) > tol.abs_tol:
            problems.append(f"{key}: {got:.6g}, reference {tol.value:.6g} +- {tol.abs_tol:.3g} ({tol.why})")
    return problems


def _run_metrics(run_dir: Path) -> Path:
    """Where :func:`run_smoke` left the merged metrics of the run in ``run_dir``."""
    return Path(run_dir) / "reports" / "smoke" / "metrics.json"


def spread_table(run_dirs: list[Path]) -> list[dict]:
    """Per key: the values of each run, their mean and max - min."""
    runs = {Path(d).name: json.loads(_run_metrics(d).read_text()) for d in run_dirs}
    keys = sorted(set().union(*[set(m) for m in runs.values()]))
    rows = []
    for k in keys:
        vals = {n: m.get(k) for n, m in runs.items()}
        present = [v for v in vals.values() if v is not None]
        rows.append({"key": k, **vals, "mean": sum(present) / len(present),
                     "spread": max(present) - min(present) if len(present) == len(runs) else float("nan")})
    return rows


def observation_of_run(run_dir: Path, name: str | None = None) -> dict:
    """A complete observation from one :func:`run_smoke` folder: every key it recorded, with its setting."""
    run_dir = Path(run_dir)
    metrics_file = _run_metrics(run_dir)
    setting_file = run_dir / "setting.json"
    for f in (metrics_file, setting_file):
        if not f.is_file():
            raise ValueError(f"{f}: missing; make the run with `python -m drdpgan.metric_reference run {run_dir}`")
    metrics = json.loads(metrics_file.read_text())
    return {"name": name or run_dir.name, "complete": True, "setting": json.loads(setting_file.read_text()),
            "values": {k: [float(v), float(v)] for k, v in sorted(metrics.items())}}


def _ranges(observations: list[dict]) -> tuple[dict[str, tuple[float, float]], set[str]]:
    """``({key: (low, high)} over every observation, keys recorded without a kept value)``; checks that the
    complete observations agree on their keys and that a partial one names only keys they know."""
    complete = [o for o in observations if o.get("complete")]
    if not complete:
        raise ValueError("the reference needs at least one complete observation (a whole smoke run)")
    keys = set(complete[0]["values"])
    for o in complete[1:]:
        if set(o["values"]) != keys:
            raise ValueError(f"observation {o['name']!r} records other keys than {complete[0]['name']!r}: "
                             f"{sorted(set(o['values']) ^ keys)}")
    ranges: dict[str, tuple[float, float]] = {}
    unkept: set[str] = set()
    for o in observations:
        unknown = set(o["values"]) - keys
        if unknown:
            raise ValueError(f"observation {o['name']!r} names keys no smoke run records: {sorted(unknown)}")
        for key, lo_hi in o["values"].items():
            if lo_hi is None:
                unkept.add(key)
                continue
            lo, hi = float(lo_hi[0]), float(lo_hi[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"observation {o['name']!r}, key {key!r}: not a range {lo_hi}")
            old = ranges.get(key, (lo, hi))
            ranges[key] = (min(old[0], lo), max(old[1], hi))
    return ranges, (keys - set(ranges)) | unkept


def tolerance_floor(key: str, value: float) -> float:
    """The least tolerance of ``key`` at ``value``: exact (1e-9) for configuration counts, one item for
    fractions over a finite set, :data:`CONTINUOUS_FLOOR` of the value for continuous keys."""
    if key in CONFIG_KEYS:
        return 1e-9
    if key in FRACTION_RESOLUTION:
        return FRACTION_RESOLUTION[key][0]
    return max(CONTINUOUS_FLOOR * abs(value), 1e-12)


def rebuild(observations: list[dict], untrained_runs: Mapping[str, Mapping]) -> tuple[dict, dict]:
    """``(compared, excluded)`` from the observations: the reference file's tolerances, derived.

    An observation is ``{"name", "setting", "complete", "values": {key: [low, high] or null}}``: a whole
    smoke run (complete; ``null`` where a key was recorded but its value not kept) or a few keys a
    machine printed (partial, such as a failing CI log). Per key, over every observation: value the
    midpoint of the range; abs_tol :data:`SPREAD_FACTOR` times the range, floored at one item for fractions
    over a finite set and at :data:`CONTINUOUS_FLOOR` of the value for continuous keys, exact for
    configuration counts (:func:`tolerance_floor`). A key whose tolerance would reach its chance value or the value of an
    untrained network (:func:`untrained_values`) is excluded, with the numbers."""
    from .results import documented_key

    ranges, unkept = _ranges(observations)
    compared, excluded = {}, {}
    for key in sorted(set(ranges) | unkept):
        doc = documented_key(key)
        if key in EXCLUDED_KEYS or doc in EXCLUDED_KEYS:
            excluded[key] = EXCLUDED_KEYS.get(key) or EXCLUDED_KEYS[doc]
            continue
        if key in unkept:
            raise ValueError(f"{key}: a complete observation recorded it without its value, and no rule excludes it")
        lo, hi = ranges[key]
        mid, spread = (lo + hi) / 2, hi - lo
        floor = tolerance_floor(key, mid)
        tol = max(SPREAD_FACTOR * spread, floor)
        if key in CONFIG_KEYS:
            tol, why = floor, "fixed by the smoke configuration"
        elif key in FRACTION_RESOLUTION:
            why = f"fraction over {FRACTION_RESOLUTION[key][1]}: {SPREAD_FACTOR:g} x measured spread, at least one item"
        else:
            why = (f"{SPREAD_FACTOR:g} x measured spread" if tol > floor
                   else f"moved less than the floor across the observations: {CONTINUOUS_FLOOR:g} of the value")
        untrained = untrained_values(key, untrained_runs) if key not in CONFIG_KEYS else {}
        reached = {k: v for k, v in untrained.items() if abs(mid - v) <= tol}
        if reached:
            excluded[key] = (f"too variable at the smoke budget to tell trained from untrained: measured "
                             f"{lo:.4g} to {hi:.4g} across the observations, tolerance {mid:.4g} +- {tol:.3g}, "
                             "which contains " + ", ".join(f"{v:.4g} ({k})" for k, v in reached.items()))
            continue
        spec = {"value": mid, "abs_tol": tol, "spread": spread, "why": why}
        if untrained:
            spec["untrained"] = untrained
        compared[key] = spec
    return compared, excluded


def write_reference(observations: list[dict], path: Path = REFERENCE_FILE,
                    untrained_file: Path = UNTRAINED_FILE) -> dict:
    """Rebuild the tolerances from ``observations`` (:func:`rebuild`) and write the reference file."""
    from .repro import atomic_write_json

    compared, excluded = rebuild(observations, json.loads(Path(untrained_file).read_text()))
    data = {
        "about": "Trained numbers of the smoke run (make reproduce PROFILE=smoke, notebook defaults): the observations "
        "of smoke runs on several machine settings, and the tolerances `python -m drdpgan.metric_reference rebuild` "
        "derives from them (never edited by hand).",
        "spread_factor": SPREAD_FACTOR,
        "continuous_floor": CONTINUOUS_FLOOR,
        "observations": observations,
        "compared": compared,
        "excluded": excluded,
    }
    atomic_write_json(Path(path), data)
    return data


def parse_values(items: list[str]) -> dict[str, list[float]]:
    """``KEY=VALUE`` arguments as a partial observation's values."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not sep or not key or not math.isfinite(v):
            raise ValueError(f"{item!r}: expected KEY=VALUE with a finite number")
        out[key] = [v, v]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan.metric_reference")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one smoke run with a fresh artifact cache")
    r.add_argument("out_dir", type=Path)
    s = sub.add_parser("spread", help="per-key spread over several runs")
    s.add_argument("run_dirs", nargs="+", type=Path)
    a = sub.add_parser("add", help="store smoke runs as complete observations, then rebuild the tolerances")
    a.add_argument("run_dirs", nargs="+", type=Path)
    a.add_argument("--fresh", action="store_true", help="drop every stored observation first (after a deliberate "
                   "change of results, the old ones no longer describe the code)")
    o = sub.add_parser("observe", help="store values a machine printed (a partial observation), then rebuild")
    o.add_argument("name")
    o.add_argument("setting", help="the machine and settings the values came from")
    o.add_argument("values", nargs="+", metavar="KEY=VALUE")
    sub.add_parser("rebuild", help="rewrite the tolerances from the stored observations")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        t0 = time.perf_counter()
        m = run_smoke(args.out_dir, progress=True)
        print(f"{len(m)} metrics in {time.perf_counter() - t0:.0f} s -> {args.out_dir}/reports/smoke/metrics.json")
        return 0
    if args.cmd == "spread":
        import pandas as pd

        pd.set_option("display.width", 250)
        print(pd.DataFrame(spread_table(args.run_dirs)).to_string(index=False, float_format=lambda v: f"{v:.6g}"))
        return 0
    observations = [] if getattr(args, "fresh", False) else load_observations(REFERENCE_FILE)
    names = {o["name"] for o in observations}
    try:
        if args.cmd == "add":
            new = [observation_of_run(d) for d in args.run_dirs]
        elif args.cmd == "observe":
            new = [{"name": args.name, "complete": False, "setting": args.setting,
                    "values": parse_values(args.values)}]
        else:
            new = []
        clash = sorted(names & {o["name"] for o in new})
        if clash:
            raise ValueError(f"observations named {clash} are stored already")
        data = write_reference(observations + new, REFERENCE_FILE)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{REFERENCE_FILE}: {len(data['observations'])} observations, {len(data['compared'])} compared, "
          f"{len(data['excluded'])} excluded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
