"""``rebuild --pypi`` gives up in seconds where it cannot win, and one release never holds up a list.

Offline, from a --find-links folder made here:
- a release whose wheels are all for platforms (manylinux, macOS) is "not comparable here" from the
  listing alone, in seconds, with nothing downloaded or built; the same sdist beside a pure wheel is
  rebuilt (the perturbation: the decision is the listing's);
- a release whose backend would build for an hour is given up at ``--timeout``, named in the table,
  its processes killed, while the rest of the list is rebuilt.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from conftest import DETPACK, minimal_wheel, run
from detpack.errors import InputError
from detpack.verify.publisher import comparable_here
from detpack.verify.pypi_batch import parse_timeout


def test_the_listing_decides_what_is_comparable_here() -> None:
    comparable_here("a==1", [])  # nothing listed: the download says so
    comparable_here("a==1", ["a-1-cp311-cp311-manylinux_2_17_x86_64.whl", "a-1-py3-none-any.whl"])
    comparable_here("a==1", ["a-1-cp311-cp311-linux_x86_64.whl"])  # a plain wheel, as this machine builds
    with pytest.raises(InputError, match=r"not comparable here: platform wheels only \(2 published, for "):
        comparable_here("a==1", ["a-1-cp311-cp311-manylinux_2_17_x86_64.whl", "a-1-cp311-cp311-macosx_11_0_arm64.whl"])
    with pytest.raises(InputError, match="linux_armv7l"):
        comparable_here("a==1", ["a-1-cp311-cp311-linux_armv7l.whl"])  # another machine's plain wheel


def test_timeouts_are_read() -> None:
    assert parse_timeout("10m") == 600 and parse_timeout("90s") == 90 and parse_timeout("2") == 2
    assert parse_timeout("0") is None and parse_timeout("none") is None
    with pytest.raises(Exception, match="--timeout 'soon'"):
        parse_timeout("soon")


@pytest.mark.slow
def test_a_native_only_release_answers_in_seconds(flit_release: Path, wheelhouse: Path, tmp_path: Path) -> None:
    native = tmp_path / "native"
    native.mkdir()
    shutil.copy2(flit_release / "fx_flit-1.0.0.tar.gz", native)
    wheel = flit_release / "fx_flit-1.0.0-py3-none-any.whl"
    for tag in ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-macosx_11_0_arm64"):
        shutil.copy2(wheel, native / f"fx_flit-1.0.0-{tag}.whl")
    keep = tmp_path / "keep"
    argv = [DETPACK, "rebuild", "--pypi", "fx_flit==1.0.0", "--offline", "--find-links", native]
    started = time.monotonic()
    r = run([*argv, "--find-links", wheelhouse, "-o", keep])
    took = time.monotonic() - started
    assert r.code == 2, r.stdout + r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("error: fx_flit==1.0.0: not comparable here: platform wheels only (2 published, for ")
    assert "macosx_11_0_arm64, manylinux_2_17_x86_64" in line and "--toolchain" in line
    assert took < 10, f"{took:.1f} s"
    assert not keep.exists() or not any(keep.rglob("*")), "nothing downloaded or built"
    # the perturbation: the same sdist beside a pure wheel is rebuilt
    shutil.copy2(wheel, native)
    r = run([*argv, "--find-links", wheelhouse, "-o", keep], timeout=900)
    assert r.code in (0, 1) and "fx_flit==1.0.0: 1 content-identical of 1 wheel" in r.stdout, r.stdout + r.stderr


def _slow_sdist(folder: Path) -> Path:
    """``fx_slow-1.0.tar.gz``: an in-tree backend whose build_wheel sleeps an hour (marked for pgrep)."""
    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "slowbackend"\nbackend-path = ["."]\n'
        '[project]\nname = "fx_slow"\nversion = "1.0"\n',
        "slowbackend.py": "import time\n\ndef build_wheel(wheel_directory, config_settings=None, "
        "metadata_directory=None):\n    time.sleep(3600)  # fx-slow-marker\n\n"
        "def build_sdist(sdist_directory, config_settings=None):\n    raise RuntimeError('no')\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: fx_slow\nVersion: 1.0\n",
    }
    path = folder / "fx_slow-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"fx_slow-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.slow
def test_a_release_that_would_build_for_an_hour_does_not_hold_up_the_list(
    flit_release: Path, wheelhouse: Path, tmp_path: Path
) -> None:
    links = tmp_path / "links"
    shutil.copytree(flit_release, links)
    _slow_sdist(links)
    minimal_wheel(links / "fx_slow-1.0-py3-none-any.whl")
    listing = tmp_path / "releases.txt"
    listing.write_text("fx_slow==1.0\nfx_flit==1.0.0\n")
    argv = [DETPACK, "rebuild", "--pypi", "-r", listing, "--offline", "--find-links", links]
    started = time.monotonic()
    r = run([*argv, "--find-links", wheelhouse, "--timeout", "20s", "--jobs", "2"], timeout=600)
    took = time.monotonic() - started
    assert r.code == 1, r.stdout + r.stderr
    table = r.stdout.splitlines()
    [slow] = [ln for ln in table if ln.startswith("fx_slow==1.0")]
    assert "not rebuilt" in slow and "gave up after 20 s (the time limit for one release: --timeout)" in slow, slow
    assert any(ln.startswith("fx_flit==1.0.0") and "content-identical" in ln for ln in table), r.stdout
    assert table[-1] == "2 releases: 0 byte-identical, 1 content-identical, 0 different, 1 not rebuilt"
    assert took < 300, f"{took:.0f} s"
    # the rebuild and its sandbox (whose command line names the unpacked fx_slow-1.0 it runs in) are gone
    time.sleep(1)
    left = run(["pgrep", "-af", "fx_slow"])
    assert left.stdout.strip() == "", f"processes left behind: {left.stdout}"


def test_an_older_metadata_writer_is_named_for_what_it_is() -> None:
    from detpack.verify import causes

    old = b"Name: x\nRequires-Dist: botocore (<1.45,>=1.44) ; extra == 'crt'\nRequires-Dist: idna\n"
    new = b"Name: x\nRequires-Dist: botocore <1.45,>=1.44 ; extra == 'crt'\nRequires-Dist: idna\n"
    cause, why = causes.explain_content("x-1.dist-info/METADATA", old, new)
    assert cause == causes.OLD_METADATA_WRITER and why.startswith("A writes Requires-Dist as 'name (spec)'")
    assert causes.explain_content("x-1.dist-info/METADATA", old, old.replace(b"1.44", b"1.43"))[0] is None


def _published_beside(writer: str, name: str, wheelhouse: Path, tmp_path: Path) -> tuple[Path, bytes]:
    """A release ``name`` 1.0 (setuptools, one dependency) published by setuptools 75.1.0 with ``writer`` installed
    beside it, no build isolation, a fixed epoch: the --find-links folder holding its sdist and wheel, and the
    wheel's METADATA."""
    src = tmp_path / f"{name}-1.0"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = ["packaging>=20"]\n'
    )
    links = tmp_path / "links"
    links.mkdir()
    venv = tmp_path / "publisher"
    assert run([sys.executable, "-m", "venv", venv]).code == 0
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--find-links", wheelhouse]
    assert run([*pip, "setuptools==75.1.0", writer]).code == 0
    sdist = "from setuptools import build_meta as b; import sys; b.build_sdist(sys.argv[1])"
    r = run([venv / "bin" / "python", "-c", sdist, links], cwd=src, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert r.code == 0, r.stderr
    built = tmp_path / "published"
    r = run(
        [venv / "bin" / "python", "-m", "pip", "wheel", "-q", "--no-index", "--no-deps", "--no-build-isolation",
         "-w", built, links / f"{name}-1.0.tar.gz"],
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )  # fmt: skip
    assert r.code == 0, r.stderr
    [wheel] = built.glob("*.whl")
    shutil.copy2(wheel, links)
    with zipfile.ZipFile(wheel) as zf:
        return links, zf.read(f"{name}-1.0.dist-info/METADATA")


@pytest.mark.slow
def test_a_release_published_with_an_older_metadata_writer_is_rebuilt_with_it(wheelhouse: Path, tmp_path: Path) -> None:
    """A setuptools 75.1.0 release built with wheel 0.38.4 installed beside it (its METADATA says
    ``Requires-Dist: packaging (>=20)``) is byte-identical only when the rebuild installs that writer too;
    the first rebuild differs in METADATA (the perturbation), the one with wheel 0.38.4 does not."""
    links, metadata = _published_beside("wheel==0.38.4", "fx_oldwriter", wheelhouse, tmp_path)
    assert b"Requires-Dist: packaging (>=20)" in metadata
    argv = [DETPACK, "rebuild", "--pypi", "fx_oldwriter==1.0", "--offline", "--find-links", links]
    r = run([*argv, "--find-links", wheelhouse], timeout=900)
    assert r.code == 0, r.stdout + r.stderr
    assert "* rebuilding also with wheel==0.38.4 beside setuptools (the published METADATA writes" in r.stderr
    assert "1 byte-identical of 1 wheel" in r.stdout and "wheel==0.38.4 beside the backend" in r.stdout, r.stdout


@pytest.mark.slow
def test_a_release_published_with_a_newer_metadata_writer_is_rebuilt_with_it(wheelhouse: Path, tmp_path: Path) -> None:
    """A setuptools 75.1.0 release built with a newer wheel installed beside it (as azure-mgmt-dns 9.0.0 was:
    its METADATA says ``Requires-Dist: packaging>=20`` where the wheel 0.43 setuptools vendors writes
    ``packaging >=20``) is byte-identical only when the rebuild installs wheel beside setuptools too; the
    first rebuild differs in METADATA (the perturbation), the one with the newest wheel does not."""
    links, metadata = _published_beside("wheel==0.48.0", "fx_newwriter", wheelhouse, tmp_path)
    assert b"Requires-Dist: packaging>=20\n" in metadata
    argv = [DETPACK, "rebuild", "--pypi", "fx_newwriter==1.0", "--offline", "--find-links", links]
    r = run([*argv, "--find-links", wheelhouse, "-o", tmp_path / "keep"], timeout=900)
    assert r.code == 0, r.stdout + r.stderr
    said = "* rebuilding also with wheel beside setuptools (the published METADATA writes 'name>=1', this build's"
    assert said in r.stderr, r.stderr
    assert "1 byte-identical of 1 wheel" in r.stdout and "wheel beside the backend" in r.stdout, r.stdout


def test_license_files_or_extras_in_another_order_are_named_as_listing_order() -> None:
    """dash-html-components 2.0.0 (License-File: LICENSE.md before LICENSE) and lightning-utilities 0.15.3 (its
    extras read from a folder) publish METADATA whose repeated fields come in the order a folder was listed on
    the publisher's machine; the rebuild's writer is the same release, so the cause is the listing, not it."""
    from detpack.verify import causes

    head = b"Metadata-Version: 2.1\nName: x\nVersion: 1\n"
    theirs = head + b"License-File: LICENSE.md\nLicense-File: LICENSE\nRequires-Dist: a\n\nText\n"
    ours = head + b"License-File: LICENSE\nLicense-File: LICENSE.md\nRequires-Dist: a\n\nText\n"
    cause, why = causes.explain_content("x-1.dist-info/METADATA", theirs, ours)
    assert (
        cause == causes.LISTING_ORDER and "license files in another order (A: LICENSE.md, LICENSE; B: LICENSE," in why
    )
    extras = [
        b'Provides-Extra: typing\nRequires-Dist: mypy; extra == "typing"\n',
        b'Provides-Extra: docs\nRequires-Dist: sphinx; extra == "docs"\nRequires-Dist: furo; extra == "docs"\n',
        b"Provides-Extra: cli\n",
    ]
    theirs = head + b"Requires-Dist: a\n" + b"".join(extras) + b"\nText\n"
    ours = head + b"Requires-Dist: a\n" + b"".join(extras[::-1]) + b"\nText\n"
    cause, why = causes.explain_content("x-1.dist-info/METADATA", theirs, ours)
    assert (
        cause == causes.LISTING_ORDER and "extras in another order (A: typing, docs, cli; B: cli, docs, typing)" in why
    )
    # the perturbations: a field placed elsewhere is the writer's doing; a Requires-Dist moved to another extra, or
    # another description, is not the same metadata at all
    moved = head + b"Requires-Dist: a\nLicense-File: LICENSE\nLicense-File: LICENSE.md\n\nText\n"
    ours = head + b"License-File: LICENSE\nLicense-File: LICENSE.md\nRequires-Dist: a\n\nText\n"
    assert causes.explain_content("x-1.dist-info/METADATA", moved, ours)[0] == causes.BACKEND_VERSION
    plain = head + b"License-File: LICENSE\nRequires-Dist: a\nLicense-File: LICENSE.md\n\nText\n"
    assert (
        causes.explain_content(
            "x-1.dist-info/METADATA",
            plain,
            head + b"License-File: LICENSE.md\nRequires-Dist: a\nLicense-File: LICENSE\n\nText\n",
        )[0]
        != causes.LISTING_ORDER
    )
    theirs = head + b"Requires-Dist: a\n" + b"".join(extras) + b"\nText\n"
    ours = head + b"Requires-Dist: a\n" + b"".join(extras[::-1]) + b"\nText\n"
    crossed = theirs.replace(b'sphinx; extra == "docs"', b'sphinx; extra == "typing"')
    assert causes.explain_content("x-1.dist-info/METADATA", crossed, ours)[0] != causes.LISTING_ORDER
    other = ours.replace(b"Text", b"Other")
    assert causes.explain_content("x-1.dist-info/METADATA", theirs, other)[0] != causes.LISTING_ORDER


def _sdist_with(tmp_path: Path, pyproject: str | None) -> Path:
    sdist = tmp_path / "old-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        files = {"old-1.0/setup.py": "from setuptools import setup\nsetup()\n"}
        if pyproject is not None:
            files["old-1.0/pyproject.toml"] = pyproject
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tf.addfile(info, io.BytesIO(text.encode()))
    return sdist


@pytest.mark.parametrize(
    ("pyproject", "uploaded", "said"),
    [
        (None, "2018-07-30", True),  # google-cloud 0.34.0: no pyproject.toml
        ("[tool.black]\nline-length = 99\n", "2018-07-30", True),  # a pyproject.toml without [build-system]
        ('[build-system]\nrequires = ["setuptools>=30"]\n', "2018-07-30", False),  # it names its own
        (None, "2019-03-01", False),  # setuptools 40.8.0 was on the index by then
    ],
)
def test_a_release_from_before_the_pep517_fallback_says_why_it_is_not_rebuilt(
    pyproject: str | None, uploaded: str, said: bool, tmp_path: Path
) -> None:
    import calendar

    from detpack.verify.pypi import before_the_fallback

    when = calendar.timegm(time.strptime(uploaded, "%Y-%m-%d"))
    why = before_the_fallback("old==1.0", when, _sdist_with(tmp_path, pyproject))
    assert (why is not None) == said, why
    if why is not None:
        assert why.startswith(f"old==1.0: not rebuilt as of its upload ({uploaded}): its sdist names no build")
        assert "setuptools>=40.8.0" in why and "\n" not in why
