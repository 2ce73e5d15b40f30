"""Inclusion and consistency proofs for ``store proof``, checked before they are handed out.

An inclusion proof shows that the entry that first stored a digest is leaf N of the tree the
latest signed checkpoint commits to; a consistency proof shows that the tree at one size is
a prefix of the tree at a later one (RFC 6962 section 2.1.2). Both verify with
``detpack.store.merkle`` alone. A quorum of witnesses counts distinct public keys: one key given
twice, or under two names, is refused (``distinct_witnesses``), since its holder could cosign as both.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detpack.errors import ConfigError, InputError, StoreError, VerificationError
from detpack.provenance import signing
from detpack.store import log, merkle, note
from detpack.store.store import Store


def inclusion(store: Store, ref: str) -> dict[str, Any]:
    records, checkpoint = store.records()
    item = store.find(store.state(records), ref)
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


TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


def tlog_proof(store: Store, ref: str) -> bytes:
    """A C2SP ``tlog-proof`` of the entry that first stored ``ref``: the entry (as ``extra``), its index,
    the inclusion proof, and the latest checkpoint with the witnesses' cosignatures of it."""
    from detpack.store import witness

    value = inclusion(store, ref)
    _, checkpoint = store.records()
    assert checkpoint is not None  # inclusion() refused an empty log
    if checkpoint.form != "c2sp":
        raise StoreError(
            f"{store.backend.url}: a store of format 1 or 2 signs detpack-form checkpoints; a tlog-proof needs a "
            "C2SP checkpoint (format 3: a store created by this detpack); use --json for a detpack proof"
        )
    lines = [
        TLOG_PROOF_HEADER,
        f"extra {base64.b64encode(value['entry'].encode('utf-8')).decode('ascii')}",
        f"index {value['leaf_index']}",
        *(base64.b64encode(bytes.fromhex(h)).decode("ascii") for h in value["proof"]),
        "",
    ]
    return ("\n".join(lines) + "\n").encode("ascii") + witness.cosigned_note(store.backend, checkpoint).encode()


def distinct_witnesses(witnesses: Sequence[note.VerifierKey]) -> None:
    """Refuse a witness whose public key an earlier one has (the same vkey again, or the key under another
    name): one key holder cosigns under any name, so a quorum must count keys, each given once."""
    seen: dict[bytes, str] = {}
    for w in witnesses:
        if w.key.raw in seen:
            raise ConfigError(
                f"witness {w.name}: has the same public key as witness {seen[w.key.raw]}; give each witness's key "
                "once (a quorum counts distinct keys)"
            )
        seen[w.key.raw] = w.name


@dataclass(frozen=True)
class ProofCheck:
    """What an offline check of a tlog-proof established."""

    index: int  # 0-based
    size: int
    origin: str
    entry: dict[str, Any]
    cosigners: tuple[str, ...]


def check_tlog_proof(
    data: bytes,
    source: str,
    log_key: signing.PublicKey | note.VerifierKey,
    witnesses: Sequence[note.VerifierKey] = (),
    quorum: int = 0,
) -> ProofCheck:
    """Verify a tlog-proof offline: the log's signature on its checkpoint, the entry's inclusion, and a quorum
    of witnesses' cosignatures (distinct keys: ConfigError for one given twice). InputError when it is no
    tlog-proof, VerificationError when it does not hold."""
    distinct_witnesses(witnesses)
    try:
        text = data.decode("utf-8")
        head, sep, signed = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or lines[0] != TLOG_PROOF_HEADER:
            raise ValueError(f"does not start with {TLOG_PROOF_HEADER}")
        extra = None
        rest = lines[1:]
        if rest and rest[0].startswith("extra "):
            extra = base64.b64decode(rest.pop(0)[6:], validate=True)
        if not rest or not re.fullmatch(r"index (0|[1-9][0-9]*)", rest[0]):
            raise ValueError("no index line")
        index = int(rest[0][6:])
        path = [base64.b64decode(h, validate=True) for h in rest[1:]]
        checkpoint_note = note.Note.parse(signed.encode("utf-8"))
        checkpoint = log.Checkpoint.from_note(checkpoint_note)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InputError(f"{source}: not a tlog-proof ({exc})") from None
    if extra is None:
        raise InputError(f"{source}: has no extra line holding the log entry; detpack proofs carry it")
    vkey = log_key if isinstance(log_key, note.VerifierKey) else checkpoint.vkey(log_key)
    if vkey.name != checkpoint.origin or not checkpoint_note.verified_by(vkey):
        raise VerificationError(
            f"{source}: its checkpoint ({checkpoint.origin}, tree size {checkpoint.size}) is not signed by the log "
            f"key {vkey.name}+{vkey.hash.hex()}"
        )
    if not merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(extra), path, checkpoint.root):
        raise VerificationError(
            f"{source}: the inclusion proof does not lead from log entry {index + 1} to the checkpoint's root"
        )
    cosigners = tuple(sorted(w.name for w in witnesses if checkpoint_note.verified_by(w)))  # one per key
    if len(cosigners) < quorum:
        raise VerificationError(
            f"{source}: cosigned by {len(cosigners)} of the given witnesses ({', '.join(cosigners) or 'none'}); "
            f"--quorum {quorum} needs {quorum}"
        )
    try:
        entry = log.parse_entry(extra)
    except ValueError:
        raise InputError(f"{source}: its extra line is not a log entry") from None
    return ProofCheck(index, checkpoint.size, checkpoint.origin, entry, cosigners)
