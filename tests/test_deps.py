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

from conftest import DETPACK, FIXTURES, Run, materialize, minimal_wheel, run
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
    r = run([DETPACK, "deps", "verify", tmp_path / "missing.tar.gz"])
    said = f"error: {tmp_path / 'missing.tar.gz'}: no such layer file; give LAYER.tar.gz as detpack layer wrote it"
    assert r.code == 2 and r.stderr.startswith(said) and len(r.stderr.splitlines()) == 1, r.stderr
    r = run([DETPACK, "deps", "verify", lock, "--offline"])
    assert r.code == 2 and "--find-links" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_evidence_travels_into_an_image_and_the_dependencies_rule_judges_it(
    world: dict[str, Path], tmp_path: Path, registry: str
) -> None:
    """A closure verified with --attest and -o; a layer made from its wheels with --evidence; the image's
    signed provenance and SBOMs name each wheel's state and evidence; ``verify IMAGE --policy`` with a
    ``[dependencies]`` rule passes only when the unverified wheel is allowed by name, naming it otherwise;
    and the image itself, read back as a closure, gives the same states."""
    from detpack.verify.deps_rule import shipped_wheels

    links, records = world["links"], world["records"]
    hatch_wheel = links / "fx_hatchling-1.0.0-py3-none-any.whl"
    [pdm_wheel] = records.glob("fx_pdm-*.whl")
    nosdist = minimal_wheel(tmp_path / "fx_lonely-1.0-py3-none-any.whl")  # no sdist anywhere: unverified
    lock = _lock(
        tmp_path / "pylock.toml",
        [("fx-hatchling", "1.0.0", hatch_wheel), ("fx-lonely", "1.0", nosdist), ("fx-pdm", "1.0.0", pdm_wheel)],
    )
    for name in ("rebuilder", "release"):
        assert run([DETPACK, "keygen", "-o", tmp_path / name]).code == 0
    out = tmp_path / "evidence"
    argv = [DETPACK, "deps", "verify", lock, "--records", records, "--offline", "--find-links", links]
    argv += ["--find-links", world["wheelhouse"], "--attest", tmp_path / "rebuilder", "-o", out, "--refresh"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = run(argv, env=env, timeout=900)
    assert r.code == 1 and "not allowed unverified: fx-lonely==1.0" in r.stdout, r.stdout + r.stderr
    [report_path] = out.glob("pylock.toml.*.closure.json")
    report = json.loads(report_path.read_bytes())
    states = {f["name"]: (f["state"], f["evidence"]) for f in report["files"]}
    assert [s for s, _ in states.values()] == ["reproduced", "unverified", "built here"]
    attestation = states["fx-hatchling"][1]
    assert attestation["kind"] == "attestation" and _sha256(out / attestation["name"]) == attestation["sha256"]
    assert states["fx-pdm"][1]["kind"] == "record" and states["fx-lonely"][1] is None
    # the same run again answers from the cache, attestation included (its bytes kept with the result)
    again = run([*argv[:-3], "-o", tmp_path / "again"], env=env, timeout=900)
    assert again.stdout.count(", cached)") == 2, again.stdout  # the record is read each time
    [second] = (tmp_path / "again").glob("*.closure.json")
    assert [f["evidence"] for f in json.loads(second.read_bytes())["files"]] == [e for _, e in states.values()]

    layer = tmp_path / "app.tar.gz"
    wheels = [hatch_wheel, nosdist, pdm_wheel]
    r = run([DETPACK, "layer", "-o", layer, "--wheel", *wheels, "--evidence", report_path, "--sbom"])
    assert r.code == 0, r.stderr
    layout = tmp_path / "img"
    r = run([DETPACK, "image", "-o", f"oci:{layout}:1", "--layer", layer, "--sign", tmp_path / "release", "--sbom"])
    assert r.code == 0, r.stderr
    statement = json.loads((tmp_path / "img.1.provenance.json").read_bytes())
    shipped = {w.name: w.state for w in shipped_wheels(statement)}
    assert shipped == {"fx-hatchling": "reproduced", "fx-lonely": "unverified", "fx-pdm": "built here"}
    [inputs] = [rd["annotations"]["inputs"] for rd in statement["predicate"]["buildDefinition"]["resolvedDependencies"]]
    [hatch_input] = [i for i in inputs if i["name"] == hatch_wheel.name]
    assert hatch_input["annotations"]["evidence"]["statement"]["digest"]["sha256"] == attestation["sha256"]
    cdx = json.loads((tmp_path / "img.1.cdx.json").read_bytes())
    props = {c["name"]: {p["name"]: p["value"] for p in c.get("properties", [])} for c in cdx["components"]}
    assert props["fx-hatchling"]["detpack:evidence:state"] == "reproduced"
    assert props["fx-hatchling"]["detpack:evidence:attestation:sha256"] == attestation["sha256"]
    assert props["fx-lonely"]["detpack:evidence:state"] == "unverified"
    assert props["fx-pdm"]["detpack:evidence:state"] == "built here"
    spdx = (tmp_path / "img.1.spdx.json").read_text()
    assert "evidence: reproduced" in spdx and f"sha256:{attestation['sha256']}" in spdx

    pub = (tmp_path / "release.pub").read_text()
    strict = tmp_path / "strict.toml"
    strict.write_text(tomli_w.dumps({"keys": [pub], "dependencies": {"require": "reproduced-or-built"}}))
    r = run([DETPACK, "verify", f"oci:{layout}:1", "--policy", strict])
    assert r.code == 1, r.stdout + r.stderr
    [line] = [ln for ln in r.stdout.splitlines() if "dependencies" in ln]
    assert line.strip().startswith(
        "FAIL  dependencies: 3 wheels: 1 built here, 1 reproduced, 0 different, 1 unverified"
    )
    assert f"{nosdist.name}: unverified (" in line and "not allowed" in line and hatch_wheel.name not in line
    allowing = tmp_path / "allowing.toml"
    allowing.write_text(
        tomli_w.dumps(
            {"keys": [pub], "dependencies": {"require": "reproduced-or-built", "allow-unverified": ["FX_lonely"]}}
        )
    )
    r = run([DETPACK, "verify", f"oci:{layout}:1", "--policy", allowing])
    assert r.code == 0, r.stdout + r.stderr
    assert "ok    dependencies: 3 wheels" in r.stdout and "allowed by name: fx-lonely" in r.stdout

    # With rebuilder-keys in the policy the statement's word is not enough: "reproduced" needs a trusted
    # rebuilder's attestation of those bytes (given with --attestation); another key's does not count.
    for who, passes in (("rebuilder", True), ("release", False)):
        trusting = tmp_path / f"trusting-{who}.toml"
        rules = {"require": "reproduced-or-built", "allow-unverified": ["fx-lonely"]}
        trusting.write_text(
            tomli_w.dumps(
                {"keys": [pub], "rebuilder-keys": [(tmp_path / f"{who}.pub").read_text()], "dependencies": rules}
            )
        )
        base = [DETPACK, "verify", f"oci:{layout}:1", "--policy", trusting]
        r = run([*base, "--attestation", out / attestation["name"]])
        assert (r.code == 0) is passes, r.stdout + r.stderr
        if not passes:
            assert f"{hatch_wheel.name}: unverified (claimed reproduced, but no attestation" in r.stdout, r.stdout
    r = run([*base[:-1], tmp_path / "trusting-rebuilder.toml"])  # no attestation given
    assert r.code == 1 and "claimed reproduced, but no attestation" in r.stdout, r.stdout
    # Two independent rebuilders required: one attestation is not enough, a second key's makes it.
    assert run([DETPACK, "keygen", "-o", tmp_path / "second"]).code == 0
    twice = tmp_path / "twice.toml"
    keys = [(tmp_path / f"{k}.pub").read_text() for k in ("rebuilder", "second")]
    rules = {"require": "reproduced-or-built", "allow-unverified": ["fx-lonely"], "require-reproduced": 2}
    twice.write_text(tomli_w.dumps({"keys": [pub], "rebuilder-keys": keys, "dependencies": rules}))
    r = run([DETPACK, "verify", f"oci:{layout}:1", "--policy", twice, "--attestation", out / attestation["name"]])
    assert r.code == 1 and "reproduced by 1 of 2 rebuilder keys required (keyid " in r.stdout, r.stdout
    second = tmp_path / "second-out"
    r = run([*argv[:-5], "--attest", tmp_path / "second", "-o", second], env=env, timeout=900)
    [again_attestation] = second.glob("fx_hatchling-*.rebuild.*.intoto.jsonl")
    given = ["--attestation", out / attestation["name"], "--attestation", again_attestation]
    r = run([DETPACK, "verify", f"oci:{layout}:1", "--policy", twice, *given])
    assert r.code == 0, r.stdout + r.stderr
    # A trusted rebuilder that got other bytes is never outvoted: the wheel is different, whatever else says so.
    other = _disagreeing(out / attestation["name"], tmp_path / "second", tmp_path / "disagree.intoto.jsonl")
    r = run([DETPACK, "verify", f"oci:{layout}:1", "--policy", twice, *given, "--attestation", other])
    assert r.code == 1 and f"{hatch_wheel.name}: different (a rebuild by keyid " in r.stdout, r.stdout

    # A store gate with the same rules: the image, pushed by reference, is refused naming the wheel, then
    # promoted once the environment's policy allows it by name.
    store = tmp_path / "store"
    assert run([DETPACK, "store", "--store", store, "push", f"oci:{layout}:1", "--name", "app:1"]).code == 0
    assert run([DETPACK, "store", "--store", store, "policy", "prod", strict]).code == 0
    r = run([DETPACK, "store", "--store", store, "promote", "app:1", "--to", "prod"])
    assert r.code == 1 and "dependencies" in r.stdout + r.stderr and nosdist.name in r.stdout + r.stderr, r.stderr
    assert run([DETPACK, "store", "--store", store, "policy", "prod", allowing]).code == 0
    r = run([DETPACK, "store", "--store", store, "promote", "app:1", "--to", "prod"])
    assert r.code == 0, r.stdout + r.stderr
    # the gate with rebuilder-keys counts the store's attestations about the shipped wheels
    trusting = tmp_path / "trusting-rebuilder.toml"
    assert run([DETPACK, "store", "--store", store, "policy", "staging", trusting]).code == 0
    r = run([DETPACK, "store", "--store", store, "promote", "app:1", "--to", "staging"])
    assert r.code == 1 and "claimed reproduced, but no attestation" in r.stdout + r.stderr, r.stdout + r.stderr
    r = run([DETPACK, "store", "--store", store, "push", "--attestation", out / attestation["name"]])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "store", "--store", store, "promote", "app:1", "--to", "staging"])
    assert r.code == 0, r.stdout + r.stderr
    assert run([DETPACK, "store", "--store", store, "verify"]).code == 0

    # The image as a closure: the wheels its provenance records, each judged again (from the cache here).
    r = run([DETPACK, "deps", "verify", f"oci:{layout}:1", "--records", records, "--no-rebuild", "--json"], env=env)
    image = json.loads(r.stdout)
    assert (
        image["closure"]["kind"] == "image"
        and image["closure"]["sha256"] == statement["subject"][0]["digest"]["sha256"]
    )
    assert {f["name"]: f["state"] for f in image["files"]} == shipped
    # ... and from a registry: the provenance attached to the pushed image (found through its referrers)
    assert run([DETPACK, "push", f"oci:{layout}:1", f"{registry}/deps/app"]).code == 0
    r = run(
        [DETPACK, "deps", "verify", f"{registry}/deps/app:1", "--records", records, "--no-rebuild", "--json"], env=env
    )
    pulled = json.loads(r.stdout)
    assert pulled["closure"]["kind"] == "image" and pulled["closure"]["sha256"] == image["closure"]["sha256"]
    assert [(f["name"], f["sha256"], f["state"]) for f in pulled["files"]] == [
        (f["name"], f["sha256"], f["state"]) for f in image["files"]
    ]


def _disagreeing(attestation: Path, key: Path, target: Path) -> Path:
    """``attestation`` re-signed by ``key`` as a rebuild that gave other bytes (what a rebuilder says when it
    cannot reproduce the file)."""
    import base64

    from detpack.digest import canonical_json
    from detpack.provenance import signing

    payload = json.loads(base64.b64decode(json.loads(attestation.read_text())["payload"]))
    for result in payload["predicate"]["results"]:
        result["matches"] = False
        result["rebuilt"]["sha256"] = "0" * 64
    payload["predicate"]["verdict"] = "different"
    target.write_bytes(signing.sign(canonical_json(payload), signing.load_private_key(key)).to_json())
    return target
