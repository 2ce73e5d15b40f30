"""detpack builds itself twice, under different umask, TZ and HOME, to identical bytes with
exactly the expected files (a tool that promises reproducibility must have it)."""

from __future__ import annotations

import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, ROOT, digests, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _tracked(prefix: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", prefix], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.splitlines())


def test_self_build_is_reproducible_with_exact_file_list(tmp_path: Path, wheelhouse: Path) -> None:
    common = ["--find-links", wheelhouse, "--offline"]
    a = run([DETPACK, "build", ROOT, "-o", tmp_path / "a", *common], env={"TZ": "UTC"}, umask=0o022)
    assert a.code == 0, a.stderr
    b = run(
        [DETPACK, "build", ROOT, "-o", tmp_path / "b", *common],
        env={"TZ": "America/Anchorage", "HOME": str(tmp_path)},
        umask=0o077,
    )
    assert b.code == 0, b.stderr
    da, db = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert da == db and len(da) == 2

    package = _tracked("detpack")
    assert "detpack/cli/build.py" in package
    wheel = next((tmp_path / "a").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    dist_info = {n for n in names if ".dist-info/" in n}
    assert names - dist_info == package
    assert {n.split("/", 1)[1] for n in dist_info} == {
        "METADATA",
        "WHEEL",
        "RECORD",
        "entry_points.txt",
        "licenses/LICENSE",
    }
    sdist = next((tmp_path / "a").glob("*.tar.gz"))
    with tarfile.open(sdist) as tf:
        files = {m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile()}
    assert package <= files
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= files
    assert not any(f.startswith((".venv", ".wheelhouse", ".git/")) for f in files)


def test_make_release_from_two_clones_gives_the_same_bytes_and_rebuilds(tmp_path: Path, wheelhouse: Path) -> None:
    """`make release` (locked build dependencies, provenance, SBOMs, check, rebuild) in two clones of this
    repository in different folders: the same sdist and wheel bytes, and each says it reproduced them."""
    outs = []
    for where in ("a/detpack", "elsewhere/deeper/detpack"):
        clone = tmp_path / where
        clone.parent.mkdir(parents=True)
        subprocess.run(["git", "clone", "--quiet", ROOT, clone], check=True)
        flags = f"--find-links {wheelhouse} --offline"
        r = run(["make", "-C", clone, "-o", ".venv/.detpack-setup", "release", f"BIN={DETPACK.parent}",
                 f"RELEASE_FLAGS={flags}"], timeout=900)  # fmt: skip
        assert r.code == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "reproducible: 2 builds" in r.stdout and "reproduced: 2 of 2 subjects match" in r.stdout, r.stdout
        dist = clone / "dist"
        names = sorted(p.name for p in dist.iterdir())
        expected = ["-py3-none-any.whl", ".build.log.gz", ".cdx.json", ".provenance.json", ".spdx.json", ".tar.gz"]
        assert names == [f"detpack-0.1.0{suffix}" for suffix in expected], names
        outs.append(digests(dist))
    same = {n: d for n, d in outs[0].items() if n.endswith((".whl", ".tar.gz"))}
    assert len(same) == 2 and all(outs[1][n] == d for n, d in same.items()), outs
