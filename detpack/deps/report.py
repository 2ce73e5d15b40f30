"""A closure report: what ``deps verify`` found for every file of a closure, as one JSON document.

``deps verify --json`` prints it and ``deps verify -o DIR`` writes it (``DIR/NAME.closure.json``,
beside the rebuild attestations it made); ``store push`` keeps it, and the dashboard draws each
image's closure from it. ``layer --evidence REPORT`` copies each wheel's entry into the layer's
provenance, so an image's statement and SBOMs carry the evidence of every wheel they contain.

Format (``_type`` :data:`REPORT_TYPE`)::

    {"_type": "https://detpack.dev/closure-report/v1",
     "closure": {"name": "pylock.toml", "kind": "pylock|requirements|layer|image", "sha256": "…"},
     "policyVersion": "5", "verifiedOn": "2026-12-07T14:00:00Z",
     "files": [{"name": "idna", "version": "3.10", "file": "idna-3.10-py3-none-any.whl",
                "sha256": "…", "state": "reproduced", "reason": "…", "details": [],
                "evidence": {"kind": "attestation", "name": "….intoto.jsonl", "sha256": "…"} | null}],
     "counts": {"built here": 0, "reproduced": 1, "different": 0, "unverified": 0, "files": 1}}

``closure.sha256`` is the digest of what was verified: the lock's bytes, or the layer blob's or the
image manifest's digest (what ties a report to the image it describes). ``evidence`` names the
statement the state rests on: the build record (``record``) or the signed rebuild attestation
(``attestation``), by file name and the sha256 of its bytes; ``null`` when there is none (an
unverified file, a rebuild run without ``--attest``); ``deps verify -o DIR`` writes the evidence
under its name only when that is one plain file name (``plain_name``), never a path. Parsing is
strict: a report whose shape is not this one, or that lists a file's sha256 twice (two states for
the same bytes), is an ``InputError`` naming where it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

REPORT_TYPE = "https://detpack.dev/closure-report/v1"
REPORT_SUFFIX = ".closure.json"

State = Literal["built here", "reproduced", "different", "unverified"]
STATES: tuple[State, ...] = ("built here", "reproduced", "different", "unverified")
ClosureKind = Literal["pylock", "requirements", "layer", "image"]
_KINDS = ("pylock", "requirements", "layer", "image")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Evidence:
    """The statement a file's state rests on."""

    kind: Literal["record", "attestation"]  # a detpack build record, or a signed rebuild attestation
    name: str  # its file name
    sha256: str  # of its bytes

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256}


@dataclass(frozen=True)
class Entry:
    """One file of the closure and what was found."""

    name: str  # canonical project name
    version: str
    file: str | None  # the file's name (None: a requirements file names none)
    sha256: str
    state: State
    reason: str
    details: tuple[str, ...] = ()
    evidence: Evidence | None = None

    @property
    def label(self) -> str:
        return self.file or f"sha256:{self.sha256[:16]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "file": self.file,
            "sha256": self.sha256,
            "state": self.state,
            "reason": self.reason,
            "details": list(self.details),
            "evidence": self.evidence.to_json() if self.evidence is not None else None,
        }


@dataclass(frozen=True)
class Report:
    closure_name: str  # the closure's file name, or the image reference
    closure_kind: ClosureKind
    closure_sha256: str  # the lock's bytes, the layer blob's or the image manifest's digest (hex)
    policy_version: str  # detpack's canonical policy version the rebuilds ran under
    verified_on: str  # RFC 3339, UTC
    entries: tuple[Entry, ...]

    @property
    def counts(self) -> dict[State, int]:
        return {s: sum(1 for e in self.entries if e.state == s) for s in STATES}

    def by_sha256(self) -> dict[str, Entry]:
        return {e.sha256: e for e in self.entries}

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {str(s): n for s, n in self.counts.items()}
        return {
            "_type": REPORT_TYPE,
            "closure": {"name": self.closure_name, "kind": self.closure_kind, "sha256": self.closure_sha256},
            "policyVersion": self.policy_version,
            "verifiedOn": self.verified_on,
            "files": [e.to_json() for e in self.entries],
            "counts": counts | {"files": len(self.entries)},
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse(data: bytes, where: str) -> Report:
    """A report from its bytes; ``InputError`` naming ``where`` when it is not one."""
    from detpack.errors import InputError

    def bad(why: str) -> InputError:
        return InputError(f"{where}: not a closure report ({why}); make one with detpack deps verify -o DIR")

    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or value.get("_type") != REPORT_TYPE:
        raise bad(f"_type is not {REPORT_TYPE}")
    closure = value.get("closure")
    if not isinstance(closure, dict):
        raise bad("no closure object")
    name, kind, digest = closure.get("name"), closure.get("kind"), closure.get("sha256")
    if not isinstance(name, str) or kind not in _KINDS or not isinstance(digest, str) or not _SHA256.match(digest):
        raise bad("closure needs a name, a kind and a sha256")
    version, when = value.get("policyVersion"), value.get("verifiedOn")
    if not isinstance(version, str) or not isinstance(when, str):
        raise bad("policyVersion and verifiedOn are missing")
    files = value.get("files")
    if not isinstance(files, list):
        raise bad("files is not a list")
    entries = tuple(_entry(f, n, bad) for n, f in enumerate(files, 1))
    first: dict[str, int] = {}
    for n, e in enumerate(entries, 1):
        if first.setdefault(e.sha256, n) != n:  # deps verify lists each file once: which state would count?
            raise bad(f"file {n}: sha256 {e.sha256[:16]}… is file {first[e.sha256]}'s too, each file is listed once")
    return Report(name, kind, digest, version, when, entries)


def _entry(value: object, number: int, bad: Any) -> Entry:
    if not isinstance(value, dict):
        raise bad(f"file {number} is not an object")
    text = {k: value.get(k) for k in ("name", "version", "sha256", "state", "reason")}
    if not all(isinstance(v, str) for v in text.values()):
        raise bad(f"file {number} needs name, version, sha256, state and reason as strings")
    if text["state"] not in STATES or not _SHA256.match(str(text["sha256"])):
        raise bad(f"file {number}: state {text['state']!r} or sha256 is not valid")
    file = value.get("file")
    details = value.get("details", [])
    if (file is not None and not isinstance(file, str)) or not isinstance(details, list):
        raise bad(f"file {number}: file must be a string or null, details a list")
    return Entry(
        str(text["name"]),
        str(text["version"]),
        file,
        str(text["sha256"]),
        text["state"],  # checked against STATES above
        str(text["reason"]),
        tuple(str(d) for d in details),
        evidence_of(value.get("evidence"), f"file {number}", bad),
    )


def plain_name(name: str) -> bool:
    """Whether ``name`` is one plain file name: no folder, not ``.`` or ``..``, no NUL (what may be written in DIR)."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def evidence_of(value: object, label: str, bad: Any) -> Evidence | None:
    """An ``evidence`` object (or null)."""
    if value is None:
        return None
    if (
        not isinstance(value, Mapping)
        or value.get("kind") not in ("record", "attestation")
        or not isinstance(value.get("name"), str)
        or not isinstance(value.get("sha256"), str)
        or not _SHA256.match(str(value.get("sha256")))
    ):
        raise bad(f"{label}: evidence needs kind (record or attestation), name and sha256")
    return Evidence(value["kind"], str(value["name"]), str(value["sha256"]))
