"""``detpack rebuild PROVENANCE``: rebuild from the record and compare every subject's digest.

PROVENANCE is a statement or its signed envelope (``--key PUB`` checks the signature). Exit 0
when every rebuilt subject matches (a skipped one, such as a tree build's sdist used as the
input, is listed but neither matches nor differs), 1 something differs (explained member by
member when the original files lie beside the record) or the record's signature fails, 2 when
an input cannot be had."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from detpack.cli._output import Output, count
from detpack.cli._progress import progress
from detpack.cli.diff import render_text
from detpack.digest import file_sha256
from detpack.errors import ConfigError
from detpack.provenance.signing import PrivateKey
from detpack.verify.compare import Comparison
from detpack.verify.pypi import WRITTEN_AT_BUILD_TIME, WheelCheck, rebuild_pypi
from detpack.verify.pypi_batch import ReleaseOutcome, default_jobs, parse_timeout, read_list, rebuild_many, tally
from detpack.verify.rebuild import rebuild
from detpack.wording import shown


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "rebuild",
        help="rebuild from a provenance record and compare digests",
        description="Take a provenance file written by `detpack build`, get the same source (verified), "
        "the same build dependencies (by sha256), epoch and settings, rebuild and compare every subject.",
    )
    p.add_argument(
        "provenance", type=Path, metavar="PROVENANCE", nargs="?", help="NAME.provenance.json or .intoto.jsonl"
    )
    p.add_argument("--key", type=Path, metavar="PUB", help="check the signed envelope's signature with this public key")
    p.add_argument(
        "--attest",
        type=Path,
        metavar="KEY",
        help="sign what the rebuild found with this ed25519 private key: a rebuild attestation "
        "STEM.rebuild.KEYID.intoto.jsonl (in --outdir, else beside the record; with --pypi, the current directory)",
    )
    p.add_argument(
        "--pypi",
        metavar="NAME==VERSION",
        nargs="?",
        const="",
        help="instead: rebuild a published release's wheel from its sdist and compare with the index's",
    )
    p.add_argument(
        "-r",
        "--releases",
        type=Path,
        metavar="FILE",
        help="with --pypi: every release listed in FILE (one NAME==VERSION a line), several at once, "
        "then a summary table",
    )
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="with -r: releases checked at once (default: up to 4)")
    p.add_argument(
        "--timeout",
        default="10m",
        metavar="TIME",
        help="with -r: give up a release after this long (90s, 10m, 1h; 0: no limit; default 10m), so one "
        "release never holds up the list",
    )
    p.add_argument("--json", action="store_true", help="with --pypi: print the report as JSON")
    p.add_argument("--source", type=Path, metavar="PATH", help="the source tree or sdist (default: sdist beside it)")
    p.add_argument(
        "-o",
        "--outdir",
        type=Path,
        help="keep the rebuilt files here (with --pypi: published/ as fetched, and rebuilt/); default: a temp folder",
    )
    p.add_argument(
        "--find-links",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also look here for build dependencies (and, with --pypi, for the release itself)",
    )
    p.add_argument("--offline", action="store_true", default=None, help="use no index, only --find-links")
    p.add_argument(
        "--toolchain",
        metavar="REF",
        help="a copy of the record's toolchain image (oci:DIR[:TAG] or a registry; its digest must be the "
        "recorded one); default: fetched by digest from the recorded registry",
    )
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0)


#: How many differing members a ``rebuild --pypi`` line names before "… N more".
MEMBERS_SHOWN = 10


def member_list(names: list[str], cap: int = MEMBERS_SHOWN) -> str:
    """``a, b, c`` or the first ``cap`` names and ``… N more``."""
    shown = ", ".join(names[:cap])
    return shown + (f" … {len(names) - cap} more" if len(names) > cap else "")


def _explanation(c: WheelCheck) -> list[str]:
    """What a wheel that is not byte-identical differs in, a line each (none for byte-identical)."""
    if c.comparison is None:
        return []
    lines = []
    what = "metadata only" if c.verdict == "content-identical" else "content"
    tally = ", ".join(f"{k} ({n})" for k, n in c.comparison.cause_tally()) or "no cause inferred"
    attrs = sorted({d.attribute for d in c.comparison.differences})
    fresh = [d for d in c.comparison.differences if d.evidence.startswith(WRITTEN_AT_BUILD_TIME)]
    if c.epoch is None and c.verdict == "content-identical" and len(fresh) == len(c.comparison.differences):
        lines.append(
            f"the publisher built without SOURCE_DATE_EPOCH from source files written at build time: "
            f"{len(fresh)} published copies of the sdist's files carry the build's instant (the .dist-info "
            "files'), where the sdist holds them with older times; a rebuild from the sdist copies those "
            "times (and the rest of the publisher's clock is replayed)"
        )
    elif c.epoch is None and c.verdict == "content-identical":
        lines.append(
            "the publisher built without SOURCE_DATE_EPOCH: generated .dist-info files carry the "
            "publisher's clock, and a rebuild under that clock (libfaketime) did not stamp the same times"
        )
    lines.append(
        f"{what}: {c.comparison.members_differing} of {c.comparison.members_total} members; "
        f"attributes {', '.join(attrs)}; likely causes: {tally}"
    )
    # a member's name is the release's: a line break in it would start a line of the report
    members = list(dict.fromkeys(shown(d.member) if d.member else f"({d.attribute})" for d in c.comparison.differences))
    lines.append(f"members: {member_list(members)}")
    return lines


def pypi_report(spec: str, checks: list[WheelCheck]) -> dict[str, Any]:
    """The JSON form of one release's check (what ``-r`` collects from each release)."""
    return {
        "release": spec,
        "wheels": [
            {
                "wheel": c.wheel,
                "verdict": c.verdict,
                "generator": c.generator,
                "pinned": c.pin,
                "epoch": c.epoch,
                "switch": c.switch,
                "clock": c.clock,
                "replayed": c.replayed,
                "publishedSha256": c.published_sha256,
                "rebuiltSha256": c.rebuilt_sha256,
                "recordProblems": list(c.record_problems),
                "explanation": _explanation(c),
            }
            for c in checks
        ],
    }


def _attest_key(args: argparse.Namespace) -> PrivateKey | None:
    if args.attest is None:
        return None
    from detpack.provenance.signing import load_private_key

    return load_private_key(args.attest)


def _run_pypi(args: argparse.Namespace, out: Output) -> int:
    signer = _attest_key(args)
    checks = rebuild_pypi(
        args.pypi,
        outdir=args.outdir,
        find_links=tuple(args.find_links),
        offline=bool(args.offline),
        on_step=out.step,
        on_line=out.line,
    )
    counts = {v: sum(1 for c in checks if c.verdict == v) for v in ("byte-identical", "content-identical", "different")}
    code = 0 if counts["different"] == 0 and counts["content-identical"] == 0 else 1
    attested: list[tuple[WheelCheck, Path]] = []
    if signer is not None:
        from detpack.verify.attest import attest_pypi

        attested = [(c, attest_pypi(args.pypi, c, signer, args.outdir or Path.cwd())) for c in checks]
    if args.json:
        report = pypi_report(args.pypi, checks)
        if signer is not None:
            report["attestations"] = [
                {"wheel": c.wheel, "path": str(p.absolute()), "sha256": file_sha256(p), "keyid": signer.public.keyid}
                for c, p in attested
            ]
        out.result(json.dumps(report, indent=2, sort_keys=True))
        return code
    verdicts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    out.result(f"{args.pypi}: {verdicts} of {count(len(checks), 'wheel')}")
    for c in checks:
        epoch = "unset" if c.epoch is None else c.epoch
        pinned = c.pin or "nothing"
        switch = "".join(f"; {x}" for x in (c.switch, c.clock, c.replayed) if x)
        out.result(
            f"  {c.verdict:17} {shown(c.wheel)}  (Generator: {shown(c.generator) or '?'}; pinned {shown(pinned)}; "
            f"epoch {epoch}{switch})"
        )
        for problem in c.record_problems:
            out.result(f"    the published wheel fails its own RECORD check: {shown(problem)}")
        for line in _explanation(c):
            out.result(f"    {line}")
        if c.comparison is not None and out.verbosity > 0:
            lines = render_text(Comparison("published", "rebuilt", False, (c.comparison,)), out.verbosity)[1:]
            out.result("\n".join(f"    {ln}" for ln in lines))
    if args.outdir is not None:
        out.result(f"kept in {args.outdir}: published/ (as fetched), rebuilt/ (with the rebuild's provenance)")
    keyid = signer.public.keyid[:16] if signer is not None else ""
    for c, written in attested:
        out.result(f"attested {c.wheel}: {c.verdict}, in {written} (keyid {keyid})")
    return code


def _run_batch(args: argparse.Namespace, out: Output) -> int:
    specs = read_list(args.releases)
    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1")
    out.step(f"checking {count(len(specs), 'release')} from {args.releases}, {jobs} at a time")

    with progress(out, "rebuilding", "releases", json=args.json) as advance:
        advance(0, len(specs))

        def done(i: int, o: ReleaseOutcome) -> None:
            out.step(f"[{i}/{len(specs)}] {o.spec}: {o.status} ({o.seconds:.0f} s)")  # above the bar
            advance(i, len(specs))

        outcomes = rebuild_many(
            specs,
            jobs=jobs,
            outdir=args.outdir,
            find_links=tuple(args.find_links),
            offline=bool(args.offline),
            timeout=parse_timeout(args.timeout),
            on_done=done,
        )
    totals = tally(outcomes)
    if args.json:
        summary: dict[str, int] = {str(k): n for k, n in totals.items()} | {"releases": len(outcomes)}
        report = {"releases": [o.to_json() for o in outcomes], "summary": summary}
        out.result(json.dumps(report, indent=2, sort_keys=True))
    else:
        width = max(len(o.spec) for o in outcomes)
        out.result(f"{'release':{width}}  {'verdict':17}  wheel / why")
        for o in outcomes:
            if o.report is None:
                out.result(f"{o.spec:{width}}  {o.status:17}  {o.reason.removeprefix(o.spec + ': ')}")
                continue
            for w in o.report["wheels"]:
                out.result(f"{o.spec:{width}}  {w['verdict']:17}  {shown(w['wheel'])}")
                for line in w["explanation"]:
                    out.result(f"{'':{width}}  {'':17}    {line}")
        said = ", ".join(f"{n} {s}" for s, n in totals.items())
        out.result(f"{count(len(outcomes), 'release')}: {said}")
    return 0 if totals["byte-identical"] == len(outcomes) else 1


def run(args: argparse.Namespace, out: Output) -> int:
    if args.releases is not None or args.pypi is not None:
        if args.provenance is not None:
            raise ConfigError("rebuild: give a PROVENANCE file or --pypi NAME==VERSION, not both")
        if args.releases is not None and args.pypi:
            raise ConfigError(f"rebuild: give --pypi {args.pypi} or -r {args.releases}, not both")
        if args.releases is not None:
            if args.attest is not None:
                raise ConfigError("rebuild -r: --attest signs one rebuild; give --pypi NAME==VERSION")
            return _run_batch(args, out)
        if not args.pypi:
            raise ConfigError("rebuild --pypi: give NAME==VERSION, or -r FILE listing releases")
        if args.jobs is not None:
            raise ConfigError("rebuild: --jobs goes with -r FILE")
        return _run_pypi(args, out)
    if args.json or args.jobs is not None:
        raise ConfigError("rebuild: --json and --jobs go with --pypi")
    signer = _attest_key(args)
    if args.provenance is None:
        raise ConfigError("rebuild: give a PROVENANCE file (or --pypi NAME==VERSION)")
    key = None
    if args.key is not None:
        from detpack.provenance.signing import load_public_key

        key = load_public_key(args.key, private_ok=False)
    result = rebuild(
        args.provenance,
        key=key,
        on_warning=out.warning,
        source=args.source,
        find_links=tuple(args.find_links),
        offline=args.offline,
        outdir=args.outdir,
        on_step=out.step,
        on_line=out.line,
        toolchain=args.toolchain,
    )
    same = sum(1 for s in result.rebuilt if s.matches)
    verdict = "reproduced" if result.reproduced else "NOT reproduced"
    skipped = len(result.subjects) - len(result.rebuilt)
    if skipped:
        counted = f"{same} of {len(result.rebuilt)} rebuilt subjects match, {skipped} skipped"
    else:
        counted = f"{same} of {len(result.subjects)} subjects match"
    out.result(f"{verdict}: {counted} ({result.source_note})")
    for drift in result.toolchain:  # before any byte difference: it may explain them
        out.result(f"  toolchain differs from the record: {drift}")
    for s in result.subjects:
        if s.skipped is not None:
            out.result(f"  skipped  {s.name}  ({s.skipped})")
            continue
        state = "match" if s.matches else ("missing" if s.actual is None else "DIFFERS")
        out.result(f"  {state:8} {s.name}  sha256:{s.expected}" + ("" if s.matches else f" -> {s.actual}"))
        if s.explanation is not None:
            lines = render_text(Comparison("original", "rebuilt", False, (s.explanation,)), out.verbosity)[1:]
            out.result("\n".join(f"    {ln}" for ln in lines))
    if result.signature == "verified" and key is not None:
        out.result(f"signature verified with keyid {key.keyid}")
    if signer is not None:
        from detpack.verify.attest import attest_rebuild

        written = attest_rebuild(result, args.provenance, signer, args.outdir or args.provenance.parent)
        out.result(f"attested: {verdict.lower()}, in {written} (keyid {signer.public.keyid[:16]})")
    return 0 if result.reproduced else 1
