"""C extensions built in a toolchain image (`detpack build --toolchain REF`) are the same on any Linux host.

`fixtures/cext` is built in the test toolchain image (`make toolchain`: Debian 12, CPython 3.11, gcc 12)
here and on the other host (`make other-host`: Debian 13, CPython 3.13, gcc 14, glibc 2.41, running
detpack with its own Python): the same manylinux wheel bytes. Without the image the two wheels differ
(the perturbation the image removes). The record names the image by digest and the image's compiler,
never the host's; `rebuild` of the record on the other host fetches the image by digest from a registry
and is byte-identical; the wheel installs and imports in a fresh environment, and auditwheel agrees
with its tag. A changed cache entry is refused before use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_toolchain_unpack as tu
from other_host import TOOLCHAIN_LAYOUT, need_other_host, need_toolchain, run_on_other_host

from conftest import DETPACK, FIXTURES, ROOT, materialize, run, sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WHEELHOUSE = ROOT / ".wheelhouse"


@dataclass(frozen=True)
class Built:
    out: Path
    wheel: Path
    sdist: Path
    record: dict[str, Any]
    cache: Path


def _resolved(record: dict[str, Any]) -> list[dict[str, Any]]:
    return list(record["predicate"]["buildDefinition"]["resolvedDependencies"])


def _build_here(src: Path, out: Path, cache: Path, *extra: str | Path) -> Built:
    r = run([DETPACK, "build", src, "-o", out, "--find-links", WHEELHOUSE, "--offline", *extra],
            env={"XDG_CACHE_HOME": str(cache)})  # fmt: skip
    assert r.code == 0, r.stdout + r.stderr
    return _built(out, cache)


def _built(out: Path, cache: Path) -> Built:
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    (record,) = out.glob("*.provenance.json")
    return Built(out, wheel, sdist, json.loads(record.read_text()), cache)


def _build_there(src: Path, out: Path, cache: Path, *extra: str) -> Built:
    """``detpack build`` on the other host (the layout bound at /toolchain/debian12, the wheelhouse at /wheelhouse)."""
    for d in (out, cache):
        d.mkdir(parents=True, exist_ok=True)
    r = run_on_other_host(
        ["detpack", "build", "/src", "-o", "/out", "--find-links", "/wheelhouse", "--offline", *extra],
        binds=[(src, "/src"), (out, "/out"), (cache, "/cache")],
        ro_binds=[(TOOLCHAIN_LAYOUT, "/toolchain/debian12"), (WHEELHOUSE, "/wheelhouse")],
        env={"XDG_CACHE_HOME": "/cache"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return _built(out, cache)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialize(FIXTURES / "cext", tmp_path_factory.mktemp("cext") / "src", 0o022)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Built:
    """fixtures/cext built in the toolchain image on this machine."""
    ref = need_toolchain()
    root = tmp_path_factory.mktemp("here")
    return _build_here(source, root / "out", root / "cache", "--toolchain", ref)


def _manifest_digest() -> str:
    index = json.loads((TOOLCHAIN_LAYOUT / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def _image_root(built: Built) -> Path:
    roots = list((built.cache / "detpack" / "toolchains").glob("*/root"))
    assert len(roots) == 1, roots
    return roots[0]


def test_the_same_manylinux_wheel_on_another_userland(tmp_path: Path, source: Path, here: Built) -> None:
    need_other_host()
    there = _build_there(source, tmp_path / "there", tmp_path / "cache", "--toolchain", "oci:/toolchain/debian12:1")
    assert re.fullmatch(r"fx_cext-1\.0\.0-cp311-cp311-manylinux[\w.]+_x86_64\.whl", here.wheel.name), here.wheel.name
    assert there.wheel.name == here.wheel.name
    assert sha256(there.wheel) == sha256(here.wheel)
    assert sha256(there.sdist) == sha256(here.sdist)
    # The perturbation: without the image, each host compiles with its own Python and gcc.
    plain_here = _build_here(source, tmp_path / "plain-here", tmp_path / "c1")
    plain_there = _build_there(source, tmp_path / "plain-there", tmp_path / "c2")
    assert plain_here.wheel.name.endswith("linux_x86_64.whl") and "manylinux" not in plain_here.wheel.name
    assert plain_here.wheel.name != plain_there.wheel.name  # cp311 here, cp313 there
    assert sha256(plain_here.wheel) != sha256(plain_there.wheel)
    # Built in the image, the other host's record names the image's compiler and system, not its own.
    tools = {rd["name"]: rd for rd in _resolved(there.record) if rd.get("annotations", {}).get("kind") == "tool"}
    gcc = next(rd for name, rd in tools.items() if "gcc" in name)
    assert "(Debian 12." in gcc["annotations"]["version"] and "distro=debian-12" in gcc["uri"], gcc
    os_entry = next(rd for rd in _resolved(there.record) if rd["name"] == "os")
    assert os_entry["annotations"]["VERSION_ID"] == "12"
    python = next(rd for rd in _resolved(there.record) if rd["name"] == "python")
    assert python["annotations"]["version"].startswith("3.11.")  # the image's, not the other host's 3.13
    plain_tools = [rd for rd in _resolved(plain_there.record) if rd.get("annotations", {}).get("kind") == "tool"]
    assert any("distro=debian-13" in str(rd.get("uri")) for rd in plain_tools)  # its own, without the image


def test_the_record_names_the_image_and_only_its_tools(here: Built) -> None:
    resolved = _resolved(here.record)
    (image,) = [rd for rd in resolved if rd["name"] == "toolchain image"]
    assert "sha256:" + image["digest"]["sha256"] == _manifest_digest()
    assert image["uri"] == f"oci:debian12@{_manifest_digest()}"  # no path of this machine
    assert image["annotations"]["platform"] == "linux/amd64"
    root = _image_root(here)
    python = next(rd for rd in resolved if rd["name"] == "python")
    image_python = root / image["annotations"]["python"]["path"].lstrip("/")
    assert python["digest"]["sha256"] == image["annotations"]["python"]["sha256"] == sha256(image_python.resolve())
    assert python["digest"]["sha256"] != sha256(Path(sys.executable).resolve())  # not the host's interpreter
    tools = [rd for rd in resolved if rd.get("annotations", {}).get("kind") == "tool"]
    assert tools, "the compiler that ran is recorded"
    for tool in tools:  # every tool is the image's file, hashed there
        path = tool["annotations"]["path"]
        assert tool["digest"]["sha256"] == sha256((root / path.lstrip("/")).resolve()), path
    (repair,) = [rd for rd in resolved if rd["name"] == "auditwheel"]
    assert repair["annotations"]["kind"] == "repair" and repair["annotations"]["policy"] in here.wheel.name
    assert repair["annotations"]["input"]["name"].endswith("-linux_x86_64.whl")
    internal = here.record["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["sandbox"]["system"] == "toolchain image"


def test_the_wheel_installs_imports_and_auditwheel_agrees(tmp_path: Path, here: Built) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin" / "python"
    subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-index", here.wheel], check=True)
    said = subprocess.run([py, "-c", "import fx_cext; print(fx_cext.hello())"], capture_output=True, text=True,
                          check=True, cwd=tmp_path).stdout  # fmt: skip
    assert said.strip() == "hello from fx_cext: 2 + 3 = 5"
    tools = tmp_path / "auditwheel"
    subprocess.run([sys.executable, "-m", "venv", tools], check=True)
    subprocess.run([tools / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index", "--find-links",
                    WHEELHOUSE, "auditwheel==6.8.2"], check=True)  # fmt: skip
    shown = subprocess.run([tools / "bin" / "auditwheel", "show", here.wheel], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    tag = next(t for t in here.wheel.name.removesuffix(".whl").split("-")[-1].split(".") if t.startswith("manylinux_"))
    assert f'is consistent with the following platform tag: "{tag}"' in " ".join(shown.split()), shown


def test_rebuild_on_another_host_fetches_the_image_by_digest(tmp_path: Path, source: Path, registry: str) -> None:
    need_other_host()
    ref = need_toolchain()
    pushed = run([DETPACK, "push", ref, f"{registry}/toolchains/debian12"])
    assert pushed.code == 0, pushed.stderr
    pinned = pushed.stdout.strip().splitlines()[-1]
    assert pinned == f"{registry}/toolchains/debian12@{_manifest_digest()}"
    built = _build_here(source, tmp_path / "out", tmp_path / "cache", "--toolchain", pinned)
    (image,) = [rd for rd in _resolved(built.record) if rd["name"] == "toolchain image"]
    assert image["uri"] == f"oci://{pinned}"
    cache = tmp_path / "there-cache"
    cache.mkdir()
    record = f"/out/{built.wheel.name.split('-')[0]}-1.0.0.provenance.json"
    r = run_on_other_host(["detpack", "rebuild", record, "--find-links", "/wheelhouse", "--offline"],
                          binds=[(built.out, "/out"), (cache, "/cache")], ro_binds=[(WHEELHOUSE, "/wheelhouse")],
                          env={"XDG_CACHE_HOME": "/cache"})  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("reproduced: 1 of 1 rebuilt subjects match"), r.stdout  # the wheel, from the sdist
    assert "toolchain differs" not in r.stdout
    assert list((cache / "detpack" / "toolchains").glob(f"{_manifest_digest().removeprefix('sha256:')}/root"))


def test_another_copy_must_be_the_recorded_image(tmp_path: Path, here: Built) -> None:
    ref = need_toolchain()
    copy = tmp_path / "copy"
    shutil.copytree(TOOLCHAIN_LAYOUT, copy)
    record = next(here.out.glob("*.provenance.json"))
    r = run([DETPACK, "rebuild", record, "--toolchain", f"oci:{copy}:1", "--find-links", WHEELHOUSE, "--offline"],
            env={"XDG_CACHE_HOME": str(here.cache)})  # fmt: skip
    assert r.code == 0 and r.stdout.startswith("reproduced: 1 of 1 rebuilt subjects match"), r.stdout + r.stderr
    assert "toolchain differs" not in r.stdout  # the same image, from another place
    layer = next(p for p in TOOLCHAIN_LAYOUT.parent.glob("*.tar.gz"))
    other = run([DETPACK, "image", "-o", f"oci:{tmp_path / 'other'}:1", "--layer", layer, "--env", "OTHER=1"])
    assert other.code == 0, other.stderr
    r = run([DETPACK, "rebuild", record, "--toolchain", f"oci:{tmp_path / 'other'}:1", "--find-links", WHEELHOUSE,
             "--offline"], env={"XDG_CACHE_HOME": str(here.cache)})  # fmt: skip
    assert r.code == 2 and "the record's toolchain image is " + _manifest_digest() in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert ref


def test_a_changed_cache_entry_is_refused_before_use(tmp_path: Path, source: Path) -> None:
    """Another process changes a file of the unpacked image (same size, time put back): the next build refuses it."""
    cache = tmp_path / "cache"
    first = _build_here(source, tmp_path / "first", cache, "--toolchain", need_toolchain())
    target = _image_root(first) / "usr" / "bin" / "x86_64-linux-gnu-gcc-12"
    before = target.stat()
    os.chmod(target, 0o755)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.chmod(target, before.st_mode & 0o7777)
    r = run([DETPACK, "build", source, "-o", tmp_path / "out", "--toolchain", need_toolchain(), "--find-links",
             WHEELHOUSE, "--offline"], env={"XDG_CACHE_HOME": str(cache)})  # fmt: skip
    assert r.code == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "usr/bin/x86_64-linux-gnu-gcc-12" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    for d, _, _files in os.walk(cache):  # the entry is read-only: let pytest remove it
        os.chmod(d, 0o755)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--repair"], "--repair: only with --toolchain"),
        (["--toolchain", "not-an-image"], "--toolchain not-an-image: name an image"),
        (["--toolchain", "oci:/nonexistent/layout:1"], "/nonexistent/layout: no such image layout directory"),
        (["--no-isolation", "--toolchain", "oci:/nonexistent:1"], "drop --no-isolation"),
    ],
)
def test_toolchain_options_say_what_is_wrong(tmp_path: Path, source: Path, argv: list[str], needle: str) -> None:
    r = run([DETPACK, "build", source, "-o", tmp_path / "out", *argv])
    assert r.code == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("members", "needle"),
    [
        (lambda out: [tu.file("usr/ok"), tu.file("../outside/planted")], "has '..' in its path"),
        (lambda out: [tu.file(str(out / "planted"))], "absolute"),
        (lambda out: [tu.symlink("usr", str(out)), tu.file("usr/planted")], "a symbolic link"),
        (lambda out: [tu.directory("usr"), tu.hardlink("usr/passwd", "/etc/passwd")], "passwd"),
        (lambda out: [tu.directory("dev"), tu.M("dev/evil", tarfile.CHRTYPE)], "dev/evil"),
    ],
    ids=["dotdot", "absolute", "through a link", "hard link out", "device"],
)
def test_a_hostile_toolchain_image_writes_nothing_outside(tmp_path: Path, source: Path, members: Any,
                                                          needle: str) -> None:  # fmt: skip
    """`detpack build --toolchain` of an image whose layer tries to write outside its cache entry: one line,
    exit 2, nothing written outside, nothing of it kept, no build."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret\n")
    ref = tu.make_image(tmp_path / "hostile", [tu.gz(members(outside))])
    cache = tmp_path / "cache"
    r = run([DETPACK, "build", source, "-o", tmp_path / "out", "--toolchain", ref, "--find-links", WHEELHOUSE,
             "--offline"], env={"XDG_CACHE_HOME": str(cache)})  # fmt: skip
    assert r.code == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "host secret\n"
    entries = cache / "detpack" / "toolchains"
    assert not entries.exists() or [p.name for p in entries.iterdir() if not p.name.startswith(".")] == []
    assert not (tmp_path / "out").exists()


def test_diff_names_a_toolchain_image_difference_first(here: Built) -> None:
    """Two records of builds in two images: the image is the first cause named, before any tool."""
    from detpack.verify.provenance_compare import toolchain_drift

    other = json.loads(json.dumps(here.record))
    for rd in _resolved(other):
        if rd["name"] == "toolchain image":
            rd["digest"]["sha256"] = "0" * 64
            rd["uri"] = "oci://registry.example/toolchains/other@sha256:" + "0" * 64
        if rd.get("annotations", {}).get("kind") == "tool":
            rd["annotations"]["version"] = rd["annotations"]["version"].replace("12.2.0", "13.3.0")
    drift = toolchain_drift(here.record, other)
    assert drift[0].startswith("toolchain image: oci:debian12@sha256:") and "registry.example" in drift[0], drift
    assert any("13.3.0" in line for line in drift[1:])
    plain = json.loads(json.dumps(here.record))
    plain["predicate"]["buildDefinition"]["resolvedDependencies"] = [
        rd for rd in _resolved(plain) if rd["name"] != "toolchain image"
    ]
    assert toolchain_drift(plain, here.record)[0].startswith("toolchain image: none (the builder's own system) vs")
    assert toolchain_drift(here.record, here.record) == ()


def test_a_pure_project_in_the_image_is_not_repaired(tmp_path: Path) -> None:
    """Without native code nothing changes: the same py3-none-any wheel as on this machine, no repair step."""
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    in_image = _build_here(src, tmp_path / "image", tmp_path / "cache", "--toolchain", need_toolchain())
    here = _build_here(src, tmp_path / "here", tmp_path / "cache2")
    assert in_image.wheel.name == here.wheel.name and in_image.wheel.name.endswith("-py3-none-any.whl")
    assert sha256(in_image.wheel) == sha256(here.wheel) and sha256(in_image.sdist) == sha256(here.sdist)
    assert not [rd for rd in _resolved(in_image.record) if rd["name"] == "auditwheel"]
    assert [rd for rd in _resolved(in_image.record) if rd["name"] == "toolchain image"]


@pytest.mark.network
def test_a_release_fresh_from_the_index_is_the_same_on_another_userland(tmp_path: Path) -> None:
    """A C extension detpack was not tuned for (markupsafe's sdist, downloaded now), built online in the
    image (its installs resolve names and reach the index through this machine's network configuration,
    not the image's empty resolv.conf): the same manylinux wheel here and on the other host."""
    need_other_host()
    ref = need_toolchain()
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-binary=:all:", "--no-deps",
                          "markupsafe==3.0.2", "-d", tmp_path], capture_output=True, text=True)  # fmt: skip
    assert got.returncode == 0, got.stderr
    with tarfile.open(tmp_path / "markupsafe-3.0.2.tar.gz") as tf:
        tf.extractall(tmp_path, filter="data")
    src = tmp_path / "markupsafe-3.0.2"
    r = run([DETPACK, "build", src, "-o", tmp_path / "here", "--toolchain", ref],
            env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=900)  # fmt: skip
    assert r.code == 0, r.stdout + r.stderr
    (here,) = (tmp_path / "here").glob("*.whl")
    assert "manylinux" in here.name and "-cp311-" in here.name, here.name
    for d in ("there", "there-cache"):
        (tmp_path / d).mkdir()
    bundle = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    r2 = run_on_other_host(
        ["detpack", "build", "/src", "-o", "/out", "--toolchain", "oci:/toolchain/debian12:1"],
        binds=[(src, "/src"), (tmp_path / "there", "/out"), (tmp_path / "there-cache", "/cache")],
        ro_binds=[(TOOLCHAIN_LAYOUT, "/toolchain/debian12"), (Path("/etc/resolv.conf"), "/etc/resolv.conf"),
                  (Path(bundle), "/cacert/ca.pem")],  # this machine's network, as the other host's
        env={"XDG_CACHE_HOME": "/cache", "SSL_CERT_FILE": "/cacert/ca.pem"},
    )  # fmt: skip
    assert r2.returncode == 0, r2.stdout + r2.stderr
    (there,) = (tmp_path / "there").glob("*.whl")
    assert there.name == here.name and sha256(there) == sha256(here)
