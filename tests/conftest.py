"""Shared test machinery: the wheelhouse, running detpack as a user would, and tool checks.

Builds run offline from the wheelhouse that `make setup` fills. A test whose external tool
is missing skips on a developer machine but fails in CI (CI=true), so CI never passes by
skipping.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
WHEELHOUSE = ROOT / ".wheelhouse"
BIN = Path(sys.executable).parent
#: The fixtures that build, and the module each one's wheel installs.
MODULES = {
    "setuptools-basic": "fx_setuptools_basic",
    "setuptools-setuppy": "fx_setuptools_setuppy",
    "hatchling": "fx_hatchling",
    "flit": "fx_flit",
    "poetry": "fx_poetry",
    "pdm": "fx_pdm",
    "noisy": "fx_noisy",
    "cext": "fx_cext",
}
DETPACK = BIN / "detpack"


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it locally, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install it; .ci/run does)")
    return path


def unavailable(message: str) -> NoReturn:
    """What a test needs is not here: skip locally, fail in CI (CI=true)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    if not any(WHEELHOUSE.glob("*.whl")):
        pytest.fail(f"{WHEELHOUSE} is empty: run `make setup` first")
    return WHEELHOUSE


def read_all_with_wheel(wheel: Path) -> int:
    """Read every member through wheel.wheelfile.WheelFile, which checks each sha256 in RECORD
    (raising WheelError on a mismatch); the number of members read."""
    from wheel.wheelfile import WheelFile

    with WheelFile(wheel) as wf:
        for info in wf.infolist():
            with wf.open(info) as member:
                while member.read(1 << 20):
                    pass
        return len(wf.infolist())


def wheelhouse_without(tmp: Path, name: str, skip: str) -> Path:
    """A wheelhouse with every wheel of the project's wheelhouse except those starting with ``skip``."""
    house = tmp / name
    house.mkdir()
    for wheel in WHEELHOUSE.glob("*.whl"):
        if not wheel.name.startswith(skip):
            (house / wheel.name).symlink_to(wheel)
    return house


def materialize(src: Path, dest: Path, umask: int) -> Path:
    """Recreate ``src`` at ``dest`` as a fresh checkout under ``umask`` would (0666/0777 & ~umask)."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in ("__pycache__", "dist", "build") or part.endswith(".egg-info") for part in rel.parts):
            continue
        target = dest / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777 & ~umask)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        executable = path.stat().st_mode & stat.S_IXUSR
        target.chmod((0o777 if executable else 0o666) & ~umask)
    dest.chmod(0o777 & ~umask)
    return dest


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    umask: int = 0o022,
    timeout: float = 600,
) -> Run:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    proc = subprocess.run(
        [str(a) for a in argv],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: os.umask(umask),
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def plain_user_detpack(home: Path) -> tuple[list[str], dict[str, str]]:
    """``python -m detpack`` run as a plain user, and its environment: as root (CI), uid/gid 65534
    (setpriv) with Debian's /usr/bin/python3 (this checkout's own interpreter may sit under root's
    0700 home) and detpack and its libraries from this checkout, the tree at ``home`` (0755) given to
    that user; as a plain user already, as is. ``home`` is also HOME, and the build root is in it."""
    import sysconfig

    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else require_tool("python3")
    drop = [require_tool("setpriv"), "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    drop = drop if os.geteuid() == 0 else []
    home.chmod(0o755)
    if drop:
        for path in [home, *home.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)
        whoami = subprocess.run([*drop, "id", "-u"], capture_output=True, text=True, check=False)
        assert whoami.stdout.strip() == "65534", whoami.stderr
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}",
        "DETPACK_BUILD_ROOT": str(home / "root"),
    }
    return [*drop, python, "-m", "detpack"], env


def headless_chromium(profile: Path) -> list[str]:
    """Headless Chromium that makes no connections of its own, with a fresh profile."""
    return [
        require_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
    ]  # fmt: skip


def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM headless Chromium builds from ``page`` (what a browser really makes of it)."""
    dom = subprocess.run(
        [*headless_chromium(profile), "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def faketime_env() -> dict[str, str]:
    require_tool("faketime")
    libs = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libs:
        pytest.fail("faketime is installed but libfaketime.so.1 was not found")
    return {"LD_PRELOAD": libs[0], "FAKETIME": "+1d"}


def _locale_available(name: str) -> bool:
    out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    return name.lower().replace("-", "") in out.lower().replace("-", "")


def variations(tmp: Path) -> list[tuple[str, dict[str, str], int, Path]]:
    """(label, environment, umask, where the tree lives) for the two builds."""
    if not _locale_available("de_DE.utf8"):
        message = "locale de_DE.UTF-8 missing (locales + locale-gen; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    a = {"TZ": "UTC", "LANG": "C.UTF-8", "HOME": str(tmp / "home-a"), "PYTHONHASHSEED": "0"}
    b = {
        "TZ": "Asia/Tokyo",
        "LANG": "de_DE.UTF-8",
        "LC_ALL": "de_DE.UTF-8",
        "HOME": str(tmp / "elsewhere" / "home-b"),
        "PYTHONHASHSEED": "4242",
        **faketime_env(),
    }
    for env in (a, b):
        Path(env["HOME"]).mkdir(parents=True)
    return [
        ("a", a, 0o022, tmp / "a" / "src"),
        ("b", b, 0o002, tmp / "b" / "a" / "much" / "deeper" / "checkout"),
    ]


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(outdir: Path, pattern: str = "*") -> dict[str, str]:
    """File name -> sha256 of the wheels and sdists in ``outdir``."""
    return {p.name: sha256(p) for p in sorted(outdir.glob(pattern)) if p.name.endswith((".whl", ".tar.gz"))}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (Distribution 2.8) on 127.0.0.1, a free port and temp storage."""
    binary = require_tool("docker-registry")
    root = tmp_path_factory.mktemp("registry")
    for _attempt in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
        )
        log = (root / "log").open("wb")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            continue  # the port was taken in between (or the registry died): try another
        try:
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()
        return
    pytest.fail(f"docker-registry did not start; see {root / 'log'}")


@dataclass
class Postgres:
    """A PostgreSQL server of our own (Debian's, started with initdb/pg_ctl) on 127.0.0.1."""

    bin: Path
    data: Path
    port: int
    as_user: list[str]  # the prefix that runs a command as the server's (non-root) owner

    def _pg(self, *argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([*self.as_user, *map(str, argv)], capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            pytest.fail(f"{argv[0]} failed: {r.stdout}{r.stderr}")
        return r

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=on -c max_connections=60"
        self._pg(self.bin / "pg_ctl", "-D", self.data, "-l", self.data / "server.log", "-o", options, "-w", "start")

    def stop(self) -> None:
        self._pg(self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: a crash, which the next start recovers from."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, 9)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (self.data / "postmaster.pid").exists():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def createdb(self, name: str) -> str:
        """A new empty database; the store URL for it, blobs in ``blobs``."""
        self._pg(self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "detpack", name)
        return f"postgresql://detpack@127.0.0.1:{self.port}/{name}"

    def psql(self, db: str, sql: str) -> str:
        r = self._pg(self.bin / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "detpack", "-d", db,
                     "-v", "ON_ERROR_STOP=1", "-Atc", sql)  # fmt: skip
        return r.stdout


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Debian's PostgreSQL, initdb'd and started by the tests as a non-root user on 127.0.0.1."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        unavailable("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    bin_dir = Path(found[-1]).parent
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="detpack-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as nobody
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        os.chmod(base, 0o755)
        os.chown(base, 65534, 65534)
    data = base / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Postgres(bin_dir, data, port, as_user)
    server._pg(bin_dir / "initdb", "-D", data, "-U", "detpack", "--auth=trust", "-E", "UTF8", "--no-instructions")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def minimal_wheel(path: Path) -> Path:
    """A minimal valid pure wheel at ``path`` (``NAME-VERSION-py3-none-any.whl``): a package, METADATA, WHEEL
    and a RECORD of hashes, so installers and ``rebuild --pypi`` take it as a release's published wheel."""
    import base64
    import hashlib
    import zipfile

    name, version = path.name.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    members = {
        f"{name}/__init__.py": b"",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = []
    for member, data in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{member},sha256={digest},{len(data)}")
    members[f"{info}/RECORD"] = ("\n".join([*lines, f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
    return path


@pytest.fixture(scope="module")
def flit_release(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """A --find-links folder holding fixtures/flit's release as detpack builds it: its sdist and wheel."""
    links = tmp_path_factory.mktemp("links")
    src = materialize(FIXTURES / "flit", links.parent / "flit-src", 0o022)
    r = run([DETPACK, "build", src, "-o", links, "--find-links", wheelhouse, "--offline"])
    assert r.code == 0, r.stderr
    for p in [*links.glob("*.provenance.json"), *links.glob("*.build.log.gz")]:
        p.unlink()
    assert sorted(p.name for p in links.iterdir()) == ["fx_flit-1.0.0-py3-none-any.whl", "fx_flit-1.0.0.tar.gz"]
    return links


def in_tree_backend(
    src: Path, module: str, code: str, *, name: str, requires: str = '"setuptools>=61"', also: str = ""
) -> Path:
    """A project at ``src`` built by the in-tree backend ``module`` (``code``, over setuptools), which its
    sdist carries (with ``also``); no module of its own."""
    src.mkdir(parents=True)
    (src / f"{module}.py").write_text(code)
    (src / "MANIFEST.in").write_text(f"include {module}.py {also}".rstrip() + "\n")
    (src / "pyproject.toml").write_text(
        f'[build-system]\nrequires = [{requires}]\nbuild-backend = "{module}"\nbackend-path = ["."]\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\n[tool.setuptools]\npy-modules = []\n'
    )
    return src
