"""scripts/pretrain_gpu.sh's DR-DPGAN branch, run with a stand-in python (the shell logic only: what it calls, what
it packs for the device tool's 8 files of 16 MiB)."""
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$PWD/calls.txt"
case "$*" in
  *"drdpgan.pretrain drdpgan"*)
    d=pretrain_state/cpu/drdpgan
    rm "$d/ckpt_0002201.pt"; head -c 300000 /dev/zero > "$d/ckpt_0002900.pt"
    echo '{"step": 2900}' > "$d/stash.json"; echo "2900,1" >> "$d/losses.csv";;
  *"drdpgan.pretrain ablations"*)
    mkdir -p pretrain_state/cpu/ablations/exp1-seed0; echo '{"rec_cos": 0.5}' > pretrain_state/cpu/ablations/exp1-seed0/result.json;;
  *) echo '{}';;
esac
"""


@pytest.mark.skipif(shutil.which("sha256sum") is None or shutil.which("split") is None, reason="needs coreutils")
def test_the_recipe_runs_resume_the_carried_run_and_pack_only_what_changed(tmp_path):
    """NETWORKS="drdpgan ablations": the faces once, then both runs with a budget; back come the DR-DPGAN stash's
    changed files and the finished Table 4 results."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "pretrain_gpu.sh", tmp_path / "scripts")
    py = tmp_path / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    state = tmp_path / "pretrain_state" / "cpu" / "drdpgan"
    state.mkdir(parents=True)
    for name, text in {"ckpt_0002201.pt": "old", "code.pt": "code", "mapper_init.pt": "map",
                       "stash.json": '{"step": 2201}', "losses.csv": "step,loss\n"}.items():
        (state / name).write_text(text)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "NETWORKS": "drdpgan ablations", "BUDGET": "600", "DEVICE": "cpu",
           "HEARTBEAT": "1"}
    r = subprocess.run(["bash", "scripts/pretrain_gpu.sh"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    run = next(c for c in calls if c.startswith("-m drdpgan.pretrain drdpgan"))
    table4 = next(c for c in calls if c.startswith("-m drdpgan.pretrain ablations"))
    assert "--stash" in run and "--device cpu" in run and "--stash" not in table4
    hours = float(run.split("--max-hours ")[1].split()[0])
    assert 0 < hours < 600 / 3600 and f"--max-hours {run.split('--max-hours ')[1].split()[0]}" in table4
    faces = [k for k, c in enumerate(calls) if "pretraining_faces" in c]
    assert len(faces) == 1 and faces[0] < min(calls.index(run), calls.index(table4))  # the faces once, first
    parts = sorted((tmp_path / "out").glob("drdpgan-stash.tar.part-*"))
    assert parts and len(list((tmp_path / "out").iterdir())) <= 8
    packed = tmp_path / "packed.tar"
    packed.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(packed) as t:
        names = sorted(t.getnames())
    assert names == ["drdpgan/ckpt_0002900.pt", "drdpgan/losses.csv", "drdpgan/stash.json"]  # not the stage caches
    with tarfile.open(tmp_path / "out" / "ablations.tar") as t:
        assert "ablations/exp1-seed0/result.json" in t.getnames()
