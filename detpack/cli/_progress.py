"""Progress of long jobs on a terminal: items or bytes done, rate and time left, drawn by ``rich`` on stderr.

Only when stderr is a terminal, and never with ``-q`` or ``--json``: a pipe, a log file or a
script sees nothing of it. A job that ends within ``AFTER`` seconds draws nothing either; the bar
is removed when the job ends, so what the command prints is the same with or without it. Lines
printed while it is drawn (steps, warnings, and results when stdout is a terminal too) go through
rich's console, above the bar, never into it.

The library reports and never draws: a job takes an optional ``(done, total)`` callback, which
here only stores the two numbers; each redraw (rich's, 10 a second, on its own thread) reads them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from detpack.cli._output import Output

#: Seconds a job runs before its bar appears; ``DETPACK_PROGRESS_AFTER`` sets another (tests: 0,
#: which draws the bar from the start of the job).
AFTER = 1.0
Advance = Callable[[int, int], None]


def _after() -> float:
    try:
        return max(0.0, float(os.environ.get("DETPACK_PROGRESS_AFTER", AFTER)))
    except ValueError:
        return AFTER


def _drawn(out: Output, json: bool) -> bool:
    return out.verbosity >= 0 and not json and sys.stderr.isatty()


@contextlib.contextmanager
def progress(out: Output, what: str, unit: str, *, json: bool = False) -> Iterator[Advance]:
    """A ``(done, total)`` callback for a library job; draws ``what`` with ``unit`` (blobs, entries)."""
    if not _drawn(out, json):
        yield lambda done, total: None
        return
    with _Bar(what, unit) as bar:
        yield bar


@contextlib.contextmanager
def byte_progress(out: Output, what: str, *, json: bool = False) -> Iterator[Advance | None]:
    """A ``(bytes done, bytes total)`` callback, or None when nothing would be drawn: the library
    then neither sizes its input up front nor counts what it reads."""
    if not _drawn(out, json):
        yield None
        return
    with _Bar(what, None) as bar:
        yield bar


def per_file(paths: Sequence[Path], advance: Advance | None) -> list[Advance | None]:
    """One callback per file, each told (bytes of that file done, its size), telling ``advance``
    the bytes of all of them done, of their sizes added up (a file's size read here, once)."""
    if advance is None:
        return [None] * len(paths)
    sizes = [_size(p) for p in paths]
    grand = sum(sizes)
    before = [0, *itertools.accumulate(sizes)][:-1]
    return [_offset(advance, b, s, grand) for b, s in zip(before, sizes, strict=True)]


def _offset(advance: Advance, before: int, size: int, grand: int) -> Advance:
    return lambda done, _total: advance(before + min(done, size), grand)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the job itself says what is wrong with it


class _Bar:
    """One task on a transient ``rich`` bar, made and shown by a timer once ``AFTER`` seconds have
    passed (a shorter job does not even import rich)."""

    def __init__(self, what: str, unit: str | None) -> None:
        self._what, self._unit = what, unit
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._done = 0
        self._total: int | None = None  # unknown until the job first says
        self._bar: Any = None
        self._task: Any = None
        self._closed = False
        self._delay = _after()
        self._timer = threading.Timer(self._delay, self._show)
        self._timer.daemon = True

    def __enter__(self) -> _Bar:
        if self._delay > 0:
            self._timer.start()
        else:  # no delay (tests): drawn before the job starts, however short it is
            self._show()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._task is not None:
                self._bar.stop()

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        unit = self._unit
        count: tuple[Any, ...] = (DownloadColumn(),) if unit is None else (MofNCompleteColumn(), TextColumn(unit))
        bar = _synced()(
            self._sync,
            TextColumn(f"* {self._what}"),
            BarColumn(),
            *count,
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=True,
            redirect_stdout=sys.stdout.isatty(),  # results to a file or pipe stay there
        )
        with self._lock:
            if self._closed:
                return
            self._bar = bar
            self._task = bar.add_task("", total=self._total, completed=self._done, rate="")
            bar.start()

    def _sync(self) -> None:
        """Before each redraw: the numbers the job last gave, and the rate since the start."""
        if self._task is not None:
            self._bar.update(self._task, completed=self._done, total=self._total, rate=self._rate())

    def _rate(self) -> str:
        elapsed = time.monotonic() - self._start
        if elapsed <= 0:
            return ""
        if self._unit is None:  # bytes
            from rich.filesize import decimal

            return f"{decimal(int(self._done / elapsed))}/s"
        rate = self._done / elapsed
        return f"{rate:,.0f}/s" if rate >= 1 or not rate else f"{rate * 60:.1f}/min"  # releases: a few a minute

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total


def _synced() -> Any:
    """rich's ``Progress``, syncing its task with the job before each redraw (imported when drawn)."""
    from rich.console import RenderableType
    from rich.progress import Progress

    class Synced(Progress):
        def __init__(self, sync: Callable[[], None], *columns: Any, **options: Any) -> None:
            self._sync = sync  # first: rich's constructor already renders once
            super().__init__(*columns, **options)

        def get_renderable(self) -> RenderableType:
            self._sync()
            return super().get_renderable()

    return Synced
