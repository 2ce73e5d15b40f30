"""A writer of the store's storage without its key: what it adds or changes is not believed by any reader.

The attacker here can write the store's files or tables (a shared directory, PostgreSQL credentials)
but holds no key: it appends a promotion and a checkpoint with the right tree root and a garbage
signature, edits an entry in place, or swaps the published key for its own and re-signs a whole log.
Every reader (resolve, show, log, query, proof, the policy gate's --store evidence) must answer from
what the store's key signed, say in one line what it ignored, and a swapped key must be refused.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_store

from conftest import DETPACK, Postgres, run, sha256
from detpack.digest import canonical_json
from detpack.store import log, merkle, note, open_backend
from detpack.store.backend import Backend
from detpack.store.postgres import PostgresBackend

_DB = iter(range(1, 1000))
files = test_store.files  # the fixtures
isolated_home = test_store.isolated_home


@pytest.fixture(params=["directory", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "directory":
        yield str(tmp_path / "store")
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    yield f"{postgres.createdb(f'trust{next(_DB)}')}?blobs={tmp_path / 'blobs'}"


def _backend(url: str) -> Backend:
    return open_backend(url)


def _close(backend: Backend) -> None:
    if isinstance(backend, PostgresBackend):
        backend.close()


def _forge(url: str, entry: dict[str, object], *, sign: bool = False) -> int:
    """Append ``entry`` and a checkpoint over the new log with the right root and a garbage signature, as a
    writer of the storage with no key can; the new entry's 1-based number."""
    backend = _backend(url)
    try:
        entries = list(backend.read_log("entries").items)
        checkpoints = backend.read_log("checkpoints").items
        last = log.Checkpoint.parse(checkpoints[-1])
        record = log.entry_record({**entry, "time": "2030-01-01T00:00:00Z", "user": "mallory"})
        backend.append_log("entries", len(entries), record)
        entries.append(record)
        root = merkle.root([merkle.leaf_hash(e) for e in entries])
        forged = log.Checkpoint(last.origin, len(entries), root, "", last.keyid, os.urandom(64), "c2sp", last.hint)
        backend.append_log("checkpoints", len(checkpoints), forged.record())
        return len(entries)
    finally:
        _close(backend)


def _setup(url: str, given: dict[str, Path]) -> list[str | Path]:
    s: list[str | Path] = [DETPACK, "store", "--store", url]
    assert run([*s, "push", given["1.0"], "--provenance", given["envelope"]]).code == 0
    assert run([*s, "push", given["1.1"], given["1.2"]]).code == 0
    r = run([*s, "promote", given["1.0"].name, "--to", "prod", "--key", given["builder.pub"]])
    assert r.code == 0, r.stderr
    return s


def test_a_forged_checkpoint_with_the_right_root_is_believed_by_no_reader(
    store_url: str,
    files: dict[str, Path],
    tmp_path: Path,
) -> None:
    s = _setup(store_url, files)
    good, bad = sha256(files["1.0"]), sha256(files["1.1"])
    assert run([*s, "resolve", "prod"]).stdout.strip() == f"sha256:{good}"
    forged = _forge(store_url, {"type": "promote", "digest": bad, "env": "prod", "forced": False})
    # the forgery is well-formed: only its signature is wrong (store verify says so)
    r = run([*s, "verify"])
    assert r.code == 1 and f"checkpoint {forged - 0} (tree size {forged}): signature does not verify" in r.stdout

    r = run([*s, "resolve", "prod"])
    assert r.code == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert f"log entry {forged} of" in r.stderr and "no checkpoint signed by the trusted key covers it" in r.stderr
    assert f"the last believed promotion is sha256:{good}" in r.stderr
    assert f"ignored checkpoint {forged} (tree size {forged}): its signature does not verify" in r.stderr

    shown = json.loads(run([*s, "show", files["1.1"].name, "--json"]).stdout)
    assert shown["promotions"] == [] and shown["live_in"] == []
    r = run([*s, "show", files["1.0"].name, "--json"])
    assert json.loads(r.stdout)["live_in"] == ["prod"]
    assert len([line for line in r.stderr.splitlines() if "ignored checkpoint" in line]) == 1  # said in one line

    r = run([*s, "log", "--json"])
    assert [e["index"] for e in json.loads(r.stdout)][-1] == forged - 1 and "ignored" in r.stderr
    r = run([*s, "query", "--live", "prod", "--json", "--index", tmp_path / "index.sqlite"])
    assert r.code == 0, r.stderr
    assert [m["digest"] for m in json.loads(r.stdout)["matches"]] == [f"sha256:{good}"]
    r = run([*s, "proof", files["1.1"].name, "--json"])
    assert json.loads(r.stdout)["tree_size"] == forged - 1
    # -q hides warnings, not this one
    assert "ignored checkpoint" in run([*s, "-q", "resolve", "staging"]).stderr


def test_the_policy_gate_takes_no_forged_evidence(
    store_url: str,
    files: dict[str, Path],
    tmp_path: Path,
) -> None:
    _setup(store_url, files)
    # the attacker stores a provenance blob claiming 1.2 and links it, past the last signed checkpoint
    statement = json.loads(files["prov"].read_text())
    statement["subject"] = [{"name": files["1.2"].name, "digest": {"sha256": sha256(files["1.2"])}}]
    forged_prov = tmp_path / "forged.provenance.json"
    forged_prov.write_bytes(canonical_json(statement))
    backend = _backend(store_url)
    try:
        backend.put_blob(sha256(forged_prov), forged_prov)
    finally:
        _close(backend)
    _forge(store_url, {"type": "provenance", "name": "forged.provenance.json", "digest": sha256(forged_prov),
                       "size": forged_prov.stat().st_size, "subjects": [sha256(files["1.2"])], "keyids": [],
                       "signed": False})  # fmt: skip
    policy = tmp_path / "policy.toml"
    policy.write_text(f'version = 1\nkeys = ["{files["builder.pub"]}"]\n')
    r = run([DETPACK, "verify", files["1.2"], "--policy", policy, "--store", store_url])
    assert r.code == 1 and "holds no provenance for it" in r.stderr, r.stdout + r.stderr
    assert "ignored checkpoint" in r.stderr


def test_an_entry_changed_in_place_is_not_believed(
    tmp_path: Path,
    files: dict[str, Path],
) -> None:
    store = tmp_path / "store"
    s = _setup(str(store), files)
    good, bad = sha256(files["1.0"]), sha256(files["1.1"])
    entries = store / "log" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    [at] = [i for i, line in enumerate(lines) if b'"type":"promote"' in line]
    lines[at] = lines[at].replace(good.encode(), bad.encode())  # the promotion now names 1.1
    entries.write_bytes(b"".join(lines))
    r = run([*s, "resolve", "prod"])
    assert r.code == 1 and r.stdout == "", r.stdout
    assert "the entries it covers were changed" in r.stderr
    r = run([*s, "show", files["1.1"].name, "--json"])
    assert json.loads(r.stdout)["live_in"] == [], r.stdout


def test_a_swapped_key_is_refused_by_every_reader_once_pinned(
    tmp_path: Path,
    files: dict[str, Path],
) -> None:
    store = tmp_path / "store"
    s: list[str | Path] = [DETPACK, "store", "--store", store]
    _setup(str(store), files)
    reader = {"HOME": str(tmp_path / "reader")}
    r = run([*s, "resolve", "prod"], env=reader)
    assert r.code == 0 and "pinned now at first use" in r.stderr, r.stderr
    real = run([*s, "key"]).stdout
    # the attacker builds its own store with its own key and puts it in place of the real one
    fake = tmp_path / "fake"
    mallory = {"HOME": str(tmp_path / "mallory")}
    f: list[str | Path] = [DETPACK, "store", "--store", fake]
    assert run([*f, "push", files["1.1"]], env=mallory).code == 0
    assert run([*f, "promote", files["1.1"].name, "--to", "prod", "--force"], env=mallory).code == 0
    shutil.rmtree(store)
    shutil.copytree(fake, store)
    assert run([*s, "key"]).stdout != real
    for who in (reader, {}):  # the reader pinned it at first use; the writer when it created the store
        for argv in (["resolve", "prod"], ["show", files["1.1"].name], ["log"], ["query", "--live", "prod"],
                     ["proof", files["1.1"].name], ["checkpoint"], ["key"]):  # fmt: skip
            r = run([*s, *argv], env=who)
            assert r.code == 1 and r.stdout == "", (argv, r.stdout, r.stderr)
            [line] = r.stderr.splitlines()
            assert "was pinned for it at first use" in line and "known_stores line" in line, line
    # the policy gate's store evidence, and the dashboard (refused before it serves anything)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'version = 1\nkeys = ["{files["builder.pub"]}"]\n')
    for argv in ([DETPACK, "verify", files["1.1"], "--policy", policy, "--store", store],
                 [*s, "serve", "--port", "0"]):  # fmt: skip
        r = run(argv, env=reader, timeout=60)
        assert r.code == 1 and r.stdout == "" and "was pinned for it at first use" in r.stderr, (argv, r.stderr)
    # given the real key, a reader believes nothing the fake store holds
    pub = tmp_path / "real.pub"
    pub.write_text(real)
    r = run([*s, "--store-key", pub, "resolve", "prod"], env={"HOME": str(tmp_path / "third")})
    assert r.code == 1 and "believing none of it" in r.stderr, r.stderr


def test_the_published_key_is_pinned_per_location_and_origin(
    tmp_path: Path,
    files: dict[str, Path],
) -> None:
    store = tmp_path / "store"
    _setup(str(store), files)
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    reader = {"HOME": str(tmp_path / "reader")}
    assert run([DETPACK, "store", "--store", store, "resolve", "prod"], env=reader).code == 0
    # the copy has the same origin: it is the same store, and its key is checked against the pin
    r = run([DETPACK, "store", "--store", copy, "resolve", "prod"], env=reader)
    assert r.code == 0, r.stderr
    known = (tmp_path / "reader" / ".config" / "detpack" / "known_stores").read_text().splitlines()
    assert [line.split()[0] for line in known if not line.startswith("#")] == [str(store), str(copy)]
    assert len({line.split()[1] for line in known if not line.startswith("#")}) == 1  # one origin
    # a key published with a different keyid under that origin elsewhere is refused
    checkpoint = log.Checkpoint.parse((copy / "log" / "checkpoints.jsonl").read_bytes().splitlines()[-1])
    assert checkpoint.form == "c2sp" and note.valid_name(checkpoint.origin)


def test_the_dashboard_shows_what_the_key_signed_and_names_the_ignored_checkpoint(
    store_url: str, files: dict[str, Path]
) -> None:
    s = _setup(store_url, files)
    good, bad = sha256(files["1.0"]), sha256(files["1.1"])
    forged = _forge(store_url, {"type": "promote", "digest": bad, "env": "prod", "forced": False})
    proc = subprocess.Popen([*s, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/) \(read-only", line)
        assert found, line + (proc.stderr.read() if proc.stderr else "")
        for path in ("", "env/prod", f"item/{bad}", f"item/{good}", "log"):
            with urllib.request.urlopen(found.group(1) + path, timeout=30) as resp:
                page = html.unescape(resp.read().decode("utf-8"))
            assert "NOT BELIEVED" in page and f"ignored checkpoint {forged} (tree size {forged})" in page, path
            if path == "env/prod":  # what is live there, and its history: the forged promotion is not in it
                assert good[:16] in page and bad[:16] not in page, page
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_no_store_message_shows_a_password_given_as_a_query_parameter(tmp_path: Path) -> None:
    secret = "Query5ecret"
    for url in (f"postgresql://u:{secret}@127.0.0.1:1/db?password={secret}",  # no blobs: refused at once
                f"postgresql://u@127.0.0.1:1/db?blobs={tmp_path}&password={secret}"):  # fmt: skip
        r = run([DETPACK, "store", "--store", url, "log"])
        assert r.code == 2 and secret not in r.stderr and "password=***" in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1


def test_a_postgresql_store_without_the_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    hidden = tmp_path / "no-psycopg"
    hidden.mkdir()
    (hidden / "psycopg.py").write_text("raise ImportError('psycopg is not installed')\n")  # as if it were absent
    url = f"postgresql://u@127.0.0.1:1/db?blobs={tmp_path / 'blobs'}"
    for argv in (["log"], ["push", tmp_path / "x"], ["verify"], ["serve", "--port", "0"]):
        r = run([DETPACK, "store", "--store", url, *argv], env={"PYTHONPATH": str(hidden)}, timeout=60)
        assert r.code == 2 and "Traceback" not in r.stderr, (argv, r.stderr)
        [line] = r.stderr.splitlines()
        assert "needs psycopg 3" in line and "pip install 'detpack[postgresql]'" in line, line
