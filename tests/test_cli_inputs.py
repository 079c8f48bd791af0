"""Photos as people have them: every bad or unusual input of the CLI, one test each.

Covers the cases found by trying the CLI as a new user: tiny and degenerate images, EXIF
orientation, 16-bit, palette, transparent and CMYK images, animations, huge images, folders and
links among the inputs, colliding names, resume, permissions, interrupts, and clear messages for
bad checkpoints and output paths.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drdpgan import cli
from drdpgan.checkpoints import save_drdpgan
from drdpgan.data import photos
from drdpgan.data.align import align_with_landmarks, paste_back, similarity_matrix, template_for_size
from drdpgan.data.photos import PhotoError, read_photo
from toys import RES, tiny_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_drdpgan(tmp_path_factory.mktemp("ck") / "model.pt", tiny_model())


def _noise(size, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def _anon(args, checkpoint):
    return cli.main(["anonymize", *map(str, args), "--checkpoint", str(checkpoint), "--aligned"])


# --------------------------------------------------------------------------- read_photo


def test_exif_orientation_is_applied(tmp_path):
    img = _noise((60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    out, notes = read_photo(tmp_path / "phone.jpg")
    assert out.size == (40, 60) and "EXIF orientation 6 applied" in notes


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    a = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out, _ = read_photo(tmp_path / "deep.png")
    g = np.asarray(out)[..., 0].astype(float)
    assert out.mode == "RGB" and 120 < g.mean() < 135 and g.min() == 0 and g.max() == 255  # not all white


def test_palette_transparent_cmyk_and_grey_become_rgb(tmp_path):
    base = _noise((32, 32), 1)
    base.convert("P").save(tmp_path / "pal.png")
    rgba = base.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: shows as white
    rgba.save(tmp_path / "clear.png")
    base.convert("CMYK").save(tmp_path / "print.jpg")
    base.convert("L").save(tmp_path / "grey.png")
    for name in ("pal.png", "clear.png", "print.jpg", "grey.png"):
        out, _ = read_photo(tmp_path / name)
        assert out.mode == "RGB" and out.size == (32, 32), name
    assert np.asarray(read_photo(tmp_path / "clear.png")[0]).min() == 255
    np.testing.assert_allclose(np.asarray(read_photo(tmp_path / "print.jpg")[0], float).mean(),
                               np.asarray(base, float).mean(), atol=6)


def test_animation_uses_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 200, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out, notes = read_photo(tmp_path / "anim.gif")
    assert notes == ["animated (2 frames): the first frame was used"]
    assert np.asarray(out)[..., 0].mean() > 150


def test_huge_images_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(photos, "MAX_PIXELS", 100 * 100)
    monkeypatch.setattr(photos, "DRAFT_SIDE", 64)
    _noise((256, 256)).save(tmp_path / "big.jpg")
    out, notes = read_photo(tmp_path / "big.jpg")
    assert max(out.size) < 256 and "decoded at" in notes[0]  # JPEG: decoded at a reduced scale
    _noise((256, 256)).save(tmp_path / "big.png")
    with pytest.raises(PhotoError, match="big.png: 256x256 px is more than"):
        read_photo(tmp_path / "big.png")


@pytest.mark.parametrize("size", [(1, 1), (10, 10), (1000, 1), (3, 400)])
def test_tiny_and_degenerate_images_are_refused(tmp_path, size):
    Image.new("RGB", size, (90, 90, 90)).save(tmp_path / "t.png")
    with pytest.raises(PhotoError, match=f"t.png: {size[0]}x{size[1]} px is too small"):
        read_photo(tmp_path / "t.png")


def test_folders_links_and_garbage_are_named(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nothing.png")
    _noise((64, 64)).save(tmp_path / "whole.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:400])  # truncated mid-stream
    (tmp_path / "text.png").write_text("hello")
    expect = {"x.jpg": "a folder, not an image", "loop.png": "broken or looping link", "gone.png": "broken or looping link",
              "cut.jpg": "unreadable image", "text.png": "not an image"}
    for name, msg in expect.items():
        with pytest.raises(PhotoError, match=msg) as e:
            read_photo(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name))


# --------------------------------------------------------------------------- the command


def test_bad_inputs_are_reported_and_the_rest_processed(tmp_path, checkpoint, capsys):
    d = tmp_path / "in"
    d.mkdir()
    _noise((RES, RES), 0).save(d / "good.png")
    Image.new("RGB", (1, 1)).save(d / "dot.png")
    Image.new("RGB", (1000, 1)).save(d / "line.png")
    (d / "album.jpg").mkdir()
    (d / "loop.png").symlink_to(d / "loop.png")
    _noise((RES, RES), 1).save(d / "z_last.png")
    report = tmp_path / "report.json"
    rc = cli.main(["anonymize", str(d), str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--aligned",
                   "--report", str(report)])
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_anon.png", "z_last_anon.png"]
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())}
    assert {k: v["status"] for k, v in rows.items()} == {
        "album.jpg": "skipped", "dot.png": "skipped", "good.png": "written", "line.png": "skipped",
        "loop.png": "skipped", "z_last.png": "written"}
    assert "too small" in rows["dot.png"]["reason"] and "a folder" in rows["album.jpg"]["reason"]
    assert "2 written" in err and "4 skipped" in err and "Traceback" not in err


def test_same_stem_different_extension_get_distinct_outputs(tmp_path, checkpoint, capsys):
    d = tmp_path / "in"
    d.mkdir()
    _noise((RES, RES), 0).save(d / "face.jpg")
    _noise((RES, RES), 1).save(d / "face.png")
    assert _anon([d, tmp_path / "out"], checkpoint) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face_jpg_anon.png", "face_png_anon.png"]
    assert "2 written" in capsys.readouterr().err


def test_rerun_resumes_and_overwrite_redoes(tmp_path, checkpoint, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        _noise((RES, RES), i).save(d / f"p{i}.png")
    out = tmp_path / "out"
    assert _anon([d, out], checkpoint) == 0
    capsys.readouterr()
    stamp = (out / "p0_anon.png").stat().st_mtime_ns
    (out / "p1_anon.png").unlink()  # as if the first run had been killed before p1
    assert _anon([d, out], checkpoint) == 0
    assert "1 written" in capsys.readouterr().err and (out / "p0_anon.png").stat().st_mtime_ns == stamp
    assert cli.main(["anonymize", str(d), str(out), "--checkpoint", str(checkpoint), "--aligned", "--overwrite"]) == 0
    assert "3 written" in capsys.readouterr().err


def test_outputs_follow_the_umask(tmp_path, checkpoint):
    _noise((RES, RES)).save(tmp_path / "a.png")
    old = os.umask(0o022)
    try:
        assert _anon([tmp_path / "a.png", tmp_path / "o" / "a.png"], checkpoint) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "o" / "a.png").stat().st_mode & 0o777 == 0o644


def test_sigterm_leaves_no_temporary_file(tmp_path, checkpoint, monkeypatch, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        _noise((RES, RES), i).save(d / f"p{i}.png")
    real_save = Image.Image.save
    calls = []

    def save_then_terminate(self, fp, *a, **k):
        calls.append(fp)
        real_save(self, fp, *a, **k)
        if len(calls) == 2:  # the second output is half-way through its atomic write
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Image.Image, "save", save_then_terminate)
    out = tmp_path / "out"
    assert _anon([d, out], checkpoint) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["p0_anon.png"]  # finished output kept, no .tmp file
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert _anon([d, out], checkpoint) == 0 and len(list(out.iterdir())) == 3


def test_no_face_uses_square_images_whole_and_names_aligned_otherwise(tmp_path, checkpoint, capsys):
    d = tmp_path / "in"
    d.mkdir()
    Image.new("RGB", (160, 160), (128, 128, 128)).save(d / "square.png")
    Image.new("RGB", (300, 120), (128, 128, 128)).save(d / "wide.png")
    rc = cli.main(["anonymize", str(d), str(tmp_path / "out"), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "square.png: no face detected: the whole image was used as an aligned face crop" in err
    assert "wide.png: no face found (if it is a tight face crop, rerun with --aligned)" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["square_anon.png"]


def test_checkpoint_and_output_path_errors_are_messages(tmp_path, checkpoint, capsys):
    from drdpgan.checkpoints import save_checkpoint
    from drdpgan.models.prior3d import Prior3DConfig, Prior3DRegressor

    _noise((RES, RES)).save(tmp_path / "a.png")
    wrong = save_checkpoint(tmp_path / "prior.pt", Prior3DRegressor(Prior3DConfig()))
    raw = tmp_path / "raw.pt"
    torch.save(tiny_model().state_dict(), raw)  # a bare state dict, like an old demo model.pt
    cases = [("missing.pt", "no such checkpoint file"), (wrong, "not a DR-DPGAN model.pt"),
             (raw, "not a DR-DPGAN model.pt this version can load")]
    for ck, msg in cases:
        rc = cli.main(["anonymize", str(tmp_path / "a.png"), str(tmp_path / "o.png"), "--checkpoint", str(ck)])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and "Traceback" not in err, (ck, err)
    (tmp_path / "d").mkdir()
    (tmp_path / "file.png").write_bytes(b"x")
    rc = cli.main(["anonymize", str(tmp_path / "d"), str(tmp_path / "file.png"), "--checkpoint", str(checkpoint)])
    assert rc == 2 and "an existing file" in capsys.readouterr().err


# --------------------------------------------------------------------------- paste back


def test_paste_back_puts_the_crop_where_it_was_cut():
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    photo = coarse.resize((320, 240), Image.BICUBIC)  # smooth: a down-and-up resampled crop matches it
    tmpl = template_for_size(64)
    landmarks = (tmpl - 32) * 1.7 + np.array([150.0, 120.0])  # a face 1.7x the crop, inside the photo
    crop = align_with_landmarks(photo, landmarks, 64)
    m = similarity_matrix(landmarks, 64)
    black = paste_back(photo, Image.new("RGB", (64, 64)), m)
    again = paste_back(photo, crop, m)
    a, p, b = (np.asarray(x, float) for x in (again, photo, black))
    centre = (slice(110, 130), slice(140, 160))
    assert np.abs(a[centre] - p[centre]).mean() < 3  # the crop itself pasted back: the photo again
    assert b[centre].max() == 0  # a black crop blacks out the centre of the face ...
    assert np.array_equal(b[:20, :20], p[:20, :20])  # ... and nothing far outside it
    edge = np.abs(b - p).sum(-1) > 0
    assert 0.03 < edge.mean() < 0.3
