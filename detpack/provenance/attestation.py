"""Statements detpack signs besides provenance: independent-rebuild attestations and SLSA
Verification Summary Attestations (VSA v1).

A **rebuild attestation** (predicate ``REBUILD_PREDICATE``) says: this rebuilder, in its own
recorded environment, rebuilt these subjects from this record (or this published release) and got
these digests. Its subjects are the artifacts as the record names them (the digests a gate asks
about); the predicate carries, per subject, the digest the rebuild produced and whether it matched,
the record it started from (name and sha256 of its exact bytes), and the rebuilder's environment
(its builder id, host, sandbox, toolchain and the sha256 of its own canonical buildDefinition).

A **VSA** (``VSA_PREDICATE``, https://slsa.dev/verification_summary/v1) records a verifier's
verdict on artifacts against a policy: the policy's digest, every attestation the verdict rests on
(by digest), PASSED or FAILED and the levels verified.

Both are plain in-toto v1 statements (values here), written as RFC 8785 canonical JSON and signed
as DSSE envelopes by ``signing``; ``reader`` reads them back, and ``RebuildClaim.of`` turns a read
attestation into the value a policy checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detpack.errors import InputError
from detpack.provenance.reader import Provenance
from detpack.provenance.statement import JSON, rfc3339

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
REBUILD_PREDICATE = "https://detpack.dev/attestations/rebuild/v1"
VSA_PREDICATE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://detpack.dev/verifiers/policy/v1"
#: The file-name part that marks a rebuild attestation: ``NAME.rebuild.KEYID.intoto.jsonl``.
REBUILD_SUFFIX = ".rebuild."


@dataclass(frozen=True)
class Rebuilt:
    """One subject as a rebuild found it."""

    name: str
    expected: str  # sha256 the record (or the index) names
    rebuilt: str | None  # sha256 the rebuild produced; None when it produced no such file

    @property
    def matches(self) -> bool:
        return self.rebuilt is not None and self.rebuilt == self.expected


@dataclass(frozen=True)
class RebuildOrigin:
    """What the rebuild started from: a provenance record, or a published release."""

    kind: str  # "record" or "pypi"
    name: str  # the record's file name, or NAME==VERSION
    sha256: str  # the record's exact bytes, or the sdist's


def rebuild_statement(
    results: Sequence[Rebuilt],
    origin: RebuildOrigin,
    environment: Mapping[str, Any],
    finished: dt.datetime,
    verdict: str,
) -> JSON:
    """The in-toto statement of one rebuild (unsigned; ``signing.sign`` its canonical JSON)."""
    if not results:
        raise InputError(f"{origin.name}: nothing was rebuilt, so there is nothing to attest")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": r.name, "digest": {"sha256": r.expected}} for r in results],
        "predicateType": REBUILD_PREDICATE,
        "predicate": {
            "origin": {"kind": origin.kind, "name": origin.name, "digest": {"sha256": origin.sha256}},
            "results": [
                {
                    "name": r.name,
                    "expected": {"sha256": r.expected},
                    "rebuilt": {"sha256": r.rebuilt} if r.rebuilt is not None else None,
                    "matches": r.matches,
                }
                for r in results
            ],
            "verdict": verdict,
            "rebuilder": dict(environment),
            "finishedOn": rfc3339(finished),
        },
    }


def rebuilder_environment(statement: Mapping[str, Any], build_definition_sha256: str) -> JSON:
    """The rebuilder's environment, from the provenance its own rebuild wrote."""
    predicate = statement.get("predicate", {})
    run = predicate.get("runDetails", {})
    definition = predicate.get("buildDefinition", {})
    host: dict[str, Any] = {}
    for byproduct in run.get("byproducts", []):
        if isinstance(byproduct, dict) and byproduct.get("name") == "host":
            host = dict(byproduct.get("annotations", {}))
    toolchain = [
        {k: rd[k] for k in ("name", "uri", "digest") if k in rd}
        for rd in definition.get("resolvedDependencies", [])
        if isinstance(rd, dict) and rd.get("name") != "source"
    ]
    return {
        "id": run.get("builder", {}).get("id"),
        "host": host,
        "sandbox": definition.get("internalParameters", {}).get("sandbox", {"kind": "none"}),
        "toolchain": toolchain,
        "buildDefinition": {"digest": {"sha256": build_definition_sha256}},
    }


@dataclass(frozen=True)
class RebuildClaim:
    """What a (verified) rebuild attestation claims: the subject digests it reproduced."""

    source: str
    rebuilder: str | None
    reproduced: frozenset[str]  # sha256 of each subject the rebuild matched
    differed: frozenset[str]  # sha256 of each subject it did not
    finished: str | None

    @classmethod
    def of(cls, attestation: Provenance) -> RebuildClaim:
        if attestation.predicate_type != REBUILD_PREDICATE:
            raise InputError(
                f"{attestation.source}: predicateType {attestation.predicate_type!r} is not a detpack rebuild "
                f"attestation ({REBUILD_PREDICATE}); make one with `detpack rebuild ... --attest KEY`"
            )
        predicate = attestation.statement.get("predicate", {})
        results = predicate.get("results")
        if not isinstance(results, list):
            raise InputError(f"{attestation.source}: the rebuild attestation has no results list")
        named = {s.sha256 for s in attestation.subjects}
        reproduced: set[str] = set()
        differed: set[str] = set()
        for number, r in enumerate(results, 1):
            expected = r.get("expected", {}).get("sha256") if isinstance(r, dict) else None
            if not isinstance(expected, str) or expected not in named:
                raise InputError(f"{attestation.source}: result {number} names no subject of the attestation")
            rebuilt = r.get("rebuilt") or {}
            same = r.get("matches") is True and isinstance(rebuilt, dict) and rebuilt.get("sha256") == expected
            (reproduced if same else differed).add(expected)
        rebuilder = predicate.get("rebuilder", {})
        return cls(
            attestation.source,
            rebuilder.get("id") if isinstance(rebuilder, dict) else None,
            frozenset(reproduced),
            frozenset(differed - reproduced),
            predicate.get("finishedOn"),
        )


@dataclass(frozen=True)
class InputAttestation:
    uri: str
    sha256: str


def vsa_statement(
    subjects: Mapping[str, str],
    *,
    resource_uri: str,
    policy_uri: str,
    policy_sha256: str,
    inputs: Sequence[InputAttestation],
    passed: bool,
    levels: Sequence[str],
    verified: dt.datetime,
    detpack_version: str,
) -> JSON:
    """A SLSA VSA v1 statement of a verdict on ``subjects`` (name -> sha256)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}} for name, digest in subjects.items()],
        "predicateType": VSA_PREDICATE,
        "predicate": {
            "verifier": {"id": VERIFIER_ID, "version": {"detpack": detpack_version}},
            "timeVerified": rfc3339(verified),
            "resourceUri": resource_uri,
            "policy": {"uri": policy_uri, "digest": {"sha256": policy_sha256}},
            "inputAttestations": [{"uri": i.uri, "digest": {"sha256": i.sha256}} for i in inputs],
            "verificationResult": "PASSED" if passed else "FAILED",
            "verifiedLevels": list(levels),
            "slsaVersion": "1.0",
        },
    }
