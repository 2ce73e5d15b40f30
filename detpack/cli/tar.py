"""``detpack tar``: a deterministic tarball of a directory or of a committed git tree."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from detpack import policy
from detpack.archive import tarball
from detpack.cli._output import Output, count
from detpack.cli._progress import byte_progress
from detpack.errors import ConfigError, InputError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "tar",
        help="make a deterministic tarball of a directory or a git revision",
        description=(
            "Pack DIR (or the committed tree of a git revision) into detpack's canonical tar form; "
            "the compression follows OUT's suffix: .tar, .tar.gz/.tgz, .tar.zst."
        ),
    )
    p.add_argument("directory", nargs="?", type=Path, metavar="DIR", help="the directory (or file) to pack")
    p.add_argument("--git", metavar="REV", help="pack the committed tree of REV instead of a directory")
    p.add_argument(
        "--repo", type=Path, default=Path(), metavar="PATH", help="the git repository for --git (default: .)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    p.add_argument("--prefix", metavar="NAME/", help="put every member under this top folder")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out paths or names matching GLOB (DIR only)",
    )
    p.add_argument(
        "--source-date-epoch",
        metavar="N",
        help="timestamp for every member (default: --git's commit time; for DIR $SOURCE_DATE_EPOCH, "
        "then the last commit of the git repository holding DIR, then 1980-01-01)",
    )
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    if (args.directory is None) == (args.git is None):
        raise ConfigError("detpack tar: give either DIR or --git REV (one of them)")
    if args.exclude and args.git:
        raise ConfigError("--exclude applies to DIR only; for --git, mark paths export-ignore in .gitattributes")
    target: Path = args.output
    compression = tarball.compression_for(target)
    if target.is_dir():
        raise InputError(f"{target}: is a directory; -o names the tarball file")
    prefix = tarball.clean_prefix(args.prefix)
    explicit = (
        None if args.source_date_epoch is None else policy.parse_epoch(args.source_date_epoch, "--source-date-epoch")
    )
    if args.git is not None:
        commit = tarball.git_commit(args.repo, args.git)
        epoch = explicit if explicit is not None else commit.commit_time
        out.step(f"packing {args.repo}@{commit.commit[:12]} ({compression})")
        with (
            tarball.git_items(args.repo, commit.commit, prefix=prefix) as items,
            byte_progress(out, "packing") as shown,
        ):
            total = tarball.content_size(items) if shown is not None else 0
            label = f"{args.repo}@{commit.commit[:12]}"
            digests = tarball.write_tarball(items, target, epoch, label, progress=shown, total=total)
    else:
        directory: Path = args.directory
        if target.resolve().is_relative_to(directory.resolve()):
            # Never pack the output (or its temporary) into itself.
            args.exclude.append(target.resolve().relative_to(directory.resolve()).as_posix())
            args.exclude.append(".detpack-tmp-*")
        epoch = explicit if explicit is not None else tarball.directory_epoch(directory, os.environ)
        out.step(f"packing {directory} ({compression})")
        with byte_progress(out, "packing") as shown:
            # On a terminal, the directory is walked twice: first for its size (names and sizes only).
            sizing = tarball.directory_items(directory, prefix=prefix, exclude=args.exclude)
            total = tarball.content_size(sizing) if shown is not None else 0
            stream = tarball.directory_items(directory, prefix=prefix, exclude=args.exclude)
            digests = tarball.write_tarball(stream, target, epoch, str(directory), progress=shown, total=total)
    out.result(f"{target}  sha256:{digests.blob_sha256}  {count(digests.entries, 'entry', 'entries')}  epoch {epoch}")
    return 0
