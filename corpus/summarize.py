"""Summarize a ``detpack rebuild --pypi -r LIST --json`` report as a Markdown table with the rate.

    python corpus/summarize.py REPORT.json --list corpus/top100.txt --command "..." > corpus/results/top100.md

Every release falls in one class: *identical* (every wheel byte-identical), *different* (a wheel
content-identical or different), *not comparable* (platform wheels only: a build here cannot name-match
them), *timeout* (given up at --timeout) or *not rebuilt* (any other reason, said). The rate is taken
over releases that publish a pure wheel (``*-none-any.whl``, read from the index's JSON API for those
that were not rebuilt): byte-identical / (those that were rebuilt), and, stricter, byte-identical / every
release with a pure published wheel (a release that could not be rebuilt counts as not reproduced).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any


def classify(entry: dict[str, Any]) -> str:
    reason = entry.get("reason", "")
    if entry["status"] == "byte-identical":
        return "identical"
    if entry["status"] in ("content-identical", "different"):
        return "different"
    if "not comparable here" in reason:
        return "not comparable"
    if reason.startswith("gave up after"):
        return "timeout"
    return "not rebuilt"


def has_pure_wheel(spec: str) -> bool:
    name, _, version = spec.partition("==")
    with urllib.request.urlopen(f"https://pypi.org/pypi/{name}/json", timeout=60) as response:
        files = json.load(response)["releases"].get(version, [])
    return any(f["filename"].endswith("-none-any.whl") for f in files)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--list", required=True, help="the release list the report is of")
    parser.add_argument("--command", required=True, help="the command that made the report")
    parser.add_argument("--date", default=datetime.datetime.now(datetime.UTC).date().isoformat())
    args = parser.parse_args(argv)
    report = json.loads(args.report.read_text(encoding="utf-8"))
    rows: list[str] = []
    classes: dict[str, int] = dict.fromkeys(("identical", "different", "not rebuilt", "not comparable", "timeout"), 0)
    pure_rebuilt = pure_identical = pure_all = 0
    odd: list[str] = []
    unbuilt: list[str] = []
    for entry in report["releases"]:
        spec, kind = entry["release"], classify(entry)
        classes[kind] += 1
        wheels = entry.get("wheels", [])
        pure = any(w["wheel"].endswith("-none-any.whl") for w in wheels) if wheels else has_pure_wheel(spec)
        if pure:
            pure_all += 1
            if kind in ("identical", "different"):
                pure_rebuilt += 1
                pure_identical += kind == "identical"
            else:
                unbuilt.append(f"- {spec}: {kind}: {entry.get('reason', '').removeprefix(spec + ': ')}")
        if not wheels:
            rows.append(f"| {spec} | {kind} | | {cell(entry.get('reason', ''))} |")
        for w in wheels:
            how = "; ".join(
                x
                for x in (
                    f"Generator: {w['generator'] or '?'}",
                    f"pinned {w['pinned'] or 'nothing'}",
                    f"epoch {'unset' if w['epoch'] is None else w['epoch']}",
                    w.get("switch"),
                    w.get("clock"),
                    w.get("replayed"),
                )
                if x
            )
            details = "<br>".join([f"({how})", *map(cell, w["explanation"])])
            rows.append(f"| {spec} | {w['verdict']} | {w['wheel']} | {details} |")
            if w["verdict"] != "byte-identical" and w["wheel"].endswith("-none-any.whl"):
                odd.append(f"- {spec}: {w['verdict']}: " + " / ".join(w["explanation"]))
    out = [
        f"# `detpack rebuild --pypi` over {args.list}",
        "",
        f"Run on {args.date} (UTC), from a detpack checkout:",
        "",
        "```console",
        f"$ {args.command}",
        "```",
        "",
        "| class | releases |",
        "| --- | --- |",
        *(f"| {k} | {n} |" for k, n in classes.items()),
        f"| total | {sum(classes.values())} |",
        "",
        "*identical*: every wheel byte-identical; *different*: content-identical or different; *not comparable*:",
        "platform wheels only (nothing a build here could name-match); *timeout*: given up at --timeout;",
        "*not rebuilt*: any other reason, in the table.",
        "",
        f"Releases publishing a pure wheel: {pure_all}; rebuilt: {pure_rebuilt}; byte-identical: {pure_identical}.",
        f"Byte-identical rate among rebuilt pure-wheel releases: {pure_identical}/{pure_rebuilt} = "
        f"{100 * pure_identical / max(pure_rebuilt, 1):.1f}%; among every pure-wheel release (not rebuilt counts "
        f"against): {pure_identical}/{pure_all} = {100 * pure_identical / max(pure_all, 1):.1f}%.",
        "",
        "Pure wheels that are not byte-identical:",
        "",
        *(odd or ["- none"]),
        "",
        "Releases with a pure published wheel that were not rebuilt:",
        "",
        *(unbuilt or ["- none"]),
        "",
        "| release | verdict | wheel | details / why not |",
        "| --- | --- | --- | --- |",
        *rows,
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
