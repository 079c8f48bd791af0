"""Notebook 06's stand-in carrier and E_P at a profile's settings, with overrides (a measurement script, not
part of the package API): trains the binary code, then the hiding carrier, and prints the held-out BER every
``eval_every`` steps and the final BER, carrier PSNR and time.

    .venv/bin/python scripts/notebook06_hiding.py cpu '{"info_warmup_steps": 200}'

The JSON overrides notebook 06's parameters (``hide_steps``, ``lambda_l1``, ...) and ``info_warmup_steps``
(:class:`drdpgan.hiding.HidingTrainConfig`). ``THREADS`` sets torch's threads (default 1).
"""
import json
import os
import sys

import torch

from drdpgan import hiding, stages
from drdpgan.models.binary_code import BinaryCodeConfig
from drdpgan.models.extractor import ExtractorConfig
from drdpgan.models.hiding_carrier import HidingCarrierConfig

torch.set_num_threads(int(os.environ.get("THREADS", "1")))
profile = sys.argv[1]
over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
p = {**stages.notebook_params("06_identity_hiding", profile), **over}
data = stages.face_data(profile, False)
encoder, _ = stages.identity_encoder(profile, False)
x_train, x_held = stages.images_of(data["train"]), stages.images_of(data["heldout"])
with torch.no_grad():
    f_train, f_held = (torch.cat([encoder.eval()(x[i:i + 256]) for i in range(0, len(x), 256)])
                       for x in (x_train, x_held))
bcfg = BinaryCodeConfig(identity_dim=f_train.shape[1], code_bits=p["code_bits"], hidden_dim=p["code_hidden"],
                        dropout=p["code_dropout"], decoder_hidden=p["code_hidden"])
mapping, decoder, _ = hiding.train_binary_code(
    f_train, bcfg, hiding.CodeTrainConfig(seed=p["seed"], steps=p["code_steps"], batch_size=p["code_batch_size"],
                                          lr=p["code_lr"], eval_every=p["eval_every"]), progress=False)
bits_train, bits_held = hiding.passwords(mapping, f_train), hiding.passwords(mapping, f_held)
res = x_train.shape[-1]
ccfg = HidingCarrierConfig(resolution=res, code_bits=p["code_bits"], hidden_channels=p["carrier_channels"],
                           strength=p["carrier_strength"])
ecfg = ExtractorConfig(resolution=res, code_bits=p["code_bits"], base_channels=p["extractor_channels"],
                       max_channels=4 * p["extractor_channels"], noise_sigma=p["noise_sigma"])
tcfg = hiding.HidingTrainConfig(seed=p["seed"], steps=p["hide_steps"], batch_size=p["hide_batch_size"],
                                lr=p["hide_lr"], noise_sigma=p["noise_sigma"], lambda_info=p["lambda_info"],
                                lambda_l1=p["lambda_l1"], eval_every=p["eval_every"],
                                info_warmup_steps=p["info_warmup_steps"])
n_eval = int(os.environ.get("N_EVAL", "512"))
held = {"images": x_held[:n_eval], "bits": bits_held[:n_eval], "f_id": f_held[:n_eval], "decoder": decoder}
carrier, extractor, hist = hiding.train_hiding(x_train, bits_train, ccfg, ecfg, tcfg, eval_set=held, progress=False)
for e in hist["eval"]:
    print(f"step {e['step']:5d}  BER {e['ber']:.3f}  cos {e['cos']:.2f}  PSNR {e['psnr']:.1f}")
final = hiding.evaluate_hiding(carrier, extractor, decoder, x_held, bits_held, f_held)
print(json.dumps({"profile": profile, **over, "ber": final["ber"], "fmse": final["fmse"], "cos": final["cos"],
                  "psnr": final["psnr"], "l1": final["l1"], "hide_time_s": round(hist["time_s"], 1)}))
