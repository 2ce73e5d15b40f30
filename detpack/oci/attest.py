"""Provenance for layers and images: what went in, down to each wheel's own build record.

A layer's statement names the layer blob as its subject and lists every input: each
``--add`` source with a digest of its tree, each wheel with its sha256 and, when a
``detpack build`` provenance beside the wheel names that sha256 as a subject, that
statement's digest and the source commit it records. An image's statement names the
manifest and lists the base image, every layer blob with its own statement's inputs, so
the chain runs from source commit to deployed image. Pure except for reading the files named.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detpack import __version__, policy
from detpack.digest import sha256_hex
from detpack.errors import InputError
from detpack.provenance import reader
from detpack.provenance.statement import (
    BUILDER_ID,
    IMAGE_BUILD_TYPE,
    LAYER_BUILD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    rfc3339,
)

JSON = dict[str, Any]


@dataclass(frozen=True)
class WheelOrigin:
    """A wheel's own ``detpack build`` provenance, found beside it."""

    provenance_name: str
    provenance_sha256: str
    source: JSON  # the build's externalParameters.source (commit, uri, tree digest)
    builder: str | None = None  # the build's runDetails.builder.id


def provenance_path(artifact: Path) -> Path:
    """Where detpack writes the statement for a layer or image output."""
    return artifact.with_name(artifact.name + ".provenance.json")


def image_provenance_path(layout: Path, tag: str) -> Path:
    """``DIR.TAG.provenance.json`` beside the layout directory (one per tag)."""
    resolved = layout.resolve()
    return resolved.with_name(f"{resolved.name}.{tag}.provenance.json")


def _provenance(path: Path) -> reader.Provenance | None:
    """The statement (or envelope of one) at ``path``; None when it is missing or not provenance."""
    try:
        return reader.read(path.read_bytes(), path)
    except (OSError, InputError):
        return None


def read_statement(path: Path, subject_digest: str) -> tuple[JSON, str] | None:
    """The bare statement at ``path`` and its file's sha256, if it names ``subject_digest`` as a subject."""
    provenance = _provenance(path)
    if provenance is None or provenance.envelope is not None or not provenance.names(subject_digest):
        return None
    if not isinstance(provenance.statement.get("predicate", {}).get("buildDefinition"), dict):
        return None
    return provenance.statement, sha256_hex(provenance.payload)


def names_subject(path: Path, digest: str) -> bool:
    """Whether the statement (or DSSE envelope of one) at ``path`` has ``digest`` as a subject."""
    if path.name.endswith(".intoto.jsonl"):
        provenance = _provenance(path)
        return provenance is not None and provenance.envelope is not None and provenance.names(digest)
    return read_statement(path, digest) is not None


def origin(records: Sequence[JSON]) -> tuple[str | None, str | None]:
    """(source URL, revision) when every git commit the layers' inputs name is the same one."""
    commits: set[str] = set()
    remotes: set[str] = set()

    def visit(rd: JSON) -> None:
        digest = rd.get("digest") or {}
        if isinstance(digest, dict) and digest.get("gitCommit"):
            commits.add(str(digest["gitCommit"]))
        annotations = rd.get("annotations") or {}
        if isinstance(annotations, dict):
            if annotations.get("remote"):
                remotes.add(str(annotations["remote"]))
            uri = str(rd.get("uri", ""))
            if uri.startswith("git+") and "@" in uri:
                remotes.add(uri[4:].rsplit("@", 1)[0])
            if isinstance(annotations.get("source"), dict):
                visit(annotations["source"])
            for child in annotations.get("inputs", []) or []:
                if isinstance(child, dict):
                    visit(child)

    for record in records:
        visit(record)
    revision = next(iter(commits)) if len(commits) == 1 else None
    source = next(iter(remotes)) if len(remotes) == 1 and revision else None
    return source, revision


def _wheel_origin(wheel: Path, sha256: str) -> WheelOrigin | None:
    """The statement beside ``wheel`` whose subjects include its sha256, if any."""
    for candidate in sorted(wheel.parent.glob("*.provenance.json")):
        provenance = _provenance(candidate)
        if provenance is None or provenance.envelope is not None or not provenance.names(sha256):
            continue  # not a statement (or not readable), or about other files: the wheel is recorded without origin
        predicate = provenance.statement.get("predicate", {})
        external = _dict(predicate.get("buildDefinition")).get("externalParameters")
        if not isinstance(external, dict):
            continue  # not a build's statement
        source = external.get("source", {})
        builder = _dict(_dict(predicate.get("runDetails")).get("builder")).get("id")
        return WheelOrigin(
            candidate.name,
            sha256_hex(provenance.payload),
            source if isinstance(source, dict) else {},
            builder if isinstance(builder, str) else None,
        )
    return None


def _dict(value: object) -> JSON:
    return value if isinstance(value, dict) else {}


def source_descriptor(path: Path, as_given: str, digest: str) -> JSON:
    """A ``--add`` source: the digest of what was packed from it and, in a git work tree, the commit."""
    rd: JSON = {"name": as_given, "digest": {"sha256": digest}}
    if path.is_dir():
        from detpack.git import git_info

        info = git_info(path)
        if info is not None:
            rd["digest"]["gitCommit"] = info.commit
            rd["annotations"] = {"dirty": info.dirty, **({"remote": info.remote} if info.remote else {})}
    return rd


def wheel_descriptor(path: Path, sha256: str, evidence: JSON | None = None) -> JSON:
    """A wheel input: its sha256, its own build record when one beside it names it, and ``evidence``
    (``layer --evidence``: what a closure report found for these bytes) under ``annotations.evidence``."""
    rd: JSON = {"name": path.name, "digest": {"sha256": sha256}}
    origin = _wheel_origin(path, sha256)
    annotations: JSON = {}
    if origin is not None:
        annotations = {
            "provenance": {"name": origin.provenance_name, "digest": {"sha256": origin.provenance_sha256}},
            "source": origin.source,
            **({"builder": {"id": origin.builder}} if origin.builder else {}),
        }
    if evidence is not None and origin is not None and evidence.get("state") != "different":
        # its own build record beside it: built here, whatever else a report found
        record = {"kind": "record", "name": origin.provenance_name, "digest": {"sha256": origin.provenance_sha256}}
        evidence = {"state": "built here", "reason": "its own build record beside it", "statement": record}
    if evidence is not None:
        annotations["evidence"] = evidence
    if annotations:
        rd["annotations"] = annotations
    return rd


def _statement(
    subject: JSON, build_type: str, external: JSON, resolved: list[JSON], times: tuple[dt.datetime, dt.datetime]
) -> JSON:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [subject],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": build_type,
                "externalParameters": external,
                "internalParameters": {"policyVersion": policy.POLICY_VERSION},
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"detpack": __version__}},
                "metadata": {"startedOn": rfc3339(times[0]), "finishedOn": rfc3339(times[1])},
            },
        },
    }


def layer_statement(
    *,
    name: str,
    digest: str,
    diff_id: str,
    additions: Sequence[tuple[str, str, JSON]],
    wheels: Sequence[JSON],
    python: Mapping[str, str],
    epoch: int,
    times: tuple[dt.datetime, dt.datetime],
) -> JSON:
    """``additions``: (as given, destination, source descriptor); ``wheels``: wheel descriptors."""
    external: JSON = {
        "additions": [{"source": given, "destination": "/" + dest} for given, dest, _ in additions],
        "wheels": [w["name"] for w in wheels],
        "python": dict(python),
        "sourceDateEpoch": epoch,
        "diffID": diff_id,
    }
    resolved = [rd for _, _, rd in additions] + list(wheels)
    subject = {"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}
    return _statement(subject, LAYER_BUILD_TYPE, external, resolved, times)


def image_statement(
    *,
    reference: str,
    manifest_digest: str,
    base: JSON | None,
    layers: Sequence[JSON],
    config: JSON,
    epoch: int,
    times: tuple[dt.datetime, dt.datetime],
) -> JSON:
    """``layers``: one descriptor per added layer (its digest, diff_id and its statement's inputs)."""
    external: JSON = {"reference": reference, "config": config, "sourceDateEpoch": epoch}
    resolved: list[JSON] = ([base] if base is not None else []) + list(layers)
    subject = {"name": reference, "digest": {"sha256": manifest_digest.removeprefix("sha256:")}}
    return _statement(subject, IMAGE_BUILD_TYPE, external, resolved, times)


@dataclass(frozen=True)
class ChainInput:
    """One input an image's statement records for one of its layers (the chain, one link down)."""

    name: str  # the wheel's file name, or the ``--add`` source as given
    layer: str  # the layer it went into
    kind: Literal["wheel", "tree"]  # a wheel, or a directory/file packed with --add
    commit: str | None  # the git commit its source records, if any
    built: bool  # a wheel whose own ``detpack build`` provenance was found (and is named by digest)
    builder: str | None  # that build's builder id, when the chain records it


def image_chain(statement: JSON) -> tuple[ChainInput, ...]:
    """Every layer input of an image statement, with the source commit each one records."""
    build = statement.get("predicate", {}).get("buildDefinition", {}) if isinstance(statement, dict) else {}
    found: list[ChainInput] = []
    for layer in build.get("resolvedDependencies") or []:
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        if not isinstance(annotations, dict):
            continue
        for rd in annotations.get("inputs") or []:
            if not isinstance(rd, dict):
                continue
            own: JSON = rd["annotations"] if isinstance(rd.get("annotations"), dict) else {}
            name = str(rd.get("name", "?"))
            if "source" in own or name.endswith(".whl"):
                source: JSON = own["source"] if isinstance(own.get("source"), dict) else {}
                builder = own.get("builder", {}).get("id") if isinstance(own.get("builder"), dict) else None
                commit = _commit(source.get("digest"))
                built = isinstance(own.get("provenance"), dict)
                found.append(ChainInput(name, str(layer.get("name", "?")), "wheel", commit, built, builder))
            else:
                found.append(
                    ChainInput(name, str(layer.get("name", "?")), "tree", _commit(rd.get("digest")), False, None)
                )
    return tuple(found)


def _commit(digest: object) -> str | None:
    if isinstance(digest, dict) and isinstance(digest.get("gitCommit"), str) and digest["gitCommit"]:
        return str(digest["gitCommit"]).lower()
    return None


def check_image_chain(
    chain: Sequence[ChainInput], builder_of_image: str | None, *, source_commit: str | None, builder: str | None
) -> tuple[list[str], tuple[ChainInput, ...]]:
    """(why the chain fails the policy, the inputs built from ``source_commit``); no problems: it holds.

    ``--source-commit`` holds when some input of the image records that commit (an image may
    also carry dependencies built elsewhere, which record none or their own); ``--builder``
    holds when the image and every wheel whose build the chain names were made by that builder.
    """
    problems: list[str] = []
    matched: tuple[ChainInput, ...] = ()
    if source_commit is not None:
        want = source_commit.lower()
        recorded = [c for c in chain if c.commit]
        matched = tuple(c for c in recorded if c.commit is not None and c.commit.startswith(want))
        if not recorded:
            problems.append("the image's provenance chain records no source commit (no layer input names one)")
        elif not matched:
            seen = "; ".join(f"{c.commit} for {c.name} (layer {c.layer})" for c in recorded[:5])
            more = f"; … {len(recorded) - 5} more" if len(recorded) > 5 else ""
            problems.append(
                f"no input of the image was built from commit {source_commit}: the chain records {seen}{more}"
            )
    if builder is not None:
        if builder_of_image != builder:
            problems.append(f"builder is {builder_of_image!r}, not {builder!r}")
        for c in chain:
            if c.built and c.builder is None:
                problems.append(
                    f"{c.name}: the chain does not record which builder built it (remake the layer and image)"
                )
            elif c.built and c.builder != builder:
                problems.append(f"{c.name}: built by {c.builder!r}, not {builder!r}")
    return problems, matched
