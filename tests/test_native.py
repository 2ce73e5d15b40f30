"""The native toolchain in the record: which compilers ran, what they read, and drift named.

A C extension's provenance names the compiler driver, assembler and linker that ran (path,
version line, sha256, owning package), the system packages whose headers and libraries they
read, the OS release and glibc; a pure build names none. Another compiler first on PATH (here:
a wrapper that reports another version, put over /usr/local/bin in a mount namespace of the
test's own, so nothing on the machine changes) changes the record, and diff and rebuild say so
before any byte difference.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from conftest import DETPACK, FIXTURES, materialize, require_tool, run, sha256


def _native(out: Path) -> dict[str, dict[str, Any]]:
    [prov] = out.glob("*.provenance.json")
    deps = json.loads(prov.read_bytes())["predicate"]["buildDefinition"]["resolvedDependencies"]
    kinds = {"tool", "system files", "os", "libc"}
    return {d["name"]: d for d in deps if d.get("annotations", {}).get("kind") in kinds}


def _build(src: Path, out: Path, wheelhouse: Path, *prefix: str) -> None:
    argv = [*prefix, DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "-q"]
    r = run(argv)
    assert r.code == 0, r.stderr


@pytest.fixture(scope="module")
def cext_builds(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> tuple[Path, Path, Path]:
    """The C extension built twice on this machine, and its source."""
    require_tool("bwrap")
    require_tool("dpkg-query")  # the owning packages come from dpkg (Debian's CI has it)
    tmp = tmp_path_factory.mktemp("native")
    src = materialize(FIXTURES / "cext", tmp / "src", 0o022)
    _build(src, tmp / "a", wheelhouse)
    _build(src, tmp / "b", wheelhouse)
    return src, tmp / "a", tmp / "b"


def test_a_c_extension_names_its_compiler_assembler_linker_and_system(cext_builds: tuple[Path, Path, Path]) -> None:
    _, out, _ = cext_builds
    native = _native(out)
    cc = str(sysconfig.get_config_var("CC")).split()[0]  # what setuptools runs
    compiler = next(d for d in native.values() if cc in d["annotations"].get("invokedAs", []))
    real = os.path.realpath(shutil.which(cc) or cc)
    assert compiler["annotations"]["path"] == real
    assert compiler["digest"] == {"sha256": sha256(Path(real))}
    assert compiler["annotations"]["version"].split()[-1][0].isdigit(), compiler  # "gcc (Debian ...) 12.2.0"
    assert compiler["uri"].startswith("pkg:deb/"), compiler["uri"]
    assert "cc1" in compiler["annotations"]["components"]  # the compiler proper, with its own digest
    for tool in ("as", "ld"):
        entry = native[tool]
        assert entry["annotations"]["version"].startswith(("GNU", "LLD")), entry
        assert entry["digest"]["sha256"] == sha256(Path(entry["annotations"]["path"]))
    libc = next(d for d in native.values() if d["annotations"]["kind"] == "libc")
    assert libc["name"] == "glibc" and libc["annotations"]["package"]["name"] == "libc6", libc
    assert native["os"]["annotations"]["ID"], native["os"]
    headers = {name for name, d in native.items() if "headers" in d.get("annotations", {})}
    assert "libc6-dev" in headers, sorted(native)  # <stdio.h> and friends, through Python.h
    for entry in native.values():  # nothing of the build root or a temporary directory in the record
        text = json.dumps(entry)
        assert "/runs/" not in text and "/tmp/cc" not in text, text


def test_the_record_is_the_same_for_two_builds_on_one_machine(cext_builds: tuple[Path, Path, Path]) -> None:
    _, a, b = cext_builds
    assert _native(a) and _native(a) == _native(b)


def test_a_pure_build_names_no_compiler(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    _build(src, tmp_path / "out", wheelhouse)
    assert _native(tmp_path / "out") == {}


def test_another_compiler_first_on_path_changes_the_record_and_is_named(
    cext_builds: tuple[Path, Path, Path], tmp_path: Path, wheelhouse: Path
) -> None:
    bwrap = require_tool("bwrap")
    src, original, again = cext_builds
    cc = str(sysconfig.get_config_var("CC")).split()[0]
    real = shutil.which(cc, path="/usr/bin:/bin")
    assert real is not None
    local = tmp_path / "local-bin"  # seen as /usr/local/bin, first on a build's PATH
    local.mkdir()
    wrapper = local / cc
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in --version) echo "{cc} (detpack test wrapper) 99.1.0"; exit 0;; esac\n'
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    overlay = (bwrap, "--dev-bind", "/", "/", "--bind", str(local), "/usr/local/bin", "--")
    _build(src, tmp_path / "wrapped", wheelhouse, *overlay)
    compiler = _native(tmp_path / "wrapped")[
        next(n for n, d in _native(original).items() if cc in d["annotations"].get("invokedAs", []))
    ]
    assert compiler["annotations"]["path"] == "/usr/local/bin/" + cc
    assert compiler["annotations"]["version"].endswith("99.1.0") and compiler["uri"] == f"pkg:generic/{cc}@99.1.0"

    r = run([DETPACK, "diff", original, tmp_path / "wrapped"])
    lines = r.stdout.splitlines()
    assert lines[1].startswith("toolchain differs: ") and "vs 99.1.0" in lines[1], r.stdout
    control = run([DETPACK, "diff", original, again])  # the perturbation: without it, nothing is named
    assert control.code == 0 and "toolchain" not in control.stdout, control.stdout

    [prov] = original.glob("*.provenance.json")
    argv = [*overlay, DETPACK, "rebuild", prov, "--source", src, "--find-links", wheelhouse, "--offline"]
    r = run(argv)
    assert r.code == 0, r.stderr  # the wrapper runs the same compiler: same bytes, other record
    said = r.stdout.splitlines()
    assert said[1].startswith("  toolchain differs from the record: ") and "vs 99.1.0" in said[1], r.stdout


def test_drift_names_packages_tools_and_the_os() -> None:
    from detpack.verify.provenance_compare import toolchain_drift

    def statement(*deps: dict[str, Any]) -> dict[str, Any]:
        return {"predicate": {"buildDefinition": {"resolvedDependencies": [{"name": "source"}, *deps]}}}

    def tool(name: str, line: str, sha: str) -> dict[str, Any]:
        return {"name": name, "digest": {"sha256": sha}, "annotations": {"kind": "tool", "version": line}}

    ssl = {"name": "libssl-dev", "annotations": {"kind": "system files", "version": "3.0.15-1", "headers": ["/x.h"]}}
    os_a = {"name": "os", "annotations": {"kind": "os", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}}
    a = statement(tool("gcc", "gcc (Debian 12.2.0-14) 12.2.0", "aa" * 32), ssl, os_a)
    b = statement(
        tool("gcc", "gcc (Debian 12.2.0-14) 12.2.0", "bb" * 32),
        {**ssl, "annotations": {**ssl["annotations"], "version": "3.0.17-1"}},
        {"name": "os", "annotations": {"kind": "os", "PRETTY_NAME": "Ubuntu 24.04 LTS"}},
        tool("cmake", "cmake version 3.28.3", "cc" * 32),
    )
    assert toolchain_drift(a, b) == (
        "cmake 3.28.3 only in B",
        "gcc: 12.2.0 in both, but another binary (sha256 aaaaaaaaaaaa vs bbbbbbbbbbbb)",
        "libssl-dev: 3.0.15-1 vs 3.0.17-1",
        "os: Debian GNU/Linux 12 (bookworm) vs Ubuntu 24.04 LTS",
    )
    assert toolchain_drift(a, a) == ()


def test_drift_names_another_canonical_policy_and_deflate() -> None:
    from detpack.verify.provenance_compare import toolchain_drift

    def statement(policy: str, deflate: str | None) -> dict[str, Any]:
        deps: list[dict[str, Any]] = [{"name": "source"}]
        if deflate is not None:
            name, version = deflate.split()
            deps.append({"name": "deflate", "annotations": {"implementation": name, "version": version}})
        definition = {"internalParameters": {"policyVersion": policy}, "resolvedDependencies": deps}
        return {"predicate": {"buildDefinition": definition}}

    now = statement("5", "zlib-ng 2.3.3")
    assert toolchain_drift(statement("4", None), now) == (
        "detpack's canonical policy: 4 vs 5 (other policies write other bytes by design; rebuild with the "
        "detpack that made the record)",
    )
    assert toolchain_drift(statement("5", "zlib-ng 2.3.4"), now) == ("deflate: zlib-ng 2.3.4 vs zlib-ng 2.3.3",)
    assert toolchain_drift(now, now) == ()


def test_notes_a_backend_forged_run_nothing_on_the_host(tmp_path: Path) -> None:
    """The notes are written inside the build: a path to a host file written there is neither run
    nor hashed (only what the sandbox shows counts, and tools are probed inside it)."""
    from detpack.build import native, sandbox

    bwrap = sandbox.locate()
    assert isinstance(bwrap, str), bwrap
    root, fixed = tmp_path / "private", Path("/tmp/detpack-build")
    marker = tmp_path / "ran"
    evil = tmp_path / "host" / "gcc"
    evil.parent.mkdir()
    evil.write_text(f"#!/bin/sh\ntouch {marker}\necho 'gcc 1.0'\n")
    evil.chmod(0o755)
    (root / native.NOTES).mkdir(parents=True)
    (root / native.NOTES / "tools").write_text(f"gcc\t{evil}\n")
    box = sandbox.make(bwrap, [(root, fixed)], network=False)
    assert native.collect(root, fixed, probe=box.probe, visible=box.sees) == ()
    assert not marker.exists()
    # the perturbation: trusted as a build without a sandbox is, the same notes run the file
    assert any(d["name"] == "gcc" for d in native.collect(root, fixed)) and marker.exists()
