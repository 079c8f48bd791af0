"""The keyed password on the command line (issue 16): the right key recovers, a wrong key, a photo that
was never anonymized and a damaged one are refused with no output and exit status 1; a passphrase
never appears in what the command prints or writes.

The toy model is untrained, so its E_P cannot read bits; the tests give it a *recording* extractor
(``toys.keyed_recording_model``) that returns the bits anonymize hid in the nearest recorded image
(flipping ``flip`` of them). What is tested is the command line's sealing, opening and refusing, not the
network (``password.*`` keys measure that).
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from drdpgan import cli
from drdpgan.password import read_key_file, write_key_file
from toys import RES, keyed_recording_model, tiny_model


@pytest.fixture
def setup(tmp_path, monkeypatch):
    model = keyed_recording_model()
    monkeypatch.setattr(cli, "load_checkpoint", lambda checkpoint, profile=cli.DEFAULT_PROFILE: model)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(src / f"f{i}.png")
    key = tmp_path / "k.key"
    write_key_file(key)
    return model, src, key


def test_keygen_file_is_private(tmp_path):
    assert cli.main(["keygen", str(tmp_path / "a.key")]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "a.key").st_mode) == 0o600


def test_right_key_recovers_wrong_key_and_foreign_images_are_refused(tmp_path, setup, capsys):
    model, src, key = setup
    anon = tmp_path / "anon"
    assert cli.main(["anonymize", str(src), str(anon), "--aligned", "--key-file", str(key)]) == 0
    assert cli.main(["recover", str(anon), str(tmp_path / "rec"), "--key-file", str(key)]) == 0
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["f0_anon_rec.png", "f1_anon_rec.png"]
    capsys.readouterr()

    other = tmp_path / "other.key"
    write_key_file(other)
    assert cli.main(["recover", str(anon), str(tmp_path / "wrong"), "--key-file", str(other)]) == 1
    err = capsys.readouterr().err
    assert err.count("does not open with this key") == 2 and "no output written" in err
    assert not (tmp_path / "wrong").exists() or not list((tmp_path / "wrong").iterdir())

    # teaching flag: a wrong key still renders, with a loud note
    assert cli.main(["recover", str(anon), str(tmp_path / "taught"), "--key-file", str(other),
                     "--render-wrong-key"]) == 0
    assert "WRONG KEY" in capsys.readouterr().err and len(list((tmp_path / "taught").iterdir())) == 2

    # photos that were never anonymized, and an anonymized one with more bit errors than BCH corrects
    assert cli.main(["recover", str(src), str(tmp_path / "foreign"), "--key-file", str(key)]) == 1
    assert capsys.readouterr().err.count("no readable password") == 2
    model.extractor.flip = model.cfg.payload_bch_t + 3
    assert cli.main(["recover", str(anon), str(tmp_path / "damaged"), "--key-file", str(key)]) == 1
    assert capsys.readouterr().err.count("no readable password") == 2
    model.extractor.flip = model.cfg.payload_bch_t  # within what the code corrects
    assert cli.main(["recover", str(anon), str(tmp_path / "fixed"), "--key-file", str(key)]) == 0
    assert "bit error(s) corrected" in capsys.readouterr().err


def test_keyed_model_needs_a_key_and_the_passphrase_is_never_shown(tmp_path, setup, capsys, monkeypatch):
    model, src, key = setup
    assert cli.main(["anonymize", str(src), str(tmp_path / "a"), "--aligned"]) == 2
    assert "keygen" in capsys.readouterr().err
    secret = "correct horse battery staple 7431"
    monkeypatch.setenv("DRDPGAN_PASS", secret)
    report = tmp_path / "report.json"
    assert cli.main(["anonymize", str(src), str(tmp_path / "a"), "--aligned", "--passphrase-env", "DRDPGAN_PASS",
                     "--report", str(report)]) == 0
    assert cli.main(["recover", str(tmp_path / "a"), str(tmp_path / "r"), "--passphrase-env", "DRDPGAN_PASS"]) == 0
    out = capsys.readouterr()
    assert secret not in out.err + out.out + report.read_text()
    assert cli.main(["recover", str(tmp_path / "a"), str(tmp_path / "r2"), "--key-file", str(key)]) == 1
    assert cli.main(["anonymize", str(src), str(tmp_path / "b"), "--key-file", str(key), "--passphrase-env",
                     "DRDPGAN_PASS"]) == 2
    assert cli.main(["anonymize", str(src), str(tmp_path / "b"), "--passphrase-env", "NOPE_NOT_SET"]) == 2
    assert "no such environment variable" in capsys.readouterr().err


def test_paper_layout_model_takes_no_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_checkpoint", lambda checkpoint, profile=cli.DEFAULT_PROFILE: tiny_model())
    src = tmp_path / "f.png"
    Image.fromarray(np.zeros((RES, RES, 3), np.uint8)).save(src)
    key = tmp_path / "k.key"
    write_key_file(key)
    assert read_key_file(key)
    assert cli.main(["anonymize", str(src), str(tmp_path / "o.png"), "--aligned", "--key-file", str(key)]) == 2
    assert "takes no key" in capsys.readouterr().err
