"""Shared test machinery: the wheelhouse, running detpack as a user would, and tool checks.

Builds run offline from the wheelhouse that `make setup` fills. A test whose external tool
is missing skips on a developer machine but fails in CI (CI=true), so CI never passes by
skipping.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
WHEELHOUSE = ROOT / ".wheelhouse"
BIN = Path(sys.executable).parent
#: The fixtures that build, and the module each one's wheel installs.
MODULES = {
    "setuptools-basic": "fx_setuptools_basic",
    "setuptools-setuppy": "fx_setuptools_setuppy",
    "hatchling": "fx_hatchling",
    "flit": "fx_flit",
    "poetry": "fx_poetry",
    "pdm": "fx_pdm",
    "noisy": "fx_noisy",
    "cext": "fx_cext",
}
DETPACK = BIN / "detpack"


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it locally, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install it; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    if not any(WHEELHOUSE.glob("*.whl")):
        pytest.fail(f"{WHEELHOUSE} is empty: run `make setup` first")
    return WHEELHOUSE


def materialize(src: Path, dest: Path, umask: int) -> Path:
    """Recreate ``src`` at ``dest`` as a fresh checkout under ``umask`` would (0666/0777 & ~umask)."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in ("__pycache__", "dist", "build") or part.endswith(".egg-info") for part in rel.parts):
            continue
        target = dest / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777 & ~umask)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        executable = path.stat().st_mode & stat.S_IXUSR
        target.chmod((0o777 if executable else 0o666) & ~umask)
    dest.chmod(0o777 & ~umask)
    return dest


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    umask: int = 0o022,
    timeout: float = 600,
) -> Run:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.run(
        [str(a) for a in argv],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: os.umask(umask),
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(outdir: Path, pattern: str = "*") -> dict[str, str]:
    """File name -> sha256 of the wheels and sdists in ``outdir``."""
    return {p.name: sha256(p) for p in sorted(outdir.glob(pattern)) if p.name.endswith((".whl", ".tar.gz"))}
