"""``detpack normalize``: rewrite existing archives into canonical form."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from detpack import policy
from detpack.archive.normalize import NormalizeOptions, normalize_file
from detpack.cli._output import Output
from detpack.cli._progress import byte_progress, per_file
from detpack.errors import ConfigError, InputError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "normalize",
        help="rewrite wheels, zips, jars, tars, tar.gz and gz files into canonical form",
        description=(
            "Rewrite archives into detpack's canonical byte form (kind detected from content). "
            "Idempotent; wheels keep a valid RECORD."
        ),
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--outdir", type=Path, help="write results into DIR (same file names)")
    where.add_argument("--in-place", action="store_true", help="replace each FILE atomically")
    p.add_argument(
        "--source-date-epoch",
        metavar="N",
        help="timestamp for every member (default: $SOURCE_DATE_EPOCH, else 1980-01-01)",
    )
    # Always on since policy 5 (every member is re-deflated); accepted for old scripts.
    p.add_argument("--recompress", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="raise a hostile-input ceiling for a trusted archive: max_members, max_total_bytes, max_ratio, "
        "ratio_floor, max_name_bytes (K/M/G suffixes)",
    )
    p.add_argument(
        "--duplicates",
        choices=("refuse", "last"),
        default="refuse",
        help="two different members under one name: refuse the archive (default), or keep the last one, "
        "as tar, unzip, pip and uv extract it (said for each name)",
    )
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    epoch = policy.epoch_from(args.source_date_epoch, os.environ)
    limits = policy.Limits.parse(args.limit)
    options = NormalizeOptions(epoch, limits, duplicates=args.duplicates)
    files: list[Path] = args.files
    if args.outdir is not None:
        if args.outdir.exists() and not args.outdir.is_dir():
            raise InputError(f"{args.outdir}: output path exists and is not a directory")
        names = [f.name for f in files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"-o {args.outdir}: several inputs are named {', '.join(dupes)}; they would collide")
        for f in files:
            if f.resolve().parent == args.outdir.resolve():
                raise ConfigError(f"{f}: -o would overwrite the input itself; use --in-place for that")
    for f in files:
        if not f.is_file():
            raise InputError(f"{f}: no such file" if not f.exists() else f"{f}: not a regular file")
    with byte_progress(out, "normalizing") as advance:
        for f, told in zip(files, per_file(files, advance), strict=True):
            target = f if args.in_place else args.outdir / f.name
            result = normalize_file(f, target, options, told)
            for name in result.replaced:
                out.warning(f"{f}: two different members are named {name!r}; kept the last one (--duplicates last)")
            state = "rewritten" if result.changed else "already canonical"
            out.result(f"{result.output}  {result.kind}  sha256:{result.sha256}  {state}")
    return 0
