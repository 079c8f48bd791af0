"""Measured numbers: one call per number in a notebook, one flat ``metrics.json`` per profile.

A notebook does::

    rec = Recorder("02_identity_encoder", PROFILE)
    rec.record("identity.verif_acc", acc)

and the number lands in ``<run dir>/metrics/02_identity_encoder.json`` (written atomically at
every call, so a notebook that fails half-way keeps what it measured). The pipeline runner
merges those files into ``reports/<profile>/metrics.json``: a flat JSON object with stable
dotted keys.

Every key is documented in :data:`METRIC_KEYS` (the one place where keys are listed); a key
that is not there is refused, so a typo fails loudly instead of creating a new key.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

from .repro import artifacts_dir, atomic_write_json, project_root

#: Documented metric keys. ``<n>`` stands for an integer (ablation experiment 1..7).
METRIC_KEYS: dict[str, str] = {
    # data (01_data)
    "data.render_images_per_s": "synthetic renders per second at 64 px, batched, on this machine",
    "data.eigenface_verif_acc": "eigenface (PCA on pixels, cosine) verification accuracy on unseen identities; "
    "world difficulty, <= 0.75 wanted",
    "data.n_train_images": "images in the profile's training set",
    "data.n_identities": "identities in the profile's training set",
    # priors (02-04)
    "identity.verif_acc": "identity encoder verification accuracy on unseen identities",
    "identity.roc_auc": "identity encoder ROC AUC on unseen identities",
    "identity.diff_in_band_fraction": "fraction of different-identity cosines inside the fake-identity band",
    "identity.same_above_0.6_fraction": "fraction of same-identity cosines in [0.6, 1]",
    "evaluator.verif_acc": "independent FaceNet evaluator verification accuracy on unseen identities",
    "prior3d.r2_expression": "3D prior: mean R^2 of expression coefficients on held-out images",
    "prior3d.r2_pose": "3D prior: mean R^2 of pose coefficients on held-out images",
    "prior3d.flip_yaw_sign_rate": "3D prior on real faces: fraction whose predicted yaw flips sign under a mirror",
    "stylegan2.frechet_id": "Frechet distance on the project's identity-encoder features (NOT Inception FID)",
    "stylegan2.ms_per_image_64": "generator forward time per image at 64 px (ms)",
    "stylegan2.fd_ratio": "Frechet distance (FaceNet evaluator features) of generated vs held-out real faces, divided "
    "by the same distance between training and held-out real faces (drdpgan.realism.fd_ratio); 1 = as real as real",
    "stylegan2.fd_generated": "Frechet distance (evaluator features) of generated vs held-out real faces",
    "stylegan2.fd_real": "Frechet distance (evaluator features) of training vs held-out real faces: the floor",
    "stylegan2.fd_n": "images per set in the Frechet ratio",
    "stylegan2.face_detect_rate": "fraction of generated images in which MTCNN finds a face (prob >= 0.9)",
    "data.face_detect_rate": "fraction of held-out real images in which MTCNN finds a face (prob >= 0.9), "
    "the reference for stylegan2.face_detect_rate",
    # DR-DPGAN components (05-08)
    "fig.in_band_fraction": "fake identity generator: fraction of identities whose fake lands in [s_min, s_max]",
    "fig.diversity_cos": "fake identity generator: mean pairwise cosine of one identity's fakes",
    "hiding.ber": "binary code + extractor notebook: bit error rate",
    "hiding.fmse": "binary code + extractor notebook: float MSE of decoded identity",
    # Tables 1-3 (09-12)
    "anon.cos": "Table 2: identity cosine anonymized vs original (independent evaluator)",
    "rec.cos": "Table 2: identity cosine recovered vs original (independent evaluator)",
    "anon.cos_train_encoder": "Table 2: anonymized vs original, training identity encoder",
    "rec.cos_train_encoder": "Table 2: recovered vs original, training identity encoder",
    "anon.cos_dlib": "Table 2: anonymized vs original, pretrained dlib descriptor (lfw profile)",
    "rec.cos_dlib": "Table 2: recovered vs original, pretrained dlib descriptor (lfw profile)",
    "anon.dlib_match_rate": "fraction of anonymized faces dlib matches to the original (distance < 0.6)",
    "rec.dlib_match_rate": "fraction of recovered faces dlib matches to the original (distance < 0.6)",
    "rec.mae": "Table 2: recovery MAE on images in [0, 1]",
    "rec.psnr": "Table 2: recovery PSNR (dB) on images in [0, 1]",
    "rec.ssim": "recovery SSIM on images in [0, 1]",
    "password.ber": "Table 3: bit error rate of the extracted password",
    "password.fmse": "Table 3: float MSE of the identity decoded from the password",
    "password.decoded_cos": "cosine between F_id and the identity decoded from the extracted password",
    "password.ber_oracle_gap": "rec.psnr with the true password minus rec.psnr with the extracted one (dB)",
    "password.exact_rate": "fraction of identity codes that come back exactly (keyed: opened with the key) after 8-bit PNG",
    "password.exact_rate_jpeg90": "password.exact_rate after a real JPEG at quality 90",
    "password.exact_rate_jpeg75": "password.exact_rate after a real JPEG at quality 75",
    "password.exact_rate_resize075": "password.exact_rate after bilinear resizing to 0.75 and back",
    "password.wrong_key_reject_rate": "fraction of keyed anonymized images a wrong key does not open",
    "password.foreign_reject_rate": "fraction of never-anonymized images whose read bits do not open",
    "rec.psnr_oracle": "recovery PSNR (dB) with the true code and hidden bits (teacher-forced), from the saved image",
    "anon.fd_ratio": "evaluator-feature Frechet distance anonymized vs held-out real faces, over train vs held-out real",
    "anon.face_detect_rate": "fraction of anonymized faces in which MTCNN finds a face (beside data.face_detect_rate)",
    "anon.pose_err_deg": "cpu: mean |3D prior pose of the anonymized face - true pose of the original| (degrees)",
    "prior3d.pose_err_deg": "cpu: mean |3D prior pose of the original - its true pose| (degrees), the floor of anon.pose_err_deg",
    "anon.expression_r2": "cpu: R^2 of the 3D prior's expression on anonymized faces against the originals' truth",
    "prior3d.expression_r2": "cpu: R^2 of the 3D prior's expression on the originals (the floor of anon.expression_r2)",
    "anon.background_psnr": "cpu: PSNR (dB) anonymized vs original outside the renderer's head mask",
    "train.steps": "DR-DPGAN training steps (notebook 09)",
    "train.sec_per_step": "DR-DPGAN seconds per training step on this machine (notebook 09)",
    "train.bit_acc": "E_P bit accuracy on noisy anonymized training images, last log interval (notebook 09)",
    "train.loss_G": "DR-DPGAN generator-side total loss, last log interval (notebook 09)",
    "train.cos_rec_real": "training-encoder cosine of recovered vs original training images, last log interval (notebook 09)",
    "train.cos_decoded_real": "cosine of the identity decoded from the true password vs F_id, last log interval (notebook 09)",
    "short.bit_acc": "notebooks 07-08 short DR-DPGAN run: E_P bit accuracy on the held-out loss batch",
    "short.cos_rec_real": "notebooks 07-08 short run: training-encoder cosine of recovered vs original (loss batch)",
    "short.loss_critic": "notebooks 07-08 short run: the identity critic's loss on the loss batch (Eq. 10)",
    "short.loss_G": "notebooks 07-08 short run: generator-side total loss on the loss batch",
    "anon.diversity_cos": "mean pairwise evaluator cosine of one face anonymized under different noises (Fig. 6)",
    "cls.acc_anonymized": "Table 1: FaceNet classifier trained on anonymized images, tested on real held-out images",
    "cls.acc_recovered": "Table 1: FaceNet classifier trained on recovered images, tested on real held-out images",
    "cls.acc_original": "Table 1 reference: classifier trained on original images",
    "cls.chance": "Table 1: 1 / number of identities",
    # Table 4 / Figure 9 (13)
    "ablation.<n>.rec_cos": "ablation experiment n: recovered cosine (independent evaluator)",
    "ablation.<n>.cls_acc_recovered": "ablation experiment n: classifier accuracy on recovered images",
    "ablation.<n>.anon_cos": "ablation experiment n: anonymized cosine",
    "ablation.<n>.rec_psnr": "ablation experiment n: recovery PSNR",
    "ablation.<n>.rec_cos_std": "ablation experiment n: standard deviation of rec_cos over seeds",
    "ablation.<n>.cls_acc_recovered_std": "ablation experiment n: standard deviation of cls_acc_recovered over seeds",
    "ablation.n_seeds": "seeds per ablation experiment",
    "ablation.full_model_best_rec_cos": "1 if experiment 7 (full model) has the highest mean rec_cos, else 0",
    "ablation.full_model_best_cls_acc": "1 if experiment 7 has the highest mean cls_acc_recovered, else 0",
    # pipeline bookkeeping
    "pipeline.smoke_check": "a number recorded by the runner's own tests",
}

_PATTERNS = [
    (re.compile("^" + re.escape(k).replace(re.escape("<n>"), r"\d+") + "$"), k) for k in METRIC_KEYS
]


def documented_key(key: str) -> str | None:
    """The :data:`METRIC_KEYS` entry that documents ``key`` (None when undocumented)."""
    for pat, name in _PATTERNS:
        if pat.match(key):
            return name
    return None


def run_dir(profile: str) -> Path:
    """Where a notebook writes tables, figures and metrics.

    Under the pipeline runner this is ``reports/<profile>/`` (``DRDPGAN_RUN_DIR``); a notebook
    opened by hand or checked by nbval writes to ``artifacts/<profile>/notebook_runs/`` so the
    committed reports are only ever written by the runner.
    """
    env = os.environ.get("DRDPGAN_RUN_DIR")
    if env:
        return Path(env)
    return artifacts_dir(profile) / "notebook_runs"


class Recorder:
    """Records a notebook's measured numbers into ``<run dir>/metrics/<notebook>.json``."""

    def __init__(self, notebook: str, profile: str):
        self.notebook = notebook
        self.profile = profile
        self.path = run_dir(profile) / "metrics" / f"{notebook}.json"
        self.values: dict[str, float] = {}
        # Start clean: a rerun of the notebook replaces its numbers instead of mixing them.
        atomic_write_json(self.path, {})

    def record(self, key: str, value: Any, digits: int | None = None) -> float:
        """Record ``value`` under the documented ``key``; returns the float stored."""
        if documented_key(key) is None:
            raise KeyError(
                f"metric key {key!r} (notebook {self.notebook}) is not documented in "
                f"drdpgan.results.METRIC_KEYS; add it there with a description"
            )
        try:
            v = float(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metric {key!r} must be a number, got {value!r}") from e
        if not math.isfinite(v):
            raise ValueError(f"metric {key!r} is not finite: {v}")
        if digits is not None:
            v = round(v, digits)
        self.values[key] = v
        atomic_write_json(self.path, self.values)
        return v



def merge_metrics(run_directory: Path) -> dict[str, float]:
    """Merge ``<run dir>/metrics/*.json`` into ``<run dir>/metrics.json`` (later notebooks win)."""
    merged: dict[str, float] = {}
    for f in sorted((run_directory / "metrics").glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{f}: expected a JSON object of metrics")
        merged.update(data)
    atomic_write_json(run_directory / "metrics.json", merged)
    return merged


def save_table(df, name: str, profile: str) -> tuple[Path, Path]:
    """Write a pandas table as ``<name>.csv`` and ``<name>.md`` in the run dir (atomically)."""
    from .repro import atomic_write_text

    out = run_dir(profile)
    csv = atomic_write_text(out / f"{name}.csv", df.to_csv(index=False))
    md = atomic_write_text(out / f"{name}.md", _markdown(df) + "\n")
    return csv, md


def _cell(v) -> str:
    """A markdown cell: floats to 4 significant digits, missing values blank (the CSV keeps all digits)."""
    if isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral):
        return "" if v != v else f"{float(v):.4g}"
    return str(v)


def _markdown(df) -> str:
    """``df`` as a pipe table for reading; numbers at 4 significant digits (the CSV is exact)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def save_figure(fig, name: str, profile: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``figures/<name>.png`` in the run dir (atomically).

    Returns the path relative to the project root (what a notebook cell then displays)."""
    path = run_dir(profile) / "figures" / f"{name}.png"
    from .repro import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    try:
        return path.relative_to(project_root())
    except ValueError:
        return path
