"""Where does recovery fail? PSNR to the originals inside and outside the synthetic renderer's head mask, for the
recovered and the anonymized images of a DR-DPGAN training checkpoint, and for the recovery path fed the original
image itself instead of the anonymized one (with the same code): that row is the path's own ceiling, what recovery
could reach if anonymization lost nothing (a measurement script, cpu profile):

    .venv/bin/python scripts/recovery_regions.py CHECKPOINT

32 held-out faces (the sample of ``scripts/joint_diagnostics.py``), the anonymized image saved as 8-bit and sealed
with the evaluation key, recovered through E_P's bits. Last, the mean of Eq. 6's mask per injection resolution in the
anonymizing and the recovering pass, inside and outside the renderer's head mask (resized to that resolution).
"""
import sys

import torch
import torch.nn.functional as F

from drdpgan.pretrain_drdpgan import _anonymize_sealed, _faces, _sample_indices, build_model, head_masks, masked_psnr
from drdpgan.repro import make_generator
from drdpgan.stages import images_of

torch.set_num_threads(1)
model, _ = build_model("cpu", progress=False)
model.load_state_dict(torch.load(sys.argv[1], weights_only=False)["model"])
model.eval()
_, held = _faces("cpu", False)
idx = _sample_indices(held, 32)
x = images_of(held, idx).float()
head = (head_masks(held, idx) > 0.5).float()
masks, current_pass = {}, ["anonymize"]


def mask_readout(r):
    def hook(_module, _inputs, out):  # out = (F_in, M), M (B, C, r, r)
        m = out[1].float().mean(1, keepdim=True)
        inside = F.interpolate(head, size=m.shape[-1], mode="area") > 0.5
        masks[(current_pass[0], int(r))] = (float(m[inside].mean()), float(m[~inside].mean()))
    return hook


hooks = [f.register_forward_hook(mask_readout(r)) for r, f in model.fusion.items()]
with torch.no_grad():
    anon, _, code, _ = _anonymize_sealed(model, x, make_generator(3))
    current_pass[0] = "recover"
    recovered = model.recover(anon, code=code)["images"].clamp(-1, 1)
for h in hooks:
    h.remove()
with torch.no_grad():
    from_original = model.recover(x, code=code)["images"].clamp(-1, 1)
for name, images in (("recovered", recovered), ("recovery path fed the original", from_original),
                     ("anonymized", anon)):
    print(f"{name}: head {masked_psnr(images, x, head):.2f} dB, background {masked_psnr(images, x, 1 - head):.2f} dB, "
          f"all {masked_psnr(images, x, torch.ones_like(head)):.2f} dB")
for (name, r), (inside, outside) in sorted(masks.items()):
    print(f"Eq. 6 mask, {name} pass, {r} px: head {inside:.3f}, background {outside:.3f}")
