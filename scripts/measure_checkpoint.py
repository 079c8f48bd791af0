"""Measure a DR-DPGAN pretraining checkpoint against issue 15's cpu targets, before a run ends.

    .venv/bin/python scripts/measure_checkpoint.py CHECKPOINT [PROFILE=cpu] [N=256] [REALISM_N=512]

The checkpoint's phase sets the fake identity band (:func:`drdpgan.pretrain_drdpgan.checkpoint_model`);
``FAKE_CFG='{"bank_pick": "uniform"}'`` sets :class:`~drdpgan.models.fake_identity.FakeIdentityConfig` fields of the
built model on top (for a ``scripts/joint_diagnostics.py`` run that set them).

:func:`drdpgan.pretrain_drdpgan.measure_drdpgan` (held-out faces, sealed with the public evaluation key,
8-bit PNG, E_P, opened, recovered) on the checkpoint's model; prints every key, and the keys with a target
beside it. The shipped file is measured the same way by ``python -m drdpgan.pretrain export``.
"""
import json
import os
import sys

import torch

from drdpgan.pretrain_drdpgan import checkpoint_model, measure_drdpgan

torch.set_num_threads(1)
ckpt = sys.argv[1]
profile = sys.argv[2] if len(sys.argv) > 2 else "cpu"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 256
realism_n = int(sys.argv[4]) if len(sys.argv) > 4 else 512
model, state = checkpoint_model(ckpt, profile, json.loads(os.environ.get("FAKE_CFG", "{}")))
m = measure_drdpgan(model, profile, n=n, realism_n=realism_n)
print(json.dumps({"checkpoint": ckpt, "step": state.get("step"), **m}, indent=1, default=str))
# issue 15, cpu column: (key, "<=" or ">=", target); anon.pose_err_deg against the prior's own error + 2
TARGETS = [("rec.psnr", ">=", 28), ("rec.ssim", ">=", 0.90), ("rec.mae", "<=", 0.03), ("rec.cos", ">=", 0.90),
           ("anon.cos", "<=", 0.10), ("password.ber", "<=", 1e-3), ("password.fmse", "<=", 1e-3),
           ("anon.diversity_cos", "<=", 0.5), ("anon.background_psnr", ">=", 25),
           ("anon.pose_err_deg", "<=", m.get("prior3d.pose_err_deg", float("nan")) + 2)]
if "anon.face_detect_rate" in m:
    TARGETS.append(("anon.face_detect_rate", ">=", 0.95 * m["data.face_detect_rate"]))
for key, op, target in TARGETS:
    v = m.get(key)
    ok = v is not None and (v <= target if op == "<=" else v >= target)
    print(f"{key:24s} {v if v is None else round(v, 4)!s:>10s}  target {op} {target:.4g}  {'met' if ok else 'NOT met'}")
