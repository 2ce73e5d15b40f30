"""What a storage backend must do for the store: the contract local and registry backends share.

A backend stores bytes and knows nothing of policy: the ``Store`` decides what is written,
logs it, and signs checkpoints. Every method is safe to call from a writer holding
``lock()``; readers call the ``read``/``has``/``list``/``open`` methods without the lock, so
a backend must never expose a partially written blob, binding or log record.

Invariants a backend keeps:
- blobs are content-addressed by sha256 and write-once: ``put_blob`` checks the bytes against
  the digest and is a no-op when the blob is already live;
- a name, once bound, is never rebound to other bytes: ``bind_name`` raises
  ``StoreRefusedError`` instead;
- the log streams (``entries``, ``checkpoints``, ``cosignatures``) are append-only sequences of records
  (bytes without newlines); ``append_log`` appends at exactly ``index`` (the current length)
  and fails otherwise, so two writers can never interleave; only ``truncate_log``, which the
  store calls to drop what an interrupted writer appended past the last checkpoint, shortens
  them.

A backend whose medium has no lock of its own (a registry shared by several machines) still
serialises its local writers in ``lock()``, and relies on ``append_log``'s index check being
atomic on the medium (compare-and-set on the stream's length) so that writers elsewhere can
never both append record ``index``; the loser fails with StoreError and nothing is half-written.
The store's private key never goes through a backend: ``open_store`` is given its path.

Names and digests are checked where a backend turns them into a path, a tag or a row
(``checked_name``, ``checked_digest``), not only where a user types them: the log is
replayed into bindings by later writers (``_Writer.finish``), so a name a hand-edited or forged
log entry carries (``../../x``) must be refused there too, before anything is created.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from detpack.errors import StoreError, StoreRefusedError

#: ``entries`` and ``checkpoints`` are the log; ``cosignatures`` holds witnesses' cosignatures of
#: checkpoints (self-authenticating, appended by witnesses without the store's key).
Stream = Literal["entries", "checkpoints", "cosignatures"]


#: A usable store name (whole string: use ``fullmatch``): letters, digits and ``._+~-``, not starting with a
#: dot, so never a path separator, ``..``, or one of a backend's hidden temporaries; an image's name is
#: ``BASE:TAG`` (one colon, the tag as OCI spells one), never ``sha256:…``, which names a digest.
NAME_RE = re.compile(r"(?!sha256:)[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}(?::[A-Za-z0-9_][A-Za-z0-9._+~-]{0,254})?")
#: A blob's sha256, as backends name blobs: 64 lower-case hex digits.
DIGEST_RE = re.compile(r"[0-9a-f]{64}")


def checked_name(name: str, url: str) -> str:
    """``name``, or StoreError when it is no usable store name (whoever wrote it: a user or the log)."""
    if not NAME_RE.fullmatch(name):
        raise StoreError(
            f"{name!r}: not a usable store name (letters, digits and ._+~- only, no slashes; an image BASE:TAG); "
            f"a log entry of {url} that names it was not written by detpack: run `detpack store verify`"
        )
    return name


def checked_digest(digest: str) -> str:
    """``digest``, or StoreError when it is not 64 lower-case hex digits."""
    if not DIGEST_RE.fullmatch(digest):
        raise StoreError(f"{digest!r}: not a sha256 hex digest")
    return digest


@dataclass(frozen=True)
class Records:
    """A log stream as read: its complete records, and whether a partial record followed them."""

    items: tuple[bytes, ...]
    torn: bool = False


def already_bound(name: str, existing: str | None, digest: str, url: str) -> bool:
    """True when ``name`` is bound to ``digest`` already; refuse a binding to other bytes (write-once)."""
    if existing is not None and existing != digest:
        raise StoreRefusedError(f"{name}: already bound to sha256:{existing} in {url}; names are write-once")
    return existing == digest


class Backend(Protocol):
    """Storage for one store. See the module docstring for the invariants."""

    #: Where the store lives, for messages (a path or a URL).
    url: str

    def lock(self) -> AbstractContextManager[None]:
        """Serialise writers (held around every write the store makes)."""
        ...

    # Blobs, by sha256 hex digest.
    def has_blob(self, digest: str) -> bool:
        """Whether the blob is in the live set."""
        ...

    def put_blob(self, digest: str, source: Path) -> bool:
        """Store ``source`` as blob ``digest`` (refusing other bytes); False if it was already live."""
        ...

    def open_blob(self, digest: str) -> AbstractContextManager[BinaryIO]:
        """Read a live blob (StoreError if it is not live)."""
        ...

    def list_blobs(self) -> Iterator[str]:
        """Digests of every live blob."""
        ...

    def retire_blob(self, digest: str) -> None:
        """Take a blob out of the live set (retention); a no-op if it is not live."""
        ...

    # Name bindings: a name (a file name, a tag) -> a blob digest, write-once.
    def get_name(self, name: str) -> str | None: ...

    def bind_name(self, name: str, digest: str) -> None:
        """Bind ``name``; a no-op when already bound to ``digest``, StoreRefusedError when bound elsewhere."""
        ...

    def list_names(self) -> dict[str, str]: ...

    # The transparency log: two append-only record streams.
    def read_log(self, stream: Stream) -> Records: ...

    def append_log(self, stream: Stream, index: int, record: bytes) -> None:
        """Durably append ``record`` as record number ``index`` (StoreError if the stream is not that long)."""
        ...

    def truncate_log(self, stream: Stream, count: int) -> None:
        """Keep only the first ``count`` complete records (dropping any partial one)."""
        ...

    # The store's public key, published so that auditors can fetch it (they should compare it
    # with a copy they trust: `store verify --key PUB`).
    def read_public_key(self) -> bytes | None: ...

    def publish_public_key(self, pem: bytes) -> None:
        """Publish the key; a no-op when the same key is already published."""
        ...


def read_blob(backend: Backend, digest: str) -> bytes:
    """A live blob's bytes, checked against its digest: StoreError when they were changed in the storage
    (a writer of the storage without any key can swap a file; no reader takes the swapped bytes)."""
    with backend.open_blob(digest) as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise StoreError(
            f"{backend.url}: blob sha256:{digest[:16]}… does not match its digest (changed in the storage); "
            "not read (run `detpack store verify`)"
        )
    return data
