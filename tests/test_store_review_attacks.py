"""An attacker's review of the store's trust model: ten attacks that each succeeded at their harm when
written (each test failed), and each door closed since: a decoy checkpoint's unverified origin in the
pin, a decoy checkpoint making the next honest writer truncate the log, blob files swapped under readers
and the query index, two stores sharing a key swapped, a log rewritten without its access policy by the
store key's holder, an access entry spelled with escapes, a PASSED verdict signed with the store key
alone, another name's pusher deciding the provenance judged, and a tag of a digest never stored.

Attackers: a writer of the storage without any key ("keyless"), a holder of only the store's key on a
store with an access policy ("store key only"), and, where said, a holder of the store's key and of one
author key of the access policy (every writer holds the store's key: ``store promote`` signs with it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import test_governance
import test_store
from test_governance import _files, _forge, _store
from test_store_governance_doors import FORCE_POLICY, _gated

from conftest import DETPACK, run, sha256
from detpack.digest import canonical_json
from detpack.provenance import signing
from detpack.provenance.signing import load_private_key
from detpack.store import LocalBackend, access, log, merkle
from detpack.store.state import replay
from detpack.verify import gate as gate_policy

files = test_store.files  # the fixtures
keys = test_governance.keys
isolated_home = test_store.isolated_home


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _writer_key() -> signing.PrivateKey:
    """The store's private key, as the writer (this test's HOME) keeps it."""
    return load_private_key(next((Path(os.environ["HOME"]) / ".local/share/detpack/store-keys").glob("*.key")))


def _decoy_checkpoint(store: Path, origin: str) -> None:
    """Append a readable (canonical) detpack-form checkpoint naming ``origin``, with a garbage signature: what
    any keyless writer of the storage can add."""
    backend = LocalBackend(store)
    entries = backend.read_log("entries").items
    checkpoints = backend.read_log("checkpoints").items
    root = merkle.root([merkle.leaf_hash(e) for e in entries])
    decoy = log.Checkpoint(origin, len(entries), root, "2030-01-01T00:00:00Z", "0" * 64, os.urandom(64))
    assert log.Checkpoint.parse(decoy.record()).origin == origin  # readable: views.origin() returns it
    backend.append_log("checkpoints", len(checkpoints), decoy.record())


def _setup(store: Path, given: dict[str, Path]) -> list[str | Path]:
    s: list[str | Path] = [DETPACK, "store", "--store", store]
    assert run([*s, "push", given["1.0"], "--provenance", given["envelope"]]).code == 0
    assert run([*s, "push", given["1.1"], given["1.2"]]).code == 0
    r = run([*s, "promote", given["1.0"].name, "--to", "prod", "--key", given["builder.pub"]])
    assert r.code == 0, r.stderr
    return s


def _fake_store(tmp_path: Path, given: dict[str, Path]) -> Path:
    """The attacker's own store (its own key), promoting 1.1 to prod."""
    fake = tmp_path / "fake"
    mallory = {"HOME": str(tmp_path / "mallory")}
    f: list[str | Path] = [DETPACK, "store", "--store", fake]
    assert run([*f, "push", given["1.1"]], env=mallory).code == 0
    assert run([*f, "promote", given["1.1"].name, "--to", "prod", "--force"], env=mallory).code == 0
    return fake


# -- keyless ------------------------------------------------------------------------------------------


def test_keyless_decoy_checkpoint_origin_makes_the_pin_unusable_then_a_key_swap_is_believed(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """Door: Reader.trusted_key/view pin (location, views.origin(checkpoints)): the origin of the newest
    *readable* checkpoint, never verified; pins.add writes it unchecked into known_stores, and pins.read
    ignores a line that does not split into 3 fields. A decoy checkpoint whose origin holds a space (or a
    newline: then it writes whole pin lines of the attacker's choosing) leaves the reader with no pin."""
    store = tmp_path / "store"
    s = _setup(store, files)
    _decoy_checkpoint(store, "decoy origin")  # before the reader's first use
    reader = {"HOME": str(tmp_path / "reader")}
    r = run([*s, "resolve", "prod"], env=reader)
    assert r.code == 0 and r.stdout.strip() == f"sha256:{sha256(files['1.0'])}", r.stderr
    # the attacker now puts its own store (its own key) in place of the real one
    fake = _fake_store(tmp_path, files)
    shutil.rmtree(store)
    shutil.copytree(fake, store)
    r = run([*s, "resolve", "prod"], env=reader)
    known = (tmp_path / "reader" / ".config" / "detpack" / "known_stores").read_text()
    assert r.code == 1 and "was pinned for it at first use" in r.stderr, (
        f"the swapped key was believed: resolve printed {r.stdout.strip()} (the attacker's 1.1 is "
        f"sha256:{sha256(files['1.1'])}); stderr {r.stderr!r}; known_stores:\n{known}"
    )


def test_keyless_blob_swap_makes_an_honest_promotion_pass_a_gate_it_fails(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """Door: Reader.policy (and evidence/read_provenance) read blobs through backend.open_blob and never
    check the bytes against the digest the log names (LocalBackend and PostgreSQL's blob directory do not;
    only the OCI client does). A keyless writer swaps the gate policy blob for a lax one: the next honest
    `store promote` evaluates the swapped policy, signs a PASSED VSA and every reader believes it."""
    store = tmp_path / "store"
    s: list[str | Path] = [DETPACK, "store", "--store", store]
    assert run([*s, "push", files["1.0"], "--provenance", files["envelope"]]).code == 0
    gate = tmp_path / "gate.toml"
    gate.write_text(f'keys = ["{files["builder.pub"]}"]\nbuilders = ["https://ci.example/only-this-builder"]\n')
    assert run([*s, "policy", "prod", gate]).code == 0
    r = run([*s, "promote", files["1.0"].name, "--to", "prod"])
    assert r.code == 1 and "builders" in r.stderr, r.stderr  # the real gate refuses 1.0 (another builder)
    [policy] = [e for e in test_store._entries(store) if e["type"] == "policy"]
    blob = store / "blobs" / "sha256" / str(policy["digest"])
    lax = tmp_path / "lax.toml"
    lax.write_text(f'keys = ["{files["builder.pub"]}"]\n')  # the same key, no builders rule
    blob.unlink()  # the keyless writer owns the directory: a 0444 file is replaced all the same
    blob.write_bytes(gate_policy.load(lax).self_contained())
    r = run([*s, "promote", files["1.0"].name, "--to", "prod"])  # the honest writer, as before
    resolved = run([*s, "resolve", "prod"])
    assert r.code != 0 and "does not match its digest" in r.stderr and resolved.code != 0, (
        f"promoted past the gate it fails: promote {r.code} {r.stdout!r}; resolve prod -> {resolved.stdout.strip()} "
        f"(exit {resolved.code})"
    )


def test_keyless_provenance_blob_swap_is_shown_and_indexed_as_the_artifacts_provenance(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """Door: show.describe -> Reader.read_provenance and fold.Fold._read_provenance read the provenance blob
    without checking its sha256 against the log's digest. A keyless writer rewrites the blob: `store show`
    (and the dashboard's lineage, and the query index) report its builder, while the log says the envelope
    is signed by the builder's key."""
    store = tmp_path / "store"
    s = _setup(store, files)
    shown = json.loads(run([*s, "show", files["1.0"].name, "--json"]).stdout)
    prov_digest = shown["provenance"]["digest"].removeprefix("sha256:")
    real_builder = shown["provenance"]["builder"]
    statement = json.loads(files["prov"].read_text())
    statement["predicate"] = {"runDetails": {"builder": {"id": "https://evil.example/builder"}}}
    blob = store / "blobs" / "sha256" / prov_digest
    blob.unlink()
    blob.write_bytes(canonical_json(statement))
    shown = json.loads(run([*s, "show", files["1.0"].name, "--json"]).stdout)
    found = run([*s, "query", "--builder", "https://evil.example/builder", "--json",
                 "--index", tmp_path / "index.sqlite"])  # fmt: skip
    assert shown["provenance"].get("builder") in (None, real_builder) and found.code == 1, (
        f"show says built by {shown['provenance'].get('builder')} (signed_by {shown['provenance']['signed_by']}); "
        f"query --builder evil: exit {found.code} {found.stdout}"
    )


def test_keyless_writer_replaces_the_log_with_another_stores_log_signed_by_the_same_key(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """Door: view.believe never compares a checkpoint's origin with the store's (its init entry, or the origin
    pinned for the location; pins.check matches by location and keyid only). Two stores created with
    `store init --key SAME.key` (a documented option): a keyless writer of store A copies store B's log and
    blobs over A's, and A's readers believe B's promotions, with no notice."""
    shared = tmp_path / "org.key"
    assert run([DETPACK, "keygen", "-o", shared]).code == 0
    a, b = tmp_path / "prod-store", tmp_path / "scratch-store"
    for store in (a, b):
        assert run([DETPACK, "store", "--store", store, "init", "--key", shared]).code == 0
    sa = _setup(a, files)  # A: 1.0 (verified provenance) live in prod
    sb: list[str | Path] = [DETPACK, "store", "--store", b]
    assert run([*sb, "push", files["1.1"]]).code == 0
    assert run([*sb, "promote", files["1.1"].name, "--to", "prod", "--force"]).code == 0  # B: a scratch store
    reader = {"HOME": str(tmp_path / "reader")}
    assert run([*sa, "resolve", "prod"], env=reader).stdout.strip() == f"sha256:{sha256(files['1.0'])}"
    for part in ("log", "blobs", "names"):  # the keyless writer of A
        shutil.rmtree(a / part)
        shutil.copytree(b / part, a / part)
    r = run([*sa, "resolve", "prod"], env=reader)
    assert r.code == 1 or r.stdout.strip() == f"sha256:{sha256(files['1.0'])}", (
        f"A now resolves prod to {r.stdout.strip()} (B's 1.1 is sha256:{sha256(files['1.1'])}); stderr {r.stderr!r}"
    )


# -- the store's key only (a store with an access policy) ---------------------------------------------


def test_store_key_only_forks_the_log_without_its_access_policy_and_readers_believe_it(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """Door: view.believe/_Roots: a log that no longer begins with the bytes the reader's verified-frontier
    cache recorded (or is shorter than it) is silently recomputed from entry 1, and nothing on the reader's
    side remembers the access policy; governance.believe only applies a policy the (believed) log holds.
    Holding only the store's key, the attacker rewrites the log from entry 2 on (no access entry), logs an
    unsigned promotion and re-signs the checkpoints: resolve believes it, even for a reader that had seen
    the access policy, and `store verify` (without --since) finds nothing."""
    store, given = tmp_path / "store", _files(tmp_path)
    assert run(_store(store, "init")).code == 0
    assert test_governance._rotate(store, keys, "access").code == 0
    wheel = given["demo-1.0-py3-none-any.whl"]
    assert run(_store(store, "push", wheel, author=keys["ci"])).code == 0
    reader = {"HOME": str(tmp_path / "reader")}
    assert run(_store(store, "log"), env=reader).code == 0  # the reader saw the policy (pin and cache warm)
    backend = LocalBackend(store)
    origin = str(replay([log.parse_entry(r) for r in backend.read_log("entries").items]).origin)
    backend.truncate_log("entries", 1)  # keep the init entry; drop the access policy and everything after
    backend.truncate_log("checkpoints", 1)
    key = _writer_key()
    digest = _sha(wheel)
    for entry in ({"type": "push", "name": wheel.name, "digest": digest, "size": wheel.stat().st_size},
                  {"type": "promote", "digest": digest, "env": "prod", "forced": False}):  # fmt: skip
        record = canonical_json({**entry, "time": "2026-12-03T00:00:00Z", "user": "mallory"})
        log.append(backend, key, origin, record, "t", c2sp=True)
    r = run(_store(store, "resolve", "prod"), env=reader)
    audit = run(_store(store, "verify", "--key", store / "keys" / "store.pub"))
    assert r.code == 1, (
        f"resolve prod -> {r.stdout.strip()} (exit {r.code}, stderr {r.stderr!r}): an unsigned promotion in a "
        f"store whose access policy needs 2 approvals; store verify exit {audit.code}: {audit.stdout.strip()}"
    )


def test_store_key_only_hides_the_access_policy_from_the_query_index(tmp_path: Path, keys: dict[str, Path]) -> None:
    """Door: Reader.refused skips governance when no record holds the bytes '"access"' ("a cheap superset"),
    but an entry is JSON: the store-key holder who writes the root-signed access entry (the --root-signature
    workflow: root key holders sign apart, the writer logs it) spells its type "\\u0061ccess". Every reader
    through Reader.state applies the policy; the query index (Fold, refused=frozenset()) believes every
    unsigned entry after it."""
    store, given = tmp_path / "store", _files(tmp_path)
    assert run(_store(store, "init")).code == 0
    backend = LocalBackend(store)
    origin = str(replay([log.parse_entry(r) for r in backend.read_log("entries").items]).origin)
    policy = access.load(keys["ci"].parent / "access.toml")
    change = access.access_change(origin, 1, policy.to_json())
    entry = {"type": "access", "policy": policy.to_json(), "version": 1, "time": "2026-12-03T00:00:00Z",
             "user": "ci", "signatures": [change.sign(load_private_key(keys["root-a"])),
                                          change.sign(load_private_key(keys["root-b"]))]}  # fmt: skip
    record = canonical_json(entry).replace(b'"type":"access"', b'"type":"\\u0061ccess"')
    log.append(backend, _writer_key(), origin, record, "t", c2sp=True)
    r = run(_store(store, "access"))
    assert r.code == 0 and "access policy of log entry 2" in r.stdout, r.stderr  # in force for every reader
    wheel = given["demo-1.0-py3-none-any.whl"]
    assert run(_store(store, "push", wheel, author=keys["ci"])).code == 0
    _forge(store, {"type": "promote", "digest": _sha(wheel), "env": "prod", "forced": False})  # unsigned
    r = run(_store(store, "resolve", "prod"))
    assert r.code == 1 and "it is refused" in r.stderr, r.stderr  # resolve applies the policy
    q = run(_store(store, "query", "--live", "prod", "--json"))
    assert q.code != 0 and "nothing has been promoted" in q.stderr, (
        f"store query --live prod believes the refused promotion: {q.stdout}"
    )


# -- the store's key and one author key ----------------------------------------------------------------


def test_promoter_without_force_passes_a_failing_gate_with_a_vsa_signed_by_the_store_key(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """Door: governance._may_promote checks the force rule only when the entry says "forced": true, and
    recheck._promotion accepts any PASSED VSA the store's key signed, the key every writer holds. alice may
    promote to staging but not force (FORCE_POLICY: staging force = ci); the wheel has no provenance, so the
    staging gate fails. With the store's key she signs a PASSED VSA herself and logs an unforced promotion:
    resolve believes it and `store verify` passes."""
    store, wheel = _gated(tmp_path, keys, FORCE_POLICY)
    gate = tmp_path / "gate.toml"
    r = run(_store(store, "policy", "staging", gate, "--root-key", keys["root-a"], "--root-key", keys["root-b"]))
    assert r.code == 0, r.stderr
    r = run(_store(store, "promote", wheel.name, "--to", "staging", author=keys["alice"]))
    assert r.code == 1, r.stderr  # the honest way: refused (no provenance); alice may not --force staging
    [policy] = [e for e in test_store._entries(store) if e["type"] == "policy" and e["env"] == "staging"]
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": wheel.name, "digest": {"sha256": _sha(wheel)}}],
        "predicateType": "https://slsa.dev/verification_summary/v1",
        "predicate": {"verificationResult": "PASSED", "policy": {"digest": {"sha256": policy["digest"]}}},
    }
    vsa = signing.sign(canonical_json(statement), _writer_key()).to_json()
    blob = tmp_path / "vsa"
    blob.write_bytes(vsa)
    LocalBackend(store).put_blob(hashlib.sha256(vsa).hexdigest(), blob)
    _forge(store, {"type": "promote", "digest": _sha(wheel), "env": "staging", "forced": False, "verdict": "PASSED",
                   "policy": policy["digest"], "vsa": {"digest": hashlib.sha256(vsa).hexdigest(), "size": len(vsa)},
                   "author": "alice", "approvals": ["alice"]}, load_private_key(keys["alice"]))  # fmt: skip
    resolved = run(_store(store, "resolve", "staging"))
    audit = run(_store(store, "verify", "--key", store / "keys" / "store.pub"))
    assert resolved.code == 1 or audit.code == 1, (
        f"resolve staging -> {resolved.stdout.strip()} (exit {resolved.code}); store verify exit {audit.code}: "
        f"{audit.stdout.strip()}"
    )


PUSH_OTHER = test_governance.POLICY.replace(
    '[[push]]\nkeys = ["ci"]\nnames = ["demo-*"]',
    '[[push]]\nkeys = ["ci"]\nnames = ["demo-*"]\n\n[[push]]\nkeys = ["bob"]\nnames = ["other-*"]',
)


def test_a_pusher_of_other_names_decides_the_provenance_the_gate_judges(
    tmp_path: Path, keys: dict[str, Path], files: dict[str, Path]
) -> None:
    """Door: state._replay_push sets Item.provenance from the first push of the *bytes* that links one, under
    any name, and Reader.evidence (the promotion gate, `verify --policy --store`) and `show DIGEST` use
    provenance_of(state, item) without a name. bob may push only other-*; he pushes demo-1.0's bytes (a
    reproducible build anyone can remake, or bytes already pushed without provenance) as other-1.0 with his
    own statement. ci's later push of demo-1.0 with the builder's signed provenance does not count: the
    gate judges bob's statement."""
    assert PUSH_OTHER != test_governance.POLICY
    (keys["ci"].parent / "other.toml").write_text(PUSH_OTHER)
    store = tmp_path / "store"
    assert run(_store(store, "init")).code == 0
    assert test_governance._rotate(store, keys, "other").code == 0
    wheel = files["1.0"]  # demo-1.0-py3-none-any.whl, its provenance signed by the builder
    assert run(_store(store, "push", wheel, author=keys["ci"])).code == 0  # pushed first without provenance
    bobs = tmp_path / "bob"
    bobs.mkdir()
    copy = bobs / "other-1.0-py3-none-any.whl"
    copy.write_bytes(wheel.read_bytes())
    statement = json.loads(files["prov"].read_text())
    statement["subject"] = [{"name": copy.name, "digest": {"sha256": _sha(copy)}}]
    statement["predicate"] = {"runDetails": {"builder": {"id": "https://evil.example/builder"}}}
    prov = bobs / "other-1.0.provenance.json"
    prov.write_bytes(canonical_json(statement))
    r = run(_store(store, "push", copy, "--provenance", prov, author=keys["bob"]))
    assert r.code == 0, r.stderr
    r = run(_store(store, "push", wheel, "--provenance", files["envelope"], author=keys["ci"]))
    assert r.code == 0, r.stderr
    policy = tmp_path / "policy.toml"
    policy.write_text(f'version = 1\nkeys = ["{files["builder.pub"]}"]\n')
    r = run([DETPACK, "verify", wheel, "--policy", policy, "--store", store])
    shown = json.loads(run(_store(store, "show", _sha(wheel), "--json")).stdout)
    assert r.code == 0, (
        f"verify --policy --store judged bob's provenance: {r.stderr.strip()}; show by digest says built by "
        f"{shown['provenance']['builder']}"
    )


def test_a_tag_bound_to_a_digest_not_in_the_store_crashes_readers_and_verify_is_clean(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """Door: state.apply binds a tag entry's name whatever its digest (_bind runs before the `digest in
    state.items` check), so Reader.find does state.items[state.names[ref]] -> KeyError; fold.Fold binds it
    only when the digest exists (the index and the readers disagree), and store verify names nothing. ci
    (may push demo-*) with the store's key."""
    store, _ = test_governance._governed(tmp_path, keys)
    name = "demo-9.9-py3-none-any.whl"
    _forge(store, {"type": "tag", "name": name, "digest": "0" * 64, "author": "ci"}, load_private_key(keys["ci"]))
    r = run(_store(store, "show", name))
    audit = run(_store(store, "verify", "--key", store / "keys" / "store.pub"))
    assert "Traceback" not in r.stderr and audit.code == 1, (
        f"show {name}: exit {r.code} {r.stderr.strip().splitlines()[-1:]}; verify exit {audit.code}"
    )


def test_keyless_decoy_checkpoint_makes_the_next_honest_writer_truncate_the_log(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """Door: log.recover (run by every writer, before _check_head) truncates the entries to the size of
    log.last_checkpoint, the newest *readable* checkpoint, whose signature nobody checked. A keyless writer
    that can only append (a PostgreSQL role with INSERT, no DELETE) appends a checkpoint of tree size 1: the
    next honest write deletes every entry after the first, then refuses with "nothing was written"."""
    store = tmp_path / "store"
    s = _setup(store, files)
    backend = LocalBackend(store)
    held = len(backend.read_log("entries").items)
    first = backend.read_log("entries").items[0]
    checkpoints = backend.read_log("checkpoints").items
    decoy = log.Checkpoint("decoy", 1, merkle.root([merkle.leaf_hash(first)]), "t", "0" * 64, os.urandom(64))
    backend.append_log("checkpoints", len(checkpoints), decoy.record())  # appended, nothing removed
    r = run([*s, "push", files["prov"]])  # the honest writer's next push
    after = len(backend.read_log("entries").items)
    assert r.code == 0 and after == held + 1, (
        f"the honest writer cut the log from {held} entries to {after}; it said {r.stderr!r}"
    )
