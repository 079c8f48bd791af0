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
