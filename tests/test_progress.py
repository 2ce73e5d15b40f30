"""Long jobs show their progress on a terminal only: under a pseudo-terminal the bar appears (items
done, rate, time left); with -q, --json or stderr to a pipe it does not, and stdout is the same."""

from __future__ import annotations

import os
import pty
import select
import subprocess
from pathlib import Path

import pytest
import seeded_store

from conftest import DETPACK

pytestmark = pytest.mark.integration


def _under_a_terminal(argv: list[str | Path], env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, out.decode(), shown.decode(errors="replace")


def test_store_verify_and_the_index_build_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    seeded = seeded_store.seed(tmp_path / "store", 20_000, seed=3, keys=tmp_path / "keys")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "TERM": "xterm", "COLUMNS": "120"}
    verify = [DETPACK, "store", "--store", seeded.root, "verify"]
    code, out, shown = _under_a_terminal(verify, env)
    assert code == 0 and out.startswith("verified: "), (out, shown)
    assert "re-hashing blobs" in shown and "blobs" in shown and "/s" in shown, shown
    for quiet in (["-q"], ["--json"]):
        code, _, quiet_shown = _under_a_terminal([*verify, *quiet], env)
        assert code == 0 and "re-hashing" not in quiet_shown, quiet_shown
    piped = subprocess.run([str(a) for a in verify], capture_output=True, text=True, env=env, check=True)
    assert piped.stdout == out and "re-hashing" not in piped.stderr  # a pipe: nothing drawn, the same result
    seeded_store.more(seeded, 30_000, seed=4, keys=tmp_path / "keys")  # an index build of seconds, not one
    query = [DETPACK, "store", "--store", seeded.root, "query", "--rebuild-index", "--kind", "layer"]
    code, out, shown = _under_a_terminal(query, env)
    assert code == 0 and "indexing the log" in shown and "entries" in shown, shown
