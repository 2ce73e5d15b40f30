"""Text rendering of ``detpack store show`` (the value comes from ``detpack.store.show``)."""

from __future__ import annotations

from typing import Any

from detpack.store.show import describe

__all__ = ["describe", "render"]


def render(value: dict[str, Any]) -> list[str]:
    pushed = value["pushed"]
    state = "live" if value["live"] else "not live"
    if value["expired"]:
        state = f"expired {value['expired']}"
    lines = [
        f"{value['digest']}  {value['kind']}, {value['size']} bytes, {state}{', held' if value['held'] else ''}",
        f"  names:        {', '.join(value['names']) or '-'}",
        f"  pushed:       {pushed['time']} by {pushed['user']} (log entry {pushed['log_entry']})",
    ]
    if value["live_in"]:
        lines.append(f"  live in:      {', '.join(value['live_in'])}")
    for p in value["promotions"]:
        extra = f" ({p['ci_run']})" if p["ci_run"] else ""
        forced = f" FORCED: {p['reason']}" if p["forced"] else ""
        gate = f" (policy {p['policy'][:19]}…, VSA {p['vsa'][:19]}…)" if p.get("vsa") else ""
        who = p.get("author") or p["user"]
        if p.get("approvals"):
            who += f" (approved by {', '.join(p['approvals'])})"
        lines.append(f"  promoted:     {p['env']} at {p['time']} by {who}{extra}{gate}{forced}")
    if value["kind"] == "policy":
        lines.append(f"  gates:        {', '.join(value['environments']) or '- (replaced)'}")
        return lines
    if value["kind"] == "vsa":
        for v in value["verdict_of"]:
            lines.append(f"  verdict of:   {v['digest'][:23]}… -> {v['env']} (log entry {v['log_entry']})")
        return lines
    if value["kind"] in ("provenance", "attestation"):
        lines.append(f"  subjects:     {', '.join(s[:23] + '…' for s in value['subjects'])}")
        lines.append(f"  signed by:    {', '.join(k[:16] for k in value['signed_by']) or 'unsigned'}")
        return lines
    if value["kind"] == "image":
        lines.append(f"  reference:    {value['reference']}")
        parts = [("config", value["config"])] + [(f"layer {n}", d) for n, d in enumerate(value["layers"], 1)]
        for label, part in parts:
            if part is not None:
                held = f"{part['size']} bytes" if part["stored"] else "NOT IN THE STORE"
                lines.append(f"  {label + ':':<13} {part['digest'][:23]}…  {held}")
    for image in value.get("images", []):
        lines.append(f"  in image:     {', '.join(image['names']) or '-'} ({image['digest'][:23]}…)")
    prov = value.get("provenance")
    if prov is None:
        lines.append("  provenance:   none in the store")
        return lines
    lines.append(f"  provenance:   {prov['digest'][:23]}… ({', '.join(prov['names'])})")
    lines.append(f"  signed by:    {', '.join(k[:16] for k in prov['signed_by']) or 'unsigned'}")
    if "error" in prov:
        lines.append(f"  unreadable:   {prov['error']}")
        return lines
    prov = {k: "-" if v is None else v for k, v in prov.items()}
    source = prov["source_commit"]
    if prov["source_dirty"] is True:
        source += " (dirty tree)"
    lines += [
        f"  built by:     {prov['builder']} ({prov['invocation']})",
        f"  built:        {prov['started']} .. {prov['finished']}",
        f"  source:       {source}{'  ' + prov['source_uri'] if prov['source_uri'] != '-' else ''}",
        f"  toolchain:    {', '.join(f'{k} {v}' for k, v in prov['toolchain'].items()) or '-'}",
    ]
    ci = prov["ci"] if isinstance(prov["ci"], dict) else {}
    if ci:
        said = ", ".join(str(ci[k]) for k in ("system", "event", "ref") if ci.get(k))
        lines.append(f"  ci run:       {ci.get('runUrl', '-')} ({said})")
        if ci.get("pullRequest"):
            lines.append(f"  pull request: #{ci['pullRequest']} {ci.get('pullRequestUrl', '')}".rstrip())
    if prov["references"] != "-" and prov["references"]:
        since = prov["changes_since"] if prov["changes_since"] != "-" else "the first commit"
        lines.append(f"  issues:       {', '.join(prov['references'])} ({prov['commits']} commits since {since})")
    log = prov["build_log"] if isinstance(prov["build_log"], dict) else None
    if log:
        where = (
            f"stored as {log['name']} ({log['digest'][:23]}…)" if log["digest"] else f"{log['name']} (not in the store)"
        )
        lines.append(f"  build log:    {where}")
    return lines
