"""Faults: a process killed at any moment, or a full disk, never leaves a damaged output.

Every output path holds the old file, nothing, or a complete new file; hidden temporaries
of a killed writer are swept by the next writer in that folder.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, ROOT, materialize, sha256

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _spawn(argv: list[object], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(a) for a in argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def test_killed_in_place_normalize_never_damages_the_file(tmp_path: Path) -> None:
    sample = sorted((ROOT / ".samples").glob("botocore-*.whl"))[0]
    expected = tmp_path / "expected" / sample.name
    assert subprocess.run([DETPACK, "normalize", sample, "-o", expected.parent], capture_output=True).returncode == 0
    original, canonical = sha256(sample), sha256(expected)
    rng = random.Random(1)
    target = tmp_path / "work" / sample.name
    target.parent.mkdir()
    seen = {"old": 0, "new": 0}
    for _ in range(20):
        shutil.copy(sample, target)
        proc = _spawn([DETPACK, "normalize", target, "--in-place"])
        time.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        digest = sha256(target)
        assert digest in (original, canonical), "the file was damaged"
        seen["old" if digest == original else "new"] += 1
    assert seen["old"] and seen["new"], seen  # the kills landed both before and after the rename
    # The next writer in the folder sweeps what killed writers left behind.
    assert subprocess.run([DETPACK, "normalize", target, "--in-place"], capture_output=True).returncode == 0
    assert sorted(p.name for p in target.parent.iterdir()) == [sample.name]


def test_killed_build_leaves_old_outputs_or_complete_new_ones(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    out = tmp_path / "dist"
    argv = [DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"]
    assert subprocess.run(argv, capture_output=True).returncode == 0
    # the build log is a byproduct: what the backend printed differs from run to run (times), the artifacts not
    good = {p.name: sha256(p) for p in out.iterdir() if not p.name.endswith((".json", ".build.log.gz"))}
    rng = random.Random(2)
    for _ in range(8):
        # As a CI runner cancelling a job does: the whole process group (pip, the backend) dies.
        proc = _spawn(argv, start_new_session=True)
        time.sleep(rng.uniform(0.2, 4.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        visible = {p.name: sha256(p) for p in out.iterdir() if not p.name.startswith(".")}
        artifacts = {k: v for k, v in visible.items() if not k.endswith((".json", ".build.log.gz"))}
        assert artifacts == good  # reproducible: a completed rebuild gives the very same bytes
    last = subprocess.run(argv, capture_output=True, text=True)
    assert last.returncode == 0, last.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".detpack-tmp-")]


#: Runs detpack with os.rename/os.replace/os.unlink watched: just before the Nth of them that
#: touches a visible name in OUTDIR, the process SIGKILLs itself (a real kill, mid-commit).
_KILL_AT_NTH_COMMIT_STEP = """
import os, runpy, signal, sys
outdir, nth = os.path.realpath(sys.argv[1]), int(sys.argv[2])
sys.argv = ["detpack", *sys.argv[3:]]
seen = 0
def watched(real, target_arg):
    def call(*args, **kwargs):
        global seen
        target = os.path.realpath(os.fspath(args[target_arg]))
        if os.path.dirname(target) == outdir and not os.path.basename(target).startswith("."):
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
os.rename, os.replace, os.unlink = watched(os.rename, 1), watched(os.replace, 1), watched(os.unlink, 0)
runpy.run_module("detpack", run_name="__main__")
"""


def test_killed_during_the_commit_provenance_never_lists_missing_artifacts(tmp_path: Path, wheelhouse: Path) -> None:
    """Killed at every step of moving the outputs into place, over an older build's outputs:
    a visible provenance lists only artifacts that are there with the sha256 it records."""
    import json
    import sys

    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    out, old = tmp_path / "dist", tmp_path / "old"
    argv = ["build", src, "-o", out, "--find-links", wheelhouse, "--offline"]
    assert subprocess.run([str(a) for a in (DETPACK, *argv)], capture_output=True).returncode == 0
    shutil.copytree(out, old)
    with (src / "fx_setuptools_basic" / "__init__.py").open("a") as f:
        f.write("\nCHANGED = True\n")  # the new build's artifacts differ from the old ones
    versions = {p.name: {sha256(p)} for p in old.iterdir() if not p.name.endswith((".json", ".build.log.gz"))}
    steps = 0
    for nth in range(1, 12):
        shutil.rmtree(out)
        shutil.copytree(old, out)
        proc = subprocess.run(
            [str(a) for a in (sys.executable, "-c", _KILL_AT_NTH_COMMIT_STEP, out, nth, *argv)],
            capture_output=True,
            text=True,
        )
        visible = {p.name: p for p in out.iterdir() if not p.name.startswith(".")}
        for name, path in visible.items():
            if name.endswith(".provenance.json"):
                for subject in json.loads(path.read_bytes())["subject"]:
                    assert subject["name"] in visible, (nth, subject["name"], sorted(visible))
                    assert sha256(visible[subject["name"]]) == subject["digest"]["sha256"], (nth, subject["name"])
            elif not name.endswith(".build.log.gz"):
                versions.setdefault(name, set()).add(sha256(path))
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        steps = nth
    else:
        pytest.fail("the build never completed")
    assert steps >= 4, steps  # old provenance out, sdist, wheel, new provenance in
    assert all(len(v) == 2 for v in versions.values()), versions  # each artifact: old or complete new bytes


#: The child must not write bytecode caches under the limit: a truncated .pyc would break
#: every later run of the package.
NO_PYC = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("mode", ["in-place", "outdir"])
def test_full_disk_gives_one_line_and_no_partial_output(mode: str, tmp_path: Path) -> None:
    sample = sorted((ROOT / ".samples").glob("botocore-*.whl"))[0]
    target = tmp_path / sample.name
    shutil.copy(sample, target)
    argv = (
        [DETPACK, "normalize", target, "--in-place"]
        if mode == "in-place"
        else [DETPACK, "normalize", target, "-o", tmp_path / "out"]
    )
    r = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, preexec_fn=lambda: _limit_file_size(1 << 20)
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "cannot write (File too large)" in lines[0]
    assert sha256(target) == sha256(sample)  # the original is intact
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p != target]
    assert leftovers == []


def test_full_disk_during_build(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "noisy", tmp_path / "src", 0o022)
    out = tmp_path / "dist"
    r = subprocess.run(
        [str(a) for a in (DETPACK, "build", src, "-o", out)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: _limit_file_size(600),
        env={**NO_PYC, "HOME": str(tmp_path)},
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists() or not any(out.iterdir())
