"""The local-directory backend: a store is a folder.

Layout::

    STORE/.lock                    flock(2) serialising writers
    STORE/blobs/sha256/HEX         live blobs (mode 0444)
    STORE/retired/sha256/HEX       blobs retention took out of the live set
    STORE/names/NAME               "sha256:HEX\\n": a write-once name binding (NAME as
                                   ``backend.checked_name`` allows: never a path elsewhere)
    STORE/log/entries.jsonl        one log entry per line (canonical JSON)
    STORE/log/checkpoints.jsonl    one signed checkpoint per line
    STORE/log/cosignatures.jsonl   witnesses' cosignatures of checkpoints, one per line
    STORE/keys/store.pub           the store's public key (PEM); the private key is never here
                                   (see ``keys``: older versions kept it as keys/store.key, with
                                   the public key as keys/store.key.pub, which is still read)

Every file is written to a hidden temporary in its final folder, fsynced, then renamed (or
hard-linked, where an existing file must never be replaced) into place, and the folder is
fsynced; log records are appended with one write and fsynced. A writer killed at any moment
leaves only whole files, at most a partial last log line (which readers ignore and the next
writer truncates), and temporaries that the next writer in that folder removes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from detpack.atomic import exclusive, sweep, temp_name
from detpack.digest import stream_sha256
from detpack.errors import StoreError, StoreRefusedError
from detpack.store.backend import DIGEST_RE, Records, Stream, already_bound, checked_digest, checked_name

PUBLIC_KEY = "store.pub"
_OLD_PUBLIC_KEY = "store.key.pub"  # beside the private key, where earlier versions kept both


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(folder: Path, final_name: str, data: bytes | Path, digest: str | None = None) -> Path:
    """A fsynced temporary in ``folder`` holding ``data`` (bytes, or a file's bytes checked against digest)."""
    folder.mkdir(parents=True, exist_ok=True)
    sweep(folder)
    tmp = folder / temp_name(final_name)
    try:
        with tmp.open("wb") as out:
            if isinstance(data, bytes):
                out.write(data)
            else:
                with data.open("rb") as inp:
                    copied = stream_sha256(inp, copy_to=out)
                if digest is not None and copied != digest:
                    raise StoreError(f"{data}: changed while it was being stored (sha256 is no longer {digest[:16]}…)")
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


class LocalBackend:
    """A store in a local directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    # -- writers --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with exclusive(self.root / ".lock", self.root, "the store for writing", StoreError):
            yield

    @property
    def inside_key_path(self) -> Path:
        """Where earlier versions kept the store's private key, inside the store."""
        return self.root / "keys" / "store.key"

    # -- blobs ----------------------------------------------------------------------------
    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / checked_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self._blob(digest).is_file()

    def put_blob(self, digest: str, source: Path) -> bool:
        target = self._blob(digest)
        if target.is_file():
            return False
        tmp = _write_temp(target.parent, digest, source, digest)
        tmp.chmod(0o444)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return True

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        try:
            f = self._blob(digest).open("rb")
        except FileNotFoundError:
            raise StoreError(f"{self.root}: blob sha256:{digest} is not in the store") from None
        with f:
            yield f

    def list_blobs(self) -> Iterator[str]:
        folder = self.root / "blobs" / "sha256"
        if folder.is_dir():
            yield from sorted(p.name for p in folder.iterdir() if DIGEST_RE.fullmatch(p.name))

    def retire_blob(self, digest: str) -> None:
        live = self._blob(digest)
        if not live.is_file():
            return
        target = self.root / "retired" / "sha256" / digest
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(live, target)
        _fsync_dir(target.parent)
        _fsync_dir(live.parent)

    # -- names ----------------------------------------------------------------------------
    def _name(self, name: str) -> Path:
        return self.root / "names" / checked_name(name, self.url)  # never a path outside names/

    def get_name(self, name: str) -> str | None:
        try:
            text = self._name(name).read_text("ascii").strip()
        except FileNotFoundError:
            return None
        return text.removeprefix("sha256:")

    def bind_name(self, name: str, digest: str) -> None:
        target = self._name(name)
        checked_digest(digest)
        if already_bound(name, self.get_name(name), digest, self.url):
            return
        tmp = _write_temp(target.parent, name, f"sha256:{digest}\n".encode("ascii"))
        try:
            os.link(tmp, target)  # never replaces a binding, even one made a moment ago
        except FileExistsError:
            raise StoreRefusedError(
                f"{name}: was bound by another writer in {self.url}; names are write-once"
            ) from None
        finally:
            tmp.unlink()
        _fsync_dir(target.parent)

    def list_names(self) -> dict[str, str]:
        folder = self.root / "names"
        if not folder.is_dir():
            return {}
        names = {}
        for p in sorted(folder.iterdir()):
            if p.name.startswith("."):
                continue
            names[p.name] = p.read_text("ascii", errors="replace").strip().removeprefix("sha256:")
        return names

    # -- log ------------------------------------------------------------------------------
    def _stream(self, stream: Stream) -> Path:
        return self.root / "log" / f"{stream}.jsonl"

    def read_log(self, stream: Stream) -> Records:
        try:
            data = self._stream(stream).read_bytes()
        except FileNotFoundError:
            return Records(())
        lines = data.split(b"\n")
        torn = lines.pop() != b""  # the part after the last newline: empty unless a write was cut short
        return Records(tuple(lines), torn)

    def append_log(self, stream: Stream, index: int, record: bytes) -> None:
        if b"\n" in record:
            raise ValueError("a log record cannot contain a newline")
        current = self.read_log(stream)
        if len(current.items) != index or current.torn:
            raise StoreError(
                f"{self._stream(stream)}: expected {index} records, found {len(current.items)} "
                "(written outside the store's lock?)"
            )
        path = self._stream(stream)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, record + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if index == 0:
            _fsync_dir(path.parent)

    def truncate_log(self, stream: Stream, count: int) -> None:
        path = self._stream(stream)
        records = self.read_log(stream)
        if len(records.items) <= count and not records.torn:
            return
        keep = sum(len(r) + 1 for r in records.items[:count])
        with path.open("r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())

    # -- the store's key ------------------------------------------------------------------
    def read_public_key(self) -> bytes | None:
        for name in (PUBLIC_KEY, _OLD_PUBLIC_KEY):
            try:
                return (self.root / "keys" / name).read_bytes()
            except FileNotFoundError:
                continue
        return None

    def publish_public_key(self, pem: bytes) -> None:
        target = self.root / "keys" / PUBLIC_KEY
        existing = self.read_public_key()
        if existing == pem:
            return
        if existing is not None:
            raise StoreRefusedError(f"{target}: another public key is already published for this store")
        tmp = _write_temp(target.parent, target.name, pem)
        tmp.chmod(0o644)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
