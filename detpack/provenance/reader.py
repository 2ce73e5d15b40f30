"""Reading provenance back: bytes in, one validated ``Provenance`` value out.

This is the one place detpack turns provenance bytes into values: a bare in-toto statement
(pretty or canonical JSON), or a DSSE envelope of one (one JSON line, the ``.intoto.jsonl``
form, or a JSON document). Every reader of provenance (verify, rebuild, signing, diff, OCI
attestations, the store) calls ``read``; no other module parses a statement or decodes an
envelope's payload. Problems are one-line InputErrors naming the source and what is wrong.
Checking signatures is ``signing.verify``'s job; it takes the ``Envelope`` read here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detpack.digest import canonical_json
from detpack.errors import InputError
from detpack.provenance.statement import JSON, Subject

#: The DSSE payloadType of an in-toto statement.
PAYLOAD_TYPE = "application/vnd.in-toto+json"
_STATEMENT_PREFIX = "https://in-toto.io/Statement/"
_ENVELOPE_KEYS = frozenset({"payload", "payloadType", "signatures"})


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: the payload exactly as carried (decoded from base64), its type and signatures."""

    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_json(self) -> bytes:
        """One JSON line (the ``.intoto.jsonl`` form), newline-terminated."""
        value = {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in self.signatures],
        }
        return canonical_json(value) + b"\n"

    @classmethod
    def parse(cls, data: bytes, source: Path | str) -> Envelope:
        """The envelope in ``data``, whatever its payload (``read`` also checks the payload is a statement)."""
        return _envelope(_json(data, source, "a DSSE envelope"), source)


@dataclass(frozen=True)
class Provenance:
    """A provenance statement as read, with the envelope it came in when it was signed."""

    source: str  # where it was read from, for messages
    statement: JSON  # the statement, as parsed
    payload: bytes  # the statement's exact bytes: the envelope's payload, or the file's bytes
    subjects: tuple[Subject, ...]  # in statement order; sha256 is "" for a subject with no sha256 digest
    predicate_type: str
    envelope: Envelope | None = None  # None for a bare (unsigned) statement

    @property
    def form(self) -> Literal["provenance", "dsse"]:
        return "provenance" if self.envelope is None else "dsse"

    def names(self, sha256: str) -> bool:
        """Whether a subject has this sha256 (hex, with or without ``sha256:``)."""
        want = sha256.removeprefix("sha256:")
        return any(s.sha256 == want for s in self.subjects)


def read(data: bytes, source: Path | str) -> Provenance:
    """A statement or a DSSE envelope of one, validated (InputError naming ``source`` otherwise)."""
    value = _json(data, source, "an in-toto statement or a DSSE envelope")
    if isinstance(value, dict) and "_type" not in value and _ENVELOPE_KEYS & value.keys():
        envelope = _envelope(value, source)
        if envelope.payload_type != PAYLOAD_TYPE:
            raise InputError(
                f"{source}: the envelope's payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE} "
                "(it does not carry an in-toto statement)"
            )
        try:
            inner = json.loads(envelope.payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{source}: the envelope's payload is not JSON (expected an in-toto statement)") from None
        return _statement(inner, envelope.payload, f"{source}: the envelope's payload", str(source), envelope)
    return _statement(value, data, str(source), str(source), None)


def read_file(path: Path) -> Provenance:
    """``read`` of a file (InputError when it is missing or unreadable)."""
    from detpack.atomic import read_input

    return read(read_input(path, "provenance file"), path)


def record_stem(path: Path) -> str:
    """``NAME-VERSION`` of a record file ``NAME-VERSION.provenance.json`` (or ``.intoto.jsonl``, ``.json``):
    what the files that go with it (SBOMs, rebuild attestations) are named after."""
    name = path.name
    for suffix in (".provenance.json", ".intoto.jsonl", ".json"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _json(data: bytes, source: Path | str, expected: str) -> Any:
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{source}: is empty (expected {expected})")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    if len(lines) > 1:
        try:
            json.loads(lines[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        else:
            raise InputError(f"{source}: holds {len(lines)} JSON lines; detpack expects one (expected {expected})")
    raise InputError(f"{source}: not JSON (expected {expected})")


def _envelope(value: Any, source: Path | str) -> Envelope:
    if not isinstance(value, dict) or not value.keys() >= _ENVELOPE_KEYS:
        raise InputError(f"{source}: not a DSSE envelope (needs payload, payloadType and signatures)")
    if not isinstance(value["payloadType"], str):
        raise InputError(f"{source}: corrupt DSSE envelope (payloadType is not a string)")
    try:
        payload = _b64(value["payload"])
    except (TypeError, ValueError, binascii.Error):
        raise InputError(f"{source}: corrupt DSSE envelope (the payload is not base64)") from None
    if not isinstance(value["signatures"], list):
        raise InputError(f"{source}: corrupt DSSE envelope (signatures is not a list)")
    sigs = []
    for number, s in enumerate(value["signatures"], 1):
        try:
            keyid = s.get("keyid", "")
            sigs.append(Signature(keyid if isinstance(keyid, str) else "", _b64(s["sig"])))
        except (TypeError, KeyError, AttributeError, ValueError, binascii.Error):
            raise InputError(f"{source}: corrupt DSSE envelope (signature {number} is not base64)") from None
    return Envelope(payload, value["payloadType"], tuple(sigs))


def _b64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError(text)
    # DSSE allows standard or URL-safe base64, padded or not.
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)


def _statement(value: Any, payload: bytes, where: str, source: str, envelope: Envelope | None) -> Provenance:
    def refuse(why: str) -> InputError:
        return InputError(f"{where}: not an in-toto SLSA provenance statement ({why})")

    if not isinstance(value, dict):
        raise refuse("not a JSON object")
    kind = value.get("_type")
    if not isinstance(kind, str) or not kind.startswith(_STATEMENT_PREFIX):
        raise refuse("no _type" if kind is None else f"_type is {kind!r}")
    if not isinstance(value.get("subject"), list):
        raise refuse("no subject list")
    subjects = []
    for number, s in enumerate(value["subject"], 1):
        digest = s.get("digest") if isinstance(s, dict) else None
        if not isinstance(digest, dict) or not isinstance(s.get("name", ""), str):
            raise refuse(f"subject {number} has no digest")
        sha256 = digest.get("sha256", "")
        subjects.append(Subject(str(s.get("name", "")), sha256 if isinstance(sha256, str) else ""))
    predicate_type = value.get("predicateType")
    if not isinstance(predicate_type, str):
        raise refuse("no predicateType")
    if not isinstance(value.get("predicate", {}), dict):
        raise refuse("its predicate is not an object")
    return Provenance(source, value, payload, tuple(subjects), predicate_type, envelope)


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
    ci: Mapping[str, Any] | None = None  # the CI run that made it (runDetails byproduct "ci")
    references: tuple[str, ...] = ()  # issues the commits since the previous release name
    changes_since: str | None = None  # that release tag
    commits: int = 0  # how many commits since it are recorded
    subjects_since: tuple[str, ...] = ()  # those commits' subjects, newest first
    log_file: str | None = None  # the build log's file beside the provenance


def dig(value: Any, *path: str) -> Any:
    """``value[path[0]][path[1]]…``, or None where a step is missing or not an object."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def summarize(provenance: Provenance) -> Summary:
    """Who built what, when, from which source, with which tools (None where the statement does not say)."""
    predicate = provenance.statement.get("predicate")
    source = dig(predicate, "buildDefinition", "externalParameters", "source")
    toolchain: list[tuple[str, str]] = []
    for dep in dig(predicate, "buildDefinition", "resolvedDependencies") or []:
        if not isinstance(dep, dict) or dep.get("name") == "source":
            continue
        version = dig(dep, "annotations", "version") or dep.get("uri")
        if isinstance(version, str) and dep.get("name") in {"python", "zlib", "deflate", "build", "detpack", "pip"}:
            toolchain.append((str(dep["name"]), version.rsplit("@", 1)[-1]))
        elif dep.get("name") == "build-backend":
            backends = dig(dep, "annotations", "backends") or []
            toolchain.append(("backend", ", ".join(str(b) for b in backends)))
    metadata = dig(predicate, "runDetails", "metadata")
    byproducts = {b.get("name"): b for b in dig(predicate, "runDetails", "byproducts") or [] if isinstance(b, dict)}
    ci = dig(byproducts.get("ci"), "annotations")
    changes = dig(byproducts.get("changes"), "annotations") or {}
    commits = [c for c in changes.get("commits", []) or [] if isinstance(c, dict)]
    log_file = dig(byproducts.get("build.log"), "annotations", "file")
    return Summary(
        subjects=provenance.subjects,
        builder=dig(predicate, "runDetails", "builder", "id"),
        started=dig(metadata, "startedOn"),
        finished=dig(metadata, "finishedOn"),
        invocation=dig(metadata, "invocationId"),
        source_commit=dig(source, "digest", "gitCommit"),
        source_uri=dig(source, "uri"),
        source_dirty=dig(source, "annotations", "dirty"),
        toolchain=tuple(toolchain),
        ci=ci if isinstance(ci, dict) else None,
        references=tuple(str(r) for r in changes.get("references", []) if isinstance(r, str)),
        changes_since=changes.get("since") if isinstance(changes.get("since"), str) else None,
        commits=len(commits),
        subjects_since=tuple(str(c.get("subject", "")) for c in commits),
        log_file=log_file if isinstance(log_file, str) else None,
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
