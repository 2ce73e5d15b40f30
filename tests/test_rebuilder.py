"""``detpack rebuilder``: rebuilders on several machines sharing one queue in a PostgreSQL store.

Real PostgreSQL (the session's server, conftest), real rebuilds (``detpack rebuild --pypi --attest``)
of 30 tiny releases made here in a --find-links folder (flit_core from the wheelhouse, with
SOURCE_DATE_EPOCH: their wheels are byte-identical when rebuilt). The three "machines" are
bubblewrap namespaces: no network at all (``--unshare-net``: the database is reached through its
Unix socket, bound in), their own hostname, and their own mounts (a private /tmp, HOME and /run;
the checkout and its venv read-only; the store's blob directory, the release folder and the keys
bound in).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import DETPACK, FIXTURES, ROOT, Postgres, require_tool, run
from detpack.provenance import reader
from detpack.store import LocalBackend

pytestmark = pytest.mark.integration

RELEASES = 30
LEASE = 5  # seconds: short, so that a killed worker's job is taken over within the test
_DB_NUMBER = iter(range(1, 1000))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every detpack this test runs on the host has its own HOME: store keys and pins never reach the real one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


def _ok(argv: list[object], **kw: object) -> str:
    r = run(argv, env={"HOME": os.environ["HOME"]}, **kw)  # type: ignore[arg-type]
    assert r.code == 0, f"{argv}\n{r.stdout}{r.stderr}"
    return r.stdout


_BUILD = """
import sys
sys.path.insert(0, sys.argv[1])
from flit_core import buildapi
import os
links = os.path.abspath(sys.argv[2])
for src in sys.argv[3:]:
    os.chdir(src)
    buildapi.build_sdist(links)
    buildapi.build_wheel(links)
"""


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> tuple[Path, list[str]]:
    """A --find-links folder of RELEASES releases (sdist and wheel each): fixtures/flit renamed fx-qNN 1.0.N."""
    top = tmp_path_factory.mktemp("releases")
    links = top / "links"
    links.mkdir()
    sources, specs = [], []
    for n in range(1, RELEASES + 1):
        name, version = f"fx-q{n:02d}", f"1.0.{n}"
        src = top / "src" / name
        shutil.copytree(FIXTURES / "flit", src)
        module = src / f"fx_q{n:02d}"
        (src / "fx_flit").rename(module)
        for path in (src / "pyproject.toml", src / "README.md", module / "__init__.py"):
            text = path.read_text().replace("fx-flit", name).replace("fx_flit", module.name)
            path.write_text(text.replace('__version__ = "1.0.0"', f'__version__ = "{version}"'))
        sources.append(str(src))
        specs.append(f"{name}=={version}")
    [flit_core] = sorted(wheelhouse.glob("flit_core-4.*.whl"))[-1:]
    env = {"SOURCE_DATE_EPOCH": "1700000000", "PATH": os.environ["PATH"]}
    r = subprocess.run([sys.executable, "-c", _BUILD, flit_core, links, *sources], env=env, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    assert len(list(links.glob("*.whl"))) == RELEASES and len(list(links.glob("*.tar.gz"))) == RELEASES
    return links, specs


def _store(postgres: Postgres, tmp_path: Path) -> tuple[str, str, Path, Path]:
    """A new PostgreSQL store with its blobs in a directory: (db, URL over TCP, blobs, the store's key)."""
    db = f"rebuilders{next(_DB_NUMBER)}"
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    url = f"{postgres.createdb(db)}?blobs={blobs}"
    key = tmp_path / "store.key"
    _ok([DETPACK, "keygen", "-o", key])
    _ok([DETPACK, "store", "--store", url, "init", "--key", key])
    return db, url, blobs, key


def _socket_url(postgres: Postgres, db: str, socket_dir: str, blobs: str) -> str:
    """The same store reached through the server's Unix socket in ``socket_dir`` (as seen inside a machine)."""
    return f"postgresql://detpack@/{db}?host={socket_dir}&port={postgres.port}&blobs={blobs}"


# -- three machines ---------------------------------------------------------------------------------


def _hidden_python() -> list[str]:
    """Binds that keep this interpreter's installation, the venv and the checkout visible (read-only) where a
    machine has a private /root, /tmp and /run."""
    binds = []
    for path in sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, ROOT)}):
        if any(path == d or path.startswith(d + "/") for d in ("/root", "/tmp", "/run")):
            binds += ["--ro-bind", path, path]
    return binds


def _machine(
    name: str, postgres: Postgres, db: str, blobs: Path, links: Path, wheelhouse: Path, keys: dict[str, Path],
    log: Path, command: list[str] | None = None,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """A worker on its own "machine": no network, own hostname, private /tmp, HOME and /run; only the database's
    socket, the blob directory, the releases and its keys bound in. Its own process group, to be SIGKILLed whole.
    ``command``: other arguments of ``detpack rebuilder`` than the worker's."""
    bwrap = require_tool("bwrap")
    socket = log.parent / f".s.PGSQL.{postgres.port}"
    if not socket.exists():  # a link to the server's socket: its own directory is the server user's, 0700
        os.link(postgres.data / socket.name, socket)
    argv = [
        bwrap, "--unshare-user", "--unshare-net", "--unshare-uts", "--hostname", name, "--die-with-parent",
        "--ro-bind", "/", "/",
        "--bind", "/proc", "/proc",  # the host's: a fresh one under bwrap could not be mounted again by the
        "--dev", "/dev",             # sandbox of each rebuild's hooks (nested bwrap)
        "--tmpfs", "/tmp", "--tmpfs", "/root", "--tmpfs", "/run", *_hidden_python(),
        "--ro-bind", str(socket), f"/run/pg/.s.PGSQL.{postgres.port}",
        "--bind", str(blobs), "/run/blobs",
        "--ro-bind", str(links), "/run/links",
        "--ro-bind", str(wheelhouse), "/run/wheelhouse",
        "--ro-bind", str(keys["rebuilder"]), "/run/keys/rebuilder.key",
        "--ro-bind", str(keys["store"]), "/run/keys/store.key",
        "--chdir", "/tmp",
        sys.executable, "-m", "detpack", "rebuilder",
    ]  # fmt: skip
    argv += command or [
        "run", "--store", _socket_url(postgres, db, "/run/pg", "/run/blobs"),
        "--key", "/run/keys/rebuilder.key", "--signing-key", "/run/keys/store.key",
        "--lease", str(LEASE), "--poll", "0.5", "--drain",
        "--offline", "--find-links", "/run/links", "--find-links", "/run/wheelhouse",
    ]  # fmt: skip
    env = {"PATH": os.environ["PATH"], "HOME": "/root", "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _rebuilding(pgid: int) -> bool:
    """Whether a ``detpack rebuild --pypi`` runs in process group ``pgid`` (a worker mid-rebuild)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[2]) == pgid and b"rebuild\0--pypi" in cmdline:
            return True
    return False


def _sql(postgres: Postgres, db: str, query: str) -> list[list[str]]:
    return [line.split("|") for line in postgres.psql(db, query).splitlines() if line]


def _wait(what: str, condition: Callable[[], object], deadline: float, procs: dict[str, Any], logs: Path) -> None:
    """Until ``condition()``; fails at the deadline, or when a worker in ``procs`` has stopped (with its log)."""
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        for m, proc in procs.items():
            assert proc.poll() is None, f"{m} exited {proc.returncode}:\n{(logs / m / 'worker.log').read_text()}"
        time.sleep(0.1)


@pytest.mark.slow
def test_three_machines_drain_thirty_releases_and_a_killed_workers_job_is_taken_over(
    postgres: Postgres, releases: tuple[Path, list[str]], wheelhouse: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    deadline = started + 240
    links, specs = releases
    db, url, blobs, store_key = _store(postgres, tmp_path)
    listing = tmp_path / "releases.txt"
    listing.write_text("\n".join(specs) + "\n")
    out = _ok([DETPACK, "rebuilder", "enqueue", "--store", url, "-r", listing])
    assert out.splitlines()[-1] == f"{RELEASES} releases queued, 0 already", out
    again = _ok([DETPACK, "rebuilder", "enqueue", "--store", url, specs[0], specs[1].upper().replace("FX-Q", "fx_Q")])
    assert again.splitlines() == [f"already  {specs[0]}", f"already  {specs[1].upper().replace('FX-Q', 'fx_Q')}",
                                  "0 releases queued, 2 already"], again  # fmt: skip
    assert _sql(postgres, db, "SELECT count(*) FROM detpack_rebuild_jobs") == [[str(RELEASES)]]

    keys: dict[str, dict[str, Path]] = {}
    keyids: dict[str, str] = {}
    from detpack.provenance.signing import load_private_key

    for m in ("machine-a", "machine-b", "machine-c"):
        (tmp_path / m).mkdir()
        _ok([DETPACK, "keygen", "-o", tmp_path / m / "rebuilder.key"])
        keys[m] = {"rebuilder": tmp_path / m / "rebuilder.key", "store": store_key}
        keyids[m] = load_private_key(keys[m]["rebuilder"]).public.keyid

    def machine(m: str) -> subprocess.Popen[bytes]:
        return _machine(m, postgres, db, blobs, links, wheelhouse, keys[m], tmp_path / m / "worker.log")

    def outcomes(where: str = "true") -> list[list[str]]:
        return _sql(postgres, db, f"SELECT release, keyid, verdict, worker FROM detpack_rebuild_outcomes WHERE {where}")

    # A machine has no network: the database's TCP port is out of reach, its Unix socket is not.
    for store, expected in ((url, 2), (_socket_url(postgres, db, "/run/pg", "/run/blobs"), 0)):
        log = tmp_path / "machine-a" / "network.log"
        probe = _machine("machine-a", postgres, db, blobs, links, wheelhouse, keys["machine-a"], log,
                         ["status", "--store", store])  # fmt: skip
        assert probe.wait(timeout=60) == expected, log.read_text()
    said = log.read_text().splitlines()
    assert "cannot connect to the database" in said[0] and said[-1].startswith(f"{RELEASES} jobs, 0 leased"), said

    # Machine A starts first and B and C once it has finished a release: A stays ahead of them in the queue,
    # so the release it holds when it is killed is one the others have not attested yet, however loaded the
    # machine running the test is.
    procs = {"machine-a": machine("machine-a")}
    a = procs["machine-a"]
    try:
        key_a = keyids["machine-a"]
        mine = f"keyid = '{key_a}'"
        _wait("machine A to finish its first release", lambda: outcomes(mine), deadline, procs, tmp_path)
        procs |= {m: machine(m) for m in ("machine-b", "machine-c")}
        # Machine A: SIGKILLed (the worker, its rebuild and the rebuild's sandbox) mid-rebuild, after one release,
        # holding a release that another key has not attested yet.
        held_by_a = (
            f"SELECT j.release FROM detpack_rebuild_jobs j WHERE j.claimed_by = '{key_a}' AND j.lease_until > now() "
            "AND (SELECT count(*) FROM detpack_rebuild_outcomes o WHERE o.release = j.release) < 2"
        )
        rebuilding = lambda: outcomes(mine) and _sql(postgres, db, held_by_a) and _rebuilding(a.pid)  # noqa: E731
        _wait("machine A to rebuild its second release", rebuilding, deadline, procs, tmp_path)
        os.killpg(a.pid, signal.SIGKILL)
        a.wait()
        killed_at = time.monotonic()
        [[held, lease_until, killed_worker]] = _sql(
            postgres, db, f"SELECT release, lease_until, worker FROM detpack_rebuild_jobs WHERE claimed_by = '{key_a}'"
        )
        assert outcomes(f"{mine} AND release = '{held}'") == []
        waiting = set(keyids.values()) - {key_a} - {k for _, k, _, _ in outcomes(f"release = '{held}'")}
        assert waiting, f"{held}: attested by every other key before A was killed (a race of the test's)"
        # Its lease stays until it runs out; then B or C takes the job and finishes it.
        others = f"release = '{held}' AND keyid IN ({', '.join(repr(k) for k in waiting)})"
        alive = {m: p for m, p in procs.items() if p is not a}
        _wait(f"another machine to finish {held}", lambda: outcomes(others), deadline, alive, tmp_path)
        took_over = time.monotonic() - killed_at
        [[after_lease]] = _sql(
            postgres, db, f"SELECT bool_and(finished > '{lease_until}') FROM detpack_rebuild_outcomes WHERE {others}"
        )
        assert after_lease == "t"
        # Machine A comes back (a new worker, the same key) and drains what its key has not attested.
        procs["machine-a"] = machine("machine-a")
        for m, proc in procs.items():
            proc.wait(timeout=max(1, deadline - time.monotonic()))
            assert proc.returncode == 0, (tmp_path / m / "worker.log").read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    drained = time.monotonic() - started

    # Every release attested once per key, byte-identical, by the machine holding that key.
    rows = outcomes()
    assert len(rows) == 3 * RELEASES
    by_release: dict[str, set[str]] = {}
    for release, keyid, verdict, worker in rows:
        assert verdict == "byte-identical", rows
        machine_name = next(m for m, k in keyids.items() if k == keyid)
        assert worker.startswith(f"{machine_name}:"), (worker, machine_name)  # its hostname: its own UTS namespace
        by_release.setdefault(release, set()).add(keyid)
    assert by_release == {s: set(keyids.values()) for s in specs}
    takeovers = _sql(postgres, db, "SELECT release, takeovers FROM detpack_rebuild_jobs WHERE takeovers > 0")
    assert takeovers == [[held, "1"]], takeovers  # held by A when it died, then taken over once; no other
    said = "".join((tmp_path / m / "worker.log").read_text() for m in ("machine-b", "machine-c"))
    assert f"* claimed {held}: taken over from {killed_worker}, whose lease ran out" in said, said
    # The worker that died never finished it; the one that came back did, under another worker name (pid).
    [[came_back]] = _sql(
        postgres, db, f"SELECT worker FROM detpack_rebuild_outcomes WHERE {mine} AND release = '{held}'"
    )
    assert came_back.startswith("machine-a:") and came_back != killed_worker, (came_back, killed_worker)

    # status: no lease left, three outcomes per release.
    status = json.loads(_ok([DETPACK, "rebuilder", "status", "--store", url, "--json"]))
    assert len(status) == RELEASES and all(j["lease"] is None for j in status)
    assert all(len(j["outcomes"]) == 3 for j in status)
    text = _ok([DETPACK, "rebuilder", "status", "--store", url])
    assert text.splitlines()[-1] == f"{RELEASES} jobs, 0 leased, {3 * RELEASES} outcomes from 3 keys", text

    # The store holds each attestation once, signed by the key that recorded it; it verifies clean.
    log = json.loads(_ok([DETPACK, "store", "--store", url, "log", "--json"]))
    attestations = [e for e in log if e["type"] == "attestation"]
    assert len(attestations) == 3 * RELEASES
    recorded = {a for j in status for o in j["outcomes"] for a in o["attestations"]}
    assert recorded == {f"sha256:{e['digest']}" for e in attestations}
    # Each rebuild ran on its key's machine (the hostname its record names), in the hooks' own sandbox inside it.
    machine_of = {k: m for m, k in keyids.items()}
    for j in status:
        for o in j["outcomes"]:
            [digest] = o["attestations"]
            with LocalBackend(blobs).open_blob(digest.removeprefix("sha256:")) as blob:
                rebuilder = reader.read(blob.read(), digest).statement["predicate"]["rebuilder"]
            assert rebuilder["host"]["hostname"] == machine_of[o["keyid"]], rebuilder["host"]
            assert rebuilder["sandbox"]["kind"] == "bubblewrap" and rebuilder["sandbox"]["network"] == "none"
    per_wheel: dict[str, set[str]] = {}
    for e in attestations:
        (subject,) = e["subjects"]
        per_wheel.setdefault(subject, set()).update(e["keyids"])
    assert len(per_wheel) == RELEASES and all(k == set(keyids.values()) for k in per_wheel.values())
    pub = tmp_path / "store.pub"
    pub.write_text(_ok([DETPACK, "store", "--store", url, "key"]))
    verified = _ok([DETPACK, "store", "--store", url, "verify", "--key", pub])
    assert verified.startswith(f"verified: {1 + 3 * RELEASES} log entries"), verified
    print(f"3 machines, {RELEASES} releases: drained in {drained:.1f} s; the killed job taken over {took_over:.1f} s "
          f"after the kill (lease {LEASE} s)")  # fmt: skip


# -- one worker on this machine: wanted counts, failures as outcomes, errors ----------------------------


def test_a_release_that_cannot_be_rebuilt_is_an_outcome_and_wanted_counts_rebuilt_keys(
    postgres: Postgres, releases: tuple[Path, list[str]], wheelhouse: Path, tmp_path: Path
) -> None:
    links, specs = releases
    db, url, _, store_key = _store(postgres, tmp_path)
    _ok([DETPACK, "rebuilder", "enqueue", "--store", url, specs[0], specs[1], "fx-missing==9.9", "--attestations", "1"])
    workers = {}
    for k in ("one", "two"):
        _ok([DETPACK, "keygen", "-o", tmp_path / f"{k}.key"])
        workers[k] = [
            DETPACK, "rebuilder", "run", "--store", url, "--key", tmp_path / f"{k}.key", "--signing-key", store_key,
            "--drain", "--poll", "0.2", "--offline", "--find-links", links, "--find-links", wheelhouse, "--json",
        ]  # fmt: skip
    # Key one's worker posted its attestation of specs[0] once, and died before it recorded the outcome: when it
    # comes back, the store binds that attestation's name already, and the one posted then is the one recorded.
    first = tmp_path / "first"
    _ok([DETPACK, "rebuild", "--pypi", specs[0], "--attest", tmp_path / "one.key", "-o", first, "-q",
         "--offline", "--find-links", links, "--find-links", wheelhouse])  # fmt: skip
    [posted] = first.glob("*.rebuild.*.intoto.jsonl")
    _ok([DETPACK, "store", "--store", url, "push", "--attestation", posted])
    done = json.loads(_ok(workers["one"]))
    assert done[0]["attestations"] == [f"sha256:{hashlib.sha256(posted.read_bytes()).hexdigest()}"]
    log = json.loads(_ok([DETPACK, "store", "--store", url, "log", "--json"]))
    assert [e["name"] for e in log if e["type"] == "attestation"] == [
        posted.name, posted.name.replace("q01-1.0.1", "q02-1.0.2")
    ]  # fmt: skip
    assert [(d["release"], d["verdict"]) for d in done] == [
        (specs[0], "byte-identical"), (specs[1], "byte-identical"), ("fx-missing==9.9", "not rebuilt"),
    ]  # fmt: skip
    assert done[2]["reason"].startswith("no sdist of this release") and done[2]["attestations"] == []
    # One rebuilt attestation was wanted for each: the second key takes only the release nobody rebuilt.
    assert [(d["release"], d["verdict"]) for d in json.loads(_ok(workers["two"]))] == [
        ("fx-missing==9.9", "not rebuilt")
    ]
    # Nothing loops: a key never takes a release again once it has an outcome for it.
    assert json.loads(_ok(workers["one"])) == [] and json.loads(_ok(workers["two"])) == []
    status = {j["release"]: j for j in json.loads(_ok([DETPACK, "rebuilder", "status", "--store", url, "--json"]))}
    assert [len(status[r]["outcomes"]) for r in (specs[0], specs[1], "fx-missing==9.9")] == [1, 1, 2]
    assert status[specs[0]]["wanted"] == 1 and status[specs[0]]["claims"] == 1
    assert status["fx-missing==9.9"]["claims"] == 2 and status["fx-missing==9.9"]["takeovers"] == 0
    assert _sql(postgres, db, "SELECT count(*) FROM detpack_rebuild_outcomes WHERE verdict = 'not rebuilt'") == [["2"]]


@pytest.mark.slow
def test_a_rebuild_that_would_run_for_an_hour_is_given_up_and_recorded(
    postgres: Postgres, wheelhouse: Path, tmp_path: Path
) -> None:
    """--timeout: a release whose backend sleeps an hour is given up (its processes killed, its lease freed) and
    recorded as not rebuilt, so no worker holds it forever and none takes it again."""
    from test_pypi_breadth import _slow_sdist

    from conftest import minimal_wheel

    links = tmp_path / "links"
    links.mkdir()
    _slow_sdist(links)
    minimal_wheel(links / "fx_slow-1.0-py3-none-any.whl")
    _, url, _, store_key = _store(postgres, tmp_path)
    _ok([DETPACK, "rebuilder", "enqueue", "--store", url, "fx_slow==1.0"])
    _ok([DETPACK, "keygen", "-o", tmp_path / "one.key"])
    worker = [
        DETPACK, "rebuilder", "run", "--store", url, "--key", tmp_path / "one.key", "--signing-key", store_key,
        "--drain", "--poll", "0.2", "--offline", "--find-links", links, "--find-links", wheelhouse, "--json",
        "--timeout", "15s",
    ]  # fmt: skip
    started = time.monotonic()
    [done] = json.loads(_ok(worker))
    assert time.monotonic() - started < 120
    assert done["verdict"] == "not rebuilt" and done["reason"].startswith("gave up after 15 s"), done
    assert json.loads(_ok(worker)) == []  # recorded: not taken again
    left = subprocess.run(["pgrep", "-af", "fx_slow"], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"processes left behind: {left.stdout}"
    status = json.loads(_ok([DETPACK, "rebuilder", "status", "--store", url, "--json"]))
    assert [j["release"] for j in status] == ["fx-slow==1.0"] and not status[0].get("lease"), status


def test_bad_stores_keys_and_releases_are_one_line_exit_2(postgres: Postgres, tmp_path: Path) -> None:
    port = postgres.port
    key = tmp_path / "k.key"
    _ok([DETPACK, "keygen", "-o", key])
    (tmp_path / "dir-store").mkdir()
    good = f"{postgres.createdb(f'rebuilders{next(_DB_NUMBER)}')}?blobs={tmp_path / 'blobs'}"
    cases = [
        (["status", "--store", tmp_path / "dir-store"], "lives in a PostgreSQL store, and this is a directory store"),
        (["status", "--store", "oci://127.0.0.1:1/repo"], "this is a registry store"),
        (["status", "--store", f"postgresql://detpack@127.0.0.1:{port}/x"], "needs one ?blobs="),
        (["status", "--store", f"postgresql://u:secret@127.0.0.1:1/x?blobs={tmp_path}"], "cannot connect"),
        (["enqueue", "--store", good, "fx-q01>=1"], "not an exact release"),
        (["enqueue", "--store", good], "give NAME==VERSION"),
        (["run", "--store", good, "--key", tmp_path / "nope.key"], "nope.key"),
        (["run", "--store", good, "--key", f"{key}.pub"], "is a public key"),
        (["run", "--store", good, "--key", key, "--signing-key", tmp_path / "none.key"], "none.key"),
        (["run", "--store", good, "--key", key, "--lease", "0"], "--lease 0"),
    ]
    for argv, expected in cases:
        r = run([DETPACK, "rebuilder", *argv], env={"HOME": os.environ["HOME"]})
        assert r.code == 2, (argv, r.stdout, r.stderr)
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
        assert "Traceback" not in r.stderr and "secret" not in r.stderr, r.stderr
    r = run([DETPACK, "rebuilder", "status", "--store", good], env={"HOME": os.environ["HOME"]})
    assert r.code == 0 and r.stdout == "0 jobs, 0 leased, 0 outcomes from 0 keys\n", r.stdout + r.stderr
