"""Run one PEP 517 hook (pyproject_hooks' ``_in_process.py``) with ``tempfile``'s names fixed.

Run as a script inside the build's sandbox, by the build environment's interpreter (so it imports
nothing of detpack): ``python seeded.py .../_in_process.py HOOK CONTROL_DIR``. A backend that
builds in ``tempfile.mkdtemp()`` (aio-libs' in-tree backend: ``.tmp-frozenlist-pep517-XXXXXXXX``)
otherwise gives the compiler a random directory, which lands in the extension's DWARF
(``DW_AT_name``, ``comp_dir``) and its build id. The names are drawn from a generator seeded with
the hook's name: the same in every build, still unique within one (``tempfile`` retries a name
that exists). A process the hook starts gets its own, random, names as usual.
"""

from __future__ import annotations

import os
import random
import runpy
import sys
import tempfile


def _fix_names(seed: str) -> None:
    sequence_type = getattr(tempfile, "_RandomNameSequence", None)
    if sequence_type is None:  # another tempfile than CPython's 3.x: its names stay random
        return
    sequence = sequence_type()
    sequence._rng = random.Random(seed)  # noqa: S311 (names, not secrets)
    sequence._rng_pid = os.getpid()  # the property keeps this generator while the pid is the same
    tempfile._name_sequence = sequence  # type: ignore[attr-defined]


def main() -> None:
    here = os.path.normcase(os.path.realpath(os.path.dirname(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.normcase(os.path.realpath(p)) != here]
    if len(sys.argv) < 4:
        sys.exit("usage: seeded.py IN_PROCESS_SCRIPT HOOK CONTROL_DIR")
    script = sys.argv[1]
    sys.argv[:] = sys.argv[1:]
    _fix_names(f"detpack {sys.argv[1]}")
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
