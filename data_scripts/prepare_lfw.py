#!/usr/bin/env python
"""Align LFW faces for drdpgan: ``python data_scripts/prepare_lfw.py --src <lfw> --out <folder>``.

``--src`` is any of
  * the official archive ``lfw.tgz`` / ``lfw-deepfunneled.tgz`` or its extracted folder
    (folder-per-identity: ``lfw/<Name>/<Name>_0001.jpg``);
  * a flat folder of ``<Identity_Name>_<NNNN>.jpg`` files, optionally with ``labels.csv``
    (``file,identity``) and ``pairs.csv`` (``file_a,file_b,same``) beside the images or beside
    an ``images/`` folder (the layout of the project's shared copy ``../shared/data/lfw``).
Identity comes from ``labels.csv`` when present, else from the file name, else the folder.

Verification pairs (``pairs.csv`` or the official ``pairs.txt``, found in ``--src`` or given
with ``--pairs``) drive the default ``--split pairs``: identities linked by any pair stay in one
split and whole linked groups are held out as ``test`` (about ``--test-frac`` of identities),
so test pairs use only identities no model trained on; ``out/pairs.csv`` lists the pairs whose
two images were kept, with their split. ``--split identity`` ignores pairs; ``--split pairs-all``
puts every identity named in a pair into ``test``.

``--download`` fetches the archive and ``pairs.txt`` from the official site
(http://vis-www.cs.umass.edu/lfw/) with an md5 check into ``--download-dir`` (default
``<out>/_download``); with no network it stops with a message. Nothing is downloaded otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from drdpgan.data.prepare import (  # noqa: E402
    LFWIdentity,
    PrepareError,
    Source,
    clear_output,
    common_parser,
    config_from_args,
    download_file,
    prepare_dataset,
    read_labels_csv,
    read_pairs,
    run_main,
)

LFW_URL = "http://vis-www.cs.umass.edu/lfw/"
# file name, md5 (the checksums torchvision's LFW dataset uses for the official files)
LFW_ARCHIVES = {
    "original": ("lfw.tgz", "a17d05bd522c52d84eca14327a23d494"),
    "funneled": ("lfw-funneled.tgz", "1b42dfed7d15c9b2dd63d5e5840c86ad"),
    "deepfunneled": ("lfw-deepfunneled.tgz", "68331da3eb755a505a502b5aacb3c201"),
}
LFW_PAIRS = ("pairs.txt", "9f1ba174e4e1c508ff7cdf10ac338a7d")


def _side(source: Source, names: tuple[str, ...]) -> tuple[bytes | None, str | None]:
    for name in names:
        data = source.side_file(name)
        if data is not None:
            return data, str(source.path / name)
        if source.kind == "folder" and source.path.name == "images" and (source.path.parent / name).is_file():
            return (source.path.parent / name).read_bytes(), str(source.path.parent / name)
    return None, None


def main(argv: list[str] | None = None) -> int:
    p = common_parser("Detect, align and split LFW faces (MTCNN + 5-point similarity).", "lfw")
    p.add_argument("--labels", help="file,identity CSV (default: labels.csv in --src when present)")
    p.add_argument("--pairs", help="pairs.csv or official pairs.txt (default: found in --src)")
    p.add_argument("--no-pairs", action="store_true", help="ignore verification pairs")
    p.add_argument("--split", choices=("pairs", "identity", "pairs-all"), default="pairs",
                   help="how to split train/test (pairs falls back to identity without pairs)")
    p.add_argument("--download", nargs="?", const="deepfunneled", choices=sorted(LFW_ARCHIVES),
                   help="download this LFW variant from the official site first (needs network)")
    p.add_argument("--download-dir", help="where downloads go (default <out>/_download)")
    p.set_defaults(min_face_size=40)  # LFW faces fill most of the frame; a coarser pyramid is faster
    args = p.parse_args(argv)

    def body() -> int:
        if args.overwrite:
            clear_output(args.out)
        src = args.src
        pairs_path = args.pairs
        if args.download:
            ddir = Path(args.download_dir or Path(args.out) / "_download")
            fname, md5 = LFW_ARCHIVES[args.download]
            print(f"[prepare] downloading {LFW_URL}{fname} -> {ddir}")
            arch = download_file(LFW_URL + fname, ddir / fname, md5=md5, progress=not args.quiet)
            if not args.no_pairs and pairs_path is None:
                pairs_path = str(download_file(LFW_URL + LFW_PAIRS[0], ddir / LFW_PAIRS[0], md5=LFW_PAIRS[1],
                                               progress=not args.quiet))
            src = src or str(arch)
        if not src:
            raise PrepareError("give --src <folder or archive> (or --download when a network is there)")
        source = Source(src)
        try:
            labels = None
            if args.labels:
                labels = read_labels_csv(Path(args.labels))
            else:
                data, where = _side(source, ("labels.csv",))
                if data is not None:
                    labels = read_labels_csv(data)
                    print(f"[prepare] identities from {where}")
            pairs = None
            if not args.no_pairs:
                if pairs_path:
                    pairs = read_pairs(Path(pairs_path))
                else:
                    data, where = _side(source, ("pairs.csv", "pairs.txt"))
                    if data is not None:
                        pairs = read_pairs(data)
                        print(f"[prepare] {len(pairs)} verification pairs from {where}")
        finally:
            source.close()
        cfg = config_from_args(args, split_mode=args.split)
        report = prepare_dataset(src, args.out, cfg, LFWIdentity(labels), pairs=pairs, progress=not args.quiet)
        return 0 if report["complete"] else 3

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
