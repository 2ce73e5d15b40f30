"""Terminal rendering: steps and subprocess lines on stderr, results on stdout.

Colours only on a TTY and never with NO_COLOR set. Every message is written with the characters a terminal
acts on (ESC, CR, ...) escaped, a line break and a tab kept (``wording.shown``): names in it can come from a
hostile archive or release.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from detpack.wording import Distrusted, Recorded, count, shown

__all__ = ["Output", "count"]

_CODES = {"bold": "\033[1m", "dim": "\033[2m", "red": "\033[91m", "green": "\033[92m", "reset": "\033[0m"}


def _colour(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and stream.isatty()


def _plain(message: str) -> str:
    """``message`` as the terminal shows it: its own line breaks and tabs, nothing it would act on."""
    return shown(message, keep="\n\t")


@dataclass
class Output:
    verbosity: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        return cls(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))

    def _style(self, stream: TextIO, text: str, *styles: str) -> str:
        if not _colour(stream):
            return text
        return "".join(_CODES[s] for s in styles) + text + _CODES["reset"]

    def step(self, message: str) -> None:
        if self.verbosity >= 0:
            print(self._style(sys.stderr, f"* {_plain(message)}", "bold"), file=sys.stderr, flush=True)

    def line(self, message: str) -> None:
        if self.verbosity > 0:
            print(self._style(sys.stderr, f"  {_plain(message)}", "dim"), file=sys.stderr, flush=True)

    def warning(self, message: str) -> None:
        # -q hides warnings, but not one about what the provenance records (it changes the record), nor one
        # about what a store holds that was not believed.
        if self.verbosity >= 0 or isinstance(message, Recorded | Distrusted):
            print(self._style(sys.stderr, "WARNING ", "bold") + _plain(message), file=sys.stderr, flush=True)

    def result(self, message: str) -> None:
        print(_plain(message), flush=True)

    def stream(self, chunks: Iterable[str]) -> None:
        """A result written piece by piece (a large JSON report never exists whole)."""
        write = sys.stdout.write
        for chunk in chunks:
            write(_plain(chunk))
        write("\n")
        sys.stdout.flush()

    def success(self, message: str) -> None:
        if self.verbosity >= -1:
            print(self._style(sys.stdout, _plain(message), "bold", "green"), flush=True)

    def error(self, message: str) -> None:
        first, _, rest = _plain(message).partition("\n")
        print(self._style(sys.stderr, "error: ", "red", "bold") + first, file=sys.stderr, flush=True)
        if rest:
            print(self._style(sys.stderr, rest, "dim"), file=sys.stderr, flush=True)
