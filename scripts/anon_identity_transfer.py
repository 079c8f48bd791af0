"""Is the anonymizer's identity change robust, or tuned to the training encoder? (a measurement script)

    .venv/bin/python scripts/anon_identity_transfer.py CHECKPOINT [PROFILE=cpu] [N=128]

Anonymizes ``N`` held-out faces (as :func:`drdpgan.pretrain_drdpgan.measure_drdpgan`: sealed, saved as 8-bit) and
prints the cosine between each anonymized face and its original in the frozen training identity encoder (the one
Eq. 11 trains against) and in the pretrained evaluator (the judge), on the images as they are and after mild
changes a person would not notice: bilinear resize to 0.75 and back, a 3 x 3 Gaussian blur (sigma 0.8; both
:func:`drdpgan.losses.identity_view`), JPEG 90 (PIL, :func:`drdpgan.protocol.as_jpeg`), a horizontal flip of both
images. An anonymization that changes the person moves every column alike; one tuned to
the training encoder's weak spots shows a low training-encoder cosine that rises under the changes, while the
evaluator's stays high.
"""
import json
import os
import sys

import numpy as np
import torch

from drdpgan.evaluate import identity_cosines
from drdpgan.pretrain import pretrained_network
from drdpgan.pretrain_drdpgan import _anonymize_sealed, _sample, checkpoint_model
from drdpgan import stages
from drdpgan.losses import identity_view
from drdpgan.protocol import as_jpeg
from drdpgan.repro import make_generator

torch.set_num_threads(1)
ckpt = sys.argv[1]
profile = sys.argv[2] if len(sys.argv) > 2 else "cpu"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 128
model, _ = checkpoint_model(ckpt, profile, json.loads(os.environ.get("FAKE_CFG", "{}")))  # as measure_checkpoint.py
x = _sample(stages.face_data(stages.notebook_params("01_data", profile), False)["heldout"], n).float()
gen, rng = make_generator(0), np.random.default_rng(0)
with torch.no_grad():
    anon = torch.cat([_anonymize_sealed(model, x[s:s + 32], gen, rng)[0] for s in range(0, n, 32)]).float()

changes = {"as is": lambda t: t, "resize 0.75": lambda t: identity_view(t, "resize"),
           "blur": lambda t: identity_view(t, "blur"), "jpeg 90": lambda t: as_jpeg(t, 90), "flip": lambda t: t.flip(-1)}
evaluator, _ = pretrained_network(profile, "evaluator")
rows = {}
for name, f in changes.items():
    xa, xo = f(anon), f(x)
    rows[name] = {"training_encoder": float(np.mean(identity_cosines(model.identity_encoder, xo, xa))),
                  "evaluator": float(np.mean(identity_cosines(evaluator, xo, xa)))}
print(json.dumps({"checkpoint": ckpt, "n": n, "anonymized_vs_original": rows}, indent=1))
