"""The flags each compiler run had, from the argument notes the compiler shims write.

A compiler's shim (``native``) writes the arguments of every run, NUL-separated, after the real
compiler's path, into a file of its own under the notes directory. Here they become, per compiler,
the distinct flag lists it ran with and how often: a compile (``-c``/``-S``), a link or a
preprocessor run, its options in order with their values, without its inputs and outputs (source
and object files, ``-o``, dependency-file options), which name what was built, not how. Runs with
no input (``--version``, ``-print-prog-name``, …) are probes and are left out.

The notes are written inside the build, so they are hostile input: each file is opened without
following links, must be a regular file, and is read up to ``MAX_NOTE`` bytes; at most
``MAX_RUNS`` files are read and ``MAX_DISTINCT`` flag lists kept per compiler (the rest counted).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detpack.build import untrusted

Kind = Literal["compile", "link", "preprocess"]
NOTE_PREFIX = "argv."
MAX_NOTE = 1 << 20  # bytes of one run's arguments
MAX_RUNS = 200_000  # runs read
MAX_DISTINCT = 64  # distinct flag lists kept per compiler

#: Options whose value is the next argument (gcc and clang spellings).
_WITH_VALUE = frozenset(
    {
        *("-o", "-I", "-D", "-U", "-L", "-l", "-u", "-T", "-z", "-x", "-e"),
        *("-include", "-imacros", "-isystem", "-iquote", "-idirafter", "-iprefix", "-isysroot", "--sysroot"),
        *("-MF", "-MT", "-MQ", "-Xlinker", "-Xassembler", "-Xpreprocessor", "-Xclang", "-target", "-arch"),
    }
)
#: Options naming what a run writes (its output, its dependency file), dropped with their values.
_OUTPUTS = frozenset({"-o", "-MF", "-MT", "-MQ"})


@dataclass(frozen=True)
class CompilerRun:
    """One compiler run: the compiler (its path as the build saw it), what it did, its flags."""

    compiler: str
    kind: Kind
    flags: tuple[str, ...]


def parse(data: bytes) -> CompilerRun | None:
    """A run from one note (``REAL\\0ARG\\0ARG\\0…``); None for a probe or a note that is no run."""
    words = data.decode("utf-8", "replace").split("\0")
    if words and words[-1] == "":
        words.pop()
    if not words or not words[0].startswith("/"):
        return None
    compiler, args = words[0], words[1:]
    flags: list[str] = []
    inputs = 0
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _WITH_VALUE and i + 1 < len(args):
            if arg not in _OUTPUTS:
                flags += [arg, args[i + 1]]
            i += 2
            continue
        if arg == "-" or not arg.startswith("-"):
            inputs += 1  # a source or object file, or standard input
        elif not arg.startswith(("-o", "-MF", "-MT", "-MQ")):
            flags.append(arg)
        i += 1
    if not inputs:
        return None
    kind: Kind = "link"
    if "-E" in flags or "-M" in flags or "-MM" in flags:
        kind = "preprocess"
    elif "-c" in flags or "-S" in flags:
        kind = "compile"
    return CompilerRun(compiler, kind, tuple(flags))


def read_notes(notes: Path) -> list[CompilerRun]:
    """Every run the compiler shims noted under ``notes`` (see the module docstring for the limits)."""
    runs: list[CompilerRun] = []
    try:
        names = sorted(n for n in os.listdir(notes) if n.startswith(NOTE_PREFIX))
    except OSError:
        return runs
    for name in names[:MAX_RUNS]:
        data = untrusted.read_plain(notes / name, MAX_NOTE)
        run = parse(data) if data is not None else None
        if run is not None:
            runs.append(run)
    return runs


def summarize(runs: Iterable[CompilerRun], key: Callable[[str], str | None] = lambda c: c) -> dict[str, dict[str, Any]]:
    """Per compiler, keyed by ``key(compiler path)`` (runs whose key is None are left out): ``runs``
    (each distinct kind and flag list with its count, sorted) and, past ``MAX_DISTINCT`` lists,
    ``runsOmitted`` (how many runs are not listed)."""
    counts: dict[str, Counter[tuple[Kind, tuple[str, ...]]]] = {}
    for run in runs:
        compiler = key(run.compiler)
        if compiler is not None:
            counts.setdefault(compiler, Counter())[(run.kind, run.flags)] += 1
    out: dict[str, dict[str, Any]] = {}
    for compiler, counter in counts.items():
        ordered = sorted(counter.items())
        kept = ordered[:MAX_DISTINCT]
        entry: dict[str, Any] = {
            "runs": [{"kind": kind, "flags": list(flags), "count": n} for (kind, flags), n in kept]
        }
        omitted = sum(n for _, n in ordered[MAX_DISTINCT:])
        if omitted:
            entry["runsOmitted"] = omitted
        out[compiler] = entry
    return out
