"""Deflate blocks in worker processes: the gzip writer's pool, free of the GIL.

zlib-ng's ``compressobj`` gives up the GIL inside deflate, but a block of the scheme takes
the GIL back five or six times (the constructor and its dictionary, each output buffer it
grows, the flush), and a thread waiting for it waits up to the interpreter's switch
interval whenever the main thread is packing tar headers. Measured on the bench's 200 MB,
20k-file layer (2 cores): two deflate threads kept 0.8 cores busy. Worker processes
(``deflate_worker.py``, one per core) need no GIL: the main thread hands each block over a
pipe and takes the compressed block back in order.

The bytes are ``codec.deflate_block``'s: the worker makes the same zlib-ng calls with the
same zlib-ng file (it says which file it loaded; another one is refused). Short streams
never start a process: the first ``START_AFTER`` blocks go to the thread pool, and so does
everything where pipes cannot be made large enough to hold a worker's blocks in flight
(then a worker could block writing while the parent blocks writing to it).
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import IO, Final, Protocol

from zlib_ng import zlib_ng

from detpack import policy
from detpack.errors import DetpackError

#: Blocks computed in threads before the worker processes start: a short stream never pays
#: for starting an interpreter (about 15 ms of CPU each).
START_AFTER: Final = 8
#: Blocks in flight per worker: what both its pipes must hold (jobs of 160 KiB, results of at
#: most ~130 KiB), so that neither side ever blocks on a full pipe while the other waits.
IN_FLIGHT: Final = 4
_PIPE_SIZE: Final = 1 << 20
_JOB = struct.Struct("<IIB")
_LEN = struct.Struct("<I")
_WORKER = Path(__file__).with_name("deflate_worker.py")
_ENV: Final = frozenset({"PATH", "LD_LIBRARY_PATH", "SYSTEMROOT"})


class Pending(Protocol):
    def result(self) -> bytes: ...


def _grow_pipe(fd: int) -> None:
    """Make the pipe at ``fd`` hold ``_PIPE_SIZE`` bytes, or raise ``OSError`` (not Linux, a lower limit)."""
    import fcntl

    if fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE) < _PIPE_SIZE:
        raise OSError("the pipe cannot be made large enough")


class _Worker:
    def __init__(self) -> None:
        import subprocess

        zlib_dir = str(Path(zlib_ng.__file__).resolve().parent.parent)
        argv = [sys.executable, "-I", "-S", str(_WORKER), zlib_dir, str(policy.DEFLATE_LEVEL)]
        self.proc = subprocess.Popen(
            [*argv, str(policy.DEFLATE_MEM_LEVEL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            env={k: v for k, v in os.environ.items() if k in _ENV},  # -I ignores PYTHON*; the loader may need these
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out: IO[bytes] = io.BufferedReader(self.proc.stdout, 1 << 20)  # type: ignore[type-var]
        self._hello = False
        try:
            for fd in (self._in, self.proc.stdout.fileno()):
                _grow_pipe(fd)
        except OSError:
            self.proc.kill()
            self.stop()
            raise

    def send(self, block: bytes, dictionary: bytes, last: bool) -> None:
        view = memoryview(b"".join((_JOB.pack(len(dictionary), len(block), last), dictionary, block)))
        try:
            while view:
                view = view[os.write(self._in, view) :]
        except BrokenPipeError:
            raise self._ended() from None

    def receive(self) -> bytes:
        if not self._hello:
            self._hello = True
            said = self._frame().decode("utf-8", "replace")
            mine = f"{Path(zlib_ng.__file__).resolve()}\n{zlib_ng.ZLIBNG_RUNTIME_VERSION}"
            theirs = str(Path(said.split("\n")[0]).resolve()) + "\n" + said.partition("\n")[2]
            if theirs != mine:
                raise DetpackError(
                    f"a deflate worker loaded another zlib-ng ({said!r}, not {mine!r}); refusing to write"
                )
        return self._frame()

    def _frame(self) -> bytes:
        head = self._out.read(_LEN.size)
        size = _LEN.unpack(head)[0] if len(head) == _LEN.size else -1
        body = self._out.read(size) if size >= 0 else b""
        if size < 0 or len(body) != size:
            raise self._ended()
        return body

    def _ended(self) -> DetpackError:
        code = self.proc.wait()
        return DetpackError(f"a deflate worker process ended early (exit status {code}); nothing was written")

    def stop(self) -> None:
        import subprocess

        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]  # end of input: the worker writes what it holds (the pipe has room) and exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._out.close()


class _Result:
    __slots__ = ("_worker",)

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker

    def result(self) -> bytes:
        return self._worker.receive()  # results come back in the order the blocks went out


class DeflatePool:
    """Runs ``codec.deflate_block`` calls: in ``threads`` at first, then in ``workers`` processes.

    Results must be taken in submission order (``BlockDeflater`` does), at most
    ``IN_FLIGHT * workers`` blocks outstanding.
    """

    def __init__(self, threads: Executor, workers: int) -> None:
        self._threads = threads
        self._count = workers
        self._workers: list[_Worker] | None = None
        self._submitted = 0
        self._next = 0

    def submit(self, block: bytes, dictionary: bytes, last: bool) -> Pending:
        from detpack.archive.codec import deflate_block

        self._submitted += 1
        if self._submitted > START_AFTER and self._count > 1 and self._workers is None:
            self._workers = self._start()
        if not self._workers:
            future: Future[bytes] = self._threads.submit(deflate_block, block, dictionary, last)
            return future
        worker = self._workers[self._next % len(self._workers)]
        self._next += 1
        worker.send(block, dictionary, last)
        return _Result(worker)

    def _start(self) -> list[_Worker]:
        started: list[_Worker] = []
        try:
            for _ in range(self._count):
                started.append(_Worker())
        except (OSError, AttributeError, ValueError):  # no F_SETPIPE_SZ, a small pipe limit, no fork
            for w in started:
                w.proc.kill()
                w.stop()
            return []
        return started

    def shutdown(self) -> None:
        for w in self._workers or ():
            w.stop()
        self._workers = []
