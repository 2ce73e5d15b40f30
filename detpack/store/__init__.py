"""The write-once artifact store: content-addressed blobs, name bindings, and a verifiable log.

``open_store(url)`` picks the backend from the URL: a local directory (a path or
``file://``), or, once the registry backend lands, ``oci://HOST:PORT/REPO``. Backends
implement ``backend.Backend``; everything else (``Store``, ``log``, ``merkle``, ``audit``)
works on that protocol only.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from detpack.errors import StoreError
from detpack.store.audit import StoreAudit, verify_store
from detpack.store.backend import Backend, Records
from detpack.store.local import LocalBackend
from detpack.store.store import Decision, Pushed, Store

__all__ = [
    "Backend",
    "Decision",
    "LocalBackend",
    "Pushed",
    "Records",
    "Store",
    "StoreAudit",
    "default_store_url",
    "open_backend",
    "open_store",
    "verify_store",
]


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
        raise StoreError(f"{url}: OCI registry stores are not available yet; use a local directory")
    raise StoreError(f"{url}: unknown store URL scheme {parts.scheme!r} (use a directory path or oci://HOST:PORT/REPO)")


def open_store(url: str, signing_key: Path | None = None) -> Store:
    """The store at ``url``; ``signing_key`` overrides where its checkpoint-signing key is kept."""
    backend = open_backend(url)
    if signing_key is None and isinstance(backend, LocalBackend):
        signing_key = backend.key_path
    return Store(backend, signing_key)
