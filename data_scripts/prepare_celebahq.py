#!/usr/bin/env python
"""Align CelebA-HQ faces for drdpgan:
``python data_scripts/prepare_celebahq.py --src <CelebA-HQ images folder or archive> --out <folder>
[--identity-file identity_CelebA.txt [--mapping-file CelebA-HQ-to-CelebA-mapping.txt]]``.

Identities: ``--identity-file`` in CelebA's ``identity_CelebA.txt`` format (``000001.jpg 2880``
per line). CelebA-HQ images are named by their HQ index (``0.jpg`` .. ``29999.jpg``, or zero
padded); with ``--mapping-file`` (``idx orig_idx orig_file``, as shipped with CelebA-HQ /
CelebAMask-HQ) each index is mapped to its CelebA file and then to its identity. Without an
identity file, or for images it does not cover, the identity is unknown and written as ``-1``;
such images are split per image (seeded), so identity-disjointness is only guaranteed for
images with a known identity. Large images are scanned for faces on a reduced copy (<= 640 px)
and warped from the full-resolution original.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from drdpgan.data.prepare import (  # noqa: E402
    CelebAHQIdentity,
    PrepareError,
    clear_output,
    common_parser,
    config_from_args,
    prepare_dataset,
    run_main,
)


def main(argv: list[str] | None = None) -> int:
    p = common_parser("Detect, align and split CelebA-HQ faces.", "celebahq")
    p.add_argument("--identity-file", help="CelebA identity_CelebA.txt ('<file> <id>' per line)")
    p.add_argument("--mapping-file", help="CelebA-HQ-to-CelebA-mapping.txt ('idx orig_idx orig_file')")
    args = p.parse_args(argv)

    def body() -> int:
        if not args.src:
            raise PrepareError("give --src <CelebA-HQ images folder or archive>")
        if args.mapping_file and not args.identity_file:
            raise PrepareError("--mapping-file needs --identity-file (the mapping only leads to CelebA file names)")
        for opt in ("identity_file", "mapping_file"):
            f = getattr(args, opt)
            if f and not Path(f).is_file():
                raise PrepareError(f"--{opt.replace('_', '-')} {f}: no such file")
        if args.overwrite:
            clear_output(args.out)
        ident = CelebAHQIdentity(args.identity_file, args.mapping_file)
        report = prepare_dataset(args.src, args.out, config_from_args(args), ident, progress=not args.quiet)
        return 0 if report["complete"] else 3

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
