"""Compare two provenance statements by what they assert, not by their bytes.

A statement asserts its subjects and its build definition (build type, external and internal
parameters, resolved dependencies); everything outside ``predicate.runDetails`` counts.
``runDetails`` (start and finish times, invocation id, builder, byproducts such as the build
log's digest) describes one run and differs between any two builds: it is reported as
information, never as a difference. A DSSE envelope (``*.intoto.jsonl``) is compared by the
statement in its payload; its signatures are information too (another signer, or a signature
over another payload, is expected when two builders each sign their own run).

Key paths name list items by their ``name`` where a list holds named objects (subjects,
resolved dependencies, byproducts), so a reordered list is not a difference and a change says
which item changed: ``subject["pkg-1.0.tar.gz"].digest.sha256``. Pure: takes bytes, returns
values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from detpack.errors import InputError
from detpack.provenance import reader

Form = Literal["provenance", "dsse"]

#: Where a change sits: the top-level parts of a statement, by their short names.
PARTS = (
    "_type",
    "subject",
    "predicateType",
    "buildType",
    "externalParameters",
    "internalParameters",
    "resolvedDependencies",
)


@dataclass(frozen=True, slots=True)
class Change:
    """One key path whose value differs."""

    part: str  # which asserted part it belongs to (one of PARTS, or another top-level key)
    path: str  # full key path from the statement root, e.g. subject["x.whl"].digest.sha256
    a: Any  # value in A (None when absent)
    b: Any  # value in B (None when absent)


@dataclass(frozen=True, slots=True)
class Read:
    """A provenance file as read: its form, the statement, and the envelope's signer keyids."""

    form: Form
    statement: dict[str, Any]
    payload_type: str | None  # the envelope's payloadType; None for a plain statement
    keyids: tuple[str, ...]  # the envelope's signature keyids, sorted; () for a plain statement
    signatures: tuple[bytes, ...]  # the envelope's signatures, sorted


@dataclass(frozen=True)
class StatementComparison:
    """What differs between two statements: in what they assert, and in their run details."""

    asserted: tuple[Change, ...]  # differences in what the statements assert
    run_details: tuple[str, ...]  # key paths under predicate.runDetails that differ (information)
    parts: tuple[str, ...]  # the asserted parts present in either statement, in PARTS order

    @property
    def parts_differing(self) -> int:
        return len({c.part for c in self.asserted})


def read(data: bytes, name: str) -> Read | None:
    """The statement in ``data`` (a statement, or a DSSE envelope of one), or None if it is neither."""
    try:
        provenance = reader.read(data, name)
    except InputError:
        return None
    envelope = provenance.envelope
    if envelope is None:
        return Read("provenance", provenance.statement, None, (), ())
    keyids = tuple(sorted(s.keyid for s in envelope.signatures))
    sigs = tuple(sorted(s.sig for s in envelope.signatures))
    return Read("dsse", provenance.statement, envelope.payload_type, keyids, sigs)


def _key(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of objects keyed by their unique ``name``, or None when they are not all named."""
    named: dict[str, Any] = {}
    for item in items:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name in named:
            return None
        named[name] = item
    return named or None


def _walk(a: Any, b: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return
    if isinstance(a, list) and isinstance(b, list):
        na, nb = _named(a), _named(b)
        if na is not None and nb is not None:
            for name in [*na, *(n for n in nb if n not in na)]:
                yield from _walk(na.get(name), nb.get(name), f"{path}[{_key(name)}]")
            return
        if len(a) == len(b) and any(isinstance(x, dict | list) for x in (*a, *b)):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                yield from _walk(x, y, f"{path}[{i}]")
            return
    yield path, a, b  # a scalar, a list of scalars, or a change of type: the whole value


def _part(path: str) -> str:
    for part in ("buildType", "externalParameters", "internalParameters", "resolvedDependencies"):
        if path.startswith(f"predicate.buildDefinition.{part}"):
            return part
    head = path.split(".", 1)[0].split("[", 1)[0]
    return head


def _without_run_details(statement: dict[str, Any]) -> dict[str, Any]:
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        return statement
    return {**statement, "predicate": {k: v for k, v in predicate.items() if k != "runDetails"}}


def _run_details(statement: dict[str, Any]) -> Any:
    predicate = statement.get("predicate")
    return predicate.get("runDetails") if isinstance(predicate, dict) else None


def compare_statements(a: dict[str, Any], b: dict[str, Any]) -> StatementComparison:
    walked = _walk(_without_run_details(a), _without_run_details(b), "")
    rank = {part: i for i, part in enumerate(PARTS)}
    # Stable sort: subjects first, then the build definition; paths stay sorted within a part.
    asserted = tuple(sorted((Change(_part(p), p, va, vb) for p, va, vb in walked), key=lambda c: rank.get(c.part, 99)))
    run = tuple(path for path, _, _ in _walk(_run_details(a), _run_details(b), ""))
    present = {_part(p) for s in (a, b) for p in _top_paths(s)}
    parts = tuple([p for p in PARTS if p in present] + sorted(present - set(PARTS)))
    return StatementComparison(asserted, run, parts)


def _top_paths(statement: dict[str, Any]) -> Iterator[str]:
    for key, value in statement.items():
        if key == "predicate" and isinstance(value, dict):
            definition = value.get("buildDefinition")
            if isinstance(definition, dict):
                yield from (f"predicate.buildDefinition.{k}" for k in definition)
            yield from (f"predicate.{k}" for k in value if k not in ("buildDefinition", "runDetails"))
        else:
            yield key


def short_run_details(paths: tuple[str, ...], limit: int = 6) -> str:
    """``startedOn, finishedOn, invocationId, byproducts["build.log"]`` (and N more)."""
    names: list[str] = []
    first = ("metadata.startedOn", "metadata.finishedOn", "metadata.invocationId")
    for path in sorted(
        paths, key=lambda p: (first.index(p) if p in first else len(first), not p.startswith("metadata."))
    ):
        name = path.removeprefix("metadata.")
        if name.startswith("byproducts["):
            name = name.split("]", 1)[0] + "]"
        if name not in names:
            names.append(name)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


#: The kinds of resolved dependency the native toolchain records (``build/native.py``).
NATIVE_KINDS = frozenset({"tool", "system files", "os", "libc"})


def toolchain_drift(a: dict[str, Any], b: dict[str, Any]) -> tuple[str, ...]:
    """One line per native tool, system package, OS or C library that differs between two statements:
    ``gcc: 12.2.0 (gcc-12 12.2.0-14) vs 13.3.0 (gcc-13 13.3.0-6)``, ``libssl-dev 3.0.15-1 vs 3.0.17-1``."""
    na, nb = _native(a), _native(b)
    lines = [*_image_drift(a, b), *_canonical_drift(a, b)]
    for name in sorted(set(na) | set(nb)):
        x, y = na.get(name), nb.get(name)
        if x == y:
            continue
        if x is None or y is None:
            there = x or y
            assert there is not None
            lines.append(f"{name} {_native_version(there)} only in {'A' if y is None else 'B'}".replace("  ", " "))
            continue
        vx, vy = _native_version(x), _native_version(y)
        if vx != vy:
            lines.append(f"{name}: {vx} vs {vy}")
        elif x.get("digest") != y.get("digest"):
            lines.append(f"{name}: {vx} in both, but another binary (sha256 {_sha(x)} vs {_sha(y)})")
        else:
            lines.append(f"{name}: {vx} in both, but what it read or where it is differs")
    return tuple(lines)


def _image_drift(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    """The toolchain image, when the two were built in different ones (or one in none): the first
    cause to name, every tool, header and library of the build came from it."""
    none = "none (the builder's own system)"
    ia, ib = _image(a), _image(b)
    if (ia and ia.partition("@")[2]) != (ib and ib.partition("@")[2]):  # the same image from another place is not
        yield f"toolchain image: {ia or none} vs {ib or none}"


def _image(statement: dict[str, Any]) -> str | None:
    for dep in statement.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", []):
        if isinstance(dep, dict) and dep.get("name") == "toolchain image":
            digest = dep.get("digest", {}).get("sha256", "?") if isinstance(dep.get("digest"), dict) else "?"
            return f"{str(dep.get('uri', '')).split('@')[0]}@sha256:{str(digest)[:12]}"
    return None


def _canonical_drift(a: dict[str, Any], b: dict[str, Any]) -> Iterator[str]:
    """What wrote the canonical bytes, when it differs: detpack's policy version, and its deflate."""
    pa, pb = _policy(a), _policy(b)
    if pa != pb:
        yield (
            f"detpack's canonical policy: {pa or 'not recorded'} vs {pb or 'not recorded'} (other policies write "
            "other bytes by design; rebuild with the detpack that made the record)"
        )
    da, db = _deflate(a), _deflate(b)
    if da != db and pa == pb:
        yield f"deflate: {da or 'not recorded'} vs {db or 'not recorded'}"


def _policy(statement: dict[str, Any]) -> str | None:
    internal = statement.get("predicate", {}).get("buildDefinition", {}).get("internalParameters", {})
    version = internal.get("policyVersion") if isinstance(internal, dict) else None
    return str(version) if version is not None else None


def _deflate(statement: dict[str, Any]) -> str | None:
    for dep in statement.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", []):
        notes = dep.get("annotations") if isinstance(dep, dict) else None
        if dep.get("name") == "deflate" and isinstance(notes, dict):
            return f"{notes.get('implementation')} {notes.get('version')}"
    return None


def _native(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = statement.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", [])
    out: dict[str, dict[str, Any]] = {}
    for dep in deps if isinstance(deps, list) else []:
        notes = dep.get("annotations") if isinstance(dep, dict) else None
        if isinstance(notes, dict) and notes.get("kind") in NATIVE_KINDS and isinstance(dep.get("name"), str):
            out[dep["name"]] = dep
    return out


def _native_version(dep: dict[str, Any]) -> str:
    notes = dep.get("annotations", {})
    if notes.get("kind") == "os":
        return str(notes.get("PRETTY_NAME") or f"{notes.get('ID', '')} {notes.get('VERSION_ID', '')}".strip())
    package = notes.get("package") if isinstance(notes.get("package"), dict) else None
    line = str(notes.get("version", ""))
    if notes.get("kind") == "tool":
        numbers = [w for w in line.replace("(", " ").replace(")", " ").split() if w[:1].isdigit() and "." in w]
        shown = numbers[-1] if numbers else line
        return f"{shown} ({package['name']} {package['version']})" if package else shown
    return f"{line} ({package['name']} {package['version']})" if package and notes.get("kind") == "libc" else line


def _sha(dep: dict[str, Any]) -> str:
    return str(dep.get("digest", {}).get("sha256", "?"))[:12]
