"""Toolchain images unpacked into a cache: a read-only root filesystem per image manifest.

Invariants (the image is hostile input to the host):

- ``CACHE/<manifest hex>/`` exists only complete: it is built in a hidden temporary beside it
  (``.unpack-PID-…``, ``flock``-ed by its writer) and renamed into place; of two racing writers the
  loser discards its own and uses the winner's. A refused or failed unpack leaves nothing; a killed
  writer's temporary (no lock held) is removed by the next unpack in that cache (``CACHE/.lock``
  orders that sweep with the start of other writers). Nothing is fsynced (thousands of files, and
  ``sync`` waits for the whole machine's writes): an entry a crash damaged fails ``verify``.
- Nothing is written outside the root: every entry is placed by walking from the root's descriptor
  one directory at a time with ``O_NOFOLLOW``, and what an entry replaces is removed, never opened.
  An entry under a symbolic link, an absolute name or one with ``..``, a hard link to anything but a
  regular file already in the root (reached the same way), a device and a FIFO are refused with one
  line naming the image, the layer and the entry. Symbolic links are made as they are, whatever
  they point to: only following one is dangerous, and the host never does.
- Layers apply in order as OCI changesets: ``.wh.NAME`` and ``.wh..wh..opq`` hide lower layers'
  entries, never the same layer's, and are never materialized. Each layer is streamed (gzip, zstd or
  plain tar, by magic) and hashed as it is read: a blob that is not its digest and size is refused.
  Members and unpacked bytes obey ``policy.Limits``.
- The root is the current user's and read-only: directories 0o555, files 0o555 or 0o444 (setuid,
  setgid and sticky bits dropped); times are the layers' (Python checks its bytecode against them).
- ``toolchain.json`` records the manifest and layer digests and the digests of two listings kept
  beside the root: ``content.list`` (path, mode with type, size, link target, sha256) and
  ``stat.list`` (path, mode with type, size, mtime, ctime, inode). ``verify`` compares the root with
  them before each use. That detects a changed entry (an edit, a restore, a stray tool), not someone
  who rewrites the listings too: the cache is as trusted as the user's own files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard
from zlib_ng import gzip_ng

from detpack import policy
from detpack.archive.entry import READ_ERRORS
from detpack.build.untrusted import remove
from detpack.digest import canonical_json
from detpack.errors import ArchiveError, CacheEntryError, InputError, OutputError
from detpack.oci.fetch import Blob, Image

RECORD, CONTENT, STATS = "toolchain.json", "content.list", "stat.list"
LOCK = ".lock"  # in the cache: held while temporaries are swept or begun
_TEMP = re.compile(r"^\.unpack-\d+-")
_CHUNK = 1 << 20
_MAX_DEPTH = 256  # deeper names are refused: nothing real nests so deep, and removal stays shallow
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPAQUE = ".wh..wh..opq"
_LAYER_TYPES = frozenset(
    f"application/vnd.oci.image.layer.{kind}.tar{suffix}"
    for kind in ("v1", "nondistributable.v1")
    for suffix in ("", "+gzip", "+zstd")
) | {"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
_READ_ERRORS: tuple[type[BaseException], ...] = (*READ_ERRORS, zstandard.ZstdError)
#: Failures of the cache's disk rather than of the image.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
#: A hard link's source: its directory's descriptor, its name there, its inode.
_Source = tuple[int, str, int]


@dataclass(frozen=True)
class Toolchain:
    """An image's root filesystem, unpacked and read-only in the cache."""

    digest: str  # sha256:HEX of the image manifest: the cache key
    root: Path  # the unpacked root: CACHE/HEX/root
    reference: str  # the image as it was named for this use (fetch.Image.reference)
    platform: str  # os/architecture[/variant] from the image config, e.g. linux/amd64
    config: dict[str, Any]  # the image config's ``config`` part: Env, Cmd, WorkingDir...
    layers: tuple[str, ...]  # the layer digests, lowest first

    @property
    def entry(self) -> Path:
        """The cache entry: ``root`` and its record and listings."""
        return self.root.parent


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/detpack/toolchains``, else ``~/.cache/detpack/toolchains``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "detpack" / "toolchains"


def unpacked(image: Image, cache: Path, limits: policy.Limits = policy.DEFAULT_LIMITS) -> Toolchain:
    """The image's root in ``cache``: unpacked now, or found there and verified (quick) first."""
    platform, config = _describe(image)
    entry = cache / image.manifest.digest.removeprefix("sha256:")
    layers = tuple(b.digest for b in image.layers)
    toolchain = Toolchain(image.manifest.digest, entry / "root", image.reference, platform, config, layers)
    if not os.path.lexists(entry):
        _build(image, toolchain, limits)
    record = _record(entry)
    if record.get("manifest") != toolchain.digest or record.get("layers") != list(layers):
        raise _damaged(entry, "its record names another image")
    verify(toolchain)
    return toolchain


def _describe(image: Image) -> tuple[str, dict[str, Any]]:
    """The platform and run settings from the image config; manifest and config re-hashed first."""
    _read_checked(image, image.manifest, "manifest")
    try:
        value = json.loads(_read_checked(image, image.config, "config"))
    except ValueError:
        raise InputError(f"{image.reference}: the image config is not JSON; the image is damaged") from None
    if not isinstance(value, dict) or not isinstance(value.get("config") or {}, dict):
        raise InputError(f"{image.reference}: the image config is not a JSON object with a 'config' object")
    parts = [value.get("os"), value.get("architecture"), *([value["variant"]] if value.get("variant") else [])]
    if not all(isinstance(p, str) and p and "/" not in p for p in parts):
        raise InputError(f"{image.reference}: the image config names no os and architecture; not a runnable image")
    return "/".join(cast(list[str], parts)), dict(value.get("config") or {})


def _read_checked(image: Image, blob: Blob, what: str, limit: int = 64 << 20) -> bytes:
    try:
        with blob.path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{image.reference}: cannot read its {what} ({exc.strerror or exc})") from None
    if len(data) > limit or "sha256:" + hashlib.sha256(data).hexdigest() != blob.digest:
        raise InputError(f"{image.reference}: its {what} does not match its digest {blob.digest}; fetch it again")
    return data


def _record(entry: Path) -> dict[str, Any]:
    try:
        value = json.loads((entry / RECORD).read_bytes())
    except (OSError, ValueError):
        raise _damaged(entry, f"its record {RECORD} is missing or unreadable") from None
    if not isinstance(value, dict):
        raise _damaged(entry, f"its record {RECORD} is not a JSON object")
    return value


def _damaged(entry: Path, what: str) -> CacheEntryError:
    return CacheEntryError(
        f"{entry}: the cached toolchain root changed after it was unpacked ({what}); remove that directory "
        "(read-only: chmod -R u+w it first) and build again"
    )


# --- unpacking ---------------------------------------------------------------------------------


def _build(image: Image, toolchain: Toolchain, limits: policy.Limits) -> None:
    """Unpack into a locked temporary in the cache and rename it into place (or lose the race)."""
    cache = toolchain.entry.parent
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp, lock = _start(cache)
    except OSError as exc:
        raise OutputError(f"{cache}: cannot write the toolchain cache ({exc.strerror or exc})") from None
    try:
        (tmp / "root").mkdir(mode=0o755)
        hashes, dir_times = _apply_layers(image, tmp / "root", limits)
        _finish(tmp / "root", dir_times)
        content, stats = _listings(tmp / "root", hashes)
        (tmp / CONTENT).write_bytes(content)
        (tmp / STATS).write_bytes(stats)
        digests = {"content": hashlib.sha256(content).hexdigest(), "stat": hashlib.sha256(stats).hexdigest()}
        record = {"schema": 1, "manifest": toolchain.digest, "layers": list(toolchain.layers), **digests}
        (tmp / RECORD).write_bytes(canonical_json({**record, "platform": toolchain.platform}))
        try:
            os.rename(tmp, toolchain.entry)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            remove(tmp)  # another writer won: use its entry
    except OSError as exc:
        remove(tmp)
        raise OutputError(f"{toolchain.entry}: cannot write the toolchain root ({exc.strerror or exc})") from None
    except BaseException:
        remove(tmp)
        raise
    finally:
        os.close(lock)


def _start(cache: Path) -> tuple[Path, int]:
    """A new temporary in ``cache``, locked by the descriptor returned, after removing those whose writer
    is gone. Both happen under the cache's lock, so no writer's temporary is ever seen unlocked."""
    guard = os.open(cache / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        _sweep(cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".unpack-{os.getpid()}-", dir=cache))
        lock = os.open(tmp, _DIR)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return tmp, lock
    finally:
        os.close(guard)


def _sweep(cache: Path) -> None:
    """Remove temporaries whose writer is gone (nobody holds their lock)."""
    for path in cache.iterdir():
        if not _TEMP.match(path.name):
            continue
        with contextlib.suppress(OSError):  # a live writer's (locked), or gone already
            fd = os.open(path, _DIR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove(path)
            finally:
                os.close(fd)


class _Hashing:
    """A blob read once from start to end, hashed on the way; more bytes than declared are refused."""

    def __init__(self, f: BinaryIO, limit: int, label: str) -> None:
        self._f, self._limit, self._label = f, limit, label
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.size += len(data)
        if self.size > self._limit:
            raise InputError(f"{self._label}: larger than the {self._limit} bytes its manifest gives; fetch it again")
        self.hash.update(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # what zlib-ng's reader calls
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@contextlib.contextmanager
def _decompressed(f: BinaryIO, hashing: _Hashing) -> Iterator[IO[bytes]]:
    magic = f.read(4)
    f.seek(0)
    source = cast(IO[bytes], hashing)
    if magic[:2] == b"\x1f\x8b":
        with gzip_ng.GzipFile(fileobj=source, mode="rb") as z:  # type: ignore[no-untyped-call]  # 1.7x zlib's speed
            yield cast(IO[bytes], z)
    elif magic == b"\x28\xb5\x2f\xfd":
        with zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False) as z:
            yield cast(IO[bytes], z)
    else:
        yield source


def _apply_layers(image: Image, root: Path, limits: policy.Limits) -> tuple[dict[int, str], dict[str, int]]:
    """Every layer applied to ``root``; the sha256 of each file by inode, and directories' times by path."""
    applier = _Applier(root, limits)
    try:
        for blob in image.layers:
            label = f"{image.reference}: layer {blob.digest[:19]}"
            if blob.media_type not in _LAYER_TYPES:
                raise InputError(f"{label}: not a filesystem layer (media type {blob.media_type!r}); not a toolchain")
            try:
                f = blob.path.open("rb")
            except OSError as exc:
                raise InputError(f"{label}: cannot read it ({exc.strerror or exc})") from None
            with f:
                hashing = _Hashing(f, blob.size, label)
                try:
                    with (
                        _decompressed(f, hashing) as stream,
                        tarfile.open(fileobj=stream, mode="r|") as tf,
                    ):
                        applier.layer(tf, label)
                    while hashing.read(_CHUNK):  # the rest of the blob (tar padding, compressed trailer)
                        pass
                except _READ_ERRORS as exc:
                    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
                        raise
                    raise ArchiveError(f"{label}: not a readable tar layer ({exc}); the image is damaged") from None
            if "sha256:" + hashing.hash.hexdigest() != blob.digest or hashing.size != blob.size:
                raise InputError(f"{label}: content does not match its digest {blob.digest}; fetch the image again")
    finally:
        applier.close()
    return applier.hashes, applier.dir_times


def _ns(mtime: float) -> int:
    """A member's time in nanoseconds, kept within what every filesystem stores."""
    return int(min(max(mtime, 0), 1 << 33) * 1_000_000_000)


class _Applier:
    """Applies layers to a root through directory descriptors, never following a link."""

    def __init__(self, root: Path, limits: policy.Limits) -> None:
        self._root = os.open(root, _DIR)
        self._limits = limits
        self.hashes: dict[int, str] = {}  # sha256 of every file written, by inode
        self.dir_times: dict[str, int] = {}  # mtime (ns) of every directory a layer names, by path
        self._members = self._bytes = 0
        self._label = ""
        self._touched: set[str] = set()  # what the current layer wrote: its own whiteouts spare it
        self._cached: tuple[str, int] | None = None  # the directory last walked to, and its descriptor

    def close(self) -> None:
        self._forget()
        os.close(self._root)

    def _forget(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def layer(self, tf: tarfile.TarFile, label: str) -> None:
        self._label, self._touched = label, set()
        while (info := tf.next()) is not None:
            cast(Any, tf).members.clear()  # a stream: no member is looked up again, so memory stays flat
            self._members += 1
            if self._members > self._limits.max_members:
                raise ArchiveError(f"{label}: the image has over {self._limits.max_members} members (max_members)")
            try:
                self._entry(tf, info)
            except OSError as exc:
                if exc.errno in _DISK_ERRNOS:
                    raise
                raise self._refuse(info.name, f"cannot be placed ({exc.strerror or exc})") from None
            except ValueError as exc:  # a NUL in a link target
                raise self._refuse(info.name, f"cannot be placed ({exc})") from None

    def _refuse(self, name: str, problem: str) -> ArchiveError:
        return ArchiveError(f"{self._label}: entry {name!r} {problem}; refusing the image (nothing of it is kept)")

    def _parts(self, name: str, entry: str, which: str = "") -> list[str]:
        """``name`` as path components under the root; refused if it could land outside."""
        if name.startswith("/"):
            raise self._refuse(entry, f"{which}is an absolute path: it would land outside the root")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._refuse(entry, f"{which}has '..' in its path: it could land outside the root")
        if len(parts) > _MAX_DEPTH or len(os.fsencode(name)) > self._limits.max_name_bytes or "\x00" in name:
            raise self._refuse(entry, f"{which}is over {_MAX_DEPTH} deep, too long or holds a NUL byte")
        return parts

    def _dir(self, parts: list[str], entry: str, *, create: bool, which: str = "") -> int | None:
        """A new descriptor of the directory ``parts`` names, walked to from the root without following
        a link; missing directories are made when ``create``, else the answer is None."""
        path = "/".join(parts)
        if self._cached is not None and self._cached[0] == path:
            return os.dup(self._cached[1])
        fd = os.dup(self._root)
        try:
            for n, part in enumerate(parts, 1):
                here = "/".join(parts[:n])
                try:
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self._touched.add(here)
                    self.dir_times.pop(here, None)  # made anew: an earlier layer's time is not its own
                else:
                    if stat.S_ISLNK(st.st_mode):
                        problem = "a symbolic link: writing through it could land anywhere"
                        raise self._refuse(entry, f"{which}is under {here!r}, {problem}")
                    if not stat.S_ISDIR(st.st_mode):
                        raise self._refuse(entry, f"{which}is under {here!r}, which is not a directory")
                child = os.open(part, _DIR, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self._forget()
        self._cached = (path, os.dup(fd))
        return fd

    def _entry(self, tf: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        name = info.name
        parts = self._parts(name, name)
        if not parts:
            if not info.isdir():
                raise self._refuse(name, "replaces the root directory with something else")
            self.dir_times[""] = _ns(info.mtime)
        elif parts[-1].startswith(".wh."):
            self._whiteout(parts, name)
        elif info.ischr() or info.isblk():
            raise self._refuse(name, "is a device node; a toolchain root needs none (pack the image without /dev)")
        elif info.isfifo():
            raise self._refuse(name, "is a FIFO; a toolchain root needs none")
        elif not (info.isdir() or info.issym() or info.islnk() or info.isreg()):
            raise self._refuse(name, f"has an unsupported member type {info.type!r}")
        else:
            with contextlib.ExitStack() as fds:
                source = self._link_source(info, name) if info.islnk() else None
                if source is not None:
                    fds.callback(os.close, source[0])
                parent = cast(int, self._dir(parts[:-1], name, create=True))
                fds.callback(os.close, parent)
                self._place(tf, info, parent, parts[-1], "/".join(parts), source)
            self._touched.add("/".join(parts))

    def _place(
        self, tf: tarfile.TarFile, info: tarfile.TarInfo, parent: int, base: str, rel: str, source: _Source | None
    ) -> None:
        try:
            existing: os.stat_result | None = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if info.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                self._remove(parent, base, existing)
                os.mkdir(base, 0o755, dir_fd=parent)
            self.dir_times[rel] = _ns(info.mtime)
            return
        if source is not None and existing is not None and existing.st_ino == source[2]:
            return  # that file already
        self._remove(parent, base, existing)
        if source is not None:
            os.link(source[1], base, src_dir_fd=source[0], dst_dir_fd=parent, follow_symlinks=False)
        elif info.issym():
            os.symlink(info.linkname, base, dir_fd=parent)
            os.utime(base, ns=(_ns(info.mtime),) * 2, dir_fd=parent, follow_symlinks=False)
        else:
            self._file(tf, info, parent, base)

    def _link_source(self, info: tarfile.TarInfo, name: str) -> _Source:
        """The regular file a hard link names, reached from the root without following a link."""
        which = f"links to {info.linkname!r}, which "
        parts = self._parts(info.linkname, name, which)
        fd = self._dir(parts[:-1], name, create=False, which=which) if parts else None
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False) if fd is not None else None
        except FileNotFoundError:
            st = None
        if fd is None or st is None or not stat.S_ISREG(st.st_mode):
            if fd is not None:
                os.close(fd)
            missing = "is not in the root (a hard link names a file of its own or a lower layer)"
            raise self._refuse(name, which + (missing if st is None else "is not a regular file"))
        return fd, parts[-1], st.st_ino

    def _file(self, tf: tarfile.TarFile, info: tarfile.TarInfo, parent: int, base: str) -> None:
        src = tf.extractfile(info)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        h = hashlib.sha256()
        try:
            while src is not None:
                try:
                    chunk = src.read(_CHUNK)
                except _READ_ERRORS as exc:
                    raise ArchiveError(
                        f"{self._label}: not a readable tar layer ({exc}); the image is damaged"
                    ) from None
                if not chunk:
                    break
                self._bytes += len(chunk)
                if self._bytes > self._limits.max_total_bytes:
                    limit = self._limits.max_total_bytes
                    raise ArchiveError(f"{self._label}: the image unpacks to over {limit} bytes (max_total_bytes)")
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o555 if info.mode & 0o111 else 0o444)
            os.utime(fd, ns=(_ns(info.mtime),) * 2)
            self.hashes[os.fstat(fd).st_ino] = h.hexdigest()
        finally:
            os.close(fd)

    def _remove(self, parent: int, base: str, existing: os.stat_result | None) -> None:
        """Remove what is at ``base`` (a link itself, never what it names)."""
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            self._forget()
            shutil.rmtree(base, dir_fd=parent)
        elif existing is not None:
            os.unlink(base, dir_fd=parent)

    def _whiteout(self, parts: list[str], name: str) -> None:
        """``.wh.NAME`` hides NAME of lower layers; ``.wh..wh..opq`` all that lower layers put beside it."""
        marker, where = parts[-1], parts[:-1]
        if marker.startswith(".wh..wh.") and marker != _OPAQUE:
            return  # other aufs bookkeeping: no change to the tree
        victim = marker.removeprefix(".wh.")
        if victim in ("", ".", ".."):
            raise self._refuse(name, f"whites out {victim!r}, which names no entry")
        fd = self._dir(where, name, create=marker == _OPAQUE)
        if fd is None:
            return  # its directory is gone already
        try:
            for child in os.listdir(fd) if marker == _OPAQUE else [victim]:
                self._prune(fd, child, "/".join([*where, child]))
        finally:
            os.close(fd)

    def _prune(self, parent: int, base: str, rel: str) -> None:
        """Remove what lower layers put at ``rel``, keeping what the current layer wrote."""
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if rel not in self._touched:
            self._remove(parent, base, st)
        elif stat.S_ISDIR(st.st_mode):
            fd = os.open(base, _DIR, dir_fd=parent)
            try:
                for child in os.listdir(fd):
                    self._prune(fd, child, f"{rel}/{child}")
            finally:
                os.close(fd)


def _finish(root: Path, dir_times: dict[str, int]) -> None:
    """Directories read-only, with the layers' times (set last: making entries changes them)."""
    for rel, st, path in _walk(root):
        if stat.S_ISDIR(st.st_mode):
            if rel in dir_times:
                os.utime(path, ns=(dir_times[rel],) * 2)
            os.chmod(path, 0o555)


# --- listings and verification ------------------------------------------------------------------


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result, str]]:
    """(relative path, lstat, path) of ``root`` and all under it, in a fixed order, following no link."""
    yield "", os.lstat(root), str(root)
    stack, prefixes = [iter(_sorted(str(root)))], [""]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            prefixes.pop()
            continue
        rel = prefixes[-1] + child.name
        st = child.stat(follow_symlinks=False)
        yield rel, st, child.path
        if stat.S_ISDIR(st.st_mode):
            stack.append(iter(_sorted(child.path)))
            prefixes.append(rel + "/")


def _sorted(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: os.fsencode(e.name))


def _stat_record(rel: str, st: os.stat_result) -> str:
    return f"{rel}\0{st.st_mode:o}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}"


def _content_record(rel: str, st: os.stat_result, path: str, sha256: str) -> str:
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    return f"{rel}\0{st.st_mode:o}\0{st.st_size}\0{target}\0{sha256}"


def _join(records: list[str]) -> bytes:
    """A listing: records of fields, all NUL-separated (no path or link target holds a NUL)."""
    return "\0".join(records).encode("utf-8", "surrogateescape")


def _split(listing: bytes, fields: int) -> dict[str, tuple[str, ...]]:
    """A listing's records by path."""
    items = listing.decode("utf-8", "surrogateescape").split("\0")
    return {items[i]: tuple(items[i : i + fields]) for i in range(0, len(items), fields)}


def _listings(root: Path, hashes: dict[int, str]) -> tuple[bytes, bytes]:
    content: list[str] = []
    stats: list[str] = []
    for rel, st, path in _walk(root):
        sha = (hashes.get(st.st_ino) or _file_sha256(path)) if stat.S_ISREG(st.st_mode) else ""
        content.append(_content_record(rel, st, path, sha))
        stats.append(_stat_record(rel, st))
    return _join(content), _join(stats)


def _file_sha256(path: str) -> str:
    """A regular file's sha256, opened without following a link or blocking on a FIFO ("" otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    with os.fdopen(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        h = hashlib.sha256()
        while chunk := f.read(_CHUNK):
            h.update(chunk)
        return h.hexdigest()


def verify(toolchain: Toolchain, *, full: bool = False) -> None:
    """Check the cached root against the listings made when it was unpacked; ``CacheEntryError``
    naming the entry and the first changed paths otherwise.

    Quick (the default): every entry's path, type, mode, size, mtime, ctime and inode, by ``lstat``
    (an edit, an added or removed file, a mode; ``utime`` cannot put a ctime back). ``full``: also
    re-hash every file against the content listing (a change that kept even the ctime)."""
    entry = toolchain.entry
    record = _record(entry)
    try:
        walked = list(_walk(toolchain.root))
    except OSError as exc:
        raise _damaged(entry, f"its root cannot be listed: {exc.strerror or exc}") from None
    _compare(entry, record, "stat", STATS, 6, [_stat_record(rel, st) for rel, st, _ in walked])
    if not full:
        return
    files = {st.st_ino: path for _, st, path in walked if stat.S_ISREG(st.st_mode)}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
        hashes = dict(zip(files, pool.map(_file_sha256, files.values(), chunksize=64), strict=True))
    lines = [_content_record(rel, st, path, hashes.get(st.st_ino, "")) for rel, st, path in walked]
    _compare(entry, record, "content", CONTENT, 5, lines)


def _compare(entry: Path, record: dict[str, Any], key: str, name: str, fields: int, lines: list[str]) -> None:
    if hashlib.sha256(_join(lines)).hexdigest() == record.get(key):
        return
    try:
        saved = (entry / name).read_bytes()
    except OSError:
        raise _damaged(entry, f"its listing {name} is missing") from None
    if hashlib.sha256(saved).hexdigest() != record.get(key):
        raise _damaged(entry, f"its listing {name} was changed")
    before, now = _split(saved, fields), _split(_join(lines), fields)
    changed = sorted((p for p in before.keys() | now.keys() if before.get(p) != now.get(p)), key=os.fsencode)
    said = [f"{p or '/'} {'added' if p not in before else 'removed' if p not in now else 'changed'}" for p in changed]
    more = f" and {len(said) - 3} more" if len(said) > 3 else ""
    raise _damaged(entry, f"by {key}: {', '.join(said[:3])}{more}")
