"""Signing what a rebuild or a verification found: rebuild attestations and VSAs, DSSE-signed.

``detpack rebuild RECORD --attest KEY`` attests every rebuilt subject of the record;
``rebuild --pypi NAME==VERSION --attest KEY`` each published wheel it rebuilt. The attestation is
written as ``STEM.rebuild.KEYID.intoto.jsonl`` (KEYID: the first 16 hex digits of the signer's),
so the attestations of several rebuilders lie side by side without clashing. ``verify --policy
--vsa OUT --vsa-key KEY`` writes the verdict as a SLSA VSA v1. Files are written whole or not at all.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from detpack.atomic import write_bytes
from detpack.digest import canonical_json
from detpack.errors import InputError
from detpack.provenance import attestation, reader, signing
from detpack.provenance.signing import PrivateKey
from detpack.provenance.statement import JSON
from detpack.verify.gate import Policy, Verdict, vsa
from detpack.verify.pypi import WheelCheck
from detpack.verify.rebuild import RebuildResult


def attestation_path(directory: Path, stem: str, key: PrivateKey) -> Path:
    return directory / f"{stem}{attestation.REBUILD_SUFFIX}{key.public.keyid[:16]}.intoto.jsonl"


def _write(statement: JSON, key: PrivateKey, target: Path) -> Path:
    write_bytes(target, signing.sign(canonical_json(statement), key).to_json())
    return target


def attest_rebuild(result: RebuildResult, record: Path, key: PrivateKey, directory: Path) -> Path:
    """Sign what ``detpack rebuild RECORD`` found; return the attestation's path."""
    if result.rebuilder is None:
        raise InputError(f"{record}: the rebuild wrote no provenance of its own, so its environment is unknown")
    rebuilt = [attestation.Rebuilt(s.name, s.expected, s.actual) for s in result.rebuilt]
    statement = attestation.rebuild_statement(
        rebuilt,
        attestation.RebuildOrigin("record", record.name, result.record_sha256),
        result.rebuilder,
        dt.datetime.now(dt.UTC),
        "reproduced" if result.reproduced else "not reproduced",
    )
    return _write(statement, key, attestation_path(directory, reader.record_stem(record), key))


def attest_pypi(spec: str, check: WheelCheck, key: PrivateKey, directory: Path) -> Path:
    """Sign what ``rebuild --pypi`` found for one published wheel; return the attestation's path."""
    if check.rebuilder is None:
        raise InputError(f"{spec}: the rebuild of {check.wheel} wrote no provenance, so its environment is unknown")
    statement = attestation.rebuild_statement(
        [attestation.Rebuilt(check.wheel, check.published_sha256, check.rebuilt_sha256)],
        attestation.RebuildOrigin("pypi", f"{spec} ({check.sdist})", check.sdist_sha256),
        check.rebuilder,
        dt.datetime.now(dt.UTC),
        check.verdict,
    )
    return _write(statement, key, attestation_path(directory, check.wheel.removesuffix(".whl"), key))


def write_vsa(target: Path, key: PrivateKey, verdict: Verdict, policy: Policy, artifacts: dict[str, str]) -> Path:
    """Sign the verdict on ``artifacts`` (name -> sha256) as a SLSA VSA v1 envelope at ``target``."""
    return _write(vsa(verdict, policy, artifacts, Path(policy.source).name), key, target)
