"""Push an image from a layout to a registry: by digest first, the tag only if write-once allows.

Order: every blob (skipped when the registry has it), then the manifest by its digest,
then the tag, and only when the tag is absent or already names the same digest. A tag
that points elsewhere is refused with both digests named (Distribution cannot make tags
immutable, so the client checks, before the upload and again just before tagging).
Provenance is pushed as an OCI artifact whose ``subject`` is the image manifest, and
listed in the ``sha256-<hex>`` referrers fallback tag (registries without the referrers API).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detpack.digest import canonical_json, sha256_hex
from detpack.errors import InputError, TagConflictError
from detpack.oci.layout import DOCKER_LIST, INDEX, MANIFEST, Descriptor, Layout, LayoutRef
from detpack.oci.registry import Registry, RegistryRef
from detpack.provenance import reader

IN_TOTO = "application/vnd.in-toto+json"
#: SBOM artifact types (and their blobs' media types), as CycloneDX and SPDX register them.
SBOM_TYPES = {".cdx.json": "application/vnd.cyclonedx+json", ".spdx.json": "application/spdx+json"}
DSSE = "application/vnd.dsse.envelope.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
#: The OCI empty descriptor: the config of an artifact that has none.
EMPTY_DESCRIPTOR = {"mediaType": EMPTY, "digest": "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest(), "size": 2}
TagState = Literal["created", "unchanged", "none"]


@dataclass(frozen=True)
class PushResult:
    reference: str  # REGISTRY/REPO@sha256:...
    digest: str
    tag: str | None
    tag_state: TagState
    uploaded: int
    skipped: int
    attestation: str | None
    sboms: tuple[tuple[Path, str], ...] = ()  # each SBOM pushed, and its referrer manifest's digest


def _push_blobs(layout: Layout, manifest: dict[str, object], registry: Registry, repo: str) -> tuple[int, int]:
    uploaded = skipped = 0
    label = f"{layout.directory}"
    checked: list[tuple[Descriptor, Path]] = []
    for raw in [manifest.get("config"), *(manifest.get("layers") or [])]:  # type: ignore[misc]
        if not isinstance(raw, dict):
            raise InputError(f"{label}: malformed manifest (a descriptor is not an object)")
        d = Descriptor.from_json(raw, label)
        path = layout.blob_path(d.digest)
        if not path.is_file():
            raise InputError(f"{label}: blob {d.digest} is missing; the layout is incomplete")
        if path.stat().st_size != d.size:
            raise InputError(f"{path}: size {path.stat().st_size} differs from the manifest's {d.size}; layout corrupt")
        checked.append((d, path))
    for d, path in checked:  # only once every blob is known to be there: no half-pushed image
        if registry.push_file(repo, path, d.digest, d.size):
            uploaded += 1
        else:
            skipped += 1
    return uploaded, skipped


def _push_manifest(layout: Layout, d: Descriptor, registry: Registry, repo: str) -> tuple[int, int]:
    """Push a manifest (or an index and its children) and its blobs, by digest."""
    data = layout.read_blob(d.digest)
    manifest = json.loads(data)
    uploaded = skipped = 0
    if d.media_type in (INDEX, DOCKER_LIST):
        for child in manifest.get("manifests") or []:
            u, s = _push_manifest(layout, Descriptor.from_json(child, str(layout.directory)), registry, repo)
            uploaded, skipped = uploaded + u, skipped + s
    else:
        uploaded, skipped = _push_blobs(layout, manifest, registry, repo)
    registry.put_manifest(repo, d.digest, data, d.media_type)
    return uploaded, skipped


def _check_tag(registry: Registry, dest: RegistryRef, digest: str) -> TagState:
    if dest.tag is None:
        return "none"
    current = registry.manifest_digest(dest.repository, dest.tag)
    if current is None:
        return "created"
    if current != digest:
        raise TagConflictError(
            f"{dest}: the tag already points to {current}, not {digest}; tags are write-once: "
            "push under a new tag, or with --no-tag and deploy by digest"
        )
    return "unchanged"


def push_image(
    source: LayoutRef,
    dest: RegistryRef,
    registry: Registry,
    provenance: Path | None = None,
    sboms: tuple[Path, ...] = (),
) -> PushResult:
    layout = Layout(source.directory)
    descriptor = layout.resolve(source.tag)
    registry.ping()
    state = _check_tag(registry, dest, descriptor.digest)  # refuse before uploading anything
    uploaded, skipped = _push_manifest(layout, descriptor, registry, dest.repository)
    attestation = None
    if provenance is not None:
        attestation = _push_attestation(registry, dest.repository, descriptor, provenance)
    pushed_sboms = tuple((path, _push_sbom(registry, dest.repository, descriptor, path)) for path in sboms)
    if dest.tag is not None:
        state = _check_tag(registry, dest, descriptor.digest)  # again: narrow the window for a racing push
        if state == "created":
            data = layout.read_blob(descriptor.digest)
            registry.put_manifest(dest.repository, dest.tag, data, descriptor.media_type)
    return PushResult(
        f"{dest.name}@{descriptor.digest}",
        descriptor.digest,
        dest.tag,
        state,
        uploaded,
        skipped,
        attestation,
        pushed_sboms,
    )


def _attestation_manifest(subject: Descriptor, blob: bytes, media_type: str, artifact_type: str = IN_TOTO) -> bytes:
    """An OCI artifact manifest carrying ``blob`` (a statement, an SBOM) with ``subject`` = the image."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR,
        "layers": [{"mediaType": media_type, "digest": "sha256:" + sha256_hex(blob), "size": len(blob)}],
        # No time annotation: the same statement for the same image is the same artifact, so a
        # re-push is a no-op instead of a new referrer.
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    return canonical_json(manifest)


def _push_attestation(registry: Registry, repo: str, subject: Descriptor, provenance: Path) -> str:
    """Push ``provenance`` as an artifact referring to ``subject``; list it under the fallback tag."""
    try:
        blob = provenance.read_bytes()
    except OSError as exc:
        raise InputError(f"{provenance}: cannot be read ({exc.strerror or exc})") from None
    media_type = IN_TOTO if reader.read(blob, provenance).envelope is None else DSSE
    registry.push_bytes(repo, EMPTY_BLOB)
    registry.push_bytes(repo, blob)
    data = _attestation_manifest(subject, blob, media_type)
    digest = registry.put_manifest(repo, "sha256:" + sha256_hex(data), data, MANIFEST)
    _add_referrer(registry, repo, subject.digest, Descriptor(MANIFEST, digest, len(data), artifact_type=IN_TOTO))
    return digest


def sbom_type(path: Path) -> str | None:
    """The artifact type of an SBOM file, by its name (None: not one detpack pushes)."""
    return next((t for suffix, t in SBOM_TYPES.items() if path.name.endswith(suffix)), None)


def _push_sbom(registry: Registry, repo: str, subject: Descriptor, path: Path) -> str:
    """Push an SBOM as an artifact referring to ``subject``; list it under the fallback tag."""
    kind = sbom_type(path)
    if kind is None:
        raise InputError(f"{path}: not an SBOM detpack pushes (NAME.cdx.json or NAME.spdx.json)")
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    registry.push_bytes(repo, EMPTY_BLOB)
    registry.push_bytes(repo, blob)
    data = _attestation_manifest(subject, blob, kind, kind)
    digest = registry.put_manifest(repo, "sha256:" + sha256_hex(data), data, MANIFEST)
    _add_referrer(registry, repo, subject.digest, Descriptor(MANIFEST, digest, len(data), artifact_type=kind))
    return digest


def _add_referrer(registry: Registry, repo: str, subject_digest: str, referrer: Descriptor) -> None:
    """The referrers tag schema: ``sha256-<hex>`` names an index of everything referring to it."""
    tag = subject_digest.replace(":", "-")
    current = registry.get_manifest(repo, tag)
    manifests: list[dict[str, object]] = []
    if current is not None:
        try:
            manifests = list(json.loads(current[0]).get("manifests") or [])
        except (ValueError, AttributeError):
            manifests = []
    if any(isinstance(m, dict) and m.get("digest") == referrer.digest for m in manifests):
        return
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [*manifests, referrer.to_json()]}
    registry.put_manifest(repo, tag, canonical_json(index), INDEX)
