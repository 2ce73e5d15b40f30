"""The one deflate implementation behind every canonical byte: zlib-ng, pinned exactly.

The interpreter's zlib is never used to write: zlib promises the same stream only for the
same version, and hosts differ (zlib 1.2.13 on Debian, zlib-ng in compat mode on Fedora 40+
and in CPython's Windows builds). detpack compresses with zlib-ng through the ``zlib-ng``
package, whose version is pinned in ``pyproject.toml`` and checked here at first use:
zlib-ng 2.3.3 gives the same bytes on x86-64 (baseline, SSE4.2, AVX2, AVX-512) and aarch64
(measured under qemu; ``tests/test_codec.py`` checks known answers on every run).

Every deflate stream detpack writes, a zip member or a gzip member, uses one scheme: the
input is cut into ``policy.GZIP_BLOCK`` blocks, each deflated on its own with the previous
32 KiB of input as its dictionary and ended with a sync flush; the last block finishes the
stream. The blocks concatenate into one standard deflate stream, they compress in parallel
(zlib-ng releases the GIL), and the bytes never depend on the number of threads. A stream of
one block is exactly zlib-ng's one-shot deflate of it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import zlib_ng as zlib_ng_package
from zlib_ng import zlib_ng

from detpack import policy
from detpack.errors import DetpackError

if TYPE_CHECKING:
    from detpack.archive.pool import Job, Pool

WINDOW: Final = 32 * 1024
#: The name recorded in provenance and policy.
IMPLEMENTATION: Final = "zlib-ng"

crc32 = zlib_ng.crc32


def check_soon() -> None:
    """Start ``check`` in a thread (its deflate gives up the GIL) while the caller reads its input."""
    if check.cache_info().currsize == 0 and "thread" not in _early:
        thread = threading.Thread(target=_check_early, name="detpack-codec-check", daemon=True)
        _early["thread"] = thread
        thread.start()


def ready() -> str:
    """``check``, after waiting for the one ``check_soon`` started (not running it twice at once)."""
    thread = _early.get("thread")
    if thread is not None:
        thread.join()
    return check()


_early: dict[str, threading.Thread] = {}


def _check_early() -> None:
    with contextlib.suppress(DetpackError):  # a refusal is not cached: the writer's ``ready`` raises it
        check()


@functools.cache
def check() -> str:
    """Refuse to write with a zlib-ng other than the policy's; return ``'zlib-ng 2.3.3'``.

    The version check catches a re-pinned or rebuilt package; the known answer catches a
    build whose output differs all the same (another compiler's or CPU's code path).
    """
    runtime = str(zlib_ng.ZLIBNG_RUNTIME_VERSION)  # a str at run time; the stubs say int
    if runtime != policy.DEFLATE_VERSION:
        raise DetpackError(
            f"zlib-ng {runtime} is installed, but detpack's canonical policy {policy.POLICY_VERSION} is written with "
            f"zlib-ng {policy.DEFLATE_VERSION}: other bytes would follow; install detpack's pinned dependency "
            f"(pip install 'zlib-ng=={package_version()}')"
        )
    got = hashlib.sha256(deflate(known_input())).hexdigest()
    if got != policy.DEFLATE_KNOWN_ANSWER:
        raise DetpackError(
            f"zlib-ng {runtime} on this machine deflates detpack's known input to sha256 {got[:16]}..., not "
            f"{policy.DEFLATE_KNOWN_ANSWER[:16]}...: its outputs would differ from other machines'; report this "
            "machine's CPU and the zlib-ng wheel installed"
        )
    return f"{IMPLEMENTATION} {runtime}"


def package_version() -> str:
    """The installed ``zlib-ng`` package's version (it bundles the zlib-ng release)."""
    return str(zlib_ng_package.__version__)


@functools.cache
def known_input() -> bytes:
    """300 KiB of word-like text and noise (three blocks), the same on every machine (SHAKE-256 driven)."""
    words = [b"detpack ", b"wheel ", b"canonical ", b"deflate ", b"\n", b"    ", b"return ", b"0x1f8b "]
    choice = hashlib.shake_256(b"detpack known input: text").digest(30_000)
    pairs = [words[c & 7] + words[c >> 5] for c in range(256)]  # each byte picks two words
    text = b"".join(map(pairs.__getitem__, choice))[: 200 * 1024]
    noise = hashlib.shake_256(b"detpack known input: noise").digest(100 * 1024)
    return text + noise


def deflate_block(block: bytes, dictionary: bytes, last: bool, level: int = policy.DEFLATE_LEVEL) -> bytes:
    """One block of the scheme: raw deflate primed with ``dictionary``, sync-flushed or final."""
    if dictionary:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, policy.DEFLATE_MEM_LEVEL, 0, dictionary)
    else:
        c = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, policy.DEFLATE_MEM_LEVEL, 0)
    return c.compress(block) + c.flush(zlib_ng.Z_FINISH if last else zlib_ng.Z_SYNC_FLUSH)


class BlockDeflater:
    """One deflate stream with the block scheme, fed in pieces; compressed pieces come out in order.

    With a ``pool``, up to ``window`` blocks are in flight at once (bounded memory); without
    one, blocks compress in the caller's thread. The bytes are the same either way.
    """

    def __init__(self, pool: Pool | None = None, window: int = 4) -> None:
        self._pool = pool
        self._window = window
        self._buffer = bytearray()
        self._dictionary = b""
        self._pending: deque[Job[bytes]] = deque()
        self.size = 0  # compressed bytes handed out so far

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        """Take ``data``; yield the compressed pieces that are ready (blocks kept back: one)."""
        self._buffer += data
        size = policy.GZIP_BLOCK
        while len(self._buffer) > size:  # keep one block back: the last must finish the stream
            block = bytes(self._buffer[:size])
            del self._buffer[:size]
            yield from self._emit(block, last=False)

    def finish(self) -> Iterator[bytes]:
        """End the stream: yield every remaining compressed piece."""
        block = bytes(self._buffer)
        self._buffer.clear()
        yield from self._emit(block, last=True)
        while self._pending:
            yield self._count(self._pending.popleft().result())

    def _emit(self, block: bytes, *, last: bool) -> Iterator[bytes]:
        if self._pool is None:
            yield self._count(deflate_block(block, self._dictionary, last))
        else:
            self._pending.append(self._pool.submit(deflate_block, block, self._dictionary, last))
            while len(self._pending) > self._window:
                yield self._count(self._pending.popleft().result())
        joined = self._dictionary + block if len(block) < WINDOW else block
        self._dictionary = joined[-WINDOW:]

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        return piece


def deflate(data: bytes) -> bytes:
    """``data`` as one deflate stream of the scheme, compressed in this thread."""
    if len(data) <= policy.GZIP_BLOCK:  # one block: the stream is that block, final
        return deflate_block(data, b"", True)
    d = BlockDeflater()
    return b"".join([*d.feed(data), *d.finish()])
