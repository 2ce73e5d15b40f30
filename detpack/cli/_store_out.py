"""What ``detpack store`` commands print: a JSON value or its lines, and a promotion (shared by the
commands in ``store`` and ``store_govern``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from detpack.cli._output import Output


def _emit(out: Output, args: argparse.Namespace, value: Any, lines: list[str]) -> None:
    if args.json:
        out.result(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            out.result(line)


def _promoted(p: Any, args: argparse.Namespace, out: Output) -> int:
    if p.forced:
        why = f", because: {p.why}" if p.why else ""
        out.warning(f"promoted without verified provenance ({p.reason}{why}); this is logged")
    value = {"env": p.env, "digest": f"sha256:{p.digest}", "user": p.user, "time": p.time, "ci_run": p.ci_run,
             "forced": p.forced, "reason": p.reason, "why": p.why, "policy": p.policy, "vsa": p.vsa}  # fmt: skip
    lines = [f"promoted  sha256:{p.digest} -> {p.env}  by {p.author or p.user} at {p.time}"]
    if p.approvers:
        value["approvals"] = list(p.approvers)
        lines.append(f"  approved by {', '.join(p.approvers)}")
    if p.vsa is not None:
        lines.append(f"  policy sha256:{p.policy}; signed VSA sha256:{p.vsa} (store show {p.vsa[:12]})")
    _emit(out, args, value, lines)
    return 0
