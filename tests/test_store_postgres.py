"""The store's PostgreSQL backend against Debian's PostgreSQL (started by the tests, on 127.0.0.1):
the same write-once rules, log and audit as the other backends; many writers on one store, each
operation logged exactly once; writers and the database server killed at random moments."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from test_store import KILLED_AT_WRITE, files, isolated_home  # noqa: F401 - the fixtures

from conftest import DETPACK, ROOT, Postgres, run, sha256
from detpack.provenance.signing import load_public_key
from detpack.store import LocalBackend, open_backend, verify_store
from detpack.store.postgres import PostgresBackend

pytestmark = pytest.mark.integration

_DB_NUMBER = iter(range(1, 1000))


def _store(postgres: Postgres, tmp_path: Path, blobs: str | None = None) -> tuple[str, str]:
    """A new database: (its name, the store URL with blobs in a directory under ``tmp_path``)."""
    name = f"store{next(_DB_NUMBER)}"
    url = postgres.createdb(name)
    return name, f"{url}?blobs={blobs or tmp_path / 'blobs'}"


def _ok(r: object) -> str:
    assert getattr(r, "code", None) == 0, getattr(r, "stdout", "") + getattr(r, "stderr", "")
    return str(getattr(r, "stdout", ""))


def _backend(url: str) -> PostgresBackend | LocalBackend:
    backend = open_backend(url)
    assert isinstance(backend, PostgresBackend | LocalBackend)
    return backend


def _problems(url: str, key: Path | None = None) -> list[str]:
    backend = _backend(url)
    try:
        return list(verify_store(backend, load_public_key(key) if key else None).problems)
    finally:
        if isinstance(backend, PostgresBackend):
            backend.close()


def _edit_entry(postgres: Postgres, db: str, idx: int, old: str, new: str) -> None:
    """Change log entry ``idx`` in the table, as someone with write access to the database could."""
    text = "convert_from(record, 'UTF8')"
    postgres.psql(
        db,
        f"UPDATE detpack_log SET record = convert_to(replace({text}, '{old}', '{new}'), 'UTF8') "
        f"WHERE stream = 'entries' AND idx = {idx}",
    )


def test_round_trip_and_tampering_in_the_database(
    tmp_path: Path,
    files: dict[str, Path],  # noqa: F811
    postgres: Postgres,
) -> None:
    db, url = _store(postgres, tmp_path)
    out = _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"], "--provenance", files["envelope"]]))
    assert out.count("stored  ") == 2
    digest = sha256(files["1.0"])
    assert _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"]])).count("unchanged") == 1
    # Other bytes under a bound name: refused, exit 1, nothing logged.
    impostor = tmp_path / "elsewhere" / files["1.0"].name
    impostor.parent.mkdir()
    impostor.write_bytes(b"other bytes")
    before = postgres.psql(db, "SELECT stream, idx, encode(record, 'hex') FROM detpack_log ORDER BY stream, idx")
    r = run([DETPACK, "store", "--store", url, "push", impostor])
    assert r.code == 1 and "write-once" in r.stderr, r.stderr
    assert postgres.psql(db, "SELECT stream, idx, encode(record, 'hex') FROM detpack_log ORDER BY 1, 2") == before
    pub = files["builder.pub"]
    _ok(run([DETPACK, "store", "--store", url, "promote", digest, "--to", "prod", "--key", pub]))
    assert _ok(run([DETPACK, "store", "--store", url, "resolve", "prod"])).strip().endswith(digest)
    assert digest in _ok(run([DETPACK, "store", "--store", url, "show", files["1.0"].name]))
    key_pem = tmp_path / "store.pub"
    key_pem.write_text(_ok(run([DETPACK, "store", "--store", url, "key"])))
    verified = _ok(run([DETPACK, "store", "--store", url, "verify", "--key", key_pem]))
    assert "verified" in verified and "4 log entries" in verified, verified
    # The database's constraints: no second record at an index, no record past the length row.
    r = postgres._pg(
        postgres.bin / "psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "detpack", "-d", db,
        "-Atc", "INSERT INTO detpack_log VALUES ('entries', 1, 'x')", check=False,
    )  # fmt: skip
    assert r.returncode != 0 and "duplicate key" in r.stderr, r.stderr
    # Tampering done in the database is named by verify, like a changed file.
    _edit_entry(postgres, db, 3, '"prod"', '"qa"')
    r = run([DETPACK, "store", "--store", url, "verify", "--key", key_pem])
    assert r.code == 1 and "entry 4" in r.stdout, r.stdout
    # ... and the writer refuses to sign over it.
    r = run([DETPACK, "store", "--store", url, "push", files["1.1"]])
    assert r.code == 1 and "does not match its last signed checkpoint" in r.stderr, r.stderr
    _edit_entry(postgres, db, 3, '"qa"', '"prod"')
    assert _problems(url, key_pem) == []
    postgres.psql(db, f"UPDATE detpack_names SET digest = '{'0' * 64}' WHERE name = '{files['1.0'].name}'")
    r = run([DETPACK, "store", "--store", url, "verify", "--key", key_pem])
    assert r.code == 1 and files["1.0"].name in r.stdout, r.stdout


def test_bad_urls_and_an_unreachable_server_get_one_line(tmp_path: Path, postgres: Postgres) -> None:
    port = postgres.port
    cases = {
        f"postgresql://detpack@127.0.0.1:{port}/x": "needs one ?blobs=",
        f"postgresql://detpack@127.0.0.1:{port}/?blobs={tmp_path}": "name the database",
        f"postgresql://detpack@127.0.0.1:{port}/nosuchdb?blobs={tmp_path / 'b'}": 'database "nosuchdb" does not exist',
        f"postgresql://detpack:secret@127.0.0.1:1/x?blobs={tmp_path / 'b'}": "cannot connect to the database",
    }
    for url, expected in cases.items():
        r = run([DETPACK, "store", "--store", url, "log"])
        assert r.code == 2, (url, r.stdout, r.stderr)
        assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and "secret" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()


#: One writer process: ``STEPS`` times a push of its own wheel and a promotion of it, each operation
#: journaled (in a local file) once the store said it was done; rerun, it resumes where it stopped.
_WRITER = (
    textwrap.dedent(
        """
    import random, sys
    from pathlib import Path
    from detpack.store import open_store
    url, work = sys.argv[1], Path(sys.argv[2])
    worker, steps, kill_at = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    """
    )
    + KILLED_AT_WRITE.replace("LocalBackend", "PostgresBackend").replace(
        "from detpack.store import PostgresBackend", "from detpack.store.postgres import PostgresBackend"
    )
    + textwrap.dedent(
        """
    journal = (work / f"journal-{worker}").open("a")
    store = open_store(url)
    print("ready", flush=True)
    rng = random.Random(worker)
    for step in range(steps):
        f = work / f"app{worker}-{step}.0-py3-none-any.whl"
        if not f.exists():
            f.write_bytes(rng.randbytes(512) + f"{worker}/{step}".encode())
        store.push([f])
        journal.write(f"push {f.name}\\n"); journal.flush()
        env, state = f"env{worker % 3}", store.state()
        digest = state.names[f.name]
        if not any(p.env == env and p.digest == digest for p in state.promotions):  # a rerun resumes
            store.promote(f.name, env, [], force=True, environ={})
        journal.write(f"promote {f.name}\\n"); journal.flush()
    """
    )
)


def _writer(url: str, work: Path, worker: int, steps: int, kill_at: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(work), str(worker), str(steps), str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _log(url: str) -> list[dict[str, object]]:
    backend = _backend(url)
    try:
        return [json.loads(r) for r in backend.read_log("entries").items]
    finally:
        if isinstance(backend, PostgresBackend):
            backend.close()


def _ops(entries: list[dict[str, object]]) -> list[str]:
    """Each push and promotion in the log, as "push NAME" / "promote NAME"."""
    names = {e["digest"]: e["name"] for e in entries if e["type"] == "push"}
    out = []
    for e in entries:
        if e["type"] == "push":
            out.append(f"push {e['name']}")
        elif e["type"] == "promote":
            out.append(f"promote {names[e['digest']]}")
    return out


def _run_writers(url: str, work: Path, workers: int, steps: int) -> float:
    started = time.monotonic()
    procs = [_writer(url, work, w, steps) for w in range(workers)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr
    return time.monotonic() - started


def _check_exactly_once(url: str, work: Path, workers: int, steps: int) -> list[dict[str, object]]:
    entries = _log(url)
    ops = _ops(entries)
    expected = [
        f"{op} app{w}-{s}.0-py3-none-any.whl"
        for w in range(workers)
        for s in range(steps)
        for op in ("push", "promote")
    ]
    assert sorted(ops) == sorted(expected)  # every operation logged, none twice
    for w in range(workers):  # each writer's operations in its own order
        mine = [op for op in ops if f" app{w}-" in op]
        assert mine == [e for e in expected if f" app{w}-" in e]
    assert _problems(url) == []
    return entries


@pytest.mark.slow
def test_eight_writers_fifty_steps_each_log_every_operation_once(
    tmp_path: Path,
    postgres: Postgres,
) -> None:
    workers, steps = 8, 50
    db, url = _store(postgres, tmp_path)
    _ok(run([DETPACK, "store", "--store", url, "init"]))
    (tmp_path / "pg").mkdir()
    _run_writers(url, tmp_path / "pg", workers, steps)
    entries = _check_exactly_once(url, tmp_path / "pg", workers, steps)
    assert len(entries) == 1 + 2 * workers * steps
    # gap-free and duplicate-free in the table itself, and the length rows agree with the log
    assert postgres.psql(db, "SELECT count(*), min(idx), max(idx) FROM detpack_log WHERE stream = 'entries'") == (
        f"{len(entries)}|0|{len(entries) - 1}\n"
    )
    assert postgres.psql(db, "SELECT length FROM detpack_length WHERE stream = 'checkpoints'") == f"{len(entries)}\n"
    # The same run against a directory store: the same log, operation for operation.
    local = tmp_path / "local-store"
    _ok(run([DETPACK, "store", "--store", local, "init"]))
    (tmp_path / "local").mkdir()
    _run_writers(str(local), tmp_path / "local", workers, steps)
    assert len(_check_exactly_once(str(local), tmp_path / "local", workers, steps)) == len(entries)


def _journaled(work: Path) -> list[str]:
    return [line for p in sorted(work.glob("journal-*")) for line in p.read_text().splitlines()]


@pytest.mark.slow
def test_writers_and_the_database_killed_lose_nothing_and_half_write_nothing(
    tmp_path: Path,
    postgres: Postgres,
) -> None:
    _, url = _store(postgres, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    _ok(run([DETPACK, "store", "--store", url, "init"]))
    # 1. a writer killed at each of its first backend writes (blob, entry, checkpoint, name, …)
    plan = {100 + kill_at: 2 for kill_at in range(1, 13)}  # worker -> steps
    for kill_at in range(1, 13):
        proc = _writer(url, work, 100 + kill_at, 2, kill_at)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, stderr
        assert _problems(url) == [], f"after a kill at write {kill_at}"
    # 2. four writers killed at random moments, again and again
    rng = random.Random(20261203)
    # Each victim is killed once it has journaled a random number of its operations, at most half
    # of them: however fast the machine, it is killed mid-run, never after it finished.
    steps = 25
    for round_ in range(6):  # fresh writers each round (a rerun of a finished one would exit at once)
        workers = list(range(10 * round_ + 10, 10 * round_ + 14))
        plan |= dict.fromkeys(workers, steps)
        procs = [_writer(url, work, w, steps) for w in workers]
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        chosen = rng.sample(range(len(procs)), 2)
        victims = [procs[i] for i in chosen]
        pending = {i: rng.randint(1, steps) for i in chosen}  # writer -> operations done before its kill
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            for i, target in list(pending.items()):
                journal = work / f"journal-{workers[i]}"
                if journal.is_file() and len(journal.read_text().splitlines()) >= target:
                    procs[i].send_signal(signal.SIGKILL)
                    del pending[i]
            time.sleep(0.005)
        for proc in procs:
            proc.communicate(timeout=300)
            assert proc.returncode in (0, -signal.SIGKILL), round_
        assert all(proc.returncode == -signal.SIGKILL for proc in victims), "killed before they finished"
        assert _problems(url) == [], f"after round {round_}"
    # 3. the database server killed (SIGKILL, every process of it) under four writers
    procs = [_writer(url, work, w, 40) for w in range(1, 5)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(1.0)
    postgres.kill()
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        # a writer whose database went away stops with one line, no traceback
        assert proc.returncode != 0, "the database was killed under this writer"
        last = stderr.strip().splitlines()[-1]
        assert "StoreError" in last and "127.0.0.1" in last, stderr
    postgres.start()  # crash recovery
    assert _problems(url) == []
    # everything any writer was told was done is in the log; rerunning every writer completes
    # the rest, and then every operation is in the log exactly once
    logged = _ops(_log(url))
    assert set(_journaled(work)) <= set(logged)
    plan |= dict.fromkeys(range(1, 5), 40)
    resumed = list(plan.items())
    for batch in range(0, len(resumed), 8):  # eight writers at a time
        procs = [_writer(url, work, w, steps) for w, steps in resumed[batch : batch + 8]]
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
    ops = _ops(_log(url))
    assert len(ops) == len(set(ops))
    expected = {
        f"{op} app{w}-{s}.0-py3-none-any.whl"
        for w, steps in plan.items()
        for s in range(steps)
        for op in ("push", "promote")
    }
    assert set(ops) == expected
    r = run([DETPACK, "store", "--store", url, "verify"])
    assert r.code == 0, r.stdout
    for leftover in ("after the last checkpoint", "not bound yet", "still live"):
        assert leftover not in r.stdout


def test_the_dashboard_serves_a_postgresql_store_and_shows_tampering(
    tmp_path: Path,
    files: dict[str, Path],  # noqa: F811
    postgres: Postgres,
) -> None:
    from detpack.serve import Dashboard
    from detpack.store import open_store

    db, url = _store(postgres, tmp_path)
    _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"], "--provenance", files["envelope"]]))
    _ok(run([DETPACK, "store", "--store", url, "promote", files["1.0"].name, "--to", "prod", "--force"]))
    store = open_store(url)
    dashboard = Dashboard(store, refresh=0.01, reaudit=0.01)
    try:
        assert dashboard.verification(wait=60).state == "ok"
        home = dashboard.handle("/").body.decode()
        assert "Verified: 4 log entries" in home and files["1.0"].name in home and "forced" in home
        # a row changed in the database behind the store's back: every page says so
        _edit_entry(postgres, db, 3, '"prod"', '"qa"')
        time.sleep(0.05)
        dashboard.snapshot()
        assert dashboard.verification(wait=60).state == "bad"
        page = dashboard.handle("/log").body.decode()
        assert "NOT VERIFIED" in page and "entry 4" in page
    finally:
        dashboard.verification(wait=60)  # an audit the last page started ends before the connection closes
        assert isinstance(store.backend, PostgresBackend)
        store.backend.close()


def test_blobs_in_an_oci_registry_names_and_log_in_postgresql(
    tmp_path: Path,
    files: dict[str, Path],  # noqa: F811
    postgres: Postgres,
    registry: str,
) -> None:
    db, url = _store(postgres, tmp_path, blobs=f"oci://{registry}/pg-blobs/one")
    out = _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"], "--provenance",
                   files["envelope"]]))  # fmt: skip
    assert out.count("stored  ") == 2, out
    assert not (tmp_path / "blobs").exists()
    # the blob is in the registry (by digest), the name in the table
    digest = sha256(files["1.0"])
    with urllib.request.urlopen(f"http://{registry}/v2/pg-blobs/one/tags/list", timeout=10) as resp:
        tags = json.load(resp)["tags"]
    assert f"blob-{digest}" in tags
    assert postgres.psql(db, f"SELECT digest FROM detpack_names WHERE name = '{files['1.0'].name}'") == f"{digest}\n"
    _ok(run([DETPACK, "store", "--store", url, "promote", digest, "--to", "prod", "--key", files["builder.pub"]]))
    assert "verified: 4 log entries" in _ok(run([DETPACK, "store", "--store", url, "verify"]))
    assert _problems(url) == []
