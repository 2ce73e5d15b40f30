"""Attacks on dependency evidence: each test is what an attacker does, and what must not follow.

- the deps cache ($XDG_CACHE_HOME/detpack/deps) is written by whoever can write it (a shared CI
  cache, another local user's files in a shared --cache-dir): what it claims is checked, never
  followed as a path;
- ``deps verify -o DIR`` writes only plain file names in DIR, and what is there is what the report names;
- a statement listing the same wheel twice is judged by the worst it says;
- a rebuilder worker records only its own attestations;
- a layer's provenance names each wheel by its sha256, never a path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import DETPACK, run
from detpack import policy
from detpack.deps.closure import ClosureFile
from detpack.deps.verify import Rebuilds, verify_closure
from detpack.digest import canonical_json
from detpack.provenance import signing
from detpack.provenance.attestation import REBUILD_PREDICATE
from detpack.provenance.statement import STATEMENT_TYPE
from detpack.verify.deps_rule import DependencyRule, judge, parse_rule

WHEEL = "victim-1.0-py3-none-any.whl"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _attestation(key: signing.PrivateKey, expected: str, rebuilt: str | None, name: str = WHEEL) -> bytes:
    """A signed rebuild attestation about ``expected`` (reproduced when ``rebuilt`` is the same)."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": expected}}],
        "predicateType": REBUILD_PREDICATE,
        "predicate": {
            "origin": {"kind": "pypi", "name": "victim==1.0", "digest": {"sha256": "0" * 64}},
            "results": [
                {
                    "name": name,
                    "expected": {"sha256": expected},
                    "rebuilt": {"sha256": rebuilt} if rebuilt else None,
                    "matches": rebuilt == expected,
                }
            ],
            "verdict": "byte-identical" if rebuilt == expected else "different",
            "rebuilder": {"id": "test"},
            "finishedOn": "2026-12-07T14:00:00Z",
        },
    }
    return signing.sign(canonical_json(statement), key).to_json()


def _cached(
    cache: Path,
    sha256: str,
    *,
    spec: str = "victim==1.0",
    file: str | None = WHEEL,
    state: str = "reproduced",
    attestation: bytes | None = None,
    name: str = f"{WHEEL}.rebuild.intoto.jsonl",
    keyid: str | None = None,
) -> None:
    """Plant a cache entry (as whoever can write the cache would), with its attestation when given."""
    root = cache / f"policy-{policy.POLICY_VERSION}"
    entry: dict[str, object] = {
        "format": 2,
        "spec": spec,
        "file": file,
        "state": state,
        "reason": "rebuilt from victim==1.0's sdist: the same bytes",
        "details": [],
    }
    if attestation is not None:
        digest = _sha(attestation)
        (root / "attestations").mkdir(parents=True, exist_ok=True)
        (root / "attestations" / f"{digest}.intoto.jsonl").write_bytes(attestation)
        entry["evidence"] = {"kind": "attestation", "name": name, "sha256": digest}
        entry["keyid"] = keyid
    (root / sha256[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha256[:2] / f"{sha256}.json").write_text(json.dumps(entry))


# The deps cache


@pytest.mark.integration
@pytest.mark.parametrize("escape", ["../../escaped.intoto.jsonl", "ABSOLUTE"])
def test_a_cached_evidence_name_cannot_write_outside_the_output_folder(tmp_path: Path, escape: str) -> None:
    """A cache entry names its attestation ``../../escaped`` (or an absolute path): ``deps verify -o DIR``
    wrote the attestation's bytes (the planter's) there, outside DIR (so also under --store's temporary
    folder). The entry is not believed now: nothing is written outside DIR, the file is judged again."""
    outside = tmp_path / "escaped.intoto.jsonl"
    name = str(outside) if escape == "ABSOLUTE" else escape
    wheel = _sha(b"the victim wheel")
    key = signing.PrivateKey.generate()
    cache = tmp_path / "cache"
    _cached(cache, wheel, file=None, attestation=_attestation(key, wheel, wheel), name=name)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"victim==1.0 --hash=sha256:{wheel}\n")
    out = tmp_path / "a" / "b" / "out"
    r = run([DETPACK, "deps", "verify", reqs, "--no-rebuild", "--cache-dir", cache, "-o", out, "--json"])
    assert not outside.exists(), r.stderr
    assert not (tmp_path / "a" / "escaped.intoto.jsonl").exists()
    assert r.code == 1, r.stderr
    report = json.loads(r.stdout)
    assert [f["state"] for f in report["files"]] == ["unverified"]
    assert "not tried" in report["files"][0]["reason"]


def test_a_cached_attestation_must_be_signed_by_the_attest_key_and_be_about_the_file(tmp_path: Path) -> None:
    """With ``--attest KEY`` a cached result counts only with an attestation by that key; the entry's own
    ``keyid`` field said so, not the signature, so a planted entry naming my keyid over another key's
    attestation (or one about other bytes) made ``reproduced`` with my key's name on it. Without --attest an
    entry whose attestation is about other bytes was the file's evidence too."""
    mine, theirs = signing.PrivateKey.generate(), signing.PrivateKey.generate()
    key = tmp_path / "mine.key"
    signing.write_keypair(mine, key)
    wheel, other = _sha(b"the victim wheel"), _sha(b"another wheel")
    f = ClosureFile("victim", "1.0", wheel, WHEEL, "wheel")
    off = Rebuilds(enabled=False)

    forged = tmp_path / "forged"  # another key's attestation, my keyid written beside it
    _cached(forged, wheel, attestation=_attestation(theirs, wheel, wheel), keyid=mine.public.keyid)
    [r] = verify_closure([f], rebuilds=Rebuilds(enabled=False, attest=key), cache_dir=forged)
    assert (r.state, r.cached) == ("unverified", False), r

    elsewhere = tmp_path / "elsewhere"  # my key's attestation, about other bytes
    _cached(elsewhere, wheel, attestation=_attestation(mine, other, other), keyid=mine.public.keyid)
    [r] = verify_closure([f], rebuilds=Rebuilds(enabled=False, attest=key), cache_dir=elsewhere)
    assert (r.state, r.cached) == ("unverified", False), r
    [r] = verify_closure([f], rebuilds=off, cache_dir=elsewhere)
    assert (r.state, r.cached) == ("unverified", False), r

    honest = tmp_path / "honest"  # the control: my key's attestation about these bytes is believed
    _cached(honest, wheel, attestation=_attestation(mine, wheel, wheel), keyid=mine.public.keyid)
    [r] = verify_closure([f], rebuilds=Rebuilds(enabled=False, attest=key), cache_dir=honest)
    assert (r.state, r.cached) == ("reproduced", True), r
    assert r.evidence is not None and r.evidence.kind == "attestation"


def test_a_cache_entry_another_user_planted_is_not_believed(tmp_path: Path) -> None:
    """In a cache folder others can write (a shared --cache-dir), another user plants "reproduced" for a file:
    it was believed. An entry (or its attestation) that is not a regular file of this user is judged again."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file of another user")
    wheel = _sha(b"the victim wheel")
    f = ClosureFile("victim", "1.0", wheel, WHEEL, "wheel")
    cache = tmp_path / "shared"
    _cached(cache, wheel)
    entry = cache / f"policy-{policy.POLICY_VERSION}" / wheel[:2] / f"{wheel}.json"
    [r] = verify_closure([f], rebuilds=Rebuilds(enabled=False), cache_dir=cache)
    assert (r.state, r.cached) == ("reproduced", True)  # the control: this user's own entry
    os.chown(entry, 65534, 65534)
    [r] = verify_closure([f], rebuilds=Rebuilds(enabled=False), cache_dir=cache)
    assert (r.state, r.cached) == ("unverified", False), r
    os.chown(entry, 0, 0)
    planted = tmp_path / "planted.json"
    entry.rename(planted)
    entry.symlink_to(planted)
    [r] = verify_closure([f], rebuilds=Rebuilds(enabled=False), cache_dir=cache)
    assert (r.state, r.cached) == ("unverified", False), r


@pytest.mark.integration
def test_output_folder_holds_the_evidence_the_report_names_not_a_planted_link(tmp_path: Path) -> None:
    """Someone who can write DIR plants the attestation's name there as a link (or a file with other bytes):
    ``deps verify -o DIR`` kept it (it wrote only names that did not exist), so the report named evidence of
    one sha256 and DIR held something else. Now DIR holds the attestation itself, the link's target untouched."""
    key = signing.PrivateKey.generate()
    wheel = _sha(b"the victim wheel")
    attestation = _attestation(key, wheel, wheel)
    name = f"{WHEEL}.rebuild.intoto.jsonl"
    cache = tmp_path / "cache"
    _cached(cache, wheel, file=None, attestation=attestation, name=name)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"victim==1.0 --hash=sha256:{wheel}\n")
    target = tmp_path / "target.txt"
    target.write_text("someone else's file\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(target)
    r = run([DETPACK, "deps", "verify", reqs, "--no-rebuild", "--cache-dir", cache, "-o", out, "--json"])
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["files"][0]["evidence"] == {"kind": "attestation", "name": name, "sha256": _sha(attestation)}
    assert not (out / name).is_symlink()
    assert (out / name).read_bytes() == attestation
    assert target.read_text() == "someone else's file\n"


# The [dependencies] rule


def _statement(*wheels: tuple[str, str, str]) -> dict[str, object]:
    """An image statement whose layers list ``wheels`` ((file, sha256, state) each), a layer each."""
    layers = [
        {
            "name": f"layer{n}",
            "digest": {"sha256": f"{n:064x}"},
            "annotations": {
                "inputs": [
                    {
                        "name": file,
                        "digest": {"sha256": sha},
                        "annotations": {"evidence": {"state": state, "reason": f"said {state}"}},
                    }
                ]
            },
        }
        for n, (file, sha, state) in enumerate(wheels, 1)
    ]
    return {"predicate": {"buildDefinition": {"resolvedDependencies": layers}}}


def test_a_wheel_listed_twice_is_judged_by_the_worst_the_statement_says() -> None:
    """An image whose first layer installs a wheel the report calls reproduced and whose second layer installs
    other bytes under the same file name, called different (or unverified): the rule judged the first entry
    only and passed. Each (file, bytes) is judged, and the same bytes said twice count as the worse state."""
    rule = DependencyRule("reproduced-or-built", (), 0)
    good, bad = "a" * 64, "b" * 64
    passed, said = judge(rule, _statement((WHEEL, good, "reproduced"), (WHEEL, bad, "different")))
    assert not passed and "different" in said, said
    passed, said = judge(rule, _statement((WHEEL, good, "reproduced"), (WHEEL, good, "different")))
    assert not passed and "different" in said, said
    passed, said = judge(rule, _statement((WHEEL, good, "built here"), (WHEEL, good, "unverified")))
    assert not passed and "unverified" in said, said
    passed, said = judge(rule, _statement((WHEEL, good, "reproduced"), (WHEEL, good, "reproduced")))
    assert passed and said.startswith("1 wheels"), said
    # with rebuilder keys: the other bytes under the same name need their own attestation
    passed, said = judge(rule, _statement((WHEEL, good, "reproduced"), (WHEEL, bad, "reproduced")), {good: ["k"]})
    assert not passed and "claimed reproduced" in said, said


# The rebuilder worker


def test_a_worker_records_only_its_own_attestation_under_a_bound_name(tmp_path: Path) -> None:
    """Names are write-once: another store writer binds the name the worker's attestation will have to an
    attestation of its own (another key, a verdict it likes). The worker recorded that one as its outcome.
    Now it refuses it, naming the attestation: the queue never says this key attested what it did not."""
    from detpack.errors import StoreError
    from detpack.rebuilder.worker import _post
    from detpack.store import open_store

    mine, theirs = signing.PrivateKey.generate(), signing.PrivateKey.generate()
    wheel = _sha(b"the victim wheel")
    name = f"{WHEEL}.rebuild.{mine.public.keyid[:16]}.intoto.jsonl"
    store = open_store(str(tmp_path / "store"))
    planted = tmp_path / "planted" / name
    planted.parent.mkdir()
    planted.write_bytes(_attestation(theirs, wheel, wheel))
    store.push([], None, [planted])
    written = tmp_path / "written" / name
    written.parent.mkdir()
    written.write_bytes(_attestation(mine, wheel, _sha(b"other bytes")))
    with pytest.raises(StoreError, match="not signed by"):
        _post(store, [written], mine.public)
    # the control: its own attestation, posted before it was killed, is the one recorded
    own = tmp_path / "own" / f"{WHEEL}.rebuild.{theirs.public.keyid[:16]}.intoto.jsonl"
    own.parent.mkdir()
    own.write_bytes(_attestation(theirs, wheel, wheel))
    store.push([], None, [own])
    digests, verdicts, posted = _post(store, [own], theirs.public)
    assert (verdicts, posted) == (["byte-identical"], 0)
    assert digests == [_sha(own.read_bytes())]


# A layer's provenance (unsigned, whoever made the layer wrote it)


def _layer(tmp_path: Path, wheels: list[dict[str, object]]) -> Path:
    """A layer file and, beside it, a statement about its bytes listing ``wheels`` as installed."""
    from detpack.provenance.statement import PREDICATE_TYPE

    layer = tmp_path / "app.tar.gz"
    layer.write_bytes(b"a layer")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": layer.name, "digest": {"sha256": _sha(layer.read_bytes())}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"buildDefinition": {"resolvedDependencies": wheels}},
    }
    (tmp_path / "app.tar.gz.provenance.json").write_text(json.dumps(statement))
    return layer


@pytest.mark.integration
def test_a_wheel_digest_in_a_layers_provenance_cannot_write_outside_the_cache(tmp_path: Path) -> None:
    """A hostile layer's provenance records a wheel whose "sha256" is 64 characters of ``../`` and a name: it
    was taken as the file's digest (only its length was checked), and the cache wrote its result to
    ``CACHE/policy-N/../NAME.json``, outside the cache, wherever the characters lead. Now a digest that is not
    64 hex digits is refused in one line (exit 2), before anything is rebuilt or written."""
    escape = "../" + "p" * 61
    layer = _layer(tmp_path, [{"name": "evil-1.0-py3-none-any.whl", "digest": {"sha256": escape}}])
    cache = tmp_path / "cache"
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [DETPACK, "deps", "verify", layer, "--cache-dir", cache, "--offline", "--find-links", empty]
    r = run(argv, timeout=300)
    assert not (tmp_path / f"{'p' * 61}.json").exists(), r.stderr
    assert r.code == 2, r.stderr
    assert "evil-1.0-py3-none-any.whl" in r.stderr and "sha256" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    bad = _layer(tmp_path, [{"name": "evil-1.0-py3-none-any.whl", "digest": "not an object"}])
    r = run([DETPACK, "deps", "verify", bad, "--cache-dir", cache, "--no-rebuild"])
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


# A closure report (a file anyone may hand to layer --evidence, or push to a store)


def test_a_report_listing_the_same_bytes_twice_is_refused() -> None:
    """A report lists a wheel's sha256 twice, first reproduced, then different: ``layer --evidence`` copied the
    first (the dashboard counted both). Which state would count is the reader's guess: the report is refused
    in one line naming both entries; the same report with each file once parses."""
    from detpack.deps.report import REPORT_TYPE, parse
    from detpack.errors import InputError

    def entry(state: str) -> dict[str, object]:
        return {"name": "victim", "version": "1.0", "file": WHEEL, "sha256": "a" * 64, "state": state,
                "reason": state, "details": [], "evidence": None}  # fmt: skip

    def report(*states: str) -> bytes:
        return json.dumps(
            {
                "_type": REPORT_TYPE,
                "closure": {"name": "pylock.toml", "kind": "pylock", "sha256": "b" * 64},
                "policyVersion": policy.POLICY_VERSION,
                "verifiedOn": "2026-12-07T14:00:00Z",
                "files": [entry(s) for s in states],
            }
        ).encode()

    assert [e.state for e in parse(report("reproduced"), "r.closure.json").entries] == ["reproduced"]
    with pytest.raises(InputError, match=r"r.closure.json: .*file 2: sha256 aaaaaaaaaaaaaaaa… is file 1's too"):
        parse(report("reproduced", "different"), "r.closure.json")


def test_a_cached_built_here_is_not_believed(tmp_path: Path) -> None:
    """A rebuild never decides "built here" (a build record does, and records are not cached); a planted cache
    entry saying so was believed, with --attest too (only rebuilt states needed an attestation). Such an
    entry is judged again."""
    mine = signing.PrivateKey.generate()
    key = tmp_path / "mine.key"
    signing.write_keypair(mine, key)
    wheel = _sha(b"the victim wheel")
    f = ClosureFile("victim", "1.0", wheel, WHEEL, "wheel")
    cache = tmp_path / "cache"
    _cached(cache, wheel, state="built here")
    for rebuilds in (Rebuilds(enabled=False), Rebuilds(enabled=False, attest=key)):
        [r] = verify_closure([f], rebuilds=rebuilds, cache_dir=cache)
        assert (r.state, r.cached) == ("unverified", False), r


def test_an_image_layer_without_its_own_provenance_is_not_skipped_by_the_rule() -> None:
    """``detpack image --layer foreign.tar.gz`` with a layer made elsewhere (no provenance beside it): the image
    statement records the layer with no inputs, and the rule judged only the other layers' wheels, so whatever
    the foreign layer installs shipped under a passing [dependencies] rule. Such a layer now counts as one
    unverified input (allowed by its file name or within max-unverified, like a wheel); the base image does not."""
    statement = _statement((WHEEL, "a" * 64, "reproduced"))
    layers = statement["predicate"]["buildDefinition"]["resolvedDependencies"]  # type: ignore[index]
    base = {"name": "base", "uri": "oci:python:3.12", "digest": {"sha256": "e" * 64}, "annotations": {"tag": "3.12"}}
    kind = "application/vnd.oci.image.layer.v1.tar+gzip"
    foreign = {"name": "foreign.tar.gz", "digest": {"sha256": "f" * 64},
               "annotations": {"diffID": "sha256:" + "d" * 64, "mediaType": kind}}  # fmt: skip
    layers.insert(0, base)
    assert judge(DependencyRule("reproduced-or-built", (), 0), statement)[0]  # the base image is not judged
    layers.append(foreign)
    passed, said = judge(DependencyRule("reproduced-or-built", (), 0), statement)
    assert not passed and "foreign.tar.gz: unverified" in said and "no provenance" in said, said
    assert judge(parse_rule({"allow-unverified": ["foreign.tar.gz"]}, ValueError), statement)[0]
    assert judge(DependencyRule("reproduced-or-built", (), 1), statement)[0]
