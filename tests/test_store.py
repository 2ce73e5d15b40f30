"""`detpack store`: write-once pushes, the signed log, promotions, retention, tampering, crashes
and concurrent writers."""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, ROOT, materialize, run, sha256
from detpack.digest import canonical_json
from detpack.errors import StoreRefusedError
from detpack.provenance.signing import load_public_key
from detpack.store import LocalBackend, Records, Store, StoreKeys, merkle, verify_store


def _statement(*artifacts: Path) -> bytes:
    return canonical_json(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": a.name, "digest": {"sha256": sha256(a)}} for a in artifacts],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"runDetails": {"builder": {"id": "https://detpack.dev/builders/local/v1"}}},
        }
    )


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every detpack it runs) gets its own HOME: store keys never reach the real one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


def _key_dir(home: Path) -> Path:
    return home / ".local" / "share" / "detpack" / "store-keys"


def _private_keys(root: Path) -> list[Path]:
    """Every regular file under ``root`` holding a PEM private key (symlinks are not copies)."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and b"PRIVATE KEY" in p.read_bytes():
            found.append(p)
    return found


def _entries(store: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (store / "log" / "entries.jsonl").read_bytes().splitlines()]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _audit(store: Path, key: Path | None = None) -> list[str]:
    result = verify_store(LocalBackend(store), load_public_key(key) if key else None)
    return list(result.problems)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "in"
    d.mkdir()
    out = {}
    for version in ("1.0", "1.1", "1.2"):
        p = d / f"demo-{version}-py3-none-any.whl"
        p.write_bytes(f"wheel {version}".encode())
        out[version] = p
    prov = d / "demo-1.0.provenance.json"
    prov.write_bytes(_statement(out["1.0"]))
    out["prov"] = prov
    assert run([DETPACK, "keygen", "-o", tmp_path / "builder"]).code == 0
    assert run([DETPACK, "sign", prov, "--key", tmp_path / "builder"]).code == 0
    out["envelope"] = d / "demo-1.0.intoto.jsonl"
    out["builder"] = tmp_path / "builder"
    out["builder.pub"] = tmp_path / "builder.pub"
    return out


def test_push_is_write_once_and_idempotent(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    r = run([DETPACK, "store", "--store", store, "push", files["1.0"], "--provenance", files["envelope"]])
    assert r.code == 0, r.stderr
    assert r.stdout.count("stored  ") == 2
    digest = sha256(files["1.0"])
    assert (store / "blobs" / "sha256" / digest).read_bytes() == files["1.0"].read_bytes()
    assert (store / "names" / files["1.0"].name).read_text() == f"sha256:{digest}\n"
    assert [e["type"] for e in _entries(store)] == ["init", "provenance", "push"]
    before = _snapshot(store)
    # the same bytes again: a no-op (nothing logged); --store accepted after the subcommand too
    r = run([DETPACK, "store", "push", "--store", store, files["1.0"], "--provenance", files["envelope"]])
    assert r.code == 0, r.stderr
    assert r.stdout.count("unchanged") == 2
    assert _snapshot(store) == before
    # other bytes under a bound name: refused, exit 1, the store untouched
    impostor = tmp_path / "elsewhere" / files["1.0"].name
    impostor.parent.mkdir()
    impostor.write_bytes(b"other bytes")
    r = run([DETPACK, "store", "--store", store, "push", files["1.1"], impostor])
    assert r.code == 1
    assert f"{files['1.0'].name}: already bound to sha256:{digest[:16]}" in r.stderr
    assert "write-once" in r.stderr
    assert _snapshot(store) == before  # nothing half-written: not even the other file of the same push
    assert _audit(store) == []
    assert _stderr_ok(run([DETPACK, "store", "--store", store, "verify", "--key", store / "keys" / "store.pub"]))


def _stderr_ok(r: object) -> bool:
    assert getattr(r, "code", None) == 0, getattr(r, "stdout", "") + getattr(r, "stderr", "")
    return True


def test_store_url_from_pyproject_and_bad_urls(tmp_path: Path, files: dict[str, Path]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.detpack]\nstore = "releases"\n')
    r = run([DETPACK, "store", "push", files["1.1"]], cwd=project)
    assert r.code == 0, r.stderr
    assert (project / "releases" / "names" / files["1.1"].name).is_file()
    r = run([DETPACK, "store", "--store", "oci://127.0.0.1:1/repo", "log"])
    assert r.code == 2 and "registry unreachable" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run([DETPACK, "store", "--store", files["1.0"], "log"])
    assert r.code == 2 and "not a directory" in r.stderr
    r = run([DETPACK, "store", "--store", tmp_path / "nowhere", "verify"])
    assert r.code == 2 and "no store here" in r.stderr
    assert not (tmp_path / "nowhere").exists()


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert run([DETPACK, "store", "--store", store, "push", files["1.0"]]).code == 0
    before = _snapshot(store)
    for argv, message in [
        (["push", tmp_path / "missing.whl"], "no such file"),
        (["push", files["1.1"], "--provenance", files["envelope"]], "not a subject of"),
        (["push", files["1.1"], "--provenance", files["1.2"]], "not JSON"),
        (["expire", "--older-than", "soon"], "expected a number and a unit"),
        (["show", "deadbeef00"], "no such name or digest"),
        (["resolve", "prod"], "nothing has been promoted"),
        (["promote", files["1.0"].name, "--to", "../prod", "--force"], "not a usable environment name"),
        (["verify", "--key", files["1.0"]], "not a PEM public key"),
    ]:
        r = run([DETPACK, "store", "--store", store, *argv])
        assert r.code == 2, (argv, r.stdout, r.stderr)
        assert message in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr
        assert _snapshot(store) == before, argv


def test_promote_requires_verified_provenance_unless_forced(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    assert run([*s, "push", files["1.0"], "--provenance", files["envelope"]]).code == 0
    assert run([*s, "push", files["1.1"], "--provenance", files["prov"]]).code == 2  # 1.1 is not its subject
    prov11 = files["prov"].with_name("demo-1.1.provenance.json")
    prov11.write_bytes(_statement(files["1.1"]))
    assert run([*s, "push", files["1.1"], "--provenance", prov11]).code == 0  # unsigned provenance
    assert run([*s, "push", files["1.2"]]).code == 0  # no provenance at all
    logged = len(_entries(store))
    for target, key, reason in [
        (files["1.1"].name, [], "its provenance is unsigned"),
        (files["1.2"].name, [], "has no provenance in the store"),
        (files["1.0"].name, [], "no key given to verify its signed provenance"),
        (files["1.0"].name, ["--key", store / "keys" / "store.pub"], "does not verify with the given key"),
    ]:
        r = run([*s, "promote", target, "--to", "prod", *key])
        assert r.code == 1, r.stderr
        assert reason in r.stderr and "not promoted to prod" in r.stderr
    assert len(_entries(store)) == logged  # refusals are not half-written
    ci = {"GITHUB_RUN_ID": "4242", "GITHUB_SERVER_URL": "https://ci.example", "GITHUB_REPOSITORY": "o/r"}
    r = run([*s, "promote", files["1.0"].name, "--to", "prod", "--key", files["builder.pub"]], env=ci)
    assert r.code == 0, r.stderr
    r = run([*s, "resolve", "prod"])
    assert r.stdout.strip() == f"sha256:{sha256(files['1.0'])}"
    r = run([*s, "promote", files["1.1"].name, "--to", "staging", "--force"])
    assert r.code == 0 and "promoted without verified provenance" in r.stderr
    assert run([*s, "resolve", "staging"]).stdout.strip() == f"sha256:{sha256(files['1.1'])}"
    assert run([*s, "resolve", "prod"]).stdout.strip() == f"sha256:{sha256(files['1.0'])}"
    promotions = [e for e in _entries(store) if e["type"] == "promote"]
    assert promotions[0]["ci_run"] == "https://ci.example/o/r/actions/runs/4242"
    assert promotions[0]["verified_by"] == load_public_key(files["builder.pub"]).keyid
    assert promotions[0]["forced"] is False and promotions[0]["user"]
    assert (
        promotions[1]["forced"] is True
        and promotions[1]["reason"] == "its provenance is unsigned (sign it: detpack sign)"
    )
    assert _audit(store) == []


def test_hold_and_expire_log_every_decision(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    for v in ("1.0", "1.1", "1.2"):
        assert run([*s, "push", files[v]]).code == 0
    assert run([*s, "expire", "--older-than", "1d"]).stdout.count("expired") == 0
    r = run([*s, "hold", files["1.0"].name])
    assert r.code == 0 and r.stdout.startswith("held")
    assert run([*s, "hold", files["1.0"].name]).stdout.endswith("(unchanged)\n")
    r = run([*s, "expire", "--older-than", "0s", "--keep-last", "1"])
    assert r.code == 0, r.stderr
    lines = {line.split()[1]: line for line in r.stdout.splitlines()}
    assert lines[files["1.0"].name].startswith("kept") and "(held)" in lines[files["1.0"].name]
    assert lines[files["1.2"].name].startswith("kept") and "newest 1" in lines[files["1.2"].name]
    assert lines[files["1.1"].name].startswith("expired")
    gone = sha256(files["1.1"])
    assert not (store / "blobs" / "sha256" / gone).exists()
    assert (store / "retired" / "sha256" / gone).is_file()
    expired = [e for e in _entries(store) if e["type"] == "expire"]
    assert [e["digest"] for e in expired] == [gone]
    show = json.loads(run([*s, "show", files["1.1"].name, "--json"]).stdout)
    assert show["expired"] and not show["live"]
    # releasing the hold makes it expirable; the log records both
    assert run([*s, "hold", "--release", files["1.0"].name]).code == 0
    r = run([*s, "expire", "--older-than", "0s", "--keep-last", "1"])
    assert f"expired  {files['1.0'].name}" in r.stdout
    assert [e["type"] for e in _entries(store)][-4:] == ["hold", "expire", "release", "expire"]
    assert _audit(store) == []


def test_log_show_and_proofs(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    assert run([*s, "push", files["1.0"], "--provenance", files["envelope"]]).code == 0
    assert run([*s, "push", files["1.1"]]).code == 0
    assert run([*s, "tag", "demo-stable", sha256(files["1.0"])[:12]]).code == 0
    assert run([*s, "tag", "demo-stable", files["1.1"].name]).code == 1  # write-once
    log = json.loads(run([*s, "log", "--json"]).stdout)
    assert [e["type"] for e in log] == ["init", "provenance", "push", "push", "tag"]
    assert "demo-stable" in run([*s, "log"]).stdout
    shown = json.loads(run([*s, "show", "demo-stable", "--json"]).stdout)
    assert shown["names"] == [files["1.0"].name, "demo-stable"]
    assert shown["provenance"]["builder"] == "https://detpack.dev/builders/local/v1"
    assert shown["provenance"]["signed_by"] == [load_public_key(files["builder.pub"]).keyid]
    proof = json.loads(run([*s, "proof", files["1.1"].name, "--json"]).stdout)
    entry = proof["entry"].encode()
    assert json.loads(entry)["digest"] == sha256(files["1.1"])
    leaf = merkle.leaf_hash(entry)
    path = [bytes.fromhex(h) for h in proof["proof"]]
    root = bytes.fromhex(proof["checkpoint"]["root"])
    assert merkle.verify_inclusion(proof["leaf_index"], proof["tree_size"], leaf, path, root)
    assert not merkle.verify_inclusion(
        proof["leaf_index"], proof["tree_size"], merkle.leaf_hash(entry + b" "), path, root
    )
    cons = json.loads(run([*s, "proof", "--consistency", "2", "5", "--json"]).stdout)
    assert cons["old"]["size"] == 2 and cons["new"]["size"] == 5
    assert merkle.verify_consistency(2, 5, bytes.fromhex(cons["old"]["root"]), bytes.fromhex(cons["new"]["root"]),
                                     [bytes.fromhex(h) for h in cons["proof"]])  # fmt: skip
    text = run([*s, "proof", files["1.1"].name]).stdout
    assert text.startswith(f"sha256:{sha256(files['1.1'])}: log entry 4 of 5")


def test_a_third_party_audits_a_copy_with_only_the_public_key(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert run([DETPACK, "store", "--store", store, "push", files["1.0"], files["1.1"]]).code == 0
    assert run([DETPACK, "store", "--store", store, "key", "-o", tmp_path / "store.pub"]).code == 0
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    assert _private_keys(copy) == []  # a copy of the store cannot sign
    # the auditor has no HOME of the writer's, no private key, nothing but the public key
    auditor = {"HOME": str(tmp_path / "auditor")}
    r = run([DETPACK, "store", "--store", copy, "verify", "--key", tmp_path / "store.pub"], env=auditor)
    assert r.code == 0, r.stdout + r.stderr
    assert r.stdout.startswith("verified: 3 log entries, 3 checkpoints, 2 blobs")
    assert r.stderr == ""
    # given the key, readers believe what it signs and pin nothing
    given = ["--store-key", tmp_path / "store.pub"]
    for argv in (["log"], ["show", files["1.0"].name], ["proof", files["1.0"].name], ["checkpoint"], ["key"]):
        r = run([DETPACK, "store", "--store", copy, *given, *argv], env=auditor)
        assert r.code == 0 and r.stderr == "", (argv, r.stderr)
    assert not (tmp_path / "auditor" / ".config").exists()
    # not given it, the first read trusts the published key and pins it (one line says so), later reads are quiet
    keyid = load_public_key(tmp_path / "store.pub").keyid
    r = run([DETPACK, "store", "--store", copy, "log"], env=auditor)
    assert r.code == 0 and f"trusting keyid {keyid[:16]}" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert run([DETPACK, "store", "--store", copy, "show", files["1.0"].name], env=auditor).stderr == ""
    shutil.rmtree(copy / "keys")  # and no key from the store either
    r = run([DETPACK, "store", "--store", copy, "verify", "--key", tmp_path / "store.pub"], env=auditor)
    assert r.code == 0, r.stdout
    # readers keep no keys: the reader's HOME holds the pin and the verified-prefix cache only
    kept = sorted(str(p.relative_to(tmp_path / "auditor")) for p in (tmp_path / "auditor").rglob("*") if p.is_file())
    assert [k for k in kept if not k.startswith(".cache/detpack/verified/")] == [
        ".config/detpack/known_stores",
        ".config/detpack/known_stores.lock",
    ]
    assert (tmp_path / "auditor" / ".config/detpack/known_stores").read_text().endswith(f" {keyid}\n")


def test_verify_with_the_wrong_key_says_so_not_tampered(tmp_path: Path, files: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert run([DETPACK, "store", "--store", store, "push", files["1.0"], files["1.1"]]).code == 0
    right = load_public_key(store / "keys" / "store.pub").keyid
    wrong = load_public_key(files["builder.pub"]).keyid
    r = run([DETPACK, "store", "--store", store, "verify", "--key", files["builder.pub"]])
    assert r.code == 1
    assert r.stdout == (
        f"not verified: {store}: checkpoints are signed by keyid {right[:16]}, "
        f"the given key is keyid {wrong[:16]} (wrong key?)\n"
    )
    assert "TAMPERED" not in r.stdout + r.stderr
    value = json.loads(
        run([DETPACK, "store", "--store", store, "verify", "--key", files["builder.pub"], "--json"]).stdout
    )
    assert value["ok"] is False and value["wrong_key"] is True and value["keyid"] == wrong
    # tampering, checked with the right key, is still TAMPERED
    _flip(store / "blobs" / "sha256" / sha256(files["1.1"]), 0)
    assert "its bytes do not match its digest" in _tampered(store)
    # ... and with the wrong key it is still only "not verified" (the key decides nothing else)
    r = run([DETPACK, "store", "--store", store, "verify", "--key", files["builder.pub"]])
    assert r.code == 1 and r.stdout.startswith("not verified: ") and "TAMPERED" not in r.stdout


@pytest.fixture
def pristine(tmp_path: Path, files: dict[str, Path]) -> Path:
    store = tmp_path / "pristine"
    s = [DETPACK, "store", "--store", store]
    assert run([*s, "push", files["1.0"], "--provenance", files["envelope"]]).code == 0
    assert run([*s, "push", files["1.1"]]).code == 0
    assert run([*s, "promote", files["1.1"].name, "--to", "prod", "--force"]).code == 0
    assert run([*s, "push", files["1.2"]]).code == 0
    assert _audit(store) == []
    return store


def _flip(path: Path, offset: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _tampered(store: Path) -> str:
    r = run([DETPACK, "store", "--store", store, "verify", "--key", store / "keys" / "store.pub"])
    assert r.code == 1, r.stdout
    assert r.stdout.startswith("TAMPERED")
    return r.stdout


def test_verify_names_a_changed_blob(pristine: Path, files: dict[str, Path]) -> None:
    _flip(pristine / "blobs" / "sha256" / sha256(files["1.1"]), 0)
    out = _tampered(pristine)
    assert f"blob sha256:{sha256(files['1.1'])[:16]}… ({files['1.1'].name}): its bytes do not match its digest" in out


def test_verify_names_a_changed_log_entry(pristine: Path) -> None:
    entries = pristine / "log" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    offset = sum(len(line) for line in lines[:3]) + lines[3].index(b'"time":"') + 9  # a digit of entry 4's time
    _flip(entries, offset)
    out = _tampered(pristine)
    assert "log entry 4: does not match checkpoint 4 (tree size 4): changed, removed or inserted by hand" in out


def test_a_writer_refuses_to_sign_over_a_changed_log(pristine: Path, files: dict[str, Path], tmp_path: Path) -> None:
    entries = pristine / "log" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    entries.write_bytes(b"".join(lines[:2] + lines[3:]))  # a deleted line
    before = _snapshot(pristine)
    new = tmp_path / "demo-2.0-py3-none-any.whl"
    new.write_bytes(b"2.0")
    r = run([DETPACK, "store", "--store", pristine, "push", new])
    assert r.code == 1
    assert "the log does not match its last signed checkpoint; nothing was written" in r.stderr
    assert _snapshot(pristine) == before


def test_verify_names_a_changed_checkpoint(pristine: Path) -> None:
    checkpoints = pristine / "log" / "checkpoints.jsonl"
    lines = checkpoints.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[2])
    origin, size, root, *rest = record["note"].split("\n")
    changed = root[:5] + ("A" if root[5] != "A" else "B") + root[6:]  # another root that still parses
    record["note"] = "\n".join([origin, size, changed, *rest])
    lines[2] = canonical_json(record) + b"\n"
    checkpoints.write_bytes(b"".join(lines))
    data = bytearray(checkpoints.read_bytes())
    out = _tampered(pristine)
    assert "checkpoint 3 (tree size 3): signature does not verify" in out
    # a byte that breaks the record is named too
    data[lines[2].index(b"{") + sum(len(line) for line in lines[:2])] = ord("[")
    checkpoints.write_bytes(bytes(data))
    assert "checkpoint 3: unreadable (changed by hand)" in _tampered(pristine)


def test_verify_names_a_deleted_log_line(pristine: Path) -> None:
    entries = pristine / "log" / "entries.jsonl"
    lines = entries.read_bytes().splitlines(keepends=True)
    entries.write_bytes(b"".join(lines[:2] + lines[3:]))
    out = _tampered(pristine)
    assert "log entry 3: does not match checkpoint 3" in out
    assert "covers 6 entries but the log holds 5: entries were removed" in out
    # deleting the last line is caught too: the last checkpoint covers it
    entries.write_bytes(b"".join(lines[:-1]))
    assert "covers 6 entries but the log holds 5" in _tampered(pristine)


def test_verify_names_a_name_rebound_by_hand(pristine: Path, files: dict[str, Path]) -> None:
    binding = pristine / "names" / files["1.2"].name
    binding.write_text(f"sha256:{sha256(files['1.1'])}\n")
    out = _tampered(pristine)
    assert f"name {files['1.2'].name}: bound to sha256:{sha256(files['1.1'])[:16]}…, but the log binds it to" in out
    assert "(rebound by hand)" in out
    (pristine / "names" / "extra-9.9.whl").write_text(f"sha256:{sha256(files['1.1'])}\n")
    assert "name extra-9.9.whl: bound to" in _tampered(pristine)


def test_a_refused_rebinding_leaves_a_tampered_store_as_it_was(pristine: Path, tmp_path: Path) -> None:
    before = _snapshot(pristine)
    other = tmp_path / "x" / "demo-1.2-py3-none-any.whl"
    other.parent.mkdir()
    other.write_bytes(b"not the same")
    r = run([DETPACK, "store", "--store", pristine, "push", other])
    assert r.code == 1
    assert _snapshot(pristine) == before


#: The start of a writer script: ``kill_at`` (a global) is the backend write it dies at (SIGKILL; 0: never).
KILLED_AT_WRITE = textwrap.dedent(
    """
    import os, signal
    from detpack.store import LocalBackend
    calls = 0
    def counted(method):
        def wrapper(self, *args, **kwargs):
            global calls
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return method(self, *args, **kwargs)
        return wrapper
    for name in ("put_blob", "bind_name", "append_log", "truncate_log", "retire_blob", "publish_public_key"):
        setattr(LocalBackend, name, counted(getattr(LocalBackend, name)))
    """
)

_WRITER = (
    textwrap.dedent(
        """
    import random, sys
    from pathlib import Path
    from detpack.store import open_store
    store_dir, work, seed, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    """
    )
    + KILLED_AT_WRITE
    + textwrap.dedent(
        """
    rng = random.Random(seed)
    store = open_store(str(store_dir))
    print("ready", flush=True)
    for step in range(1000):
        f = work / f"pkg-{seed}.{step}-py3-none-any.whl"
        f.write_bytes(rng.randbytes(rng.randrange(1, 300_000)))
        store.push([f])
        op = rng.randrange(4)
        if op == 0:
            store.hold(f.name)
        elif op == 1:
            store.promote(f.name, "prod", [], force=True, environ={})
        elif op == 2:
            import datetime
            store.expire(datetime.timedelta(0), keep_last=2)
    """
    )
)


def _writer(store: Path, work: Path, seed: int, kill_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(store), str(work), str(seed), str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _no_partial_blob_visible(store: Path) -> None:
    folder = store / "blobs" / "sha256"
    for blob in folder.iterdir() if folder.is_dir() else ():
        if not blob.name.startswith("."):
            assert sha256(blob) == blob.name


@pytest.mark.slow
def test_sigkill_at_every_write_step_and_at_random_moments_leaves_a_verifiable_store(tmp_path: Path) -> None:
    store, work = tmp_path / "store", tmp_path / "work"
    work.mkdir()
    rng = random.Random(20261126)
    iterations = 0
    # 1. killed exactly at the Nth backend write (each one a different point of a push, hold,
    #    promote, expire or recovery), 2. killed by the parent at random moments.
    for kill_at in range(1, 41):
        proc = _writer(store, work, kill_at, kill_at)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, stderr
        assert _audit(store) == [], f"after a kill at write {kill_at}"
        _no_partial_blob_visible(store)
        iterations += 1
    for seed in range(100, 140):
        proc = _writer(store, work, seed, 0)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 0.08))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert _audit(store) == [], f"after a random kill (seed {seed})"
        _no_partial_blob_visible(store)
        iterations += 1
    # the next writer finishes cleanly on whatever was left, and the log shows real progress
    r = run([DETPACK, "store", "--store", store, "push", work / "pkg-1.0-py3-none-any.whl"])
    assert r.code == 0, r.stderr
    r = run([DETPACK, "store", "--store", store, "verify", "--key", store / "keys" / "store.pub"])
    assert r.code == 0, r.stdout
    # what killed writers left has been dropped or completed (only unlogged blobs may stay)
    for leftover in ("after the last checkpoint", "partial last line", "not bound yet", "still live"):
        assert leftover not in r.stdout
    assert iterations == 80 and len(_entries(store)) > 40


@pytest.mark.slow
def test_concurrent_pushers_each_log_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert run([DETPACK, "store", "--store", store, "init"]).code == 0
    procs = []
    expected = {}
    for worker in range(6):
        paths = []
        for n in range(4):
            p = tmp_path / f"w{worker}" / f"app{worker}-{n}.0-py3-none-any.whl"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(os.urandom(2048))
            expected[p.name] = sha256(p)
            paths.append(p)
        pushes = [[str(DETPACK), "store", "--store", str(store), "push", str(p)] for p in paths]
        script = f"import subprocess\nfor argv in {pushes!r}:\n    assert subprocess.run(argv).returncode == 0\n"
        procs.append(subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    pushes = [e for e in _entries(store) if e["type"] == "push"]
    assert sorted((e["name"], e["digest"]) for e in pushes) == sorted(expected.items())
    assert LocalBackend(store).list_names() == expected
    assert _audit(store, store / "keys" / "store.pub") == []


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> dict[str, Path]:
    """One real signed build of the flit fixture, from a git checkout (built once for this module)."""
    base = tmp_path_factory.mktemp("built")
    src = materialize(FIXTURES / "flit", base / "src", 0o022)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    for argv in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "fixture"]):
        assert run(argv, cwd=src, env=env).code == 0
    commit = run(["git", "rev-parse", "HEAD"], cwd=src).stdout.strip()
    assert run([DETPACK, "keygen", "-o", base / "key"]).code == 0
    out = base / "out"
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "--sign", base / "key"])
    assert r.code == 0, r.stderr
    (base / "commit").write_text(commit)
    return {"out": out, "key": base / "key", "commit": base / "commit"}


@pytest.mark.slow
def test_show_answers_from_a_real_signed_provenance(tmp_path: Path, built: dict[str, Path]) -> None:
    store = tmp_path / "store"
    wheel = next(built["out"].glob("*.whl"))
    sdist = next(built["out"].glob("*.tar.gz"))
    envelope = next(built["out"].glob("*.intoto.jsonl"))
    s = [DETPACK, "store", "--store", store]
    assert run([*s, "push", wheel, sdist, "--provenance", envelope]).code == 0
    r = run([*s, "promote", wheel.name, "--to", "prod", "--key", f"{built['key']}.pub"])
    assert r.code == 0, r.stderr
    commit = built["commit"].read_text()
    shown = json.loads(run([*s, "show", wheel.name, "--json"]).stdout)
    prov = shown["provenance"]
    assert prov["source_commit"] == commit
    assert prov["builder"] == "https://detpack.dev/builders/local/v1"
    assert prov["finished"].endswith("Z") and prov["invocation"].startswith("urn:uuid:")
    assert {"python", "detpack", "zlib", "backend"} <= set(prov["toolchain"])
    assert "flit_core" in prov["toolchain"]["backend"]
    assert shown["live_in"] == ["prod"] and shown["promotions"][0]["forced"] is False
    text = run([*s, "show", sha256(wheel)[:10]]).stdout
    assert f"source:       {commit}" in text and "toolchain:    python" in text


class MemoryBackend:
    """A second backend, in memory: the Store and the audit must need nothing but the protocol."""

    def __init__(self) -> None:
        self.url = "memory:"
        self.blobs: dict[str, bytes] = {}
        self.retired: dict[str, bytes] = {}
        self.names: dict[str, str] = {}
        self.logs: dict[str, list[bytes]] = {"entries": [], "checkpoints": []}
        self.key: bytes | None = None
        self._lock = threading.Lock()

    def lock(self) -> threading.Lock:
        return self._lock

    def has_blob(self, digest: str) -> bool:
        return digest in self.blobs

    def put_blob(self, digest: str, source: Path) -> bool:
        data = source.read_bytes()
        assert sha256(source) == digest
        fresh = digest not in self.blobs
        self.blobs[digest] = data
        return fresh

    def open_blob(self, digest: str) -> contextlib.closing[io.BytesIO]:
        return contextlib.closing(io.BytesIO(self.blobs[digest]))

    def list_blobs(self) -> Iterator[str]:
        return iter(sorted(self.blobs))

    def retire_blob(self, digest: str) -> None:
        if digest in self.blobs:
            self.retired[digest] = self.blobs.pop(digest)

    def get_name(self, name: str) -> str | None:
        return self.names.get(name)

    def bind_name(self, name: str, digest: str) -> None:
        if self.names.setdefault(name, digest) != digest:
            raise StoreRefusedError(f"{name}: bound elsewhere")

    def list_names(self) -> dict[str, str]:
        return dict(self.names)

    def read_log(self, stream: str) -> Records:
        return Records(tuple(self.logs[stream]))

    def append_log(self, stream: str, index: int, record: bytes) -> None:
        assert len(self.logs[stream]) == index
        self.logs[stream].append(record)

    def truncate_log(self, stream: str, count: int) -> None:
        del self.logs[stream][count:]

    def read_public_key(self) -> bytes | None:
        return self.key

    def publish_public_key(self, pem: bytes) -> None:
        self.key = self.key or pem


def test_the_store_runs_on_any_backend_that_keeps_the_protocol(tmp_path: Path, files: dict[str, Path]) -> None:
    backend = MemoryBackend()
    store = Store(backend, StoreKeys(tmp_path / "keys", explicit=tmp_path / "memory-store.key"))
    pushed = store.push([files["1.0"]], files["envelope"])
    assert [p.stored for p in pushed] == [True, True]
    assert [p.stored for p in store.push([files["1.0"]])] == [False]
    store.push([files["1.1"]])
    builder = load_public_key(files["builder.pub"])
    assert store.promote(files["1.0"].name, "prod", [builder], force=False, environ={}).forced is False
    decisions = store.expire(datetime.timedelta(0), keep_last=None)
    assert [(d.names, d.expired) for d in decisions] == [((files["1.1"].name,), True), ((files["1.0"].name,), False)]
    key = load_public_key(tmp_path / "memory-store.key.pub")
    audit = verify_store(backend, key)
    assert audit.ok and audit.entries == 6 and audit.blobs == 2, audit
    backend.names[files["1.0"].name] = sha256(files["1.1"])
    assert any("rebound by hand" in p for p in verify_store(backend, key).problems)


def test_verify_since_a_saved_checkpoint_catches_a_rolled_back_or_rewritten_log(pristine: Path, tmp_path: Path) -> None:
    s = [DETPACK, "store", "--store", pristine]
    assert run([*s, "promote", "demo-1.2-py3-none-any.whl", "--to", "prod", "--force"]).code == 0
    saved = tmp_path / "checkpoint.json"
    assert run([*s, "checkpoint", "-o", saved]).code == 0
    pub = pristine / "keys" / "store.pub"
    assert run([*s, "verify", "--key", pub, "--since", saved]).code == 0
    # Roll the log back past the promotion (every remaining checkpoint still verifies) ...
    for stream in ("entries", "checkpoints"):
        path = pristine / "log" / f"{stream}.jsonl"
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    assert run([*s, "verify", "--key", pub]).code == 0  # on its own, a consistent shorter log
    r = run([*s, "verify", "--key", pub, "--since", saved])
    assert (
        r.code == 1
        and "saved checkpoint (tree size 7): the log now holds only 6 entries: it was rolled back" in r.stdout
    )
    # a writer (and a reader) that saw the longer log refuses to build on the shorter one
    r = run([*s, "promote", "demo-1.0-py3-none-any.whl", "--to", "prod", "--force"])
    assert r.code == 1 and "the log no longer extends the tree of size 7 this reader verified before" in r.stderr
    assert run([*s, "resolve", "prod"]).code == 1
    # ... and rewrite history from there with the store's own key, from a machine that never read it: still caught
    key = next((Path(os.environ["HOME"]) / ".local/share/detpack/store-keys").glob("*.key"))
    elsewhere = {"HOME": str(tmp_path / "elsewhere")}
    r = run(
        [*s, "--signing-key", key, "promote", "demo-1.0-py3-none-any.whl", "--to", "prod", "--force"], env=elsewhere
    )
    assert r.code == 0, r.stderr
    r = run([*s, "verify", "--key", pub, "--since", saved])
    assert r.code == 1 and "the log is not an extension of it" in r.stdout


def test_the_private_key_lives_outside_the_store(tmp_path: Path, files: dict[str, Path], isolated_home: Path) -> None:
    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    r = run([*s, "init"])
    assert r.code == 0, r.stderr
    assert r.stderr == ""
    assert run([*s, "push", files["1.0"], "--provenance", files["envelope"]]).code == 0
    assert run([*s, "push", files["1.1"]]).code == 0
    assert run([*s, "promote", files["1.1"].name, "--to", "prod", "--force"]).code == 0
    assert run([*s, "expire", "--older-than", "0s"]).code == 0
    assert _private_keys(store) == []
    assert sorted(p.name for p in (store / "keys").iterdir()) == ["store.pub"]
    # the key is in the writer's key directory, named by the keyid the store's init entry records
    key = _key_dir(isolated_home) / f"{_entries(store)[0]['keyid']}.key"
    assert _private_keys(isolated_home) == [key]
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct(key.parent.stat().st_mode & 0o777) == "0o700"
    assert load_public_key(key) == load_public_key(store / "keys" / "store.pub")
    # the id survives moving the store
    moved = tmp_path / "moved"
    store.rename(moved)
    assert run([DETPACK, "store", "--store", moved, "push", files["1.2"]]).code == 0
    assert _audit(moved, moved / "keys" / "store.pub") == []
    # XDG_DATA_HOME is where the key directory lives when it is set
    data = tmp_path / "data"
    other = tmp_path / "other"
    r = run([DETPACK, "store", "--store", other, "push", files["1.0"]], env={"XDG_DATA_HOME": str(data)})
    assert r.code == 0, r.stderr
    assert _private_keys(data) == [data / "detpack" / "store-keys" / f"{_entries(other)[0]['keyid']}.key"]


def test_a_writer_without_the_key_gets_one_line(tmp_path: Path, files: dict[str, Path], isolated_home: Path) -> None:
    store = tmp_path / "store"
    assert run([DETPACK, "store", "--store", store, "push", files["1.0"]]).code == 0
    before = _snapshot(store)
    elsewhere = {"HOME": str(tmp_path / "colleague")}
    r = run([DETPACK, "store", "--store", store, "push", files["1.1"]], env=elsewhere)
    looked = tmp_path / "colleague" / ".local/share/detpack/store-keys" / f"{_entries(store)[0]['keyid']}.key"
    assert r.code == 2, r.stderr
    assert r.stderr == (
        f"error: {store}: no signing key for this store: looked for {looked}; "
        "pass --signing-key KEY (the key the store was created with)\n"
    )
    assert _snapshot(store) == before
    # --signing-key is the fix
    key = _key_dir(isolated_home) / looked.name
    r = run([DETPACK, "store", "--store", store, "--signing-key", key, "push", files["1.1"]], env=elsewhere)
    assert r.code == 0, r.stderr
    assert _private_keys(tmp_path / "colleague") == []  # used in place, not copied


def test_init_with_an_existing_key_uses_it_in_place(
    tmp_path: Path, files: dict[str, Path], isolated_home: Path
) -> None:
    store = tmp_path / "store"
    release = files["builder"]
    r = run([DETPACK, "store", "--store", store, "init", "--key", release])
    assert r.code == 0, r.stderr
    assert r.stdout.split()[-1] == load_public_key(files["builder.pub"]).keyid
    r = run([DETPACK, "store", "--store", store, "init", "--key", release])
    assert r.code == 1 and "a store keeps its key" in r.stderr
    assert run([DETPACK, "store", "--store", store, "push", files["1.0"]]).code == 0  # K is remembered
    assert _audit(store, files["builder.pub"]) == []
    assert (store / "keys" / "store.pub").read_bytes() == files["builder.pub"].read_bytes()
    assert _private_keys(tmp_path) == [release]  # K is the only copy, anywhere
    # K moved away: the writer says where it looked
    release.rename(tmp_path / "gone.key")
    r = run([DETPACK, "store", "--store", store, "push", files["1.1"]])
    assert r.code == 2 and "no signing key for this store: looked for" in r.stderr and str(release) in r.stderr
    # a key kept outside the store, named on every write
    elsewhere = tmp_path / "elsewhere"
    secret = tmp_path / "secret" / "ci-store.key"
    s = [DETPACK, "store", "--store", elsewhere, "--signing-key", secret]
    assert run([*s, "push", files["1.1"]]).code == 0
    assert secret.is_file() and _private_keys(elsewhere) == []
    assert (elsewhere / "keys" / "store.pub").read_bytes() == Path(f"{secret}.pub").read_bytes()
    r = run([DETPACK, "store", "--store", elsewhere, "push", files["1.2"]])  # without the key: refused
    assert r.code == 2 and "pass --signing-key KEY" in r.stderr
    assert _audit(elsewhere, Path(f"{secret}.pub")) == []


def _old_layout(store: Path, home: Path) -> None:
    """Turn a store into the layout of earlier versions: the private key inside, as keys/store.key."""
    key = _key_dir(home) / f"{_entries(store)[0]['keyid']}.key"
    shutil.move(key, store / "keys" / "store.key")
    Path(f"{key}.pub").unlink()
    (store / "keys" / "store.pub").rename(store / "keys" / "store.key.pub")


def test_an_old_store_with_the_key_inside_still_works_and_warns(
    tmp_path: Path, files: dict[str, Path], isolated_home: Path
) -> None:
    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    assert run([*s, "push", files["1.0"]]).code == 0
    _old_layout(store, isolated_home)
    pub = store / "keys" / "store.key.pub"
    r = run([*s, "push", files["1.1"]])
    assert r.code == 0, r.stderr
    assert r.stderr.count("WARNING") == 1, r.stderr
    assert f"{store / 'keys' / 'store.key'}: the store's private key is inside the store" in r.stderr
    assert f"move it out with `detpack store --store {store} move-key`" in r.stderr
    r = run([*s, "verify", "--key", pub])
    assert r.code == 0 and r.stdout.startswith("verified: 3 log entries"), r.stdout
    assert run([*s, "key"]).stdout == pub.read_text()
    # move-key takes it out, to the writer's key directory
    r = run([*s, "move-key"])
    assert r.code == 0, r.stderr
    assert r.stdout.startswith(f"{_key_dir(isolated_home) / str(_entries(store)[0]['keyid'])}.key  ")
    assert _private_keys(store) == []
    r = run([*s, "push", files["1.2"]])
    assert r.code == 0 and r.stderr == "", r.stderr
    assert _audit(store, pub) == []
    r = run([*s, "move-key"])
    assert r.code == 2 and "no private key inside the store" in r.stderr


def test_store_help_is_current() -> None:
    r = run([DETPACK, "store", "--help"])
    assert r.code == 0
    assert "planned" not in r.stdout and "oci://HOST:PORT/REPO" in r.stdout


OLD_STORE = FIXTURES / "store-format-1"


def _old_json(value: object) -> bytes:
    """How detpack serialised store records before RFC 8785 (store format 1)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_a_format_1_store_is_read_verified_and_extended(tmp_path: Path) -> None:
    import rfc8785

    store = tmp_path / "store"
    shutil.copytree(OLD_STORE / "store", store)
    key, signer = OLD_STORE / "storekey.pub", OLD_STORE / "signer.pub"
    old = _entries(store)
    assert [e["type"] for e in old] == ["init", "provenance", "push"] and "format" not in old[0]
    # what makes reading it honest: every record it holds is its own RFC 8785 form already
    for stream in ("entries", "checkpoints"):
        for line in (store / "log" / f"{stream}.jsonl").read_bytes().splitlines():
            assert line == rfc8785.dumps(json.loads(line)) == _old_json(json.loads(line))
    # while the envelope it stores carries a statement serialised the old way, not RFC 8785's
    envelope = (OLD_STORE / "in" / "demo-1.0.intoto.jsonl").read_bytes()
    payload = base64.b64decode(json.loads(envelope)["payload"])
    assert payload != rfc8785.dumps(json.loads(payload)) and payload == _old_json(json.loads(payload))

    s = [DETPACK, "store", "--store", store]
    r = run([*s, "verify", "--key", key])
    assert r.code == 0 and "verified: 3 log entries, 3 checkpoints, 2 blobs" in r.stdout, r.stdout + r.stderr
    wheel = "demo-1.0-py3-none-any.whl"
    r = run([*s, "show", wheel, "--json"])
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["provenance"]["builder"] == "https://detpack.dev/builders/local/v1"
    # the old envelope's signature is over its payload as carried: it still verifies
    r = run([*s, "promote", wheel, "--to", "prod", "--key", signer, "--signing-key", OLD_STORE / "storekey"])
    assert r.code == 0, r.stderr
    r = run([*s, "verify", "--key", key])
    assert r.code == 0 and "verified: 4 log entries, 4 checkpoints" in r.stdout, r.stdout + r.stderr
    assert _entries(store)[:3] == old and _entries(store)[3]["type"] == "promote"
    assert run([*s, "resolve", "prod"]).stdout.strip().endswith(sha256(OLD_STORE / "in" / wheel))


def _forged_init(store: Path, value: object) -> None:
    """A one-entry store whose init entry records ``format`` ``value``, signed like any other."""
    from detpack.provenance.signing import PrivateKey
    from detpack.store import log

    backend, key = LocalBackend(store), PrivateKey.generate()
    origin = "urn:uuid:" + "0" * 32
    entry = {"type": "init", "origin": origin, "keyid": key.public.keyid, "format": value}
    record = canonical_json({**entry, "time": "2030-01-01T00:00:00Z", "user": "u"})
    log.append(backend, key, origin, record, "t", c2sp=True)
    backend.publish_public_key(key.public.pem())


def test_a_store_of_a_newer_format_is_refused_in_one_line(tmp_path: Path, files: dict[str, Path]) -> None:
    from detpack.store import log

    store = tmp_path / "store"
    _forged_init(store, log.STORE_FORMAT + 1)
    before = _snapshot(store)
    for argv in (["verify"], ["log"], ["show", "x"], ["push", files["1.0"]], ["checkpoint"]):
        r = run([DETPACK, "store", "--store", store, *argv])
        assert r.code == 2, (argv, r.stderr)
        [line] = r.stderr.strip().splitlines()
        assert str(store) in line and f"store format {log.STORE_FORMAT + 1} is newer" in line, line
        assert "upgrade detpack" in line and "Traceback" not in r.stderr
    assert {k: v for k, v in _snapshot(store).items() if k != ".lock"} == before  # nothing written
    damaged = tmp_path / "damaged"
    _forged_init(damaged, "two")
    r = run([DETPACK, "store", "--store", damaged, "verify"])
    assert r.code == 1 and "log entry 1: records store format 'two', which is no store format" in r.stdout + r.stderr
    r = run([DETPACK, "store", "--store", damaged, "log"])
    assert r.code == 2 and "run `detpack store verify`" in r.stderr


def test_a_new_store_records_its_format_and_writes_rfc8785_records(tmp_path: Path, files: dict[str, Path]) -> None:
    import rfc8785

    from detpack.store import log

    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    assert run([*s, "push", files["1.0"], "--provenance", files["envelope"]]).code == 0
    assert run([*s, "promote", files["1.0"].name, "--to", "caf\u00e9-\u2615"]).code == 2  # not a usable env name
    assert run([*s, "promote", files["1.0"].name, "--to", "prod", "--key", files["builder.pub"]]).code == 0
    assert _entries(store)[0]["format"] == log.STORE_FORMAT == 3
    for stream in ("entries", "checkpoints"):
        lines = (store / "log" / f"{stream}.jsonl").read_bytes().splitlines()
        assert len(lines) == 4
        for line in lines:
            assert line == rfc8785.dumps(json.loads(line))
