"""Store governance: roles rooted in root keys, signed entries, approvals, revocation; C2SP
checkpoints that Go's sumdb/note opens; witnesses' cosignatures and the forks they catch;
tlog-proof files checked offline; writers killed during approve, promote and policy changes."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_store import KILLED_AT_WRITE, _snapshot, isolated_home  # noqa: F401 - the fixture

from conftest import DETPACK, ROOT, Run, require_tool, run, unavailable
from detpack.digest import canonical_json
from detpack.provenance.signing import PrivateKey, load_private_key
from detpack.store import LocalBackend, log, verify_store

KEYS = ("root-a", "root-b", "ci", "alice", "release", "bob", "carol", "w1", "w2")
WITNESS = {"w1": "witness.example/w1", "w2": "witness.example/w2"}

POLICY = """\
[keys]
root-a = "root-a.key.pub"
root-b = "root-b.key.pub"
ci = "ci.key.pub"
alice = "alice.key.pub"
release = "release.key.pub"
bob = "bob.key.pub"

[root]
keys = ["root-a", "root-b"]
threshold = 2

[[push]]
keys = ["ci"]
names = ["demo-*"]

[promote.staging]
keys = ["ci", "alice"]
force = ["ci"]

[promote.prod]
keys = ["alice", "release", "bob"]
approvals = 2
force = ["alice", "release", "bob"]

[hold]
keys = ["alice"]

[expire]
keys = ["alice"]
"""


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    out = {}
    for name in KEYS:
        assert run([DETPACK, "keygen", "-o", folder / f"{name}.key"]).code == 0
        out[name] = folder / f"{name}.key"
    (folder / "access.toml").write_text(POLICY)
    # the rotation: bob's key is revoked, carol's added as a prod approver
    rotated = POLICY.replace('bob = "bob.key.pub"', 'carol = "carol.key.pub"').replace('"bob"]', '"carol"]')
    (folder / "rotated.toml").write_text(rotated)
    return out


def _files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    out = {}
    for name in ("demo-1.0-py3-none-any.whl", "demo-1.1-py3-none-any.whl", "other-1.0.tar.gz", "demo-2.0.tar.gz"):
        (folder / name).write_bytes(f"the bytes of {name}\n".encode())
        out[name] = folder / name
    return out


Arg = str | os.PathLike[str]


def _store(store: Path, *argv: Arg, author: Path | None = None) -> list[Arg]:
    tail: list[Arg] = ["--author", author] if author else []
    return [DETPACK, "store", "--store", store, *argv, *tail]


def _refused(r: Run, *phrases: str) -> str:
    code, stderr = r.code, r.stderr
    assert code == 1, (code, stderr)
    [line] = stderr.strip().splitlines()
    assert "Traceback" not in stderr and "nothing was written" in line, line
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


def _governed(tmp_path: Path, keys: dict[str, Path]) -> tuple[Path, dict[str, Path]]:
    """A store with the access policy in force and one pushed wheel."""
    store, files = tmp_path / "store", _files(tmp_path)
    assert run(_store(store, "init")).code == 0
    r = _rotate(store, keys, "access")
    assert r.code == 0 and "access policy set  log entry 2" in r.stdout, r.stderr
    assert run(_store(store, "push", files["demo-1.0-py3-none-any.whl"], author=keys["ci"])).code == 0
    return store, files


def _rotate(store: Path, keys: dict[str, Path], name: str = "rotated") -> Run:
    """Put NAME.toml in force with both root keys (rotated.toml: bob's key revoked, carol's added)."""
    policy = keys["ci"].parent / f"{name}.toml"
    return run(_store(store, "access", policy, "--root-key", keys["root-a"], "--root-key", keys["root-b"]))


def _verify_clean(store: Path) -> str:
    r = run(_store(store, "verify", "--key", store / "keys" / "store.pub"))
    assert r.code == 0 and r.stdout.startswith("verified: "), r.stdout + r.stderr
    return r.stdout


def test_every_role_refusal_names_its_rule_and_writes_nothing(tmp_path: Path, keys: dict[str, Path]) -> None:
    store, files = _governed(tmp_path, keys)
    wheel = files["demo-1.0-py3-none-any.whl"].name

    def refused(argv: list[Arg], *phrases: str) -> str:
        before = _snapshot(store)
        line = _refused(run(argv), *phrases)
        assert {k: v for k, v in _snapshot(store).items() if k != ".lock"} == {
            k: v for k, v in before.items() if k != ".lock"
        }, "a refusal changed the store"
        return line

    # an access policy change without the root threshold (1 of 2), of the policy in force and of a first one
    refused(
        _store(store, "access", keys["ci"].parent / "rotated.toml", "--root-key", keys["root-a"]),
        "signed by 1 of the root keys (root-a, root-b)", "rule root.threshold", "log entry 2", "needs 2",
    )  # fmt: skip
    refused(
        _store(store, "access", keys["ci"].parent / "rotated.toml", "--root-key", keys["alice"],
               "--root-key", keys["ci"]),
        "signed by 0 of the root keys", "rule root.threshold",
    )  # fmt: skip
    gate = tmp_path / "gate.toml"
    gate.write_text(f'keys = ["{keys["ci"]}.pub"]\n')
    refused(
        _store(store, "policy", "prod", gate, "--root-key", keys["root-b"]),
        "the change of the prod promotion policy",
        "rule root.threshold",
    )
    # an entry without an author, and a push of a name the key may not push
    refused(
        _store(store, "push", files["demo-1.1-py3-none-any.whl"]),
        "requires every entry to be signed by its author",
        "--author KEY",
    )
    refused(
        _store(store, "push", files["other-1.0.tar.gz"], author=keys["ci"]),
        "key ci may not push other-1.0.tar.gz",
        "rule push",
        "lets ci push demo-* only",
    )
    refused(
        _store(store, "push", files["demo-1.1-py3-none-any.whl"], author=keys["alice"]),
        "key alice may not push",
        "no rule push",
    )
    refused(
        _store(store, "tag", "other-latest", wheel, author=keys["ci"]), "key ci may not push other-latest", "rule push"
    )
    # a promotion by a non-promoter, and hold/expire by keys the policy does not name
    refused(
        _store(store, "promote", wheel, "--to", "staging", "--force", author=keys["release"]),
        "key release may not promote to staging",
        "rule promote.staging",
        "allows ci, alice",
    )
    refused(_store(store, "promote", wheel, "--to", "qa", "--force", author=keys["ci"]), "has no rule promote.qa")
    refused(_store(store, "hold", wheel, author=keys["ci"]), "key ci may not hold", "rule hold", "allows alice")
    refused(_store(store, "expire", "--older-than", "0s", author=keys["ci"]), "key ci may not expire", "rule expire")
    # prod with 1 of 2 approvals: refused; approved by a second key: promoted
    refused(
        _store(store, "promote", wheel, "--to", "prod", "--force", author=keys["alice"]),
        "prod needs 2 approvals by distinct keys",
        "rule promote.prod.approvals",
        "has 1 (alice)",
    )
    r = run(_store(store, "approve", wheel, "--to", "prod", "--key", keys["alice"], "--force", "--reason", "r"))
    assert r.code == 0 and "for prod: 1 of 2 (alice)" in r.stdout and "promoted" not in r.stdout, r.stdout + r.stderr
    r = run(
        _store(store, "approve", wheel, "--to", "prod", "--key", keys["alice"], "--force", "--reason", "r")
    )  # the same key again
    assert r.code == 0 and "1 of 2 (alice)" in r.stdout and "promoted" not in r.stdout
    assert run(_store(store, "resolve", "prod")).code == 2  # nothing is live in prod yet
    r = run(_store(store, "approve", wheel, "--to", "prod", "--key", keys["bob"], "--force", "--reason", "r"))
    assert r.code == 0 and "2 of 2 (alice, bob)" in r.stdout and "-> prod  by bob" in r.stdout, r.stdout + r.stderr
    assert run(_store(store, "resolve", "prod")).stdout.strip().endswith(r.stdout.split("sha256:")[1][:64])
    # a staging promotion needs one approval: the promoter's own
    assert (
        run(_store(store, "promote", wheel, "--to", "staging", "--force", "--reason", "r", author=keys["ci"])).code == 0
    )
    assert run(_store(store, "hold", wheel, author=keys["alice"])).code == 0
    # rotation: with both root keys, bob is revoked and carol added; bob's entries from then on are refused
    r = _rotate(store, keys)
    assert r.code == 0, r.stderr
    rotation = int(r.stdout.split("log entry ")[1])
    refused(
        _store(store, "approve", wheel, "--to", "prod", "--key", keys["bob"]),
        "key bob",
        f"was revoked by the access policy of log entry {rotation}",
        "rule keys",
    )
    refused(_store(store, "hold", wheel, "--release", author=keys["bob"]), "revoked")
    r = run(_store(store, "approve", wheel, "--to", "prod", "--key", keys["carol"]))
    assert r.code == 0 and "is live in prod already" in r.stdout  # nothing to approve: no entry
    newer = files["demo-1.1-py3-none-any.whl"]
    assert run(_store(store, "push", newer, author=keys["ci"])).code == 0
    r = run(_store(store, "approve", newer.name, "--to", "prod", "--key", keys["carol"]))
    assert r.code == 0 and "1 of 2 (carol)" in r.stdout
    # the gate policy changes with the root threshold
    assert (
        run(_store(store, "policy", "prod", gate, "--root-key", keys["root-a"], "--root-key", keys["root-b"])).code == 0
    )
    # the whole log replays clean: bob's approval before his revocation stays valid
    out = _verify_clean(store)
    assert "problem" not in out
    logged = run(_store(store, "log")).stdout
    for author in ("ci", "alice", "bob", "carol"):
        assert f"  {author} " in logged
    shown = json.loads(run(_store(store, "log", "--json")).stdout)
    promote = next(e for e in shown if e["type"] == "promote" and e["env"] == "prod")
    assert promote["author"] == "bob" and promote["approvals"] == ["alice", "bob"]


def _forge(store: Path, entry: dict[str, object], signer: PrivateKey | None = None) -> None:
    """Append ``entry`` with the store's own key, as a writer holding only that key could (no rule checked)."""
    from detpack.store import access
    from detpack.store.state import replay

    backend = LocalBackend(store)
    records = list(backend.read_log("entries").items)
    parsed = [log.parse_entry(r) for r in records]
    state = replay(parsed)
    entry = {**entry, "time": "2026-12-03T00:00:00Z", "user": "mallory"}
    if signer is not None:
        entry = access.sign_entry(entry, str(state.origin), len(records), [signer])
    key = load_private_key(next((Path(os.environ["HOME"]) / ".local/share/detpack/store-keys").glob("*.key")))
    log.append(backend, key, str(state.origin), canonical_json(entry), "t", c2sp=True)


def test_verify_replays_the_rules_and_names_entries_made_around_them(tmp_path: Path, keys: dict[str, Path]) -> None:
    store, files = _governed(tmp_path, keys)
    wheel = files["demo-1.0-py3-none-any.whl"]
    digest = __import__("hashlib").sha256(wheel.read_bytes()).hexdigest()
    _verify_clean(store)
    bob, ci = load_private_key(keys["bob"]), load_private_key(keys["ci"])
    _forge(store, {"type": "hold", "digest": digest})  # unsigned
    _forge(store, {"type": "promote", "digest": digest, "env": "prod", "forced": True, "author": "bob"}, bob)  # 1 of 2
    _forge(store, {"type": "push", "name": "other-1.0.tar.gz", "digest": digest, "size": 1, "author": "ci"}, ci)
    _forge(store, {"type": "hold", "digest": digest, "author": "ci"}, bob)  # author claims another key
    r = run(_store(store, "verify"))
    assert r.code == 1, r.stdout
    problems = [line for line in r.stdout.splitlines() if "problem:" in line]
    assert len(problems) == 4, r.stdout
    assert "log entry 4 (hold): unsigned, but the access policy of log entry 2 requires every entry" in problems[0]
    assert "log entry 5 (promote): prod needs 2 approvals" in problems[1] and "has 1 (bob)" in problems[1]
    assert "log entry 6 (push): key ci may not push other-1.0.tar.gz: rule push" in problems[2]
    assert "log entry 7 (hold): signed by key bob but names 'ci' as its author" in problems[3]
    # the log itself is sound (the store's key signed the checkpoints): what is named is who broke which rule


def test_a_revoked_keys_later_entries_are_named_by_verify(tmp_path: Path, keys: dict[str, Path]) -> None:
    store, files = _governed(tmp_path, keys)
    wheel = files["demo-1.0-py3-none-any.whl"]
    digest = __import__("hashlib").sha256(wheel.read_bytes()).hexdigest()
    assert run(_store(store, "approve", wheel.name, "--to", "prod", "--key", keys["bob"])).code == 0
    r = _rotate(store, keys)
    assert r.code == 0
    _verify_clean(store)  # bob's approval, made while his key was in force, stays valid
    _forge(store, {"type": "approve", "digest": digest, "env": "prod", "author": "bob"}, load_private_key(keys["bob"]))
    r = run(_store(store, "verify"))
    assert r.code == 1
    [problem] = [line for line in r.stdout.splitlines() if "problem:" in line]
    assert "log entry 6 (approve): key bob" in problem and "was revoked by the access policy of log entry 5" in problem


def _witness(store: Path, keys: dict[str, Path], name: str, *extra: Arg) -> Run:
    return run(
        _store(store, "witness", "add-checkpoint", "--key", keys[name], "--name", WITNESS[name],
               "--state", keys[name].parent / f"{name}-state", "--log-key", store / "keys" / "store.pub", *extra)
    )  # fmt: skip


def _vkey(keys: dict[str, Path], name: str) -> str:
    r = run([DETPACK, "store", "witness", "vkey", "--key", keys[name], "--name", WITNESS[name]])
    assert r.code == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture(scope="module")
def notecheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go checker, built offline against Debian's golang.org/x/mod."""
    go = require_tool("go")
    gopath = Path("/usr/share/gocode")
    if not (gopath / "src/golang.org/x/mod/sumdb/note/note.go").is_file():
        unavailable("golang.org/x/mod is not installed (apt-get install golang-golang-x-mod-dev; .ci/run does)")
    out = tmp_path_factory.mktemp("go") / "notecheck"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(gopath), "GOCACHE": str(out.parent / "cache")}
    r = subprocess.run(
        [go, "build", "-o", out, ROOT / "tests/go/notecheck.go"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return out


def test_go_sumdb_note_opens_the_checkpoint_and_the_cosignatures(
    tmp_path: Path, keys: dict[str, Path], notecheck: Path
) -> None:
    store, _ = _governed(tmp_path, keys)
    cosigned = tmp_path / "checkpoint.note"
    assert _witness(store, keys, "w1").code == 0
    r = _witness(store, keys, "w2", "-o", cosigned)
    assert r.code == 0, r.stderr
    # store checkpoint prints the note with every cosignature of it
    r = run(_store(store, "checkpoint", "-o", tmp_path / "latest.note"))
    assert r.code == 0
    log_vkey = run(_store(store, "key", "--vkey")).stdout.strip()
    w1, w2 = _vkey(keys, "w1"), _vkey(keys, "w2")
    for note_file in (tmp_path / "latest.note", cosigned):
        go = subprocess.run([notecheck, note_file, log_vkey, w1, w2], capture_output=True, text=True)
        assert go.returncode == 0, go.stderr
        lines = go.stdout.splitlines()
        origin = log_vkey.split("+")[0]
        assert lines[0] == f"verified {origin} {log_vkey.split('+')[1]}"
        if note_file == cosigned:  # the file the witness wrote carries its own cosignature
            assert f"verified {WITNESS['w2']} {w2.split('+')[1]}" in lines
        else:
            assert {
                f"verified {WITNESS['w1']} {w1.split('+')[1]}",
                f"verified {WITNESS['w2']} {w2.split('+')[1]}",
            } <= set(lines)
        assert lines[-3:] == [origin, "3", lines[-1]] and len(base64.b64decode(lines[-1])) == 32
    # Go refuses what it must: a changed root, and a note signed by another log's key
    text = (tmp_path / "latest.note").read_text()
    origin, size, root, *rest = text.split("\n")
    changed = tmp_path / "changed.note"
    changed.write_text("\n".join([origin, size, root[:4] + ("A" if root[4] != "A" else "B") + root[5:], *rest]))
    go = subprocess.run([notecheck, changed, log_vkey, w1, w2], capture_output=True, text=True)
    assert go.returncode == 1 and "invalid signature" in go.stderr, go.stderr
    other = tmp_path / "other"
    assert run(_store(other, "init")).code == 0
    other_vkey = run(_store(other, "key", "--vkey")).stdout.strip()
    go = subprocess.run([notecheck, tmp_path / "latest.note", other_vkey], capture_output=True, text=True)
    assert go.returncode == 1 and "no verifiable signatures" in go.stderr, go.stderr
    # and detpack's own reader agrees on the cosigned note as a saved checkpoint
    assert (
        run(_store(store, "verify", "--since", cosigned, "--witness", w1, "--witness", w2, "--quorum", "2")).code == 0
    )


def test_a_witness_catches_a_fork_and_a_rollback(tmp_path: Path, keys: dict[str, Path]) -> None:
    store, files = _governed(tmp_path, keys)
    w1 = _vkey(keys, "w1")
    assert _witness(store, keys, "w1").code == 0  # tree size 3, seen by both readers
    fork = tmp_path / "fork"
    shutil.copytree(store, fork)
    # the store shows reader A one entry 4 and reader B another (same store key, same origin)
    assert run(_store(store, "push", files["demo-1.1-py3-none-any.whl"], author=keys["ci"])).code == 0
    assert run(_store(fork, "push", files["demo-2.0.tar.gz"], author=keys["ci"])).code == 0
    _verify_clean(store)
    _verify_clean(fork)  # each history verifies on its own: only a witness can tell
    cosigned = tmp_path / "a.note"
    r = _witness(store, keys, "w1", "-o", cosigned)
    assert r.code == 0 and "extends tree size 3" in r.stdout
    # the witness refuses to cosign the other branch, naming the fork
    r = _witness(fork, keys, "w1")
    assert r.code == 1
    [line] = [x for x in r.stderr.strip().splitlines() if "pinned now at first use" not in x]  # a new location
    assert (
        "FORK" in line and "tree size 4" in line and "differs from the tree size 4" in line and "not cosigned" in line
    )
    # a reader of the fork holding the witness's cosigned checkpoint sees it is not an extension of it
    r = run(_store(fork, "verify", "--since", cosigned))
    assert r.code == 1 and "the log is not an extension of it" in r.stdout, r.stdout
    # with the cosignatures the witness gave (copied into the fork), the fork is named too
    (fork / "log" / "cosignatures.jsonl").write_bytes((store / "log" / "cosignatures.jsonl").read_bytes())
    r = run(_store(fork, "verify", "--witness", w1, "--quorum", "1"))
    assert r.code == 1 and "FORK: witness witness.example/w1 cosigned tree size 4" in r.stdout, r.stdout
    # a branch that grew further is refused too (its first 4 entries are not what the witness saw)
    assert run(_store(fork, "push", files["demo-1.1-py3-none-any.whl"], author=keys["ci"])).code == 0
    r = _witness(fork, keys, "w1")
    assert r.code == 1 and "does not extend the tree size 4" in r.stderr
    # a rolled-back copy (tree size 3) is refused: older than what the witness cosigned
    rolled = tmp_path / "rolled"
    shutil.copytree(store, rolled)
    for stream in ("entries", "checkpoints"):
        path = rolled / "log" / f"{stream}.jsonl"
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:3]))
    (rolled / "log" / "cosignatures.jsonl").unlink()
    r = _witness(rolled, keys, "w1")
    assert r.code == 1 and "older than the tree size 4" in r.stderr
    # the honest store keeps growing, and verify trusts the witnessed checkpoint
    r = run(_store(store, "verify", "--witness", w1, "--quorum", "1"))
    assert r.code == 0 and "trusted checkpoint: tree size 4, cosigned by witness.example/w1" in r.stdout
    # a quorum that is not met is a problem, naming the witnesses
    w2 = _vkey(keys, "w2")
    r = run(_store(store, "verify", "--witness", w1, "--witness", w2, "--quorum", "2"))
    assert r.code == 1 and "no checkpoint is cosigned by 2 of the witnesses" in r.stdout


def test_a_tlog_proof_verifies_offline_and_refuses_what_it_must(tmp_path: Path, keys: dict[str, Path]) -> None:
    store, files = _governed(tmp_path, keys)
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert _witness(store, keys, "w1").code == 0
    proof = tmp_path / "demo.tlog-proof"
    r = run(_store(store, "proof", wheel.name, "-o", proof))
    assert r.code == 0 and "tlog-proof of log entry 3 of 3" in r.stdout, r.stderr
    text = proof.read_text()
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 2\n" in text
    log_vkey = run(_store(store, "key", "--vkey")).stdout.strip()
    w1 = _vkey(keys, "w1")
    offline = tmp_path / "elsewhere"  # no store anywhere near: only the file and the keys
    offline.mkdir()
    check: list[Arg] = [DETPACK, "store", "verify-proof", proof, "--log-key", log_vkey]
    r = run([*check, "--witness", w1, "--quorum", "1", "--artifact", wheel], cwd=offline)
    assert r.code == 0, r.stderr
    assert r.stdout.startswith("verified: log entry 3 of 3 (push demo-1.0-py3-none-any.whl sha256:")
    assert "cosigned by witness.example/w1" in r.stdout
    assert (
        run([DETPACK, "store", "verify-proof", proof, "--log-key", store / "keys" / "store.pub"], cwd=offline).code == 0
    )
    # refusals: another artifact, a quorum not met, a changed index, a changed entry, another log's key
    other = files["demo-1.1-py3-none-any.whl"]
    r = run([*check, "--artifact", other])
    assert r.code == 1 and "is not what log entry 3 stores" in r.stderr
    r = run([*check, "--witness", w1, "--witness", _vkey(keys, "w2"), "--quorum", "2"])
    assert r.code == 1 and "cosigned by 1 of the given witnesses" in r.stderr
    moved = tmp_path / "moved.tlog-proof"
    moved.write_text(text.replace("\nindex 2\n", "\nindex 1\n"))
    r = run([DETPACK, "store", "verify-proof", moved, "--log-key", log_vkey])
    assert r.code == 1 and "does not lead from log entry 2" in r.stderr
    extra = text.split("\n")[1][6:]
    entry = json.loads(base64.b64decode(extra))
    entry["name"] = "demo-9.9-py3-none-any.whl"
    forged = tmp_path / "forged.tlog-proof"
    forged.write_text(text.replace(extra, base64.b64encode(canonical_json(entry)).decode()))
    assert run([DETPACK, "store", "verify-proof", forged, "--log-key", log_vkey]).code == 1
    elsewhere = tmp_path / "other"
    assert run(_store(elsewhere, "init")).code == 0
    r = run(
        [DETPACK, "store", "verify-proof", proof, "--log-key", run(_store(elsewhere, "key", "--vkey")).stdout.strip()]
    )
    assert r.code == 1 and "is not signed by the log key" in r.stderr
    # not a proof at all: one line, exit 2
    junk = tmp_path / "junk.tlog-proof"
    junk.write_bytes(b"\x00\xff garbage")
    r = run([DETPACK, "store", "verify-proof", junk, "--log-key", log_vkey])
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a tlog-proof" in r.stderr


def test_bad_governance_input_is_one_line_exit_2(tmp_path: Path, keys: dict[str, Path]) -> None:
    store = tmp_path / "store"
    assert run(_store(store, "init")).code == 0
    folder = keys["ci"].parent
    cases = {
        "threshold = 3": (
            "[root] threshold = 3: give a whole number from 1 to 2",
            POLICY.replace("threshold = 2", "threshold = 3"),
        ),
        "unknown key": ("[promote.prod] keys: 'dave' is not a key of [keys]", POLICY.replace('"bob"]', '"dave"]')),
        "approvals": ("[promote.prod] approvals = 4", POLICY.replace("approvals = 2", "approvals = 4")),
        "typo": ("unknown setting 'promotes'", POLICY.replace("[promote.prod]", "[promotes.prod]")),
        "missing key file": ("nope.pub", POLICY.replace("ci.key.pub", "nope.pub")),
    }
    for label, (phrase, text) in cases.items():
        bad = folder / f"bad-{label.replace(' ', '-')}.toml"
        bad.write_text(text)
        r = run(_store(store, "access", bad, "--root-key", keys["root-a"], "--root-key", keys["root-b"]))
        assert r.code == 2, (label, r.stderr)
        [line] = r.stderr.strip().splitlines()
        assert phrase in line and "Traceback" not in r.stderr, (label, line)
    # the smallest policy: keys, roots, one push rule (nobody may promote, hold or expire)
    minimal = folder / "minimal.toml"
    minimal.write_text(POLICY.split("[promote.staging]")[0])
    r = run(_store(store, "access", minimal, "--root-key", keys["root-a"], "--root-key", keys["root-b"]))
    assert r.code == 0, r.stderr
    shown = json.loads(run(_store(store, "access", "--json")).stdout)
    assert shown["policy"]["hold"] == {"keys": []} and shown["policy"]["promote"] == {}
    r = run(_store(store, "verify", "--witness", "not-a-vkey"))
    assert r.code == 2 and "not a verifier key" in r.stderr
    r = run(_store(store, "verify", "--witness", _vkey(keys, "w1"), "--quorum", "2"))
    assert r.code == 2 and "--quorum 2" in r.stderr
    r = run(_store(store, "approve", "nothing", "--to", "prod", "--key", keys["alice"]))
    assert r.code == 2 and "no such name or digest" in r.stderr


_GOVERNED_WRITER = (
    textwrap.dedent(
        """
    import sys
    from pathlib import Path
    from detpack.provenance.signing import load_private_key
    from detpack.store import access, open_store
    from detpack.verify import gate
    store_dir, keys, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    """
    )
    + KILLED_AT_WRITE
    + textwrap.dedent(
        """
    key = {n: load_private_key(keys / f"{n}.key") for n in ("root-a", "root-b", "ci", "alice", "release", "carol")}
    roots = [key["root-a"], key["root-b"]]
    store = open_store(str(store_dir))
    # each step as a user would run it again after a crash: skipped when the log shows it done
    def changes():
        return sum(1 for e in store.entries() if e["type"] == "access")
    if changes() == 0:
        store.set_access(access.load(keys / "access.toml"), roots)
    wheel = keys / "demo-1.0-py3-none-any.whl"
    store.author = key["ci"]
    store.push([wheel])
    store.approve(wheel.name, "prod", key["alice"], force=True, environ={}, reason="r")
    store.approve(wheel.name, "prod", key["release"], force=True, environ={}, reason="r")
    if changes() == 1:
        store.set_access(access.load(keys / "rotated.toml"), roots)
    store.set_policy("staging", gate.load(keys / "gate.toml"), roots)
    if store.state().live_in().get("staging") is None:
        store.promote(wheel.name, "staging", [], force=True, environ={}, reason="r")
    print("done", calls, flush=True)
    """
    )
)


@pytest.mark.slow
def test_sigkill_during_approve_promote_and_policy_changes_loses_nothing(tmp_path: Path, keys: dict[str, Path]) -> None:
    folder = keys["ci"].parent
    (folder / "demo-1.0-py3-none-any.whl").write_bytes(b"a wheel\n")
    (folder / "gate.toml").write_text('keys = ["ci.key.pub"]\n')

    def writer(store: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _GOVERNED_WRITER, store, folder, str(kill_at)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip

    def committed(store: Path) -> list[bytes]:
        backend = LocalBackend(store)
        audit = verify_store(backend, None)
        assert audit.problems == (), audit.problems
        return list(backend.read_log("entries").items)[: audit.entries]

    whole = writer(tmp_path / "uninterrupted", 0)
    assert whole.returncode == 0, whole.stderr
    writes = int(whole.stdout.split()[1])
    assert writes > 20
    for kill_at in range(1, writes + 1):  # killed at every backend write of the sequence, in turn
        store = tmp_path / f"store-{kill_at}"
        proc = writer(store, kill_at)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        before = committed(store) if store.exists() else []  # verify is clean right after the kill
        again = writer(store, 0)  # the user runs it again
        assert again.returncode == 0, again.stderr[-2000:]
        after = committed(store)
        assert after[: len(before)] == before, f"a kill at write {kill_at} lost committed entries"
        entries = [json.loads(r) for r in after]
        kinds = [e["type"] for e in entries]
        # every step happened exactly once, whatever the kill interrupted
        assert kinds.count("access") == 2 and kinds.count("approve") == 2 and kinds.count("policy") == 1, kill_at
        promotions = [(e["env"], e.get("approvals")) for e in entries if e["type"] == "promote"]
        assert sorted(promotions) == [("prod", ["alice", "release"]), ("staging", ["ci"])], (kill_at, promotions)


def test_root_key_holders_sign_a_change_apart_and_an_old_change_cannot_be_replayed(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    store, _ = _governed(tmp_path, keys)
    folder = keys["ci"].parent
    rotated = folder / "rotated.toml"
    # each root key holder signs on their own machine: nothing in the store changes
    before = _snapshot(store)
    sigs = []
    for root in ("root-a", "root-b"):
        sig = tmp_path / f"{root}.sig"
        r = run(_store(store, "access", rotated, "--root-key", keys[root], "--sign-only", sig))
        assert r.code == 0 and "of access policy version 2" in r.stdout, r.stderr
        sigs.append(sig)
    assert {k: v for k, v in _snapshot(store).items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"
    }
    # one signature is not the threshold; a signature of another policy is refused by name
    _refused(run(_store(store, "access", rotated, "--root-signature", sigs[0])), "signed by 1 of the root keys")
    other = folder / "other.toml"
    other.write_text(POLICY.replace('[hold]\nkeys = ["alice"]', '[hold]\nkeys = ["alice", "ci"]'))
    r = run(_store(store, "access", other, "--root-signature", sigs[0]))
    assert r.code == 2 and "signs another change (its content" in r.stderr, r.stderr
    # the writer attaches both, holding no root key
    r = run(_store(store, "access", rotated, "--root-signature", sigs[0], "--root-signature", sigs[1]))
    assert r.code == 0 and "access policy set  log entry 4" in r.stdout, r.stderr
    # signatures of that version cannot be used again for a later change
    r = run(_store(store, "access", folder / "access.toml", "--root-signature", sigs[0], "--root-signature", sigs[1]))
    assert r.code == 2 and "its version is 2, this change's 3" in r.stderr, r.stderr
    # an old signed change copied back into the log by someone holding the store key: named by verify
    entries = [json.loads(line) for line in (store / "log" / "entries.jsonl").read_bytes().splitlines()]
    first_policy = next(e for e in entries if e["type"] == "access")
    _forge(store, {k: v for k, v in first_policy.items() if k not in ("time", "user")})
    r = run(_store(store, "verify"))
    assert r.code == 1
    [problem] = [line for line in r.stdout.splitlines() if "problem:" in line]
    assert "log entry 5 (access): access policy version 1, but this is change 3 of it (a replayed" in problem
