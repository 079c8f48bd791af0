"""Preparing real face datasets: read a folder or archive, align every face, write a manifest.

The three scripts in ``data_scripts/`` (LFW, CelebA-HQ, CASIA-WebFace) are thin wrappers
around :func:`prepare_dataset`; they differ only in how a file's identity is found.

Output folder layout (``--out``)::

    images/<identity>/<stem>.png     aligned faces, size x size (``unknown/`` when identity is unknown)
    manifest.csv                     path,identity,split,source  (path relative to the output folder)
    pairs.csv                        (when verification pairs were given) path_a,path_b,same,split
    report.json                      counts kept / skipped / converted, with reasons; speed
    prepare_config.json              the settings; a later run with other settings is refused
    journal.jsonl                    one line per finished source file (the resume log)

Resuming: each aligned image is written atomically, then a line is appended to the journal.
A re-run reads the journal and only processes files that are not in it (or whose output image
went missing); ``manifest.csv``, ``pairs.csv`` and ``report.json`` are rebuilt from the journal
and written atomically at the end, so an interrupted run never leaves a manifest naming files
that do not exist.

Splits are identity-disjoint and depend only on the seed and the set of identity names kept
(not on processing order). ``split_mode``:

* ``"identity"``: a fraction ``test_frac`` of identities, drawn by seeded hash, is ``test``.
* ``"pairs"`` (LFW default when pairs are given): identities linked by a verification pair
  (same or different person) form connected groups that are never split; ``test`` is filled
  with whole groups (seeded order) until it holds ``test_frac`` of the identities, so every
  pair lies wholly inside one split and the test pairs involve only held-out identities.
  Identities in no pair go to ``train``. (In LFW's 10-fold pairs.txt the 4,281 identities form
  1,290 groups of at most 119 identities, so the fraction is met closely.)
* ``"pairs-all"``: every identity named in a pair is ``test``, the rest ``train``
  (with the standard LFW pairs that is nearly every identity).

Images of unknown identity (``-1``, e.g. CelebA-HQ without an identity file) are split per
image by the same seeded hash; identity-disjointness cannot be promised for them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from drdpgan.repro import atomic_write_bytes, atomic_write_json, atomic_write_text

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
UNKNOWN_IDENTITY = "-1"
MANIFEST_COLUMNS = ("path", "identity", "split", "source")

# Skip reasons (an image is not kept) and conversion notes (it is kept after converting).
SKIP_REASONS = ("not_an_image", "unreadable", "too_small", "no_face", "no_identity", "align_failed")
CONVERSIONS = (
    "converted_from_grayscale",
    "converted_from_alpha",
    "converted_from_palette",
    "converted_from_cmyk",
    "converted_from_high_bit_depth",
    "converted_from_other_mode",
    "exif_rotated",
    "first_frame_of_animation",
)


class PrepareError(RuntimeError):
    """A problem that stops the whole job (bad arguments, settings mismatch), never a bad image."""


# --------------------------------------------------------------------------- sources


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTS


def _hidden(key: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(key).parts)


class Source:
    """Image files of a folder, tar(.gz/.bz2/.xz) or zip, in sorted key order.

    ``files`` lists the image-named files; ``ignored`` the other files (not images by name, e.g.
    README, labels.csv). ``side_file(name)`` returns the bytes of e.g. ``labels.csv`` found at
    the root (or one level below, in an archive's top folder), or None.
    """

    def __init__(self, src: str | os.PathLike, exclude: Path | None = None):
        self.path = Path(src).expanduser()
        if not self.path.exists():
            raise PrepareError(f"--src {self.path}: no such file or folder")
        self._tar: tarfile.TarFile | None = None
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, Any] = {}
        keys: list[str] = []
        if self.path.is_dir():
            self.kind = "folder"
            excl = exclude.resolve() if exclude is not None else None
            for dirpath, dirnames, filenames in os.walk(self.path):
                d = Path(dirpath)
                if excl is not None and (d.resolve() == excl):
                    dirnames[:] = []
                    continue
                dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
                for fn in filenames:
                    if fn.startswith("."):
                        continue
                    keys.append((d / fn).relative_to(self.path).as_posix())
        elif is_archive(self.path):
            if self.path.name.lower().endswith(".zip"):
                self.kind = "zip"
                try:
                    self._zip = zipfile.ZipFile(self.path)
                except zipfile.BadZipFile as e:
                    raise PrepareError(f"--src {self.path}: not a readable zip archive ({e})") from e
                for info in self._zip.infolist():
                    if not info.is_dir():
                        keys.append(info.filename)
                        self._members[info.filename] = info
            else:
                self.kind = "tar"
                try:
                    self._tar = tarfile.open(self.path, "r:*")
                    members = self._tar.getmembers()
                except (tarfile.TarError, OSError, EOFError) as e:
                    raise PrepareError(f"--src {self.path}: not a readable tar archive ({e})") from e
                for m in members:
                    if m.isfile():
                        keys.append(m.name)
                        self._members[m.name] = m
        else:
            raise PrepareError(
                f"--src {self.path}: expected a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})"
            )
        keys = sorted(k for k in keys if not _hidden(k))
        self.files = [k for k in keys if _is_image_name(k)]
        self.ignored = [k for k in keys if not _is_image_name(k)]

    def read(self, key: str) -> bytes:
        if self.kind == "folder":
            return (self.path / key).read_bytes()
        if self.kind == "zip":
            assert self._zip is not None
            return self._zip.read(self._members[key])
        assert self._tar is not None
        f = self._tar.extractfile(self._members[key])
        if f is None:
            raise OSError(f"cannot extract {key}")
        return f.read()

    def read_order(self, keys: Sequence[str]) -> list[str]:
        """``keys`` in the order that reads the source fastest: archive order for a tar (a
        compressed tar cannot seek backwards without decompressing again from the start)."""
        if self.kind == "tar":
            return sorted(keys, key=lambda k: self._members[k].offset_data)
        return list(keys)

    def side_file(self, name: str) -> bytes | None:
        """``name`` at the source root, or in a single top-level folder of an archive."""
        if self.kind == "folder":
            p = self.path / name
            return p.read_bytes() if p.is_file() else None
        cands = [k for k in self.ignored if PurePosixPath(k).name == name and len(PurePosixPath(k).parts) <= 2]
        if not cands:
            return None
        return self.read(sorted(cands, key=len)[0])

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._zip is not None:
            self._zip.close()


# --------------------------------------------------------------------------- identities


_LFW_NAME = re.compile(r"^(.+)_(\d{4})$")


def _text(data: bytes | str | os.PathLike) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8-sig")
    return Path(data).read_text(encoding="utf-8-sig")


def read_labels_csv(data: bytes | str | os.PathLike) -> dict[str, str]:
    """``file,identity`` CSV -> {file basename: identity}."""
    rows = list(csv.DictReader(io.StringIO(_text(data))))
    if rows and not {"file", "identity"} <= set(rows[0]):
        raise PrepareError(f"labels file needs columns file,identity; found {sorted(rows[0])}")
    return {PurePosixPath(r["file"]).name: r["identity"].strip() for r in rows if r.get("file")}


class LFWIdentity:
    """LFW identity of a file: ``labels`` (basename -> name) when given, else the file name
    ``<Identity_Name>_<NNNN>.<ext>``, else the parent folder (``lfw/<Name>/<file>``)."""

    def __init__(self, labels: dict[str, str] | None = None):
        self.labels = labels or {}

    def __call__(self, key: str) -> str | None:
        p = PurePosixPath(key)
        if p.name in self.labels:
            return self.labels[p.name]
        m = _LFW_NAME.match(p.stem)
        if m:
            return m.group(1)
        if len(p.parts) >= 2:
            return p.parent.name
        return None


def folder_identity(key: str) -> str | None:
    """CASIA-WebFace layout: the identity is the name of the folder holding the file."""
    p = PurePosixPath(key)
    return p.parent.name if len(p.parts) >= 2 else None


class CelebAHQIdentity:
    """CelebA-HQ identity: ``identity_CelebA.txt`` lines ``<celeba file> <id>``; when a CelebA-HQ
    mapping (``CelebA-HQ-to-CelebA-mapping.txt``: ``idx orig_idx orig_file``) is given, an HQ
    image named ``<idx>.<ext>`` (e.g. ``0.jpg`` or ``00042.png``) is first mapped to its CelebA
    file. Without an identity file (or for files it does not name) identity is unknown, ``-1``."""

    def __init__(self, identity_file: str | os.PathLike | None = None, mapping_file: str | os.PathLike | None = None):
        self.identities: dict[str, str] = {}
        self.mapping: dict[int, str] = {}
        if identity_file is not None:
            for ln, line in enumerate(_text(identity_file).splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise PrepareError(f"{identity_file}:{ln}: expected '<file> <id>', got {line!r}")
                self.identities[parts[0]] = parts[1]
                self.identities.setdefault(PurePosixPath(parts[0]).stem, parts[1])
        if mapping_file is not None:
            for ln, line in enumerate(_text(mapping_file).splitlines(), 1):
                parts = line.split()
                if not parts or not parts[0].isdigit():
                    continue  # header "idx orig_idx orig_file"
                if len(parts) < 3:
                    raise PrepareError(f"{mapping_file}:{ln}: expected 'idx orig_idx orig_file', got {line!r}")
                self.mapping[int(parts[0])] = parts[2]

    def __call__(self, key: str) -> str:
        p = PurePosixPath(key)
        if self.mapping:
            if p.stem.isdigit() and int(p.stem) in self.mapping:
                orig = self.mapping[int(p.stem)]
                return self.identities.get(orig, self.identities.get(PurePosixPath(orig).stem, UNKNOWN_IDENTITY))
            return UNKNOWN_IDENTITY
        return self.identities.get(p.name, self.identities.get(p.stem, UNKNOWN_IDENTITY))


# --------------------------------------------------------------------------- pairs


def read_pairs(data: bytes | str | os.PathLike) -> list[tuple[str, str, int]]:
    """Verification pairs as ``(file_a, file_b, same)`` with file basenames.

    Accepts ``pairs.csv`` (``file_a,file_b,same``) or LFW's official ``pairs.txt`` (first line
    ``<folds> <n>`` or ``<n>``, then ``name i j`` for same and ``name1 i name2 j`` for different).
    """
    text = _text(data)
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    out: list[tuple[str, str, int]] = []
    if "," in first:
        for r in csv.DictReader(io.StringIO(text)):
            out.append((PurePosixPath(r["file_a"]).name, PurePosixPath(r["file_b"]).name, int(r["same"])))
        return out
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            out.append((f"{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}_{int(f[2]):04d}.jpg", 1))
        elif len(f) == 4:
            out.append((f"{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}_{int(f[3]):04d}.jpg", 0))
    return out


# --------------------------------------------------------------------------- splits


def _hkey(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8")).hexdigest()


def assign_splits(
    identities: Iterable[str],
    test_frac: float = 0.2,
    seed: int = 0,
    groups: Sequence[Iterable[str]] | None = None,
    mode: str = "identity",
) -> dict[str, str]:
    """Identity -> ``"train"``/``"test"``, deterministic in (seed, set of identities, groups).

    See the module docstring for ``mode``. ``groups`` are sets of identities that must share a
    split (connected components of the verification pairs).
    """
    ids = sorted(set(identities))
    if not 0.0 <= test_frac <= 1.0:
        raise PrepareError(f"test_frac must be in [0, 1], got {test_frac}")
    n_test = int(round(test_frac * len(ids)))
    if test_frac > 0 and len(ids) >= 2:
        n_test = min(max(n_test, 1), len(ids) - 1)
    split = {i: "train" for i in ids}
    idset = set(ids)
    if mode == "identity" or not groups:
        if mode != "identity" and not groups:
            mode = "identity"
        for i in sorted(ids, key=lambda i: _hkey(seed, i))[:n_test]:
            split[i] = "test"
        return split
    comps = [sorted(set(g) & idset) for g in groups]
    comps = [c for c in comps if c]
    if mode == "pairs-all":
        for c in comps:
            for i in c:
                split[i] = "test"
        return split
    if mode != "pairs":
        raise PrepareError(f"unknown split mode {mode!r} (identity, pairs, pairs-all)")
    taken = 0
    for c in sorted(comps, key=lambda c: _hkey(seed, c[0])):
        if taken >= n_test:
            break
        for i in c:
            split[i] = "test"
        taken += len(c)
    return split


def pair_groups(pairs: Sequence[tuple[str, str, int]], identity_of: dict[str, str]) -> list[list[str]]:
    """Connected components of identities linked by pairs (union-find over identity names)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ia, ib = identity_of.get(a), identity_of.get(b)
        if ia is None or ib is None:
            continue
        ra, rb = find(ia), find(ib)
        if ra != rb:
            parent[ra] = rb
    comps: dict[str, list[str]] = {}
    for x in list(parent):
        comps.setdefault(find(x), []).append(x)
    return [sorted(c) for c in comps.values()]


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes) -> tuple[Image.Image | None, str | None, list[str], str]:
    """Bytes -> (RGB image or None, skip reason or None, conversion notes, detail message).

    Never raises for bad data: unknown formats give ``not_an_image``; truncated or corrupt
    files give ``unreadable``. Grayscale, alpha (composited on white), palette, CMYK, 16-bit
    and other modes are converted to 8-bit RGB and noted; EXIF orientation is applied.
    """
    notes: list[str] = []
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return None, "not_an_image", notes, "not a recognised image format"
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skip, never a crash
        return None, "unreadable", notes, f"{type(e).__name__}: {e}"
    try:
        if getattr(im, "n_frames", 1) > 1:
            notes.append("first_frame_of_animation")
            im.seek(0)
        im.load()
        try:
            t = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a broken EXIF block is not worth a skip
            t = im
        if t is not im:
            if im.getexif().get(0x0112, 1) not in (1, None):
                notes.append("exif_rotated")
            im = t
        mode = im.mode
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
        if mode == "P":
            notes.append("converted_from_palette")
            im = im.convert("RGBA" if has_alpha else "RGB")
            mode = im.mode
        if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
            arr = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 255.0)
            if mode == "F" and arr.max() <= 1.0:
                hi = 1.0
            arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
            im = Image.fromarray(arr, "L")
            notes += ["converted_from_high_bit_depth", "converted_from_grayscale"]
            mode = "L"
        elif mode in ("L", "LA", "1", "La"):
            notes.append("converted_from_grayscale")
        elif mode == "CMYK":
            notes.append("converted_from_cmyk")
        elif mode not in ("RGB", "RGBA", "RGBa", "P"):
            notes.append("converted_from_other_mode")
        if has_alpha:
            notes.append("converted_from_alpha")
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba).convert("RGB")
        elif im.mode != "RGB":
            im = im.convert("RGB")
        return im, None, notes, ""
    except Exception as e:  # noqa: BLE001 - truncated / corrupt data
        return None, "unreadable", notes, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- main job


@dataclass
class PrepareConfig:
    dataset: str
    size: int = 64
    margin: float = 0.0
    border: str = "reflect"  # reflect | constant (black) where the crop leaves the photo
    image_format: str = "png"  # png | jpg (quality 95)
    seed: int = 0
    test_frac: float = 0.2
    split_mode: str = "identity"
    batch_size: int = 16
    device: str = "cpu"
    min_face_size: int = 20
    min_prob: float = 0.9
    limit: int | None = None  # only the first N image files (sorted by path)
    max_new: int | None = None  # stop after N newly processed files (rerun to continue)
    threads: int | None = 1  # torch CPU threads while aligning (1 is fastest on a busy 2-core laptop)

    # Settings that change the produced images: a resumed run must match them.
    def image_settings(self) -> dict:
        return {
            "dataset": self.dataset,
            "size": int(self.size),
            "margin": float(self.margin),
            "border": self.border,
            "image_format": self.image_format,
            "min_face_size": int(self.min_face_size),
            "min_prob": float(self.min_prob),
        }


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    s = _SAFE.sub("_", name).strip("._")
    return s or "_"


def _output_paths(keys: Sequence[str], identity_of: dict[str, str | None], ext: str) -> dict[str, str]:
    """``images/<identity>/<stem>.<ext>``; colliding names get a short hash of their key."""
    first: dict[str, str] = {}
    for k in keys:
        ident = identity_of.get(k)
        folder = "unknown" if ident in (None, UNKNOWN_IDENTITY) else safe_name(ident)
        first[k] = f"images/{folder}/{safe_name(PurePosixPath(k).stem)}"
    counts = Counter(first.values())
    out = {}
    for k, base in first.items():
        if counts[base] > 1:
            base = f"{base}_{hashlib.sha1(k.encode('utf-8')).hexdigest()[:8]}"
        out[k] = f"{base}.{ext}"
    return out


class _Lock:
    """``.prepare.lock`` in the output folder so two jobs never write the same folder."""

    def __init__(self, out: Path):
        self.path = out / ".prepare.lock"

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                    os.kill(pid, 0)
                    alive = pid != os.getpid()
                except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
                    alive = False
                if alive:
                    raise PrepareError(f"{self.path.parent} is being prepared by process {pid}; wait for it or remove {self.path}")
                self.path.unlink(missing_ok=True)  # stale lock of a killed run
        raise PrepareError(f"could not lock {self.path}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


class Journal:
    """Append-only JSON-lines log of finished files; the last record of a key wins."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict] = {}
        if path.exists():
            raw = path.read_bytes()
            end = raw.rfind(b"\n") + 1
            if end < len(raw):  # a line cut by a crash: drop it
                with open(path, "r+b") as f:
                    f.truncate(end)
                raw = raw[:end]
            for line in raw.decode("utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                    self.records[rec["key"]] = rec
                except (ValueError, KeyError, TypeError):
                    continue
        self._f = open(path, "a", encoding="utf-8")

    def append(self, rec: dict) -> None:
        self._f.write(json.dumps(rec, sort_keys=True) + "\n")
        self.records[rec["key"]] = rec

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self.sync()
        self._f.close()


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=6)
    else:
        img.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def prepare_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    config: PrepareConfig,
    identity_fn: Callable[[str], str | None],
    pairs: Sequence[tuple[str, str, int]] | None = None,
    aligner: Any = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Align every image of ``src`` into ``out``; returns the report (also ``out/report.json``).

    ``identity_fn(key)`` gives a file's identity name (None: skipped as ``no_identity``;
    ``"-1"``: kept with unknown identity). ``pairs`` (basenames) drive the ``pairs`` split
    modes and ``out/pairs.csv``. ``aligner`` defaults to a :class:`FaceAligner` (MTCNN).
    Resumable; see the module docstring. When ``config.max_new`` stops the job early the
    report has ``complete: False`` and no manifest is written.
    """
    if not 32 <= int(config.size) <= 256:
        raise PrepareError(f"--size must be in 32..256, got {config.size}")
    if config.image_format not in ("png", "jpg"):
        raise PrepareError(f"--format must be png or jpg, got {config.image_format}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with _Lock(out):
        cfg_path = out / "prepare_config.json"
        settings = config.image_settings()
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_text())
            except ValueError:
                old = None
            if old is not None and old.get("image_settings") != settings:
                raise PrepareError(
                    f"{out} was prepared with other settings {old.get('image_settings')}; now {settings}. "
                    "Use another --out, or --overwrite to start again."
                )
        atomic_write_json(cfg_path, {"image_settings": settings, "config": asdict(config), "src": str(src)})

        source = Source(src, exclude=out)
        try:
            keys = source.files[: config.limit] if config.limit else list(source.files)
            identity_of = {k: identity_fn(k) for k in keys}
            paths = _output_paths(keys, identity_of, config.image_format)
            for tmp in (out / "images").rglob(".*.tmp") if (out / "images").exists() else []:
                tmp.unlink(missing_ok=True)  # leftovers of a killed atomic write

            journal = Journal(out / "journal.jsonl")
            todo = []
            reused = 0
            for k in keys:
                rec = journal.records.get(k)
                fresh = rec is not None and rec.get("identity") == identity_of[k] and rec.get("path") == paths[k]
                if fresh and (rec["status"] == "skipped" or (out / rec["path"]).is_file()):
                    reused += 1
                else:
                    todo.append(k)
            todo = source.read_order(todo)
            if config.max_new is not None:
                stop_early = len(todo) > config.max_new
                todo = todo[: config.max_new]
            else:
                stop_early = False
            log(
                f"[prepare] {config.dataset}: {len(keys)} image files in {source.path} "
                f"({len(source.ignored)} other files ignored); {reused} done before, {len(todo)} to do"
            )
            if aligner is None and todo:
                from drdpgan.data.align import FaceAligner

                aligner = FaceAligner(
                    config.size, device=config.device, margin=config.margin, border=config.border,
                    min_face_size=config.min_face_size, min_prob=config.min_prob,
                )
            t_work = time.perf_counter()
            import torch

            old_threads = torch.get_num_threads()
            if config.threads:
                torch.set_num_threads(int(config.threads))
            try:
                bar = None
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=len(todo), desc=f"align {config.dataset}", unit="img", dynamic_ncols=True)
                for s in range(0, len(todo), max(1, config.batch_size)):
                    chunk = todo[s : s + config.batch_size]
                    decoded = []
                    for k in chunk:
                        ident = identity_of[k]
                        base = {"key": k, "identity": ident, "path": paths[k]}
                        if ident is None:
                            journal.append({**base, "status": "skipped", "reason": "no_identity", "notes": [],
                                            "detail": "identity could not be determined from labels or file name"})
                            continue
                        try:
                            data = source.read(k)
                        except Exception as e:  # noqa: BLE001
                            journal.append({**base, "status": "skipped", "reason": "unreadable", "notes": [],
                                            "detail": f"{type(e).__name__}: {e}"})
                            continue
                        img, reason, notes, detail = decode_image(data)
                        if img is None:
                            journal.append({**base, "status": "skipped", "reason": reason, "notes": notes, "detail": detail})
                        elif min(img.size) < max(16, config.min_face_size):
                            journal.append({**base, "status": "skipped", "reason": "too_small", "notes": notes,
                                            "detail": f"{img.size[0]}x{img.size[1]} px"})
                        else:
                            decoded.append((k, base, img, notes))
                    if decoded:
                        try:
                            results = aligner.align_batch([d[2] for d in decoded])
                        except Exception:  # noqa: BLE001 - retry one by one so one bad image cannot sink the batch
                            results = []
                            for d in decoded:
                                try:
                                    results.append(aligner.align(d[2]))
                                except Exception as e:  # noqa: BLE001
                                    results.append((None, {"reason": "align_failed", "detail": f"{type(e).__name__}: {e}"}))
                        for (k, base, _, notes), (aligned, info) in zip(decoded, results):
                            if aligned is None:
                                journal.append({**base, "status": "skipped", "reason": info.get("reason", "no_face"),
                                                "notes": notes, "detail": info.get("detail", "")})
                                continue
                            atomic_write_bytes(out / paths[k], _encode(aligned, config.image_format))
                            journal.append({**base, "status": "kept", "reason": "ok", "notes": notes,
                                            "prob": round(info.get("prob", float("nan")), 4), "n_faces": info.get("n_faces", 1)})
                    journal.sync()
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
            finally:
                journal.close()
                torch.set_num_threads(old_threads)
            work_s = time.perf_counter() - t_work

            report = _finish(out, config, keys, journal.records, identity_of, pairs, source, reused, len(todo),
                             work_s, time.perf_counter() - t_start, complete=not stop_early)
        finally:
            source.close()
    _print_summary(report, log)
    return report


def _finish(out, config, keys, records, identity_of, pairs, source, reused, processed, work_s, total_s, complete) -> dict:
    recs = [records[k] for k in keys if k in records]
    kept = [r for r in recs if r["status"] == "kept"]
    skipped = Counter(r["reason"] for r in recs if r["status"] == "skipped")
    converted = Counter(n for r in recs for n in r.get("notes", []) if r["status"] == "kept")
    converted_skipped = Counter(n for r in recs for n in r.get("notes", []) if r["status"] == "skipped")
    examples: dict[str, list[str]] = {}
    for r in recs:
        if r["status"] == "skipped" and len(examples.setdefault(r["reason"], [])) < 5:
            examples[r["reason"]].append(r["key"] + (f" ({r['detail']})" if r.get("detail") else ""))
    report: dict[str, Any] = {
        "dataset": config.dataset,
        "src": str(source.path),
        "complete": complete,
        "n_files": len(keys),
        "n_done": len(recs),
        "n_kept": len(kept),
        "n_skipped": int(sum(skipped.values())),
        "skipped": dict(sorted(skipped.items())),
        "skipped_examples": examples,
        "converted": dict(sorted(converted.items())),
        "converted_then_skipped": dict(sorted(converted_skipped.items())),
        "n_ignored_other_files": len(source.ignored),
        "ignored_examples": source.ignored[:5],
        "this_run": {
            "reused_from_journal": reused,
            "processed": processed,
            "seconds_aligning": round(work_s, 2),
            "seconds_total": round(total_s, 2),
            "images_per_s": round(processed / work_s, 2) if processed and work_s > 0 else None,
        },
        "settings": asdict(config),
    }
    if not complete:
        report["message"] = f"stopped after {processed} new files (max_new); run again to continue"
        atomic_write_json(out / "report.json", report)
        return report

    # identities and splits
    known = sorted({r["identity"] for r in kept if r["identity"] != UNKNOWN_IDENTITY})
    groups = None
    base_to_ident = {PurePosixPath(r["key"]).name: r["identity"] for r in kept}
    base_to_path = {PurePosixPath(r["key"]).name: r["path"] for r in kept}
    mode = config.split_mode
    if pairs and mode in ("pairs", "pairs-all"):
        groups = pair_groups(pairs, base_to_ident)
    elif mode in ("pairs", "pairs-all"):
        mode = "identity"
    split_of = assign_splits(known, config.test_frac, config.seed, groups, mode)

    def split_for(r: dict) -> str:
        if r["identity"] == UNKNOWN_IDENTITY:
            return "test" if int(_hkey(config.seed, r["path"])[:8], 16) / 0xFFFFFFFF < config.test_frac else "train"
        return split_of[r["identity"]]

    rows = sorted(
        ((r["path"], r["identity"], split_for(r), f"{config.dataset}:{r['key']}") for r in kept),
        key=lambda t: t[0],
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    w.writerows(rows)
    atomic_write_text(out / "manifest.csv", buf.getvalue())

    n_split = Counter(r[2] for r in rows)
    ids_split = Counter(split_of.values())
    report["n_identities"] = len(known)
    report["n_unknown_identity_images"] = sum(1 for r in kept if r["identity"] == UNKNOWN_IDENTITY)
    report["splits"] = {
        "mode": mode,
        "seed": config.seed,
        "test_frac": config.test_frac,
        "images": dict(sorted(n_split.items())),
        "identities": dict(sorted(ids_split.items())),
    }
    if pairs:
        prow = []
        for a, b, same in pairs:
            if a in base_to_path and b in base_to_path:
                ra, rb = base_to_path[a], base_to_path[b]
                sa, sb = split_of.get(base_to_ident[a], "train"), split_of.get(base_to_ident[b], "train")
                prow.append((ra, rb, int(same), sa if sa == sb else "mixed"))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(("path_a", "path_b", "same", "split"))
        w.writerows(prow)
        atomic_write_text(out / "pairs.csv", buf.getvalue())
        report["pairs"] = {
            "given": len(pairs),
            "both_kept": len(prow),
            "by_split": dict(sorted(Counter(p[3] for p in prow).items())),
            "same_in_test": sum(1 for p in prow if p[3] == "test" and p[2] == 1),
            "different_in_test": sum(1 for p in prow if p[3] == "test" and p[2] == 0),
        }
    atomic_write_json(out / "report.json", report)
    return report


def _print_summary(report: dict, log: Callable[[str], None]) -> None:
    tr = report["this_run"]
    speed = f", {tr['images_per_s']} img/s" if tr["images_per_s"] else ""
    log(
        f"[prepare] {report['dataset']}: kept {report['n_kept']} / {report['n_done']} files, "
        f"skipped {report['n_skipped']}; this run processed {tr['processed']} "
        f"(reused {tr['reused_from_journal']}) in {tr['seconds_aligning']} s{speed}"
    )
    for reason, n in report["skipped"].items():
        log(f"  skipped  {reason:<28s} {n}")
    for note, n in report["converted"].items():
        log(f"  kept but {note:<28s} {n}")
    if report["n_ignored_other_files"]:
        log(f"  ignored (not an image by name)   {report['n_ignored_other_files']}")
    if not report["complete"]:
        log(f"[prepare] {report['message']}")
        return
    sp = report["splits"]
    log(f"  identities {report['n_identities']}; split ({sp['mode']}, seed {sp['seed']}): images {sp['images']}, identities {sp['identities']}")
    if "pairs" in report:
        log(f"  pairs: {report['pairs']}")


# --------------------------------------------------------------------------- download


class DownloadError(RuntimeError):
    pass


def download_file(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (skipped when ``dest`` exists with the right checksum).

    Streams into ``dest.part`` and renames after the checksum matches. Raises
    :class:`DownloadError` with a readable message when the network is unreachable, the server
    answers with an error, or the checksum differs.
    """
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def check(path: Path) -> str | None:
        for algo, want in (("md5", md5), ("sha256", sha256)):
            if want:
                h = hashlib.new(algo)
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest().lower() != want.lower():
                    return f"{algo} {h.hexdigest()} != expected {want}"
        return None

    if dest.is_file() and check(dest) is None:
        return dest
    part = dest.with_name(dest.name + ".part")
    try:
        with requests.get(url, stream=True, timeout=timeout) as r:
            r.raise_for_status()
            total = int(r.headers.get("content-length", 0)) or None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}")
            with open(part, "wb") as f:
                for block in r.iter_content(1 << 20):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
            if bar is not None:
                bar.close()
    except requests.exceptions.RequestException as e:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url}: {type(e).__name__}: {e}. No network? Download it by hand "
            f"and pass the file or its extracted folder with --src."
        ) from e
    bad = check(part)
    if bad is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"checksum mismatch for {url}: {bad}")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- CLI helpers


def common_parser(description: str, dataset: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--src", help="folder or archive (.tgz/.tar/.tar.gz/.zip) holding the images")
    p.add_argument("--out", required=True, help="output folder (images/, manifest.csv, report.json)")
    p.add_argument("--size", type=int, default=64, help="output side in px (32..256)")
    p.add_argument("--margin", type=float, default=0.0, help="0 = tight ArcFace crop; >0 shrinks the face by 1/(1+margin)")
    p.add_argument("--border", choices=("reflect", "constant"), default="reflect",
                   help="fill where the aligned crop leaves the photo: mirror it, or black")
    p.add_argument("--format", dest="image_format", choices=("png", "jpg"), default="png")
    p.add_argument("--seed", type=int, default=0, help="seed of the identity-disjoint train/test split")
    p.add_argument("--test-frac", type=float, default=0.2, help="fraction of identities in the test split")
    p.add_argument("--batch-size", type=int, default=16, help="images per MTCNN batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--min-face-size", type=int, default=20, help="MTCNN minimum face size (px); larger is faster")
    p.add_argument("--min-prob", type=float, default=0.9, help="minimum MTCNN face probability")
    p.add_argument("--limit", type=int, default=None, help="only the first N image files (sorted by path)")
    p.add_argument("--max-new", type=int, default=None, help="stop after N newly processed files; rerun to continue")
    p.add_argument("--overwrite", action="store_true", help="delete previous results in --out first")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(dataset=dataset)
    return p


def config_from_args(args: argparse.Namespace, split_mode: str = "identity") -> PrepareConfig:
    return PrepareConfig(
        dataset=args.dataset, size=args.size, margin=args.margin, border=args.border, image_format=args.image_format,
        seed=args.seed, test_frac=args.test_frac, split_mode=split_mode, batch_size=args.batch_size,
        device=args.device, min_face_size=args.min_face_size, min_prob=args.min_prob,
        limit=args.limit, max_new=args.max_new, threads=args.threads or None,
    )


def clear_output(out: str | os.PathLike) -> None:
    """Remove what a previous prepare run wrote in ``out`` (only its own files)."""
    import shutil

    out = Path(out)
    if (out / "images").is_dir():
        shutil.rmtree(out / "images")
    for name in ("manifest.csv", "pairs.csv", "report.json", "prepare_config.json", "journal.jsonl"):
        (out / name).unlink(missing_ok=True)


def run_main(fn: Callable[[], int]) -> int:
    """Run a script body; bad-argument and download errors become a message and exit code 2."""
    try:
        return fn()
    except (PrepareError, DownloadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
