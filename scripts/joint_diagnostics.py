"""What breaks the anonymized faces when DR-DPGAN's joint objective starts? (a measurement script)

    .venv/bin/python scripts/joint_diagnostics.py NAME STEPS 'JSON' [RUN_DIR]

Builds the cpu recipe's model, loads the code stage (``code.pt``) and E_MLP's inversion (``mapper_init.pt``) of a
pretraining run folder (default: ``artifacts/pretrain/cpu/drdpgan``; the README's table used run 8's,
``drdpgan-run8-mapperinit``, with the recipe of its commit), and trains
``STEPS`` steps of the recipe's first, constant-rate phase (its warm-up first, which is deterministic) with ``JSON`` overriding
:class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig` fields (``"weights": {"adv": 0}`` sets Eq. 16 weights;
``"phase": -1`` takes the recipe's last phase instead of its first as the config the overrides apply to;
``"mapper": false`` keeps the untrained mapper; ``"model_cfg": {"fusion_mask_bias": -2}`` overrides the recipe's
:class:`~drdpgan.models.drdpgan.DRDPGANConfig` fields; ``"fake_cfg": {"bank_pick": "uniform"}`` sets
:class:`~drdpgan.models.fake_identity.FakeIdentityConfig` fields of the built model; ``"fake": "next_face"`` replaces Alg. 1's F'_id by the identity of
the next face in the batch) into ``artifacts/pretrain/cpu/diagnostics/NAME`` (the final weights in its ``model.pt``,
which ``scripts/drdpgan_grid.py`` reads); then prints ``quick_metrics`` on 32
held-out faces. The README's table ("DR-DPGAN itself") came from, for example:

    scripts/joint_diagnostics.py noid 400 '{"weights": {"id": 0}}'
    scripts/joint_diagnostics.py ramp 500 '{"joint_lr_ramp_steps": 200}'   (at commit 876ee26's recipe)
    scripts/joint_diagnostics.py otherface 400 '{"fake": "next_face"}'     (at ac4c991's, which has the ramp)

With ``FROM_CKPT=path/to/ckpt_NNNNNNN.pt`` it continues that checkpoint (model, judges, optimisers) for ``STEPS``
more steps under the overrides instead of starting over: the checkpoint is copied into the diagnostic's folder with
its stored training config replaced by the overridden one. For example, run 12 continued with and without the
background term:

    FROM_CKPT=artifacts/pretrain/cpu/drdpgan/checkpoints/ckpt_0001500.pt scripts/joint_diagnostics.py bg3 200 '{"w_anon_background": 3}'

Besides ``quick_metrics`` it prints ``anon.background_psnr`` and the anonymized pose error of the same 32 faces
(:func:`drdpgan.pretrain_drdpgan.attribute_preservation`) and the mean of Eq. 6's mask per injection resolution,
inside (``_face``) and outside (``_bg``) the face ellipse.
"""
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
import torch
from drdpgan.pretrain_drdpgan import (DRDPGAN_RECIPES, _anonymize_sealed, _faces, _mapper_stage, _sample_indices,
                                      attribute_preservation, build_model, quick_metrics)
from drdpgan.repro import make_generator
from drdpgan.stages import images_of
from drdpgan.losses import face_region_weight
from drdpgan.pretrain import work_dir
from drdpgan.train_drdpgan import train_drdpgan
torch.set_num_threads(int(os.environ.get("THREADS", "2")))  # 1 beside a running pretraining
name, steps = sys.argv[1], int(sys.argv[2])
ovr = json.loads(sys.argv[3]); w = ovr.pop("weights", {})
run = sys.argv[4] if len(sys.argv) > 4 else work_dir("cpu", "drdpgan")
if ovr.pop("fake", "alg1") == "next_face":  # F'_id := F_id of the next face in the batch (a diagnostic, not an option)
    import torch.nn.functional as F

    from drdpgan.models.fake_identity import FakeIdentityGenerator

    def next_face(self, f_id, z=None, generator=None, guided=None):
        fake = f_id.roll(1, 0)
        return {"fake": fake, "cos": F.cosine_similarity(fake, f_id, dim=-1)}

    FakeIdentityGenerator.generate = next_face
DRDPGAN_RECIPES["cpu"]["model"].update(ovr.pop("model_cfg", {}))
m, _ = build_model("cpu", progress=False)
for k, v in ovr.pop("fake_cfg", {}).items():
    setattr(m.fake_identity.cfg, k, v)
st = torch.load(f"{run}/code.pt", weights_only=True)
m.binary_code.load_state_dict(st["mapping"]); m.decoder.load_state_dict(st["decoder"])
if ovr.pop("mapper", True):  # the run's E_MLP stage (and fake identity bank), loaded as the pretraining loads it
    _mapper_stage(m, "cpu", Path(run), False)
train, held = _faces("cpu", False)
# the recipe's phase the overrides apply to: "phase": index into (earlier phases..., train); default 0, constant rates
base = (*DRDPGAN_RECIPES["cpu"].get("earlier_phases", ()), DRDPGAN_RECIPES["cpu"]["train"])[ovr.pop("phase", 0)]
cfg = replace(base, steps=steps, eval_every=0, checkpoint_every=10**6, weights=replace(base.weights, **w), **ovr)
t = time.time()
out = work_dir("cpu", "diagnostics") / name
if os.environ.get("FROM_CKPT"):  # continue that checkpoint under this config
    ck = torch.load(os.environ["FROM_CKPT"], weights_only=False)
    cfg = replace(cfg, steps=int(ck["step"]) + steps)
    ck["configs"]["train"] = cfg.to_dict()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(ck, out / "checkpoints" / f"ckpt_{int(ck['step']):07d}.pt")
train_drdpgan(m, train, cfg, out, progress=False)
torch.save({"model": m.state_dict()}, out / "model.pt")  # for scripts/drdpgan_grid.py
idx = _sample_indices(held, 32)
x = images_of(held, idx)
q = quick_metrics(m, x)
with torch.no_grad():
    masks = {}
    def keep_mask(r):
        def hook(_mod, _inputs, out):  # out = (F_in, M): M's mean inside and outside the face ellipse
            face = face_region_weight(int(r), tuple(cfg.face_region)) >= 0.5  # (1, 1, r, r)
            mk = out[1].float().mean(1, keepdim=True)  # (B, 1, r, r)
            masks.setdefault(f"{r}_face", float(mk[face.expand_as(mk)].mean()))
            masks.setdefault(f"{r}_bg", float(mk[~face.expand_as(mk)].mean()))
        return hook

    hook = [f.register_forward_hook(keep_mask(r)) for r, f in m.fusion.items()]
    anon = _anonymize_sealed(m, x.float(), make_generator(3))[0]
    for h in hook:
        h.remove()
    q.update({k: v for k, v in attribute_preservation(m, held, idx, anon).items() if k.startswith("anon.")})
q.update({f"mask{r}": v for r, v in masks.items()})
print(name, {k: round(v, 3) for k, v in q.items()}, f"{time.time()-t:.0f}s", flush=True)
