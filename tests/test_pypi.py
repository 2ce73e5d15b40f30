"""``detpack rebuild --pypi``: real releases on the index (marked network), and offline from --find-links."""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, Run, materialize, run, unavailable
from detpack.verify.publisher import (
    backend_pin,
    backend_pins,
    extension_always_built,
    faketime_library,
    speedup_switches,
)
from detpack.verify.pypi import record_problems


@pytest.mark.network
@pytest.mark.slow
def test_flit_release_is_byte_identical() -> None:
    # idna 3.10 was built by flit 3.9.0 without SOURCE_DATE_EPOCH (generated files at 2016-01-01).
    r = run([DETPACK, "rebuild", "--pypi", "idna==3.10"], timeout=900)
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "idna==3.10: 1 byte-identical of 1 wheel"
    assert "pinned flit_core==3.9.0; epoch unset" in r.stdout


@pytest.mark.network
@pytest.mark.slow
def test_build_requirements_are_dated_to_the_wheels_upload() -> None:
    # urllib3 2.2.3 pins hatch-vcs 0.4.0, whose setuptools-scm is unpinned: today's writes another
    # _version.py. Resolved as the index was when the wheel was uploaded, the rebuild matches.
    r = run([DETPACK, "rebuild", "--pypi", "urllib3==2.2.3"], timeout=900)
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "urllib3==2.2.3: 1 byte-identical of 1 wheel"
    assert "was uploaded 2024-09-12" in r.stderr and "resolved as the index had them then" in r.stderr


@pytest.mark.network
@pytest.mark.slow
def test_what_the_published_file_name_reveals_is_used(tmp_path: Path) -> None:
    listing = tmp_path / "releases.txt"
    listing.write_text(
        "simplejson==3.19.3  # pure wheel published, C speedups in the sdist\npytz==2024.2  # universal\n"
    )
    r = run([DETPACK, "rebuild", "--pypi", "-r", listing, "--json", "-q"], timeout=1800)
    report = {rel["release"]: rel for rel in json.loads(r.stdout)["releases"]}
    simplejson = report["simplejson==3.19.3"]["wheels"][0]
    assert simplejson["wheel"] == "simplejson-3.19.3-py3-none-any.whl" and simplejson["switch"] == "DISABLE_SPEEDUPS=1"
    assert simplejson["verdict"] in ("byte-identical", "content-identical"), simplejson
    pytz = report["pytz==2024.2"]["wheels"][0]
    assert pytz["wheel"] == "pytz-2024.2-py2.py3-none-any.whl" and pytz["switch"] == "-C--build-option=--universal"


@pytest.mark.network
def test_unknown_release_is_one_line_exit_2() -> None:
    r = run([DETPACK, "rebuild", "--pypi", "idna==0.0.0.0.1"], timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert r.code == 2 and len(lines) == 1 and "idna==0.0.0.0.1: the index has no sdist" in lines[0], r.stderr


def test_generator_lines_map_to_backend_pins() -> None:
    assert backend_pin("flit 3.9.0") == "flit_core==3.9.0"
    assert backend_pin("hatchling 1.25.0") == "hatchling==1.25.0"
    assert backend_pin("setuptools (75.1.0)") == "setuptools==75.1.0"
    assert backend_pin("bdist_wheel (0.43.0)") == "wheel==0.43.0"
    assert backend_pin("poetry-core 1.9.0") == "poetry-core==1.9.0"
    assert backend_pin("scikit-build-core 1.0.3") == "scikit-build-core==1.0.3"  # pybind11's
    assert backend_pin("maturin (1.7.4)") == "maturin==1.7.4"
    assert backend_pin("pdm-backend (2.4.3)") == "pdm-backend==2.4.3"
    assert backend_pin("uv 0.8.3") == "uv_build==0.8.3"
    assert backend_pin("some-other-tool 1.0") is None
    # wheel's own bdist_wheel ran under a setuptools that still delegated to it (before 70.1)
    assert backend_pins("bdist_wheel (0.37.1)") == ("wheel==0.37.1", "setuptools<70.1")


def _sdist_with_setup_py(path: Path, text: str) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        data = text.encode()
        info = tarfile.TarInfo("proj-1.0/setup.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return path


def test_speedup_switches_are_read_from_setup_py(tmp_path: Path) -> None:
    simplejson_like = """
import os, sys
DISABLE_SPEEDUPS = IS_PYPY or os.environ.get('DISABLE_SPEEDUPS') == '1'
CIBUILDWHEEL = os.environ.get('CIBUILDWHEEL', False)
if os.getenv("MSGPACK_PUREPYTHON"): pass
if os.environ["HOME"]: pass
"""
    sdist = _sdist_with_setup_py(tmp_path / "proj-1.0.tar.gz", simplejson_like)
    assert speedup_switches(sdist) == ("DISABLE_SPEEDUPS=1", "MSGPACK_PUREPYTHON=1")
    assert speedup_switches(_sdist_with_setup_py(tmp_path / "none.tar.gz", "import setuptools\n")) == ()
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    assert speedup_switches(tmp_path / "broken.tar.gz") == ()
    websockets_like = """
import os
if os.environ.get("BUILD_EXTENSION") == "no":
    ext_modules = []
else:
    ext_modules = [Extension("x", optional=os.environ.get("BUILD_EXTENSION") != "yes")]
"""
    protobuf_like = "import os\nfrom setuptools import Extension, setup\nsetup(ext_modules=[Extension('m', ['m.c'])])\n"
    assert extension_always_built(_sdist_with_setup_py(tmp_path / "pb.tar.gz", protobuf_like))
    assert not extension_always_built(_sdist_with_setup_py(tmp_path / "ws2.tar.gz", websockets_like))
    # the value the code itself compares with to turn the extension off, not a guessed "false"
    assert speedup_switches(_sdist_with_setup_py(tmp_path / "ws.tar.gz", websockets_like)) == ("BUILD_EXTENSION=no",)


def test_a_file_name_difference_is_said_as_what_it_is() -> None:
    from detpack.verify.pypi import name_mismatch

    tag = name_mismatch("pytz-1-py2.py3-none-any.whl", "pytz-1-py3-none-any.whl", "bdist_wheel (0.37.1)")
    assert "tagged py2.py3-none-any, this build makes py3-none-any: a tag difference, not a platform one" in tag
    assert "platform-specific" not in tag
    platform = name_mismatch("m-1-cp311-cp311-manylinux_2_17_x86_64.whl", "m-1-cp311-cp311-linux_x86_64.whl", "")
    assert "is for cp311-cp311-manylinux_2_17_x86_64; this machine builds cp311-cp311-linux_x86_64" in platform


# Offline: a "release" made here (an sdist and its wheel in a folder), fetched by pip from
# --find-links with --offline, exactly as it would be from an index.


@pytest.fixture(scope="module")
def release(flit_release: Path) -> Path:
    return flit_release


def _offline(links: Path, wheelhouse: Path, *extra: object) -> Run:
    argv = [DETPACK, "rebuild", "--pypi", "fx_flit==1.0.0", "--offline", "--find-links", links]
    return run([*argv, "--find-links", wheelhouse, *extra], timeout=900)


@pytest.mark.slow
def test_offline_from_find_links_keeps_the_files_in_outdir(release: Path, wheelhouse: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    r = _offline(release, wheelhouse, "-o", keep)
    # detpack's wheel was normalized (its own deflate), the rebuild keeps flit's bytes: same content
    assert r.code == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "fx_flit==1.0.0: 1 content-identical of 1 wheel", r.stdout
    assert sorted(p.relative_to(keep).as_posix() for p in keep.rglob("*") if p.is_file()) == [
        "published/fx_flit-1.0.0-py3-none-any.whl",
        "published/fx_flit-1.0.0.tar.gz",
        "rebuilt/fx_flit-1.0.0-py3-none-any.whl",
        "rebuilt/fx_flit-1.0.0.build.log.gz",  # the rebuild's own log
        "rebuilt/fx_flit-1.0.0.provenance.json",  # the rebuild's own record
    ]
    assert f"kept in {keep}" in r.stdout
    # without -v, which members differ is said all the same
    members = [ln for ln in r.stdout.splitlines() if ln.startswith("    members: ")]
    assert members == ["    members: (member order), fx_flit-1.0.0.dist-info/RECORD"], r.stdout


@pytest.mark.slow
def test_a_different_wheel_names_its_members_without_verbose(release: Path, wheelhouse: Path, tmp_path: Path) -> None:
    links = tmp_path / "links"
    links.mkdir()
    shutil.copy2(release / "fx_flit-1.0.0.tar.gz", links)
    wheel = links / "fx_flit-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(release / wheel.name) as old, zipfile.ZipFile(wheel, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, data + b"# tampered\n" if info.filename == "fx_flit/__init__.py" else data)
    r = _offline(links, wheelhouse)
    assert r.code == 1, r.stdout + r.stderr
    assert "1 different of 1 wheel" in r.stdout
    [members] = [ln for ln in r.stdout.splitlines() if ln.startswith("    members: ")]
    # the tampered module, and the RECORD that (unlike the rebuilt one) does not hash it
    assert members == "    members: fx_flit/__init__.py, fx_flit-1.0.0.dist-info/RECORD", r.stdout
    # and the `wheel` project's own reader says which member its RECORD does not vouch for
    record = "    the published wheel fails its own RECORD check: Hash mismatch for file 'fx_flit/__init__.py'"
    assert record in r.stdout.splitlines(), r.stdout


def test_offline_without_find_links_is_one_error(tmp_path: Path) -> None:
    r = run([DETPACK, "rebuild", "--pypi", "fx_flit==1.0.0", "--offline"])
    assert r.code == 2 and len(r.stderr.splitlines()) == 1 and "--find-links" in r.stderr, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run([DETPACK, "rebuild", "--pypi", "fx_flit==1.0.0", "--offline", "--find-links", empty], timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("* ")]  # progress steps aside
    assert r.code == 2 and len(lines) == 1 and str(empty) in lines[0] and "offline" in lines[0], r.stderr


def test_member_list_is_capped() -> None:
    from detpack.cli.rebuild import member_list

    assert member_list(["a", "b"]) == "a, b"
    names = [f"m{i:02}" for i in range(15)]
    assert member_list(names) == ", ".join(names[:10]) + " … 5 more"


def test_the_wheel_projects_record_check_names_what_record_does_not_vouch_for(wheelhouse: Path, tmp_path: Path) -> None:
    [good] = sorted(wheelhouse.glob("flit_core-*.whl"))[-1:]
    assert record_problems(good) == ()
    changed = tmp_path / good.name
    with zipfile.ZipFile(good) as old, zipfile.ZipFile(changed, "w") as new:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, data + b"#" if info.filename == "flit_core/__init__.py" else data)
        new.writestr("flit_core/extra.py", b"x = 1\n")
    assert record_problems(changed) == (
        "Hash mismatch for file 'flit_core/__init__.py'",
        "No hash found for file 'flit_core/extra.py'",
    )


# Many releases at once: a folder of "releases" made here, one byte-identical (python -m build's
# own wheel, with SOURCE_DATE_EPOCH), one content-identical (detpack's normalized wheel), one
# that is not there at all.


@pytest.mark.slow
def test_many_releases_at_once_end_with_a_table_and_json(release: Path, wheelhouse: Path, tmp_path: Path) -> None:
    links = tmp_path / "links"
    src = materialize(FIXTURES / "hatchling", tmp_path / "hatch-src", 0o022)
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "SOURCE_DATE_EPOCH": "1700000000"}
    r = run([sys.executable, "-m", "build", src, "-o", links], env=env)
    assert r.code == 0, r.stderr
    for p in release.iterdir():
        shutil.copy2(p, links)
    listing = tmp_path / "releases.txt"
    listing.write_text(
        "# a local OSS Rebuild\nfx_hatchling==1.0.0\n\nfx_flit==1.0.0  # detpack-normalized\nfx-missing==2.0\n"
    )
    argv = [DETPACK, "rebuild", "--pypi", "-r", listing, "--offline", "--find-links", links, "--find-links", wheelhouse]
    r = run([*argv, "--jobs", "3"], timeout=900)
    assert r.code == 1, r.stdout + r.stderr
    steps = [ln for ln in r.stderr.splitlines() if ln.startswith("* [")]
    assert len(steps) == 3, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["release", "verdict", "wheel", "/", "why"]
    assert lines[1].split()[:3] == ["fx_hatchling==1.0.0", "byte-identical", "fx_hatchling-1.0.0-py3-none-any.whl"]
    assert lines[2].split()[:3] == ["fx_flit==1.0.0", "content-identical", "fx_flit-1.0.0-py3-none-any.whl"]
    [missing] = [ln for ln in lines if ln.startswith("fx-missing==2.0")]
    assert "not rebuilt" in missing and "no sdist of this release in --find-links" in missing
    assert lines[-1] == "3 releases: 1 byte-identical, 1 content-identical, 0 different, 1 not rebuilt"

    r = run([*argv, "--json", "-q"], timeout=900)
    report = json.loads(r.stdout)
    assert report["summary"] == {
        "byte-identical": 1, "content-identical": 1, "different": 0, "not rebuilt": 1, "releases": 3,
    }  # fmt: skip
    by = {rel["release"]: rel for rel in report["releases"]}
    assert by["fx_hatchling==1.0.0"]["wheels"][0]["pinned"] == "hatchling==1.33.0"
    assert by["fx_hatchling==1.0.0"]["wheels"][0]["epoch"] == 1700000000
    assert by["fx_flit==1.0.0"]["wheels"][0]["explanation"]  # what differs, said
    assert "no sdist" in by["fx-missing==2.0"]["reason"] and by["fx-missing==2.0"]["wheels"] == []


def test_a_bad_release_list_is_one_line(tmp_path: Path) -> None:
    listing = tmp_path / "releases.txt"
    listing.write_text("idna==3.10\nrequests>=2\n")
    r = run([DETPACK, "rebuild", "--pypi", "-r", listing])
    assert r.code == 2 and r.stderr.strip() == (
        f"error: {listing}:2: 'requests>=2' is not an exact release; write NAME==VERSION, one a line"
    ), r.stderr
    r = run([DETPACK, "rebuild", "--pypi", "-r", tmp_path / "nope.txt"])
    assert r.code == 2 and "no such release list" in r.stderr
    r = run([DETPACK, "rebuild", "--pypi", "idna==3.10", "-r", listing])
    assert r.code == 2 and "not both" in r.stderr


def test_the_publishers_clock_and_offset_are_read_from_the_wheel(tmp_path: Path) -> None:
    from detpack.verify.publisher import publisher_clock

    # A publisher in UTC+02:00 without SOURCE_DATE_EPOCH: sources keep their sdist mtime, written as
    # local zip times; the generated .dist-info files carry the build's local time.
    mtime = 1_723_600_000  # 2024-08-14 01:46:40 UTC
    sdist = tmp_path / "proj-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in ("proj/__init__.py", "proj/a.py"):
            info = tarfile.TarInfo(f"proj-1.0/{name}")
            info.size, info.mtime = 1, mtime
            tf.addfile(info, io.BytesIO(b"x"))
    wheel = tmp_path / "proj-1.0-py3-none-any.whl"
    local = lambda t: tuple(time.gmtime(t + 7200))[:6]  # noqa: E731
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("proj/__init__.py", "proj/a.py"):
            zf.writestr(zipfile.ZipInfo(name, local(mtime)), b"x")
        for name in ("METADATA", "WHEEL", "RECORD"):
            zf.writestr(zipfile.ZipInfo(f"proj-1.0.dist-info/{name}", local(1_723_645_686)), b"x")
    clock = publisher_clock(wheel, sdist)
    assert clock is not None
    assert (clock.utc, clock.offset) == (1_723_645_686, 7200)
    assert clock.tz() == "<+0200>-02:00" and clock.faketime() == "@2024-08-14 16:28:06"
    assert clock.describe() == "clock 2024-08-14 14:28:06 UTC+02:00"
    # libfaketime started there, in that zone, gives the publisher's local time back
    library = faketime_library()
    if library is None:
        unavailable("libfaketime is not installed (apt-get install faketime; .ci/run does)")
    env = {"LD_PRELOAD": str(library), "FAKETIME": clock.faketime(), "TZ": clock.tz()}
    r = run([sys.executable, "-c", "import time; print(int(time.time()))"], env=env)
    assert abs(int(r.stdout) - clock.utc) <= 2, r.stdout + r.stderr


def test_the_offset_is_read_through_a_src_layout(tmp_path: Path) -> None:
    from detpack.verify.publisher import publisher_clock

    # packaging 24.2 (flit, src/ layout) was published from UTC+05:30: its sources are at
    # src/packaging/ in the sdist and packaging/ in the wheel, 5 h 30 min later in zip time.
    mtime = 1_731_059_232  # 2024-11-08 09:47:12 UTC
    sdist = tmp_path / "proj-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name in ("src/proj/__init__.py", "src/proj/a.py", "tests/a.py"):
            info = tarfile.TarInfo(f"proj-1.0/{name}")
            info.size, info.mtime = 1, mtime
            tf.addfile(info, io.BytesIO(b"x"))
    wheel = tmp_path / "proj-1.0-py3-none-any.whl"
    local = tuple(time.gmtime(mtime + 19_800))[:6]
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("proj/__init__.py", "proj/a.py"):  # proj/a.py: one sdist path ends in it
            zf.writestr(zipfile.ZipInfo(name, local), b"x")
        zf.writestr(zipfile.ZipInfo("proj-1.0.dist-info/METADATA", (2016, 1, 1, 0, 0, 0)), b"x")
    clock = publisher_clock(wheel, sdist)
    assert clock is not None and clock.offset == 19_800 and clock.tz() == "<+0530>-05:30"
    # flit's generated files carry a fixed 2016-01-01, older than the sources: not a clock, the zone only
    assert not clock.real and clock.describe() == "timezone UTC+05:30"


def test_the_cmake_release_is_read_from_an_exported_targets_file(tmp_path: Path) -> None:
    from detpack.verify.pypireplay import cmake_series

    def wheel(policy: bytes) -> Path:
        path = tmp_path / f"w{len(list(tmp_path.iterdir()))}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("p/share/cmake/p/pTargets.cmake", b"# Generated by CMake\ncmake_policy(PUSH)\n" + policy)
        return path

    # pybind11 3.0.1 was published with CMake 3.31 (it writes 3.29); CMake 3.25 writes 3.23
    assert cmake_series(wheel(b"cmake_policy(VERSION 3.0.0...3.29)\n")) == "==3.31.*"
    assert cmake_series(wheel(b"cmake_policy(VERSION 2.8.3...3.23)\n")) == "==3.25.*"
    assert cmake_series(wheel(b"cmake_policy(VERSION 3.0.0...3.31)\n")) == ">=4"  # CMake 4.1
    assert cmake_series(wheel(b"cmake_policy(SET CMP0057 NEW)\n")) is None


def test_metadata_and_cmake_differences_are_named() -> None:
    from detpack.verify import causes

    a = b"Metadata-Version: 2.1\nName: six\nDownload-URL: x\nLicense: MIT\n\nbody\n\n\n"
    b = b"Metadata-Version: 2.1\nName: six\nLicense: MIT\nDownload-URL: x\n\nbody\n"
    cause, evidence = causes.explain_content("six-1.dist-info/METADATA", a, b)
    assert cause == causes.BACKEND_VERSION and "same metadata fields" in evidence
    cause, _ = causes.explain_content("p/share/cmake/pConfigVersion.cmake", b"set(A 1)\n", b"set(A 2)\n")
    assert cause == causes.CMAKE_VERSION


@pytest.mark.slow
def test_rebuild_pypi_attest_signs_what_the_rebuild_found(release: Path, wheelhouse: Path, tmp_path: Path) -> None:
    """``--attest KEY``: a signed statement that this rebuilder got other bytes (content-identical: the
    published wheel here is detpack's normalized one, the rebuild keeps flit's), with its environment."""
    import base64
    import json

    from detpack.provenance import reader, signing
    from detpack.provenance.attestation import RebuildClaim

    assert run([DETPACK, "keygen", "-o", tmp_path / "rebuilder"]).code == 0
    keep = tmp_path / "keep"
    r = _offline(release, wheelhouse, "-o", keep, "--attest", tmp_path / "rebuilder")
    assert r.code == 1, r.stdout + r.stderr
    (written,) = keep.glob("fx_flit-1.0.0-py3-none-any.rebuild.*.intoto.jsonl")
    assert f"attested fx_flit-1.0.0-py3-none-any.whl: content-identical, in {written}" in r.stdout
    attestation = reader.read_file(written)
    assert attestation.envelope is not None
    signing.verify(attestation.envelope, signing.load_public_key(tmp_path / "rebuilder.pub"), written)
    predicate = json.loads(base64.b64decode(json.loads(written.read_text())["payload"]))["predicate"]
    published = release / "fx_flit-1.0.0-py3-none-any.whl"
    assert attestation.subjects[0].sha256 == _sha256(published)
    assert predicate["origin"]["kind"] == "pypi" and predicate["origin"]["digest"]["sha256"] == _sha256(
        release / "fx_flit-1.0.0.tar.gz"
    )
    (result,) = predicate["results"]
    assert result["matches"] is False and result["rebuilt"]["sha256"] == _sha256(keep / "rebuilt" / published.name)
    assert predicate["verdict"] == "content-identical"
    assert predicate["rebuilder"]["sandbox"]["kind"] == "bubblewrap"
    assert any(t["name"] == "python" for t in predicate["rebuilder"]["toolchain"])
    claim = RebuildClaim.of(attestation)
    assert claim.reproduced == frozenset() and claim.differed == {_sha256(published)}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
