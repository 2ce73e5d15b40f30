"""A small thread pool for the archive writers: calls run in the order submitted, on a few threads.

What the writers need of ``concurrent.futures.ThreadPoolExecutor`` (``submit``, ``result``,
``shutdown`` that can cancel what has not started), without importing it: ``concurrent.futures``
loads ``logging``, about 4 ms of every ``detpack normalize`` (which takes ~0.2 s in all).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


class Cancelled(RuntimeError):
    """The job was cancelled by ``Pool.shutdown(cancel=True)`` before it started."""


class Job(Generic[T]):
    """One submitted call; ``result`` waits for it and returns its value or raises its error."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call: Callable[[], T] | None = call
        self._done = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        call, self._call = self._call, None
        try:
            if call is None:
                raise Cancelled("the job was cancelled before it started")
            self._value = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._error = exc
        finally:
            self._done.set()

    def cancel(self) -> None:
        self._call = None
        self.run()

    def result(self) -> T:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by run() when there is no error


class Pool:
    """``workers`` threads (started as jobs come) taking jobs in submission order; daemon threads,
    so a pool that was never shut down cannot hold up the interpreter's exit."""

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[Job[Any] | None] = queue.SimpleQueue()
        self._workers = max(1, workers)
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Job[T]:
        if self._closed:
            raise RuntimeError("cannot submit to a pool that is shut down")
        job = Job(functools.partial(fn, *args, **kwargs))
        self._jobs.put(job)
        if len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, name="detpack-pool", daemon=True)
            thread.start()
            self._threads.append(thread)
        return job

    def shutdown(self, *, cancel: bool = False) -> None:
        """No more jobs; with ``cancel``, jobs not yet started raise ``Cancelled``; wait for the threads."""
        self._closed = True
        if cancel:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job.cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run()
