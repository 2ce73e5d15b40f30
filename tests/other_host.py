"""Another machine: Debian 13 (trixie) with its own CPython 3.13, gcc 14 and glibc 2.41, detpack installed.

`make other-host` debootstraps the root at ``.machines/trixie-root`` and installs detpack there in a
venv at ``/opt/detpack`` made by trixie's own ``python3`` (this checkout's wheel and its
dependencies as cp313 wheels, pip and uv; offline). ``run_on_other_host`` enters that root with
bubblewrap:

- the root read-only (every top-level directory bound read-only; ``/`` itself is bubblewrap's own
  tmpfs, remounted read-only at the end), so it stays clean between tests; a private ``/tmp``
  (tmpfs), ``HOME=/root`` on a tmpfs, a ``/dev`` of bubblewrap's, this machine's ``/sys``
  (read-only) and ``/proc`` (bound, not mounted anew: a proc mounted by bubblewrap has read-only
  submounts over ``/proc/sys`` and the like, and a sandbox inside may then not mount its own; with
  this machine's, detpack's own bubblewrap sandbox inside works);
- this machine's network (no ``--unshare-net``): a registry on 127.0.0.1 is reachable;
- ``binds``: (host path, path inside), read-write; ``ro_binds``: read-only. A path inside must be
  new at the top (``/work``, ``/src``) or under ``/tmp``: the root's own directories are read-only,
  so a mount point cannot be made in them;
- ``PATH`` with ``/opt/detpack/bin`` first; ``env`` adds to (or overrides) the base environment.

With ``from_checkout`` (the default) this checkout's ``detpack/`` package is bound read-only over the
installed one, so the other host runs the code under test without remaking the root; its
dependencies are the installed ones (a new dependency needs `make other-host`). Pass
``from_checkout=False`` to run exactly what the wheel installed.

Facts read from inside (once, on first use): ``OTHER_PYTHON_VERSION`` ("3.13.5"),
``OTHER_GCC_VERSION`` ("14.2.0", ``gcc -dumpfullversion``), ``OTHER_GLIBC_VERSION`` ("2.41").

The toolchain image `make toolchain` writes is ``TOOLCHAIN_REF`` (``oci:.toolchain/debian12:1``,
absolute): Debian 12 (bookworm) with python3 (3.11), python3-venv, python3-dev, gcc 12, libc6-dev
and patchelf, one layer.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from conftest import ROOT, require_tool, unavailable

#: The other host's root filesystem (`make other-host`).
OTHER_ROOT = ROOT / ".machines" / "trixie-root"
#: detpack's venv inside it, and the installed package the checkout's is bound over.
OTHER_VENV = "/opt/detpack"
OTHER_SITE = f"{OTHER_VENV}/lib/python3.13/site-packages"
OTHER_DETPACK = f"{OTHER_VENV}/bin/detpack"
#: The base environment inside.
OTHER_PATH = f"{OTHER_VENV}/bin:/usr/local/bin:/usr/bin:/bin"
OTHER_ENV = {"PATH": OTHER_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}

#: The test toolchain image (`make toolchain`): an OCI image layout, tag 1.
TOOLCHAIN_DIR = ROOT / ".toolchain"
TOOLCHAIN_LAYOUT = TOOLCHAIN_DIR / "debian12"
TOOLCHAIN_TAG = "1"
TOOLCHAIN_REF = f"oci:{TOOLCHAIN_LAYOUT}:{TOOLCHAIN_TAG}"
#: Its one layer, as packed (with .provenance.json beside it).
TOOLCHAIN_LAYER = TOOLCHAIN_DIR / "debian12-root.tar.gz"
#: Where a test may bind TOOLCHAIN_DIR on the other host (``ro_binds=[(TOOLCHAIN_DIR, OTHER_TOOLCHAIN_DIR)]``),
#: and the image's reference there.
OTHER_TOOLCHAIN_DIR = "/toolchain"
OTHER_TOOLCHAIN_REF = f"oci:{OTHER_TOOLCHAIN_DIR}/{TOOLCHAIN_LAYOUT.name}:{TOOLCHAIN_TAG}"

#: What `run_on_other_host` provides itself rather than from the root.
_PROVIDED = {"dev", "proc", "sys", "tmp", "root"}


def need_other_host() -> Path:
    """The other host's root; skip without it locally, fail without it in CI."""
    if not (OTHER_ROOT / OTHER_DETPACK.lstrip("/")).exists():
        unavailable(f"{OTHER_ROOT} (with {OTHER_DETPACK}) is missing: run `make other-host` (.ci/run does)")
    return OTHER_ROOT


def need_toolchain() -> str:
    """The toolchain image's reference (oci:DIR:TAG); skip without it locally, fail in CI."""
    if not (TOOLCHAIN_LAYOUT / "index.json").exists():
        unavailable(f"{TOOLCHAIN_LAYOUT} is missing: run `make toolchain` (.ci/run does)")
    return TOOLCHAIN_REF


def other_host_argv(
    argv: Sequence[str | os.PathLike[str]],
    *,
    binds: Sequence[tuple[Path, str]] = (),
    ro_binds: Sequence[tuple[Path, str]] = (),
    cwd: str = "/",
    from_checkout: bool = True,
) -> list[str]:
    """The bubblewrap command line that runs ``argv`` on the other host (see the module's doc)."""
    bwrap = require_tool("bwrap")
    root = need_other_host()
    args = [bwrap, "--die-with-parent", "--new-session"]
    for entry in sorted(root.iterdir()):
        if entry.name in _PROVIDED:
            continue
        if entry.is_symlink():
            args += ["--symlink", os.readlink(entry), f"/{entry.name}"]
        elif entry.is_dir():
            args += ["--ro-bind", str(entry), f"/{entry.name}"]
    args += ["--bind", "/proc", "/proc", "--dev", "/dev", "--ro-bind", "/sys", "/sys"]
    args += ["--tmpfs", "/tmp", "--tmpfs", "/root"]
    if from_checkout:
        args += ["--ro-bind", str(ROOT / "detpack"), f"{OTHER_SITE}/detpack"]
    for host, inside in ro_binds:
        args += ["--ro-bind", str(Path(host).resolve()), inside]
    for host, inside in binds:
        args += ["--bind", str(Path(host).resolve()), inside]
    args += ["--remount-ro", "/", "--chdir", cwd, "--"]
    return [*args, *map(str, argv)]


def run_on_other_host(
    argv: Sequence[str | os.PathLike[str]],
    *,
    binds: Sequence[tuple[Path, str]] = (),
    cwd: str = "/",
    env: Mapping[str, str] | None = None,
    ro_binds: Sequence[tuple[Path, str]] = (),
    from_checkout: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the other host (trixie): its root read-only, ``binds`` read-write,
    ``ro_binds`` read-only, in ``cwd``, with ``OTHER_ENV`` updated by ``env`` and nothing else of
    this process's environment. Never raises on a non-zero exit: check ``returncode``."""
    full = other_host_argv(argv, binds=binds, ro_binds=ro_binds, cwd=cwd, from_checkout=from_checkout)
    return subprocess.run(
        full,
        env={**OTHER_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_FACTS = (
    "import platform, subprocess; "
    "gcc = subprocess.run(['gcc', '-dumpfullversion'], capture_output=True, text=True, check=True).stdout; "
    "print(platform.python_version(), gcc.strip(), platform.libc_ver()[1])"
)


@functools.cache
def _facts() -> dict[str, str]:
    r = run_on_other_host(["python3", "-c", _FACTS], from_checkout=False, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"reading the other host's versions failed: {r.stderr}")
    python, gcc, glibc = r.stdout.split()
    return {"OTHER_PYTHON_VERSION": python, "OTHER_GCC_VERSION": gcc, "OTHER_GLIBC_VERSION": glibc}


def __getattr__(name: str) -> str:
    """``OTHER_PYTHON_VERSION``, ``OTHER_GCC_VERSION``, ``OTHER_GLIBC_VERSION``: read from inside on
    first use (so importing this module needs no root; using them without one skips or fails)."""
    if name in ("OTHER_PYTHON_VERSION", "OTHER_GCC_VERSION", "OTHER_GLIBC_VERSION"):
        return _facts()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
