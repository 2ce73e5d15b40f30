"""``detpack normalize`` on real, large wheels from PyPI (botocore, awscli; fetched once by
``make setup``): pip installs the result to the very same files, the operation is
idempotent, every executable member keeps its exec bit, and wheel's own reader verifies
every member against the regenerated RECORD."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, ROOT, read_all_with_wheel, run, sha256

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SAMPLES = ROOT / ".samples"


@pytest.fixture(scope="module")
def samples() -> list[Path]:
    wheels = sorted(SAMPLES.glob("*.whl"))
    if len(wheels) < 2:
        pytest.fail(f"{SAMPLES} lacks the sample wheels: run `make setup`")
    return wheels


def _exec_members(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {i.filename for i in zf.infolist() if (i.external_attr >> 16) & 0o111}


def _install(wheel: Path, venv: Path) -> dict[str, bytes]:
    """Install ``wheel`` with pip into a fresh venv; return site-packages + bin file contents."""
    assert run([sys.executable, "-m", "venv", "--without-pip", venv]).code == 0
    r = run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", wheel])
    assert r.code == 0, r.stdout + r.stderr
    site = next(venv.glob("lib/python*/site-packages"))
    files = {f"site/{p.relative_to(site)}": p for p in site.rglob("*") if p.is_file()}
    files |= {f"bin/{p.name}": p for p in (venv / "bin").iterdir() if p.is_file() and "python" not in p.name}
    skip = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", ".pyc", "activate")
    # Script shebangs name the venv: compare them with the venv path factored out.
    return {
        k: p.read_bytes().replace(str(venv).encode(), b"VENV")
        for k, p in files.items()
        if not k.endswith(skip) and "/activate" not in k
    }


def test_real_wheels_normalize_install_and_keep_exec_bits(samples: list[Path], tmp_path: Path) -> None:
    out, again = tmp_path / "out", tmp_path / "again"
    r = run([DETPACK, "normalize", *samples, "-o", out])
    assert r.code == 0, r.stderr
    normalized = [out / p.name for p in samples]
    for before, after in zip(samples, normalized, strict=True):
        assert sha256(before) != sha256(after)  # really rewritten
        assert _exec_members(before) == _exec_members(after)
    assert max(len(_exec_members(p)) for p in normalized) > 100
    for p in normalized:
        with zipfile.ZipFile(p) as zf:
            assert read_all_with_wheel(p) == len(zf.infolist())
    r = run([DETPACK, "normalize", *normalized, "-o", again])
    assert r.code == 0, r.stderr
    assert all(sha256(a) == sha256(again / a.name) for a in normalized)
    assert r.stdout.count("already canonical") == len(samples)

    for original, canonical in zip(samples, normalized, strict=True):
        installed_original = _install(original, tmp_path / f"v-orig-{original.name[:8]}")
        installed_canonical = _install(canonical, tmp_path / f"v-canon-{original.name[:8]}")
        assert installed_original.keys() == installed_canonical.keys()
        assert installed_original == installed_canonical
    aws = tmp_path / f"v-canon-{normalized[0].name[:8]}" / "bin" / "aws"
    if "awscli" in normalized[0].name:
        assert aws.stat().st_mode & 0o111
    r = run(
        [
            tmp_path / f"v-canon-{normalized[1].name[:8]}" / "bin" / "python",
            "-c",
            "import botocore; print(botocore.__version__)",
        ],
        cwd=tmp_path,
    )
    assert r.code == 0 and r.stdout.strip() == "1.44.8", r.stderr
