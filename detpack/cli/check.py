"""``detpack check``: build twice (or more) under reprotest-style variations; name the one
that breaks reproducibility. Exit 0 reproducible, 1 not, 2 error."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from detpack.build import sandbox
from detpack.cli._output import Output
from detpack.cli.build import add_backend_options, config_settings
from detpack.cli.diff import render_text
from detpack.errors import ConfigError
from detpack.verify import variations
from detpack.verify.check import CheckSettings, run_check
from detpack.verify.compare import Comparison


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "check",
        help="build twice under varied conditions and name what breaks reproducibility",
        description="Build SRC under a control environment and again with every variation "
        f"({', '.join(variations.NAMES)}; 'machine' = {', '.join(variations.GROUPS['machine'])}); "
        "when outputs differ, rebuild one variation at a time to name the responsible one and explain "
        "the difference.",
    )
    p.add_argument("srcdir", nargs="?", default=".", type=Path, help="project directory (default: .)")
    p.add_argument("--runs", type=int, default=2, help="builds in the first round (default: 2)")
    p.add_argument(
        "--vary",
        metavar="LIST",
        help="comma list of variations, or -name,... to drop some (default: all this machine supports)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="check the project's own backend via python -m build, without detpack's normalization",
    )
    p.add_argument(
        "--libz",
        type=Path,
        metavar="PATH",
        help="another libz.so.1 (zlib-ng built with -DZLIB_COMPAT=ON, say) for the libz variation: bound over "
        "the system's in the sandbox, as on a machine with another zlib",
    )
    p.add_argument("--find-links", action="append", default=[], type=Path, metavar="DIR")
    p.add_argument("--offline", action="store_true")
    shipped = p.add_argument_group("the build as you ship it (every build of the check gets these)")
    shipped.add_argument(
        "--pass-env", action="append", default=[], metavar="NAME", help="pass NAME from the environment to the build"
    )
    shipped.add_argument("--lock", type=Path, metavar="FILE", help="install the build dependencies from this lock")
    shipped.add_argument("--installer", choices=("pip", "uv"), default=None, help="installer for build dependencies")
    add_backend_options(shipped)
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the trees and outputs in DIR")
    p.add_argument(
        "--source-date-epoch",
        metavar="{N,git}",
        help="SOURCE_DATE_EPOCH for every build, as for detpack build (default: the environment, "
        "else the last git commit, else 1980-01-01)",
    )
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


def _tally(c: Comparison) -> str:
    causes: dict[str, int] = {}
    for f in c.files:
        for cause, n in f.cause_tally():
            causes[cause] = causes.get(cause, 0) + n
    listed = ", ".join(f"{k} ({v})" for k, v in sorted(causes.items(), key=lambda kv: -kv[1]))
    return f"{c.summary()}" + (f"; likely causes: {listed}" if listed else "")


def _settings_json(args: argparse.Namespace) -> str | None:
    """The backend settings (``-C`` items or ``--config-json``) as one JSON object, or None."""
    if args.config_json is None and not args.config_settings:
        return None
    return json.dumps(config_settings(args), sort_keys=True)


def run(args: argparse.Namespace, out: Output) -> int:
    if args.runs < 2:
        raise ConfigError(f"--runs {args.runs}: at least 2 builds are needed to compare")
    libz = None if args.libz is None else sandbox.check_libz(args.libz, "--libz")
    settings = CheckSettings(
        srcdir=args.srcdir,
        runs=args.runs,
        vary=variations.select(args.vary, libz),
        raw=args.raw,
        find_links=tuple(args.find_links),
        offline=args.offline,
        keep=args.keep,
        epoch_spec=args.source_date_epoch,
        libz=libz,
        pass_env=tuple(args.pass_env),
        lock=args.lock,
        config_json=_settings_json(args),
        installer=args.installer,
    )
    result = run_check(settings, on_step=out.step, on_warning=out.warning)
    for name, why in result.not_varied.items():
        out.warning(f"{name}: {why}")
    mode = "the backend's raw output" if args.raw else "detpack build"
    if result.reproducible:
        out.result(f"reproducible: {result.builds} builds ({mode}) identical under {', '.join(result.varied)}")
        return 0
    assert result.experiment is not None
    out.result(f"not reproducible ({mode}): {_tally(result.experiment)}")
    if result.culprits:
        out.result("responsible variation(s): " + ", ".join(c.variation for c in result.culprits))
        for c in result.culprits:
            out.result(f"  {c.variation} ({c.description}): {_tally(c.comparison)}")
    else:
        out.result("no single variation explains it: the variations only break it together")
    if result.noise is not None:
        out.result(f"differs even between two identical control builds: {_tally(result.noise)}")
    if out.verbosity >= 0:
        for c in result.culprits or ():
            out.result(f"\n# control vs {c.variation}")
            out.result("\n".join(render_text(c.comparison, out.verbosity)[1:]))
        if result.noise is not None:
            out.result("\n# control vs control again")
            out.result("\n".join(render_text(result.noise, out.verbosity)[1:]))
    return 1
