"""A small OCI distribution-API client: blobs and manifests over HTTP, nothing else.

Enough to push by digest and read back (no Docker daemon, no auth flows: the registries
detpack talks to are local or reached through a proxy that authenticates). Plain HTTP is
used for loopback hosts only (``is_loopback``: ``localhost``, 127.0.0.0/8, ``[::1]``, decided
on the parsed host); everything else is HTTPS. Every failure becomes one
``RegistryError`` line naming the registry and what to check.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from detpack.errors import ConfigError, RegistryError
from detpack.oci.layout import DOCKER_LIST, DOCKER_MANIFEST, INDEX, MANIFEST, check_digest

ACCEPT = ", ".join([MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST])
#: The most of one answer read into memory (a manifest, a tag list, an error): blobs are streamed instead.
MAX_RESPONSE = 8 << 20
#: ``HOST[:PORT]``: a bracketed IPv6 address or a name/IPv4 address, then an optional numeric port.
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\[\]:/@]+))(?::\d*)?")


def is_loopback(host: str) -> bool:
    """Whether ``HOST[:PORT]`` is this machine: exactly ``localhost``, or an IP address in 127.0.0.0/8 or ``[::1]``.

    Decided on the parsed host, never on a prefix: ``localhost.example.com`` and ``127.0.0.1.nip.io``
    are names anyone can point anywhere, so they get HTTPS like every other host.
    """
    m = _HOST_PORT.fullmatch(host)
    if m is None:
        return False
    try:
        if m["v6"] is not None:
            return ipaddress.IPv6Address(m["v6"]).is_loopback
        return m["name"].lower() == "localhost" or ipaddress.IPv4Address(m["name"]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RegistryRef:
    """``HOST[:PORT]/REPO[:TAG]`` (a leading ``oci://`` or ``docker://`` is accepted)."""

    host: str
    repository: str
    tag: str | None

    @classmethod
    def parse(cls, text: str) -> RegistryRef:
        rest = text
        for scheme in ("oci://", "docker://"):
            rest = rest.removeprefix(scheme)
        host, sep, path = rest.partition("/")
        if not sep or not host or not path:
            raise ConfigError(f"{text}: expected REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/app:1.0")
        tag = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, _, tag = path.rpartition(":")
        if "@" in path:
            raise ConfigError(f"{text}: push to a tag or a repository, not to a digest reference")
        if not path or path != path.lower() or any(p == "" for p in path.split("/")):
            raise ConfigError(f"{text}: {path!r} is not a valid repository name (lowercase, slash-separated)")
        return cls(host, path, tag or None)

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Registry:
    """One registry host; methods take the repository so one client serves several."""

    def __init__(self, host: str, *, timeout: float = 60.0) -> None:
        self.host = host
        self.scheme = "http" if is_loopback(host) else "https"
        self.timeout = timeout

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        missing_ok: bool = False,
    ) -> Response | None:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310 - http(s) only
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                status, hdrs, data = resp.status, dict(resp.headers.items()), resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as exc:
            status, hdrs, data = exc.code, dict(exc.headers.items()), exc.read()
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(
                f"{self.host}: registry unreachable ({reason}); check the address and that it is running"
            ) from None
        if len(data) > MAX_RESPONSE:
            raise RegistryError(
                f"{self.host}: {method} {urllib.parse.urlsplit(url).path}: the answer is larger than "
                f"{MAX_RESPONSE >> 20} MiB (a manifest or tag list is far smaller); refusing it"
            )
        if status == 404 and missing_ok:
            return None
        if status not in ok:
            raise RegistryError(
                f"{self.host}: {method} {urllib.parse.urlsplit(url).path} failed: {_explain(status, data)}"
            )
        return Response(status, {k.lower(): v for k, v in hdrs.items()}, data)

    def ping(self) -> None:
        self.request("GET", self.url("/v2/"))

    def has_blob(self, repo: str, digest: str) -> bool:
        return self.request("HEAD", self.url(f"/v2/{repo}/blobs/{digest}"), missing_ok=True) is not None

    def push_blob(self, repo: str, digest: str, size: int, opener: Callable[[], BinaryIO]) -> bool:
        """Upload a blob unless the registry has it; True when it was uploaded."""
        if self.has_blob(repo, digest):
            return False
        start = self.request("POST", self.url(f"/v2/{repo}/blobs/uploads/"), ok=(202,))
        assert start is not None
        location = start.headers.get("location")
        if not location:
            raise RegistryError(f"{self.host}: the registry gave no upload location for {digest}")
        target = urllib.parse.urljoin(self.url("/"), location)
        target += ("&" if "?" in target else "?") + urllib.parse.urlencode({"digest": digest})
        with opener() as body:
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            self.request("PUT", target, body=body, headers=headers, ok=(201,))
        return True

    def push_bytes(self, repo: str, data: bytes) -> str:
        """Upload small content (a manifest's config, a statement) unless present; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.push_blob(repo, digest, len(data), functools.partial(io.BytesIO, data))
        return digest

    def push_file(self, repo: str, path: Path, digest: str, size: int) -> bool:
        """Upload a file as blob ``digest`` unless present; True when it was uploaded."""
        return self.push_blob(repo, digest, size, functools.partial(_open_binary, path))

    def download_blob(self, repo: str, digest: str, out: BinaryIO, size: int | None = None) -> int:
        """Stream a blob into ``out``, verifying its digest (and, given, its ``size``: never more is read);
        returns its size."""
        req = urllib.request.Request(self.url(f"/v2/{repo}/blobs/{digest}"))  # noqa: S310 - http(s) only
        h = hashlib.sha256()
        got = 0
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                while chunk := resp.read(1 << 20):
                    h.update(chunk)
                    out.write(chunk)
                    got += len(chunk)
                    if size is not None and got > size:
                        raise RegistryError(
                            f"{self.host}/{repo}: blob {digest} is longer than the {size} bytes its descriptor "
                            "says; refusing it"
                        )
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"{self.host}/{repo}: blob {digest}: {_explain(exc.code, exc.read())}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise RegistryError(f"{self.host}: registry unreachable ({getattr(exc, 'reason', exc)})") from None
        if "sha256:" + h.hexdigest() != digest:
            raise RegistryError(f"{self.host}/{repo}: blob {digest} came back with other content; refusing it")
        return got

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo`` (following ``Link`` pagination); [] for an unknown repository."""
        tags: list[str] = []
        url: str | None = self.url(f"/v2/{repo}/tags/list?n=1000")
        while url is not None:
            resp = self.request("GET", url, missing_ok=True)
            if resp is None:
                return tags
            try:
                tags += [str(t) for t in json.loads(resp.body).get("tags") or []]
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}/{repo}: unreadable tag list") from None
            link = resp.headers.get("link", "")
            url = urllib.parse.urljoin(url, link.split(";")[0].strip("<> ")) if 'rel="next"' in link else None
        return tags

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest a tag (or digest) points to, or None when absent."""
        resp = self.request(
            "HEAD", self.url(f"/v2/{repo}/manifests/{reference}"), headers={"Accept": ACCEPT}, missing_ok=True
        )
        if resp is None:
            return None
        digest = resp.headers.get("docker-content-digest")
        if digest is None:
            got = self.get_manifest(repo, reference)
            return None if got is None else got[1]
        return check_digest(digest, f"{self.host}/{repo}:{reference}")

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, digest, media type) of a manifest, verified when asked by digest."""
        resp = self.request(
            "GET", self.url(f"/v2/{repo}/manifests/{reference}"), headers={"Accept": ACCEPT}, missing_ok=True
        )
        if resp is None:
            return None
        digest = "sha256:" + hashlib.sha256(resp.body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{self.host}/{repo}: manifest {reference} came back with other content")
        media_type = resp.headers.get("content-type", "").split(";")[0] or _media_type(resp.body)
        return resp.body, digest, media_type

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT",
            self.url(f"/v2/{repo}/manifests/{reference}"),
            body=data,
            headers={"Content-Type": media_type},
            ok=(201,),
        )
        assert resp is not None
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        echoed = resp.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise RegistryError(f"{self.host}/{repo}: the registry stored {echoed} for our manifest {digest}")
        return digest


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


def _media_type(body: bytes) -> str:
    try:
        return str(json.loads(body).get("mediaType", MANIFEST))
    except (ValueError, AttributeError):
        return MANIFEST


def _explain(status: int, body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        detail = ""
    return f"HTTP {status}" + (f" ({detail})" if detail else "")
