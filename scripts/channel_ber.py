"""E_P's raw bit error rate through each sharing distortion, real and as training sees it (a measurement script)

    .venv/bin/python scripts/channel_ber.py CHECKPOINT [N=64]

Anonymizes ``N`` held-out cpu faces with the checkpoint's model (sealed with the public evaluation key, saved as
8-bit PNG, as :func:`drdpgan.pretrain_drdpgan.measure_drdpgan` does) and prints the fraction of hidden bits E_P reads
wrong after PNG alone, and after JPEG at several qualities both through PIL (what a shared photo meets,
:func:`drdpgan.protocol.as_jpeg`) and through kornia's differentiable stand-in that training reads through
(:func:`drdpgan.channel.jpeg`), with the mean absolute difference between the two decoded images. The BCH code of
the payload corrects 8 errors in the 256 hidden bits (3.1 %), so a raw BER near or above that loses payloads.
``CHECKPOINT``: a run checkpoint (``ckpt_*.pt``) or a diagnostic's ``model.pt``.
"""
import sys

import torch

from drdpgan.channel import jpeg as differentiable_jpeg
from drdpgan.models.extractor import PasswordExtractor
from drdpgan.pretrain_drdpgan import _anonymize_sealed, _faces, _sample_indices, build_model
from drdpgan.protocol import as_jpeg
from drdpgan.repro import make_generator
from drdpgan.stages import images_of

torch.set_num_threads(1)
ckpt = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
model, _ = build_model("cpu", progress=False)
model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
model.eval()
_, held = _faces("cpu", False)
x = images_of(held, _sample_indices(held, n)).float()
with torch.no_grad():
    anon, carrier, _, _ = _anonymize_sealed(model, x, make_generator(3))
    anon, carrier = anon.float(), carrier.round()

    def ber(images: torch.Tensor) -> float:
        return float((PasswordExtractor.bits(model.extractor(images)) != carrier).float().mean())

    print(f"{ckpt}: {n} held-out faces")
    print(f"PNG only: BER {ber(anon):.4f}")
    print("quality  BER(PIL)  BER(kornia)  |PIL - kornia|  |PIL - PNG|")
    for q in (95, 90, 80, 75, 60):
        real, stand_in = as_jpeg(anon, q), differentiable_jpeg(anon, q)
        print(f"{q:7d}  {ber(real):8.4f}  {ber(stand_in):11.4f}  {float((real - stand_in).abs().mean()):13.4f}"
              f"  {float((real - anon).abs().mean()):11.4f}")
