"""Another host and a toolchain image, for builds in a toolchain image (issue 36).

The other host (tests/other_host.py, `make other-host`) is Debian 13 (trixie): its own CPython 3.13,
gcc 14 and glibc 2.41, with detpack installed by its own python3, entered with bubblewrap. The
toolchain image (`make toolchain`) is Debian 12 (bookworm) at oci:.toolchain/debian12:1. These tests
prove the harness: the other host is another userland, detpack runs there (its own bubblewrap
sandbox nested inside), a pure project builds the same bytes there as here, and a C extension
does not (the perturbation a toolchain image has to remove); the image is a usable root.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from other_host import (
    OTHER_DETPACK,
    OTHER_ENV,
    TOOLCHAIN_LAYER,
    TOOLCHAIN_LAYOUT,
    TOOLCHAIN_TAG,
    need_other_host,
    need_toolchain,
    run_on_other_host,
)

from conftest import DETPACK, FIXTURES, digests, require_tool, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def other() -> Path:
    require_tool("bwrap")
    return need_other_host()


def _host_gcc() -> str:
    gcc = require_tool("gcc")
    return subprocess.run([gcc, "-dumpfullversion"], capture_output=True, text=True, check=True).stdout.strip()


def test_the_other_host_is_another_userland(other: Path) -> None:
    import other_host

    r = run_on_other_host(["sh", "-c", "python3 --version; gcc --version; . /etc/os-release; echo $VERSION_CODENAME"])
    assert r.returncode == 0, r.stderr
    python_line, gcc_line, *_, codename = r.stdout.splitlines()
    assert codename == "trixie", r.stdout
    assert python_line == f"Python {other_host.OTHER_PYTHON_VERSION}", r.stdout
    assert other_host.OTHER_PYTHON_VERSION.startswith("3.13."), r.stdout
    assert other_host.OTHER_GCC_VERSION in gcc_line and other_host.OTHER_GCC_VERSION.startswith("14."), r.stdout

    here_python = platform.python_version()
    here_gcc = _host_gcc()
    here_glibc = platform.libc_ver()[1]
    assert other_host.OTHER_PYTHON_VERSION.rsplit(".", 1)[0] != here_python.rsplit(".", 1)[0], here_python
    assert other_host.OTHER_GCC_VERSION.split(".")[0] != here_gcc.split(".")[0], here_gcc
    assert here_glibc != other_host.OTHER_GLIBC_VERSION, here_glibc


def test_the_root_stays_clean_and_nested_sandboxes_work(other: Path, tmp_path: Path) -> None:
    # bubblewrap inside bubblewrap: the plain form, and detpack's own (user namespace, fresh /proc)
    r = run_on_other_host(["bwrap", "--ro-bind", "/", "/", "true"])
    assert r.returncode == 0, r.stderr
    sandbox = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--ro-bind", "/", "/"]
    sandbox += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--uid", "1000", "--", "id", "-u"]
    r = run_on_other_host(sandbox)
    assert r.returncode == 0 and r.stdout.strip() == "1000", r.stderr
    # the root is read-only; /tmp and HOME are private, the binds are written through
    (tmp_path / "out").mkdir()
    script = "touch /opt/detpack/x || echo refused; touch /x || echo refused; echo a > /tmp/a; echo b > $HOME/b; "
    script += "echo c > /work/out/c; pwd"
    r = run_on_other_host(["sh", "-c", script], binds=[(tmp_path / "out", "/work/out")], cwd="/work/out")
    assert r.stdout.split() == ["refused", "refused", "/work/out"], r.stdout + r.stderr
    assert (tmp_path / "out" / "c").read_text() == "c\n"
    assert not (other / "x").exists() and not (other / "tmp" / "a").exists() and not (other / "opt/detpack/x").exists()
    r = run_on_other_host(["sh", "-c", "ls -A /tmp $HOME"])
    assert r.returncode == 0 and r.stdout.split() == ["/root:", "/tmp:"], r.stdout  # nothing kept from the last run


def test_the_host_network_is_shared(other: Path, registry: str) -> None:
    probe = f"import urllib.request; print(urllib.request.urlopen('http://{registry}/v2/', timeout=10).status)"
    r = run_on_other_host(["python3", "-c", probe])
    assert r.returncode == 0 and r.stdout.strip() == "200", r.stderr


def test_detpack_runs_there(other: Path) -> None:
    here = run([DETPACK, "--version"])
    assert here.code == 0, here.stderr
    for from_checkout in (True, False):
        r = run_on_other_host(["detpack", "--version"], from_checkout=from_checkout)
        assert r.returncode == 0 and r.stdout == here.stdout, (r.stdout, r.stderr)
    where = "import detpack, sys; print(sys.version_info[:2] == (3, 13), detpack.__file__, sys.executable)"
    r = run_on_other_host(["python", "-c", where], from_checkout=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "/opt/detpack/lib/python3.13/site-packages/detpack/__init__.py",
                                "/opt/detpack/bin/python"], r.stdout  # fmt: skip
    assert OTHER_ENV["PATH"].startswith("/opt/detpack/bin:")
    r = run_on_other_host([OTHER_DETPACK, "--version"], env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout == here.stdout, r.stderr


def _build_both(fixture: str, tmp_path: Path, wheelhouse: Path) -> tuple[Path, Path]:
    """``fixture`` built here and on the other host (offline, from the wheelhouse): the two output folders."""
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / fixture, src)
    here = tmp_path / "here"
    r = run([DETPACK, "build", src, "-o", here, "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    there = run_on_other_host(
        ["detpack", "build", "src", "-o", "there", "--find-links", "/wheelhouse", "--offline", "-q"],
        binds=[(tmp_path, "/work")],
        ro_binds=[(wheelhouse, "/wheelhouse")],
        cwd="/work",
    )
    assert there.returncode == 0, there.stdout + there.stderr
    [prov] = (tmp_path / "there").glob("*.provenance.json")
    statement = json.loads(prov.read_text())
    internal = statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["sandbox"]["kind"] == "bubblewrap", internal["sandbox"]  # detpack's sandbox, nested
    python = next(d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"] if d["name"] == "python")
    assert python["annotations"]["version"].startswith("3.13."), python
    return here, tmp_path / "there"


def test_a_pure_project_builds_the_same_bytes_there(other: Path, tmp_path: Path, wheelhouse: Path) -> None:
    here, there = _build_both("setuptools-basic", tmp_path, wheelhouse)
    outputs = digests(here)
    assert sorted(outputs) == ["fx_setuptools_basic-1.0.0-py3-none-any.whl", "fx_setuptools_basic-1.0.0.tar.gz"]
    assert digests(there) == outputs


def test_a_c_extension_differs_there_without_a_toolchain(other: Path, tmp_path: Path, wheelhouse: Path) -> None:
    import other_host

    here, there = _build_both("cext", tmp_path, wheelhouse)
    [wheel_here] = here.glob("*.whl")
    [wheel_there] = there.glob("*.whl")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert f"-{tag}-{tag}-linux_x86_64" in wheel_here.name and "-cp313-cp313-linux_x86_64" in wheel_there.name
    assert wheel_here.read_bytes() != wheel_there.read_bytes()
    assert digests(here, "*.tar.gz") == digests(there, "*.tar.gz")  # the sdist is the same: only the compile differs
    r = run([DETPACK, "diff", here, there])
    assert r.code == 1, r.stdout + r.stderr
    [toolchain] = [line for line in r.stdout.splitlines() if line.startswith("toolchain differs:")]
    assert f"gcc {_host_gcc()}" in toolchain and f"gcc {other_host.OTHER_GCC_VERSION}" in toolchain, toolchain
    assert f"glibc: {platform.libc_ver()[1]} " in toolchain and f" vs {other_host.OTHER_GLIBC_VERSION} " in toolchain


def test_the_toolchain_image(tmp_path: Path) -> None:
    reference = need_toolchain()
    skopeo = require_tool("skopeo")
    r = subprocess.run([skopeo, "inspect", reference], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["Os"], info["Architecture"], info["Env"]) == ("linux", "amd64", ["PATH=/usr/local/bin:/usr/bin:/bin"])
    assert info["Layers"] == [f"sha256:{digests(TOOLCHAIN_LAYER.parent, TOOLCHAIN_LAYER.name)[TOOLCHAIN_LAYER.name]}"]

    umoci = require_tool("umoci")
    bundle = tmp_path / "bundle"
    r = subprocess.run(
        [umoci, "unpack", "--rootless", "--image", f"{TOOLCHAIN_LAYOUT}:{TOOLCHAIN_TAG}", bundle],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rootfs = bundle / "rootfs"
    for tool in ("usr/bin/python3", "usr/bin/gcc", "usr/bin/patchelf", "usr/include/python3.11/Python.h"):
        assert (rootfs / tool).exists(), tool  # (python3 and gcc are links within the root)
    for absent in ("dev/null", "var/cache/ldconfig/aux-cache", "etc/machine-id"):
        assert not (rootfs / absent).exists(), absent
    assert not any((rootfs / "var/lib/apt/lists").glob("*_Packages")) and not any(rootfs.glob("var/log/**/*.log"))

    # the image is a working root: its own python3.11 and gcc 12 make a venv and compile there
    bwrap = require_tool("bwrap")
    script = "python3 --version; gcc -dumpfullversion; python3 -m venv --without-pip /tmp/v && /tmp/v/bin/python -c 1 "
    script += "&& printf 'int main(void){return 0;}' > /tmp/a.c && gcc /tmp/a.c -o /tmp/a && /tmp/a && echo ok"
    r = subprocess.run(
        [bwrap, "--ro-bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    python, gcc, ok = r.stdout.split("\n")[:3]
    assert python.startswith("Python 3.11.") and gcc.startswith("12.") and ok == "ok", r.stdout
