"""Same bytes on another machine: another libz, and another CPU architecture.

Another libz: zlib-ng 2.3.3 in compat mode (built by `make machines` from the zlib-ng
sdist's own sources), bound over the system's ``libz.so.1`` for a whole process tree with
bubblewrap; the interpreter then reports ``zlib.ZLIB_RUNTIME_VERSION`` ending in
``zlib-ng``, as on Fedora 40+. Another architecture: Debian's arm64 CPython 3.11 run by
``qemu-aarch64-static`` from a sysroot of extracted packages, with the aarch64 wheel of
the pinned zlib-ng. Each test also proves its perturbation: what the interpreter's zlib
writes (the previous policy's source of bytes) differs there.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import known_answers
import pytest

from conftest import DETPACK, FIXTURES, MODULES, ROOT, require_tool, run, unavailable

MACHINES = ROOT / ".machines"
NG_LIBZ = MACHINES / "zlib-ng-compat" / "libz.so.1"
ARM64_ROOT = MACHINES / "arm64-root"
ARM64_SITE = MACHINES / "arm64-site"

pytestmark = pytest.mark.slow

#: The interpreter's own zlib on a fixed input: what policy 4 and earlier wrote with.
INTERPRETER_ZLIB = (
    "import hashlib, json, platform, zlib, sys; from detpack.archive import codec; "
    "print(json.dumps({'machine': platform.machine(), 'zlib': zlib.ZLIB_RUNTIME_VERSION, "
    "'interpreter': hashlib.sha256(zlib.compress(codec.known_input(), 6)).hexdigest()}))"
)


def need_machine(path: Path) -> Path:
    if not path.exists():
        unavailable(f"{path} is missing: run `make machines` (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def ng() -> tuple[str, ...]:
    """argv prefix that runs a command with zlib-ng's libz.so.1 in place of the system's."""
    bwrap = require_tool("bwrap")
    system = Path("/lib") / f"{platform.machine()}-linux-gnu" / "libz.so.1"
    return (bwrap, "--dev-bind", "/", "/", "--bind", str(need_machine(NG_LIBZ).resolve()), str(system.resolve()), "--")


def _json(argv: Sequence[str | os.PathLike[str]], **kwargs: object) -> dict[str, str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def test_known_answers_under_zlib_ng_libz(ng: tuple[str, ...], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    here = _json([sys.executable, "-c", INTERPRETER_ZLIB], env=env)
    there = _json([*ng, sys.executable, "-c", INTERPRETER_ZLIB], env=env)
    assert there["zlib"].endswith("zlib-ng") and not here["zlib"].endswith("zlib-ng"), (here, there)
    assert there["interpreter"] != here["interpreter"]  # the perturbation: the host's zlib writes other bytes

    script = ROOT / "tests" / "known_answers.py"
    normal = _json([sys.executable, script, tmp_path / "a"], env=env)
    other = _json([*ng, sys.executable, script, tmp_path / "b"], env=env)
    # the noisy inputs were written by each interpreter's zlib: they differ, the outputs do not
    assert (tmp_path / "a" / "demo-1.0.tar.gz").read_bytes() != (tmp_path / "b" / "demo-1.0.tar.gz").read_bytes()
    assert _member_streams(tmp_path / "a" / "demo-1.0-py3-none-any.whl") != _member_streams(
        tmp_path / "b" / "demo-1.0-py3-none-any.whl"
    )
    assert other == normal == known_answers.GOLDEN


def _member_streams(wheel: Path) -> dict[str, bytes]:
    """Each deflated member's compressed bytes (the backend's deflate, before detpack)."""
    out = {}
    with zipfile.ZipFile(wheel) as zf, wheel.open("rb") as raw:
        for info in zf.infolist():
            if info.compress_type == zipfile.ZIP_DEFLATED:
                raw.seek(info.header_offset + 26)
                name_len, extra_len = int.from_bytes(raw.read(2), "little"), int.from_bytes(raw.read(2), "little")
                raw.seek(name_len + extra_len, 1)
                out[info.filename] = raw.read(info.compress_size)
    return out


def _build(src: Path, out: Path, wheelhouse: Path, *prefix: str) -> dict[str, str]:
    r = run([*prefix, DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    return {p.name: p.read_bytes().hex() for p in sorted(out.iterdir()) if p.name.endswith((".whl", ".tar.gz"))}


def _raw_outputs(out: Path) -> dict[str, str]:
    [prov] = out.glob("*.provenance.json")
    statement = json.loads(prov.read_text())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    zlib = next(d for d in deps if d["name"] == "zlib")["annotations"]["version"]
    byproducts = statement["predicate"]["runDetails"]["byproducts"]
    wheels = {b["name"]: b["digest"]["sha256"] for b in byproducts if b["name"].endswith(".whl")}
    assert len(wheels) == 1, byproducts
    return {"zlib": zlib, **wheels}


def test_every_fixture_builds_the_same_bytes_under_zlib_ng_libz(
    ng: tuple[str, ...], tmp_path: Path, wheelhouse: Path
) -> None:
    raw_differs = []
    for fixture in MODULES:
        src = tmp_path / fixture
        shutil.copytree(FIXTURES / fixture, src)
        normal = _build(src, tmp_path / f"{fixture}-normal", wheelhouse)
        other = _build(src, tmp_path / f"{fixture}-ng", wheelhouse, *ng)
        assert sorted(normal) == sorted(other) and len(normal) == 2, (fixture, sorted(normal))
        assert normal == other, f"{fixture}: canonical outputs differ under zlib-ng's libz"
        here, there = _raw_outputs(tmp_path / f"{fixture}-normal"), _raw_outputs(tmp_path / f"{fixture}-ng")
        assert there["zlib"].endswith("zlib-ng") and not here["zlib"].endswith("zlib-ng")
        if {k: v for k, v in here.items() if k != "zlib"} != {k: v for k, v in there.items() if k != "zlib"}:
            raw_differs.append(fixture)
    # the perturbation reached every backend: its own wheel (before detpack) differs under zlib-ng's
    # libz, while two normal builds give the same raw wheel (so the difference is the libz's)
    assert raw_differs == list(MODULES), raw_differs
    _build(tmp_path / "flit", tmp_path / "flit-again", wheelhouse)
    assert _raw_outputs(tmp_path / "flit-again") == _raw_outputs(tmp_path / "flit-normal")


def test_tarball_and_layer_are_the_same_under_zlib_ng_libz(ng: tuple[str, ...], tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURES / "cext", tree)
    (tree / "blob.bin").write_bytes(os.urandom(1 << 20) + b"text " * 200_000)
    outputs: dict[str, list[bytes]] = {}
    for tag, prefix in (("normal", ()), ("ng", ng)):
        tar, layer = tmp_path / f"{tag}.tar.gz", tmp_path / f"{tag}-layer.tar.gz"
        r = run([*prefix, DETPACK, "tar", tree, "-o", tar, "-q"])
        assert r.code == 0, r.stderr
        r = run([*prefix, DETPACK, "layer", "-o", layer, "--add", f"{tree}:/app", "-q"])
        assert r.code == 0, r.stderr
        outputs[tag] = [tar.read_bytes(), layer.read_bytes()]
    assert outputs["normal"] == outputs["ng"]


def _arm64(argv: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    qemu = require_tool("qemu-aarch64-static")
    python = need_machine(ARM64_ROOT / "usr" / "bin" / "python3.11")
    site = os.pathsep.join([str(need_machine(ARM64_SITE)), str(ROOT)])
    prefix = [qemu, "-L", str(ARM64_ROOT), "-E", f"PYTHONPATH={site}", str(python), "-S"]
    return _json([*prefix, *argv], env={"PATH": os.environ["PATH"]})


def test_known_answers_on_aarch64(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    here = _json([sys.executable, "-c", INTERPRETER_ZLIB], env=env)
    there = _arm64(["-c", INTERPRETER_ZLIB])
    assert there["machine"] == "aarch64" and here["machine"] != "aarch64", (here, there)
    normal = _json([sys.executable, ROOT / "tests" / "known_answers.py", tmp_path / "a"], env=env)
    arm = _arm64([ROOT / "tests" / "known_answers.py", tmp_path / "b"])
    assert arm == normal == known_answers.GOLDEN


def test_check_vary_machine_passes_and_the_libz_reaches_the_backend(tmp_path: Path, wheelhouse: Path) -> None:
    require_tool("bwrap")
    libz = need_machine(NG_LIBZ)
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "setuptools-basic", src)
    common = ["--find-links", wheelhouse, "--offline", "-q"]
    r = run([DETPACK, "check", src, "--vary", "machine", "--libz", libz, *common])
    assert r.code == 0, r.stdout + r.stderr
    assert "identical under libz, hostname, cpus, uid" in r.stdout, r.stdout

    keep = tmp_path / "keep"
    r = run([DETPACK, "check", src, "--vary", "libz", "--libz", libz, "--keep", keep, *common])
    assert r.code == 0, r.stdout + r.stderr
    control, varied = sorted(keep.glob("out-*"))
    # the perturbation: the backend's own wheel differs with the other libz; detpack's does not
    assert _raw_outputs(control) != _raw_outputs(varied)
    [prov] = varied.glob("*.provenance.json")
    assert f'"replacedBy":"{libz.resolve()}"' in prov.read_text().replace(" ", "")


def test_check_vary_libz_needs_a_libz(tmp_path: Path) -> None:
    r = run([DETPACK, "check", FIXTURES / "flit", "--vary", "libz"])
    assert r.code == 2 and r.stderr.count("\n") == 1 and "--libz PATH" in r.stderr, r.stderr
    not_elf = tmp_path / "libz.so.1"
    not_elf.write_text("not a library\n")
    r = run([DETPACK, "check", FIXTURES / "flit", "--vary", "machine", "--libz", not_elf])
    assert r.code == 2 and r.stderr.count("\n") == 1 and f"{not_elf}: not an ELF shared library" in r.stderr
