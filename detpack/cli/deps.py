"""``detpack deps verify CLOSURE``: every distribution file of a closure in one of four states.

Exit 0 when nothing is different and every unverified file is allowed (``--allow-unverified
NAME``, ``--max-unverified N``), 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

from detpack import policy
from detpack.atomic import write_bytes
from detpack.cli._output import Output, count
from detpack.deps import FileResult, Rebuilds, Report, read_closure, tally, verify_closure
from detpack.deps.closure import Closure
from detpack.deps.report import REPORT_SUFFIX, plain_name
from detpack.digest import sha256_hex
from detpack.errors import ConfigError, OutputError
from detpack.verify.pypi_batch import ReleaseOutcome, default_jobs, parse_timeout


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
        description="Give every distribution file of CLOSURE (pylock.toml, pylock.NAME.toml, a requirements "
        "file with --hash=sha256:, a layer LAYER.tar.gz, or an image oci:DIR[:TAG] or HOST/REPO[:TAG]: the wheels "
        "its provenance says were installed) a state: built here (a build record in --records or --store names "
        "its sha256), reproduced (rebuild --pypi of its release gives its exact bytes, or a stored attestation by a "
        "--rebuilder-key says so), different (rebuilt, other bytes) or unverified (with the reason). Results are "
        "cached by file sha256. Exit 0 when nothing is different and the unverified are allowed, 1 otherwise, "
        "2 for bad input.",
    )
    v.add_argument("closure", metavar="CLOSURE", help="pylock.toml, requirements with hashes, a layer or an image")
    v.add_argument("--provenance", type=Path, metavar="FILE", help="the layer's or image's provenance, if not beside")
    v.add_argument("--records", type=Path, action="append", default=[], metavar="DIR", help="folder of build records")
    v.add_argument("--jobs", "-j", type=int, metavar="N", help="releases rebuilt at once (default: up to 4)")
    v.add_argument("--find-links", type=Path, action="append", default=[], metavar="DIR")
    v.add_argument("--offline", action="store_true", help="fetch releases only from --find-links")
    v.add_argument("--no-rebuild", action="store_true", help="rebuild nothing: what is not known is not tried")
    v.add_argument("--refresh", action="store_true", help="ignore cached results (and replace them)")
    v.add_argument(
        "--timeout", default="10m", metavar="TIME", help="give up a release's rebuild after this long (default 10m)"
    )
    v.add_argument("--attest", type=Path, metavar="KEY", help="sign each rebuild's finding (rebuild attestations)")
    v.add_argument(
        "-o", "--output", type=Path, metavar="DIR", help="write the closure report and the evidence it names here"
    )
    v.add_argument("--store", metavar="URL", help="read records and attestations from this store; push the findings")
    v.add_argument("--store-key", type=Path, metavar="PUB", help="the store's public key, as you trust it")
    v.add_argument(
        "--rebuilder-key",
        type=Path,
        action="append",
        default=[],
        metavar="PUB",
        help="a rebuilder whose attestations in --store count as reproduced",
    )
    v.add_argument(
        "--allow-unverified", action="append", default=[], metavar="NAME", help="a project that may stay unverified"
    )
    v.add_argument("--max-unverified", type=int, default=0, metavar="N", help="how many others may (default 0)")
    v.add_argument("--cache-dir", type=Path, metavar="DIR", help="default $XDG_CACHE_HOME/detpack/deps")
    v.add_argument("--json", action="store_true", help="the closure report, with what passes, as JSON")
    v.add_argument("--verbose", "-v", action="count", default=0)
    v.add_argument("--quiet", "-q", action="count", default=0)


def _line(r: FileResult) -> list[str]:
    f = r.file
    lines = [f"{r.state:10}  {f.name} {f.version} {f.label}  ({r.reason}{', cached' if r.cached else ''})"]
    return lines + [f"{'':12}{d}" for d in r.details]


def _read(args: argparse.Namespace) -> Closure:
    from detpack.deps.packed import is_packed, read_packed

    if is_packed(args.closure):
        return read_packed(args.closure, args.provenance)
    if args.provenance is not None:
        raise ConfigError("--provenance is for a layer or an image; a lock or requirements file carries its hashes")
    return read_closure(Path(args.closure))


def report_name(closure: Closure, report: Report) -> str:
    """``STEM.SHA12.YYYYMMDDTHHMMSSZ.REPORT8.closure.json``: the closure, the run's time and the report's own
    digest, so two runs never share a name (store names are bound once)."""
    last = closure.label.rstrip("/").rsplit("/", 1)[-1].removeprefix("oci:")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip(".-") or "closure"
    when = report.verified_on.replace("-", "").replace(":", "")
    return f"{stem}.{closure.sha256[:12]}.{when}.{sha256_hex(report.to_bytes())[:8]}{REPORT_SUFFIX}"


def run(args: argparse.Namespace, out: Output) -> int:
    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1")
    if args.max_unverified < 0:
        raise ConfigError(f"--max-unverified {args.max_unverified}: give 0 or more")
    if args.offline and not args.find_links and not args.no_rebuild:
        raise ConfigError("--offline leaves nothing to fetch releases from; add --find-links DIR")
    if args.rebuilder_key and not args.store:
        raise ConfigError("--rebuilder-key counts attestations held in a store; add --store URL")
    closure = _read(args)
    out.step(f"verifying {count(len(closure.files), 'file')} of {closure.label}")
    store: Any = None
    known: dict[str, Any] = {}
    if args.store:
        store, known = _from_store(args, closure, out)

    def done(n: int, total: int, o: ReleaseOutcome) -> None:
        out.step(f"[{n}/{total}] {o.spec}: {o.status} ({o.seconds:.0f} s)")

    limit = parse_timeout(args.timeout)
    rebuilds = Rebuilds(not args.no_rebuild, jobs, tuple(args.find_links), bool(args.offline), args.attest, limit)
    results = verify_closure(
        closure.files,
        records=args.records,
        known=known,
        rebuilds=rebuilds,
        cache_dir=args.cache_dir,
        refresh=bool(args.refresh),
        on_done=done,
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    report = Report(
        closure.label,
        closure.kind,
        closure.sha256,
        policy.POLICY_VERSION,
        now.isoformat().replace("+00:00", "Z"),
        tuple(r.entry() for r in results),
    )
    written = _write(args.output, report_name(closure, report), report, results) if args.output else None
    if store is not None:
        _push(store, report_name(closure, report), report, results, written, out)
    t = tally(results, allow=args.allow_unverified, max_unverified=args.max_unverified)
    if args.json:
        value = report.to_json() | {"unallowed": list(t.unallowed), "clean": t.clean}
        for entry, r in zip(value["files"], results, strict=True):
            entry["cached"] = r.cached
        out.result(json.dumps(value, indent=2, sort_keys=True))
    else:
        for r in results:
            out.result("\n".join(_line(r)))
        said = ", ".join(f"{n} {s}" for s, n in t.counts.items())
        out.result(f"{count(len(results), 'file')}: {said}")
        if t.unallowed:
            out.result(
                f"not allowed unverified: {', '.join(t.unallowed)} (allow: --allow-unverified NAME, --max-unverified N)"
            )
        if written is not None:
            out.step(f"report {written}")
    return 0 if t.clean else 1


def _evidence_files(results: list[FileResult]) -> list[tuple[str, Path]]:
    """(name, where) of each signed attestation the results rest on, each once (records are the caller's)."""
    seen: dict[str, tuple[str, Path]] = {}
    for r in results:
        if r.evidence is not None and r.evidence.kind == "attestation" and r.evidence_path is not None:
            if not plain_name(r.evidence.name):
                raise OutputError(
                    f"{r.evidence_path}: its evidence name {r.evidence.name!r} is not a plain file name; "
                    "run again with --refresh"
                )
            seen.setdefault(r.evidence.sha256, (r.evidence.name, r.evidence_path))
    return list(seen.values())


def _write(folder: Path, name: str, report: Report, results: list[FileResult]) -> Path:
    """The report and each attestation it names (under its own name) in ``folder``; each file whole or not at all.
    What was there under such a name (a link, other bytes) is replaced: the folder holds what the report names."""
    folder.mkdir(parents=True, exist_ok=True)
    for evidence_name, p in _evidence_files(results):
        write_bytes(folder / evidence_name, p.read_bytes())
    target = folder / name
    write_bytes(target, report.to_bytes())
    return target


def _from_store(args: argparse.Namespace, closure: Closure, out: Output) -> tuple[Any, dict[str, Any]]:
    from detpack.cli.store import require_existing, show_notices, trusted_key
    from detpack.deps.stored import known_in_store
    from detpack.provenance.signing import load_public_key
    from detpack.store import open_store

    store = open_store(args.store, trust=trusted_key(args.store_key, url_given=True))
    require_existing(store)
    rebuilders = [load_public_key(k) for k in args.rebuilder_key]
    try:
        known = known_in_store(store, (f.sha256 for f in closure.files), rebuilders)
    finally:
        show_notices(store, out)
    return store, known


def _push(store: Any, name: str, report: Report, results: list[FileResult], written: Path | None, out: Output) -> None:
    import tempfile

    from detpack.cli.store import show_notices
    from detpack.deps.stored import push_findings

    with tempfile.TemporaryDirectory(prefix="detpack-deps-") as tmp:
        if written is None:
            written = _write(Path(tmp), name, report, results)
        attestations = []
        for evidence_name, p in _evidence_files(results):
            named = Path(tmp) / "evidence" / evidence_name
            named.parent.mkdir(exist_ok=True)
            shutil.copyfile(p, named)
            attestations.append(named)
        try:
            pushed = push_findings(store, written, attestations)
        finally:
            show_notices(store, out)
    out.step(f"stored {count(len(pushed), 'item')} in {store.backend.url} (the report as {name})")
