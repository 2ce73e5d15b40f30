"""``detpack lock``: write a PEP 751 lock of a project's build dependencies."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detpack.build.config import BuildRequest, FrontendSettings
from detpack.build.locking import create_lock
from detpack.cli._output import Output, count
from detpack.cli.build import parse_config_settings


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "lock",
        help="lock the build dependencies (exact versions and sha256) in pylock.build.toml",
        description="Resolve [build-system].requires plus the backend's get_requires_for_build_sdist/wheel "
        "for this interpreter and platform, and write them with the sha256 of each file as a PEP 751 lock.",
    )
    p.add_argument("srcdir", nargs="?", default=".", type=Path, help="project directory (default: .)")
    p.add_argument("-o", "--output", type=Path, help="lock file (default: SRCDIR/pylock.build.toml)")
    p.add_argument("-C", "--config-setting", dest="config_settings", action="append", metavar="KEY[=VALUE]")
    p.add_argument("--find-links", action="append", default=[], type=Path, metavar="DIR")
    p.add_argument("--offline", action="store_true", default=None)
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def run(args: argparse.Namespace, out: Output) -> int:
    settings = parse_config_settings(args.config_settings or [])
    request = BuildRequest(
        srcdir=args.srcdir,
        frontend=FrontendSettings(config_settings=settings),
        find_links=tuple(args.find_links),
        offline=args.offline,
    )
    result = create_lock(request, args.output, on_line=out.line, on_step=out.step)
    for pkg in result.packages:
        out.step(f"{pkg.name}=={pkg.version}  sha256:{pkg.sha256}")
    out.result(f"{result.path}  {count(len(result.packages), 'package')} for {', '.join(result.requires)}")
    return 0
