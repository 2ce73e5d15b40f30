"""The HTML report of ``detpack diff --html``: one self-contained page (no external assets).

Summary on top, one section per file, differences grouped by member, long diffs collapsed.
"""

from __future__ import annotations

import html

from detpack.compare import Comparison, Difference, FileComparison

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;
color:#1d1f21}
h1{font-size:1.4rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.summary{padding:.8rem 1rem;border-radius:6px;font-weight:600}
.same{background:#e6f4ea;color:#0d652d} .differ{background:#fdecea;color:#a50e0e}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1rem}
td,th{border:1px solid #ddd;padding:.3rem .5rem;vertical-align:top;text-align:left}
th{background:#f5f5f5} code{font-size:.9em}
.cause{color:#7a4d00;background:#fff4d6;border-radius:4px;padding:0 .3rem}
.evidence{color:#555;font-size:.9em} pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.85em}
.add{color:#0d652d} .del{color:#a50e0e} details{margin:.2rem 0} summary{cursor:pointer}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _diff_pre(detail: str) -> str:
    rows = []
    for line in detail.splitlines():
        cls = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else ("del" if line.startswith("-") and not line.startswith("---") else "")
        )
        rows.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    body = "\n".join(rows)
    if len(rows) > 12:
        return f"<details><summary>{len(rows)} diff lines</summary><pre>{body}</pre></details>"
    return f"<pre>{body}</pre>"


def _row(d: Difference) -> str:
    what = {"added": "added", "removed": "removed", "content": "content", "order": "member order"}.get(
        d.kind, d.attribute
    )
    if d.kind == "content":
        values = f"{_e(d.a)} → {_e(d.b)} bytes" + (_diff_pre(d.detail) if d.detail else "")
    elif d.kind == "order":
        values = _e(d.detail)
    else:
        values = f"<code>{_e(d.a)}</code> → <code>{_e(d.b)}</code>"
    cause = f'<span class="cause">{_e(d.cause)}</span>' if d.cause else ""
    evidence = f'<div class="evidence">{_e(d.evidence)}</div>' if d.evidence else ""
    return f"<tr><td>{_e(what)}</td><td>{values}</td><td>{cause}{evidence}</td></tr>"


def _file(f: FileComparison) -> str:
    if f.identical:
        return f"<h2>{_e(f.name)}</h2><p class='summary same'>identical</p>"
    parts = [
        f"<h2>{_e(f.name)} <small>({_e(f.kind)})</small></h2>",
        f"<p class='summary differ'>{f.members_differing} of {f.members_total} members differ</p>",
    ]
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
    head = "<table><tr><th>what</th><th>A → B</th><th>likely cause</th></tr>"
    if archive:
        parts.append("<h3>whole archive</h3>" + head + "".join(_row(d) for d in archive) + "</table>")
    for member, diffs in members.items():
        parts.append(
            f"<details open><summary><code>{_e(member)}</code> — {len(diffs)} difference(s)</summary>"
            + head
            + "".join(_row(d) for d in diffs)
            + "</table></details>"
        )
    return "".join(parts)


def render_html(c: Comparison) -> str:
    cls = "same" if c.identical else "differ"
    extra = "".join(f"<li>only in A: <code>{_e(n)}</code></li>" for n in c.only_a) + "".join(
        f"<li>only in B: <code>{_e(n)}</code></li>" for n in c.only_b
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>detpack diff: {_e(c.summary())}</title><style>{_CSS}</style></head><body>"
        f"<h1>detpack diff</h1><p>A: <code>{_e(c.a)}</code><br>B: <code>{_e(c.b)}</code></p>"
        f"<p class='summary {cls}' id='summary'>{_e(c.summary())}</p>"
        + (f"<ul>{extra}</ul>" if extra else "")
        + "".join(_file(f) for f in c.files)
        + "</body></html>\n"
    )
