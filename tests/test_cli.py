"""``python -m drdpgan anonymize|recover``: good and bad files in one folder, atomic PNG outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drdpgan import cli
from drdpgan.checkpoints import save_drdpgan
from drdpgan.repro import shared_data_dir
from toys import RES, tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_drdpgan(tmp_path_factory.mktemp("ck") / "model.pt", tiny_model())


def _face(path: Path, seed: int, size: int = RES) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    _face(d / "a.png", 0)
    _face(d / "b.jpg", 1, size=RES * 2)  # another size: resized to the model's
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a truncated PNG
    return d


def test_anonymize_and_recover_a_folder_with_bad_files(tmp_path, checkpoint, capsys):
    src = _folder(tmp_path)
    anon_dir, rec_dir = tmp_path / "anon", tmp_path / "rec"
    rc = cli.main(["anonymize", str(src), str(anon_dir), "--checkpoint", str(checkpoint), "--aligned", "--seed", "3"])
    err = capsys.readouterr().err
    assert rc == 1  # some files failed ...
    assert sorted(p.name for p in anon_dir.iterdir()) == ["a_anon.png", "b_anon.png"]  # ... the rest were written
    assert "notes.txt: not an image" in err and "broken.png" in err
    assert "2 written" in err and "2 skipped" in err
    for p in anon_dir.iterdir():
        assert Image.open(p).size == (RES, RES)
    # the anonymized pixels are what the model produces for that seed
    model = tiny_model()
    x = cli.to_tensor(Image.open(src / "a.png").convert("RGB"), RES)
    with torch.no_grad():
        want = model.anonymize(x, seed=3)["images"][0]
    got = cli.to_tensor(Image.open(anon_dir / "a_anon.png").convert("RGB"), RES)[0]
    assert (got - want.clamp(-1, 1)).abs().max() <= 1.01 / 127.5  # 8-bit rounding only

    (anon_dir / "wrong_size.png").write_bytes((src / "b.jpg").read_bytes())  # a JPEG under a .png name, 64 px
    rc = cli.main(["recover", str(anon_dir), str(rec_dir), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 1 and "wrong_size.png" in err and f"{RES}x{RES}" in err
    assert sorted(p.name for p in rec_dir.iterdir()) == ["a_anon_rec.png", "b_anon_rec.png"]
    assert not list(rec_dir.glob("*.tmp*")) and not list(anon_dir.glob(".*"))


def test_single_file_to_png_path_and_refusals(tmp_path, checkpoint, capsys):
    src = _face(tmp_path / "one.png", 5)
    out = tmp_path / "out" / "x.png"
    assert cli.main(["anonymize", str(src), str(out), "--checkpoint", str(checkpoint), "--aligned"]) == 0
    assert out.is_file()
    assert cli.main(["anonymize", str(src), str(tmp_path / "x.jpg"), "--checkpoint", str(checkpoint)]) == 2
    assert "PNG" in capsys.readouterr().err
    assert cli.main(["recover", str(tmp_path / "missing"), str(tmp_path / "o"), "--checkpoint", str(checkpoint)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_detection_reports_a_photo_without_a_face(tmp_path, checkpoint, capsys):
    """The MTCNN path (weights ship inside facenet-pytorch): a flat grey picture has no face (and,
    not being square, is not used whole as a crop)."""
    d = tmp_path / "in"
    d.mkdir()
    Image.new("RGB", (200, 120), (128, 128, 128)).save(d / "grey.png")
    lfw = shared_data_dir() / "lfw" / "images"
    real = sorted(lfw.glob("*.jpg"))[:1] if lfw.is_dir() else []
    for p in real:
        (d / p.name).write_bytes(p.read_bytes())
    rc = cli.main(["anonymize", str(d), str(tmp_path / "o"), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert "grey.png: no face found" in err
    assert rc == 1
    written = sorted(p.name for p in (tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else []
    assert written == [f"{p.stem}_anon.png" for p in real]  # a real LFW face (when the data is here) is aligned


def test_the_cli_and_the_pretraining_command_run_from_a_copy_of_the_package_without_notebooks(tmp_path, checkpoint):
    """The package alone (no notebooks/, no profiles' notebooks, Papermill and nbformat unimportable) anonymizes and
    recovers with the CLI and answers the pretraining command."""
    import json
    import shutil
    import subprocess
    import sys

    root = tmp_path / "copy"
    shutil.copytree(Path(cli.__file__).parent, root / "drdpgan", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (root / "notebooks").exists()
    src = tmp_path / "in"
    src.mkdir()
    _face(src / "a.png", 0)
    guard = ("import builtins, runpy, sys\n"
             "real = builtins.__import__\n"
             "def guard(name, *a, **k):\n"
             "    if name.split('.')[0] in ('papermill', 'nbformat'):\n"
             "        raise ImportError(name + ' must not be needed')\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = guard\n"
             "module, sys.argv = sys.argv[1], sys.argv[1:]\n"
             "import drdpgan\n"
             "assert drdpgan.__file__.startswith(sys.path[0]), drdpgan.__file__\n"
             "runpy.run_module(module, run_name='__main__', alter_sys=True)\n")
    env = {"DRDPGAN_ROOT": str(root), "PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}

    def run(*args):
        return subprocess.run([sys.executable, "-c", guard, *args], capture_output=True, text=True, cwd=root,
                              env=env)

    for cmd in (["drdpgan", "anonymize", str(src), str(tmp_path / "anon"), "--checkpoint", str(checkpoint),
                 "--aligned"],
                ["drdpgan", "recover", str(tmp_path / "anon"), str(tmp_path / "rec"), "--checkpoint", str(checkpoint)]):
        out = run(*cmd)
        assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "rec" / "a_anon_rec.png").is_file()
    out = run("drdpgan.pretrain", "status", "--profile", "cpu")
    assert out.returncode == 0 and json.loads(out.stdout) == {}, out.stderr[-2000:]
