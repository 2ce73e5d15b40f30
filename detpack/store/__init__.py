"""The write-once artifact store: content-addressed blobs, name bindings, and a verifiable log.

``open_store(url)`` picks the backend from the URL: a local directory (a path or
``file://``), or a repository in an OCI registry, ``oci://HOST:PORT/REPO``. Backends
implement ``backend.Backend``; everything else (``Store``, ``log``, ``merkle``, ``audit``)
works on that protocol only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit

from detpack.errors import StoreError
from detpack.store.audit import StoreAudit, verify_store
from detpack.store.backend import Backend, Records
from detpack.store.local import LocalBackend
from detpack.store.registry import RegistryBackend
from detpack.store.store import Decision, Pushed, Store

__all__ = [
    "Backend",
    "Decision",
    "LocalBackend",
    "Pushed",
    "Records",
    "RegistryBackend",
    "Store",
    "StoreAudit",
    "default_store_url",
    "open_backend",
    "open_store",
    "verify_store",
]


def _user_dir(variable: str, fallback: str) -> Path:
    return Path(os.environ.get(variable) or Path.home() / fallback)


def default_store_url() -> str:
    """``$XDG_DATA_HOME/detpack/store`` (``~/.local/share/detpack/store``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "detpack" / "store")


def open_backend(url: str) -> Backend:
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme == "file" else url)
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: not a directory, so not a store")
        return LocalBackend(path)
    if parts.scheme == "oci":
        return RegistryBackend(url, _user_dir("XDG_CACHE_HOME", ".cache") / "detpack" / "store-locks")
    raise StoreError(f"{url}: unknown store URL scheme {parts.scheme!r} (use a directory path or oci://HOST:PORT/REPO)")


def open_store(url: str, signing_key: Path | None = None) -> Store:
    """The store at ``url``; ``signing_key`` overrides where its checkpoint-signing key is kept."""
    backend = open_backend(url)
    if signing_key is None and isinstance(backend, LocalBackend):
        signing_key = backend.key_path
    elif signing_key is None and isinstance(backend, RegistryBackend):
        # The private key never goes to the registry: it stays with the user who writes the store.
        name = hashlib.sha256(url.encode()).hexdigest()[:32]
        signing_key = _user_dir("XDG_DATA_HOME", ".local/share") / "detpack" / "store-keys" / f"{name}.key"
    return Store(backend, signing_key)
