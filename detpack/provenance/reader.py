"""Reading provenance back: a statement, or a DSSE envelope around one, validated once.

Every reader of provenance (verify, rebuild, signing, OCI attestations, the store) goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.errors import InputError
from detpack.provenance.statement import JSON, Subject


@dataclass(frozen=True)
class Summary:
    """What a statement says about who built what, when, from which source, with which tools."""

    subjects: tuple[Subject, ...]
    builder: str | None
    started: str | None
    finished: str | None
    invocation: str | None
    source_commit: str | None
    source_uri: str | None
    source_dirty: bool | None
    toolchain: tuple[tuple[str, str], ...]  # (name, version or uri), in statement order


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def parse_statement(payload: bytes, source: Path | str) -> JSON:
    """An in-toto statement from its bytes (named errors for anything else)."""
    try:
        value = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{source}: the provenance is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("subject"), list):
        raise InputError(f"{source}: not an in-toto statement (no subject list)")
    return value


def summarize(statement: JSON) -> Summary:
    subjects = tuple(
        Subject(str(s.get("name", "")), str(_get(s, "digest", "sha256") or ""))
        for s in statement.get("subject", [])
        if isinstance(s, dict)
    )
    predicate = statement.get("predicate")
    source = _get(predicate, "buildDefinition", "externalParameters", "source")
    toolchain: list[tuple[str, str]] = []
    for dep in _get(predicate, "buildDefinition", "resolvedDependencies") or []:
        if not isinstance(dep, dict) or dep.get("name") == "source":
            continue
        version = _get(dep, "annotations", "version") or dep.get("uri")
        if isinstance(version, str) and dep.get("name") in {"python", "zlib", "build", "detpack", "pip"}:
            toolchain.append((str(dep["name"]), version.rsplit("@", 1)[-1]))
        elif dep.get("name") == "build-backend":
            backends = _get(dep, "annotations", "backends") or []
            toolchain.append(("backend", ", ".join(str(b) for b in backends)))
    metadata = _get(predicate, "runDetails", "metadata")
    return Summary(
        subjects=subjects,
        builder=_get(predicate, "runDetails", "builder", "id"),
        started=_get(metadata, "startedOn"),
        finished=_get(metadata, "finishedOn"),
        invocation=_get(metadata, "invocationId"),
        source_commit=_get(source, "digest", "gitCommit"),
        source_uri=_get(source, "uri"),
        source_dirty=_get(source, "annotations", "dirty"),
        toolchain=tuple(toolchain),
    )


def check_policy(
    summary: Summary,
    artifacts: Mapping[str, str],
    *,
    source_commit: str | None = None,
    builder: str | None = None,
) -> list[str]:
    """Why ``artifacts`` (label -> sha256) do not match the statement; empty when they all do."""
    problems: list[str] = []
    digests = {s.sha256 for s in summary.subjects}
    for label, digest in artifacts.items():
        if digest not in digests:
            problems.append(f"{label}: sha256:{digest[:16]}… is not a subject of the provenance")
    if source_commit is not None:
        recorded = summary.source_commit
        if recorded is None:
            problems.append("the provenance records no source commit")
        elif not recorded.startswith(source_commit.lower()):
            problems.append(f"source commit is {recorded}, not {source_commit}")
    if builder is not None and summary.builder != builder:
        problems.append(f"builder is {summary.builder!r}, not {builder!r}")
    return problems
