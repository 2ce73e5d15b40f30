"""Short probe commands (``TOOL --version``, can bwrap make namespaces) run with a time limit.

``subprocess.run(timeout=...)`` waits by polling with ``time.sleep``, which fails with EINVAL
in a process that runs under libfaketime (``LD_PRELOAD``, as ``check --vary clock`` and a user
who passes faketime to a build do). Here the limit is a timer thread that kills the probe; the
wait itself takes no timeout.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Mapping, Sequence


def run(argv: Sequence[str], *, env: Mapping[str, str] | None, seconds: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, capture its text output; killed after ``seconds`` (returncode negative then)."""
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=None if env is None else dict(env),
    )
    timer = threading.Timer(seconds, proc.kill)
    timer.daemon = True
    timer.start()
    try:
        stdout, stderr = proc.communicate()
    finally:
        timer.cancel()
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)
