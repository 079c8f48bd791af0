"""Command line for people with their own photos: ``python -m drdpgan anonymize|recover IN OUT``.

::

    python -m drdpgan anonymize photos/ anonymized/ [--seed S] [--checkpoint C] [--aligned]
    python -m drdpgan recover anonymized/ recovered/ [--checkpoint C]

``IN`` is an image file or a folder (its image files, sorted; not recursive). ``OUT`` is a folder
(created), or, when ``IN`` is one file, a ``.png`` file path.

* ``anonymize``: every photo is searched for a face with MTCNN (weights inside facenet-pytorch, no
  download) and aligned like the training data (5-point similarity transform to the ArcFace
  template at the model's resolution; ``--aligned`` skips this for crops that are aligned already),
  then anonymized (Sec. 3.1, t = 1). The password hidden in the result survives only lossless
  storage, so outputs are always PNG.
* ``recover``: reads anonymized PNGs written by ``anonymize`` (the model's resolution, no
  alignment) and recovers them (t = 0). It needs nothing else: the identity comes back from the
  password hidden in the pixels.

``--checkpoint`` is a DR-DPGAN ``model.pt`` (:func:`drdpgan.checkpoints.save_drdpgan`, written by
notebook 09 into ``artifacts/<profile>/drdpgan-<hash>/``). Without it the ``lfw`` profile's trained
model is used: found in the cache, or trained first (notebooks 01-04 and 09 of that profile, which
take long on a CPU; a message says so).

A file that cannot be read, is not an image, or has no face is reported on stderr with its path and
the reason, and the others are still processed; the exit status is 1 if any file failed. Every output
is written atomically (a temporary file renamed into place): never half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
DEFAULT_PROFILE = "lfw"


class InputError(Exception):
    """One input file that cannot be processed (message names the file and the problem)."""


def list_inputs(path: Path) -> list[Path]:
    """``path`` itself if it is a file; else the files in the folder (sorted; hidden files skipped).

    Files of any suffix are returned, so that a stray non-image gets its own clear message."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    raise FileNotFoundError(f"{path}: no such file or folder")


def output_path(src: Path, in_root: Path, out: Path, suffix: str) -> Path:
    if in_root.is_file() and out.suffix.lower() == ".png":
        return out
    return out / f"{src.stem}{suffix}.png"


def read_image(path: Path):
    """The image at ``path`` as an RGB PIL image; :class:`InputError` when it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (no image format recognised)") from None
    except OSError as e:
        raise InputError(f"{path}: unreadable image ({e})") from None


def to_tensor(img, size: int) -> torch.Tensor:
    """PIL RGB -> (1, 3, size, size) in [-1, 1] (bicubic resize when needed)."""
    from PIL import Image

    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    a = np.asarray(img, np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def save_png(x: torch.Tensor, path: Path) -> Path:
    """(3, H, W) in [-1, 1] -> an 8-bit PNG at ``path``, written atomically."""
    from PIL import Image

    from .repro import atomic_path

    a = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(a).save(tmp, format="PNG")
    return path


def load_checkpoint(checkpoint: str | None, profile: str = DEFAULT_PROFILE):
    """The DR-DPGAN to use: from ``checkpoint``, else the profile's trained model (built when missing)."""
    from .checkpoints import load_model

    if checkpoint:
        model, info = load_model(checkpoint)
        if info["kind"] != "drdpgan":
            raise SystemExit(f"{checkpoint}: a {info['kind']} checkpoint, not a DR-DPGAN model.pt")
        return model
    from .experiment import trained_drdpgan

    print(f"[drdpgan] no --checkpoint: using the {profile!r} profile's trained model "
          f"(artifacts/{profile}/drdpgan-*/model.pt); if it is not there yet it is trained now, "
          f"which runs notebooks 01-04 and 09 of that profile and takes a long time on a CPU",
          file=sys.stderr)
    return trained_drdpgan(profile).model


def _process(files: Iterable[Path], handle, errors: list[str]) -> int:
    done = 0
    for f in files:
        try:
            handle(f)
            done += 1
        except InputError as e:
            errors.append(str(e))
            print(f"[drdpgan] skipped {e}", file=sys.stderr)
    return done


def anonymize_files(model, src: Path, out: Path, seed: int = 0, aligned: bool = False) -> tuple[int, list[str]]:
    """Anonymize every image of ``src`` into ``out``; returns (number written, error messages)."""
    R = model.cfg.resolution
    aligner = None
    if not aligned:
        from .data.align import FaceAligner

        aligner = FaceAligner(size=R)
    errors: list[str] = []

    def handle(f: Path) -> None:
        img = read_image(f)
        if aligner is not None:
            face, info = aligner.align(img)
            if face is None:
                raise InputError(f"{f}: no face found")
            img = face
        with torch.no_grad():
            a = model.anonymize(to_tensor(img, R), seed=seed)
        save_png(a["images"][0], output_path(f, src, out, "_anon"))

    n = _process(list_inputs(src), handle, errors)
    return n, errors


def recover_files(model, src: Path, out: Path) -> tuple[int, list[str]]:
    """Recover every anonymized PNG of ``src`` into ``out``; returns (number written, error messages)."""
    R = model.cfg.resolution
    errors: list[str] = []

    def handle(f: Path) -> None:
        img = read_image(f)
        if img.size != (R, R):
            raise InputError(f"{f}: {img.size[0]}x{img.size[1]} px, but this model's anonymized faces are "
                             f"{R}x{R} (recover reads the PNGs that anonymize wrote, unchanged)")
        with torch.no_grad():
            r = model.recover(to_tensor(img, R))
        save_png(r["images"][0], output_path(f, src, out, "_rec"))

    n = _process(list_inputs(src), handle, errors)
    return n, errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("anonymize", help="detect, align and anonymize faces (t = 1)")
    a.add_argument("input", type=Path, help="an image file or a folder of images")
    a.add_argument("output", type=Path, help="output folder (or a .png path for one input file)")
    a.add_argument("--seed", type=int, default=0, help="noise seed of the fake identity (Alg. 1)")
    a.add_argument("--checkpoint", default=None, help="DR-DPGAN model.pt (default: the lfw profile's)")
    a.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: skip detection")
    r = sub.add_parser("recover", help="recover faces from anonymized PNGs (t = 0)")
    r.add_argument("input", type=Path, help="an anonymized PNG or a folder of them")
    r.add_argument("output", type=Path, help="output folder (or a .png path for one input file)")
    r.add_argument("--checkpoint", default=None, help="DR-DPGAN model.pt (default: the lfw profile's)")
    args = ap.parse_args(argv)

    try:
        files = list_inputs(args.input)
    except FileNotFoundError as e:
        print(f"[drdpgan] {e}", file=sys.stderr)
        return 2
    if args.input.is_file() and args.output.suffix and args.output.suffix.lower() != ".png":
        print(f"[drdpgan] {args.output}: outputs are PNG (lossless; JPEG would destroy the hidden password)",
              file=sys.stderr)
        return 2
    if not files:
        print(f"[drdpgan] {args.input}: no files to process", file=sys.stderr)
        return 2
    model = load_checkpoint(args.checkpoint)
    if args.cmd == "anonymize":
        n, errors = anonymize_files(model, args.input, args.output, seed=args.seed, aligned=args.aligned)
    else:
        n, errors = recover_files(model, args.input, args.output)
    print(f"[drdpgan] {args.cmd}: {n} written to {args.output}, {len(errors)} skipped", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
