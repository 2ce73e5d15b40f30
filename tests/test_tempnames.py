"""A backend that builds in ``tempfile.mkdtemp()`` (aio-libs' frozenlist, propcache, yarl) gets the
same directory names in every build: detpack runs each hook with ``tempfile``'s names seeded."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import DETPACK, FIXTURES, materialize, run

FIXTURE = FIXTURES / "tempdir-name"


def _where(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("fx_tempdir/_where.py").decode()


def test_the_backend_alone_builds_in_a_random_directory(tmp_path: Path) -> None:
    # the perturbation: called straight, twice, the backend records two different names
    src = materialize(FIXTURE, tmp_path / "src", 0o022)
    names = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        out.mkdir()
        code = f"import tempdir_backend as b; print(b.build_wheel({str(out)!r}))"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=src,
            env={"PYTHONPATH": str(src / "_backend"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        names.append(_where(out / proc.stdout.strip()))
    assert names[0] != names[1], names
    assert all(n.startswith("BUILT_IN = '.tmp-fx-tempdir-") for n in names), names


def test_detpack_gives_the_hook_the_same_names_every_build(tmp_path: Path) -> None:
    src = materialize(FIXTURE, tmp_path / "src", 0o022)
    digests, names = [], []
    for i in range(2):
        out = tmp_path / f"out{i}"
        r = run([DETPACK, "build", src, "-o", out, "--offline", "-v"])
        assert r.code == 0, r.stdout + r.stderr
        wheel = out / "fx_tempdir-1.0.0-py3-none-any.whl"
        digests.append(hashlib.sha256(wheel.read_bytes()).hexdigest())
        names.append(_where(wheel))
        # each hook ran through detpack's runner, in the sandbox
        hooks = [ln for ln in (r.stdout + r.stderr).splitlines() if "_in_process.py build_wheel" in ln]
        assert hooks and all("[sandbox" in ln and "/inproc/seeded.py " in ln for ln in hooks), hooks
    assert names[0] == names[1] and names[0].startswith("BUILT_IN = '.tmp-fx-tempdir-"), names
    assert digests[0] == digests[1]
