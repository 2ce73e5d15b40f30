"""``detpack deps verify CLOSURE``: every distribution file of a closure in one of four states.

Exit 0 when nothing is different and every unverified file is allowed (``--allow-unverified
NAME``, ``--max-unverified N``), 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from detpack.cli._output import Output, count
from detpack.deps import FileResult, Rebuilds, read_closure, tally, verify_closure
from detpack.errors import ConfigError
from detpack.verify.pypi_batch import ReleaseOutcome, default_jobs


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "deps",
        help="verify a closure's dependencies: built here, reproduced, different or unverified",
        description="Dependencies of an application, verified file by file.",
    )
    verbs = p.add_subparsers(dest="deps_verb", metavar="ACTION", required=True)
    v = verbs.add_parser(
        "verify",
        help="every file of a closure: built here, reproduced, different or unverified (with why)",
        description="Give every distribution file of CLOSURE (pylock.toml, pylock.NAME.toml, or a requirements "
        "file with --hash=sha256:) a state: built here (a build record in --records names its sha256), reproduced "
        "(rebuild --pypi of its release gives its exact bytes), different (rebuilt, other bytes) or unverified "
        "(with the reason). Results are cached by file sha256. Exit 0 when nothing is different and the unverified "
        "are allowed, 1 otherwise, 2 for bad input.",
    )
    v.add_argument("closure", type=Path, metavar="CLOSURE", help="pylock.toml or a requirements file with hashes")
    v.add_argument("--records", type=Path, action="append", default=[], metavar="DIR", help="folder of build records")
    v.add_argument("--jobs", "-j", type=int, metavar="N", help="releases rebuilt at once (default: up to 4)")
    v.add_argument("--find-links", type=Path, action="append", default=[], metavar="DIR")
    v.add_argument("--offline", action="store_true", help="fetch releases only from --find-links")
    v.add_argument("--no-rebuild", action="store_true", help="rebuild nothing: what is not known is not tried")
    v.add_argument("--refresh", action="store_true", help="ignore cached results (and replace them)")
    v.add_argument(
        "--allow-unverified", action="append", default=[], metavar="NAME", help="a project that may stay unverified"
    )
    v.add_argument("--max-unverified", type=int, default=0, metavar="N", help="how many others may (default 0)")
    v.add_argument("--cache-dir", type=Path, metavar="DIR", help="default $XDG_CACHE_HOME/detpack/deps")
    v.add_argument("--json", action="store_true", help="a list of results and the counts, as JSON")
    v.add_argument("--verbose", "-v", action="count", default=0)
    v.add_argument("--quiet", "-q", action="count", default=0)


def _line(r: FileResult) -> list[str]:
    f = r.file
    lines = [f"{r.state:10}  {f.name} {f.version} {f.label}  ({r.reason}{', cached' if r.cached else ''})"]
    return lines + [f"{'':12}{d}" for d in r.details]


def run(args: argparse.Namespace, out: Output) -> int:
    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1")
    if args.max_unverified < 0:
        raise ConfigError(f"--max-unverified {args.max_unverified}: give 0 or more")
    if args.offline and not args.find_links and not args.no_rebuild:
        raise ConfigError("--offline leaves nothing to fetch releases from; add --find-links DIR")
    closure = read_closure(args.closure)
    out.step(f"verifying {count(len(closure.files), 'file')} of {args.closure}")

    def done(n: int, total: int, o: ReleaseOutcome) -> None:
        out.step(f"[{n}/{total}] {o.spec}: {o.status} ({o.seconds:.0f} s)")

    rebuilds = Rebuilds(not args.no_rebuild, jobs, tuple(args.find_links), bool(args.offline))
    results = verify_closure(
        closure.files,
        records=args.records,
        rebuilds=rebuilds,
        cache_dir=args.cache_dir,
        refresh=bool(args.refresh),
        on_done=done,
    )
    t = tally(results, allow=args.allow_unverified, max_unverified=args.max_unverified)
    if args.json:
        report = {
            "files": [r.to_json() for r in results],
            "counts": {str(s): n for s, n in t.counts.items()} | {"files": len(results)},
            "unallowed": list(t.unallowed),
            "clean": t.clean,
        }
        out.result(json.dumps(report, indent=2, sort_keys=True))
    else:
        for r in results:
            out.result("\n".join(_line(r)))
        said = ", ".join(f"{n} {s}" for s, n in t.counts.items())
        out.result(f"{count(len(results), 'file')}: {said}")
        if t.unallowed:
            out.result(
                f"not allowed unverified: {', '.join(t.unallowed)} (allow: --allow-unverified NAME, --max-unverified N)"
            )
    return 0 if t.clean else 1
