"""``detpack verify --policy``: a release gate over a real signed build and two real rebuilds.

One module build: the flit fixture committed in a git repository (remote, tag v1.0.0), built with
``--sign``, co-signed by a second release key, and rebuilt by two rebuilders (two keys, two build
roots) with ``rebuild --attest``. The policy that passes is then broken one rule at a time; each
run must fail naming exactly that rule. The VSA it writes is read with in-toto-attestation's
models and its signature checked with securesystemslib.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from in_toto_attestation.v1 import resource_descriptor_pb2, statement_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope as SSlibEnvelope
from securesystemslib.signer import SSlibKey

from conftest import DETPACK, FIXTURES, materialize, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BUILDER = "https://detpack.dev/builders/local/v1"
REMOTE = "https://example.com/org/fx-flit.git"
WHEEL = "fx_flit-1.0.0-py3-none-any.whl"
SDIST = "fx_flit-1.0.0.tar.gz"
VSA_FIELDS = {
    "verifier",
    "timeVerified",
    "resourceUri",
    "policy",
    "inputAttestations",
    "verificationResult",
    "verifiedLevels",
    "slsaVersion",
}


@dataclass(frozen=True)
class Release:
    tmp: Path
    commit: str
    dist: Path  # wheel, sdist, the envelope signed by release and release2
    one_signature: Path  # the same envelope before release2 co-signed it
    open_dist: Path  # a build let onto the network (not hermetic), signed by both
    attestations: tuple[Path, Path]  # rebuilder-a's, rebuilder-b's

    def key(self, name: str) -> Path:
        return self.tmp / "keys" / name


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent)}
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def _ok(argv: list[object]) -> str:
    r = run(argv)
    assert r.code == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Release:
    tmp = tmp_path_factory.mktemp("policy")
    repo = materialize(FIXTURES / "flit", tmp / "repo", 0o022)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", REMOTE)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "release 1.0.0")
    _git(repo, "tag", "v1.0.0")
    for name in ("release", "release2", "rebuilder-a", "rebuilder-b", "verifier", "stranger"):
        _ok([DETPACK, "keygen", "-o", tmp / "keys" / name])
    offline = ["--find-links", wheelhouse, "--offline"]
    dist, open_dist = tmp / "dist", tmp / "open"
    _ok([DETPACK, "build", repo, "-o", dist, *offline, "--sign", tmp / "keys" / "release"])
    _ok([DETPACK, "build", repo, "-o", open_dist, *offline, "--allow-network", "--sign", tmp / "keys" / "release"])
    envelope = dist / "fx_flit-1.0.0.intoto.jsonl"
    one = tmp / "one-signature.intoto.jsonl"
    shutil.copy(envelope, one)
    for d in (dist, open_dist):
        out = _ok([DETPACK, "sign", d / "fx_flit-1.0.0.intoto.jsonl", "--key", tmp / "keys" / "release2"])
        assert "signed by keyid" in out
    attestations = []
    for who in ("rebuilder-a", "rebuilder-b"):  # two rebuilders: their own keys, outputs and build roots
        root = tmp / f"root-{who}"
        argv = [DETPACK, "rebuild", envelope, "--source", repo, "-o", root, "--attest", tmp / "keys" / who]
        r = run(
            [*argv, "--key", tmp / "keys" / "release.pub", *offline],
            env={"DETPACK_BUILD_ROOT": str(tmp / f"build-{who}")},
        )
        assert r.code == 0, r.stdout + r.stderr
        out = r.stdout
        assert out.startswith("reproduced: 2 of 2 subjects match"), out
        (written,) = root.glob("*.rebuild.*.intoto.jsonl")
        assert f"attested: reproduced, in {written}" in out
        attestations.append(written)
    return Release(tmp, _git(repo, "rev-parse", "HEAD"), dist, one, open_dist, (attestations[0], attestations[1]))


def _policy(release: Release, **changes: object) -> Path:
    rules: dict[str, object] = {
        "keys": ["keys/release.pub", "keys/release2.pub"],
        "threshold": 2,
        "builders": [BUILDER],
        "source-repository": "https://example.com/org/fx-flit",
        "source-refs": ["refs/tags/v*"],
        "source-commits": [release.commit[:12]],
        "require-hermetic": True,
        "require-reproduced": 2,
        "rebuilder-keys": ["keys/rebuilder-a.pub", "keys/rebuilder-b.pub"],
        "max-age": "1d",
    }
    rules.update({k.replace("_", "-"): v for k, v in changes.items()})
    lines = [f"{k} = {json.dumps(v)}" for k, v in rules.items()]
    path = release.tmp / f"policy-{abs(hash(tuple(lines)))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _verify(release: Release, policy: Path, *extra: object, dist: Path | None = None, artifacts: tuple[Path, ...] = ()):
    dist = dist or release.dist
    files = artifacts or (dist / WHEEL, dist / SDIST)
    attest = [a for path in release.attestations for a in ("--attestation", path)]
    return run(
        [
            DETPACK,
            "verify",
            *files,
            "--provenance",
            dist / "fx_flit-1.0.0.intoto.jsonl",
            "--policy",
            policy,
            *attest,
            *extra,
        ]
    )


def _unmet(stdout: str) -> set[str]:
    return {ln.split()[1].rstrip(":") for ln in stdout.splitlines() if ln.startswith("  FAIL")}


def test_the_release_passes_its_policy(release: Release) -> None:
    r = _verify(release, _policy(release))
    assert r.code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[1].rstrip(":") for ln in lines if ln.startswith("  ok")] == [
        "subjects",
        "signatures",
        "builders",
        "source-repository",
        "source-refs",
        "source-commits",
        "require-hermetic",
        "require-reproduced",
        "max-age",
    ]
    assert "  ok    signatures: 2 of 2 required signatures from trusted keys (release.pub, release2.pub)" in lines
    assert (
        f"  ok    require-reproduced: {WHEEL}: 2 of 2 independent rebuilds match (rebuilder-a.pub, rebuilder-b.pub)"
        in r.stdout
    )
    assert any(ln.startswith(f"verified  {release.dist / WHEEL}  sha256:") for ln in lines)
    assert lines[-1].endswith(": 9 rules met")


@pytest.mark.parametrize(
    ("case", "changes", "unmet"),
    [
        ("wrong key", {"keys": ["keys/stranger.pub"], "threshold": 1}, {"signatures"}),
        ("other builder", {"builders": ["https://ci.example.com/builders/hosted/v1"]}, {"builders"}),
        ("other commit", {"source-commits": ["0000000"]}, {"source-commits"}),
        ("other repository", {"source-repository": "https://example.com/evil/fx-flit"}, {"source-repository"}),
        ("other ref", {"source-refs": ["refs/heads/release/*"]}, {"source-refs"}),
        (
            "three rebuilds",
            {
                "require-reproduced": 3,
                "rebuilder-keys": ["keys/rebuilder-a.pub", "keys/rebuilder-b.pub", "keys/stranger.pub"],
            },
            {"require-reproduced"},
        ),
        ("too old", {"max-age": "1s"}, {"max-age"}),
    ],
)
def test_each_rule_broken_once_fails_naming_that_rule(
    release: Release, case: str, changes: dict[str, object], unmet: set[str]
) -> None:
    r = _verify(release, _policy(release, **changes))
    assert r.code == 1, case + r.stdout + r.stderr
    assert _unmet(r.stdout) == unmet, case + r.stdout
    assert r.stderr.strip().endswith(f"unmet ({', '.join(sorted(unmet, key=list(unmet).index))})"), r.stderr


def test_too_few_signatures_fails_the_threshold(release: Release, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(release.dist, dist)
    shutil.copy(release.one_signature, dist / "fx_flit-1.0.0.intoto.jsonl")
    r = _verify(release, _policy(release), dist=dist)
    assert r.code == 1 and _unmet(r.stdout) == {"signatures"}, r.stdout
    assert "FAIL  signatures: 1 of 2 required signatures from trusted keys (release.pub)" in r.stdout


def test_one_rebuild_attestation_when_two_are_required(release: Release) -> None:
    r = run([
        DETPACK, "verify", release.dist / WHEEL, "--provenance", release.dist / "fx_flit-1.0.0.intoto.jsonl",
        "--policy", _policy(release), "--attestation", release.attestations[0],
    ])  # fmt: skip
    assert r.code == 1 and _unmet(r.stdout) == {"require-reproduced"}, r.stdout
    assert f"{WHEEL}: 1 of 2 independent rebuilds match (rebuilder-a.pub)" in r.stdout


def test_an_attestation_by_an_unlisted_key_does_not_count(release: Release, tmp_path: Path) -> None:
    forged = tmp_path / "forged.intoto.jsonl"
    _ok([DETPACK, "sign", release.attestations[1], "--key", release.key("stranger"), "-o", tmp_path / "both.jsonl"])
    envelope = json.loads((tmp_path / "both.jsonl").read_text())
    envelope["signatures"] = envelope["signatures"][1:]  # the stranger's signature only
    forged.write_text(json.dumps(envelope) + "\n")
    r = run([
        DETPACK, "verify", release.dist / WHEEL, "--provenance", release.dist / "fx_flit-1.0.0.intoto.jsonl",
        "--policy", _policy(release), "--attestation", release.attestations[0], "--attestation", forged,
    ])  # fmt: skip
    assert r.code == 1 and _unmet(r.stdout) == {"require-reproduced"}, r.stdout
    assert "forged.intoto.jsonl: signed by no rebuilder key" in r.stdout


def test_a_build_let_onto_the_network_is_not_hermetic(release: Release) -> None:
    r = _verify(release, _policy(release), dist=release.open_dist)
    assert r.code == 1 and _unmet(r.stdout) == {"require-hermetic"}, r.stdout
    assert "FAIL  require-hermetic: sandbox bubblewrap, network allowed: not hermetic" in r.stdout


def test_a_tampered_artifact_is_not_a_subject(release: Release, tmp_path: Path) -> None:
    wheel = tmp_path / WHEEL
    wheel.write_bytes((release.dist / WHEEL).read_bytes() + b"\0")
    r = _verify(release, _policy(release, require_reproduced=0, rebuilder_keys=[]), artifacts=(wheel,))
    assert r.code == 1 and _unmet(r.stdout) == {"subjects"}, r.stdout
    assert f"FAIL  subjects: {WHEEL}: sha256:" in r.stdout and "is not a subject of the provenance" in r.stdout


def test_the_vsa_parses_with_in_toto_attestation_and_verifies_with_securesystemslib(
    release: Release, tmp_path: Path
) -> None:
    vsa = tmp_path / "fx_flit.vsa.intoto.jsonl"
    policy = _policy(release)
    r = _verify(release, policy, "--vsa", vsa, "--vsa-key", release.key("verifier"))
    assert r.code == 0, r.stdout + r.stderr
    envelope = SSlibEnvelope.from_dict(json.loads(vsa.read_bytes()))
    pub = serialization.load_pem_public_key(release.key("verifier.pub").read_bytes())
    assert list(envelope.verify([SSlibKey.from_crypto(pub)], 1)), "the VSA's signature does not verify"
    other = serialization.load_pem_public_key(release.key("stranger.pub").read_bytes())
    with pytest.raises(Exception, match="threshold"):
        envelope.verify([SSlibKey.from_crypto(other)], 1)
    data = json.loads(envelope.payload)
    Statement.copy_from_pb(json_format.ParseDict(data, statement_pb2.Statement())).validate()
    predicate = data["predicate"]
    assert data["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert set(predicate) == VSA_FIELDS
    for rd in [predicate["policy"], *predicate["inputAttestations"]]:
        ResourceDescriptor.copy_from_pb(
            json_format.ParseDict(rd, resource_descriptor_pb2.ResourceDescriptor())
        ).validate()
    assert predicate["verificationResult"] == "PASSED"
    assert predicate["verifiedLevels"] == ["SLSA_BUILD_LEVEL_1", "DETPACK_HERMETIC", "DETPACK_REPRODUCED_2"]
    assert predicate["resourceUri"] == "pkg:pypi/fx-flit@1.0.0"
    assert predicate["policy"]["digest"]["sha256"] == _sha256(policy)
    inputs = {i["uri"]: i["digest"]["sha256"] for i in predicate["inputAttestations"]}
    assert inputs == {p.name: _sha256(p) for p in (release.dist / "fx_flit-1.0.0.intoto.jsonl", *release.attestations)}
    assert {s["name"]: s["digest"]["sha256"] for s in data["subject"]} == {
        n: _sha256(release.dist / n) for n in (WHEEL, SDIST)
    }
    # a failing verdict is written too, as FAILED
    r = _verify(release, _policy(release, builders=["x"]), "--vsa", vsa, "--vsa-key", release.key("verifier"))
    assert r.code == 1
    failed = json.loads(base64.b64decode(json.loads(vsa.read_bytes())["payload"]))
    assert failed["predicate"]["verificationResult"] == "FAILED" and failed["predicate"]["verifiedLevels"] == ["FAILED"]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('keys = ["keys/release.pub"]\nthreshhold = 1\n', "unknown setting 'threshhold'"),
        ('keys = ["keys/release.pub"]\nthreshold = 2\n', "threshold 2 is more than the 1 trusted keys can give"),
        ('keys = ["keys/missing.pub"]\n', "missing.pub"),
        ('keys = ["keys/release"]\n', "is a private key"),
        ("keys = [\n", "not a TOML policy"),
        ('keys = ["keys/release.pub"]\nrequire-reproduced = 1\n', "needs at least 1 rebuilder-keys"),
        ('keys = ["keys/release.pub"]\nmax-age = "soon"\n', "max-age 'soon'"),
    ],
)
def test_a_bad_policy_is_one_line_exit_2(release: Release, text: str, message: str) -> None:
    policy = release.tmp / "bad.toml"
    policy.write_text(text)
    r = _verify(release, policy)
    assert r.code == 2, r.stdout + r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_a_corrupt_attestation_is_exit_2(release: Release, tmp_path: Path) -> None:
    bad = tmp_path / "bad.intoto.jsonl"
    bad.write_text("{not json\n")
    r = run([
        DETPACK, "verify", release.dist / WHEEL, "--provenance", release.dist / "fx_flit-1.0.0.intoto.jsonl",
        "--policy", _policy(release), "--attestation", bad,
    ])  # fmt: skip
    assert r.code == 2 and f"{bad}: not JSON" in r.stderr, r.stderr


def test_a_promotion_to_prod_needs_both_rebuilders(release: Release, tmp_path: Path) -> None:
    """The prod policy (kept in the store, set through the log) requires two independent rebuilds:
    refused with one rebuild attestation in the store, accepted with both; the VSA is kept and signed."""
    store = ["--store", tmp_path / "store"]
    wheel, envelope = release.dist / WHEEL, release.dist / "fx_flit-1.0.0.intoto.jsonl"
    _ok([DETPACK, "store", *store, "push", wheel, "--provenance", envelope, "--attestation", release.attestations[0]])
    out = _ok([DETPACK, "store", *store, "policy", "prod", _policy(release)])
    assert out.startswith("policy set  prod  sha256:")
    shown = _ok([DETPACK, "store", *store, "policy", "prod"])
    assert "-----BEGIN PUBLIC KEY-----" in shown and "keys/" not in shown  # self-contained: keys inline
    r = run([DETPACK, "store", *store, "promote", WHEEL, "--to", "prod"])
    assert r.code == 1, r.stdout + r.stderr
    assert "the prod policy is not met: require-reproduced" in r.stderr and "1 of 2 independent rebuilds" in r.stderr
    assert "not promoted to prod" in r.stderr and r.stdout == ""
    assert run([DETPACK, "store", *store, "resolve", "prod"]).code == 2  # nothing live there
    out = _ok([DETPACK, "store", *store, "push", "--attestation", release.attestations[1]])
    assert "(attestation)" in out
    out = _ok([DETPACK, "store", *store, "promote", WHEEL, "--to", "prod"])
    assert out.startswith("promoted  sha256:") and "signed VSA sha256:" in out
    vsa_digest = out.split("signed VSA sha256:")[1].split()[0]
    assert _ok([DETPACK, "store", *store, "resolve", "prod"]).strip() == f"sha256:{_sha256(wheel)}"
    blob = next((tmp_path / "store").rglob(vsa_digest))
    envelope_vsa = SSlibEnvelope.from_dict(json.loads(blob.read_bytes()))
    store_pub = tmp_path / "store.pub"
    _ok([DETPACK, "store", *store, "key", "-o", store_pub])
    pub = serialization.load_pem_public_key(store_pub.read_bytes())
    assert list(envelope_vsa.verify([SSlibKey.from_crypto(pub)], 1))
    predicate = json.loads(envelope_vsa.payload)["predicate"]
    assert predicate["verificationResult"] == "PASSED" and "DETPACK_REPRODUCED_2" in predicate["verifiedLevels"]
    assert len(predicate["inputAttestations"]) == 3  # the provenance and both rebuild attestations
    shown = _ok([DETPACK, "store", *store, "show", vsa_digest])
    assert shown.startswith(f"sha256:{vsa_digest}  vsa,") and "verdict of:   sha256:" in shown and "-> prod" in shown
    log = _ok([DETPACK, "store", *store, "log"])
    assert "policy" in log and "-> prod  policy PASSED" in log
    audit = run([DETPACK, "store", *store, "verify", "--key", store_pub])
    assert audit.code == 0, audit.stdout + audit.stderr
    assert "not in the log" not in audit.stdout + audit.stderr  # the refused attempt left no VSA behind


def test_verify_takes_the_evidence_from_a_store(release: Release, tmp_path: Path) -> None:
    """``verify --policy --store``: the provenance and rebuild attestations are the store's, by digest."""
    store = tmp_path / "store"
    wheel, envelope = release.dist / WHEEL, release.dist / "fx_flit-1.0.0.intoto.jsonl"
    _ok([DETPACK, "store", "--store", store, "push", wheel, "--provenance", envelope,
         "--attestation", release.attestations[0]])  # fmt: skip
    argv = [DETPACK, "verify", wheel, "--policy", _policy(release), "--store", store]
    r = run(argv)
    assert r.code == 1 and _unmet(r.stdout) == {"require-reproduced"}, r.stdout + r.stderr
    _ok([DETPACK, "store", "--store", store, "push", "--attestation", release.attestations[1]])
    r = run(argv)
    assert r.code == 0, r.stdout + r.stderr
    r = run([DETPACK, "verify", release.dist / SDIST, "--policy", _policy(release), "--store", store])
    assert r.code == 1 and "is not in the store" in r.stderr, r.stderr
    r = run([DETPACK, "verify", wheel, "--policy", _policy(release), "--store", tmp_path / "nowhere"])
    assert r.code == 2 and "no store here" in r.stderr, r.stderr
