"""Attacks on ``detpack build --toolchain`` by a hostile toolchain image, a hostile registry serving one and a
hostile backend, each asserting that the harm did not happen.

The hostile images are small: a few files of the test toolchain image's layer (bash, dash, coreutils, the C
library: enough for uv and a shell to run in the sandbox) and an interpreter that is a shell script doing the
attack. Each build takes a second or two.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_toolchain_unpack as tu
from other_host import TOOLCHAIN_LAYER, need_toolchain

from conftest import DETPACK, FIXTURES, WHEELHOUSE, materialize, run
from detpack.build import sandbox, toolimage
from detpack.errors import ConfigError, InputError
from detpack.oci.toolchain import load

pytestmark = pytest.mark.integration

#: What of the test toolchain image's layer a hostile image takes: uv, bash and a few tools run on it.
_KEPT = {
    "bin",
    "lib",
    "lib64",
    "usr/lib64/ld-linux-x86-64.so.2",
    *(f"usr/bin/{t}" for t in ("bash", "dash", "sh", "cat", "mkdir", "chmod")),
    *(
        f"usr/lib/x86_64-linux-gnu/{lib}"
        for lib in (
            "ld-linux-x86-64.so.2",
            "libc.so.6",
            "libdl.so.2",
            "libgcc_s.so.1",
            "libm.so.6",
            "libpthread.so.0",
            "librt.so.1",
            "libselinux.so.1",
            "libpcre2-8.so.0",
            "libpcre2-8.so.0.11.2",
            "libtinfo.so.6",
            "libtinfo.so.6.4",
        )
    ),
}
_DIRS = ("usr", "usr/bin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/lib64", "etc")
SECRET = "host-secret-ssh-key-7f3a"
PASSWORD = "s3cr3t-index-pass"


@pytest.fixture(scope="module")
def base() -> list[tu.M]:
    """A minimal root: the C library, bash, dash and a few coreutils, from the test toolchain image's layer."""
    need_toolchain()
    members = [tu.directory(d) for d in _DIRS]
    with tarfile.open(TOOLCHAIN_LAYER, "r:gz") as tf:
        for info in tf:
            name = info.name.removeprefix("./")
            if name not in _KEPT:
                continue
            if info.issym():
                members.append(tu.symlink(name, info.linkname))
            elif info.isfile():
                data = tf.extractfile(info)
                assert data is not None
                members.append(tu.file(name, data.read(), info.mode))
    assert len(members) == len(_DIRS) + len(_KEPT), sorted(m.name for m in members)
    return members


def hostile_image(directory: Path, base: list[tu.M], python: str, env: list[str], extra: Sequence[tu.M] = ()) -> str:
    """An image whose ``/usr/bin/python3.11`` is the shell script ``python``; its ``oci:DIR:TAG``."""
    members = [*base, tu.file("usr/bin/python3.11", python.encode(), 0o755), *extra]
    return tu.make_image(directory, [tu.gz(members)], config={"Env": env})


def git_source(dest: Path) -> Path:
    """fixtures/cext as a git repository of its own (detpack lays a git source out with git)."""
    src = materialize(FIXTURES / "cext", dest, 0o022)
    ident = ["-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    for argv in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(src), *argv], check=True, capture_output=True)
    return src


def build(src: Path, tmp: Path, ref: str, **env: str) -> str:
    """``detpack build -v`` of ``src`` in the image ``ref``: all it printed (the hostile image fails it)."""
    r = run([DETPACK, "build", "-v", src, "-o", tmp / "out", "--toolchain", ref, "--find-links", WHEELHOUSE,
             "--offline"], env={"XDG_CACHE_HOME": str(tmp / "cache"), "DETPACK_BUILD_ROOT": str(tmp / "broot"), **env},
            timeout=120)  # fmt: skip
    return r.stdout + r.stderr


# --- the image's Env PATH ------------------------------------------------------------------------


def test_an_images_path_runs_nothing_on_the_host(tmp_path: Path, base: list[tu.M]) -> None:
    """The image's PATH names a folder in the build root's download caches. Its interpreter, run by uv in the
    install sandbox, leaves a ``git`` there; the caches go back to the project's pool and come into the next
    build's root before detpack lays the git source out, with the image's PATH (translated to this machine's
    private root) as its own: the host must never run that ``git``."""
    marker = tmp_path / "ran-on-the-host"
    planted = f"{tmp_path}/broot/downloads/evil"
    script = (
        "#!/bin/bash\n"
        f"mkdir -p {planted}\n"
        f'printf \'#!/bin/sh\\necho "$*" >> {marker}\\nexec /usr/bin/git "$@"\\n\' > {planted}/git\n'
        f"chmod 755 {planted}/git\n"
        "exit 1\n"
    )
    ref = hostile_image(tmp_path / "img", base, script, [f"PATH={planted}:/usr/bin:/bin"])
    src = git_source(tmp_path / "src")
    first = build(src, tmp_path, ref)
    second = build(src, tmp_path, ref)
    assert not marker.exists(), f"detpack ran the image's git on the host:\n{marker.read_text()}\n{first}\n{second}"


@dataclass(frozen=True)
class Leaky:
    said: str  # all the build printed (its transcript: what the image's interpreter printed)
    uv_cache: Path  # the caller's UV_CACHE_DIR


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory, base: list[tu.M]) -> Leaky:
    """One build in an image whose interpreter (run by uv in the install sandbox, with the network) prints its
    environment and a host file it should not see, and writes into the caller's uv cache. The image's PATH
    holds a second word: a host folder (the caller's ~/.ssh, say)."""
    tmp = tmp_path_factory.mktemp("leaky")
    ssh = tmp / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "id_ed25519").write_text(SECRET + "\n")
    uv_cache = tmp / "uv-cache"
    uv_cache.mkdir()  # the caller's, used before
    script = (
        "#!/bin/bash\n"
        "echo HOSTILE-RAN >&2\n"
        "while IFS= read -r -d '' line; do echo \"env: $line\" >&2; done < /proc/self/environ\n"
        f"for f in {ssh}/id_ed25519 /run/detpack-host{ssh}/id_ed25519; do\n"
        '  [ -r "$f" ] && echo "read $f: $(cat "$f")" >&2\n'
        "done\n"
        '[ -n "$UV_CACHE_DIR" ] && echo planted > "$UV_CACHE_DIR/planted-by-the-image"\n'
        "exit 1\n"
    )
    ref = hostile_image(tmp / "img", base, script, [f"PATH=/usr/bin:/bin {ssh}"])
    said = build(
        materialize(FIXTURES / "cext", tmp / "src", 0o022),
        tmp,
        ref,
        PIP_INDEX_URL=f"https://detpack-user:{PASSWORD}@index.invalid/simple",
        UV_CACHE_DIR=str(uv_cache),
    )
    assert "HOSTILE-RAN" in said, said  # the attack was made
    return Leaky(said, uv_cache)


def test_an_images_path_binds_no_host_folder_into_installs(leaky: Leaky) -> None:
    """Every existing absolute path among the words of the install's variables is bound into the install
    sandbox (``_install_inputs``); the image's PATH is one of them."""
    assert SECRET not in leaky.said, [line for line in leaky.said.splitlines() if SECRET in line]


def test_the_images_code_never_sees_the_callers_index_password(leaky: Leaky) -> None:
    """uv runs the image's interpreter (to ask it what it is) in the install sandbox, with the network and
    the installer's variables: the index password must not be among them."""
    assert PASSWORD not in leaky.said, [line for line in leaky.said.splitlines() if PASSWORD in line]


def test_the_images_code_cannot_write_the_callers_uv_cache(leaky: Leaky) -> None:
    """The caller's UV_CACHE_DIR is bound read-write into installs; the caller's own uv uses it later, outside
    any sandbox."""
    assert not (leaky.uv_cache / "planted-by-the-image").exists()


# --- what the record names ----------------------------------------------------------------------


def test_the_recorded_python_is_the_one_that_ran(tmp_path: Path, base: list[tu.M]) -> None:
    """``inside`` resolves a path in the whole unpacked root; the sandbox sees only the image's system
    directories (and its own /proc, /tmp, /dev). PYTHON=/proc/self/root/usr/bin/python3.11 runs the image's
    /usr/bin/python3.11 in the sandbox; the record must not hash a decoy the image keeps at proc/self/root/…"""
    real, decoy = "#!/bin/sh\necho REAL\n", "#!/bin/sh\necho DECOY\n"
    dirs = ["proc", "proc/self", "proc/self/root", "proc/self/root/usr", "proc/self/root/usr/bin"]
    extra = [*(tu.directory(d) for d in dirs), tu.file("proc/self/root/usr/bin/python3.11", decoy.encode(), 0o755)]
    env = ["PATH=/usr/bin:/bin", "PYTHON=/proc/self/root/usr/bin/python3.11"]
    ref = hostile_image(tmp_path / "img", base, real, env, extra)
    bwrap = sandbox.locate()
    assert isinstance(bwrap, str), bwrap
    try:
        image = load(ref, None, tmp_path / "cache")
    except (ConfigError, InputError):  # refusing such an interpreter is a fix too
        return
    ran = sandbox.make(bwrap, [], network=False, image_root=image.root).probe([image.python])
    assert ran.stdout.strip() == "REAL", ran
    assert toolimage.python_sha256(image) == hashlib.sha256(real.encode()).hexdigest()


# --- a hostile backend (or the image's shell, which runs the compiler shims) ----------------------------


def test_a_noted_tool_that_is_a_fifo_does_not_hang_the_host(tmp_path: Path) -> None:
    """The native notes name a FIFO in the build root as a tool that ran: the host hashes the tools it finds
    there (``native._tool_entry``) and must not block on it."""
    src = tmp_path / "src"
    (src / "backend").mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "evil"\nbackend-path = ["backend"]\n\n'
        '[project]\nname = "fx-evil"\nversion = "1.0.0"\n'
    )
    broot = tmp_path / "broot"
    (src / "backend" / "evil.py").write_text(
        f"""import os, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    os.mkfifo("{broot}/tool.fifo")
    os.makedirs("{broot}/native/notes", exist_ok=True)
    with open("{broot}/native/notes/tools", "a") as f:
        f.write("make\\t{broot}/tool.fifo\\n")
    name = "fx_evil-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        z.writestr("fx_evil.py", "")
        z.writestr("fx_evil-1.0.0.dist-info/METADATA", "Metadata-Version: 2.1\\nName: fx-evil\\nVersion: 1.0.0\\n")
        z.writestr("fx_evil-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
        z.writestr("fx_evil-1.0.0.dist-info/RECORD", "")
    return name
"""
    )
    try:
        r = run([DETPACK, "build", src, "--wheel", "-o", tmp_path / "out", "--find-links", WHEELHOUSE, "--offline"],
                env={"DETPACK_BUILD_ROOT": str(broot), "XDG_CACHE_HOME": str(tmp_path / "cache")},
                timeout=30)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("detpack hung hashing a FIFO the build left where a tool was noted")
    assert "Traceback" not in r.stderr, r.stderr


# --- a hostile registry ---------------------------------------------------------------------------


class _Endless(http.server.BaseHTTPRequestHandler):
    """A registry whose manifest (or config blob) never ends: 160 MiB of it, counted as it is sent."""

    total = 160 << 20
    oversized = "manifest"
    sent = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        config = b"{}"
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
            "layers": [],
        }).encode()  # fmt: skip
        if "/manifests/" in self.path:
            kind = "manifest"
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        elif "/blobs/" in self.path:
            kind = "config"
            self.send_response(200)
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.end_headers()
        if kind != type(self).oversized:
            self.wfile.write(manifest if kind == "manifest" else config)
            return
        chunk = b"{" + b" " * ((1 << 20) - 1)
        with contextlib.suppress(OSError):
            for _ in range(type(self).total >> 20):
                self.wfile.write(chunk)
                type(self).sent += len(chunk)
                chunk = b" " * (1 << 20)


@contextlib.contextmanager
def endless_registry(oversized: str) -> Iterator[type[_Endless]]:
    handler = type("Handler", (_Endless,), {"oversized": oversized, "sent": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        handler.port = server.server_address[1]  # type: ignore[attr-defined]
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("oversized", ["manifest", "config"])
def test_a_registry_cannot_make_detpack_read_without_end(tmp_path: Path, oversized: str) -> None:
    """A registry serving a manifest, or a blob longer than its manifest says, without end: detpack must stop
    reading (the manifest at a limit, a blob at its declared size), not take all of it into memory or onto
    disk before looking at its digest."""
    with endless_registry(oversized) as handler:
        ref = f"127.0.0.1:{handler.port}/evil/toolchain:1"  # type: ignore[attr-defined]
        r = run([DETPACK, "build", FIXTURES / "cext", "-o", tmp_path / "out", "--toolchain", ref, "--offline"],
                env={"XDG_CACHE_HOME": str(tmp_path / "cache")}, timeout=120)  # fmt: skip
        assert r.code != 0, r.stdout + r.stderr
        assert handler.sent < handler.total // 2, f"{handler.sent} bytes read of the endless {oversized}: {r.stderr}"
