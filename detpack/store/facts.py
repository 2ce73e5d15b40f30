"""What a stored provenance statement or SBOM says, as the query index keeps it: pure, bytes in, values out.

A ``detpack build`` statement gives the build dependencies installed into its isolated
environment (``resolvedDependencies`` with ``usedFor``: name and version), its source
(repository and commit) and its builder. A ``detpack layer`` statement names every wheel it
installed (``resolvedDependencies`` ``*.whl``) and each wheel's source; a ``detpack image``
statement names its layers with their inputs, so the wheels of every layer. A CycloneDX SBOM of a
layer or an image (``layer --sbom``, ``image --sbom``, stored as ``*.cdx.json``) names its subject
(the layer blob's or the manifest's sha256) and every wheel in it. Nothing here reads a file or
the store; unreadable bytes are one-line InputErrors naming ``source``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from detpack.errors import InputError
from detpack.provenance import reader
from detpack.provenance.statement import IMAGE_BUILD_TYPE, LAYER_BUILD_TYPE

#: What ``store push`` names an SBOM that the index reads (``detpack sbom``'s CycloneDX files).
SBOM_SUFFIX = ".cdx.json"


@dataclass(frozen=True)
class Package:
    """A Python distribution, by its canonical (PEP 503) name and its version as recorded."""

    name: str  # canonical: lower case, runs of -_. as one -
    version: str
    file: str = ""  # the wheel's file name, where the record names one


@dataclass(frozen=True)
class Source:
    """Where a build's source came from."""

    repository: str | None  # the git remote (``git+URL@COMMIT`` without ``git+`` and the commit)
    commit: str | None  # the git commit, lower-case hex


@dataclass(frozen=True)
class ProvenanceFacts:
    """What one provenance statement says that the index looks things up by."""

    build_type: str | None  # buildDefinition.buildType (a build, a layer, an image)
    builder: str | None  # runDetails.builder.id
    dependencies: tuple[Package, ...]  # build dependencies installed for a build (none for a layer or image)
    sources: tuple[Source, ...]  # the build's source; for a layer or image, every input's that records one
    wheels: tuple[Package, ...]  # the wheels a layer or image contains


@dataclass(frozen=True)
class SbomFacts:
    """What a layer's or an image's CycloneDX SBOM says it contains."""

    subject: str  # the sha256 (hex) of the layer blob or the image manifest
    kind: str  # "layer" or "image"
    wheels: tuple[Package, ...]


def provenance_facts(data: bytes, source: str) -> ProvenanceFacts:
    """The facts of a provenance statement (bare or in a DSSE envelope); InputError when it is none."""
    return statement_facts(reader.read(data, source).statement)


def statement_facts(statement: dict[str, Any]) -> ProvenanceFacts:
    """The facts of a statement already read (``reader.read``)."""
    predicate = statement.get("predicate")
    build_type = reader.dig(predicate, "buildDefinition", "buildType")
    builder = reader.dig(predicate, "runDetails", "builder", "id")
    resolved = list(_list(reader.dig(predicate, "buildDefinition", "resolvedDependencies")))
    dependencies: list[Package] = []
    sources: list[Source] = []
    wheels: list[Package] = []
    if build_type == LAYER_BUILD_TYPE:
        inputs = resolved
    elif build_type == IMAGE_BUILD_TYPE:
        inputs = [rd for layer in resolved for rd in _list(reader.dig(layer, "annotations", "inputs"))]
    else:
        inputs = []
        sources.append(_source(reader.dig(predicate, "buildDefinition", "externalParameters", "source")))
        dependencies = [d for d in map(_installed, resolved) if d is not None]
    for rd in inputs:
        name = str(rd.get("name", ""))
        if name.endswith(".whl"):
            wheel = _wheel(name)
            if wheel is not None:
                wheels.append(wheel)
            sources.append(_source(reader.dig(rd, "annotations", "source")))
        else:  # a tree packed with --add: its commit, and the remote git named
            commit = reader.dig(rd, "digest", "gitCommit")
            remote = reader.dig(rd, "annotations", "remote")
            sources.append(Source(remote if isinstance(remote, str) else None, _hex(commit)))
    return ProvenanceFacts(
        build_type if isinstance(build_type, str) else None,
        builder if isinstance(builder, str) else None,
        tuple(dict.fromkeys(dependencies)),
        tuple(dict.fromkeys(s for s in sources if s.repository or s.commit)),
        tuple(dict.fromkeys(wheels)),
    )


def sbom_facts(data: bytes, source: str) -> SbomFacts | None:
    """The subject and wheels of a layer's or an image's CycloneDX SBOM; None for an SBOM of anything
    else (a build's: its components are declared dependencies, not contents); InputError when the bytes
    are not a CycloneDX document."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{source}: not JSON (expected a CycloneDX SBOM)") from None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        raise InputError(f"{source}: not a CycloneDX SBOM (no bomFormat CycloneDX)")
    ref = str(reader.dig(document, "metadata", "component", "bom-ref") or "")
    kind, _, digest = ref.partition(":sha256:")
    if kind not in ("layer", "image") or _hex(digest) is None or len(digest) != 64:
        return None
    wheels = []
    for component in _list(document.get("components")):
        purl = component.get("purl")
        version = component.get("version")
        if component.get("type") != "library" or not isinstance(purl, str) or not purl.startswith("pkg:pypi/"):
            continue
        files = [p.get("value") for p in _list(component.get("properties")) if p.get("name") == "detpack:wheel"]
        name = purl.removeprefix("pkg:pypi/").split("@", 1)[0]
        if isinstance(version, str) and name:
            wheels.append(Package(canonicalize_name(name), version, str(files[0]) if files else ""))
    return SbomFacts(digest.lower(), kind, tuple(dict.fromkeys(wheels)))


def _list(value: object) -> Iterator[dict[str, Any]]:
    """The objects in a JSON list (nothing for anything else)."""
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def _installed(rd: dict[str, Any]) -> Package | None:
    """A package the build installed into its environment (``statement._dependency_descriptor``): the
    toolchain's own entries (build, pip, detpack, the deflate package) record no ``usedFor``."""
    uri, version = rd.get("uri"), reader.dig(rd, "annotations", "version")
    if not isinstance(uri, str) or not uri.startswith("pkg:pypi/") or not isinstance(version, str):
        return None
    if not isinstance(reader.dig(rd, "annotations", "usedFor"), list):
        return None
    return Package(canonicalize_name(uri.removeprefix("pkg:pypi/").split("@", 1)[0]), version)


def _wheel(file_name: str) -> Package | None:
    try:
        name, version, _, _ = parse_wheel_filename(file_name)
    except InvalidWheelFilename:
        return None
    return Package(str(name), str(version), file_name)


def _source(value: object) -> Source:
    """A source descriptor's repository and commit (``git+URL@COMMIT``, ``digest.gitCommit``)."""
    uri = reader.dig(value, "uri")
    commit = _hex(reader.dig(value, "digest", "gitCommit"))
    repository = None
    if isinstance(uri, str) and uri:
        repository = uri.removeprefix("git+")
        if commit is not None and repository.lower().endswith("@" + commit):
            repository = repository[: -len(commit) - 1]
    return Source(repository, commit)


def _hex(value: object) -> str | None:
    if isinstance(value, str) and value and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return None
