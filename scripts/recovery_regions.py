"""Where does recovery fail? PSNR to the originals inside and outside the synthetic renderer's head mask, for the
recovered and the anonymized images of a DR-DPGAN training checkpoint (a measurement script, cpu profile):

    .venv/bin/python scripts/recovery_regions.py CHECKPOINT

32 held-out faces (the sample of ``scripts/joint_diagnostics.py``), the anonymized image saved as 8-bit and sealed
with the evaluation key, recovered through E_P's bits.
"""
import sys

import torch

from drdpgan.data.world import FaceWorld
from drdpgan.pretrain_drdpgan import _anonymize_sealed, _faces, _sample_indices, build_model
from drdpgan.repro import make_generator
from drdpgan.stages import images_of

torch.set_num_threads(1)
model, _ = build_model("cpu", progress=False)
model.load_state_dict(torch.load(sys.argv[1], weights_only=False)["model"])
model.eval()
_, held = _faces("cpu", False)
idx = _sample_indices(held, 32)
x = images_of(held, idx).float()
head_mask = FaceWorld(held.world_config).render(torch.as_tensor(held.world_identities[idx]),
                                                torch.as_tensor(held.sample_indices[idx]), held.image_size)["mask"]
with torch.no_grad():
    anon, _, code, _ = _anonymize_sealed(model, x, make_generator(3))
    recovered = model.recover(anon, code=code)["images"].clamp(-1, 1)


def psnr(a, b, weight):
    """Mean per-image PSNR (dB, images in [-1, 1]) over the pixels ``weight`` (N, 1, R, R) selects."""
    weight = weight.expand_as(a)
    mse = ((((a - b) / 2) ** 2) * weight).flatten(1).sum(1) / weight.flatten(1).sum(1)
    return float((10 * torch.log10(1 / mse)).mean())


head = (head_mask > 0.5).float()
for name, images in (("recovered", recovered), ("anonymized", anon)):
    print(f"{name}: head {psnr(images, x, head):.2f} dB, background {psnr(images, x, 1 - head):.2f} dB, "
          f"all {psnr(images, x, torch.ones_like(head)):.2f} dB")
