"""Data scripts: LFW subset end to end, bad files reported, resume, archives, splits, download errors."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drdpgan.data.prepare import (
    CelebAHQIdentity,
    DownloadError,
    LFWIdentity,
    assign_splits,
    decode_image,
    download_file,
    folder_identity,
    pair_groups,
    read_pairs,
)
from drdpgan.data.real import ManifestFaceDataset
from drdpgan.repro import project_root, shared_data_dir

LFW = shared_data_dir() / "lfw"
HAVE_LFW = (LFW / "images").is_dir() and (LFW / "labels.csv").is_file()
_skip_no_lfw = pytest.mark.skipif(not HAVE_LFW, reason=f"shared LFW copy not found at {LFW}")


def needs_lfw(fn):
    return pytest.mark.lfw(_skip_no_lfw(fn))
SCRIPTS = project_root() / "data_scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _labels():
    with open(LFW / "labels.csv", newline="") as f:
        return [(r["file"], r["identity"]) for r in csv.DictReader(f)]


def _lfw_subset(dst: Path, n_ids: int = 8, per_id: int = 5) -> list[tuple[str, str]]:
    """First identities with >= per_id images, per_id images each, copied flat with labels.csv."""
    by_id: dict[str, list[str]] = {}
    for f, i in _labels():
        by_id.setdefault(i, []).append(f)
    chosen = [i for i in sorted(by_id) if len(by_id[i]) >= per_id][:n_ids]
    dst.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in chosen:
        for f in sorted(by_id[i])[:per_id]:
            shutil.copy(LFW / "images" / f, dst / f)
            rows.append((f, i))
    with open(dst / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "identity"])
        w.writerows(rows)
    return rows


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- end to end on LFW


@needs_lfw
def test_prepare_lfw_subset_subprocess(tmp_path, capsys):
    rows = _lfw_subset(tmp_path / "src", n_ids=6, per_id=5)
    # a pairs.csv linking two identities: they must share a split
    (ida, fa), (idb, fb) = (rows[0][1], rows[0][0]), (rows[5][1], rows[5][0])
    (tmp_path / "src" / "pairs.csv").write_text(f"file_a,file_b,same\n{fa},{rows[1][0]},1\n{fa},{fb},0\n")
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(SCRIPTS / "prepare_lfw.py"), "--src", str(tmp_path / "src"), "--out", str(out),
         "--size", "64", "--quiet", "--test-frac", "0.25"],
        capture_output=True, text=True, timeout=240,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert "kept" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["n_files"] == 30 and report["n_kept"] + report["n_skipped"] == 30
    assert report["n_kept"] >= 28, report["skipped_examples"]
    man = _manifest(out)
    assert len(man) == report["n_kept"]
    assert list(man[0]) == ["path", "identity", "split", "source"]
    truth = dict(rows)
    for m in man:
        img = Image.open(out / m["path"])
        assert img.size == (64, 64) and img.mode == "RGB"
        assert m["identity"] == truth[Path(m["source"].split(":", 1)[1]).name]
    # identity-disjoint splits, both present, linked identities together
    split_of = {}
    for m in man:
        assert split_of.setdefault(m["identity"], m["split"]) == m["split"]
    assert set(split_of.values()) == {"train", "test"}
    assert split_of[ida] == split_of[idb]
    assert report["splits"]["mode"] == "pairs"
    assert (out / "pairs.csv").read_text().count("\n") == 3
    # the dataset reads it back
    ds = ManifestFaceDataset(out, split="train")
    assert ds[0]["image"].shape == (3, 64, 64) and ds.n_identities == sum(v == "train" for v in split_of.values())
    # a second run (in-process: same code as the CLI) redoes nothing and writes the same manifest
    before = (out / "manifest.csv").read_text()
    lfw = _script("prepare_lfw")
    assert lfw.main(["--src", str(tmp_path / "src"), "--out", str(out), "--size", "64", "--quiet", "--test-frac", "0.25"]) == 0
    assert json.loads((out / "report.json").read_text())["this_run"]["processed"] == 0
    assert (out / "manifest.csv").read_text() == before
    # other settings in the same folder are refused with a message
    assert lfw.main(["--src", str(tmp_path / "src"), "--out", str(out), "--size", "32", "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err


def _bad_files_folder(root: Path) -> dict[str, str]:
    """CASIA layout (folder per identity) with good faces and every kind of bad file.

    Returns {file key: expected outcome} with outcome "ok", a skip reason, or "ok+<conversion>".
    """
    by_id: dict[str, list[str]] = {}
    for f, i in _labels():
        by_id.setdefault(i, []).append(f)
    ids = [i for i in sorted(by_id) if len(by_id[i]) >= 3][:3]
    expect = {}
    for n, ident in enumerate(ids):
        (root / ident).mkdir(parents=True)
        for f in sorted(by_id[ident])[:2]:
            shutil.copy(LFW / "images" / f, root / ident / f)
            expect[f"{ident}/{f}"] = "ok"
    a, b = ids[0], ids[1]
    face = Image.open(LFW / "images" / sorted(by_id[a])[0]).convert("RGB")
    data = (LFW / "images" / sorted(by_id[b])[1]).read_bytes()
    (root / a / "truncated.jpg").write_bytes(data[: len(data) // 3])
    expect[f"{a}/truncated.jpg"] = "unreadable"
    rgba = face.convert("RGBA")
    alpha = np.full((face.height, face.width), 255, np.uint8)
    alpha[:10] = 0  # transparent top band
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(root / a / "alpha.png")
    expect[f"{a}/alpha.png"] = "ok+converted_from_alpha"
    face.convert("L").save(root / b / "gray.jpg", quality=95)
    expect[f"{b}/gray.jpg"] = "ok+converted_from_grayscale"
    (root / b / "notes.jpg").write_text("this is not an image\n")
    expect[f"{b}/notes.jpg"] = "not_an_image"
    Image.new("RGB", (120, 120), (70, 130, 180)).save(root / b / "flat.png")
    expect[f"{b}/flat.png"] = "no_face"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(root / b / "noise.png")
    expect[f"{b}/noise.png"] = "no_face"
    Image.new("RGB", (8, 8)).save(root / b / "tiny.png")
    expect[f"{b}/tiny.png"] = "too_small"
    (root / "README.txt").write_text("not an image by name: ignored, not counted as skipped")
    (root / "stray.jpg").write_bytes(data)  # no identity folder
    expect["stray.jpg"] = "no_identity"
    return expect


@needs_lfw
def test_bad_files_are_reported_and_skipped(tmp_path, capsys):
    src = tmp_path / "casia"
    expect = _bad_files_folder(src)
    out = tmp_path / "out"
    rc = _script("prepare_casia").main(["--src", str(src), "--out", str(out), "--quiet", "--size", "48"])
    assert rc == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    journal = {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        rec = json.loads(line)
        journal[rec["key"]] = rec
    for key, want in expect.items():
        rec = journal[key]
        if want.startswith("ok"):
            assert rec["status"] == "kept", (key, rec)
            if "+" in want:
                assert want.split("+")[1] in rec["notes"], (key, rec)
        else:
            assert rec["status"] == "skipped" and rec["reason"] == want, (key, rec)
    assert report["skipped"] == {"no_face": 2, "no_identity": 1, "not_an_image": 1, "too_small": 1, "unreadable": 1}
    assert report["converted"]["converted_from_alpha"] == 1
    assert report["converted"]["converted_from_grayscale"] == 1
    assert report["n_ignored_other_files"] == 1
    assert report["n_kept"] == 8
    for reason in ("no_face", "unreadable", "not_an_image", "converted_from_grayscale", "converted_from_alpha"):
        assert reason in printed
    man = _manifest(out)
    assert len(man) == 8 and {m["identity"] for m in man} <= {k.split("/")[0] for k in expect}
    assert all(Image.open(out / m["path"]).size == (48, 48) for m in man)


@needs_lfw
def test_resume_after_interruption(tmp_path):
    _lfw_subset(tmp_path / "src", n_ids=3, per_id=4)  # 12 images
    out = tmp_path / "out"
    lfw = _script("prepare_lfw")
    args = ["--src", str(tmp_path / "src"), "--out", str(out), "--quiet", "--no-pairs"]
    # "interrupted" after 7 files: journal and images exist, no manifest yet
    assert lfw.main(args + ["--max-new", "7"]) == 3
    assert not (out / "manifest.csv").exists()
    rep = json.loads((out / "report.json").read_text())
    assert rep["complete"] is False and rep["this_run"]["processed"] == 7
    recs = [json.loads(l) for l in (out / "journal.jsonl").read_text().splitlines()]
    kept = [r for r in recs if r["status"] == "kept"]
    assert len(recs) == 7 and len(kept) >= 6
    # a crash mid-line, a lost output image, a leftover temp file
    with open(out / "journal.jsonl", "a") as f:
        f.write('{"key": "half a li')
    (out / kept[0]["path"]).unlink()
    (out / Path(kept[1]["path"]).parent / ".x.png.abc.tmp").write_bytes(b"junk")
    old = {r["path"]: os.stat(out / r["path"]).st_mtime_ns for r in kept[1:]}
    assert lfw.main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["complete"] is True
    assert rep["this_run"]["processed"] == 12 - 7 + 1  # the rest, plus the lost image
    assert rep["this_run"]["reused_from_journal"] == 6
    assert (out / kept[0]["path"]).is_file()
    for p, t in old.items():
        assert os.stat(out / p).st_mtime_ns == t, f"{p} was redone"
    assert not list(out.rglob("*.tmp"))
    assert len(_manifest(out)) == rep["n_kept"] >= 11


@needs_lfw
def test_archive_sources_folder_per_identity(tmp_path):
    """A .tgz and a .zip in the official LFW layout (lfw/<Name>/<Name>_NNNN.jpg) give the same manifest."""
    rows = _lfw_subset(tmp_path / "flat", n_ids=2, per_id=3)
    tgz = tmp_path / "lfw.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        for f, ident in rows:
            t.add(tmp_path / "flat" / f, arcname=f"lfw/{ident}/{f}")
    import zipfile

    zp = tmp_path / "lfw.zip"
    with zipfile.ZipFile(zp, "w") as z:
        for f, ident in rows:
            z.write(tmp_path / "flat" / f, arcname=f"lfw/{ident}/{f}")
    lfw = _script("prepare_lfw")
    mans = []
    for arch in (tgz, zp):
        out = tmp_path / f"out_{arch.suffix}"
        assert lfw.main(["--src", str(arch), "--out", str(out), "--quiet", "--size", "32"]) == 0
        man = _manifest(out)
        assert {m["identity"] for m in man} == {i for _, i in rows}
        mans.append([(m["path"], m["identity"], m["split"]) for m in man])
    assert mans[0] == mans[1]


# --------------------------------------------------------------------------- units (no LFW needed)


def test_decode_image_reasons():
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(buf, "JPEG")
    good = buf.getvalue()
    im, reason, notes, _ = decode_image(good)
    assert im is not None and reason is None and notes == []
    assert decode_image(good[: len(good) // 2])[1] == "unreadable"
    assert decode_image(b"hello, not an image")[1] == "not_an_image"
    assert decode_image(b"")[1] == "not_an_image"
    for mode, note in (("L", "converted_from_grayscale"), ("RGBA", "converted_from_alpha"),
                       ("P", "converted_from_palette"), ("CMYK", "converted_from_cmyk"),
                       ("LA", "converted_from_alpha")):
        buf = io.BytesIO()
        Image.new(mode, (30, 30)).save(buf, "TIFF" if mode == "CMYK" else "PNG")
        im, reason, notes, _ = decode_image(buf.getvalue())
        assert im is not None and im.mode == "RGB" and note in notes, (mode, notes)
    buf = io.BytesIO()
    Image.fromarray(np.full((30, 30), 65535, np.uint16)).save(buf, "PNG")
    im, _, notes, _ = decode_image(buf.getvalue())
    assert "converted_from_grayscale" in notes and np.asarray(im).min() == 255


def test_identity_resolvers(tmp_path):
    lfw = LFWIdentity({"x.jpg": "Labelled_Name"})
    assert lfw("images/x.jpg") == "Labelled_Name"
    assert lfw("images/George_W_Bush_0012.jpg") == "George_W_Bush"
    assert lfw("lfw/Jo_Doe/Jo_Doe_0001.jpg") == "Jo_Doe"
    assert lfw("odd.jpg") is None
    assert folder_identity("CASIA-WebFace/0000045/001.jpg") == "0000045"
    assert folder_identity("001.jpg") is None
    ident = tmp_path / "identity_CelebA.txt"
    ident.write_text("000001.jpg 2880\n000002.jpg 2937\n")
    mapping = tmp_path / "map.txt"
    mapping.write_text("idx orig_idx orig_file\n0 1 000001.jpg\n1 2 000002.jpg\n")
    hq = CelebAHQIdentity(ident, mapping)
    assert hq("CelebA-HQ-img/0.jpg") == "2880" and hq("00001.png") == "2937" and hq("7.jpg") == "-1"
    assert CelebAHQIdentity(ident)("000002.jpg") == "2937"
    assert CelebAHQIdentity()("0.jpg") == "-1"


def test_splits_deterministic_and_pair_groups():
    ids = [f"id{i:03d}" for i in range(100)]
    s1 = assign_splits(ids, 0.2, seed=1)
    assert s1 == assign_splits(list(reversed(ids)), 0.2, seed=1)
    assert sum(v == "test" for v in s1.values()) == 20
    assert s1 != assign_splits(ids, 0.2, seed=2)
    pairs = [("a_1.jpg", "b_1.jpg", 0), ("b_1.jpg", "c_1.jpg", 0), ("d_1.jpg", "d_2.jpg", 1)]
    ident = {"a_1.jpg": "a", "b_1.jpg": "b", "c_1.jpg": "c", "d_1.jpg": "d", "d_2.jpg": "d"}
    groups = pair_groups(pairs, ident)
    assert sorted(groups) == [["a", "b", "c"], ["d"]]
    for seed in range(5):
        s = assign_splits(["a", "b", "c", "d", "e", "f"], 0.3, seed, groups, mode="pairs")
        assert s["a"] == s["b"] == s["c"]
        assert s["e"] == s["f"] == "train"  # in no pair
        assert "test" in s.values()
    s = assign_splits(["a", "b", "c", "d", "e"], 0.2, 0, groups, mode="pairs-all")
    assert [s[i] for i in "abcde"] == ["test"] * 4 + ["train"]


def test_read_pairs_txt_and_csv():
    txt = "1\t2\nAbel_Pacheco\t1\t4\nAl_Gore\t2\tJohn_Doe\t3\n"
    assert read_pairs(txt.encode()) == [
        ("Abel_Pacheco_0001.jpg", "Abel_Pacheco_0004.jpg", 1),
        ("Al_Gore_0002.jpg", "John_Doe_0003.jpg", 0),
    ]
    assert read_pairs(b"file_a,file_b,same\na.jpg,b.jpg,0\n") == [("a.jpg", "b.jpg", 0)]


def test_download_without_network_fails_clearly(tmp_path):
    with pytest.raises(DownloadError, match="could not download .*--src"):
        download_file("http://127.0.0.1:9/lfw.tgz", tmp_path / "lfw.tgz", md5="0" * 32, timeout=5, progress=False)
    assert not list(tmp_path.iterdir())


def test_scripts_import_without_side_effects_and_need_src(tmp_path, capsys):
    for name in ("prepare_lfw", "prepare_celebahq", "prepare_casia"):
        mod = _script(name)
        assert mod.main(["--out", str(tmp_path / name), "--quiet"]) == 2
        assert "--src" in capsys.readouterr().err
    assert _script("prepare_casia").main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@needs_lfw
def test_celebahq_identity_mapping_and_unknown(tmp_path):
    """CelebA-HQ names (0.jpg, 1.jpg, ...) -> mapping -> identity_CelebA.txt; unmapped -> -1."""
    files = sorted((LFW / "images").glob("*.jpg"))[:3]
    src = tmp_path / "hq"
    src.mkdir()
    for k, f in enumerate(files):
        shutil.copy(f, src / f"{k}.jpg")
    (tmp_path / "identity_CelebA.txt").write_text("000011.jpg 7\n000012.jpg 7\n")
    (tmp_path / "map.txt").write_text("idx orig_idx orig_file\n0 10 000011.jpg\n1 11 000012.jpg\n")
    hq = _script("prepare_celebahq")
    out = tmp_path / "out"
    assert hq.main(["--src", str(src), "--out", str(out), "--quiet", "--size", "32",
                    "--identity-file", str(tmp_path / "identity_CelebA.txt"),
                    "--mapping-file", str(tmp_path / "map.txt")]) == 0
    ids = {Path(m["source"].split(":", 1)[1]).name: m["identity"] for m in _manifest(out)}
    assert ids == {"0.jpg": "7", "1.jpg": "7", "2.jpg": "-1"}
    ds = ManifestFaceDataset(out)
    assert ds.identity_names == ["7"] and sorted(ds.labels.tolist()) == [-1, 0, 0]
