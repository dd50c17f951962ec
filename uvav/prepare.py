"""Download and verify a dataset's files: ``python -m uvav.prepare <dataset> --root DIR [--verify-only]
[--force]``.

The datasets offered are those whose registry entry can fetch its files (:attr:`uvav.data.Dataset.prepare`, e.g.
AV-MNIST-lite's public sources). Everything is checked against known sha256 sums; a part that fails is downloaded
again. Exit status: 0 all files verify, 1 problems remain, 2 a download failed (the message says how to fetch the
files by hand).
"""

from __future__ import annotations

import argparse
import sys

from uvav.data import DATASETS
from uvav.errors import PrepareError


def main(argv: list[str] | None = None) -> int:
    preparable = [d.name for d in DATASETS if d.prepare is not None]
    parser = argparse.ArgumentParser(prog="python -m uvav.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=preparable)
    parser.add_argument("--root", required=True, help="folder to hold the dataset's files (its data.root)")
    parser.add_argument("--verify-only", action="store_true", help="only check the checksums")
    parser.add_argument("--force", action="store_true", help="download again even if the files verify")
    args = parser.parse_args(argv)
    try:
        problems = DATASETS.get(args.dataset).prepare(args.root, args.verify_only, args.force)
    except PrepareError as exc:
        print(exc, file=sys.stderr)
        return 2
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.dataset}: all files under {args.root} match their sha256 sums")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
