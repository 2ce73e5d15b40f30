"""Attacks on the reuse of unlocked builds (``reuse``, ``envcache``, ``provision``): a hostile backend,
a hostile find-links folder. Each test is the attacker's; it passes when the attack does no harm."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

from conftest import ROOT, in_tree_backend, run
from detpack.build import envcache, reuse

DETPACK = (sys.executable, "-m", "detpack")  # with PYTHONPATH: this checkout's, not an installed one


def _build(src: Path, out: Path, links: Path, root: Path, *extra: object) -> str:
    r = run(
        [*DETPACK, "build", src, "-o", out, "--find-links", links, "--offline", "--installer", "uv", "-v", *extra],
        env={"DETPACK_BUILD_ROOT": str(root), "PYTHONPATH": str(ROOT)},  # this checkout's detpack
    )
    assert r.code == 0, r.stderr
    return r.stderr


#: A backend that plants ``compileall.py`` where installs start (the build root, which hooks may write),
#: then asks for one more requirement, so the environment is extended and its bytecode made again by
#: ``python -m compileall`` there, with write access to the environment that is kept for other builds.
PLANTING_BACKEND = textwrap.dedent(
    """
    import os
    from setuptools import build_meta as _real
    from setuptools.build_meta import *  # noqa: F403

    PLANTED = '''
    import glob, sys
    for sp in glob.glob(sys.prefix + "/lib/python*/site-packages"):
        with open(sp + "/poisoned_by_backend.py", "w") as f:
            f.write("BACKDOOR = True\\\\n")
    '''

    def get_requires_for_build_sdist(config_settings=None):
        top = os.path.dirname(os.environ["HOME"])  # the build root, as hooks see it
        for name in ("compileall.py", "runpy.py"):
            try:
                with open(os.path.join(top, name), "w") as f:
                    f.write(PLANTED)
            except OSError:
                pass
        return ["wheel"]
    """
)


def test_a_module_planted_where_installs_start_never_runs_in_the_environment_kept(
    tmp_path: Path, wheelhouse: Path
) -> None:
    root = tmp_path / "root"
    src = in_tree_backend(tmp_path / "src", "planting_backend", PLANTING_BACKEND, name="fx-compile-planter")
    log = _build(src, tmp_path / "a", wheelhouse, root)
    assert "made cached build environment files-" in log, log
    assert log.count("compileall") >= 2, log  # the environment was extended and compiled again
    poisoned = sorted(str(p) for p in (root / "cache").rglob("poisoned_by_backend*"))
    assert poisoned == [], poisoned


def _facts(asked: list[str], variables: dict[str, str]) -> list[str] | None:
    return reuse.facts(asked, python=["3.11"], installer=sys.executable, constraints=None, variables=variables)


def test_a_find_links_file_swapped_with_its_name_size_and_mtime_kept_resolves_again(tmp_path: Path) -> None:
    """A folder's owner swaps a wheel for another of the same size and puts its mtime back: the
    remembered resolution (and the environment kept for its files) must not stand for the new folder."""
    links = tmp_path / "links"
    links.mkdir()
    wheel = links / "fx_swapped-1.0-py3-none-any.whl"
    wheel.write_bytes(b"A" * 100)
    before = wheel.stat()
    settings = {"UV_FIND_LINKS": str(links), "UV_OFFLINE": "1", "UV_NO_INDEX": "1"}
    first = _facts(["fx-swapped"], settings)
    wheel.write_bytes(b"B" * 100)
    os.utime(wheel, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert wheel.stat().st_size == before.st_size and wheel.stat().st_mtime_ns == before.st_mtime_ns
    assert _facts(["fx-swapped"], settings) != first
    # and one replaced by a rename (another file, its times set to the old one's)
    other = tmp_path / "other.whl"
    other.write_bytes(b"C" * 100)
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = _facts(["fx-swapped"], settings)
    os.replace(other, wheel)
    os.utime(wheel, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _facts(["fx-swapped"], settings) != second


def test_a_remote_find_links_page_ages_like_an_index_even_with_no_index(tmp_path: Path) -> None:
    """--no-index with a find-links URL still asks a server whose page changes: its answers age."""
    for settings in (
        {"UV_NO_INDEX": "1", "UV_FIND_LINKS": "https://wheels.example/simple/"},
        {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "https://wheels.example/simple/"},
    ):
        assert reuse.uses_index(settings), settings
    assert not reuse.uses_index({"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(tmp_path)})


def test_a_direct_reference_to_a_local_file_that_changed_resolves_again(tmp_path: Path) -> None:
    """``[build-system] requires = ["pkg @ file:///…/pkg.whl"]``: the file is part of what was resolved."""
    wheel = tmp_path / "fx_direct-1.0-py3-none-any.whl"
    wheel.write_bytes(b"A" * 100)
    asked = [f"fx-direct @ {wheel.as_uri()}"]
    first = _facts(asked, {"UV_OFFLINE": "1", "UV_NO_INDEX": "1"})
    assert first is not None
    wheel.write_bytes(b"B" * 101)
    assert _facts(asked, {"UV_OFFLINE": "1", "UV_NO_INDEX": "1"}) != first


#: Asks for an older ``wheel`` than ``[build-system] requires`` resolved to: wheel 0.48 needs packaging,
#: wheel 0.38 nothing; the environment, extended, still holds packaging when it is kept.
NARROWING_BACKEND = textwrap.dedent(
    """
    from flit_core.buildapi import *  # noqa: F403

    def get_requires_for_build_sdist(config_settings=None):
        return ["wheel<0.40"]

    def get_requires_for_build_wheel(config_settings=None):
        return ["wheel<0.40"]
    """
)


def test_a_kept_environment_holds_only_the_files_it_is_kept_for(tmp_path: Path, wheelhouse: Path) -> None:
    """An entry is taken by any build that resolves to its files: a package an earlier resolution of the
    same build chose, and a later one dropped, must not be in it (a later build would run it unrecorded)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "narrowing_backend.py").write_text(NARROWING_BACKEND)
    (src / "fx_narrowed.py").write_text('"""Narrowed."""\n')
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4", "wheel"]\nbuild-backend = "narrowing_backend"\n'
        'backend-path = ["."]\n[project]\nname = "fx-narrowed"\nversion = "1.0"\ndescription = "x"\n'
        '[tool.flit.sdist]\ninclude = ["narrowing_backend.py"]\n'
    )
    root = tmp_path / "root"
    _build(src, tmp_path / "a", wheelhouse, root)
    entries = sorted((root / "cache").glob("files-*"))
    assert entries
    for entry in entries:
        said = json.loads((entry / "detpack-env.json").read_text())["installed"]
        names = {s.split("==")[0] for s in said}
        present = {
            p.name.split("-")[0].lower().replace("_", "-") for p in entry.glob("lib/python*/site-packages/*.dist-info")
        }
        assert present == names, (entry.name, said, present)


GROWING_BACKEND = textwrap.dedent(
    """
    from flit_core.buildapi import *  # noqa: F403

    def get_requires_for_build_sdist(config_settings=None):
        return ["wheel<0.40"]
    """
)


def _flit_project(src: Path, name: str, backend: str | None) -> Path:
    src.mkdir()
    module = name.replace("-", "_")
    (src / f"{module}.py").write_text('"""A module."""\n')
    build = 'build-backend = "flit_core.buildapi"\n'
    if backend is not None:
        (src / "growing_backend.py").write_text(backend)
        build = 'build-backend = "growing_backend"\nbackend-path = ["."]\n'
    (src / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["flit_core>=3.4"]\n{build}'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndescription = "x"\n'
        '[tool.flit.sdist]\ninclude = ["growing_backend.py"]\n'
    )
    return src


def test_an_environment_taken_from_another_build_can_be_extended(tmp_path: Path, wheelhouse: Path) -> None:
    """A build takes the environment another project left ([build-system] requires alike), and its backend
    asks for more, not resolved before: detpack's own resolution files are no hook's change."""
    root = tmp_path / "root"
    _build(_flit_project(tmp_path / "one", "fx-one", None), tmp_path / "a", wheelhouse, root)
    log = _build(_flit_project(tmp_path / "two", "fx-two", GROWING_BACKEND), tmp_path / "b", wheelhouse, root)
    assert "reusing cached build environment files-" in log.split("building wheel", 1)[0], log


def test_a_constraints_file_that_names_another_file_is_no_key_for_a_stale_resolution(tmp_path: Path) -> None:
    """``-c inner.txt`` inside the constraints file: a pin added there (a version withdrawn for a flaw)
    must not leave the resolution made without it standing."""
    inner = tmp_path / "inner.txt"
    inner.write_text("wheel<1\n")
    outer = tmp_path / "constraints.txt"
    outer.write_text(f"-c {inner}\nsetuptools<90\n")
    settings = {"UV_OFFLINE": "1", "UV_NO_INDEX": "1"}

    def facts() -> list[str] | None:
        return reuse.facts(["wheel"], python=["3.11"], installer=sys.executable, constraints=outer, variables=settings)

    first = facts()
    inner.write_text("wheel<0.40\n")
    assert first is None or facts() != first


def test_a_constraints_file_named_by_a_variable_that_changed_resolves_again(tmp_path: Path) -> None:
    """PIP_CONSTRAINT is passed through (as UV_CONSTRAINT for uv): the file it names, not only its name,
    is part of the question."""
    pins = tmp_path / "pins.txt"
    pins.write_text("wheel<1\n")
    for name in ("UV_CONSTRAINT", "PIP_CONSTRAINT"):
        pins.write_text("wheel<1\n")
        settings = {"UV_OFFLINE": "1", "UV_NO_INDEX": "1", name: str(pins)}
        first = _facts(["wheel"], settings)
        pins.write_text("wheel<0.40\n")
        assert first is None or _facts(["wheel"], settings) != first, name


def _wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal valid wheel of ``files`` (path: text), RECORD hashed."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        **files,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    out = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as z:
        for path, text in {**files, f"{dist}.dist-info/RECORD": "\n".join(record) + "\n"}.items():
            z.writestr(path, text)
    return out


#: A build requirement whose .pth runs in every interpreter of the environment that imports site, and
#: writes into the environment wherever it can (hooks see it read-only; its bytecode is made writable).
PTH = (
    "import os, sys, glob; [open(os.path.join(p, 'pth_wrote_%d.py' % os.getpid()), 'w').close() "
    "for p in glob.glob(sys.prefix + '/lib/python*/site-packages') if os.access(p, os.W_OK)]\n"
)


def test_a_build_requirements_pth_never_writes_the_environment_kept(tmp_path: Path, wheelhouse: Path) -> None:
    links = tmp_path / "links"
    shutil.copytree(wheelhouse, links)
    _wheel(links, "fx-pth-writer", "1.0", {"fx_pth_writer.pth": PTH})
    src = _flit_project(tmp_path / "src", "fx-pth-user", None)
    pyproject = src / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"flit_core>=3.4"', '"flit_core>=3.4", "fx-pth-writer"'))
    root = tmp_path / "root"
    log = _build(src, tmp_path / "a", links, root)
    assert "made cached build environment files-" in log, log
    assert sorted(str(p) for p in root.rglob("pth_wrote_*")) == []


def test_evicting_environments_keeps_the_remembered_resolutions(tmp_path: Path) -> None:
    """Builds that each leave an environment (nine different requirement sets) evict the oldest
    environments, never the folder of remembered resolutions nor anything else that is no environment."""
    cache = tmp_path / "cache"
    reuse.remember(
        cache, ["asked x"], reuse.Resolution((reuse.ChosenFile("x", "1", "a" * 64, "file:///x"),), 1.0, False)
    )
    (cache / "images").mkdir()
    for folder in ("resolutions", "images"):
        os.utime(cache / folder, (1, 1))  # older than any environment
    for n in range(envcache.KEEP + 2):
        entry = cache / f"files-{n:032x}"
        entry.mkdir()
        os.utime(entry, (100 + n, 100 + n))
    envcache._evict(cache)
    assert (cache / "resolutions").is_dir() and (cache / "images").is_dir()
    assert reuse.recall(cache, ["asked x"], ttl=600) is not None
    assert len(list(cache.glob("files-*"))) == envcache.KEEP
