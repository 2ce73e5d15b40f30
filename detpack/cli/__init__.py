"""The command line: parse, call the library, render, choose the exit code.

This package is the only place in detpack that prints. Every verb lives in its own module
with ``add_parser`` and ``run``; ``main`` turns any ``DetpackError`` into one line on stderr
and its exit code (2 for bad input, 1 for "not the same / not verified"), never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from detpack import __version__
from detpack.cli._output import Output
from detpack.errors import DetpackError

#: Exit code for a bug (an unexpected exception): distinct from 1 (differs) and 2 (bad input).
INTERNAL_ERROR = 3

#: Verb -> module; a module is imported only when its verb is used (or for --help).
VERBS = {
    "build": "detpack.cli.build",
    "normalize": "detpack.cli.normalize",
    "diff": "detpack.cli.diff",
    "check": "detpack.cli.check",
    "lock": "detpack.cli.lock",
    "rebuild": "detpack.cli.rebuild",
    "tar": "detpack.cli.tar",
    "layer": "detpack.cli.layer",
    "image": "detpack.cli.image",
    "push": "detpack.cli.push",
    "keygen": "detpack.cli.keygen",
    "sign": "detpack.cli.sign",
    "verify": "detpack.cli.verify",
    "store": "detpack.cli.store",
    "sbom": "detpack.cli.sbom",
    "deps": "detpack.cli.deps",
    "rebuilder": "detpack.cli.rebuilder",
}


def _verb(name: str) -> Any:
    return importlib.import_module(VERBS[name])


def parser(only: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="detpack",
        description="Reproducible, traceable Python release artifacts.",
    )
    p.add_argument("--version", "-V", action="version", version=f"detpack {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERBS:
        if only is None or name == only:
            _verb(name).add_parser(sub)
        else:
            sub.add_parser(name, help=f"see `detpack {name} --help`", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is not None:
        return _main(list(argv))
    code = _main(sys.argv[1:])
    # Run as the program (the console script, ``python -m detpack``): the process ends now. Frozen,
    # the objects still alive are skipped by the collector's last pass at exit, a full traversal
    # of every module's objects (~10 ms after `detpack normalize`); files are closed by then.
    gc.freeze()
    return code


def _main(argv: list[str]) -> int:
    verb = next((a for a in argv if not a.startswith("-")), None)
    args = parser(verb if verb in VERBS else None).parse_args(argv)
    out = Output.from_args(args)
    try:
        code: int = _verb(args.verb).run(args, out)
    except DetpackError as exc:
        if out.verbosity > 0:
            out.error(exc.diagnostics())
        elif exc.details and hasattr(args, "verbose"):
            out.error(f"{exc.message}; run with -v to see why")
        else:
            out.error(exc.message)
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
    except Exception:  # noqa: BLE001 - a bug: show it, with an exit code no verdict uses
        import traceback  # only for a bug: every other run starts faster

        traceback.print_exc()
        out.error("internal error in detpack (the traceback above is a bug; please report it)")
        return INTERNAL_ERROR

    return code
