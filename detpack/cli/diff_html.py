"""The HTML report of ``detpack diff --html``: one self-contained page (no external assets).

The summary once, on top; then one section per file that differs: what differs grouped by
attribute and likely cause (with member counts), archive-level differences, and the members.
The page stays small whatever the size of the diff: the first ``EXPANDED`` members are shown
open with their text diffs capped at ``DIFF_LINES`` lines; the next ones are listed in one
collapsed block, one row each, up to ``LISTED`` members; the rest are only counted (``--json``
has every difference).
"""

from __future__ import annotations

import html
import json
from typing import Any

from detpack.verify.causes import NO_CAUSE
from detpack.verify.compare import SAME_MEMBERS, STATEMENT_KINDS, Comparison, Difference, FileComparison

#: Members shown open, with their differences and diffs.
EXPANDED = 50
#: Members named at all (the ones after EXPANDED: one collapsed row each).
LISTED = 500
#: Lines of a text diff shown, and characters of each line.
DIFF_LINES = 30
LINE_CHARS = 240
#: Example members named in a group row.
EXAMPLES = 3

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;
color:#1d1f21}
h1{font-size:1.4rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.summary{padding:.8rem 1rem;border-radius:6px;font-weight:600}
.same{background:#e6f4ea;color:#0d652d} .differ{background:#fdecea;color:#a50e0e}
.status{font-weight:600;color:#a50e0e} .ok{color:#0d652d} .note{color:#555}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
td,th{border:1px solid #ddd;padding:.3rem .5rem;vertical-align:top;text-align:left}
th{background:#f5f5f5} code{font-size:.9em;overflow-wrap:anywhere}
.cause{color:#7a4d00;background:#fff4d6;border-radius:4px;padding:0 .3rem}
.evidence{color:#555;font-size:.9em} pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.85em}
.add{color:#0d652d} .del{color:#a50e0e} details{margin:.2rem 0} summary{cursor:pointer}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _v(value: Any) -> str:
    """A value as the text output shows it: strings as they are, others as JSON, None as absent."""
    text = "(absent)" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<code>{_e(text)}</code>"


def _what(d: Difference) -> str:
    return {"added": "added", "removed": "removed", "content": "content", "order": "member order"}.get(
        d.kind, d.attribute
    )


def _diff_pre(detail: str) -> str:
    lines = detail.splitlines()
    rows = []
    for line in lines[:DIFF_LINES]:
        cut = line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + f"… ({len(line) - LINE_CHARS} more characters)"
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else ("del" if line.startswith("-") and not line.startswith("---") else "")
        )
        rows.append(f'<span class="{cls}">{_e(cut)}</span>' if cls else _e(cut))
    if len(lines) > DIFF_LINES:
        rows.append(f"… {len(lines) - DIFF_LINES} more lines (the text output with -v, or --json, has them)")
    body = "\n".join(rows)
    if len(lines) > 12:
        return f"<details><summary>{len(lines)} diff lines</summary><pre>{body}</pre></details>"
    return f"<pre>{body}</pre>"


def _row(d: Difference) -> str:
    if d.kind == "content":
        values = f"{_e(d.a)} → {_e(d.b)} bytes" + (_diff_pre(d.detail) if d.detail else "")
    elif d.kind == "order":
        values = _e(d.detail)
    else:
        values = f"{_v(d.a)} → {_v(d.b)}"
    cause = f'<span class="cause">{_e(d.cause)}</span>' if d.cause else _e(NO_CAUSE)
    evidence = f'<div class="evidence">{_e(d.evidence)}</div>' if d.evidence else ""
    return f"<tr><td><code>{_e(_what(d))}</code></td><td>{values}</td><td>{cause}{evidence}</td></tr>"


_HEAD = "<table><tr><th>what</th><th>A → B</th><th>likely cause</th></tr>"


def _groups(members: dict[str, list[Difference]]) -> str:
    """One row per (what differs, likely cause): how many members, and the first few."""
    groups: dict[tuple[str, str], list[str]] = {}
    for member, diffs in members.items():
        for key in dict.fromkeys((_what(d), d.cause or "") for d in diffs):
            groups.setdefault(key, []).append(member)
    rows = []
    for (what, cause), names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        examples = ", ".join(f"<code>{_e(n)}</code>" for n in names[:EXAMPLES])
        more = f" and {len(names) - EXAMPLES} more" if len(names) > EXAMPLES else ""
        shown = f'<span class="cause">{_e(cause)}</span>' if cause else _e(NO_CAUSE)
        rows.append(
            f"<tr><td><code>{_e(what)}</code></td><td>{shown}</td><td>{len(names)}</td><td>{examples}{more}</td></tr>"
        )
    return (
        "<h3>what differs</h3><table><tr><th>what</th><th>likely cause</th><th>members</th><th>e.g.</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _members(members: dict[str, list[Difference]]) -> str:
    names = list(members)
    parts = [f"<h3>members ({len(names)})</h3>"]
    for member in names[:EXPANDED]:
        diffs = members[member]
        parts.append(
            f"<details open class='member'><summary><code>{_e(member)}</code> — {len(diffs)} difference(s)</summary>"
            + _HEAD
            + "".join(_row(d) for d in diffs)
            + "</table></details>"
        )
    listed = names[EXPANDED:LISTED]
    if listed:
        rows = "".join(
            f"<tr><td><code>{_e(m)}</code></td><td>{_e(', '.join(dict.fromkeys(_what(d) for d in members[m])))}</td>"
            f"<td>{_e(', '.join(dict.fromkeys(d.cause for d in members[m] if d.cause)))}</td></tr>"
            for m in listed
        )
        parts.append(
            f"<details class='more'><summary>{len(listed)} more members, one row each</summary>"
            f"<table><tr><th>member</th><th>what</th><th>likely cause</th></tr>{rows}</table></details>"
        )
    rest = len(names) - EXPANDED - len(listed)
    if rest > 0:
        parts.append(
            f"<p class='note'>… and {rest} more members not listed here: "
            "<code>detpack diff --json</code> has every difference.</p>"
        )
    return "".join(parts)


def _notes(f: FileComparison) -> str:
    return "".join(f"<p class='note'>{_e(n.text)}</p>" for n in f.notes)


def _file(f: FileComparison, single: bool) -> str:
    if f.identical:
        what = "identical in what it asserts" if f.kind in STATEMENT_KINDS else "identical"
        return f"<h2>{_e(f.name)}</h2><p class='status ok'>{what}</p>{_notes(f)}"
    unit = "asserted parts" if f.kind in STATEMENT_KINDS else "members"
    parts = [f"<h2>{_e(f.name)} <small>({_e(f.kind)})</small></h2>"]
    if not single:  # a single file's status is the summary already
        status = SAME_MEMBERS if f.members_differing == 0 and unit == "members" else None
        status = status or f"{f.members_differing} of {f.members_total} {unit} differ"
        parts.append(f"<p class='status'>{status}</p>")
    if f.kind in STATEMENT_KINDS:
        rows = "".join(
            f"<tr><td><code>{_e(d.attribute)}</code></td><td>{_v(d.a)} → {_v(d.b)}</td></tr>" for d in f.differences
        )
        return "".join(parts) + f"<table><tr><th>key path</th><th>A → B</th></tr>{rows}</table>" + _notes(f)
    tally = f.cause_tally()
    if tally:
        parts.append(
            "<p>likely causes: " + ", ".join(f"<span class='cause'>{_e(c)}</span> ({n})" for c, n in tally) + "</p>"
        )
    archive = [d for d in f.differences if d.member is None]
    members: dict[str, list[Difference]] = {}
    for d in f.differences:
        if d.member is not None:
            members.setdefault(d.member, []).append(d)
    if archive:
        label = "whole file" if f.kind == "file" else "whole archive"
        parts.append(f"<h3>{label}</h3>" + _HEAD + "".join(_row(d) for d in archive) + "</table>")
    if members:
        parts.append(_groups(members) + _members(members))
    return "".join(parts) + _notes(f)


def render_html(c: Comparison) -> str:
    cls = "same" if c.identical else "differ"
    extra = "".join(f"<li>only in A: <code>{_e(n)}</code></li>" for n in c.only_a) + "".join(
        f"<li>only in B: <code>{_e(n)}</code></li>" for n in c.only_b
    )
    single = len(c.files) == 1 and not extra
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>detpack diff: {_e(c.summary())}</title><style>{_CSS}</style></head><body>"
        f"<h1>detpack diff</h1><p>A: <code>{_e(c.a)}</code><br>B: <code>{_e(c.b)}</code></p>"
        f"<p class='summary {cls}' id='summary'>{_e(c.summary())}</p>"
        + (f"<ul>{extra}</ul>" if extra else "")
        + "".join(_file(f, single) for f in c.files)
        + "</body></html>\n"
    )
