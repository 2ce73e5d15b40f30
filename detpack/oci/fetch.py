"""An image named by reference, as local files whose digests are checked: what ``store push`` stores.

``oci:DIR[:TAG]`` is an image layout on disk; ``HOST[:PORT]/REPO[:TAG|@DIGEST]`` an image in a
registry, downloaded into a temporary folder. Either way the result is an ``Image``: the manifest,
its config and its layers as files, each named by the digest the manifest gives (``stored`` re-hashes
what it stores, so a layout blob whose bytes are not its digest is refused there), and the image's
provenance and SBOMs: beside a layout, the files ``detpack image`` writes (``DIR.TAG.intoto.jsonl``,
``DIR.TAG.provenance.json``, ``DIR.TAG.cdx.json``, ``DIR.TAG.spdx.json``); in a registry, the
artifacts ``detpack push`` lists under the image's ``sha256-<hex>`` referrers tag. A referrer about
another image, or a provenance statement without the manifest as its subject, is left out.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.errors import ConfigError, InputError
from detpack.oci import attest
from detpack.oci.layout import DOCKER_LIST, DOCKER_MANIFEST, INDEX, MANIFEST, Descriptor, Layout, LayoutRef
from detpack.oci.push import DSSE, IN_TOTO, SBOM_TYPES
from detpack.oci.registry import Registry, RegistryRef
from detpack.provenance.signing import envelope_path

_DIGEST_REF = re.compile(r"^(?P<rest>.+)@(?P<digest>sha256:[0-9a-f]{64})$")
#: A name part of an image name: what an OCI tag may hold.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Blob:
    """One blob of the image, as a file (the digest is what the manifest names)."""

    path: Path
    digest: str  # sha256:HEX
    size: int
    media_type: str


@dataclass(frozen=True)
class Image:
    reference: str  # as it is recorded: oci:DIR:TAG, or HOST/REPO[:TAG]@sha256:...
    name: str  # the store name it gets by default: BASE:TAG
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    provenance: Path | None  # a signed envelope when there is one, else the statement
    sboms: tuple[Path, ...]  # NAME.cdx.json, NAME.spdx.json


def is_reference(text: str) -> bool:
    """Whether a ``store push`` argument names an image (``oci:…`` or ``HOST/REPO…``) rather than a file."""
    if text.startswith("oci:"):
        return True
    if Path(text).exists() or "/" not in text:
        return False
    host, _, path = text.removeprefix("docker://").removeprefix("oci://").partition("/")
    named = ":" in path.rsplit("/", 1)[-1] or "@sha256:" in path  # a tag or a digest: a file name has neither
    return named and (":" in host or "." in host or host == "localhost")


@contextlib.contextmanager
def open_image(text: str, provenance: Path | None = None, *, layers: bool = True) -> Iterator[Image]:
    """The image ``text`` names, its files valid inside the ``with`` (a registry's are downloaded; with
    ``layers=False`` only its manifest and config: the layer blobs' paths are then not there, and its
    provenance and SBOMs are not looked for)."""
    if text.startswith("oci:"):
        yield _from_layout(LayoutRef.parse(text), provenance)
        return
    with tempfile.TemporaryDirectory(prefix="detpack-image-") as tmp:
        yield _from_registry(text, Path(tmp), provenance, layers=layers)


def _default_name(base: str, tag: str | None, digest: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._+~-]", "-", base).lstrip("._+~-") or "image"
    return f"{base}:{tag or digest.replace(':', '-')}"


def _manifest(data: bytes, media_type: str, label: str) -> tuple[Descriptor, tuple[Descriptor, ...]]:
    """The config and layer descriptors of an image manifest; InputError for anything else."""
    try:
        value = json.loads(data)
    except ValueError:
        raise InputError(f"{label}: the manifest is not JSON") from None
    if not isinstance(value, dict):
        raise InputError(f"{label}: the manifest is not a JSON object")
    kind = value.get("mediaType") or media_type
    if kind in (INDEX, DOCKER_LIST) or "manifests" in value:
        raise InputError(
            f"{label}: an image index (several platforms); store one platform's image, named by its manifest digest"
        )
    if kind not in (MANIFEST, DOCKER_MANIFEST) or not isinstance(value.get("layers"), list):
        raise InputError(f"{label}: not an image manifest (media type {kind!r})")
    config = Descriptor.from_json(value.get("config") or {}, f"{label}: config")
    layers = tuple(Descriptor.from_json(d if isinstance(d, dict) else {}, f"{label}: layer") for d in value["layers"])
    return config, layers


def _from_layout(ref: LayoutRef, provenance: Path | None) -> Image:
    layout = Layout(ref.directory)
    descriptor = layout.resolve(ref.tag)  # a missing or damaged layout: one line naming the directory
    data = layout.read_blob(descriptor.digest)
    config, layers = _manifest(data, descriptor.media_type, str(ref))

    def blob(d: Descriptor) -> Blob:
        path = layout.blob_path(d.digest)
        if not path.is_file():
            raise InputError(f"{path}: missing (blob {d.digest} of {ref}); the layout is incomplete")
        return Blob(path, d.digest, d.size, d.media_type)

    stem = attest.image_provenance_path(ref.directory, ref.tag)
    if provenance is None:
        for candidate in (envelope_path(stem), stem):
            if candidate.is_file() and attest.names_subject(candidate, descriptor.digest):
                provenance = candidate
                break
    hexdigest = descriptor.digest.removeprefix("sha256:").encode("ascii")
    sboms = tuple(
        p
        for p in (stem.with_name(stem.name.removesuffix(".provenance.json") + s) for s in SBOM_TYPES)
        if p.is_file() and hexdigest in p.read_bytes()  # about this image
    )
    base = ref.directory.resolve().name
    return Image(
        f"oci:{base}:{ref.tag}",  # the folder's name only: where it lies on this machine is nobody's business
        _default_name(base, ref.tag, descriptor.digest),
        Blob(layout.blob_path(descriptor.digest), descriptor.digest, len(data), descriptor.media_type),
        blob(config),
        tuple(blob(d) for d in layers),
        provenance,
        sboms,
    )


def _parse_registry(text: str) -> tuple[RegistryRef, str | None]:
    m = _DIGEST_REF.match(text)
    if m is None:
        return RegistryRef.parse(text), None
    ref = RegistryRef.parse(m["rest"])
    return ref, m["digest"]


def _from_registry(text: str, tmp: Path, provenance: Path | None, *, layers: bool = True) -> Image:
    ref, digest = _parse_registry(text)
    if ref.tag is None and digest is None:
        raise ConfigError(f"{text}: name the image by tag or digest (HOST/REPO:TAG or HOST/REPO@sha256:…)")
    registry = Registry(ref.host)
    got = registry.get_manifest(ref.repository, digest or str(ref.tag))
    if got is None:
        raise InputError(f"{text}: no such image in the registry")
    data, manifest_digest, media_type = got
    if digest is not None and manifest_digest != digest:  # get_manifest checks it too; never trust one place
        raise InputError(f"{text}: the registry returned a manifest with digest {manifest_digest}")
    config, described = _manifest(data, media_type, text)
    manifest_path = tmp / "manifest"
    manifest_path.write_bytes(data)

    def download(d: Descriptor, name: str) -> Blob:
        path = tmp / name
        with path.open("wb") as f:
            size = registry.download_blob(ref.repository, d.digest, f, d.size)  # refuses other content
        return Blob(path, d.digest, size, d.media_type)

    config_blob = download(config, "config")
    if not layers:  # named, not fetched
        layer_blobs = tuple(Blob(tmp / f"layer{n}", d.digest, d.size, d.media_type) for n, d in enumerate(described, 1))
    else:
        layer_blobs = tuple(download(d, f"layer{n}") for n, d in enumerate(described, 1))
    name = _default_name(ref.repository.rsplit("/", 1)[-1], ref.tag, manifest_digest)
    found_provenance, sboms = _referrers(registry, ref, manifest_digest, tmp, name) if layers else (None, ())
    reference = f"{ref}@{manifest_digest}"
    return Image(
        reference,
        name,
        Blob(manifest_path, manifest_digest, len(data), media_type),
        config_blob,
        layer_blobs,
        provenance or found_provenance,
        sboms,
    )


def _referrers(
    registry: Registry, ref: RegistryRef, digest: str, tmp: Path, name: str
) -> tuple[Path | None, tuple[Path, ...]]:
    """The provenance (a signed one first) and SBOMs listed under the image's referrers tag."""
    got = registry.get_manifest(ref.repository, digest.replace(":", "-"))
    if got is None:
        return None, ()
    try:
        listed = json.loads(got[0]).get("manifests") or []
    except (ValueError, AttributeError):
        return None, ()
    statements: list[Path] = []
    sboms: dict[str, Path] = {}
    for n, entry in enumerate(x for x in listed if isinstance(x, dict)):
        kind = entry.get("artifactType")
        suffix = next((s for s, t in SBOM_TYPES.items() if t == kind), None)
        if kind != IN_TOTO and (suffix is None or suffix in sboms):
            continue
        blob = _artifact_blob(registry, ref, str(entry.get("digest", "")), digest, tmp / f"referrer{n}")
        if blob is None:
            continue
        if suffix is not None:
            sboms[suffix] = blob.path.rename(tmp / f"{name.replace(':', '.')}{suffix}")
            continue
        signed = blob.media_type == DSSE
        path = blob.path.rename(tmp / f"statement{n}{'.intoto.jsonl' if signed else '.provenance.json'}")
        if attest.names_subject(path, digest):
            statements.insert(0 if signed else len(statements), path)  # a signed one first
    return (statements[0] if statements else None), tuple(sboms.values())


def _artifact_blob(registry: Registry, ref: RegistryRef, digest: str, subject: str, path: Path) -> Blob | None:
    """The one blob of an artifact manifest that refers to ``subject``; None for anything else."""
    if not digest.startswith("sha256:"):
        return None
    got = registry.get_manifest(ref.repository, digest)
    if got is None:
        return None
    try:
        manifest: Any = json.loads(got[0])
        about = manifest["subject"]["digest"]
        layer = manifest["layers"][0]
        d = Descriptor.from_json(layer, f"{ref.name}@{digest}")
    except (ValueError, KeyError, IndexError, TypeError, InputError):
        return None
    if about != subject or d.size > 64 << 20:
        return None
    with path.open("wb") as f:
        size = registry.download_blob(ref.repository, d.digest, f, d.size)
    return Blob(path, d.digest, size, d.media_type)


def check_image_name(name: str) -> str:
    """A store name for an image, ``BASE:TAG``: a store name, then an OCI tag."""
    base, sep, tag = name.partition(":")
    if not sep or not base or not _TAG.fullmatch(tag):
        raise ConfigError(f"--name {name}: an image is named BASE:TAG (e.g. app:1.0)")
    return name
