"""How low can ``anon.cos`` go while pose, expression, lighting and background are kept? (a measurement script)

    .venv/bin/python scripts/anon_cos_floor.py [PROFILE=cpu] [N=256]

On the synthetic world the answer can be rendered: each of ``N`` held-out faces (the faces
:func:`drdpgan.pretrain_drdpgan.measure_drdpgan` measures) is rendered again with another held-out person's identity
coefficients (shape and albedo, :data:`drdpgan.data.world.IDENTITY_KEYS`) and its own expression, pose, translation,
lighting and background: a perfect anonymizer that changes nothing but the person. The pretrained evaluator's
cosine between each original and that re-rendering is the floor an attribute-keeping anonymizer meets; beside it
the cosine between the original and a different person's unrelated face (``chance``), and between the original and
another photo of the same person (``same``). Prints the means, and the quantiles of the floor.

``BAND=0.1,0.2`` picks each face's new person as Alg. 1's band asks of a fake identity: at random among the other
held-out faces whose cosine to it in the frozen training identity encoder (the shipped one) lies in the band (faces
with none keep a random partner; their count is printed): the floor of an anonymizer that renders its fake exactly.
"""
import json
import os
import sys

import numpy as np
import torch

from drdpgan import stages
from drdpgan.data.world import IDENTITY_KEYS, FaceWorld
from drdpgan.evaluate import identity_cosines
from drdpgan.pretrain import pretrained_network
from drdpgan.pretrain_drdpgan import _sample, _sample_indices

torch.set_num_threads(1)
profile = sys.argv[1] if len(sys.argv) > 1 else "cpu"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 256
heldout = stages.face_data(stages.notebook_params("01_data", profile), False)["heldout"]
idx = _sample_indices(heldout, n)
x = _sample(heldout, n).float()
ids = torch.as_tensor(heldout.world_identities[idx])
samples = torch.as_tensor(heldout.sample_indices[idx])
world = FaceWorld(heldout.world_config)
g = torch.Generator().manual_seed(0)
others = ids[torch.randperm(len(ids), generator=g)]
clash = others == ids
others[clash] = ids[(torch.nonzero(clash).flatten() + 1) % len(ids)]  # nobody swapped with themselves
no_partner = None
if os.environ.get("BAND"):
    s_min, s_max = (float(v) for v in os.environ["BAND"].split(","))
    encoder, _ = pretrained_network(profile, "identity")
    with torch.no_grad():
        e = torch.cat([encoder(x[s:s + 64]) for s in range(0, n, 64)])  # (N, D), unit vectors
    cos = e @ e.T  # (N, N) training-encoder cosines between the held-out faces
    ok = (cos >= s_min) & (cos <= s_max) & (ids[None, :] != ids[:, None])
    no_partner = 0
    for i in range(n):
        cand = torch.nonzero(ok[i]).flatten()
        if len(cand):
            others[i] = ids[cand[torch.randint(len(cand), (1,), generator=g)]]
        else:
            no_partner += 1
coeffs = world.sample_coeffs(ids, samples)
coeffs.update(world.identity_coeffs(others))  # another person, this face's expression, pose, light and background
with torch.no_grad():
    swapped = torch.cat([world.render_coeffs({k: v[s:s + 64] for k, v in coeffs.items()}, heldout.image_size)["image"]
                         for s in range(0, n, 64)])
other_face = x[torch.randperm(n, generator=g)]
same = world.render(ids, samples + 1, heldout.image_size)["image"]  # the same person in another sample
evaluator, _ = pretrained_network(profile, "evaluator")
floor = np.asarray(identity_cosines(evaluator, x, swapped))
out = {"n": n, "floor_same_scene_other_person": float(floor.mean()),
       "floor_quantiles_10_50_90": [float(q) for q in np.quantile(floor, (0.1, 0.5, 0.9))],
       "chance_other_face": float(np.mean(identity_cosines(evaluator, x, other_face))),
       "same_person_other_sample": float(np.mean(identity_cosines(evaluator, x, same))),
       "identity_keys_swapped": list(IDENTITY_KEYS), "band": os.environ.get("BAND"), "no_partner_in_band": no_partner}
print(json.dumps(out, indent=1))
