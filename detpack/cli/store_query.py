"""``detpack store query``: the options, and the rendering of what ``detpack.store.query`` answers."""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detpack.cli._output import Output, count
from detpack.errors import ConfigError, OutputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dep", action="append", default=[], metavar="REQ",
        help="its provenance records a build dependency matching REQ, a PEP 508 name and specifier ('setuptools<70')",
    )  # fmt: skip
    p.add_argument(
        "--contains", action="append", default=[], metavar="REQ",
        help="a layer or image holding a wheel matching REQ (its provenance or a stored SBOM says so)",
    )  # fmt: skip
    p.add_argument("--commit", metavar="SHA", help="built from a source commit starting with SHA")
    p.add_argument("--repo", metavar="URL", help="built from a source repository whose URL contains this")
    p.add_argument("--builder", metavar="ID", help="built by this builder id (runDetails.builder.id)")
    p.add_argument("--name", metavar="GLOB", help="one of its names matches GLOB (* ? [...])")
    p.add_argument("--kind", metavar="KIND", help="wheel, sdist, layer, image, sbom, file, provenance, attestation, …")
    p.add_argument("--live", metavar="ENV", help="live in ENV now")
    p.add_argument("--env", metavar="ENV", help="live in ENV at --at TIME (now without it); with --history, ENV's")
    p.add_argument("--at", metavar="TIME", help="with --env: an ISO 8601 time or date (UTC unless it says)")
    p.add_argument("--history", action="store_true", help="with --env: every promotion to ENV (up to --at)")
    p.add_argument("--index", type=Path, metavar="PATH", help="the index file (default ~/.cache/detpack/index/…)")
    p.add_argument("--rebuild-index", action="store_true", help="rebuild the index from the store first")


def run(store: Any, args: argparse.Namespace, out: Output) -> int:
    from detpack.store import index, query

    if args.history and args.env is None:
        raise ConfigError("--history: give --env ENV (the environment whose promotions to list)")
    filters = _filters(args)
    q = query.Query.parse(**filters, env=args.env, at=args.at) if not args.history else query.Query.parse(**filters)
    until = query.moment(args.at, "--at") if args.history and args.at is not None else None
    from detpack.cli._progress import progress

    with progress(out, "indexing the log", "entries", json=args.json) as told:
        opened = index.open_index(store, args.index, rebuild=args.rebuild_index, progress=told)
    try:
        with opened as idx:
            if args.history:
                history = query.history(idx, args.env, q, until)
                value: dict[str, Any] = {"env": args.env, "history": [p.to_json() for p in history]}
                lines = [_promotion_line(p) for p in history]
            else:
                matches = query.query(idx, q)
                value = {"matches": [m.to_json() for m in matches]}
                lines = _match_lines(matches)
            skipped = index.notes(idx)
            coverage = idx.coverage
    except sqlite3.DatabaseError as exc:  # changed under us, or damaged since it was checked
        where = args.index or "the query index"
        raise OutputError(f"{where}: unreadable ({exc}); run the query again with --rebuild-index") from None
    if skipped:
        first = skipped[0].message
        out.warning(f"the index skipped {count(len(skipped), 'unreadable blob')} (--json lists them): {first}")
    if args.json:
        value["index"] = {"entries": coverage.size, "root": coverage.root, "signed": coverage.matches_checkpoint}
        value["notes"] = [{"log_entry": n.log_index + 1, "digest": f"sha256:{n.digest}", "message": n.message}
                          for n in skipped]  # fmt: skip
        out.stream(_document(value))
    elif lines:
        out.stream(["\n".join(lines)])  # one write: a line per match, thousands of them
    else:
        out.step(f"nothing matches (in {count(coverage.size, 'log entry', 'log entries')})")
    return 0 if lines else 1  # as grep: 1 when nothing matches


def _document(value: dict[str, Any]) -> Iterator[str]:
    """``value`` as JSON with sorted keys, a list's items one a line: stable, greppable, and written by the
    C encoder (an indented dump of 100,000 matches takes seconds)."""

    def dump(item: object) -> str:
        return json.dumps(item, sort_keys=True, ensure_ascii=False)

    keys = sorted(value)
    yield "{"
    for n, key in enumerate(keys):
        end = "," if n + 1 < len(keys) else ""
        item = value[key]
        if isinstance(item, list) and item:
            yield f"\n  {dump(key)}: [\n    "
            yield ",\n    ".join(dump(element) for element in item)
            yield f"\n  ]{end}"
        else:
            yield f"\n  {dump(key)}: {dump(item)}{end}"
    yield "\n}"


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """What to match (with --history, --env and --at say which promotions to list, not what matches)."""
    return {"dep": args.dep, "contains": args.contains, "commit": args.commit, "repo": args.repo,
            "builder": args.builder, "name": args.name, "kind": args.kind, "live": args.live}  # fmt: skip


def _name(names: tuple[str, ...]) -> str:
    if not names:
        return "-"
    return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")


def _match_lines(matches: Any) -> list[str]:
    kind_width = max((len(m.kind) for m in matches), default=0)
    name_width = min(max((len(_name(m.names)) for m in matches), default=0), 60)
    lines = []
    for m in matches:
        said = "; ".join(f"{f.filter} {f.value}" for f in m.facts) or f"pushed {m.time} by {m.author}"
        if m.expired:
            said += f" (expired {m.expired})"
        elif m.held:
            said += " (held)"
        lines.append(f"sha256:{m.digest[:12]}  {m.kind:<{kind_width}}  {_name(m.names):<{name_width}}  {said}")
    return lines


def _promotion_line(p: Any) -> str:
    forced = f"  FORCED: {p.reason}" if p.forced else ""
    until = f"until {p.until}" if p.until else "live"
    return (
        f"{p.log_entry:>6}  {p.time}  sha256:{p.digest[:12]}  {p.kind}  {_name(p.names)}  by {p.author}  "
        f"{until}{forced}"
    )
