"""Toolchain images unpacked into a cache: a read-only root filesystem per image manifest.

Invariants (the image is hostile input to the host):

- ``CACHE/<manifest hex>/`` exists only complete: it is built in a hidden temporary beside it
  (``.unpack-PID-…``, ``flock``-ed by its writer) and renamed into place; of two racing writers the
  loser discards its own and uses the winner's. A refused or failed unpack leaves nothing; a killed
  writer's temporary (no lock held) is removed by the next unpack in that cache (``CACHE/.lock``
  orders that sweep with the start of other writers). Nothing is fsynced (thousands of files, and
  ``sync`` waits for the whole machine's writes): an entry a crash damaged fails ``verify``.
- Layers are applied by ``changeset`` (read it for the rest): nothing is written outside the root,
  an entry that could escape it, a device and a FIFO are refused with one line naming the image, the
  layer and the entry, whiteouts hide lower layers' entries, and each blob must be its digest and size.
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
import stat
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from detpack import policy
from detpack.atomic import write_bytes
from detpack.build.untrusted import remove
from detpack.digest import canonical_json
from detpack.errors import CacheEntryError, InputError, OutputError
from detpack.oci.changeset import CHUNK, DIR, apply_layers
from detpack.oci.fetch import Blob, Image

RECORD, CONTENT, STATS = "toolchain.json", "content.list", "stat.list"
LOCK = ".lock"  # in the cache: held while temporaries are swept or begun
_TEMP = re.compile(r"^\.unpack-\d+-")


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
    try:
        verify(toolchain)
    except CacheEntryError:
        # Moved or restored (a CI cache, a copy): new inodes and times, maybe the same files. The content
        # decides; when it is what was unpacked, the quick listing is made again for the next use.
        verify(toolchain, full=True)
        _restat(toolchain, record)
    return toolchain


def _restat(toolchain: Toolchain, record: dict[str, Any]) -> None:
    """Write the quick (stat) listing of an entry whose content was just verified in full."""
    stats = _join([_stat_record(rel, st) for rel, st, _ in _walk(toolchain.root)])
    entry = toolchain.entry
    try:
        write_bytes(entry / STATS, stats)
        write_bytes(entry / RECORD, canonical_json({**record, "stat": hashlib.sha256(stats).hexdigest()}))
    except OSError as exc:
        raise OutputError(f"{entry}: cannot update the toolchain cache ({exc.strerror or exc})") from None


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
        hashes, dir_times = apply_layers(image, tmp / "root", limits)
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
        lock = os.open(tmp, DIR)
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
            fd = os.open(path, DIR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove(path)
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
        while chunk := f.read(CHUNK):
            h.update(chunk)
        return h.hexdigest()


def verify(toolchain: Toolchain, *, full: bool = False) -> None:
    """Check the cached root against the listings made when it was unpacked; ``CacheEntryError``
    naming the entry and the first changed paths otherwise.

    Quick (the default): every entry's path, type, mode, size, mtime, ctime and inode, by ``lstat``
    (an edit, an added or removed file, a mode; ``utime`` cannot put a ctime back). ``full``: every
    entry's path, type, mode, size, link target and content (re-hashed), whatever its times and inode
    (a copy of the entry passes; a change that kept even the ctime does not)."""
    entry = toolchain.entry
    record = _record(entry)
    try:
        walked = list(_walk(toolchain.root))
    except OSError as exc:
        raise _damaged(entry, f"its root cannot be listed: {exc.strerror or exc}") from None
    if not full:
        _compare(entry, record, "stat", STATS, 6, [_stat_record(rel, st) for rel, st, _ in walked])
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
