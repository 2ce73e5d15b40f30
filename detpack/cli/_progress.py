"""Progress of long jobs on a terminal: items done, rate and time left, drawn by ``rich`` on stderr.

Only when stderr is a terminal, and never with ``-q`` or ``--json``: a pipe, a log file or a
script sees nothing of it. A job that ends within ``AFTER`` seconds draws nothing either; the bar
is removed when the job ends, so what the command prints is the same with or without it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from detpack.cli._output import Output

#: Seconds a job runs before its bar appears.
AFTER = 1.0


@contextlib.contextmanager
def progress(out: Output, what: str, unit: str, *, json: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback for a library job; draws ``what`` with ``unit`` (blobs, entries)."""
    if out.verbosity < 0 or json or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"* {what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    state: dict[str, Any] = {"task": None, "start": time.monotonic()}

    def advance(done: int, total: int) -> None:
        elapsed = time.monotonic() - state["start"]
        if state["task"] is None:
            if elapsed < AFTER:
                return
            bar.start()
            state["task"] = bar.add_task(what, total=total, rate="")
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""
        bar.update(state["task"], completed=done, total=total, rate=rate)

    try:
        yield advance
    finally:
        if state["task"] is not None:
            bar.stop()
