"""Where an image's provenance is: beside its layout, or attached to it in a registry.

A target is a local layout (``oci:DIR[:TAG]``, provenance ``DIR.TAG.intoto.jsonl`` or
``DIR.TAG.provenance.json`` beside it, as ``detpack image`` writes them) or a registry
reference (``HOST[:PORT]/REPO[:TAG|@sha256:…]``, provenance the artifacts whose ``subject`` is
the manifest, as ``detpack push`` attaches them: found through the referrers API, else the
``sha256-<hex>`` referrers tag). This module only finds and fetches: the manifest digest and the
candidate statements' bytes, each with where it came from. Checking them is the caller's job.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from detpack.atomic import read_input
from detpack.errors import ConfigError, InputError, RegistryError
from detpack.oci import attest
from detpack.oci.layout import INDEX, Layout, LayoutRef, check_digest
from detpack.oci.push import DSSE, IN_TOTO
from detpack.oci.registry import Registry, RegistryRef

#: A statement or envelope larger than this is not one of ours: refuse to download it.
MAX_STATEMENT = 16 << 20
#: ``HOST[:PORT]/REPO…`` where the host has a dot or a port, or is localhost (what Docker assumes).
_REGISTRY = re.compile(r"^(?:oci://|docker://)?(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::\d+)?|\[::1\](?::\d+)?)/")


@dataclass(frozen=True)
class Candidate:
    """A statement or DSSE envelope that may be the image's provenance."""

    where: str  # a file path, or REGISTRY/REPO@digest of the artifact that carried it
    data: bytes  # its bytes, as stored


@dataclass(frozen=True)
class ImageEvidence:
    """An image named by the user, its manifest digest and where its provenance may be."""

    label: str  # what the user named
    digest: str  # sha256:… of the manifest
    candidates: tuple[Candidate, ...]  # in the order to try
    looked: str  # where the provenance was looked for (for "none found")


@dataclass(frozen=True)
class RegistryTarget:
    """``HOST/REPO`` and the tag or digest that names the manifest."""

    ref: RegistryRef
    reference: str  # a tag, or sha256:…


def _is_registry_reference(text: str) -> bool:
    """Whether ``text`` (not an existing path) reads as a registry reference rather than a file."""
    m = _REGISTRY.match(text)
    if m is None:
        return False
    host = m["host"]
    if Path(host).exists() or Path(text.split("/", 1)[0]).exists():
        return False  # a relative path into an existing directory
    return "." in host.strip(".") or ":" in host or host == "localhost"


def parse_registry_target(text: str) -> RegistryTarget:
    name, at, digest = text.partition("@")
    if at:
        check_digest(digest, text)
    ref = RegistryRef.parse(name)
    if at:
        return RegistryTarget(RegistryRef(ref.host, ref.repository, None), digest)
    return RegistryTarget(ref, ref.tag or "latest")


def from_layout(label: str, ref: LayoutRef, provenance: Path | None) -> ImageEvidence:
    descriptor = Layout(ref.directory).resolve(ref.tag)
    Layout(ref.directory).read_blob(descriptor.digest)  # the manifest is there and has that digest
    statement = attest.image_provenance_path(ref.directory, ref.tag)
    if ref.directory.name:  # say it as the user named the layout (resolved only for `oci:.`)
        statement = ref.directory.with_name(statement.name)
    envelope = statement.with_name(statement.name.removesuffix(".provenance.json") + ".intoto.jsonl")
    paths = [provenance] if provenance is not None else [p for p in (envelope, statement) if p.is_file()]
    return ImageEvidence(label, descriptor.digest, tuple(Candidate(str(p), _read(p)) for p in paths), str(envelope))


def from_registry(label: str, target: RegistryTarget, provenance: Path | None, registry: Registry) -> ImageEvidence:
    repo = target.ref.repository
    found = registry.get_manifest(repo, target.reference)
    if found is None:
        raise InputError(f"{label}: no such image in the registry (check the repository and tag)")
    digest = found[1]
    if provenance is not None:
        return ImageEvidence(label, digest, (Candidate(str(provenance), _read(provenance)),), str(provenance))
    candidates = tuple(_referred(registry, repo, digest))
    return ImageEvidence(label, digest, candidates, f"the artifacts referring to it in {target.ref.name}")


def _referred(registry: Registry, repo: str, digest: str) -> list[Candidate]:
    """The in-toto statements and envelopes carried by artifacts whose subject is ``digest``."""
    out: list[tuple[bool, Candidate]] = []  # (unsigned, candidate)
    for descriptor in _referrers(registry, repo, digest):
        if descriptor.get("artifactType") not in (None, IN_TOTO) or not isinstance(descriptor.get("digest"), str):
            continue
        got = registry.get_manifest(repo, str(descriptor["digest"]))
        if got is None:
            continue
        try:
            manifest = json.loads(got[0])
            subject = manifest.get("subject") or {}
            layers = list(manifest.get("layers") or [])
        except (ValueError, AttributeError, TypeError):
            continue  # not an artifact manifest: nothing of ours
        if not isinstance(subject, dict) or subject.get("digest") != digest:
            continue  # listed under the tag, but it refers to something else
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("mediaType") not in (DSSE, IN_TOTO):
                continue
            size, blob = layer.get("size"), layer.get("digest")
            if not isinstance(size, int) or size > MAX_STATEMENT or not isinstance(blob, str):
                continue
            buffer = _Capped()
            registry.download_blob(repo, check_digest(blob, f"{registry.host}/{repo}@{got[1]}"), buffer)
            unsigned = layer.get("mediaType") != DSSE
            out.append((unsigned, Candidate(f"{registry.host}/{repo}@{got[1]}", buffer.getvalue())))
    # Signed ones first: they are the ones that can verify.
    return [c for _, c in sorted(out, key=lambda pair: pair[0])]


def _referrers(registry: Registry, repo: str, digest: str) -> list[dict[str, object]]:
    """The referrers API's answer, else the ``sha256-<hex>`` fallback tag's index."""
    bodies: list[bytes] = []
    try:
        resp = registry.request(
            "GET", registry.url(f"/v2/{repo}/referrers/{digest}"), headers={"Accept": INDEX}, missing_ok=True
        )
        if resp is not None:
            bodies.append(resp.body)
    except RegistryError:
        pass  # no referrers API (Distribution 2.8 answers 404 or 405): the fallback tag says it
    fallback = registry.get_manifest(repo, digest.replace(":", "-"))
    if fallback is not None:
        bodies.append(fallback[0])
    seen: dict[str, dict[str, object]] = {}
    for body in bodies:
        try:
            manifests = json.loads(body).get("manifests") or []
        except (ValueError, AttributeError):
            continue
        for m in manifests:
            if isinstance(m, dict) and isinstance(m.get("digest"), str):
                seen.setdefault(str(m["digest"]), m)
    return list(seen.values())


class _Capped(io.BytesIO):
    """A buffer that refuses to grow past MAX_STATEMENT (a registry may send more than it said)."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > MAX_STATEMENT:
            raise RegistryError(f"a provenance blob is larger than {MAX_STATEMENT} bytes; refusing it")
        return super().write(data)


def _read(path: Path) -> bytes:
    return read_input(path)


def reference_kind(text: str) -> str:
    """``layout``, ``registry`` or ``file``: how ``verify`` reads one ARTIFACT argument."""
    if text.startswith("oci:") and not text.startswith("oci://"):
        return "layout"
    if Path(text).exists():
        return "file"
    if _is_registry_reference(text):
        return "registry"
    if text.startswith(("oci://", "docker://")):
        raise ConfigError(f"{text}: expected REGISTRY/REPOSITORY[:TAG|@sha256:…]")
    return "file"
