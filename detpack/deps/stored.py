"""A store as a source of evidence for ``deps verify``, and the place its findings go.

Read through the store's trusted view only (``Reader.state``: entries a verified checkpoint covers
and the access policy allows): a file is **built here** when a stored provenance statement, a
build record (SLSA provenance), names its sha256; **reproduced** when a stored rebuild attestation
signed by one of the rebuilder keys the caller trusts claims it reproduced those bytes. Every blob
is re-hashed as it is read (``read_blob``). Pushing stores the closure report and the attestations
the run signed (the attestations first, so the report never names evidence the store lacks).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from detpack.deps.report import Evidence
from detpack.deps.verify import Found
from detpack.provenance import reader, signing
from detpack.provenance.attestation import RebuildClaim
from detpack.provenance.signing import PublicKey
from detpack.provenance.statement import PREDICATE_TYPE


def known_in_store(store: Any, digests: Iterable[str], rebuilders: Sequence[PublicKey] = ()) -> dict[str, Found]:
    """sha256 -> what the store's believed log holds about it (a build record, else a trusted attestation)."""
    from detpack.store.backend import read_blob

    wanted = set(digests)
    state = store.state()
    found: dict[str, Found] = {}
    url = store.backend.url
    for item in state.items.values():
        if item.expired or item.kind not in ("provenance", "attestation") or not wanted & set(item.subjects):
            continue
        data = read_blob(store.backend, item.digest)
        name = item.names[0] if item.names else f"sha256:{item.digest[:16]}"
        statement = reader.read(data, f"{url}: {name}")
        if item.kind == "provenance" and statement.predicate_type == PREDICATE_TYPE:
            evidence = Evidence("record", name, item.digest)
            for sha in wanted & set(item.subjects):
                found.setdefault(sha, Found(f"record {name} in {url}", evidence, None))
            continue
        if item.kind != "attestation" or statement.envelope is None:
            continue
        signers = [k for k in rebuilders if signing.signed_by(statement.envelope, k)]
        if not signers:
            continue
        claim = RebuildClaim.of(statement)
        for sha in wanted & claim.reproduced:
            who = ", ".join(f"keyid {k.keyid[:16]}" for k in signers)
            reason = f"attestation {name} in {url}: reproduced by {who}"
            found.setdefault(sha, Found(reason, Evidence("attestation", name, item.digest), None, "reproduced"))
    return found


def push_findings(store: Any, report: Path, attestations: Sequence[Path]) -> list[Any]:
    """Store the attestations, then the report; what was pushed (already held: pushed again as a no-op)."""
    pushed: list[Any] = []
    if attestations:
        pushed += store.push([], attestations=list(attestations))
    pushed += store.push([report])
    return pushed
