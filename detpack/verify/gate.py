"""Release gates: a TOML policy checked offline against signed provenance and rebuild attestations.

A policy file (``detpack verify ARTIFACT... --policy FILE``, or one kept per environment in a
store) says what a release must show::

    version = 1
    keys = ["keys/release.pub", "keys/release-2.pub"]   # trusted signers of the provenance
    threshold = 2                                         # distinct trusted keys that must sign it
    builders = ["https://detpack.dev/builders/local/v1"]  # accepted builder ids
    source-repository = "https://github.com/org/project"  # the remote the source came from
    source-refs = ["refs/heads/main", "refs/tags/v*"]      # a ref at the commit must match one
    source-commits = ["4f1c2e9"]                          # allowed commits (prefixes of 7+ digits)
    require-hermetic = true                                # built in a sandbox with no network
    require-reproduced = 2                                 # rebuild attestations from distinct keys
    rebuilder-keys = ["keys/rebuilder-a.pub", "keys/rebuilder-b.pub"]
    max-age = "30d"                                       # since the build finished (s, m, h, d)
    [dependencies]                                         # a layer's or image's wheels (verify/deps_rule.py)
    require = "reproduced-or-built"
    allow-unverified = ["certifi"]

Key entries are paths (relative to the policy file) or the PEM text itself; ``self_contained``
writes the policy with every key inline, which is the form a store keeps. ``evaluate`` checks every
rule and returns a ``Verdict`` naming each one met or unmet; it reads nothing but its arguments.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

from detpack.atomic import read_input
from detpack.digest import sha256_hex
from detpack.provenance import attestation, reader, signing
from detpack.provenance.attestation import InputAttestation, RebuildClaim
from detpack.provenance.statement import JSON
from detpack.verify import review
from detpack.verify.deps_rule import judge as judge_dependencies

# the policy file's values and readers, re-exported: callers read a policy through the gate
from detpack.verify.policy_file import Policy as Policy
from detpack.verify.policy_file import TrustedKey as TrustedKey
from detpack.verify.policy_file import load as load
from detpack.verify.policy_file import parse as parse

# -- evaluating -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str  # the policy setting it checks ("signatures", "builders", ...)
    passed: bool
    detail: str  # one phrase: what was found


@dataclass(frozen=True)
class Verdict:
    rules: tuple[Rule, ...]
    inputs: tuple[InputAttestation, ...]  # the provenance and the attestations the verdict rests on
    levels: tuple[str, ...]  # the VSA's verifiedLevels

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def unmet(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if not r.passed)


@dataclass(frozen=True)
class Evidence:
    """A statement as given, with the sha256 of the bytes it came in and where they came from."""

    provenance: reader.Provenance
    sha256: str
    where: str


def _signed_by(provenance: reader.Provenance, keys: Sequence[TrustedKey]) -> list[TrustedKey]:
    """The keys (each once) whose signature on the envelope verifies."""
    envelope = provenance.envelope
    if envelope is None:
        return []
    seen: set[str] = set()
    found = []
    for k in keys:
        if k.key.keyid not in seen and signing.signed_by(envelope, k.key):
            seen.add(k.key.keyid)
            found.append(k)
    return found


def signed_by_any(evidence: Evidence, keys: Sequence[TrustedKey]) -> bool:
    """Whether one of ``keys`` signed the envelope ``evidence`` came in."""
    return bool(_signed_by(evidence.provenance, keys))


def _repository(uri: str | None) -> str | None:
    if not uri:
        return None
    remote = uri.removeprefix("git+")
    remote = re.sub(r"@[0-9a-f]{7,64}$", "", remote)
    return _normal(remote)


def _normal(url: str) -> str:
    return url.rstrip("/").removesuffix(".git").rstrip("/")


def evaluate(
    policy: Policy,
    artifacts: Mapping[str, str],
    provenance: Evidence,
    attestations: Sequence[Evidence] = (),
    now: dt.datetime | None = None,
) -> Verdict:
    """Every rule of ``policy`` for ``artifacts`` (name -> sha256) against the evidence given."""
    now = now or dt.datetime.now(dt.UTC)
    statement = provenance.provenance
    summary = reader.summarize(statement)
    predicate = statement.statement.get("predicate")
    source = reader.dig(predicate, "buildDefinition", "externalParameters", "source")
    rules: list[Rule] = []

    missing = [name for name, digest in artifacts.items() if not statement.names(digest)]
    rules.append(
        Rule(
            "subjects",
            not missing,
            "; ".join(f"{n}: sha256:{artifacts[n][:16]}… is not a subject of the provenance" for n in missing)
            or f"{len(artifacts)} of {len(artifacts)} artifacts are subjects of the provenance",
        )
    )
    rules.append(_signatures(policy, statement))
    if policy.builders:
        ok = summary.builder in policy.builders
        rules.append(
            Rule(
                "builders",
                ok,
                f"builder {summary.builder}" + ("" if ok else f", not one of {', '.join(policy.builders)}"),
            )
        )
    if policy.repository is not None:
        found = _repository(summary.source_uri)
        ok = found is not None and found == _normal(policy.repository)
        said = f"source repository {found}" if found else "the provenance records no source repository"
        rules.append(Rule("source-repository", ok, said + ("" if ok else f", not {policy.repository}")))
    if policy.refs:
        refs = [str(r) for r in reader.dig(source, "annotations", "refs") or []]
        ok = any(fnmatch.fnmatchcase(r, p) for r in refs for p in policy.refs)
        said = f"refs at the commit: {', '.join(refs)}" if refs else "the provenance records no git ref"
        rules.append(Rule("source-refs", ok, said + ("" if ok else f"; none matches {', '.join(policy.refs)}")))
    if policy.commits:
        rules.append(_commit(policy, summary))
    if policy.require_hermetic:
        sandbox = reader.dig(predicate, "buildDefinition", "internalParameters", "sandbox") or {}
        ok = sandbox.get("hermetic") is True
        said = f"sandbox {sandbox.get('kind', 'none')}, network {sandbox.get('network', 'allowed')}"
        rules.append(Rule("require-hermetic", ok, said + ("" if ok else ": not hermetic")))
    if policy.require_reproduced:
        rules.append(_reproduced(policy, artifacts, statement, attestations))
    if policy.max_age is not None:
        rules.append(_age_rule(policy.max_age, summary.finished, now))
    rules += _change_rules(policy, summary, source, predicate)
    if policy.dependencies is not None:
        same, other = _attested(policy, attestations) if policy.rebuilder_keys else (None, None)
        rules.append(Rule("dependencies", *judge_dependencies(policy.dependencies, statement.statement, same, other)))
    passed = all(r.passed for r in rules)
    levels = ("FAILED",) if not passed else _levels(policy)
    inputs = tuple(InputAttestation(e.where, e.sha256) for e in (provenance, *attestations))
    return Verdict(tuple(rules), inputs, levels)


def _change_rules(policy: Policy, summary: reader.Summary, source: Any, predicate: Any) -> list[Rule]:
    """The rules on where the change came from: a CI run, a release tag, a reviewed pull request."""
    ci = summary.ci or {}
    rules = []
    if policy.require_ci:
        ok = bool(ci.get("runUrl"))
        said = f"built by {ci.get('system')} run {ci['runUrl']}" if ok else "the provenance records no CI run"
        rules.append(Rule("require-ci", ok, said))
    if policy.require_tag:
        tags = [r for r in reader.dig(source, "annotations", "refs") or [] if str(r).startswith("refs/tags/")]
        if ci.get("isTag") is True and ci.get("ref"):
            tags.insert(0, ci["ref"])
        ok = bool(tags)
        rules.append(
            Rule(
                "require-tag",
                ok,
                f"tag {tags[0]}" if ok else "built from no tag (neither the CI ref nor a ref at the commit is one)",
            )
        )
    if policy.require_pull_request:
        rules.append(Rule("require-pull-request", *review.pull_request(summary, predicate)))
    return rules


def _levels(policy: Policy) -> tuple[str, ...]:
    """What a pass verified: SLSA Build L1 (signed provenance of the build) and detpack's own properties."""
    levels = ["SLSA_BUILD_LEVEL_1"]
    if policy.require_hermetic:
        levels.append("DETPACK_HERMETIC")
    if policy.require_reproduced:
        levels.append(f"DETPACK_REPRODUCED_{policy.require_reproduced}")
    return tuple(levels)


def _signatures(policy: Policy, statement: reader.Provenance) -> Rule:
    if statement.envelope is None:
        return Rule("signatures", False, "the provenance is an unsigned statement; give its signed .intoto.jsonl")
    signed = _signed_by(statement, policy.keys)
    ok = len(signed) >= policy.threshold
    trusted = {k.key.keyid for k in signed}
    others = sorted({s.keyid[:16] or "?" for s in statement.envelope.signatures} - {k[:16] for k in trusted})
    detail = f"{len(signed)} of {policy.threshold} required signatures from trusted keys"
    if signed:
        detail += f" ({', '.join(k.label for k in signed)})"
    if others:
        detail += f"; also signed by keyid {', '.join(others)}, which no trusted key verifies"
    return Rule("signatures", ok, detail)


def _commit(policy: Policy, summary: reader.Summary) -> Rule:
    commit = summary.source_commit
    if commit is None:
        return Rule("source-commits", False, "the provenance records no source commit")
    if summary.source_dirty:
        return Rule("source-commits", False, f"built from commit {commit} with uncommitted changes (a dirty tree)")
    ok = any(commit.lower().startswith(c) for c in policy.commits)
    return Rule("source-commits", ok, f"source commit {commit}" + ("" if ok else ", not an allowed commit"))


def _reproduced(
    policy: Policy, artifacts: Mapping[str, str], statement: reader.Provenance, attestations: Sequence[Evidence]
) -> Rule:
    builders = {k.key.keyid for k in _signed_by(statement, policy.rebuilder_keys)}
    by_digest: dict[str, list[str]] = {d: [] for d in artifacts.values()}
    counted: dict[str, set[str]] = {d: set() for d in artifacts.values()}
    notes: list[str] = []
    for a in attestations:
        signers = _signed_by(a.provenance, policy.rebuilder_keys)
        if not signers:
            notes.append(f"{a.where}: signed by no rebuilder key")
            continue
        claim = RebuildClaim.of(a.provenance)
        for k in signers:
            if k.key.keyid in builders:
                notes.append(f"{a.where}: {k.label} also signed the provenance, so it is not independent")
                continue
            for digest in by_digest:
                if digest in claim.reproduced and k.key.keyid not in counted[digest]:
                    counted[digest].add(k.key.keyid)
                    by_digest[digest].append(k.label)
                elif digest in claim.differed:
                    notes.append(f"{a.where}: {k.label} rebuilt sha256:{digest[:16]}… and got other bytes")
    need = policy.require_reproduced
    parts = []
    for name, digest in artifacts.items():
        got = by_digest[digest]
        parts.append(
            f"{name}: {len(got)} of {need} independent rebuilds match" + (f" ({', '.join(got)})" if got else "")
        )
    ok = all(len(by_digest[d]) >= need for d in artifacts.values())
    return Rule("require-reproduced", ok, "; ".join(parts + notes))


def _attested(policy: Policy, attestations: Sequence[Evidence]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """sha256 -> the rebuilder keys (labels) whose signed attestations claim those bytes reproduced, and
    sha256 -> those whose attestations say a rebuild of them gave other bytes."""
    same: dict[str, list[str]] = {}
    other: dict[str, list[str]] = {}
    for a in attestations:
        signers = _signed_by(a.provenance, policy.rebuilder_keys)
        if not signers:
            continue
        claim = RebuildClaim.of(a.provenance)
        for digest in claim.reproduced:
            same.setdefault(digest, []).extend(k.label for k in signers)
        for digest in claim.differed:
            other.setdefault(digest, []).extend(k.label for k in signers)
    return same, other


def _age_rule(limit: dt.timedelta, finished: str | None, now: dt.datetime) -> Rule:
    if finished is None:
        return Rule("max-age", False, "the provenance records no finishedOn time")
    try:
        when = dt.datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except ValueError:
        return Rule("max-age", False, f"finishedOn {finished!r} is not a time")
    age = now - when
    ok = age <= limit
    return Rule("max-age", ok, f"built {_span(age)} ago" + ("" if ok else f", more than {_span(limit)}"))


def _span(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def vsa(
    verdict: Verdict, policy: Policy, artifacts: Mapping[str, str], policy_uri: str, now: dt.datetime | None = None
) -> JSON:
    """The verdict on ``artifacts`` (name -> sha256) as a SLSA VSA v1 statement (unsigned)."""
    from detpack import __version__

    return attestation.vsa_statement(
        artifacts,
        resource_uri=resource_uri(next(iter(artifacts))),
        policy_uri=policy_uri,
        policy_sha256=policy.sha256,
        inputs=verdict.inputs,
        passed=verdict.passed,
        levels=verdict.levels,
        verified=now or dt.datetime.now(dt.UTC),
        detpack_version=__version__,
    )


def resource_uri(name: str) -> str:
    """A package URL for a wheel or sdist file name, else ``file:NAME``."""
    try:
        project, version, _, _ = parse_wheel_filename(name)
    except InvalidWheelFilename:
        try:
            project, version = parse_sdist_filename(name)
        except InvalidSdistFilename:
            return f"file:{name}"
    return f"pkg:pypi/{project}@{version}"


def read_evidence(path: Path) -> Evidence:
    """A statement or envelope file as evidence (InputError when it is not one)."""
    data = read_input(path, "attestation file")
    return Evidence(reader.read(data, path), sha256_hex(data), path.name)  # messages name the whole path


def parse_evidence(data: bytes, where: str) -> Evidence:
    return Evidence(reader.read(data, where), sha256_hex(data), where)
