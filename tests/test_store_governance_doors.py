"""Governance without side doors: forcing is its own permission, agreed by the threshold and said why;
rule patterns pick the most specific; a name's provenance link and binding are write-once; ``store
verify`` re-checks every recorded verdict and names a rebound name. Each test is the attacker's try."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import test_governance
from test_governance import _files, _forge, _refused, _store

from conftest import DETPACK, run
from detpack.digest import canonical_json
from detpack.provenance import signing
from detpack.provenance.signing import load_private_key
from detpack.store import LocalBackend, log

keys = test_governance.keys  # the fixtures
isolated_home = test_governance.isolated_home

FORCE_POLICY = test_governance.POLICY.replace('force = ["alice", "release", "bob"]', 'force = ["alice", "bob"]')


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _gated(tmp_path: Path, keys: dict[str, Path], policy: str = FORCE_POLICY) -> tuple[Path, Path]:
    """A store with ``policy`` as its access policy, a prod gate nobody's artifact meets, and one wheel."""
    store, files = tmp_path / "store", _files(tmp_path)
    (keys["ci"].parent / "force.toml").write_text(policy)
    assert run(_store(store, "init")).code == 0
    r = run(_store(store, "access", keys["ci"].parent / "force.toml", "--root-key", keys["root-a"],
                   "--root-key", keys["root-b"]))  # fmt: skip
    assert r.code == 0, r.stderr
    gate = tmp_path / "gate.toml"
    gate.write_text(f'keys = ["{keys["ci"]}.pub"]\n')
    r = run(_store(store, "policy", "prod", gate, "--root-key", keys["root-a"], "--root-key", keys["root-b"]))
    assert r.code == 0, r.stderr
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert run(_store(store, "push", wheel, author=keys["ci"])).code == 0
    return store, wheel


def test_forcing_past_a_gate_is_its_own_permission_agreed_by_the_threshold(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    store, wheel = _gated(tmp_path, keys)
    approve = ["approve", wheel.name, "--to", "prod"]
    # release may promote to prod but not force: its approval with --force is refused
    _refused(
        run(_store(store, *approve, "--key", keys["release"], "--force", "--reason", "hotfix")),
        "key release may not agree to force a promotion to prod", "rule promote.prod.force", "allows alice, bob",
    )  # fmt: skip
    # alice approves (not agreeing to force); bob, who may force, cannot decide it alone
    r = run(_store(store, *approve, "--key", keys["alice"]))
    assert r.code == 0 and "1 of 2 (alice)" in r.stdout, r.stderr
    r = run(_store(store, *approve, "--key", keys["bob"], "--force", "--reason", "hotfix"))
    assert r.code == 1 and "forcing prod needs 2 distinct keys of rule promote.prod.force" in r.stderr, r.stderr
    assert "has 1 (bob)" in r.stderr
    assert run(_store(store, "resolve", "prod")).code != 0  # nothing is live in prod
    # a forced promotion must say why
    r = run(_store(store, *approve, "--key", keys["alice"], "--force"))
    assert r.code == 1 and "must say why (--reason TEXT)" in r.stderr, r.stderr
    # alice agrees to force it too, with a reason: promoted, forced, the reason logged
    r = run(_store(store, *approve, "--key", keys["alice"], "--force", "--reason", "CVE-2026-1 hotfix"))
    assert r.code == 0 and "-> prod  by alice" in r.stdout, r.stdout + r.stderr
    [promote] = [e for e in json.loads(run(_store(store, "log", "--json")).stdout) if e["type"] == "promote"]
    assert promote["forced"] is True and promote["why"] == "CVE-2026-1 hotfix" and "no provenance" in promote["reason"]
    assert "why: CVE-2026-1 hotfix" in run(_store(store, "log")).stdout
    r = run(_store(store, "verify", "--key", store / "keys" / "store.pub"))
    assert r.code == 0, r.stdout


def test_a_forced_promotion_logged_with_the_store_key_alone_is_named_and_not_believed(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    store, wheel = _gated(tmp_path, keys)
    # alice may promote to staging, not force it; with the store's key she logs a forced promotion anyway
    _forge(store, {"type": "promote", "digest": _sha(wheel), "env": "staging", "forced": True, "why": "x",
                   "author": "alice"}, load_private_key(keys["alice"]))  # fmt: skip
    r = run(_store(store, "verify", "--key", store / "keys" / "store.pub"))
    assert r.code == 1 and "key alice may not force a promotion to staging past its gate" in r.stdout, r.stdout
    r = run(_store(store, "resolve", "staging"))
    assert r.code == 1 and r.stdout == "" and "it is refused" in r.stderr, r.stderr


def test_the_most_specific_promote_rule_holds(tmp_path: Path, keys: dict[str, Path]) -> None:
    policy = test_governance.POLICY.replace(
        "[promote.staging]",
        '[promote."*"]\nkeys = ["ci"]\nforce = ["ci"]\n\n[promote."prod*"]\nkeys = ["alice"]\n\n[promote.staging]',
    )
    store, files = tmp_path / "store", _files(tmp_path)
    (keys["ci"].parent / "patterns.toml").write_text(policy)
    assert run(_store(store, "init")).code == 0
    assert run(_store(store, "access", keys["ci"].parent / "patterns.toml", "--root-key", keys["root-a"],
                      "--root-key", keys["root-b"])).code == 0  # fmt: skip
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert run(_store(store, "push", wheel, author=keys["ci"])).code == 0
    # prod-eu: "prod*" is more specific than "*" (which sorts first), so ci may not promote there
    force = ["--force", "--reason", "no provenance yet"]
    _refused(run(_store(store, "promote", wheel.name, "--to", "prod-eu", *force, author=keys["ci"])),
             "key ci may not promote to prod-eu", "rule promote.prod*")  # fmt: skip
    r = run(_store(store, "promote", wheel.name, "--to", "qa", *force, author=keys["ci"]))
    assert r.code == 0, r.stderr  # only "*" matches qa


def test_pushing_the_same_bytes_under_another_name_never_relinks_provenance(tmp_path: Path) -> None:
    store = tmp_path / "store"
    s = [DETPACK, "store", "--store", store]
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    real, other = tmp_path / "real.provenance.json", tmp_path / "evil.provenance.json"
    for path, builder in ((real, "https://ci.example/real"), (other, "https://evil.example/builder")):
        path.write_bytes(canonical_json({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": wheel.name, "digest": {"sha256": _sha(wheel)}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"runDetails": {"builder": {"id": builder}}},
        }))  # fmt: skip
    assert run([*s, "push", wheel, "--provenance", real]).code == 0
    copy = tmp_path / "copy" / "demo_copy-1.0-py3-none-any.whl"
    copy.parent.mkdir()
    copy.write_bytes(wheel.read_bytes())
    assert run([*s, "push", copy, "--provenance", other]).code == 0  # the same bytes, another name
    shown = json.loads(run([*s, "show", wheel.name, "--json"]).stdout)
    assert shown["provenance"]["builder"] == "https://ci.example/real", shown["provenance"]
    by_digest = json.loads(run([*s, "show", _sha(wheel), "--json"]).stdout)
    assert by_digest["provenance"]["builder"] == "https://ci.example/real"
    assert json.loads(run([*s, "show", copy.name, "--json"]).stdout)["provenance"]["builder"] == (
        "https://evil.example/builder"
    )
    found = json.loads(run([*s, "query", "--builder", "https://ci.example/real", "--json"]).stdout)
    assert [m["digest"] for m in found["matches"]] == [f"sha256:{_sha(wheel)}"]
    r = run([*s, "query", "--builder", "https://evil.example/builder", "--json"])
    assert r.code == 1  # the evil provenance describes no artifact's builder
    # pushing the first name again with other provenance is refused: a name's link is write-once
    r = run([*s, "push", wheel, "--provenance", other])
    assert r.code == 1 and "a name's provenance link is write-once" in r.stderr, r.stderr


def test_verify_names_a_rebound_name_and_readers_keep_the_first(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = _files(tmp_path)
    one, two = files["demo-1.0-py3-none-any.whl"], files["demo-1.1-py3-none-any.whl"]
    assert run([DETPACK, "store", "--store", store, "push", one, two]).code == 0
    _forge(store, {"type": "tag", "name": one.name, "digest": _sha(two)})
    _forge(store, {"type": "push", "name": "../../outside", "digest": _sha(two), "size": 1})
    r = run([DETPACK, "store", "--store", store, "verify"])
    assert r.code == 1, r.stdout
    assert f"binds name {one.name} again, to sha256:{_sha(two)[:16]}" in r.stdout, r.stdout
    assert "names '../../outside', which is no store name" in r.stdout
    shown = json.loads(run([DETPACK, "store", "--store", store, "show", one.name, "--json"]).stdout)
    assert shown["digest"] == f"sha256:{_sha(one)}"
    assert not (tmp_path / "outside").exists()


def test_verify_rechecks_every_recorded_verdict(tmp_path: Path, keys: dict[str, Path]) -> None:
    store, files = tmp_path / "store", _files(tmp_path)
    gate = tmp_path / "gate.toml"
    gate.write_text(f'keys = ["{keys["ci"]}.pub"]\n')
    assert run(_store(store, "init")).code == 0
    assert run(_store(store, "policy", "prod", gate)).code == 0  # a gate, no access policy: the store key writes
    wheel = files["demo-1.0-py3-none-any.whl"]
    assert run(_store(store, "push", wheel)).code == 0
    assert run(_store(store, "verify")).code == 0
    # the store key's holder logs a PASSED verdict with a VSA it signed about other bytes, then no verdict at all
    [policy] = [e for e in _entries(store) if e["type"] == "policy"]
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "x", "digest": {"sha256": "0" * 64}}],
        "predicateType": "https://slsa.dev/verification_summary/v1",
        "predicate": {"verificationResult": "PASSED", "policy": {"digest": {"sha256": policy["digest"]}}},
    }
    vsa = signing.sign(canonical_json(statement), _store_key()).to_json()
    blob = tmp_path / "vsa"
    blob.write_bytes(vsa)
    LocalBackend(store).put_blob(hashlib.sha256(vsa).hexdigest(), blob)
    _forge(store, {"type": "promote", "digest": _sha(wheel), "env": "prod", "forced": False, "verdict": "PASSED",
                   "policy": policy["digest"], "vsa": {"digest": hashlib.sha256(vsa).hexdigest(),
                                                       "size": len(vsa)}})  # fmt: skip
    _forge(store, {"type": "promote", "digest": _sha(wheel), "env": "prod", "forced": False})
    r = run(_store(store, "verify"))
    assert r.code == 1, r.stdout
    assert "its VSA is about other artifacts, not the one promoted" in r.stdout, r.stdout
    assert "records no verdict and is not forced" in r.stdout


def _entries(store: Path) -> list[dict[str, object]]:
    return [log.parse_entry(r) for r in LocalBackend(store).read_log("entries").items]


def _store_key() -> signing.PrivateKey:
    return load_private_key(next((Path(os.environ["HOME"]) / ".local/share/detpack/store-keys").glob("*.key")))
