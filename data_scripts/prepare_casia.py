#!/usr/bin/env python
"""Align CASIA-WebFace faces for drdpgan:
``python data_scripts/prepare_casia.py --src <CASIA-WebFace folder or archive> --out <folder>``.

Layout: one folder per identity (``CASIA-WebFace/0000045/001.jpg``); the identity is the name
of the folder holding each image (files directly in ``--src`` are skipped as ``no_identity``).
Splits are identity-disjoint (``--test-frac`` of identities in ``test``, seeded). The CASIA
images are 250x250 with the face roughly centred; MTCNN re-detects and aligns every face.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from drdpgan.data.prepare import (  # noqa: E402
    PrepareError,
    clear_output,
    common_parser,
    config_from_args,
    folder_identity,
    prepare_dataset,
    run_main,
)


def main(argv: list[str] | None = None) -> int:
    p = common_parser("Detect, align and split CASIA-WebFace faces (folder per identity).", "casia")
    args = p.parse_args(argv)

    def body() -> int:
        if not args.src:
            raise PrepareError("give --src <CASIA-WebFace folder or archive>")
        if args.overwrite:
            clear_output(args.out)
        report = prepare_dataset(args.src, args.out, config_from_args(args), folder_identity, progress=not args.quiet)
        return 0 if report["complete"] else 3

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
