"""Long jobs show their progress on a terminal only: under a pseudo-terminal the bar appears (items
or bytes done, rate, time left); with -q, --json or stderr to a pipe it does not, and stdout and the
files written are the same. The bar is removed when the job ends: what stays on the screen is the
lines the command printed, whole, as without it.

``DETPACK_PROGRESS_AFTER=0`` shows a bar at once, so small inputs do; the default delay is tested too.
"""

from __future__ import annotations

import hashlib
import io
import os
import pty
import re
import select
import subprocess
import tarfile
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
    seeded = seeded_store.seed(tmp_path / "store", 2_000, seed=3, keys=tmp_path / "keys")
    env = _terminal_env(tmp_path)  # a bar at once: a small store shows it
    verify: list[str | Path] = [DETPACK, "store", "--store", seeded.root, "verify"]
    code, out, shown = _under_a_terminal(verify, env)
    assert code == 0 and out.startswith("verified: "), (out, shown)
    assert "re-hashing blobs" in shown and "blobs" in shown and "/s" in shown, shown
    for quiet in (["-q"], ["--json"]):
        code, _, quiet_shown = _under_a_terminal([*verify, *quiet], env)
        assert code == 0 and "re-hashing" not in quiet_shown, quiet_shown
    piped = subprocess.run([str(a) for a in verify], capture_output=True, text=True, env=env, check=True)
    assert piped.stdout == out and "re-hashing" not in piped.stderr  # a pipe: nothing drawn, the same result
    seeded_store.more(seeded, 3_000, seed=4, keys=tmp_path / "keys")
    query: list[str | Path] = [DETPACK, "store", "--store", seeded.root, "query", "--rebuild-index", "--kind", "layer"]
    code, out, shown = _under_a_terminal(query, env)
    assert code == 0 and "indexing the log" in shown and "entries" in shown, shown


def _screen(shown: str) -> list[str]:
    """What the terminal holds at the end: text placed by carriage returns, newlines, line erases and
    cursor-ups (all rich's live display uses), colours and cursor hiding dropped."""
    lines, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", shown):
        if token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            lines[row] = ""
        elif re.fullmatch(r"\x1b\[\d*A", token):
            row = max(0, row - int(token[2:-1] or 1))
        elif not token.startswith("\x1b"):
            lines[row] = lines[row][:col] + token + lines[row][col + len(token) :]
            col += len(token)
    return [line.rstrip() for line in lines if line.strip()]


def _terminal_env(tmp_path: Path, after: str | None = "0") -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"), "TERM": "xterm", "COLUMNS": "120"}
    return env if after is None else {**env, "DETPACK_PROGRESS_AFTER": after}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tar_layer_normalize_and_image_show_bytes_on_a_terminal_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(4):
        (tree / f"part{i}.bin").write_bytes(os.urandom(8 << 20))  # 32 MB: a bar, rate and bytes, in a second
    (tree / "small.txt").write_text("small\n")
    loose = tmp_path / "loose.tar.gz"  # not canonical: normalize rewrites it
    with tarfile.open(loose, "w:gz", compresslevel=1) as tf:
        tf.add(tree, "tree")
    env = _terminal_env(tmp_path)
    jobs: dict[str, tuple[list[str | Path], Path]] = {
        "tar": ([DETPACK, "tar", tree, "-o", tmp_path / "t.tar.gz"], tmp_path / "t.tar.gz"),
        "layer": ([DETPACK, "layer", "--add", f"{tree}:/data", "-o", tmp_path / "l.tar.gz"], tmp_path / "l.tar.gz"),
        "normalize": ([DETPACK, "normalize", "-o", tmp_path / "n", loose], tmp_path / "n" / loose.name),
        "image": (
            [DETPACK, "image", "--layer", tmp_path / "l.tar.gz", "-o", f"oci:{tmp_path / 'img'}"],
            tmp_path / "img" / "index.json",
        ),
    }
    for name, (argv, written) in jobs.items():
        code, out, shown = _under_a_terminal(argv, env)
        assert code == 0, (name, out, shown)
        assert "MB" in shown and "MB/s" in shown, (name, shown)  # bytes done of the total, and the rate
        screen = _screen(shown)
        assert all(line.startswith("* ") and "MB" not in line for line in screen), (name, screen)  # steps only
        first = _sha(written)
        code, quiet_out, quiet_shown = _under_a_terminal([*argv, "-q"], env)
        assert code == 0 and "MB" not in quiet_shown and quiet_out == out, (name, quiet_shown)
        assert _sha(written) == first, name
        piped = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, check=True)
        assert piped.stdout == out and "MB" not in piped.stderr and "\x1b" not in piped.stderr, (name, piped.stderr)
        assert _sha(written) == first, name
        assert piped.stderr.splitlines() == screen, name  # the lines printed, as without a terminal


def test_a_job_shorter_than_the_delay_draws_nothing(tmp_path: Path) -> None:
    small = tmp_path / "small.tar"
    with tarfile.open(small, "w") as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    env = _terminal_env(tmp_path, after=None)  # the default: a second
    code, out, shown = _under_a_terminal([DETPACK, "normalize", "-o", tmp_path / "n", small], env)
    assert code == 0 and "small.tar  tar  sha256:" in out and shown == "", shown


def test_rebuild_of_many_releases_shows_releases_done_and_keeps_its_lines(tmp_path: Path) -> None:
    # Offline, releases that --find-links does not hold: each is checked (a detpack process apiece)
    # and found "not rebuilt" in a second; the bar counts them as it would real rebuilds.
    links = tmp_path / "links"
    links.mkdir()
    listing = tmp_path / "releases.txt"
    listing.write_text("fx-one==1.0\nfx-two==1.0\nfx-three==1.0\n")
    argv: list[str | Path] = [
        DETPACK,
        "rebuild",
        "--pypi",
        "-r",
        listing,
        "--offline",
        "--find-links",
        links,
        "--jobs",
        "1",
    ]
    env = _terminal_env(tmp_path)
    code, out, shown = _under_a_terminal(argv, env)
    assert code == 1 and out.splitlines()[-1].startswith("3 releases: 0 byte-identical"), (out, shown)
    assert "rebuilding" in shown and "3/3" in shown and "releases" in shown, shown
    assert [re.sub(r"\(\d+ s\)$", "(N s)", line) for line in _screen(shown)] == [
        f"* checking 3 releases from {listing}, 1 at a time",
        "* [1/3] fx-one==1.0: not rebuilt (N s)",
        "* [2/3] fx-two==1.0: not rebuilt (N s)",
        "* [3/3] fx-three==1.0: not rebuilt (N s)",
    ], shown  # every line whole, above the bar; the bar gone
    for quiet in (["-q"], ["--json"]):
        code, _, quiet_shown = _under_a_terminal([*argv, *quiet], env)
        assert code == 1 and "rebuilding" not in quiet_shown, quiet_shown
    piped = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env)
    assert piped.returncode == 1 and piped.stdout == out and "rebuilding" not in piped.stderr, piped.stderr
