"""The write-once artifact store: content-addressed blobs, name bindings, and a verifiable log.

``open_store(url)`` picks the backend from the URL: a local directory (a path or
``file://``), a repository in an OCI registry, ``oci://HOST:PORT/REPO``, or a PostgreSQL
database for many writers, ``postgresql://USER@HOST:PORT/DB?blobs=DIR|oci://…``. Backends
implement ``backend.Backend``; everything else (``Store``, ``log``, ``merkle``, ``audit``)
works on that protocol only. Whichever the backend, the store's private key stays with the
writer, outside the store (``keys.StoreKeys``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

from detpack.errors import StoreError
from detpack.provenance import signing
from detpack.store import postgres
from detpack.store.audit import StoreAudit, verify_store
from detpack.store.backend import Backend, Records
from detpack.store.keys import StoreKeys, default_key_dir, user_dir
from detpack.store.local import LocalBackend
from detpack.store.pins import TrustedKey
from detpack.store.registry import RegistryBackend
from detpack.store.store import Decision, Store
from detpack.store.writer import Pushed

__all__ = [
    "Backend",
    "Decision",
    "LocalBackend",
    "Pushed",
    "Records",
    "RegistryBackend",
    "Store",
    "StoreAudit",
    "StoreKeys",
    "TrustedKey",
    "default_store_url",
    "open_backend",
    "open_store",
    "verify_store",
]


def default_store_url() -> str:
    """``$XDG_DATA_HOME/detpack/store`` (``~/.local/share/detpack/store``)."""
    return str(user_dir("XDG_DATA_HOME", ".local/share") / "detpack" / "store")


def open_backend(url: str) -> Backend:
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme == "file" else url)
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: not a directory, so not a store")
        return LocalBackend(path)
    if parts.scheme == "oci":
        return RegistryBackend(url, user_dir("XDG_CACHE_HOME", ".cache") / "detpack" / "store-locks")
    if parts.scheme in ("postgresql", "postgres"):
        _, blobs, _ = postgres.split_url(url)
        if urlsplit(blobs).scheme in ("postgresql", "postgres"):
            raise StoreError(f"{url}: blobs go in a directory or an OCI registry, not in another database")
        return postgres.PostgresBackend(url, open_backend(blobs))
    raise StoreError(
        f"{url}: unknown store URL scheme {parts.scheme!r} "
        "(use a directory path, oci://HOST:PORT/REPO or postgresql://USER@HOST:PORT/DB?blobs=…)"
    )


def open_store(
    url: str,
    signing_key: Path | None = None,
    author: signing.PrivateKey | None = None,
    trust: TrustedKey | None = None,
) -> Store:
    """The store at ``url``; ``signing_key`` is its private key (else it is looked for in the writer's
    key directory, by the store's id: see ``keys``); ``trust``: the store key readers believe (else the
    published one, pinned at first use: see ``pins``)."""
    backend = open_backend(url)
    directory = default_key_dir()
    if isinstance(backend, LocalBackend):
        keys = StoreKeys(directory, signing_key, inside=backend.inside_key_path)
    else:
        legacy = directory / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.key"  # named by URL before
        keys = StoreKeys(directory, signing_key, legacy=(legacy,))
    return Store(backend, keys, author, trust)
