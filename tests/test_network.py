"""``detpack normalize`` on real, large wheels from PyPI: pip installs the result, the
operation is idempotent, and every executable member keeps its exec bit."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, run, sha256

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.integration]

PINS = ["botocore==1.44.8", "awscli==1.46.3"]


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("pypi")
    r = run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", where, *PINS]
    )
    assert r.code == 0, r.stderr
    return {p.name.split("-")[0]: p for p in where.glob("*.whl")}


def _exec_members(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {i.filename for i in zf.infolist() if (i.external_attr >> 16) & 0o111}


def test_real_wheels_normalize_install_and_keep_exec_bits(
    downloaded: dict[str, Path], tmp_path: Path
) -> None:
    out, again = tmp_path / "out", tmp_path / "again"
    files = sorted(downloaded.values())
    r = run([DETPACK, "normalize", *files, "-o", out])
    assert r.code == 0, r.stderr
    normalized = sorted(out.iterdir())
    assert [p.name for p in normalized] == [p.name for p in files]
    for before, after in zip(files, normalized, strict=True):
        assert sha256(before) != sha256(after)  # really rewritten
        assert _exec_members(before) == _exec_members(after)
    assert len(_exec_members(out / downloaded["awscli"].name)) > 100
    r = run([DETPACK, "normalize", *normalized, "-o", again])
    assert r.code == 0, r.stderr
    assert all(sha256(a) == sha256(b) for a, b in zip(normalized, sorted(again.iterdir()), strict=True))
    assert r.stdout.count("already canonical") == len(files)

    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", venv]).code == 0
    py = venv / "bin" / "python"
    r = run([sys.executable, "-m", "pip", "--python", py, "install", "--quiet", *normalized])
    assert r.code == 0, r.stdout + r.stderr
    r = run(
        [
            py,
            "-c",
            "import botocore.session; print(botocore.session.get_session().get_available_services()[:1])",
        ]
    )
    assert r.code == 0 and r.stdout.strip() != "[]", r.stderr
    r = run([venv / "bin" / "aws", "--version"])
    assert r.code == 0 and "aws-cli/1.46.3" in (r.stdout + r.stderr), r.stderr
