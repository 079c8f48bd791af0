"""Table 1's reference classifier (trained on the protected originals, tested on the real test images) from scratch
or from the shipped evaluator's backbone (a measurement script):

    .venv/bin/python scripts/table1_init.py scratch|evaluator [THREADS=1] [EPOCHS=5]

The cpu profile's held-out synthetic identities split as notebook 10 splits them (test fraction 0.4, all
identities), notebook 12's cpu classifier settings (80 px, repeats 2/4/2, batch 64, lr 1e-3, seed 31). Prints the
protocol's result. ``profiles.yaml``'s ``cls_init`` comment quotes it.
"""
import sys
import time

import torch

from drdpgan import protocol, shipped
from drdpgan.models.facenet import FaceNetConfig
from drdpgan.pretrain_drdpgan import _faces
from drdpgan.stages import images_of
from drdpgan.train_priors import FaceNetTrainConfig

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
_, held = _faces("cpu", False)
sp = protocol.protocol_split(held.labels, 0.4, 0, 0)
orig, test = images_of(held, sp["protected"]), images_of(held, sp["test"])
n = len(sp["identities"])
print("classes", n, "train", len(orig), "test", len(test), flush=True)
evaluator, _ = shipped.load("cpu", "evaluator")
cfg = FaceNetConfig(input_size=80, repeats=(2, 4, 2))
tcfg = FaceNetTrainConfig(epochs=int(sys.argv[3]) if len(sys.argv) > 3 else 5, batch_size=64, lr=1e-3)
init = protocol.classifier_init({"cls_input_size": 80, "cls_repeats": [2, 4, 2], "cls_epochs": tcfg.epochs,
                                 "cls_batch_size": 64, "cls_lr": 1e-3, "cls_init": sys.argv[1]}, evaluator)
t = time.time()
r = protocol.table1_classifier_protocol(orig, torch.as_tensor(sp["protected_labels"]),
                                        (test, torch.as_tensor(sp["test_labels"])), n, cfg=cfg, tcfg=tcfg, seed=31,
                                        init_state=init)
print(sys.argv[1], r, f"{time.time() - t:.0f}s", flush=True)
