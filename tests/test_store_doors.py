"""Issue 34, "nothing a keyless writer adds is believed": four doors, each shown open and then shut.

Loopback is decided on the parsed host (``localhost.example.com`` is not this machine); a witness
quorum counts distinct keys (one key given twice, or under two names, is refused); a policy's
``require-pull-request`` holds for the built commit itself, not for any commit since the last
release; a name read from the log is checked as a name written by a user is, before any backend
builds a path, a tag or a row from it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_store import isolated_home  # noqa: F401 - the fixture

from conftest import DETPACK, FIXTURES, materialize, run, sha256
from detpack.digest import canonical_json
from detpack.errors import ConfigError, StoreError
from detpack.oci.registry import Registry
from detpack.provenance.signing import PrivateKey, load_private_key, load_public_key
from detpack.store import LocalBackend, RegistryBackend, log, open_store, proofs, verify_store
from detpack.store.postgres import PostgresBackend
from detpack.store.state import replay
from detpack.store.witness import Witness

# -- 1. loopback from the parsed host ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "scheme"),
    [
        ("127.0.0.1:5000", "http"),
        ("127.1.2.3:5000", "http"),
        ("localhost:5000", "http"),
        ("localhost", "http"),
        ("[::1]:5000", "http"),
        ("[::1]", "http"),
        ("localhost.example.com:5000", "https"),
        ("127.0.0.1.nip.io:5000", "https"),
        ("127.example:5000", "https"),
        ("127.evil.com", "https"),
        ("[::1].evil.com:5000", "https"),
        ("localhostx:5000", "https"),
        ("128.0.0.1:5000", "https"),
        ("[::2]:5000", "https"),
        ("127.1:5000", "https"),  # not an IP address as ipaddress reads one: a name, so https
        ("localhost:notaport", "https"),
        ("ghcr.io", "https"),
    ],
)
def test_plain_http_only_for_a_host_that_is_this_machine(host: str, scheme: str) -> None:
    registry = Registry(host)
    assert registry.scheme == scheme
    assert registry.url("/v2/") == f"{scheme}://{host}/v2/"


def test_the_registry_store_backend_speaks_https_to_a_lookalike_host(tmp_path: Path) -> None:
    assert RegistryBackend("oci://localhost.example.com:5000/stores/x", tmp_path).registry.scheme == "https"
    assert RegistryBackend("oci://127.0.0.1:5000/stores/x", tmp_path).registry.scheme == "http"


# -- 2. a witness quorum counts distinct keys ---------------------------------------------

NOW = 1_760_000_000


def _cosigned_store(tmp_path: Path, witnesses: list[tuple[PrivateKey, str]]) -> tuple[Path, Path]:
    """A store with one push, its checkpoint cosigned by each (key, name); the store and its public key."""
    tmp_path.mkdir(exist_ok=True)
    store = tmp_path / "store"
    artifact = tmp_path / "demo-1.0.tar.gz"
    artifact.write_bytes(b"demo 1.0\n")
    r = run([DETPACK, "store", "--store", store, "push", artifact])
    assert r.code == 0, r.stderr
    pub = store / "keys" / "store.pub"
    for number, (key, name) in enumerate(witnesses):
        w = Witness(key, name, tmp_path / f"witness-{number}")
        w.add_checkpoint(open_store(str(store)), load_public_key(pub), NOW)
    return store, pub


def test_one_witness_key_under_two_names_is_not_a_quorum_of_two(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    store, pub = _cosigned_store(tmp_path, [(key, "witness.example/w1"), (key, "witness.example/alias")])
    w1 = Witness(key, "witness.example/w1", tmp_path).vkey()
    alias = Witness(key, "witness.example/alias", tmp_path).vkey()
    # the library refuses the list, naming the duplicate
    for given in ([w1, alias], [w1, w1]):
        with pytest.raises(ConfigError, match=r"witness\.example/(w1|alias).*same public key as.*witness\.example/w1"):
            verify_store(LocalBackend(store), load_public_key(pub), None, given, 2)
    # one of them is a quorum of one, as before
    audit = verify_store(LocalBackend(store), load_public_key(pub), None, [w1], 1)
    assert audit.ok and audit.cosigners == ("witness.example/w1",)
    # the command: one line, exit 2, nothing claimed
    for second in (alias, w1):
        r = run([DETPACK, "store", "--store", store, "verify", "--witness", w1.text(), "--witness", second.text(),
                 "--quorum", "2"])  # fmt: skip
        assert r.code == 2, r.stdout + r.stderr
        [line] = r.stderr.strip().splitlines()
        assert "same public key" in line and second.name in line and "trusted checkpoint" not in r.stdout


def test_two_keys_under_one_name_are_two_cosigners(tmp_path: Path) -> None:
    a, b = PrivateKey.generate(), PrivateKey.generate()
    store, pub = _cosigned_store(tmp_path, [(a, "witness.example/w"), (b, "witness.example/w")])
    given = [Witness(k, "witness.example/w", tmp_path).vkey() for k in (a, b)]
    audit = verify_store(LocalBackend(store), load_public_key(pub), None, given, 2)
    assert audit.ok, audit.problems
    assert audit.witnessed == audit.entries and len(audit.cosigners) == 2


def test_a_tlog_proof_counts_each_witness_key_once(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    store, pub = _cosigned_store(tmp_path, [(key, "witness.example/w1"), (key, "witness.example/alias")])
    data = proofs.tlog_proof(open_store(str(store)), "demo-1.0.tar.gz")
    w1 = Witness(key, "witness.example/w1", tmp_path).vkey()
    alias = Witness(key, "witness.example/alias", tmp_path).vkey()
    log_key = load_public_key(pub)
    assert proofs.check_tlog_proof(data, "p", log_key, [w1], 1).cosigners == ("witness.example/w1",)
    for given in ([w1, w1], [w1, alias]):
        with pytest.raises(ConfigError, match="same public key"):
            proofs.check_tlog_proof(data, "p", log_key, given, 2)
    proof = tmp_path / "demo.tlog-proof"
    proof.write_bytes(data)
    r = run([DETPACK, "store", "verify-proof", proof, "--log-key", pub, "--witness", w1.text(),
             "--witness", alias.text(), "--quorum", "2"])  # fmt: skip
    assert r.code == 2 and "verified" not in r.stdout, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "witness.example/alias" in line and "same public key" in line
    # two keys under one name cosigning the proof's checkpoint: two cosigners
    a, b = PrivateKey.generate(), PrivateKey.generate()
    other, other_pub = _cosigned_store(tmp_path / "other", [(a, "witness.example/w"), (b, "witness.example/w")])
    data = proofs.tlog_proof(open_store(str(other)), "demo-1.0.tar.gz")
    given = [Witness(k, "witness.example/w", tmp_path).vkey() for k in (a, b)]
    checked = proofs.check_tlog_proof(data, "p", load_public_key(other_pub), given, 2)
    assert len(checked.cosigners) == 2


# -- 3. require-pull-request holds for the built commit ------------------------------------


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent), "PATH": "/usr/bin:/bin"}
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def _commit(repo: Path, message: str) -> None:
    count = len(list(repo.glob("NOTE*")))
    (repo / f"NOTE{count}.txt").write_text(f"{count}\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)


def _gate(repo: Path, tmp_path: Path, label: str, wheelhouse: Path) -> tuple[bool, str]:
    """Build the sdist of ``repo`` as it is, signed, and check ``require-pull-request``: (passed, its line)."""
    key = tmp_path / "release.key"
    if not key.exists():
        assert run([DETPACK, "keygen", "-o", key]).code == 0
    out = tmp_path / label
    r = run([DETPACK, "build", repo, "--sdist", "-o", out, "--find-links", wheelhouse, "--offline", "--sign", key])
    assert r.code == 0, r.stdout + r.stderr
    policy = tmp_path / "policy.toml"
    policy.write_text(f'keys = ["{key}.pub"]\nrequire-pull-request = true\n')
    r = run([DETPACK, "verify", out / "fx_flit-1.0.0.tar.gz", "--provenance", out / "fx_flit-1.0.0.intoto.jsonl",
             "--policy", policy])  # fmt: skip
    [line] = [ln for ln in r.stdout.splitlines() if "require-pull-request" in ln]
    assert r.code == (0 if line.lstrip().startswith("ok") else 1), r.stdout + r.stderr
    return r.code == 0, line


@pytest.mark.slow
def test_require_pull_request_looks_at_the_built_commit_only(tmp_path: Path, wheelhouse: Path) -> None:
    repo = materialize(FIXTURES / "flit", tmp_path / "repo", 0o022)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first release")
    _git(repo, "tag", "v0.9.0")
    _commit(repo, "Speed up the parser (#12)")
    _commit(repo, "Document the options")
    passed, line = _gate(repo, tmp_path, "plain-head", wheelhouse)
    assert not passed and "Document the options" in line, line
    # HEAD is the merge commit of a pull request
    _git(repo, "checkout", "-q", "-b", "feature")
    _commit(repo, "Handle empty input")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #12 from x/y", "feature")
    passed, line = _gate(repo, tmp_path, "merge-head", wheelhouse)
    assert passed and "Merge pull request #12 from x/y" in line, line
    # HEAD is a squash-merged pull request
    _commit(repo, "Fix thing (#12)")
    passed, line = _gate(repo, tmp_path, "squash-head", wheelhouse)
    assert passed and "Fix thing (#12)" in line, line
    # ... but built with uncommitted changes on top, it is not what was reviewed
    (repo / "fx_flit" / "__init__.py").write_text((repo / "fx_flit" / "__init__.py").read_text() + "\n# local\n")
    passed, line = _gate(repo, tmp_path, "dirty-head", wheelhouse)
    assert not passed and "uncommitted" in line, line
    _git(repo, "checkout", "-q", "--", ".")
    # a local merge of a branch is no pull request; GitLab's merge commit names its merge request
    _git(repo, "checkout", "-q", "-b", "topic")
    _commit(repo, "Tidy up")
    _git(repo, "checkout", "-q", "main")
    _git(repo, "merge", "-q", "--no-ff", "-m", "Merge branch 'topic' into 'main'", "topic")
    passed, line = _gate(repo, tmp_path, "local-merge", wheelhouse)
    assert not passed, line
    _git(repo, "commit", "-q", "--amend", "-m",
         "Merge branch 'topic' into 'main'\n\nTidy up\n\nSee merge request org/fx-flit!7")  # fmt: skip
    passed, line = _gate(repo, tmp_path, "gitlab-merge", wheelhouse)
    assert passed and "org/fx-flit!7" in line, line


# -- 4. names from the log are checked before a backend uses them --------------------------


def _outside(tmp_path: Path, store: Path) -> set[Path]:
    """Every path under ``tmp_path`` but the store's own and HOME's (detpack's caches and the store's key)."""
    home = tmp_path / "home"
    return {p for p in tmp_path.rglob("*") if not {store, home} & {p, *p.parents}}


def test_a_hostile_name_is_refused_by_every_backend_before_it_is_used(tmp_path: Path) -> None:
    store = tmp_path / "deep" / "store"
    artifact = tmp_path / "demo-1.0.tar.gz"
    artifact.write_bytes(b"demo 1.0\n")
    assert run([DETPACK, "store", "--store", store, "push", artifact]).code == 0
    digest = sha256(artifact)
    before = _outside(tmp_path, store)
    backend = LocalBackend(store)
    for name in ("../../outside/pwned", "../../pwned", "../pwned", "..", ".", "a/b", "", ".hidden", "x\n", "/etc/x"):
        with pytest.raises(StoreError, match="not a usable store name") as caught:
            backend.bind_name(name, digest)
        assert repr(name) in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(StoreError, match="not a usable store name"):
            backend.get_name(name)
    with pytest.raises(StoreError, match="not a sha256"):
        backend.bind_name("demo-2.0.tar.gz", "../../x")
    assert _outside(tmp_path, store) == before
    # the other backends refuse the same names before any request or query
    registry = RegistryBackend("oci://127.0.0.1:9/stores/x", tmp_path / "locks")
    with pytest.raises(StoreError, match=r"'\.\./\.\./pwned': not a usable store name"):
        registry.bind_name("../../pwned", digest)
    with pytest.raises(StoreError, match="not a sha256"):
        registry.bind_name("demo-1.0.tar.gz", "../../../v2/other/manifests/latest")
    postgres = PostgresBackend(f"postgresql://u@127.0.0.1:9/db?blobs={tmp_path / 'blobs'}", backend)
    with pytest.raises(StoreError, match=r"'\.\./\.\./pwned': not a usable store name"):
        postgres.bind_name("../../pwned", digest)


def test_a_name_forged_into_the_log_with_the_stores_key_writes_nothing_outside(tmp_path: Path) -> None:
    """The worst case: a writer holding the store's key logs a tag ``../../outside/pwned``. The next honest
    writer must not bind it (``_Writer.finish`` binds what is logged but unbound; before, it made
    ``outside/`` beside the store and died with a traceback): either the replay does not believe the name, or
    the backend refuses it in one line; nothing is created outside the store either way."""
    store = tmp_path / "deep" / "store"
    artifact = tmp_path / "demo-1.0.tar.gz"
    artifact.write_bytes(b"demo 1.0\n")
    assert run([DETPACK, "store", "--store", store, "push", artifact]).code == 0
    backend = LocalBackend(store)
    records = list(backend.read_log("entries").items)
    state = replay([log.parse_entry(r) for r in records])
    name = "../../outside/pwned"
    entry = {"type": "tag", "name": name, "digest": sha256(artifact), "time": "2026-01-01T00:00:00Z"}
    key = load_private_key(next((Path(os.environ["HOME"]) / ".local/share/detpack/store-keys").glob("*.key")))
    log.append(backend, key, str(state.origin), canonical_json(entry), "t", c2sp=True)
    other = tmp_path / "demo-1.1.tar.gz"
    other.write_bytes(b"demo 1.1\n")
    before = _outside(tmp_path, store)
    r = run([DETPACK, "store", "--store", store, "push", other])
    assert "Traceback" not in r.stderr and r.code in (0, 2), r.stdout + r.stderr
    if r.code == 2:
        [line] = r.stderr.strip().splitlines()
        assert repr(name) in line and "not a usable store name" in line
    assert _outside(tmp_path, store) == before
    assert not (tmp_path / "deep" / "outside").exists()
    assert not any(".." in n for n in backend.list_names())
