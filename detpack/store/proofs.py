"""Inclusion and consistency proofs for ``store proof``, checked before they are handed out.

An inclusion proof shows that the entry that first stored a digest is leaf N of the tree the
latest signed checkpoint commits to; a consistency proof shows that the tree at one size is
a prefix of the tree at a later one (RFC 6962 section 2.1.2). Both verify with
``detpack.store.merkle`` alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

from detpack.errors import InputError, StoreError, VerificationError
from detpack.store import log, merkle
from detpack.store.state import replay
from detpack.store.store import Store


def inclusion(store: Store, ref: str) -> dict[str, Any]:
    records, checkpoint = store.records()
    item = store.find(replay([log.parse_entry(r) for r in records]), ref)
    if checkpoint is None:
        raise StoreError(f"{store.backend.url}: the log is empty")
    leaves = [merkle.leaf_hash(r) for r in records]
    proof = merkle.inclusion_proof(item.index, leaves)
    if not merkle.verify_inclusion(item.index, checkpoint.size, leaves[item.index], proof, checkpoint.root):
        raise VerificationError(
            f"{store.backend.url}: the log does not match its checkpoint; run `detpack store verify`"
        )
    return {
        "digest": f"sha256:{item.digest}",
        "leaf_index": item.index,
        "tree_size": checkpoint.size,
        "entry": records[item.index].decode("utf-8"),
        "leaf_hash": leaves[item.index].hex(),
        "proof": [p.hex() for p in proof],
        "checkpoint": checkpoint.to_json(),
    }


def consistency(store: Store, old: int, new: int | None = None) -> dict[str, Any]:
    records, checkpoint = store.records()
    if checkpoint is None:
        raise StoreError(f"{store.backend.url}: the log is empty")
    new = checkpoint.size if new is None else new
    if not 1 <= old <= new <= checkpoint.size:
        raise InputError(f"consistency {old}..{new}: sizes must satisfy 1 <= OLD <= NEW <= {checkpoint.size}")
    by_size = {}
    for record in store.backend.read_log("checkpoints").items:
        with contextlib.suppress(ValueError):
            cp = log.Checkpoint.parse(record)
            by_size[cp.size] = cp
    leaves = [merkle.leaf_hash(r) for r in records]
    proof = merkle.consistency_proof(old, leaves[:new])
    return {
        "old": by_size[old].to_json() if old in by_size else {"size": old, "root": merkle.root(leaves[:old]).hex()},
        "new": by_size[new].to_json() if new in by_size else {"size": new, "root": merkle.root(leaves[:new]).hex()},
        "proof": [p.hex() for p in proof],
    }
