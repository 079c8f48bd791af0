"""How well a face ellipse (``DRDPGANTrainConfig.face_region``) covers the faces of the ``lfw`` profile's crops: dlib's
68 landmarks (the ``eval`` extra) on every 20th aligned training crop, 300 in all (a measurement script):

    .venv/bin/python scripts/face_region_fit.py [CX CY RX RY ...]

For each ellipse (fractions of the side; default: the synthetic world's and the lfw recipe's), the share of the 68
landmarks and of the 17 jaw points inside it (weight 1), the per-face largest landmark radius (1 on the ellipse) and
the share of the image the background terms compare (``1 - face_region_weight``). Faces the crops' alignment puts
against the frame (the ArcFace template, margin 0) have their jaw at the crop's edges: an ellipse that leaves the jaw
out tells the background terms to keep the face's outline, which carries identity.
"""
import sys

import numpy as np
import torch

from drdpgan import stages
from drdpgan.landmark_labels import Landmarks68
from drdpgan.losses import face_region_weight
from drdpgan.stages import images_of

torch.set_num_threads(1)
args = [float(a) for a in sys.argv[1:]]
if len(args) % 4:
    raise SystemExit("give ellipses as groups of four numbers: CX CY RX RY")
defaults = [(0.50, 0.485, 0.39, 0.47), (0.50, 0.55, 0.55, 0.52)]  # the synthetic world's ellipse, the lfw recipe's
regions = [tuple(args[i:i + 4]) for i in range(0, len(args), 4)] or defaults
data = stages.face_data(stages.notebook_params("01_data", "lfw"), False)["train"]
idx = list(range(0, len(data), 20))[:300]
x = images_of(data, idx).float()
size = x.shape[-1]
finder = Landmarks68()
t = (finder(x) + 0.5) / size  # (N, 68, 2), fractions of the side
print(f"{len(idx)} lfw training crops, {finder.n_fallbacks} without a dlib detection (fixed box); jaw bottom at "
      f"{np.median(t[:, 8, 1]):.3f}, brows' top at {np.median(t[:, 17:27, 1].min(1)):.3f} of the side (medians)")
for cx, cy, rx, ry in regions:
    r = np.sqrt(((t[..., 0] - cx) / rx) ** 2 + ((t[..., 1] - cy) / ry) ** 2)
    bg = float((1 - face_region_weight(size, (cx, cy, rx, ry))).mean())
    p50, p90 = np.percentile(r.max(1), [50, 90])
    print(f"({cx}, {cy}, {rx}, {ry}): landmarks inside {(r < 1).mean():.4f}, jaw inside {(r[:, :17] < 1).mean():.4f}, "
          f"largest radius per face p50 {p50:.3f} p90 {p90:.3f}, background share {bg:.3f}")
