"""OCI images: a config and a manifest over layers, written into an image layout.

Config and manifest are canonical JSON (sorted keys, no spaces); ``created`` and every new
history entry carry the epoch; a base image's config, history and layers are kept as they
are (its blobs copied byte for byte, each verified against its digest). The manifest's
annotations name when (``created``), from what (``source``/``revision`` when known) and on
what base (``base.name``/``base.digest``) the image was made; ``source`` is only ever a public
URL, without credentials (``public_source``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import ipaddress
import json
import os
import re
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from detpack.archive.meter import Progress, Told
from detpack.digest import canonical_json
from detpack.errors import ArchiveError, ConfigError, InputError
from detpack.oci.layout import (
    CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX,
    MANIFEST,
    Descriptor,
    Layout,
    LayoutRef,
    copy_blob,
)

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
JSON = dict[str, Any]


@dataclass(frozen=True)
class LayerBlob:
    """A layer file to add: its media type, blob digest and size, and diff_id."""

    path: Path
    media_type: str
    digest: str
    size: int
    diff_id: str

    @classmethod
    def inspect(cls, path: Path, progress: Progress | None = None) -> LayerBlob:
        """Hash the blob and, for a compressed one, the tar inside it, in one streamed pass.

        ``progress`` hears (bytes of the file read, its size), about once a MiB."""
        try:
            raw = path.open("rb")
        except FileNotFoundError:
            raise InputError(f"{path}: no such layer file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        with raw:
            head = raw.peek(4)[:4]
            size = os.fstat(raw.fileno()).st_size
            blob = _HashingReader(raw, None if progress is None else lambda done: progress(min(done, size), size))
            if head == b"\x28\xb5\x2f\xfd":
                diff_id = _zstd_diff_id(path, blob)
                return cls(path, LAYER_ZSTD, blob.digest, blob.size, diff_id)
            if head[:2] != b"\x1f\x8b":
                while blob.read(1 << 20):
                    pass
                return cls(path, LAYER_TAR, blob.digest, blob.size, blob.digest)
            tar = hashlib.sha256()
            try:
                with gzip.GzipFile(fileobj=blob) as z:  # type: ignore[call-overload]
                    while chunk := z.read(1 << 20):
                        tar.update(chunk)
            except (OSError, EOFError, zlib.error) as exc:
                raise ArchiveError(f"{path}: corrupt gzip layer ({exc or 'truncated'})") from None
            while blob.read(1 << 20):  # anything gzip did not need still belongs to the blob
                pass
            return cls(path, LAYER_GZIP, blob.digest, blob.size, "sha256:" + tar.hexdigest())


def _zstd_diff_id(path: Path, blob: _HashingReader) -> str:
    """The sha256 of the tar inside a zstd layer, read through ``blob`` (to its end: the blob digest)."""
    import zstandard

    tar = hashlib.sha256()
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
        with reader as z:
            while chunk := z.read(1 << 20):
                tar.update(chunk)
    except zstandard.ZstdError as exc:
        raise ArchiveError(f"{path}: corrupt zstd layer ({exc})") from None
    while blob.read(1 << 20):  # anything zstd did not need still belongs to the blob
        pass
    return "sha256:" + tar.hexdigest()


class _HashingReader:
    """Reads a file while hashing every byte read (the blob digest of a layer, read once)."""

    def __init__(self, raw: BinaryIO, told: Told | None = None) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._told = told
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.size += len(data)
        if self._told is not None:
            self._told(self.size)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(frozen=True)
class ImageSettings:
    """What the image runs and how: the ``config`` section plus platform and annotations."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    platform: tuple[str, str] = ("linux", "amd64")
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BaseImage:
    ref: LayoutRef
    layout: Layout
    manifest: Descriptor
    manifest_json: JSON
    config: JSON


@dataclass(frozen=True)
class Image:
    ref: LayoutRef
    manifest: Descriptor
    config_digest: str
    layers: tuple[Descriptor, ...]


def rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_PUBLIC_SCHEMES = ("https", "http", "ssh", "git")
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):(?!//)(?P<path>[^\s]+)$")


def public_source(url: str) -> str | None:
    """``url`` as an ``org.opencontainers.image.source``, or None when it names no public location.

    https, http, ssh and git URLs are kept without credentials (http(s) lose ``user:token@``
    whole, since a token is often the user name; ssh keeps a bare login name); git's scp-like
    ``git@host:org/repo.git`` becomes ``https://host/org/repo.git`` (what forges serve); a local
    path, a ``file://`` URL, a bare host alias or a loopback/private address is left out, since
    an image must not carry a path of the machine that made it.
    """
    url = url.strip()
    scp = _SCP_LIKE.match(url)
    if scp and "://" not in url:
        url = f"https://{scp['host']}/{scp['path'].lstrip('/')}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _PUBLIC_SCHEMES or not parts.hostname:
        return None
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost") or ("." not in host and ":" not in host):
        return None
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if not address.is_global:
            return None
    scheme = parts.scheme.lower()
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if scheme in ("ssh", "git") and parts.username and parts.password is None and parts.username != "***":
        netloc = f"{parts.username}@{netloc}"  # ssh://git@host/...: a login name, not a secret
    return urllib.parse.urlunsplit((scheme, netloc, parts.path, parts.query, ""))


def _pick_platform(layout: Layout, index: JSON, platform: tuple[str, str], label: str) -> Descriptor:
    for d in index.get("manifests", []):
        p = d.get("platform") or {}
        if (p.get("os"), p.get("architecture")) == platform:
            return Descriptor.from_json(d, label)
    raise InputError(f"{label}: the base image has no {platform[0]}/{platform[1]} variant; pick another --platform")


def open_base(ref: LayoutRef, platform: tuple[str, str]) -> BaseImage:
    layout = Layout(ref.directory)
    descriptor = layout.resolve(ref.tag)
    if descriptor.media_type in (INDEX, DOCKER_LIST):
        descriptor = _pick_platform(layout, layout.read_json(descriptor.digest), platform, str(ref))
    if descriptor.media_type not in (MANIFEST, DOCKER_MANIFEST):
        raise InputError(f"{ref}: {descriptor.media_type} is not an image manifest")
    manifest = layout.read_json(descriptor.digest)
    try:
        config = layout.read_json(manifest["config"]["digest"])
        for layer in manifest["layers"]:
            if not layout.blob_path(layer["digest"]).is_file():
                raise InputError(f"{ref}: layer blob {layer['digest']} is missing; the base layout is incomplete")
    except (KeyError, TypeError) as exc:
        raise InputError(f"{ref}: malformed manifest ({exc!r})") from None
    return BaseImage(ref, layout, descriptor, manifest, config)


def _merged_env(base: Sequence[str], updates: Sequence[tuple[str, str]]) -> list[str]:
    env: dict[str, str] = {}
    for item in base:
        key, _, value = item.partition("=")
        env[key] = value
    for key, value in updates:
        env.pop(key, None)
        env[key] = value
    return [f"{k}={v}" for k, v in env.items()]


def _image_config(base: JSON | None, layers: Sequence[LayerBlob], settings: ImageSettings, epoch: int) -> JSON:
    """The new config: the base's (unknown fields kept) with our layers, settings and times."""
    config: JSON = json.loads(json.dumps(base)) if base is not None else {}
    when = rfc3339(epoch)
    config["created"] = when
    if base is None:
        config["os"], config["architecture"] = settings.platform
    run: JSON = dict(config.get("config") or {})
    if settings.env:
        run["Env"] = _merged_env(run.get("Env") or [], settings.env)
    if settings.entrypoint is not None:
        run["Entrypoint"] = list(settings.entrypoint)
        run.pop("Cmd", None)  # as Docker does: a new entrypoint does not inherit the base's arguments
    if settings.cmd is not None:
        run["Cmd"] = list(settings.cmd)
    if settings.workdir is not None:
        run["WorkingDir"] = settings.workdir
    if settings.user is not None:
        run["User"] = settings.user
    if settings.labels:
        run["Labels"] = {**(run.get("Labels") or {}), **dict(settings.labels)}
    config["config"] = run
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["type"] = "layers"
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), *(layer.diff_id for layer in layers)]
    config["rootfs"] = rootfs
    history = list(config.get("history") or [])
    # Named by content, never by the local file name: two machines naming the file differently
    # must make the same image.
    history += [{"created": when, "created_by": f"detpack layer {layer.diff_id}"} for layer in layers]
    config["history"] = history
    return config


def build_image(
    ref: LayoutRef,
    layers: Sequence[LayerBlob],
    settings: ImageSettings,
    epoch: int,
    base: BaseImage | None = None,
) -> Image:
    """Write blobs, config and manifest into ``ref``'s layout; tag the manifest last."""
    if not layers and base is None:
        raise ConfigError("detpack image: no layers; give --layer L (and/or --base)")
    out = Layout(ref.directory)
    if out.directory.exists() and not out.exists() and any(out.directory.iterdir()):
        raise InputError(f"{out.directory}: exists, is not empty and is not an OCI image layout; pick another -o")
    descriptors: list[Descriptor] = []
    if base is not None:
        for layer in base.manifest_json["layers"]:
            d = Descriptor.from_json(layer, str(base.ref))
            copy_blob(base.layout, out, d.digest)
            descriptors.append(d)
    for layer in layers:
        out.copy_blob_in(layer.path, layer.digest)
        descriptors.append(Descriptor(layer.media_type, layer.digest, layer.size))
    config = canonical_json(_image_config(base.config if base is not None else None, layers, settings, epoch))
    config_digest = out.write_blob(config)
    annotations = {"org.opencontainers.image.created": rfc3339(epoch), **settings.annotations}
    if base is not None:
        annotations["org.opencontainers.image.base.digest"] = base.manifest.digest
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [d.to_json() for d in descriptors],
        "annotations": dict(sorted(annotations.items())),
    }
    data = canonical_json(manifest)
    digest = out.write_blob(data)
    descriptor = Descriptor(MANIFEST, digest, len(data))
    out.tag(descriptor, ref.tag)
    return Image(ref, descriptor, config_digest, tuple(descriptors))
