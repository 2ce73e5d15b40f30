"""``detpack deps verify``: every file of a closure built here, reproduced, different or unverified.

Offline: "releases" made here in a --find-links folder, as in tests/test_pypi.py. The closure:
- fx_hatchling's wheel, built by ``python -m build`` with SOURCE_DATE_EPOCH: reproduced;
- fx_hatchling's sdist: unverified (an sdist is not rebuilt by itself);
- fx_flit's wheel altered (the release in --find-links is detpack's): different, not the published file;
- fx_nosdist's wheel, a release with no sdist anywhere: unverified, with the rebuild's reason;
- fx_pdm's wheel, built by ``detpack build`` with its record in --records: built here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import pytest
import tomli_w

from conftest import DETPACK, FIXTURES, Run, materialize, run
from detpack.deps import read_closure
from detpack.deps.closure import ClosureFile
from detpack.deps.verify import judge, tally
from detpack.errors import InputError
from detpack.verify.pypi_batch import ReleaseOutcome


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lock(path: Path, files: list[tuple[str, str, Path]]) -> Path:
    """A PEP 751 lock naming ``files`` ((name, version, file) each; wheels and sdists by suffix)."""
    packages: dict[tuple[str, str], dict[str, object]] = {}
    for name, version, file in files:
        pkg = packages.setdefault((name, version), {"name": name, "version": version})
        entry = {"name": file.name, "path": str(file), "hashes": {"sha256": _sha256(file)}}
        if file.name.endswith(".whl"):
            pkg.setdefault("wheels", []).append(entry)  # type: ignore[attr-defined]
        else:
            pkg["sdist"] = entry
    lock = {"lock-version": "1.0", "created-by": "test", "packages": list(packages.values())}
    path.write_text(tomli_w.dumps(lock))
    return path


# The closure readers and the judging of a rebuild's report: pure, fast.


def test_a_lock_and_hashed_requirements_are_read(tmp_path: Path) -> None:
    wheel = tmp_path / "a-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    sdist = tmp_path / "a-1.0.tar.gz"
    sdist.write_bytes(b"sdist")
    closure = read_closure(_lock(tmp_path / "pylock.toml", [("a", "1.0", wheel), ("a", "1.0", sdist)]))
    assert [(f.name, f.version, f.filename, f.kind) for f in closure.files] == [
        ("a", "1.0", wheel.name, "wheel"),
        ("a", "1.0", sdist.name, "sdist"),
    ]
    reqs = tmp_path / "requirements.txt"
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    reqs.write_text(
        f"# pinned\nA==1.0 \\\n    --hash=sha256:{a} \\\n    --hash=sha256:{b}\nB_c==2 --hash=sha256:{c}  # note\n"
    )
    files = read_closure(reqs).files
    assert [(f.spec, f.sha256[0], f.filename, f.kind) for f in files] == [
        ("a==1.0", "a", None, "unknown"),
        ("a==1.0", "b", None, "unknown"),
        ("b-c==2", "c", None, "unknown"),
    ]


def test_bad_closures_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such closure"):
        read_closure(tmp_path / "pylock.toml")
    lock = tmp_path / "pylock.toml"
    lock.write_text(
        'lock-version = "1.0"\ncreated-by = "x"\n[[packages]]\nname = "a"\nversion = "1"\n'
        '[[packages.wheels]]\nname = "a-1-py3-none-any.whl"\npath = "a-1-py3-none-any.whl"\nhashes = {md5 = "00"}\n'
    )
    with pytest.raises(InputError, match=r"pylock.toml: package a: a-1-py3-none-any.whl has no sha256 hash"):
        read_closure(lock)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("a==1\n")
    with pytest.raises(InputError, match=r"requirements.txt:1: a==1 has no --hash=sha256"):
        read_closure(reqs)
    reqs.write_text("a>=1 --hash=sha256:" + "a" * 64 + "\n")
    with pytest.raises(InputError, match="not an exact release"):
        read_closure(reqs)


def _outcome(verdict: str, published: str, rebuilt: str) -> ReleaseOutcome:
    wheel = {
        "wheel": "a-1-py3-none-any.whl",
        "verdict": verdict,
        "publishedSha256": published,
        "rebuiltSha256": rebuilt,
        "explanation": ["content: 1 of 3 members"] if verdict != "byte-identical" else [],
    }
    return ReleaseOutcome("a==1", "different", 1.0, {"release": "a==1", "wheels": [wheel]})


def test_a_rebuilds_report_decides_each_files_state() -> None:
    def f(sha: str, name: str | None = "a-1-py3-none-any.whl", kind: str = "wheel") -> ClosureFile:
        return ClosureFile("a", "1", sha * 64, name, kind)  # type: ignore[arg-type]

    same = _outcome("byte-identical", "1" * 64, "1" * 64)
    assert judge(f("1"), same).state == "reproduced"
    assert judge(f("1", None, "unknown"), same).state == "reproduced"  # matched by digest alone
    differs = _outcome("content-identical", "1" * 64, "2" * 64)
    assert (judge(f("1"), differs).state, judge(f("1"), differs).details) == ("different", ("content: 1 of 3 members",))
    assert judge(f("2"), differs).state == "reproduced"  # the rebuild's own bytes
    other = judge(f("3"), differs)
    assert other.state == "different" and other.reason.startswith("not the published file"), other
    assert judge(f("3", None, "unknown"), differs).state == "unverified"  # no name: cannot tell which file
    assert judge(f("3", "a-1.tar.gz", "sdist"), differs).reason == "sdist: not rebuilt by itself"
    native = judge(f("3", "a-1-cp311-cp311-manylinux_2_17_x86_64.whl"), differs)
    assert native.state == "unverified" and native.reason.startswith("native wheel (cp311-cp311-manylinux_2_17_x86_64)")
    failed = judge(f("1"), ReleaseOutcome("a==1", "not rebuilt", 1.0, None, "a==1: the index has no sdist"))
    assert (failed.state, failed.reason) == ("unverified", "not rebuilt: the index has no sdist")


def test_unverified_pass_only_when_allowed() -> None:
    file = ClosureFile("a", "1", "3" * 64, "a-1.tar.gz", "sdist")
    results = [judge(file, _outcome("byte-identical", "1" * 64, "1" * 64))]
    assert not tally(results).clean and tally(results).unallowed == ("a==1 a-1.tar.gz",)
    assert tally(results, allow=["A"]).clean and tally(results, max_unverified=1).clean


# The whole command, offline.


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("deps")
    links, records, other = top / "links", top / "records", top / "other"
    other.mkdir()
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "SOURCE_DATE_EPOCH": "1700000000"}
    hatch = materialize(FIXTURES / "hatchling", top / "hatch-src", 0o022)
    r = run([sys.executable, "-m", "build", hatch, "-o", links], env=env)
    assert r.code == 0, r.stderr
    flit = materialize(FIXTURES / "flit", top / "flit-src", 0o022)
    r = run([DETPACK, "build", flit, "-o", top / "flit-dist", "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    for p in (top / "flit-dist").glob("fx_flit-1.0.0*"):
        if p.suffix in (".whl", ".gz") and not p.name.endswith(".log.gz"):
            shutil.copy2(p, links)
    # another file under the published wheel's name: one member changed
    altered = other / "fx_flit-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(links / altered.name) as old, zipfile.ZipFile(altered, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, data + b"# altered\n" if info.filename == "fx_flit/__init__.py" else data)
    # a release with a wheel and no sdist anywhere
    nosdist = other / "fx_nosdist-1.0-py3-none-any.whl"
    with zipfile.ZipFile(nosdist, "w") as z:
        z.writestr("fx_nosdist/__init__.py", "")
    pdm = materialize(FIXTURES / "pdm", top / "pdm-src", 0o022)
    r = run([DETPACK, "build", pdm, "-o", records, "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    [pdm_wheel] = records.glob("fx_pdm-*.whl")
    closure = _lock(
        top / "pylock.toml",
        [
            ("fx-hatchling", "1.0.0", links / "fx_hatchling-1.0.0-py3-none-any.whl"),
            ("fx-hatchling", "1.0.0", links / "fx_hatchling-1.0.0.tar.gz"),
            ("fx-flit", "1.0.0", altered),
            ("fx-nosdist", "1.0", nosdist),
            ("fx-pdm", "1.0.0", pdm_wheel),
        ],
    )
    return {"top": top, "links": links, "records": records, "closure": closure, "wheelhouse": wheelhouse}


def _deps(world: dict[str, Path], *extra: object) -> Run:
    argv = [DETPACK, "deps", "verify", world["closure"], "--records", world["records"], "--offline"]
    argv += ["--find-links", world["links"], "--find-links", world["wheelhouse"], "--jobs", "2", *extra]
    return run(argv, env={"XDG_CACHE_HOME": str(world["top"] / "cache")}, timeout=900)


@pytest.mark.slow
@pytest.mark.integration
def test_every_file_gets_its_state_then_the_cache_answers(world: dict[str, Path]) -> None:
    started = time.monotonic()
    r = _deps(world)
    first = time.monotonic() - started
    assert r.code == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    states = [(ln[:10].strip(), ln[12:].split("  (")[0]) for ln in lines[:5]]
    assert states == [
        ("reproduced", "fx-hatchling 1.0.0 fx_hatchling-1.0.0-py3-none-any.whl"),
        ("unverified", "fx-hatchling 1.0.0 fx_hatchling-1.0.0.tar.gz"),
        ("different", "fx-flit 1.0.0 fx_flit-1.0.0-py3-none-any.whl"),
        ("unverified", "fx-nosdist 1.0 fx_nosdist-1.0-py3-none-any.whl"),
        ("built here", "fx-pdm 1.0.0 fx_pdm-1.0.0-py3-none-any.whl"),
    ], r.stdout
    assert "(sdist: not rebuilt by itself)" in lines[1]
    assert "not the published file" in lines[2]
    assert "not rebuilt: " in lines[3] and "no sdist" in lines[3], lines[3]
    assert f"record {world['records']}" in lines[4]
    assert lines[5] == "5 files: 1 built here, 1 reproduced, 1 different, 2 unverified"
    cache = world["top"] / "cache" / "detpack" / "deps"
    cached = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    assert len(cached) == 3  # what a rebuild decided: not the record (read each time), not the sdist

    # From the cache: the same answers with nothing rebuilt (--no-rebuild would say "not tried"),
    # and no cache file written again.
    started = time.monotonic()
    again = _deps(world, "--no-rebuild")
    second = time.monotonic() - started
    assert again.stdout.replace(", cached)", ")") == r.stdout and again.code == 1, again.stdout
    assert "not tried" not in again.stdout and again.stdout.count(", cached)") == 3
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")} == cached
    print(f"first run --jobs 2: {first:.1f} s; from the cache: {second:.1f} s")

    # Exit codes: the altered file is different whatever is allowed; without it, the unverified decide.
    allowed = _deps(world, "--no-rebuild", "--allow-unverified", "fx-hatchling", "--allow-unverified", "FX_nosdist")
    assert allowed.code == 1 and "not allowed unverified" not in allowed.stdout
    flit = json.loads(_deps(world, "--no-rebuild", "--json").stdout)
    assert flit["counts"] == {
        "built here": 1, "reproduced": 1, "different": 1, "unverified": 2, "files": 5,
    }  # fmt: skip
    assert [f["state"] for f in flit["files"]] == ["reproduced", "unverified", "different", "unverified", "built here"]
    assert flit["clean"] is False and len(flit["unallowed"]) == 2

    text = world["closure"].read_text()
    without = world["top"] / "pylock.clean.toml"
    data = __import__("tomllib").loads(text)
    data["packages"] = [p for p in data["packages"] if p["name"] != "fx-flit"]
    without.write_text(tomli_w.dumps(data))
    base = [DETPACK, "deps", "verify", without, "--records", world["records"], "--no-rebuild"]
    env = {"XDG_CACHE_HOME": str(world["top"] / "cache")}
    assert run(base, env=env).code == 1
    assert run([*base, "--max-unverified", "2"], env=env).code == 0
    r = run([*base, "--allow-unverified", "fx-hatchling", "--allow-unverified", "fx-nosdist"], env=env)
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "4 files: 1 built here, 1 reproduced, 0 different, 2 unverified"


@pytest.mark.integration
def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run([DETPACK, "deps", "verify", tmp_path / "pylock.toml"])
    said = f"error: {tmp_path / 'pylock.toml'}: no such closure; give a pylock.toml or a requirements file with --hash"
    assert r.code == 2 and r.stderr.strip() == said, r.stderr
    lock = tmp_path / "pylock.toml"
    lock.write_text(
        'lock-version = "1.0"\ncreated-by = "x"\n[[packages]]\nname = "a"\nversion = "1"\n'
        '[[packages.wheels]]\nname = "a-1-py3-none-any.whl"\npath = "a-1-py3-none-any.whl"\nhashes = {}\n'
    )
    r = run([DETPACK, "deps", "verify", lock])
    assert r.code == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "not a valid PEP 751 lock (At least one hash must be provided" in r.stderr and "re-make it" in r.stderr
    r = run([DETPACK, "deps", "verify", lock, "--offline"])
    assert r.code == 2 and "--find-links" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
