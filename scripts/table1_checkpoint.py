"""Table 1 on a DR-DPGAN pretraining checkpoint before it ships (a measurement script, cpu profile):

    .venv/bin/python scripts/table1_checkpoint.py CHECKPOINT [THREADS=1] [EPOCHS=5]

The cpu profile's held-out identities split as notebook 10 splits them (``protocol.protocol_split``, test fraction
0.4); the protected faces anonymized (sealed with the evaluation key, saved as 8-bit), their payloads read and
opened, recovered; then notebook 12's cpu classifiers (80 px, repeats 2/4/2, batch 64, lr 1e-3, seed 31, started
from the shipped evaluator's backbone, ``cls_init="evaluator"``) trained on the original, anonymized and recovered
faces with the originals' labels, each tested on the real test faces. Prints each accuracy, chance, and the ratios
issue 15 sets targets on. The checkpoint's phase sets the fake identity band; ``FAKE_CFG`` as in
``scripts/measure_checkpoint.py``.
"""
import json
import os
import sys
import time

import numpy as np
import torch

from drdpgan import protocol, shipped
from drdpgan.pretrain_drdpgan import EVAL_KEY, _anonymize_sealed, _faces, _open_all, _read, checkpoint_model
from drdpgan.repro import make_generator
from drdpgan.stages import images_of

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
model, _ = checkpoint_model(sys.argv[1], "cpu", json.loads(os.environ.get("FAKE_CFG", "{}")))
_, held = _faces("cpu", False)
sp = protocol.protocol_split(held.labels, 0.4, 0, 0)
orig, test = images_of(held, sp["protected"]).float(), images_of(held, sp["test"])
n = len(sp["identities"])
gen, rng = make_generator(0), np.random.default_rng(0)
anon, recd, n_open = [], [], 0
with torch.no_grad():
    for s in range(0, len(orig), 32):
        x = orig[s:s + 32]
        x_anon, _, true_code, _ = _anonymize_sealed(model, x, gen, rng)
        bits = _read(model, x_anon)
        opened, _ = _open_all(model, bits, EVAL_KEY, model.cfg.payload_layout())
        ok = [o is not None for o in opened]
        n_open += sum(ok)
        # a payload that does not open gets no recovery: its row stays the anonymized face (the CLI writes nothing)
        code = torch.stack([o if o is not None else torch.zeros_like(true_code[0]) for o in opened])
        r = model.recover(x_anon, password=bits, code=code)["images"]
        recd.append(torch.where(torch.tensor(ok)[:, None, None, None], r, x_anon))
        anon.append(x_anon)
anon, recd = torch.cat(anon), torch.cat(recd)
print(f"{n} classes, {len(orig)} protected faces ({n_open} payloads opened), {len(test)} test faces", flush=True)
evaluator, _ = shipped.load("cpu", "evaluator")
p12 = {"cls_input_size": 80, "cls_repeats": [2, 4, 2], "cls_epochs": epochs, "cls_batch_size": 64, "cls_lr": 1e-3,
       "cls_init": "evaluator"}
ccfg, tcfg = protocol.classifier_configs(p12)
init = protocol.classifier_init(p12, evaluator)
acc = {}
for name, imgs in (("original", orig), ("anonymized", anon), ("recovered", recd)):
    t = time.time()
    r = protocol.table1_classifier_protocol(imgs, torch.as_tensor(sp["protected_labels"]),
                                            (test, torch.as_tensor(sp["test_labels"])), n, cfg=ccfg, tcfg=tcfg,
                                            seed=31, init_state=init)
    acc[name] = r["acc"]
    print(f"cls.acc_{name} {r['acc']:.4f} ({time.time() - t:.0f} s)", flush=True)
print(json.dumps({"checkpoint": sys.argv[1], "cls.chance": 1 / n, **{f"cls.acc_{k}": v for k, v in acc.items()},
                  "recovered_over_original": acc["recovered"] / acc["original"],
                  "anonymized_over_chance": acc["anonymized"] * n}, indent=1))
