"""The command line: parse, call the library, render, choose the exit code.

This package is the only place in detpack that prints. Every verb lives in its own module
with ``add_parser`` and ``run``; ``main`` turns any ``DetpackError`` into one line on stderr
and its exit code (2 for bad input, 1 for "not the same / not verified"), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from detpack import __version__
from detpack.cli import build as build_cmd
from detpack.cli import check as check_cmd
from detpack.cli import diff as diff_cmd
from detpack.cli import lock as lock_cmd
from detpack.cli import normalize as normalize_cmd
from detpack.cli import rebuild as rebuild_cmd
from detpack.cli._output import Output
from detpack.errors import DetpackError

VERBS = {
    "build": build_cmd,
    "normalize": normalize_cmd,
    "diff": diff_cmd,
    "check": check_cmd,
    "lock": lock_cmd,
    "rebuild": rebuild_cmd,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="detpack",
        description="Reproducible, traceable Python release artifacts.",
    )
    p.add_argument("--version", "-V", action="version", version=f"detpack {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in VERBS.values():
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    out = Output.from_args(args)
    try:
        code: int = VERBS[args.verb].run(args, out)
    except DetpackError as exc:
        out.error(exc.diagnostics() if out.verbosity > 0 else exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`detpack ... | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        # A safety net: the library turns expected I/O failures into DetpackErrors already.
        where = f"{exc.filename}: " if exc.filename else ""
        out.error(f"{where}{exc.strerror or exc}")
        return 2

    return code
