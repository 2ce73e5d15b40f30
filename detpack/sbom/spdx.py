"""SPDX 2.3 JSON SBOMs of what detpack makes, written with spdx-tools' model and JSON writer.

The same facts as the CycloneDX SBOM (``detpack.sbom``), in SPDX's terms: the document DESCRIBES
each artifact (a package with its file name, sha256, purl and declared licence); each declared
dependency is a package the artifacts DEPENDS_ON; each build dependency the provenance records
(with its sha256) is a package that is BUILD_TOOL_OF them. For a layer: the layer is a package
that CONTAINS one package per installed wheel (exact version, the wheel's sha256, licence, and
its own build record's name and source commit as a comment).

Nothing varies between two builds of the same inputs: the document namespace is derived from the
artifacts' digests, ``created`` is SOURCE_DATE_EPOCH, every SPDX id is named after what it
describes, and the JSON is written with sorted keys. spdx-tools validates the document as it
writes it (an invalid one is an error naming the problem, never a file).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from license_expression import ExpressionError, get_spdx_licensing
from packaging.utils import canonicalize_name
from spdx_tools.spdx.model import (
    Actor,
    ActorType,
    Checksum,
    ChecksumAlgorithm,
    CreationInfo,
    Document,
    ExternalPackageRef,
    ExternalPackageRefCategory,
    Package,
    PackagePurpose,
    Relationship,
    RelationshipType,
    SpdxNoAssertion,
)
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from detpack import __version__
from detpack.errors import InputError
from detpack.provenance.reader import Provenance
from detpack.sbom import SERIAL_NAMESPACE, Artifact, Packed, build_component, epoch_time, packed_layer, project_facts

SUFFIX = ".spdx.json"


def _spdx_id(kind: str, text: str) -> str:
    """``SPDXRef-KIND-TEXT`` with every character SPDX ids do not allow made a ``-``."""
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _licence(text: str | None) -> Any:
    if not text:
        return SpdxNoAssertion()
    try:
        return get_spdx_licensing().parse(text, validate=True)
    except ExpressionError:
        return SpdxNoAssertion()  # not an SPDX expression: say nothing rather than something wrong


def _purl_ref(purl: str) -> Any:
    return ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", purl)


def _document(name: str, digests: Sequence[str], created: dt.datetime) -> Any:
    key = uuid.uuid5(SERIAL_NAMESPACE, ",".join(sorted(digests)))
    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=name,
        document_namespace=f"https://detpack.dev/spdx/{name}-{key}",
        creators=[Actor(ActorType.TOOL, f"detpack-{__version__}")],
        created=created,
    )
    return Document(info)


def _write_json(document: Any, source: str) -> bytes:
    """The document as spdx-tools writes it (validated first), re-serialised with sorted keys."""
    problems = validate_full_spdx_document(document)
    if problems:
        raise InputError(f"{source}: the SPDX SBOM would not be valid ({problems[0].validation_message})")
    text = io.StringIO()
    write_document_to_stream(document, text, validate=False)
    value = json.loads(text.getvalue())
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def build_spdx(record: Provenance, artifacts: Sequence[Artifact]) -> bytes:
    """The SPDX 2.3 JSON SBOM of one build (its provenance and its artifacts)."""
    if not artifacts:
        raise InputError(f"{record.source}: the record names no artifacts; nothing to describe")
    facts = project_facts(artifacts[0].path)
    project = canonicalize_name(facts.name)
    document = _document(f"{project}-{facts.version}", [a.sha256 for a in artifacts], epoch_time(record.statement))
    declared = _licence(facts.license_expression)
    ids = []
    for artifact in artifacts:
        spdx_id = _spdx_id("Package", artifact.path.name)
        ids.append(spdx_id)
        document.packages.append(
            Package(
                spdx_id=spdx_id,
                name=facts.name,
                download_location=SpdxNoAssertion(),
                version=facts.version,
                file_name=artifact.path.name,
                files_analyzed=False,
                checksums=[Checksum(ChecksumAlgorithm.SHA256, artifact.sha256)],
                license_concluded=SpdxNoAssertion(),
                license_declared=declared,
                copyright_text=SpdxNoAssertion(),
                external_references=[_purl_ref(f"pkg:pypi/{project}@{facts.version}")],
                primary_package_purpose=PackagePurpose.SOURCE
                if artifact.path.name.endswith(".tar.gz")
                else PackagePurpose.LIBRARY,
            )
        )
        document.relationships.append(Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, spdx_id))
    for req in facts.requires:
        name = canonicalize_name(req.name)
        spdx_id = _spdx_id("Requires", name)
        document.packages.append(
            Package(
                spdx_id=spdx_id,
                name=req.name,
                download_location=SpdxNoAssertion(),
                files_analyzed=False,
                external_references=[_purl_ref(f"pkg:pypi/{name}")],
                comment=f"declared requirement: {req}",
            )
        )
        for artifact_id in ids:
            document.relationships.append(Relationship(artifact_id, RelationshipType.DEPENDS_ON, spdx_id))
    seen: set[str] = set()
    for dep in record.statement["predicate"]["buildDefinition"].get("resolvedDependencies", []):
        component = build_component(dep)
        if component is None or component["purl"] in seen:
            continue
        seen.add(component["purl"])
        spdx_id = _spdx_id("Build", component["purl"].removeprefix("pkg:"))
        hashes = [Checksum(ChecksumAlgorithm.SHA256, h["content"]) for h in component.get("hashes", [])]
        document.packages.append(
            Package(
                spdx_id=spdx_id,
                name=str(component["name"]),
                download_location=SpdxNoAssertion(),
                version=component.get("version"),
                files_analyzed=False,
                checksums=hashes,
                external_references=[_purl_ref(component["purl"])],
            )
        )
        for artifact_id in ids:
            document.relationships.append(Relationship(spdx_id, RelationshipType.BUILD_TOOL_OF, artifact_id))
    return _write_json(document, str(record.source))


def layer_spdx(record: Provenance, layer: Artifact) -> bytes:
    return packed_spdx(packed_layer(record, layer), str(record.source))


def packed_spdx(packed: Packed, source: str) -> bytes:
    """The SPDX 2.3 JSON SBOM of a layer or an image: it CONTAINS each wheel installed in it."""
    created = dt.datetime.fromtimestamp(packed.epoch, dt.UTC)
    document = _document(packed.name.replace(":", "-"), [packed.sha256], created)
    layer_id = _spdx_id(packed.kind.capitalize(), packed.name)
    document.packages.append(
        Package(
            spdx_id=layer_id,
            name=packed.name,
            download_location=SpdxNoAssertion(),
            file_name=packed.name if packed.kind == "layer" else None,
            files_analyzed=False,
            checksums=[Checksum(ChecksumAlgorithm.SHA256, packed.sha256)],
            primary_package_purpose=PackagePurpose.CONTAINER,
        )
    )
    document.relationships.append(Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, layer_id))
    for w in packed.wheels:
        spdx_id = _spdx_id("Package", w.file_name)
        said = [f"wheel {w.file_name}"]
        if w.provenance:
            said.append(f"built by detpack, record {w.provenance}")
        if w.commit:
            said.append(f"source commit {w.commit}")
        if w.evidence_state:
            said.append(f"evidence: {w.evidence_state}")
        if w.evidence is not None:
            said.append(f"{w.evidence[0]} {w.evidence[1]} sha256:{w.evidence[2]}")
        document.packages.append(
            Package(
                spdx_id=spdx_id,
                name=w.name,
                download_location=SpdxNoAssertion(),
                version=w.version,
                file_name=w.file_name,
                files_analyzed=False,
                checksums=[Checksum(ChecksumAlgorithm.SHA256, w.sha256)],
                license_concluded=SpdxNoAssertion(),
                license_declared=_licence(w.license) if w.license_kind == "expression" else SpdxNoAssertion(),
                copyright_text=SpdxNoAssertion(),
                external_references=[_purl_ref(f"pkg:pypi/{w.name}@{w.version}")],
                primary_package_purpose=PackagePurpose.LIBRARY,
                comment="; ".join(said),
            )
        )
        document.relationships.append(Relationship(layer_id, RelationshipType.CONTAINS, spdx_id))
    return _write_json(document, source)
