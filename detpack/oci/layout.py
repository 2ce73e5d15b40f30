"""The OCI image layout on disk: ``oci-layout``, ``index.json`` and content-addressed blobs.

Blobs are written atomically under ``blobs/sha256/<hex>`` and are verified against their
digest whenever they are read or copied in; ``index.json`` is replaced atomically and
last, so a reader sees the old image or the new one, never a mix. A tag is the
``org.opencontainers.image.ref.name`` annotation of an index entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detpack.atomic import atomic_writer, write_bytes
from detpack.digest import canonical_json, sha256_hex, stream_sha256
from detpack.errors import ConfigError, InputError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_TAG = "latest"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    platform: JSON | None = None

    def to_json(self) -> JSON:
        d: JSON = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform:
            d["platform"] = self.platform
        return d

    @classmethod
    def from_json(cls, d: JSON, label: str) -> Descriptor:
        try:
            return cls(
                str(d["mediaType"]),
                check_digest(str(d["digest"]), label),
                int(d["size"]),
                dict(d.get("annotations") or {}),
                d.get("artifactType"),
                d.get("platform"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{label}: malformed descriptor ({exc!r}); the layout is damaged") from None


def check_digest(digest: str, label: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InputError(f"{label}: {digest!r} is not a sha256 digest")
    return digest


def _sha256_digest(data: bytes) -> str:
    return "sha256:" + sha256_hex(data)


@dataclass(frozen=True)
class LayoutRef:
    """``oci:DIR[:TAG]``."""

    directory: Path
    tag: str
    tagged: bool = True  # False when the tag is the default, not named in the reference

    @classmethod
    def parse(cls, text: str, *, what: str = "image") -> LayoutRef:
        if not text.startswith("oci:"):
            raise ConfigError(f"{text}: an {what} is named oci:DIR[:TAG] (an OCI image layout directory)")
        rest = text[4:]
        directory, sep, tag = rest.rpartition(":")
        tagged = bool(sep) and "/" not in tag
        if not tagged:
            directory, tag = rest, DEFAULT_TAG
        if not directory:
            raise ConfigError(f"{text}: missing the layout directory after oci:")
        if not tag or len(tag) > 128 or not (tag[0].isalnum() or tag[0] == "_"):
            raise ConfigError(f"{text}: {tag!r} is not a valid tag")
        return cls(Path(directory), tag, tagged)

    def __str__(self) -> str:
        return f"oci:{self.directory}:{self.tag}"


class Layout:
    """An image layout directory (created on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def blob_path(self, digest: str) -> Path:
        return self.directory / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def exists(self) -> bool:
        return (self.directory / "index.json").is_file()

    def index(self) -> JSON:
        path = self.directory / "index.json"
        if not path.is_file():
            if not self.directory.exists():
                raise InputError(f"{self.directory}: no such image layout directory")
            raise InputError(f"{self.directory}: not an OCI image layout (no index.json)")
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: unreadable index ({exc}); the layout is damaged") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise InputError(f"{path}: not an OCI image index")
        return data

    def entries(self) -> list[Descriptor]:
        return [Descriptor.from_json(d, str(self.directory / "index.json")) for d in self.index().get("manifests", [])]

    def resolve(self, tag: str) -> Descriptor:
        entries = self.entries()
        for d in entries:
            if d.annotations.get(REF_NAME) == tag:
                return d
        names = sorted(d.annotations.get(REF_NAME, "") for d in entries if d.annotations.get(REF_NAME))
        known = f"; it has: {', '.join(names)}" if names else ""
        raise InputError(f"{self.directory}: no image tagged {tag!r}{known}")

    def read_blob(self, digest: str, *, limit: int = 64 << 20) -> bytes:
        path = self.blob_path(digest)
        try:
            with path.open("rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise InputError(f"{self.directory}: blob {digest} is missing; the layout is incomplete") from None
        if len(data) > limit:
            raise InputError(f"{path}: larger than {limit} bytes; not a manifest or config")
        if _sha256_digest(data) != digest:
            raise InputError(f"{path}: content does not match its digest {digest}; the layout is corrupt")
        return data

    def read_json(self, digest: str) -> JSON:
        data = self.read_blob(digest)
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise InputError(f"{self.blob_path(digest)}: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise InputError(f"{self.blob_path(digest)}: not a JSON object")
        return value

    def _init(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"{self.directory}: exists and is not a directory")
        marker = self.directory / "oci-layout"
        if not marker.exists():
            write_bytes(marker, canonical_json({"imageLayoutVersion": "1.0.0"}))
        (self.directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def write_blob(self, data: bytes) -> str:
        self._init()
        digest = _sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            write_bytes(path, data)
        return digest

    def copy_blob_in(self, source: Path, digest: str) -> None:
        """Copy a blob file in, verifying it hashes to ``digest`` (a mismatch writes nothing)."""
        self._init()
        path = self.blob_path(digest)
        if path.exists():
            return
        with atomic_writer(path) as out, source.open("rb") as f:
            if "sha256:" + stream_sha256(f, copy_to=out) != digest:
                raise InputError(f"{source}: content does not match its digest {digest}; refusing to copy it")

    def tag(self, descriptor: Descriptor, tag: str) -> None:
        """Point ``tag`` at ``descriptor`` (replacing the entry with that tag, keeping the rest)."""
        self._init()
        index: JSON = self.index() if self.exists() else {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
        current: list[JSON] = list(index.get("manifests") or [])
        kept = [d for d in current if (d.get("annotations") or {}).get(REF_NAME) != tag]
        entry = Descriptor(
            descriptor.media_type,
            descriptor.digest,
            descriptor.size,
            {**descriptor.annotations, REF_NAME: tag},
            descriptor.artifact_type,
            descriptor.platform,
        )
        index["manifests"] = [*kept, entry.to_json()]
        index.setdefault("mediaType", INDEX)
        write_bytes(self.directory / "index.json", canonical_json(index))


def copy_blob(source: Layout, target: Layout, digest: str) -> None:
    if source.directory.resolve() == target.directory.resolve():
        return
    path = source.blob_path(digest)
    if not path.is_file():
        raise InputError(f"{source.directory}: blob {digest} is missing; the layout is incomplete")
    target.copy_blob_in(path, digest)
