"""The OCI-registry backend: a store kept in one registry repository (``oci://HOST:PORT/REPO``).

Everything is an OCI artifact manifest in REPO, found by tag:

    blob-<hex>              the blob as the artifact's one layer (live), or no layer and the
                            annotation ``retired`` (retention took it out of the live set)
    name-<sha256(name)>     a write-once binding: the name and digest as annotations, the blob as
                            its layer (so the registry keeps it)
    log-<stream>-<i>        log record i (base64 in an annotation)
    log-<stream>-length     how many records of the stream are written (the commit point)
    store-key               the store's public key (PEM in an annotation)

Distribution lets any tag be re-pointed, so write-once is the client's job, as for images:
a name tag is checked before it is written and a binding to other bytes is refused. A
record becomes part of the log only when the length tag moves past it, so a writer killed
between the two leaves an invisible record that the next append overwrites. ``lock`` is a
local file lock: it serialises writers on this machine; writers on several machines need the
registry to be written from one place (Distribution has no compare-and-set on tags).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from detpack.atomic import exclusive
from detpack.digest import canonical_json, file_sha256
from detpack.errors import StoreError, StoreRefusedError
from detpack.oci.layout import MANIFEST
from detpack.oci.push import EMPTY_BLOB, EMPTY_DESCRIPTOR
from detpack.oci.registry import Registry, RegistryRef
from detpack.store.backend import DIGEST_RE, Records, Stream, already_bound, checked_digest, checked_name

ARTIFACT = "application/vnd.detpack.store.{kind}.v1"
BLOB_MEDIA_TYPE = "application/octet-stream"
_PREFIX = "org.detpack.store."


class RegistryBackend:
    """A store in one repository of an OCI registry (see the module docstring)."""

    def __init__(self, url: str, lock_dir: Path) -> None:
        ref = RegistryRef.parse(url)
        if ref.tag is not None:
            raise StoreError(f"{url}: a store is a repository (oci://HOST:PORT/REPO), not a tag")
        self.url = url
        self.repo = ref.repository
        self.registry = Registry(ref.host)
        self._lock_path = lock_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".lock")
        self._empty_pushed = False

    # -- artifacts ------------------------------------------------------------------------
    def _manifest(self, tag: str) -> dict[str, Any] | None:
        got = self.registry.get_manifest(self.repo, tag)
        if got is None:
            return None
        try:
            value = json.loads(got[0])
        except ValueError:
            raise StoreError(f"{self.url}: tag {tag} holds unreadable JSON; the store is damaged") from None
        if not isinstance(value, dict):
            raise StoreError(f"{self.url}: tag {tag} is not a manifest; the store is damaged")
        return value

    def _annotation(self, manifest: dict[str, Any], key: str) -> str | None:
        value = (manifest.get("annotations") or {}).get(_PREFIX + key)
        return value if isinstance(value, str) else None

    def _put(
        self, tag: str, kind: str, annotations: dict[str, str], layers: list[dict[str, Any]] | None = None
    ) -> None:
        if not self._empty_pushed:
            self.registry.push_bytes(self.repo, EMPTY_BLOB)
            self._empty_pushed = True
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": ARTIFACT.format(kind=kind),
            "config": EMPTY_DESCRIPTOR,
            "layers": list(layers or []),
            "annotations": {_PREFIX + k: v for k, v in annotations.items()},
        }
        self.registry.put_manifest(self.repo, tag, canonical_json(manifest), MANIFEST)

    # -- writers --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with exclusive(self._lock_path, self._lock_path, "the store's lock", StoreError):
            yield

    # -- blobs ----------------------------------------------------------------------------
    def _blob_layer(self, digest: str) -> dict[str, Any] | None:
        manifest = self._manifest(f"blob-{checked_digest(digest)}")  # never another path of the registry's API
        if manifest is None or self._annotation(manifest, "retired") is not None:
            return None
        layers = manifest.get("layers") or []
        return layers[0] if layers and isinstance(layers[0], dict) else None

    def has_blob(self, digest: str) -> bool:
        return self._blob_layer(digest) is not None

    def put_blob(self, digest: str, source: Path) -> bool:
        if self.has_blob(digest):
            return False
        if file_sha256(source) != digest:
            raise StoreError(f"{source}: changed while it was being stored (sha256 is no longer {digest[:16]}…)")
        size = source.stat().st_size
        self.registry.push_file(self.repo, source, f"sha256:{digest}", size)
        layer = {"mediaType": BLOB_MEDIA_TYPE, "digest": f"sha256:{digest}", "size": size}
        self._put(f"blob-{digest}", "blob", {"digest": digest}, [layer])
        return True

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        if not self.has_blob(digest):
            raise StoreError(f"{self.url}: blob sha256:{digest} is not in the store")
        with tempfile.TemporaryFile() as spool:
            self.registry.download_blob(self.repo, f"sha256:{digest}", spool)
            spool.seek(0)
            yield spool

    def list_blobs(self) -> Iterator[str]:
        for tag in sorted(self.registry.list_tags(self.repo)):
            if tag.startswith("blob-") and DIGEST_RE.fullmatch(tag[5:]) and self.has_blob(tag[5:]):
                yield tag[5:]

    def retire_blob(self, digest: str) -> None:
        if self.has_blob(digest):
            self._put(f"blob-{digest}", "blob", {"digest": digest, "retired": "true"})

    # -- names ----------------------------------------------------------------------------
    @staticmethod
    def _name_tag(name: str) -> str:
        return "name-" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()

    def get_name(self, name: str) -> str | None:
        manifest = self._manifest(self._name_tag(checked_name(name, self.url)))
        return None if manifest is None else self._annotation(manifest, "digest")

    def bind_name(self, name: str, digest: str) -> None:
        checked_name(name, self.url)  # refused as the other backends refuse it, though its tag is a hash
        checked_digest(digest)
        if already_bound(name, self.get_name(name), digest, self.url):
            return
        layer = self._blob_layer(digest)
        self._put(self._name_tag(name), "name", {"name": name, "digest": digest}, [layer] if layer else [])

    def list_names(self) -> dict[str, str]:
        names = {}
        for tag in sorted(self.registry.list_tags(self.repo)):
            if not tag.startswith("name-"):
                continue
            manifest = self._manifest(tag)
            name = manifest and self._annotation(manifest, "name")
            digest = manifest and self._annotation(manifest, "digest")
            if name and digest and self._name_tag(name) == tag:
                names[name] = digest
        return names

    # -- log ------------------------------------------------------------------------------
    def _length(self, stream: Stream) -> int:
        manifest = self._manifest(f"log-{stream}-length")
        text = None if manifest is None else self._annotation(manifest, "length")
        if manifest is not None and (text is None or not text.isdigit()):
            raise StoreError(f"{self.url}: tag log-{stream}-length is damaged")
        return int(text) if text else 0

    def read_log(self, stream: Stream) -> Records:
        items = []
        for i in range(self._length(stream)):
            manifest = self._manifest(f"log-{stream}-{i}")
            text = None if manifest is None else self._annotation(manifest, "record")
            if text is None:
                raise StoreError(f"{self.url}: log record {stream} #{i} is missing; the store is damaged")
            try:
                items.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise StoreError(f"{self.url}: log record {stream} #{i} is not base64; the store is damaged") from None
        return Records(tuple(items))

    def append_log(self, stream: Stream, index: int, record: bytes) -> None:
        if b"\n" in record:
            raise ValueError("a log record cannot contain a newline")
        length = self._length(stream)
        if length != index:
            raise StoreError(
                f"{self.url}: log {stream} has {length} records, expected {index} (written outside the store's lock?)"
            )
        self._put(f"log-{stream}-{index}", "record", {"record": base64.b64encode(record).decode("ascii")})
        self._put(f"log-{stream}-length", "length", {"length": str(index + 1)})  # the commit point

    def truncate_log(self, stream: Stream, count: int) -> None:
        if self._length(stream) > count:
            self._put(f"log-{stream}-length", "length", {"length": str(count)})

    # -- the store's key ------------------------------------------------------------------
    def read_public_key(self) -> bytes | None:
        manifest = self._manifest("store-key")
        text = None if manifest is None else self._annotation(manifest, "public-key")
        return None if text is None else text.encode("ascii")

    def publish_public_key(self, pem: bytes) -> None:
        existing = self.read_public_key()
        if existing == pem:
            return
        if existing is not None:
            raise StoreRefusedError(f"{self.url}: another public key is already published for this store")
        self._put("store-key", "key", {"public-key": pem.decode("ascii")})
