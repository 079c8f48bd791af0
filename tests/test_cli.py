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
