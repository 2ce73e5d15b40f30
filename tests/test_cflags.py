"""C extensions compiled as ``python -m build`` compiles them, plus the path map.

detpack maps its build root away in every compiler run (``-ffile-prefix-map``) through the compiler
shims on the hooks' PATH; it never puts its own flags in place of the ones the build would use
(sysconfig's ``-O3 -DNDEBUG …`` under setuptools). So on one machine the machine code of a C
extension (the ``.text`` section of its ``.so``) is byte for byte what ``python -m build`` makes,
and the provenance records the flags each compiler run had. A user's own ``CFLAGS`` (passed with
``--pass-env``) adds as it does under ``python -m build``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conftest import DETPACK, FIXTURES, materialize, require_tool, run

pytestmark = [pytest.mark.slow]
EPOCH = "1700000000"
MARKUPSAFE = "markupsafe==2.1.5"


def _offline(wheelhouse: Path) -> dict[str, str]:
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse), "SOURCE_DATE_EPOCH": EPOCH}


def _text_section(wheel: Path, member_suffix: str, tmp: Path) -> bytes:
    """The machine code (``.text``) of the one extension module in ``wheel`` ending in ``member_suffix``."""
    objcopy = require_tool("objcopy")
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(member_suffix)]
        so = tmp / f"{wheel.stem}.so"
        so.write_bytes(zf.read(name))
    text = tmp / f"{wheel.stem}.text"
    subprocess.run([objcopy, "-O", "binary", "--only-section=.text", so, text], check=True)
    data = text.read_bytes()
    assert len(data) > 100, f"{name}: no machine code"
    return data


def _compiler_runs(outdir: Path) -> list[dict[str, Any]]:
    """Every compiler run the provenance records (each tool's ``runs``)."""
    [prov] = outdir.glob("*.provenance.json")
    deps = json.loads(prov.read_bytes())["predicate"]["buildDefinition"]["resolvedDependencies"]
    return [r for d in deps if d.get("annotations", {}).get("kind") == "tool" for r in d["annotations"].get("runs", [])]


def _sysconfig_flags() -> list[str]:
    """What setuptools takes from sysconfig for a compile (CFLAGS; -O3, -DNDEBUG where Python has them)."""
    return shlex.split(str(sysconfig.get_config_var("CFLAGS") or ""))


def _python_m_build(src: Path, outdir: Path, wheelhouse: Path, *extra: str, env: dict[str, str] | None = None) -> Path:
    argv = [sys.executable, "-m", "build", "--wheel", src, "-o", outdir, *extra]
    r = run(argv, env={**_offline(wheelhouse), **(env or {})})
    assert r.code == 0, r.stderr
    [wheel] = outdir.glob("*.whl")
    return wheel


def _detpack_build(src: Path, outdir: Path, wheelhouse: Path, *extra: str, env: dict[str, str] | None = None) -> Path:
    argv = [DETPACK, "build", src, "-o", outdir, "--find-links", wheelhouse, "--offline", "-q", *extra]
    r = run(argv, env={"SOURCE_DATE_EPOCH": EPOCH, **(env or {})})
    assert r.code == 0, r.stderr
    [wheel] = outdir.glob("*.whl")
    return wheel


def test_the_fixture_extension_is_the_machine_code_python_m_build_makes(tmp_path: Path, wheelhouse: Path) -> None:
    require_tool("bwrap")
    src = materialize(FIXTURES / "cext", tmp_path / "src", 0o022)
    theirs = _python_m_build(src, tmp_path / "pmb", wheelhouse)
    ours = _detpack_build(src, tmp_path / "detpack", wheelhouse)
    assert _text_section(ours, ".so", tmp_path) == _text_section(theirs, ".so", tmp_path)

    runs = _compiler_runs(tmp_path / "detpack")
    compiles = [r for r in runs if r["kind"] == "compile"]
    assert compiles, runs
    for flags in (r["flags"] for r in compiles):
        assert "-ffile-prefix-map=/tmp/detpack-build=." in flags, flags
        for wanted in _sysconfig_flags():
            assert wanted in flags, (wanted, flags)  # the build's own flags, none replaced
    assert any(r["kind"] == "link" for r in runs), runs
    if "-O3" in _sysconfig_flags():
        assert any("-O3" in r["flags"] and "-DNDEBUG" in r["flags"] for r in compiles), compiles


def test_a_users_cflags_add_to_the_build_as_they_do_under_python_m_build(tmp_path: Path, wheelhouse: Path) -> None:
    require_tool("bwrap")
    src = materialize(FIXTURES / "cext", tmp_path / "src", 0o022)
    env = {"CFLAGS": "-O1 -DFX_USER_FLAG=1"}
    theirs = _python_m_build(src, tmp_path / "pmb", wheelhouse, env=env)
    ours = _detpack_build(src, tmp_path / "detpack", wheelhouse, "--pass-env", "CFLAGS", env=env)
    plain = _detpack_build(src, tmp_path / "plain", wheelhouse)
    text = _text_section(ours, ".so", tmp_path)
    assert text == _text_section(theirs, ".so", tmp_path)
    assert text != _text_section(plain, ".so", tmp_path)  # the perturbation: -O1 made other code
    compiles = [r for r in _compiler_runs(tmp_path / "detpack") if r["kind"] == "compile"]
    assert any("-DFX_USER_FLAG=1" in r["flags"] and "-O1" in r["flags"] for r in compiles), compiles


@pytest.mark.network
def test_a_real_c_extension_sdist_is_the_machine_code_python_m_build_makes(tmp_path: Path, wheelhouse: Path) -> None:
    """MarkupSafe's speedups, from its sdist on the index (held out: not a fixture of ours)."""
    require_tool("bwrap")
    got = tmp_path / "sdist"
    r = run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "-d", got, MARKUPSAFE])
    assert r.code == 0, r.stderr
    [sdist] = got.glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        assert any(n.endswith("_speedups.c") for n in tf.getnames())
    theirs = _python_m_build(sdist, tmp_path / "pmb", wheelhouse)
    ours = _detpack_build(sdist, tmp_path / "detpack", wheelhouse)
    assert _text_section(ours, ".so", tmp_path) == _text_section(theirs, ".so", tmp_path)
    compiles = [r for r in _compiler_runs(tmp_path / "detpack") if r["kind"] == "compile"]
    assert compiles and all(set(_sysconfig_flags()) <= set(r["flags"]) for r in compiles), compiles
