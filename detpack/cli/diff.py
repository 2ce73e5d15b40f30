"""``detpack diff A B``: say whether two builds match, and why not.

Exit 0 identical, 1 different, 2 error. Text on stdout (summary first), ``--json`` for
machines (schema: ``detpack/schemas/diff-v1.schema.json``), ``--html FILE`` for people.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from detpack.atomic import write_bytes
from detpack.cli._output import Output
from detpack.cli.diff_html import render_html
from detpack.verify.causes import NO_CAUSE
from detpack.verify.compare import (
    SAME_MEMBERS,
    STATEMENT_KINDS,
    Comparison,
    Difference,
    FileComparison,
    compare_paths,
)
from detpack.wording import shown

SCHEMA_ID = "https://detpack.dev/schemas/diff/v1"


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "diff",
        help="explain the differences between two archives or two dist folders",
        description="Compare two wheels, zips, jars, tars, tar.gz or gz files, or two folders of them "
        "(paired by name): which member differs in what, and the likely cause. Exit 0 same, 1 differ.",
    )
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--content-only", action="store_true", help="compare after canonicalizing both sides")
    p.add_argument("--json", action="store_true", help="print JSON (schema diff-v1) instead of text")
    p.add_argument("--html", type=Path, metavar="FILE", help="also write a self-contained HTML report")
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--quiet", "-q", action="count", default=0, help="only the summary line")


class _Lazy(list):  # type: ignore[type-arg]
    """A list the JSON encoder walks without the converted items ever existing all at once.

    A 20k-member archive compared with its normalized form has ~80k differences; as dicts they
    would triple the memory of the report itself.
    """

    def __init__(self, source: Sequence[Any], convert: Callable[[Any], Any]) -> None:
        super().__init__()
        self._source, self._convert = source, convert

    def __iter__(self) -> Iterator[Any]:
        return (self._convert(item) for item in self._source)

    def __len__(self) -> int:
        return len(self._source)


def to_json(c: Comparison) -> dict[str, Any]:
    return {
        "schema": SCHEMA_ID,
        "a": c.a,
        "b": c.b,
        "identical": c.identical,
        "contentOnly": c.content_only,
        "summary": c.summary(),
        "onlyA": list(c.only_a),
        "onlyB": list(c.only_b),
        "files": [
            {
                "name": f.name,
                "kind": f.kind,
                "identical": f.identical,
                "membersTotal": f.members_total,
                "membersDiffering": f.members_differing,
                "causes": [{"cause": c, "members": n} for c, n in f.cause_tally()],
                "differences": _Lazy(f.differences, dataclasses.asdict),
                "notes": [{"topic": n.topic, "keys": list(n.keys), "text": n.text} for n in f.notes],
            }
            for f in c.files
        ],
    }


def _value(v: Any) -> str:
    return "(absent)" if v is None else json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v


def _short(v: Any, limit: int = 100) -> str:
    """A value on one line, cut in the middle when long (a sha256 digest always fits)."""
    text = _value(v)
    return text if len(text) <= limit else f"{text[: limit // 2 - 1]}…{text[-(limit // 2 - 1) :]}"


def describe(d: Difference) -> str:
    """One line for a difference, without the cause."""
    if d.kind == "added":
        return f"added ({d.b} bytes)"
    if d.kind == "removed":
        return f"removed ({d.a} bytes)"
    if d.kind == "content":
        return f"content differs ({d.a} vs {d.b} bytes)"
    if d.kind == "order":
        return f"member order differs: {d.detail}"
    if d.kind == "provenance":
        return f"{d.attribute}: {_short(d.a)} -> {_short(d.b)}"
    return f"{d.attribute}: {_value(d.a)} -> {_value(d.b)}"


def because(d: Difference) -> str:
    if d.cause:
        return f"  [likely cause: {d.cause}; {d.evidence}]" if d.evidence else f"  [likely cause: {d.cause}]"
    return f"  [{NO_CAUSE}; {d.evidence}]" if d.evidence else f"  [{NO_CAUSE}]"


def grouped(f: FileComparison) -> tuple[list[Difference], dict[str, list[Difference]]]:
    archive = [d for d in f.differences if d.member is None]
    members: dict[str, list[Difference]] = {}
    for d in f.differences:
        if d.member is not None:
            members.setdefault(d.member, []).append(d)
    return archive, members


def render_text(c: Comparison, verbose: int) -> list[str]:
    lines = [c.summary(), *c.toolchain]
    for name in c.only_a:
        lines.append(f"only in A: {shown(name)}")
    for name in c.only_b:
        lines.append(f"only in B: {shown(name)}")
    for f in c.files:
        if f.identical:
            if len(c.files) > 1:
                what = "identical in what it asserts" if f.kind in STATEMENT_KINDS else "identical"
                lines.append(f"== {f.name}: {what}")
            lines += [f"  {n.text}" for n in f.notes if n.topic != "toolchain"]
            continue
        what = "asserted parts" if f.kind in STATEMENT_KINDS else "members"
        if f.members_differing == 0 and f.kind not in STATEMENT_KINDS:
            lines.append(f"== {f.name} ({f.kind}): {SAME_MEMBERS}")
        else:
            lines.append(f"== {f.name} ({f.kind}): {f.members_differing} of {f.members_total} {what} differ")
        if f.kind in STATEMENT_KINDS:
            lines += [f"  {describe(d)}" for d in f.differences]
            lines += [f"  {n.text}" for n in f.notes if n.topic != "toolchain"]
            continue
        lines += [f"  {n.text}" for n in f.notes if n.topic != "toolchain"]
        tally = f.cause_tally()
        if tally:
            lines.append("  likely causes: " + ", ".join(f"{cause} ({n})" for cause, n in tally))
        archive, members = grouped(f)
        for d in archive:
            lines.append(f"  [{'archive' if f.kind != 'file' else 'file'}] {describe(d)}{because(d)}")
            if d.kind == "content" and d.detail:
                lines += _detail_lines(d.detail, verbose, "    ")
        for member, diffs in members.items():
            lines.append(f"  {shown(member)}")  # an archive's name: a line break in it is no line of ours
            for d in diffs:
                lines.append(f"    {describe(d)}{because(d)}")
                if d.kind == "content" and d.detail:
                    lines += _detail_lines(d.detail, verbose, "      ")
    return lines


def _detail_lines(detail: str, verbose: int, indent: str) -> list[str]:
    rows = detail.splitlines()
    cap = len(rows) if verbose > 0 else 24
    out = [f"{indent}{ln}" for ln in rows[:cap]]
    if len(rows) > cap:
        out.append(f"{indent}... {len(rows) - cap} more lines (-v shows all, --html collapses)")
    return out


def run(args: argparse.Namespace, out: Output) -> int:
    comparison = compare_paths(args.a, args.b, content_only=args.content_only)
    if args.html is not None:
        write_bytes(args.html, render_html(comparison).encode("utf-8"))
    if args.json:
        out.stream(json.JSONEncoder(ensure_ascii=False, indent=2).iterencode(to_json(comparison)))
    elif out.verbosity < 0:
        out.result(comparison.summary())
    else:
        out.result("\n".join(render_text(comparison, out.verbosity)))
    return 0 if comparison.identical else 1
