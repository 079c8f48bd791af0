"""Reading people's own photos: whatever a camera, phone or editor wrote, as an 8-bit RGB image.

:func:`read_photo` applies the EXIF orientation (a phone photo stored sideways comes out upright),
converts 16-bit, palette, transparent, grey and CMYK images to 8-bit RGB correctly, takes the first
frame of an animated image (and says so), decodes large JPEGs at a reduced scale so memory stays
bounded, and refuses with a :class:`PhotoError` naming the file and the problem: a folder, a broken
or looping link, a file that is not an image, a truncated one, one too small to hold a face, or one
too large to decode.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Smallest side (px) an input may have: MTCNN's smallest face is 12 px, and nothing smaller holds one.
MIN_SIDE = 16
#: Largest image decoded at full size (pixels). A larger JPEG is decoded at 1/2, 1/4 or 1/8 scale
#: (libjpeg's DCT scaling) down to at most ``DRAFT_SIDE``; any other larger image is refused.
MAX_PIXELS = 40_000_000
DRAFT_SIDE = 2048


class PhotoError(Exception):
    """One input that cannot be used; the message names the file and the problem."""


def _check_path(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as e:
            raise PhotoError(f"{path}: broken or looping link ({e.strerror})") from None
    if path.is_dir():
        raise PhotoError(f"{path}: a folder, not an image (folders are not searched recursively)")
    if not path.exists():
        raise PhotoError(f"{path}: no such file")


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit and 32-bit grey scaled (not clipped), transparency
    composited on white, palette, grey and CMYK converted."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            full = 65535.0
        elif mode == "I":
            full = 65535.0 if a.max(initial=0) > 255 else 255.0
        else:  # float images: [0, 1] when they look like it, else 8-bit values
            full = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        g = np.clip(np.round(a / full * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def read_photo(path: str | os.PathLike) -> tuple[Image.Image, list[str]]:
    """The photo at ``path`` as an upright 8-bit RGB image, and notes on what was done to it."""
    path = Path(path)
    _check_path(path)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                n_frames = int(getattr(im, "n_frames", 1) or 1)
                if n_frames > 1:
                    im.seek(0)
                    notes.append(f"animated ({n_frames} frames): the first frame was used")
                w, h = im.size
                if w * h > MAX_PIXELS:
                    if im.format == "JPEG":
                        im.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
                        notes.append(f"{w}x{h} px JPEG decoded at {im.size[0]}x{im.size[1]} to bound memory")
                    else:
                        raise PhotoError(f"{path}: {w}x{h} px is more than the {MAX_PIXELS // 1_000_000} MP this "
                                         f"tool decodes; save a smaller copy (or a JPEG) first")
                im.load()
                orientation = im.getexif().get(0x0112, 1)
                upright = ImageOps.exif_transpose(im)
                if orientation not in (None, 1):
                    notes.append(f"EXIF orientation {orientation} applied")
                rgb = to_rgb8(upright)
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise PhotoError(f"{path}: not an image (no image format recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PhotoError(f"{path}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data, unreadable file
        raise PhotoError(f"{path}: unreadable image ({e})") from None
    if min(rgb.size) < MIN_SIDE:
        raise PhotoError(f"{path}: {rgb.size[0]}x{rgb.size[1]} px is too small to hold a face "
                         f"(at least {MIN_SIDE} px a side)")
    return rgb, notes
