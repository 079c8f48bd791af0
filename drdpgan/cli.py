"""Command line for people with their own photos: ``python -m drdpgan anonymize|recover IN OUT``.

::

    python -m drdpgan keygen my.key [--overwrite]     (a new 256-bit key file, mode 0600)
    python -m drdpgan anonymize photos/ anonymized/ --key-file my.key [--seed S] [--checkpoint C] [--aligned] [--paste-back]
    python -m drdpgan recover anonymized/ recovered/ --key-file my.key [--checkpoint C] [--render-wrong-key]
    key options: --key-file K | --passphrase-env VAR (the passphrase in environment variable VAR) | --ask-passphrase
    common options: [--overwrite] [--report report.json] [--debug]

A keyed model (``carrier_bits`` set, as the shipped ones) seals each face's identity code with the key
(:mod:`drdpgan.password`: AES-CTR, an HMAC tag, BCH error correction) before hiding it, and
``recover`` opens it with the same key: a wrong key, an image that was never anonymized, or one
damaged beyond what the code corrects writes no output for that file, says which it is, and the exit
status is 1. ``--render-wrong-key`` (teaching) still renders what a wrong key decodes to. A model in
the paper's layout hides the identity code itself and takes no key: anyone with the model recovers.

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

Photos are read by :func:`drdpgan.data.photos.read_photo` (EXIF orientation applied; 16-bit,
palette, transparent and CMYK images converted; first frame of an animation; bounded memory for
huge JPEGs). When MTCNN finds no face in a nearly square image, the whole image is used as an
aligned crop and the report says so; otherwise the message names ``--aligned``.

Every input that cannot be used (a folder, a broken link, not an image, too small, no face, ...) is
reported with its path and the reason, the others are still processed, and the exit status is 1
if any input was skipped. Finished outputs are kept: a rerun skips them (``--overwrite`` redoes
them), so an interrupted run resumes. Outputs are written atomically with the user's umask, and
an interrupt (Ctrl-C, SIGTERM) leaves no temporary file. Two inputs that differ only in their
extension (``face.jpg``, ``face.png``) get distinct outputs (``face_jpg_anon.png``,
``face_png_anon.png``). ``--paste-back`` also writes ``<name>_anon_full.png``: the original photo
with the anonymized face warped back into place through a feathered mask, for viewing and
sharing; ``recover`` reads the aligned ``<name>_anon.png``. ``--report`` writes a JSON list of
every input with its status, output and reason. User errors are messages; ``--debug`` shows the
traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.datasets import float_to_uint8, uint8_to_float
from .data.photos import PhotoError, read_photo

DEFAULT_PROFILE = "lfw"
#: Aspect ratios (width / height) of an image used whole as an aligned crop when no face is detected.
WHOLE_IMAGE_ASPECT = (0.8, 1.25)


class UsageError(Exception):
    """A problem with the command as a whole (arguments, checkpoint): a message, exit status 2."""


@dataclass
class FileResult:
    input: str
    status: str  # "written" | "done" (output already there) | "skipped"
    output: str | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def list_inputs(path: Path) -> list[Path]:
    """``path`` itself if it is a file; else the entries of the folder, sorted, hidden ones left out.

    Folders and links inside are listed too, so that each gets its own message instead of being
    skipped silently."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith("."))
    raise UsageError(f"{path}: no such file or folder")


def output_names(files: list[Path], in_root: Path, out: Path, suffix: str) -> dict[Path, Path]:
    """Output path of every input: ``<stem><suffix>.png`` in ``out``; inputs whose stems collide
    (``face.jpg``, ``face.png``) keep their extension in the name (``face_jpg<suffix>.png``)."""
    if in_root.is_file() and out.suffix.lower() == ".png":
        return {files[0]: out}
    stems = Counter(f.stem for f in files)
    names = {}
    for f in files:
        stem = f.stem if stems[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower() or 'noext'}"
        names[f] = out / f"{stem}{suffix}.png"
    return names


def to_tensor(img, size: int) -> torch.Tensor:
    """PIL RGB -> (1, 3, size, size) in [-1, 1] (bicubic resize when needed)."""
    from PIL import Image

    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return uint8_to_float(torch.from_numpy(np.array(img, np.uint8)).permute(2, 0, 1)[None].contiguous())


def to_image(x: torch.Tensor):
    """(3, H, W) in [-1, 1] -> an 8-bit PIL RGB image."""
    from PIL import Image

    return Image.fromarray(float_to_uint8(x.detach().float()).permute(1, 2, 0).numpy())


def save_png(img, path: Path) -> Path:
    """A PIL image -> a PNG at ``path``, written atomically."""
    from .repro import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def load_checkpoint(checkpoint: str | None, profile: str = DEFAULT_PROFILE):
    """The DR-DPGAN to use: from ``checkpoint``, else the profile's trained model (built when missing)."""
    from .checkpoints import CheckpointError, load_model

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise UsageError(f"{checkpoint}: no such checkpoint file")
        try:
            model, info = load_model(checkpoint)
        except (CheckpointError, KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
            raise UsageError(f"{checkpoint}: not a DR-DPGAN model.pt this version can load ({e})") from e
        if info["kind"] != "drdpgan":
            raise UsageError(f"{checkpoint}: a {info['kind']} checkpoint, not a DR-DPGAN model.pt")
        return model
    from .experiment import trained_drdpgan

    print(f"[drdpgan] no --checkpoint: using the {profile!r} profile's trained model "
          f"(artifacts/{profile}/drdpgan-*/model.pt); if it is not there yet it is trained now, "
          f"which runs notebooks 01-04 and 09 of that profile and takes a long time on a CPU",
          file=sys.stderr)
    return trained_drdpgan(profile).model


def _run(files: list[Path], outputs: dict[Path, Path], handle, overwrite: bool, debug: bool,
         desc: str) -> list[FileResult]:
    """Call ``handle(src, dst) -> notes`` for every input; one :class:`FileResult` each."""
    from tqdm.auto import tqdm

    results = []
    for f in tqdm(files, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False):
        dst = outputs[f]
        if dst.exists() and not overwrite:
            results.append(FileResult(str(f), "done", str(dst), "output exists (use --overwrite to redo)"))
            continue
        try:
            notes = handle(f, dst) or []
            results.append(FileResult(str(f), "written", str(dst), notes=notes))
            for n in notes:
                print(f"[drdpgan] {f}: {n}", file=sys.stderr)
        except PhotoError as e:
            results.append(FileResult(str(f), "skipped", reason=str(e)))
            print(f"[drdpgan] skipped {e}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 -- one bad input must not abort the batch
            if debug:
                traceback.print_exc()
            reason = f"{f}: failed ({type(e).__name__}: {e})"
            results.append(FileResult(str(f), "skipped", reason=reason))
            print(f"[drdpgan] skipped {reason}" + ("" if debug else "; --debug shows the traceback"), file=sys.stderr)
    return results


def _find_face(aligner, img, f: Path):
    """The aligned face of ``img`` and notes; the whole image when no face is found and it is nearly
    square; :class:`PhotoError` otherwise."""
    try:
        face, info = aligner.align(img)
    except Exception as e:  # noqa: BLE001 -- MTCNN raises on degenerate shapes
        raise PhotoError(f"{f}: face detection failed on this {img.size[0]}x{img.size[1]} image ({e}); "
                         f"if it is an aligned face crop, use --aligned") from None
    if face is not None:
        return face, info, []
    aspect = img.size[0] / img.size[1]
    if WHOLE_IMAGE_ASPECT[0] <= aspect <= WHOLE_IMAGE_ASPECT[1]:
        return img, None, ["no face detected: the whole image was used as an aligned face crop "
                           "(--aligned does this without trying detection)"]
    raise PhotoError(f"{f}: no face found (if it is a tight face crop, rerun with --aligned)")


class PasswordRejected(PhotoError):
    """An anonymized image whose password does not open: ``reason`` "wrong_key" or "unreadable"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def check_key(model, key) -> None:
    """A keyed model needs a key; a model in the paper's layout has none to take."""
    if model.cfg.keyed and key is None:
        raise UsageError("this model seals the hidden password with a key: give --key-file K (make one with "
                         "`python -m drdpgan keygen K`), --passphrase-env VAR or --ask-passphrase")
    if not model.cfg.keyed and key is not None:
        raise UsageError("this model hides the identity code itself (the paper's layout) and takes no key; "
                         "anyone who has the model can recover its faces")


def open_carrier(model, bits: torch.Tensor, key, render_wrong_key: bool = False) -> tuple[torch.Tensor, list[str]]:
    """The identity code (1, code_bits) in the carrier ``bits`` (1, hidden_bits) E_P read, and notes;
    :class:`PasswordRejected` when it does not open (``render_wrong_key``: a wrong key's decryption is
    returned with a note instead, for teaching)."""
    from .password import PasswordError, open_payload

    layout = model.cfg.payload_layout()
    try:
        code, n_fixed = open_payload(bits[0].numpy().astype(np.uint8), key, layout)
        notes = [f"{n_fixed} bit error(s) corrected"] if n_fixed else []
    except PasswordError as e:
        if not (render_wrong_key and e.reason == "wrong_key"):
            raise PasswordRejected(e.reason, str(e)) from None
        code, _ = open_payload(bits[0].numpy().astype(np.uint8), key, layout, verify=False)
        notes = ["WRONG KEY: rendered what this key decodes to (--render-wrong-key); it is not the original face"]
    return torch.tensor(code[None, :model.cfg.code_bits], dtype=torch.float32), notes


def anonymize_files(model, src: Path, out: Path, seed: int = 0, aligned: bool = False, paste_back: bool = False,
                    overwrite: bool = False, debug: bool = False, key=None) -> list[FileResult]:
    """Anonymize every image of ``src`` into ``out``; one :class:`FileResult` per input. A keyed model
    hides each face's identity code sealed with ``key`` (:func:`drdpgan.protocol.seal_carrier`)."""
    from .data.align import FaceAligner, paste_back as paste, similarity_matrix
    from .protocol import seal_carrier

    R = model.cfg.resolution
    aligner = None if aligned else FaceAligner(size=R)
    files = list_inputs(src)
    outputs = output_names(files, src, out, "_anon")

    def handle(f: Path, dst: Path) -> list[str]:
        photo, notes = read_photo(f)
        img, info = photo, None
        if aligner is not None:
            img, info, more = _find_face(aligner, photo, f)
            notes += more
        x = to_tensor(img, R)
        with torch.no_grad():
            a = model.anonymize(x, seed=seed, carrier=seal_carrier(model, x, key))  # fresh nonces
        face = to_image(a["images"][0])
        if paste_back and info is not None:
            m = similarity_matrix(info["landmarks"], R, aligner.margin)
            save_png(paste(photo, face, m), dst.with_name(dst.stem + "_full.png"))
            notes.append(f"photo with the face pasted back: {dst.stem}_full.png")
        save_png(face, dst)
        return notes

    return _run(files, outputs, handle, overwrite, debug, "anonymize")


def recover_files(model, src: Path, out: Path, overwrite: bool = False, debug: bool = False, key=None,
                  render_wrong_key: bool = False) -> list[FileResult]:
    """Recover every anonymized PNG of ``src`` into ``out``; one :class:`FileResult` per input. A keyed
    model's password is opened with ``key`` first (:func:`open_carrier`); a file whose password does not
    open is skipped with the reason and gets no output."""
    R = model.cfg.resolution
    files = list_inputs(src)
    outputs = output_names(files, src, out, "_rec")

    def handle(f: Path, dst: Path) -> list[str]:
        img, notes = read_photo(f)
        if img.size != (R, R):
            raise PhotoError(f"{f}: {img.size[0]}x{img.size[1]} px, but this model's anonymized faces are "
                             f"{R}x{R} (recover reads the <name>_anon.png files that anonymize wrote, unchanged)")
        x = to_tensor(img, R)
        with torch.no_grad():
            if model.cfg.keyed:
                bits = (model.extractor(x) >= 0).float()  # (1, hidden_bits), E_P (Sec. 3.4.2)
                try:
                    code, more = open_carrier(model, bits, key, render_wrong_key)
                except PasswordRejected as e:
                    raise PasswordRejected(e.reason, f"{f}: {e} -- no output written") from None
                notes += more
                r = model.recover(x, password=bits, code=code)
            else:
                r = model.recover(x)
        save_png(to_image(r["images"][0]), dst)
        return notes

    return _run(files, outputs, handle, overwrite, debug, "recover")


def keygen(path: Path, overwrite: bool = False) -> int:
    """``python -m drdpgan keygen K``: a new key file readable by its owner only."""
    from .password import write_key_file

    try:
        write_key_file(path, overwrite=overwrite)
    except (FileExistsError, OSError) as e:
        print(f"[drdpgan] {e}", file=sys.stderr)
        return 2
    print(f"[drdpgan] wrote a new 256-bit key to {path} (mode 0600). Keep it private and backed up: without it "
          "no face anonymized with it can be recovered.", file=sys.stderr)
    return 0


def resolve_key(args):
    """The key of ``--key-file``, ``--passphrase-env`` or ``--ask-passphrase`` (at most one), or None.
    A passphrase is never printed or stored."""
    import os

    from .password import key_file_is_private, key_from_passphrase, read_key_file

    given = [n for n in ("key_file", "passphrase_env", "ask_passphrase") if getattr(args, n, None)]
    if len(given) > 1:
        raise UsageError("give one of --key-file, --passphrase-env, --ask-passphrase")
    try:
        if args.key_file:
            key = read_key_file(args.key_file)
            if not key_file_is_private(args.key_file):
                print(f"[drdpgan] warning: {args.key_file} can be read by other users (chmod 600 it)", file=sys.stderr)
            return key
        if args.passphrase_env:
            if args.passphrase_env not in os.environ:
                raise UsageError(f"--passphrase-env {args.passphrase_env}: no such environment variable")
            return key_from_passphrase(os.environ[args.passphrase_env])
        if args.ask_passphrase:
            import getpass

            return key_from_passphrase(getpass.getpass("passphrase: "))
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    return None


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drdpgan", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("anonymize", help="detect, align and anonymize faces (t = 1)")
    a.add_argument("input", type=Path, help="an image file or a folder of images")
    a.add_argument("output", type=Path, help="output folder (or a .png path for one input file)")
    a.add_argument("--seed", type=int, default=0, help="noise seed of the fake identity (Alg. 1)")
    a.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: skip detection")
    a.add_argument("--paste-back", action="store_true",
                   help="also write <name>_anon_full.png: the photo with the anonymized face pasted back")
    r = sub.add_parser("recover", help="recover faces from anonymized PNGs (t = 0)")
    r.add_argument("input", type=Path, help="an anonymized PNG or a folder of them")
    r.add_argument("output", type=Path, help="output folder (or a .png path for one input file)")
    r.add_argument("--render-wrong-key", action="store_true",
                   help="teaching: render what a wrong key decodes to instead of refusing the file")
    k = sub.add_parser("keygen", help="write a new 256-bit key file (mode 0600) for the keyed password")
    k.add_argument("key_file", type=Path, help="where to write the key (refused if it exists)")
    k.add_argument("--overwrite", action="store_true", help="replace an existing key file")
    for p in (a, r):
        p.add_argument("--checkpoint", default=None, help="DR-DPGAN model.pt (default: the lfw profile's)")
        p.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists (default: skip)")
        p.add_argument("--report", type=Path, default=None, help="write a JSON report of every input here")
        p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
        p.add_argument("--key-file", type=Path, default=None, help="the key file (python -m drdpgan keygen K)")
        p.add_argument("--passphrase-env", metavar="VAR", default=None,
                       help="derive the key from the passphrase in environment variable VAR (scrypt)")
        p.add_argument("--ask-passphrase", action="store_true", help="prompt for the passphrase (not echoed)")
    args = ap.parse_args(argv)
    if args.cmd == "keygen":
        return keygen(args.key_file, args.overwrite)

    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # temporary files are removed on SIGTERM too
    results: list[FileResult] = []
    try:
        files = list_inputs(args.input)
        if args.input.is_file() and args.output.suffix and args.output.suffix.lower() != ".png":
            raise UsageError(f"{args.output}: outputs are PNG (lossless; JPEG would destroy the hidden password)")
        if args.input.is_dir() and args.output.is_file():
            raise UsageError(f"{args.output}: an existing file, but a folder of inputs needs an output folder")
        if not files:
            raise UsageError(f"{args.input}: no files to process")
        key = resolve_key(args)
        model = load_checkpoint(args.checkpoint)
        check_key(model, key)
        if args.cmd == "anonymize":
            results = anonymize_files(model, args.input, args.output, seed=args.seed, aligned=args.aligned,
                                      paste_back=args.paste_back, overwrite=args.overwrite, debug=args.debug, key=key)
        else:
            results = recover_files(model, args.input, args.output, overwrite=args.overwrite, debug=args.debug,
                                    key=key, render_wrong_key=args.render_wrong_key)
    except UsageError as e:
        print(f"[drdpgan] {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("[drdpgan] interrupted: finished outputs are kept, no partial file is left; rerun the same "
              "command to continue", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    n = {s: sum(r.status == s for r in results) for s in ("written", "done", "skipped")}
    print(f"[drdpgan] {args.cmd}: {n['written']} written to {args.output}, {n['done']} already done, "
          f"{n['skipped']} skipped", file=sys.stderr)
    if args.report:
        from .repro import atomic_write_json

        atomic_write_json(args.report, [asdict(r) for r in results])
    return 1 if n["skipped"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
