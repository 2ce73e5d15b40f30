"""Every backend hook runs in a bubblewrap sandbox: no network, no host files but the system's.

Each test also shows its perturbation works: without the sandbox (bwrap off PATH) the download
reaches the server and the host file's bytes land in the wheel.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, Run, materialize, plain_user_detpack, require_tool, run

PAYLOAD = b"bytes only the network had\n"


@pytest.fixture(scope="module")
def bwrap() -> str:
    return require_tool("bwrap")


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 that serves PAYLOAD and remembers each request path."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/page", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def _build(src: Path, out: Path, wheelhouse: Path, *extra: str, path: str | None = None) -> Run:
    env = {"PATH": path} if path is not None else None
    return run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", *extra], env=env)


def _said(r: Run) -> list[str]:
    """stderr without progress steps and the warning a non-default build root (DETPACK_BUILD_ROOT) adds."""
    return [ln for ln in r.stderr.splitlines() if not ln.startswith("* ") and "is not the default" not in ln]


def _member(out: Path, name: str) -> bytes:
    [wheel] = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name)


def _statement(out: Path) -> dict[str, object]:
    [prov] = out.glob("*.provenance.json")
    value = json.loads(prov.read_bytes())
    assert isinstance(value, dict)
    return value


def _internal(statement: dict[str, object]) -> dict[str, object]:
    predicate = statement["predicate"]
    assert isinstance(predicate, dict)
    return predicate["buildDefinition"]["internalParameters"]  # type: ignore[no-any-return]


def _no_bwrap(tmp_path: Path) -> str:
    """A PATH without bwrap (detpack runs pip and the backend by absolute path; git is optional)."""
    empty = tmp_path / "bin-without-bwrap"
    empty.mkdir(exist_ok=True)
    return str(empty)


def test_a_backend_that_downloads_fails_in_one_line_and_writes_nothing(
    bwrap: str, server: tuple[str, list[str]], tmp_path: Path, wheelhouse: Path
) -> None:
    url, hits = server
    src = materialize(FIXTURES / "net-fetch", tmp_path / "src", 0o022)
    (src / "fx_net" / "fetch_url.txt").write_text(url + "\n")
    out = tmp_path / "out"

    r = _build(src, out, wheelhouse)
    assert r.code == 2, r.stdout + r.stderr
    [line] = _said(r)
    assert "tried to reach the network during build_wheel" in line and "--allow-network" in line, line
    assert hits == []  # the server never saw the request
    assert not out.exists() or list(out.iterdir()) == []

    r = _build(src, out, wheelhouse, "--allow-network")
    assert r.code == 0, r.stderr
    assert hits == ["/page"]  # build_wheel (from the sdist) fetched it, once
    assert _member(out, "fx_net/fetched.txt") == PAYLOAD
    statement = _statement(out)
    sandbox = _internal(statement)["sandbox"]
    assert sandbox == {"kind": "bubblewrap", "network": "allowed", "hermetic": False, **_fixed(sandbox)}
    predicate = statement["predicate"]
    assert isinstance(predicate, dict)
    assert predicate["buildDefinition"]["externalParameters"]["allowNetwork"] is True


def _fixed(sandbox: object) -> dict[str, object]:
    assert isinstance(sandbox, dict)
    assert (sandbox["hostname"], sandbox["uid"], sandbox["gid"]) == ("detpack", 1000, 1000)
    return {k: sandbox[k] for k in ("hostname", "uid", "gid")}


def test_allow_network_in_tool_config_is_the_same_as_the_option(
    bwrap: str, server: tuple[str, list[str]], tmp_path: Path, wheelhouse: Path
) -> None:
    url, hits = server
    src = materialize(FIXTURES / "net-fetch", tmp_path / "src", 0o022)
    (src / "fx_net" / "fetch_url.txt").write_text(url + "\n")
    with (src / "pyproject.toml").open("a") as f:
        f.write("\n[tool.detpack]\nallow-network = true\n")
    out = tmp_path / "out"
    r = _build(src, out, wheelhouse, "--wheel")
    assert r.code == 0, r.stderr
    assert hits == ["/page"] and _member(out, "fx_net/fetched.txt") == PAYLOAD
    assert _internal(_statement(out))["sandbox"]["network"] == "allowed"  # type: ignore[index]


def test_a_host_file_outside_the_tree_does_not_reach_the_wheel(bwrap: str, tmp_path: Path, wheelhouse: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("a host file no build declared\n")
    src = materialize(FIXTURES / "host-file", tmp_path / "src", 0o022)
    backend = src / "_backend" / "host_file_backend.py"
    backend.write_text(backend.read_text().replace("/nonexistent/detpack-fixture-host-file", str(secret)))

    sandboxed = tmp_path / "sandboxed"
    r = _build(src, sandboxed, wheelhouse)
    assert r.code == 0, r.stderr
    assert _member(sandboxed, "fx_host/host.txt") == b"absent\n"
    sandbox = _internal(_statement(sandboxed))["sandbox"]
    assert sandbox == {"kind": "bubblewrap", "network": "none", "hermetic": True, **_fixed(sandbox)}

    # the perturbation: without a sandbox the same build embeds the host file
    plain = tmp_path / "plain"
    r = _build(src, plain, wheelhouse, path=_no_bwrap(tmp_path))
    assert r.code == 0, r.stderr
    assert _member(plain, "fx_host/host.txt") == secret.read_bytes()
    warnings = [ln for ln in _said(r) if "no sandbox" in ln]
    assert len(warnings) == 1 and "bubblewrap" in warnings[0] and "--require-sandbox" in warnings[0], r.stderr
    assert _internal(_statement(plain))["sandbox"] == {"kind": "none", "network": "allowed", "hermetic": False}


def test_require_sandbox_without_bwrap_is_one_line_and_writes_nothing(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    out = tmp_path / "out"
    r = _build(src, out, wheelhouse, "--require-sandbox", path=_no_bwrap(tmp_path))
    assert r.code == 2, r.stdout + r.stderr
    [line] = _said(r)
    assert "bwrap" in line and "--require-sandbox" in line and "apt-get install bubblewrap" in line, line
    assert not out.exists()
    with (src / "pyproject.toml").open("a") as f:
        f.write("\n[tool.detpack]\nrequire-sandbox = true\n")
    r = _build(src, out, wheelhouse, path=_no_bwrap(tmp_path))
    assert r.code == 2 and len(_said(r)) == 1, r.stderr


def test_the_sandbox_sees_only_what_it_should(bwrap: str, tmp_path: Path) -> None:
    """The wrapper itself, as a hook meets it: fixed identity, no network, none of the host's own files."""
    import subprocess
    import sys

    from conftest import ROOT
    from detpack.build import sandbox

    private = tmp_path / "runs" / "abc123"  # a build's own root on the host ...
    private.mkdir(parents=True)
    fixed = Path("/tmp/detpack-build")  # ... seen at the fixed path inside
    outside = tmp_path / "outside.txt"
    outside.write_text("host\n")
    (private / "env-wheel").mkdir()  # an isolated environment: read-only to the hooks
    (private / "downloads").mkdir()  # the installers' caches: not there at all
    (private / "downloads" / "kept.whl").write_text("cached\n")
    found = sandbox.locate()
    assert isinstance(found, str), found
    box = sandbox.make(found, [(private, fixed)], network=False)
    hidden = [outside, ROOT / "README.md", Path("/root/.bashrc"), Path("/home"), private, fixed / "downloads/kept.whl"]
    (private / "probe.py").write_text(
        "import os, socket, sys\n"
        "print(socket.gethostname(), os.getuid(), os.getgid(), os.getcwd())\n"
        "print([os.path.exists(p) for p in sys.argv[1:]])\n"
        f"open({str(fixed / 'written')!r}, 'w').write('x')\n"
        "try:\n"
        f"    open({str(fixed / 'env-wheel' / 'x')!r}, 'w')\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
        "socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
    )
    python = os.path.realpath(sys.executable)  # the interpreter itself (a build env's python links to it)
    wrapped = box.wrap(
        [python, str(fixed / "probe.py"), *map(str, hidden)],
        fixed,
        protected=[(str(private / "env-wheel"), str(fixed / "env-wheel"))],
        hidden=[str(fixed / "downloads")],
    )
    proc = subprocess.run(wrapped, capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"detpack 1000 1000 {fixed}", proc.stderr
    assert lines[1] == str([False] * len(hidden)), lines[1]
    assert (private / "written").read_text() == "x"  # the private root is writable, at the fixed path
    assert lines[2] == "30", lines  # EROFS: the environment is read-only inside
    assert not (private / "env-wheel" / "x").exists()
    assert proc.returncode != 0 and "Network is unreachable" in proc.stderr, proc.stderr
    # the perturbation: the same probe outside the sandbox sees the files
    seen = "import os, sys; print([os.path.exists(p) for p in sys.argv[1:]])"
    plain = subprocess.run([python, "-c", seen, *map(str, hidden)], capture_output=True, text=True)
    assert plain.stdout.startswith("[True, True"), plain.stdout


def test_a_plain_user_builds_in_the_sandbox(bwrap: str, wheelhouse: Path) -> None:
    """CI runs as root; the sandbox must also work for a plain uid (unprivileged user namespaces).

    As root, the build is run as uid/gid 65534 (setpriv) with Debian's /usr/bin/python3 (this
    checkout's own interpreter may sit under root's 0700 home), detpack and its libraries from
    this checkout; as a plain user already, it runs as is.
    """
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="detpack-plain-user-"))  # pytest's own tmp dirs are 0700
    try:
        src = materialize(FIXTURES / "flit", home / "src", 0o022)
        detpack, env = plain_user_detpack(home)
        out = home / "out"
        argv = [*detpack, "build", src, "-o", out, "--find-links", wheelhouse, "--offline"]
        r = run(argv, env=env)
        assert r.code == 0, r.stderr
        assert "no sandbox" not in r.stderr, r.stderr
        sandbox = _internal(_statement(out))["sandbox"]
        assert sandbox == {"kind": "bubblewrap", "network": "none", "hermetic": True, **_fixed(sandbox)}
        assert {p.stat().st_uid for p in out.iterdir()} == {65534 if os.geteuid() == 0 else os.geteuid()}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_builds_at_once_do_not_wait_and_see_the_same_paths(bwrap: str, tmp_path: Path, wheelhouse: Path) -> None:
    """Three builds started together: none waits for another (each has a private build root), every
    hook saw the one fixed path (fixtures/machine-facts writes its working directory and wheel
    directory into the wheel), the wheels are byte-identical, and no private root is left behind.
    The perturbation: while they run, the private roots are distinct directories on the host."""
    import subprocess
    import time

    root = tmp_path / "root"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "DETPACK_BUILD_ROOT": str(root)}
    procs, outs = [], []
    for i in range(3):
        src = materialize(FIXTURES / "machine-facts", tmp_path / f"src{i}", 0o022)
        outs.append(tmp_path / f"out{i}")
        argv = [DETPACK, "build", src, "-o", outs[-1], "--find-links", wheelhouse, "--offline", "-v"]
        with (tmp_path / f"log{i}").open("wb") as log:  # a file, not a pipe nobody reads while they run
            procs.append(subprocess.Popen(list(map(str, argv)), env=env, stdout=log, stderr=subprocess.STDOUT))
    seen: set[str] = set()
    while any(p.poll() is None for p in procs):
        if (root / "runs").is_dir():
            seen.update(d.name for d in (root / "runs").iterdir())
        time.sleep(0.05)
    results = [(p.returncode, "", (tmp_path / f"log{i}").read_text()) for i, p in enumerate(procs)]
    assert len(seen) >= 2, seen  # at least two private roots existed (they ran at once)
    for code, _, err in results:
        assert code == 0, err
        assert "waiting for another detpack build" not in err, err
    assert not any("/runs/" in err for _, _, err in results)  # the log names the fixed path only
    facts = [_member(out, "fx_machine/machine.txt").decode() for out in outs]
    assert f"cwd {root}/src/unpacked/fx_machine-1.0.0" in facts[0], facts[0]
    assert f"wheel_directory {root}/raw/wheel" in facts[0], facts[0]
    assert facts[0] == facts[1] == facts[2]
    wheels = [next(out.glob("*.whl")).read_bytes() for out in outs]
    assert wheels[0] == wheels[1] == wheels[2]
    assert list((root / "runs").iterdir()) == []


def test_a_crashed_builds_private_root_is_swept(bwrap: str, tmp_path: Path) -> None:
    """A private root nobody holds, older than a minute, is a crashed build's: the next build removes
    it. One a build still holds, or one just made, stays."""
    import fcntl
    import time

    from detpack.build.buildroot import STALE_AFTER, build_root

    runs = tmp_path / "root" / "runs"
    old, held, new = (runs / n for n in ("old", "held", "new"))
    for d in (old, held, new):
        (d / "src").mkdir(parents=True)
    past = time.time() - STALE_AFTER - 60
    for d in (old, held):
        os.utime(d, (past, past))
    fd = os.open(held, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with build_root(tmp_path / "root", private=True) as root:
            assert root.private and root.seen == tmp_path / "root"
            assert sorted(p.name for p in runs.iterdir()) == sorted(["held", "new", root.root.name])
        assert sorted(p.name for p in runs.iterdir()) == ["held", "new"]  # its own root is gone too
    finally:
        os.close(fd)


def test_locked_builds_at_once_share_the_environment_cache(bwrap: str, tmp_path: Path, wheelhouse: Path) -> None:
    """Two builds with one lock started together: an entry is claimed by one build at a time, so both
    build (one may make its own environment meanwhile), byte-identically, and one entry is kept."""
    import subprocess

    root = tmp_path / "root"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "DETPACK_BUILD_ROOT": str(root)}
    srcs = [materialize(FIXTURES / "flit", tmp_path / f"src{i}", 0o022) for i in range(2)]
    lock = tmp_path / "pylock.build.toml"
    r = run([DETPACK, "lock", srcs[0], "-o", lock, "--find-links", wheelhouse, "--offline"], env=env)
    assert r.code == 0, r.stderr
    for _ in range(2):  # the second round finds a cached entry: one claims it, the other makes its own
        procs = []
        for i, src in enumerate(srcs):
            argv = [DETPACK, "build", src, "-o", tmp_path / f"out{i}", "--lock", lock, "--find-links", wheelhouse]
            procs.append(subprocess.Popen([*map(str, argv), "--offline", "-q"], env=env, stderr=subprocess.PIPE))
        for p in procs:
            _, err = p.communicate()
            assert p.returncode == 0, err.decode()
        wheels = [next((tmp_path / f"out{i}").glob("*.whl")).read_bytes() for i in range(2)]
        assert wheels[0] == wheels[1]
        entries = [p for p in (root / "cache").iterdir() if p.name not in ("requires", "downloads-by-project")]
        assert len(entries) == 1, entries
        assert (entries[0] / "detpack-env.json").is_file()


def test_a_preloaded_library_reaches_the_hooks_while_bwrap_runs_without_it(tmp_path: Path, wheelhouse: Path) -> None:
    """check --vary clock preloads libfaketime: bwrap must not run under it (libfaketime keeps it
    from making namespaces, and the build would silently lose its sandbox); the hooks must."""
    require_tool("bwrap")
    library = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
    if library is None:
        require_tool("faketime")  # the package that ships the library: skip locally, fail in CI
        pytest.fail("faketime is installed but libfaketime.so.1 is not under /usr/lib/*/faketime")
    src = materialize(FIXTURES / "machine-facts", tmp_path / "src", 0o022)
    env = {"LD_PRELOAD": str(library), "FAKETIME": "@2001-02-03 04:05:06"}
    passed = [f for name in env for f in ("--pass-env", name)]
    out = tmp_path / "dist"
    r = run([DETPACK, "build", src, "-w", "-o", out, "--find-links", wheelhouse, "--offline", *passed], env=env)
    assert r.code == 0, r.stderr
    statement = json.loads(next(out.glob("*.provenance.json")).read_text())
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["sandbox"]["kind"] == "bubblewrap"
    assert "no sandbox" not in r.stderr, r.stderr
    assert statement["predicate"]["buildDefinition"]["internalParameters"]["codeInjectingVariables"] == ["LD_PRELOAD"]
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        facts = zf.read("fx_machine/machine.txt").decode()
    assert "host detpack" in facts, facts  # the hook ran in the sandbox, not on the host
