"""One checkpoint format for every network: round trip, clear errors for bad files."""

from __future__ import annotations

import pytest
import torch

from drdpgan.checkpoints import CheckpointError, load_model, save_checkpoint
from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor
from drdpgan.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator


def test_round_trip_rebuilds_from_config(tmp_path):
    g = StyleGAN2Generator(StyleGAN2Config(resolution=32, z_dim=8, w_dim=8, mapping_layers=1, channel_max=8))
    path = save_checkpoint(tmp_path / "g.pt", g, metrics={"stylegan2.frechet_id": 1.5})
    g2, info = load_model(path)
    assert info["kind"] == "stylegan2_generator" and info["metrics"] == {"stylegan2.frechet_id": 1.5}
    z = torch.randn(2, 8)
    assert torch.equal(g.eval()(z), g2(z))


def test_bad_files_name_the_file_and_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: not a readable torch checkpoint"):
        load_model(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not a drdpgan checkpoint"):
        load_model(foreign)
    p3d = save_checkpoint(tmp_path / "p.pt", Prior3DRegressor(Prior3DConfig(widths=(8, 8), blocks=(1, 1), hidden=8)))
    assert load_model(p3d)[1]["kind"] == "prior3d"  # the file says what it holds
    payload = torch.load(p3d, weights_only=False)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, p3d)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(p3d)


def test_drdpgan_file_can_reference_its_frozen_parts_instead_of_storing_them(tmp_path, monkeypatch):
    """A shipped DR-DPGAN may leave out the frozen identity encoder / 3D prior and name the shipped files
    they equal: loading puts them back, and refuses when the named file changed or differs."""
    import copy

    from drdpgan import shipped
    from drdpgan.checkpoints import CheckpointError, load_model, read_checkpoint, save_drdpgan, strip_referenced_parts
    from drdpgan.repro import atomic_torch_save
    from toys import tiny_model

    m = tiny_model()
    nets = {"identity": copy.deepcopy(m.identity_encoder), "prior3d": copy.deepcopy(m.prior3d)}
    sha = {"identity": "a" * 64, "prior3d": "b" * 64}
    monkeypatch.setattr(shipped, "load", lambda profile, net, verify=True: (nets[net], {"manifest": {"sha256": sha[net]}}))
    payload = read_checkpoint(save_drdpgan(tmp_path / "full.pt", m))
    refs = {"identity_encoder": (nets["identity"], {"profile": "toy", "network": "identity", "sha256": sha["identity"]}),
            "prior3d": (nets["prior3d"], {"profile": "toy", "network": "prior3d", "sha256": sha["prior3d"]})}
    strip_referenced_parts(payload, refs)
    assert not any(k.startswith(("identity_encoder.", "prior3d.")) for k in payload["state_dict"])
    atomic_torch_save(payload, tmp_path / "slim.pt")
    back, _ = load_model(tmp_path / "slim.pt")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in back.state_dict().items())
    sha["prior3d"] = "c" * 64  # the shipped prior changed since
    with pytest.raises(CheckpointError, match="prior3d"):
        load_model(tmp_path / "slim.pt")
    other = read_checkpoint(tmp_path / "full.pt")
    with torch.no_grad():
        nets["identity"].parameters().__next__().add_(1)
    with pytest.raises(CheckpointError, match="differs"):
        strip_referenced_parts(other, refs)
