"""Software bills of materials for what detpack builds: CycloneDX 1.6 JSON, the same bytes for the
same build on every machine.

A build's SBOM is made from its provenance and the artifacts beside it: the project (name, version,
purl, licence expression) as the BOM's subject, each artifact file with its sha256, the project's
declared dependencies (``Requires-Dist``, without extras) and, in ``formulation``, how it was built:
every build dependency installed (name, version, purl, sha256), the interpreter, the native tools
and the settings that shaped the build (backend, sandbox, SOURCE_DATE_EPOCH, builder, and the
sha256 of the provenance's canonical buildDefinition, which ties the SBOM to its record and, unlike
the whole record's, is the same from every machine).

cyclonedx-python-lib builds the document (and its validator checks it in the tests); it does not
model ``formulation``, which is added to the JSON it writes. Nothing varies between two builds of
the same inputs: the serial number is a UUID derived from the artifacts' digests, the timestamp is
the build's SOURCE_DATE_EPOCH, every ``bom-ref`` is named (never a random one) and the JSON is
written with sorted keys.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import hashlib
import json
import tarfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from detpack import __version__
from detpack.archive.entry import READ_ERRORS, BoundedTarInfo
from detpack.archive.small import dist_info_member, open_zip_small, tar_member
from detpack.digest import canonical_json, file_sha256
from detpack.errors import InputError
from detpack.provenance.reader import Provenance, record_stem

#: The namespace of every SBOM serial number: uuid5(this, the artifacts' sha256 digests).
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://detpack.dev/sbom/v1")
SUFFIX = ".cdx.json"


@dataclass(frozen=True)
class ProjectFacts:
    """What an artifact's core metadata says about the project (parsed once)."""

    name: str
    version: str
    license_expression: str | None
    requires: tuple[Requirement, ...]  # Requires-Dist without an extra marker


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str


def sbom_name(provenance_path: Path, suffix: str = SUFFIX) -> str:
    """``NAME-VERSION.cdx.json`` (or another ``suffix``) beside ``NAME-VERSION.provenance.json``."""
    return record_stem(provenance_path) + suffix


def artifacts_beside(record: Provenance, folder: Path) -> tuple[Artifact, ...]:
    """The record's subjects as files in ``folder``, each checked against its recorded sha256."""
    found = []
    for subject in record.subjects:
        path = folder / subject.name
        if not path.is_file():
            raise InputError(
                f"{record.source}: its subject {subject.name} is not beside it in {folder}; the SBOM reads each "
                "artifact's metadata: put the artifacts next to the record"
            )
        digest = file_sha256(path)
        if digest != subject.sha256:
            raise InputError(
                f"{path}: sha256 {digest} is not the recorded {subject.sha256}; this is not the artifact the record "
                "describes"
            )
        found.append(Artifact(path, digest))
    return tuple(found)


def project_facts(artifact: Path, wheel: bool | None = None) -> ProjectFacts:
    """The core metadata of a wheel (``.dist-info/METADATA``) or an sdist (``PKG-INFO``); which one
    is told by the file name unless ``wheel`` says (a wheel staged under a temporary name)."""
    raw = _metadata_bytes(artifact, artifact.name.endswith(".whl") if wheel is None else wheel)
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    name, version = message.get("Name"), message.get("Version")
    if not name or not version:
        raise InputError(f"{artifact}: its core metadata has no Name or Version")
    requires = []
    for line in message.get_all("Requires-Dist") or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            raise InputError(f"{artifact}: Requires-Dist {line!r} is not a valid requirement") from None
        if req.marker is None or "extra" not in str(req.marker):
            requires.append(req)
    return ProjectFacts(str(name), str(version), message.get("License-Expression"), tuple(requires))


def _metadata_bytes(artifact: Path, wheel: bool) -> bytes:
    try:
        if wheel:
            with open_zip_small(artifact) as zf:
                found = dist_info_member(zf, "METADATA", str(artifact))
                if found:
                    return found
        elif artifact.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(artifact, "r:gz", tarinfo=BoundedTarInfo) as tf:
                for info in tf:
                    if info.isfile() and info.name.count("/") == 1 and info.name.endswith("/PKG-INFO"):
                        return tar_member(tf, info, str(artifact))
        else:
            raise InputError(f"{artifact}: not a wheel or an sdist; the SBOM reads a Python artifact's metadata")
    except READ_ERRORS as exc:
        raise InputError(f"{artifact}: cannot read its metadata ({exc})") from None
    raise InputError(f"{artifact}: no core metadata inside (.dist-info/METADATA or PKG-INFO)")


def cyclonedx(record: Provenance, artifacts: Sequence[Artifact]) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of one build (its provenance and its artifacts)."""
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    if not artifacts:
        raise InputError(f"{record.source}: the record names no artifacts; nothing to describe")
    facts = project_facts(artifacts[0].path)
    project = _project_component(facts)
    project_name = canonicalize_name(facts.name)
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, ",".join(sorted(a.sha256 for a in artifacts))),
        metadata=BomMetaData(component=project, timestamp=epoch_time(record.statement)),
    )
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="detpack", version=__version__, bom_ref="tool:detpack")
    )
    for artifact in artifacts:
        purl = PackageURL(
            "pypi", name=project_name, version=facts.version, qualifiers={"file_name": artifact.path.name}
        )
        bom.components.add(
            Component(
                type=ComponentType.FILE,
                name=artifact.path.name,
                version=facts.version,
                purl=purl,
                bom_ref=str(purl),
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=artifact.sha256)],
            )
        )
    bom.register_dependency(project, _declared(bom, facts))
    with warnings.catch_warnings():  # a project with no dependencies is complete as it is, not a gap
        warnings.filterwarnings("ignore", message="The Component this BOM is describing", category=UserWarning)
        document: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    definition = record.statement["predicate"]["buildDefinition"]
    builder = record.statement["predicate"].get("runDetails", {}).get("builder", {}).get("id")
    document["formulation"] = [_formula(definition, builder, [a.path.name for a in artifacts])]
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


#: Where ``--sbom-in-wheel`` puts the SBOM: ``.dist-info/sboms/`` (PEP 770), named after the tool.
IN_WHEEL_NAME = "detpack.cdx.json"


def in_wheel(wheel: Path, definition: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The SBOM to put inside ``wheel`` (PEP 770: ``NAME.dist-info/sboms/``), as (member, bytes).

    It describes what the wheel is and how it was made: the project and its declared dependencies,
    and in ``formulation`` every build dependency, tool and setting of ``definition`` (the build's
    buildDefinition). It cannot name the wheel's own sha256 (the wheel holds it), nor the digest of
    the record (a rebuild records other requests for the same bytes); its serial number is derived
    from the project and the formulation, its time is SOURCE_DATE_EPOCH."""
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    facts = project_facts(wheel, wheel=True)
    dist_info = _dist_info(wheel)
    formula = _formula(definition, None, [], tied=False)
    formula_sha = hashlib.sha256(canonical_json(formula)).hexdigest()
    project = _project_component(facts)
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"in-wheel:{facts.name}=={facts.version}:{formula_sha}"),
        metadata=BomMetaData(component=project, timestamp=epoch_time({"predicate": {"buildDefinition": definition}})),
    )
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="detpack", version=__version__, bom_ref="tool:detpack")
    )
    bom.register_dependency(project, _declared(bom, facts))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The Component this BOM is describing", category=UserWarning)
        document: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    document["formulation"] = [formula]
    data = (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    return [(f"{dist_info}/sboms/{IN_WHEEL_NAME}", data)]


def _dist_info(wheel: Path) -> str:
    try:
        with open_zip_small(wheel) as zf:
            found = {n.split("/")[0] for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")}
    except READ_ERRORS as exc:
        raise InputError(f"{wheel}: cannot read the wheel ({exc})") from None
    if len(found) != 1:
        raise InputError(f"{wheel}: a wheel needs exactly one top-level .dist-info/WHEEL, found {len(found)}")
    return found.pop()


def _project_component(facts: ProjectFacts) -> Any:
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import LicenseExpression
    from packageurl import PackageURL

    purl = PackageURL("pypi", name=canonicalize_name(facts.name), version=facts.version)
    return Component(
        type=ComponentType.LIBRARY,
        name=facts.name,
        version=facts.version,
        purl=purl,
        bom_ref=str(purl),
        licenses=[LicenseExpression(facts.license_expression)] if facts.license_expression else [],
    )


def _declared(bom: Any, facts: ProjectFacts) -> list[Any]:
    """Each declared requirement as a component of ``bom`` (added to it); returns them."""
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    declared = []
    for req in facts.requires:
        purl = PackageURL("pypi", name=canonicalize_name(req.name))
        component = Component(
            type=ComponentType.LIBRARY,
            name=req.name,
            purl=purl,
            bom_ref=str(purl),
            properties=[Property(name="detpack:requirement", value=str(req))],
        )
        bom.components.add(component)
        declared.append(component)
    return declared


def epoch_time(statement: Mapping[str, Any]) -> dt.datetime:
    epoch = statement["predicate"]["buildDefinition"]["externalParameters"].get("sourceDateEpoch", {}).get("value")
    return dt.datetime.fromtimestamp(int(epoch) if isinstance(epoch, int) else 315532800, dt.UTC)


def _formula(
    definition: Mapping[str, Any], builder: str | None, artifacts: Sequence[str], tied: bool = True
) -> dict[str, Any]:
    """How the artifacts were made (CycloneDX ``formulation``): what the build installed and ran;
    ``tied``: with the sha256 of the record's buildDefinition (not inside a wheel: a rebuild's record
    differs in what it was asked, the lock it was given, while making the same bytes)."""
    by_ref: dict[str, dict[str, Any]] = {}
    for dep in definition.get("resolvedDependencies", []):
        component = build_component(dep)
        if component is not None:  # one component per purl (glibc and libc6 are one Debian package)
            by_ref.setdefault(component["bom-ref"], component)
    components = [by_ref[ref] for ref in sorted(by_ref)]
    internal, external = definition.get("internalParameters", {}), definition.get("externalParameters", {})
    sandbox = internal.get("sandbox", {})
    backends: list[str] = next(
        (
            d.get("annotations", {}).get("backends", [])
            for d in definition.get("resolvedDependencies", [])
            if d.get("name") == "build-backend"
        ),
        [],
    )
    properties = {
        # the record's buildDefinition (the same for the same build on every machine; runDetails are not)
        "detpack:build-definition:sha256": hashlib.sha256(canonical_json(definition)).hexdigest() if tied else "",
        "detpack:build-backend": ", ".join(backends),
        "detpack:builder": builder or "",
        "detpack:sandbox": ", ".join(
            f"{k}={json.dumps(sandbox[k]).strip(chr(34))}" for k in ("kind", "network", "hermetic") if k in sandbox
        ),
        "detpack:source-date-epoch": str(external.get("sourceDateEpoch", {}).get("value", "")),
        "detpack:artifacts": ", ".join(artifacts),
    }
    return {
        "bom-ref": "formula:build",
        "components": components,
        "properties": [{"name": k, "value": v} for k, v in sorted(properties.items()) if v],
    }


def build_component(dep: Mapping[str, Any]) -> dict[str, Any] | None:
    """One resolved dependency of the build as a CycloneDX component, or None (the source, facts)."""
    uri, annotations = dep.get("uri"), dep.get("annotations", {})
    if not isinstance(uri, str) or not uri.startswith("pkg:"):
        return None
    kind = "library" if uri.startswith("pkg:pypi/") else "application"
    component: dict[str, Any] = {"type": kind, "name": dep.get("name", uri), "purl": uri, "bom-ref": f"build:{uri}"}
    version = annotations.get("version") or uri.rpartition("@")[2].split("?", 1)[0]
    if version:
        component["version"] = str(version)
    digest = dep.get("digest", {}).get("sha256")
    if digest:
        component["hashes"] = [{"alg": "SHA-256", "content": digest}]
    return component


def _layer_metadata(layer: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """(canonical name, version) -> the licence (``_license_of``) of each distribution installed in the layer."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    try:
        with tarfile.open(layer, "r:*", tarinfo=BoundedTarInfo) as tf:
            for info in tf:
                parts = info.name.split("/")
                if not info.isfile() or len(parts) < 3 or parts[-1] != "METADATA" or parts[-3] != "site-packages":
                    continue
                if not parts[-2].endswith(".dist-info"):
                    continue
                member = tf.extractfile(info)
                if member is None:
                    continue
                message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(member.read(1 << 20))
                name, version = message.get("Name"), message.get("Version")
                if name and version:
                    found[(canonicalize_name(str(name)), str(version))] = _license_of(message)
    except READ_ERRORS as exc:
        raise InputError(f"{layer}: cannot read the layer ({exc})") from None
    return found


def _license_of(message: Any) -> tuple[str, str]:
    """("expression", SPDX) from License-Expression, else ("name", TEXT) from a one-line License field,
    else ("", "")."""
    expression = message.get("License-Expression")
    if expression:
        return "expression", str(expression)
    text = str(message.get("License") or "").strip()
    return ("name", text) if text and "\n" not in text and len(text) <= 100 else ("", "")


@dataclass(frozen=True)
class LayerWheel:
    """A wheel installed in a layer, as its record and its installed METADATA say."""

    file_name: str
    name: str  # canonical
    version: str
    sha256: str  # of the wheel file
    license_kind: str  # "expression" (License-Expression), "name" (a one-line License field) or ""
    license: str
    provenance: str | None  # the name of its own detpack build record, found beside it
    commit: str | None  # the source commit that record names
    tree: str | None  # the source tree digest that record names
    #: what a closure report found (``layer --evidence``): its state, and the statement it rests on as
    #: (kind, name, sha256); "built here" when the wheel's own build record was beside it; "" when unknown
    evidence_state: str = ""
    evidence: tuple[str, str, str] | None = None


def _evidence(annotations: Any, built: bool) -> tuple[str, tuple[str, str, str] | None]:
    found = annotations.get("evidence") if isinstance(annotations, dict) else None
    if isinstance(found, dict) and isinstance(found.get("state"), str):
        statement = found.get("statement")
        if isinstance(statement, dict):
            digest = str((statement.get("digest") or {}).get("sha256", ""))
            return found["state"], (str(statement.get("kind", "")), str(statement.get("name", "")), digest)
        return found["state"], None
    return ("built here", None) if built else ("", None)


def layer_wheels(record: Provenance, layer: Artifact) -> list[LayerWheel]:
    """Every wheel the layer's record says was installed, checked to be in the layer."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    installed = _layer_metadata(layer.path)
    wheels = []
    for dep in record.statement["predicate"]["buildDefinition"].get("resolvedDependencies", []):
        file_name = str(dep.get("name", ""))
        if not file_name.endswith(".whl"):
            continue
        try:
            name, version, _, _ = parse_wheel_filename(file_name)
        except InvalidWheelFilename:
            raise InputError(f"{record.source}: {file_name!r} is not a wheel file name") from None
        key = (canonicalize_name(name), str(version))
        if key not in installed:
            raise InputError(
                f"{layer.path}: {file_name} is recorded as installed, but the layer holds no {name} {version} "
                ".dist-info/METADATA; this is not the layer the record describes"
            )
        kind, licence = installed[key]
        annotations = dep.get("annotations", {})
        origin = annotations.get("provenance")
        source = annotations.get("source", {}).get("digest", {})
        wheels.append(
            LayerWheel(
                file_name,
                key[0],
                key[1],
                str(dep.get("digest", {}).get("sha256", "")),
                kind,
                licence,
                str(origin.get("name", "")) if isinstance(origin, dict) else None,
                source.get("gitCommit"),
                source.get("sha256"),
                *_evidence(annotations, isinstance(origin, dict)),
            )
        )
    return wheels


@dataclass(frozen=True)
class Packed:
    """What a layer or an image SBOM describes: the packed thing, and the wheels inside it."""

    kind: str  # "layer" or "image"
    name: str  # the layer's file name, or the image reference NAME:TAG (never a local path)
    sha256: str  # the layer blob's, or the image manifest's
    epoch: int  # its SOURCE_DATE_EPOCH: the SBOM's time
    wheels: tuple[LayerWheel, ...]
    settings: Mapping[str, str]  # formulation properties (what shaped it)


def packed_layer(record: Provenance, layer: Artifact) -> Packed:
    """A ``detpack layer`` (its record and the layer file) as a ``Packed``."""
    external = record.statement["predicate"]["buildDefinition"]["externalParameters"]
    epoch = external.get("sourceDateEpoch")
    python = external.get("python", {})
    settings = {
        "detpack:diff-id": str(external.get("diffID", "")),
        "detpack:python": " ".join(f"{k}={v}" for k, v in sorted(python.items())),
        "detpack:source-date-epoch": str(epoch),
    }
    return Packed(
        "layer",
        layer.path.name,
        layer.sha256,
        epoch if isinstance(epoch, int) else 315532800,
        tuple(layer_wheels(record, layer)),
        settings,
    )


def packed_image(name: str, manifest_sha256: str, epoch: int, layers: Sequence[tuple[Provenance, Artifact]]) -> Packed:
    """An image as a ``Packed``: every wheel of every layer whose ``detpack layer`` record is given (each once)."""
    wheels: dict[tuple[str, str, str], LayerWheel] = {}
    for record, layer in layers:
        for w in layer_wheels(record, layer):
            wheels.setdefault((w.name, w.version, w.sha256), w)
    settings = {
        "detpack:layers": ", ".join(f"{layer.path.name} sha256:{layer.sha256}" for _, layer in layers),
        "detpack:source-date-epoch": str(epoch),
    }
    return Packed("image", name, manifest_sha256, epoch, tuple(wheels[k] for k in sorted(wheels)), settings)


def layer_cyclonedx(record: Provenance, layer: Artifact) -> bytes:
    return packed_cyclonedx(packed_layer(record, layer))


def packed_cyclonedx(packed: Packed) -> bytes:
    """The CycloneDX 1.6 SBOM of a layer or an image: it, and every wheel installed in it with its exact
    version, sha256, licence and, where the wheel's own ``detpack build`` provenance was beside it,
    that record's name and the source commit and tree it names."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    subject = Component(
        type=ComponentType.FILE if packed.kind == "layer" else ComponentType.CONTAINER,
        name=packed.name,
        bom_ref=f"{packed.kind}:sha256:{packed.sha256}",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=packed.sha256)],
    )
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, packed.sha256),
        metadata=BomMetaData(component=subject, timestamp=dt.datetime.fromtimestamp(packed.epoch, dt.UTC)),
    )
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="detpack", version=__version__, bom_ref="tool:detpack")
    )
    wheels = []
    for w in packed.wheels:
        properties = [Property(name="detpack:wheel", value=w.file_name)]
        if w.provenance:
            # by name and by what it records of the source: the record's own digest differs between two
            # builds of the same bytes (its run details), so it would make the SBOM differ too
            properties.append(Property(name="detpack:provenance", value=w.provenance))
        if w.commit:
            properties.append(Property(name="detpack:source-commit", value=w.commit))
        if w.tree:
            properties.append(Property(name="detpack:source-tree:sha256", value=w.tree))
        if w.evidence_state:
            properties.append(Property(name="detpack:evidence:state", value=w.evidence_state))
        if w.evidence is not None:
            properties.append(Property(name=f"detpack:evidence:{w.evidence[0]}", value=w.evidence[1]))
            properties.append(Property(name=f"detpack:evidence:{w.evidence[0]}:sha256", value=w.evidence[2]))
        licenses: list[Any] = []
        if w.license_kind == "expression":
            licenses = [LicenseExpression(w.license)]
        elif w.license_kind == "name":
            licenses = [DisjunctiveLicense(name=w.license)]
        purl = PackageURL("pypi", name=w.name, version=w.version)
        component = Component(
            type=ComponentType.LIBRARY,
            name=w.name,
            version=w.version,
            purl=purl,
            bom_ref=str(purl),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=w.sha256)],
            licenses=licenses,
            properties=properties,
        )
        bom.components.add(component)
        wheels.append(component)
    bom.register_dependency(subject, wheels)
    document: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    document["formulation"] = [
        {
            "bom-ref": f"formula:{packed.kind}",
            "properties": [{"name": k, "value": v} for k, v in sorted(packed.settings.items())],
        }
    ]
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
