"""What breaks the anonymized faces when DR-DPGAN's joint objective starts? (a measurement script)

    .venv/bin/python scripts/joint_diagnostics.py NAME STEPS 'JSON' [RUN_DIR]

Builds the cpu recipe's model, loads the code stage (``code.pt``) and E_MLP's inversion (``mapper_init.pt``) of a
pretraining run folder (default: ``artifacts/pretrain/cpu/drdpgan``; the README's table used run 8's,
``drdpgan-run8-mapperinit``, with the recipe of its commit), and trains
``STEPS`` steps of the recipe (its warm-up first, which is deterministic) with ``JSON`` overriding
:class:`~drdpgan.train_drdpgan.DRDPGANTrainConfig` fields (``"weights": {"adv": 0}`` sets Eq. 16 weights;
``"mapper": false`` keeps the untrained mapper; ``"model_cfg": {"fusion_mask_bias": -2}`` overrides the recipe's
:class:`~drdpgan.models.drdpgan.DRDPGANConfig` fields; ``"fake_cfg": {"bank_pick": "uniform"}`` sets
:class:`~drdpgan.models.fake_identity.FakeIdentityConfig` fields of the built model; ``"fake": "next_face"`` replaces Alg. 1's F'_id by the identity of
the next face in the batch) into ``artifacts/pretrain/cpu/diagnostics/NAME`` (the final weights in its ``model.pt``,
which ``scripts/drdpgan_grid.py`` reads); then prints ``quick_metrics`` on 32
held-out faces. The README's table ("DR-DPGAN itself") came from, for example:

    scripts/joint_diagnostics.py noid 400 '{"weights": {"id": 0}}'
    scripts/joint_diagnostics.py ramp 500 '{"joint_lr_ramp_steps": 200}'   (at commit 876ee26's recipe)
    scripts/joint_diagnostics.py otherface 400 '{"fake": "next_face"}'     (at ac4c991's, which has the ramp)
"""
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
import torch
from drdpgan.pretrain_drdpgan import DRDPGAN_RECIPES, _faces, _mapper_stage, _sample, build_model, quick_metrics
from drdpgan.losses import LossWeights
from drdpgan.pretrain import work_dir
from drdpgan.train_drdpgan import train_drdpgan
torch.set_num_threads(2)
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
cfg = replace(DRDPGAN_RECIPES["cpu"]["train"], steps=steps, eval_every=0, checkpoint_every=10**6, weights=LossWeights(**w), **ovr)
t = time.time()
out = work_dir("cpu", "diagnostics") / name
train_drdpgan(m, train, cfg, out, progress=False)
torch.save({"model": m.state_dict()}, out / "model.pt")  # for scripts/drdpgan_grid.py
q = quick_metrics(m, _sample(held, 32))
print(name, {k: round(v, 3) for k, v in q.items()}, f"{time.time()-t:.0f}s", flush=True)
