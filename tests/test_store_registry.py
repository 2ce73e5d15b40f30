"""The store's OCI-registry backend against the Distribution registry started for the session:
the same write-once rules, log, proofs and audit as a local store, and tampering done
through the registry's own API is named by ``store verify``."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest
from test_governance import POLICY, WITNESS, _files, _vkey
from test_store import files, isolated_home  # noqa: F401 - the fixtures

from conftest import DETPACK, run, sha256
from detpack.provenance.signing import load_public_key
from detpack.store import RegistryBackend, verify_store

pytestmark = pytest.mark.integration


def _store(registry: str, repo: str) -> str:
    return f"oci://{registry}/{repo}"


def _ok(r: object) -> str:
    assert getattr(r, "code", None) == 0, getattr(r, "stdout", "") + getattr(r, "stderr", "")
    return str(getattr(r, "stdout", ""))


def test_round_trip(tmp_path: Path, files: dict[str, Path], registry: str) -> None:  # noqa: F811
    url = _store(registry, "stores/round-trip")
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    out = _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"], "--provenance", files["envelope"]], env=env))
    assert out.count("stored  ") == 2
    digest = sha256(files["1.0"])
    # The same bytes again: nothing new.
    again = _ok(
        run([DETPACK, "store", "--store", url, "push", files["1.0"], "--provenance", files["envelope"]], env=env)
    )
    assert again.count("unchanged") == 2
    # Other bytes under the bound name: refused with exit 1, nothing changed.
    impostor = tmp_path / "elsewhere" / files["1.0"].name
    impostor.parent.mkdir()
    impostor.write_bytes(b"other bytes")
    log_before = _ok(run([DETPACK, "store", "--store", url, "log", "--json"], env=env))
    r = run([DETPACK, "store", "--store", url, "push", impostor], env=env)
    assert r.code == 1 and "write-once" in r.stderr, r.stderr
    assert _ok(run([DETPACK, "store", "--store", url, "log", "--json"], env=env)) == log_before
    # Promotion of a signed build, resolve, show, proof.
    pub = files["builder.pub"]
    _ok(run([DETPACK, "store", "--store", url, "promote", digest, "--to", "prod", "--key", pub], env=env))
    assert _ok(run([DETPACK, "store", "--store", url, "resolve", "prod"], env=env)).strip().endswith(digest)
    shown = _ok(run([DETPACK, "store", "--store", url, "show", files["1.0"].name], env=env))
    assert digest in shown
    _ok(run([DETPACK, "store", "--store", url, "proof", digest], env=env))
    # A third party with only the published public key audits the registry copy.
    key_pem = tmp_path / "store.pub"
    key_pem.write_text(_ok(run([DETPACK, "store", "--store", url, "key"], env=env)))
    _ok(
        run(
            [DETPACK, "store", "--store", url, "verify", "--key", key_pem], env={"XDG_CACHE_HOME": str(tmp_path / "c2")}
        )
    )
    backend = RegistryBackend(url, tmp_path / "locks")
    assert verify_store(backend, load_public_key(key_pem)).problems == ()
    # Blob bytes round-trip exactly.
    with backend.open_blob(digest) as f:
        assert f.read() == files["1.0"].read_bytes()


def test_tampering_through_the_registry_api_is_named(tmp_path: Path, files: dict[str, Path], registry: str) -> None:  # noqa: F811
    url = _store(registry, "stores/tamper")
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"], files["1.1"]], env=env))
    backend = RegistryBackend(url, tmp_path / "locks")
    assert verify_store(backend, None).problems == ()
    # Re-point the name of 1.0 at 1.1's bytes by hand (Distribution lets any tag move).
    name_tag = RegistryBackend._name_tag(files["1.0"].name)
    other = RegistryBackend._name_tag(files["1.1"].name)
    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://{registry}/v2/stores/tamper/manifests/{other}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
    ) as resp:
        body = json.loads(resp.read())
    body["annotations"]["org.detpack.store.name"] = files["1.0"].name
    req = urllib.request.Request(
        f"http://{registry}/v2/stores/tamper/manifests/{name_tag}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201
    problems = verify_store(backend, None).problems
    assert any(files["1.0"].name in p for p in problems), problems
    r = run([DETPACK, "store", "--store", url, "verify"], env=env)
    assert r.code == 1 and files["1.0"].name in r.stdout + r.stderr


def test_unreachable_registry_store(tmp_path: Path, files: dict[str, Path]) -> None:  # noqa: F811
    r = run(
        [DETPACK, "store", "--store", "oci://127.0.0.1:1/x", "push", files["1.0"]], env={"XDG_DATA_HOME": str(tmp_path)}
    )
    assert r.code == 2 and "registry unreachable" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_the_registry_stores_key_is_named_by_its_keyid(
    tmp_path: Path,
    files: dict[str, Path],  # noqa: F811
    registry: str,
) -> None:
    url = _store(registry, "stores/keys")
    data = tmp_path / "data"
    env = {"XDG_DATA_HOME": str(data), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    _ok(run([DETPACK, "store", "--store", url, "push", files["1.0"]], env=env))
    keyid = json.loads(_ok(run([DETPACK, "store", "--store", url, "log", "--json"], env=env)))[0]["keyid"]
    keys = data / "detpack" / "store-keys"
    key = keys / f"{keyid}.key"
    assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o600"
    # a key kept under the name earlier versions gave it (a digest of the URL) is still found
    key.rename(keys / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.key")
    _ok(run([DETPACK, "store", "--store", url, "push", files["1.1"]], env=env))
    assert verify_store(RegistryBackend(url, tmp_path / "locks"), load_public_key(Path(f"{key}.pub"))).ok


def test_roles_approvals_witnesses_and_proofs_on_a_registry(tmp_path: Path, registry: str) -> None:
    url = _store(registry, "stores/governed")
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    folder = tmp_path / "keys"
    folder.mkdir()
    keys = {}
    for name in ("root-a", "root-b", "ci", "alice", "release", "bob", "w1"):
        _ok(run([DETPACK, "keygen", "-o", folder / f"{name}.key"]))
        keys[name] = folder / f"{name}.key"
    (folder / "access.toml").write_text(POLICY)
    made = _files(tmp_path)
    wheel = made["demo-1.0-py3-none-any.whl"]
    s = [DETPACK, "store", "--store", url]
    _ok(run([*s, "init"], env=env))
    _ok(
        run([*s, "access", folder / "access.toml", "--root-key", keys["root-a"], "--root-key", keys["root-b"]], env=env)
    )
    r = run([*s, "push", made["other-1.0.tar.gz"], "--author", keys["ci"]], env=env)
    assert r.code == 1 and "rule push" in r.stderr, r.stderr
    _ok(run([*s, "push", wheel, "--author", keys["ci"]], env=env))
    r = run([*s, "promote", wheel.name, "--to", "prod", "--force", "--author", keys["alice"]], env=env)
    assert r.code == 1 and "rule promote.prod.approvals" in r.stderr
    force = ["--force", "--reason", "no provenance in this test"]
    assert "1 of 2" in _ok(run([*s, "approve", wheel.name, "--to", "prod", "--key", keys["alice"], *force], env=env))
    out = _ok(run([*s, "approve", wheel.name, "--to", "prod", "--key", keys["release"], *force], env=env))
    assert "-> prod  by release" in out
    # a witness cosigns the registry store's checkpoint; verify trusts it; a proof verifies offline
    key_pem = tmp_path / "store.pub"
    key_pem.write_text(_ok(run([*s, "key"], env=env)))
    w = ["--key", keys["w1"], "--name", WITNESS["w1"], "--state", tmp_path / "w1-state"]
    _ok(run([*s, "witness", "add-checkpoint", *w, "--log-key", key_pem], env=env))
    w1 = _vkey(keys, "w1")
    out = _ok(run([*s, "verify", "--key", key_pem, "--witness", w1, "--quorum", "1"], env=env))
    assert "trusted checkpoint: tree size 6, cosigned by witness.example/w1" in out, out
    proof = tmp_path / "demo.tlog-proof"
    _ok(run([*s, "proof", wheel.name, "-o", proof], env=env))
    vkey = _ok(run([*s, "key", "--vkey"], env=env)).strip()
    out = _ok(run([DETPACK, "store", "verify-proof", proof, "--log-key", vkey, "--witness", w1, "--quorum", "1",
                   "--artifact", wheel]))  # fmt: skip
    assert "verified: log entry 3 of 6" in out
