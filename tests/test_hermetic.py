"""Hermetic inputs: a lock keeps the backend version fixed when a newer one appears, refuses
a tampered file by name; C extensions do not depend on where they are built; rebuild from a
provenance record names what changed."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, digests, materialize, run, wheelhouse_without

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _build(src: Path, out: Path, house: Path, *extra: object) -> tuple[int, str]:
    r = run([DETPACK, "build", src, "-o", out, "--find-links", house, "--offline", *extra])
    return r.code, r.stderr


def test_lock_pins_the_backend_and_refuses_tampering(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    old_only = wheelhouse_without(tmp_path, "old", "flit_core-4.")  # today's index: flit_core 3.12.0 only
    r = run([DETPACK, "lock", src, "--find-links", old_only, "--offline"])
    assert r.code == 0, r.stderr
    lock = src / "pylock.build.toml"
    text = lock.read_text()
    assert 'name = "flit-core"' in text and 'version = "3.12.0"' in text and "sha256 = " in text

    assert _build(src, tmp_path / "today", old_only, "--lock", lock)[0] == 0
    # Tomorrow the index also serves flit_core 4.2.0: the lock keeps 3.12.0 and the bytes.
    assert _build(src, tmp_path / "tomorrow", wheelhouse, "--lock", lock)[0] == 0
    assert digests(tmp_path / "today") == digests(tmp_path / "tomorrow")
    # Control: without the lock the newer backend is used and the wheel changes.
    assert _build(src, tmp_path / "unlocked", wheelhouse)[0] == 0
    assert digests(tmp_path / "unlocked") != digests(tmp_path / "today")
    with zipfile.ZipFile(next((tmp_path / "unlocked").glob("*.whl"))) as zf:
        assert "Generator: flit 4.2.0" in zf.read("fx_flit-1.0.0.dist-info/WHEEL").decode()
    prov = json.loads(next((tmp_path / "tomorrow").glob("*.provenance.json")).read_bytes())
    assert prov["predicate"]["buildDefinition"]["externalParameters"]["lock"]["name"] == "pylock.build.toml"

    # A tampered flit_core wheel (same name, other bytes) is refused by name; nothing is written.
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for wheel in old_only.iterdir():
        (tampered / wheel.name).write_bytes(wheel.read_bytes())
    evil = next(tampered.glob("flit_core-3.12.0-*.whl"))
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("flit_core/evil.py", "print('pwned')\n")
    # A fresh build root: no cached environment from the good runs, so the file is installed.
    r = run(
        [DETPACK, "build", src, "-o", tmp_path / "evil-out", "--find-links", tampered, "--offline", "--lock", lock],
        env={"DETPACK_BUILD_ROOT": str(tmp_path / "fresh-root")},
    )
    code, err = r.code, r.stderr
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and len(lines) == 1, err
    assert "flit-core 3.12.0" in lines[0] and evil.name in lines[0] and "does not match its locked sha256" in lines[0]
    assert not (tmp_path / "evil-out").exists() or not any((tmp_path / "evil-out").iterdir())


def test_lock_that_lacks_a_requirement_is_named(tmp_path: Path, wheelhouse: Path) -> None:
    from conftest import sha256
    from detpack.build.lockfile import LockedPackage, lock_bytes

    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    wheel = next(wheelhouse.glob("packaging-*.whl"))
    version = wheel.name.split("-")[1]
    lock = tmp_path / "pylock.build.toml"
    lock.write_bytes(
        lock_bytes(
            [LockedPackage("packaging", version, sha256(wheel), wheel.name, wheel.as_uri())],
            requires=[],
            created_by="test",
            project="fx-flit",
        )
    )
    code, err = _build(src, tmp_path / "out", wheelhouse, "--lock", lock)
    assert code == 2 and "does not satisfy flit_core" in err, err


def test_c_extension_is_independent_of_build_path_and_root(tmp_path: Path, wheelhouse: Path) -> None:
    a = materialize(FIXTURES / "cext", tmp_path / "a" / "src", 0o022)
    b = materialize(FIXTURES / "cext", tmp_path / "b" / "some" / "deeper" / "tree", 0o002)
    assert _build(a, tmp_path / "out-a", wheelhouse)[0] == 0
    r = run(
        [DETPACK, "build", b, "-o", tmp_path / "out-b", "--find-links", wheelhouse, "--offline"],
        env={"TZ": "Asia/Tokyo", "DETPACK_BUILD_ROOT": str(tmp_path / "elsewhere-root")},
        umask=0o002,
    )
    assert r.code == 0, r.stderr
    assert digests(tmp_path / "out-a") == digests(tmp_path / "out-b")
    wheel = next((tmp_path / "out-a").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        so = next(n for n in zf.namelist() if n.endswith(".so"))
        data = zf.read(so)
    assert b"/tmp/" not in data and b"detpack-build" not in data
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", "--without-pip", venv]).code == 0
    assert run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", wheel]).code == 0
    r = run([venv / "bin" / "python", "-c", "import fx_cext; print(fx_cext.hello(), fx_cext.origin())"], cwd=tmp_path)
    assert r.code == 0 and "2 + 3 = 5" in r.stdout, r.stderr
    assert "/tmp/" not in r.stdout.split(" 5 ", 1)[1]  # __FILE__ was mapped away too


def test_rebuild_after_an_edit_names_the_member(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "hatchling", tmp_path / "src", 0o022)
    assert _build(src, tmp_path / "dist", wheelhouse)[0] == 0
    prov = next((tmp_path / "dist").glob("*.provenance.json"))
    module = src / "src" / "fx_hatchling" / "__init__.py"
    module.write_text(module.read_text() + "EDITED = True\n")
    r = run([DETPACK, "rebuild", prov, "--source", src, "--find-links", wheelhouse, "--offline"])
    assert r.code == 1, r.stderr
    assert r.stdout.startswith("NOT reproduced: 0 of 2 subjects match (tree digest DIFFERS")
    assert "fx_hatchling/__init__.py" in r.stdout and "+EDITED = True" in r.stdout


def test_rebuild_from_an_sdist_record_and_bad_records(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    assert _build(src, tmp_path / "dist", wheelhouse, "--sdist")[0] == 0
    sdist = next((tmp_path / "dist").glob("*.tar.gz"))
    # A wheel built from the sdist: its record names the sdist, which lies beside it.
    assert run([DETPACK, "build", sdist, "--find-links", wheelhouse, "--offline"]).code == 0
    prov = next((tmp_path / "dist").glob("*.provenance.json"))
    r = run([DETPACK, "rebuild", prov, "--find-links", wheelhouse, "--offline"])
    assert r.code == 0 and "sdist sha256 matches" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.json"
    for content, needle in (("{", "not JSON"), ('{"a": 1}', "not an in-toto SLSA provenance statement")):
        bad.write_text(content)
        r = run([DETPACK, "rebuild", bad])
        assert r.code == 2 and needle in r.stderr, r.stderr
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / prov.name).write_bytes(prov.read_bytes())
    r = run([DETPACK, "rebuild", moved / prov.name])
    assert r.code == 2 and "is not beside it; pass --source PATH" in r.stderr


def test_locked_build_environment_is_cached_and_verified(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    assert run([DETPACK, "lock", src, "--find-links", wheelhouse, "--offline"]).code == 0
    lock = src / "pylock.build.toml"
    common = ["--lock", lock, "--find-links", wheelhouse, "--offline", "-v"]
    first = run([DETPACK, "build", src, "-o", tmp_path / "a", *common])
    second = run([DETPACK, "build", src, "-o", tmp_path / "b", *common])
    assert first.code == 0 and second.code == 0, first.stderr + second.stderr
    assert "reusing cached build environment" in second.stderr
    assert "made cached build environment" not in second.stderr
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    # A cached environment whose files changed is not trusted: it is made again.
    cache = Path("/tmp/detpack-build/cache")
    locked = [p for p in cache.iterdir() if (p / "detpack-env.json").is_file() and not p.name.startswith("files-")]
    entry = max(locked, key=lambda p: p.stat().st_mtime)  # this lock's (unlocked builds keep files-* entries)
    victim = next(entry.glob("lib/python*/site-packages/setuptools/__init__.py"))
    victim.write_text(victim.read_text() + "\n# tampered\n")
    third = run([DETPACK, "build", src, "-o", tmp_path / "c", *common])
    assert third.code == 0, third.stderr
    assert "changed or is incomplete: remaking it" in third.stderr
    assert digests(tmp_path / "c") == digests(tmp_path / "a")


def test_a_lock_is_for_its_own_project_and_stays_out_of_the_sdist(tmp_path: Path, wheelhouse: Path) -> None:
    """The lock names its project: another project's build refuses it in one line unless --lock-any
    (recorded); the lock at the project's top is left out of the sdist (and of what is dirty)."""
    import subprocess
    import tarfile

    flit = materialize(FIXTURES / "flit", tmp_path / "flit", 0o022)
    r = run([DETPACK, "lock", flit, "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    lock = flit / "pylock.build.toml"
    assert 'name = "fx-flit"' in lock.read_text(), lock.read_text()

    hatch = materialize(FIXTURES / "hatchling", tmp_path / "hatch", 0o022)
    r = run([DETPACK, "lock", hatch, "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    hatch_lock = hatch / "pylock.build.toml"
    other = materialize(FIXTURES / "hatchling", tmp_path / "other", 0o022)  # the same backend, another name
    pyproject = other / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('name = "fx-hatchling"', 'name = "fx-other"'))
    out = tmp_path / "refused"
    code, err = _build(other, out, wheelhouse, "--lock", hatch_lock)
    [line] = err.strip().splitlines()
    assert code == 2 and not out.exists(), err
    assert line == (
        f"error: {hatch_lock}: the lock was made for project 'fx-hatchling', not 'fx-other'; make one for this "
        "project with `detpack lock`, or pass --lock-any to use it anyway (recorded)"
    ), line
    code, err = _build(other, tmp_path / "any", wheelhouse, "--lock", hatch_lock, "--lock-any", "-w")
    assert code == 0, err
    [record] = (tmp_path / "any").glob("*.provenance.json")
    recorded = json.loads(record.read_bytes())["predicate"]["buildDefinition"]["externalParameters"]["lock"]
    assert recorded["lockAny"] is True and recorded["project"] == "fx-hatchling", recorded
    code, err = _build(hatch, tmp_path / "own", wheelhouse, "--lock", hatch_lock, "-w")
    assert code == 0, err
    [record] = (tmp_path / "own").glob("*.provenance.json")
    assert (
        "lockAny" not in json.loads(record.read_bytes())["predicate"]["buildDefinition"]["externalParameters"]["lock"]
    )

    # Committed with the project (as docs/build.md says) or not: the sdist never holds it, the tree is clean.
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A", ":!pylock.build.toml"], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", "-C", flit, *argv], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    code, err = _build(flit, tmp_path / "untracked", wheelhouse, "--lock", lock, "-s", "--require-clean")
    assert code == 0, err  # an uncommitted lock does not make the tree dirty
    for argv in (["add", "pylock.build.toml"], ["commit", "-q", "-m", "lock"]):
        subprocess.run(["git", "-C", flit, *argv], check=True, env={**env, "PATH": "/usr/bin:/bin"})
    code, err = _build(flit, tmp_path / "tracked", wheelhouse, "--lock", lock, "-s", "--require-clean")
    assert code == 0, err
    for sdist in (*(tmp_path / "untracked").glob("*.tar.gz"), *(tmp_path / "tracked").glob("*.tar.gz")):
        with tarfile.open(sdist) as tf:
            assert not [n for n in tf.getnames() if n.endswith("pylock.build.toml")], sdist

    # Named in the project's packaging on purpose: it goes in.
    pyproject = hatch / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text() + '\n[tool.hatch.build.targets.sdist]\ninclude = ["pylock.build.toml", "src"]\n'
    )
    code, err = _build(hatch, tmp_path / "on-purpose", wheelhouse, "--lock", hatch / "pylock.build.toml", "-s")
    assert code == 0, err
    [sdist] = (tmp_path / "on-purpose").glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        assert [n for n in tf.getnames() if n.endswith("/pylock.build.toml")], tf.getnames()
