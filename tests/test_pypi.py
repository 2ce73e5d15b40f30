"""``detpack rebuild --pypi``: real releases on the index (marked network), and offline from --find-links."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, Run, materialize, run
from detpack.verify.pypi import backend_pin, record_problems


@pytest.mark.network
@pytest.mark.slow
def test_flit_release_is_byte_identical() -> None:
    # idna 3.10 was built by flit 3.9.0 without SOURCE_DATE_EPOCH (generated files at 2016-01-01).
    r = run([DETPACK, "rebuild", "--pypi", "idna==3.10"], timeout=900)
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "idna==3.10: 1 byte-identical of 1 wheel"
    assert "pinned flit_core==3.9.0; epoch unset" in r.stdout


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
    assert backend_pin("some-other-tool 1.0") is None


# Offline: a "release" made here (an sdist and its wheel in a folder), fetched by pip from
# --find-links with --offline, exactly as it would be from an index.


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    links = tmp_path_factory.mktemp("links")
    src = materialize(FIXTURES / "flit", links.parent / "flit-src", 0o022)
    r = run([DETPACK, "build", src, "-o", links, "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    for p in links.glob("*.provenance.json"):
        p.unlink()
    assert sorted(p.name for p in links.iterdir()) == ["fx_flit-1.0.0-py3-none-any.whl", "fx_flit-1.0.0.tar.gz"]
    return links


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
