"""Witnesses: third parties that cosign a store's checkpoints and so make a split view visible.

A witness keeps, per log origin, the log's key and the largest tree (size, root) it cosigned.
Asked to cosign a new checkpoint it checks the log's signature, then that the new tree extends
the one it remembers (an RFC 6962 consistency proof between the two roots), and only then
remembers the new tree and returns a C2SP ``tlog-cosignature`` (``note.cosign``). A log that
shows one history to one reader and another to another is caught by any witness that saw the
other branch: the tree it is asked to cosign is not an extension of the one it remembers.

The witness's memory is one JSON file per origin in its state directory, replaced atomically
(write, fsync, rename) before the cosignature is handed out: a witness killed at any moment
never forgets a tree it cosigned. The cosignature is then attached to the store (its
``cosignatures`` stream, written under the store's lock, with no store key needed) for readers
(``store verify --witness``); ``-o`` also writes the cosigned checkpoint note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from detpack.atomic import exclusive, write_bytes
from detpack.digest import canonical_json
from detpack.errors import InputError, StoreError, StoreRefusedError
from detpack.provenance.signing import PrivateKey, PublicKey
from detpack.store import log, merkle, note
from detpack.store.backend import Backend
from detpack.store.store import Store


class ForkError(StoreRefusedError):
    """The log's new checkpoint does not extend what the witness cosigned: a fork, a rewrite or a rollback."""


@dataclass(frozen=True)
class Cosignature:
    """A witness's cosignature of the checkpoint of tree ``size`` with ``root``, as the store keeps it."""

    size: int
    root: bytes
    signature: note.Signature

    def record(self) -> bytes:
        return canonical_json({"line": self.signature.line().rstrip("\n"), "root": self.root.hex(), "size": self.size})

    @classmethod
    def parse(cls, record: bytes) -> Cosignature:
        try:
            value = json.loads(record)
            cosig = cls(int(value["size"]), bytes.fromhex(value["root"]), note.Signature.parse_line(value["line"]))
        except (ValueError, KeyError, TypeError):
            raise ValueError("unreadable (changed by hand)") from None
        if cosig.record() != record:
            raise ValueError("not in canonical form (changed by hand)")
        return cosig


def cosignatures(backend: Backend) -> list[Cosignature]:
    """The readable cosignatures attached to a store (unreadable records are skipped: they prove nothing)."""
    found = []
    for record in backend.read_log("cosignatures").items:
        try:
            found.append(Cosignature.parse(record))
        except ValueError:
            continue
    return found


def cosigned_note(backend: Backend, checkpoint: log.Checkpoint) -> note.Note:
    """A C2SP checkpoint's signed note with every cosignature the store holds of it."""
    cosigs = [c.signature for c in cosignatures(backend) if (c.size, c.root) == (checkpoint.size, checkpoint.root)]
    return checkpoint.signed_note(cosigs)


def attach(backend: Backend, cosig: Cosignature) -> None:
    """Add a cosignature to the store (no store key needed: it is self-authenticating)."""
    with backend.lock():
        records = backend.read_log("cosignatures")
        if records.torn:
            backend.truncate_log("cosignatures", len(records.items))
        if cosig.record() not in records.items:
            backend.append_log("cosignatures", len(records.items), cosig.record())


@dataclass(frozen=True)
class Seen:
    """What a witness remembers of one log."""

    origin: str
    key: PublicKey
    size: int
    root: bytes
    time: int

    def record(self) -> bytes:
        return canonical_json(
            {"origin": self.origin, "key": self.key.raw.hex(), "size": self.size,
             "root": base64.b64encode(self.root).decode("ascii"), "time": self.time}
        ) + b"\n"  # fmt: skip


@dataclass(frozen=True)
class Witness:
    key: PrivateKey
    name: str
    state: Path  # the witness's state directory

    def vkey(self) -> note.VerifierKey:
        return note.VerifierKey(self.name, note.COSIGNATURE_V1, self.key.public)

    def _file(self, origin: str) -> Path:
        return self.state / f"{hashlib.sha256(origin.encode('utf-8')).hexdigest()[:32]}.json"

    def seen(self, origin: str) -> Seen | None:
        path = self._file(origin)
        try:
            value = json.loads(path.read_bytes())
            seen = Seen(str(value["origin"]), PublicKey(bytes.fromhex(value["key"])), int(value["size"]),
                        base64.b64decode(value["root"], validate=True), int(value["time"]))  # fmt: skip
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, binascii.Error):
            raise InputError(
                f"{path}: the witness's record of {origin} is unreadable; restore it from a backup"
            ) from None
        if seen.origin != origin:
            raise InputError(f"{path}: records log {seen.origin}, not {origin}; restore it from a backup")
        return seen

    def add_checkpoint(self, store: Store, log_key: PublicKey | None, now: int) -> tuple[Cosignature, Seen | None]:
        """Check the store's latest checkpoint against what this witness saw, remember it, and cosign it
        (one at a time: the witness's state directory is locked meanwhile)."""
        with exclusive(self.state / ".lock", self.state, "the witness's state"):
            return self._add_checkpoint(store, log_key, now)

    def _add_checkpoint(self, store: Store, log_key: PublicKey | None, now: int) -> tuple[Cosignature, Seen | None]:
        url = store.backend.url
        records, checkpoint = store.records()
        if checkpoint is None:
            raise StoreError(f"{url}: the log is empty; there is no checkpoint to cosign")
        if checkpoint.form != "c2sp":
            raise StoreRefusedError(
                f"{url}: a store of format 1 or 2 signs detpack-form checkpoints, which witnesses do not cosign; "
                "witnesses need a store created by this detpack (format 3)"
            )
        seen = self.seen(checkpoint.origin)
        key = _log_key(url, checkpoint, seen, log_key)
        if not checkpoint.verifies(key):
            raise StoreRefusedError(
                f"{url}: checkpoint of tree size {checkpoint.size} is not signed by the log's key "
                f"{key.keyid[:16]}; not cosigned"
            )
        if seen is not None:
            _check_extends(url, seen, checkpoint, records)
        remembered = Seen(checkpoint.origin, key, checkpoint.size, checkpoint.root, now)
        write_bytes(self._file(checkpoint.origin), remembered.record())  # before the cosignature exists
        text = checkpoint.body().decode("utf-8")
        cosig = Cosignature(checkpoint.size, checkpoint.root, note.cosign(text, self.name, self.key, now))
        attach(store.backend, cosig)
        return cosig, seen


def _log_key(url: str, checkpoint: log.Checkpoint, seen: Seen | None, given: PublicKey | None) -> PublicKey:
    if seen is not None:
        if given is not None and given != seen.key:
            raise StoreRefusedError(
                f"{url}: --log-key {given.keyid[:16]} is not the key this witness knows for {checkpoint.origin} "
                f"({seen.key.keyid[:16]}); a log does not change its key"
            )
        return seen.key
    if given is None:
        raise InputError(
            f"{url}: this witness has not seen {checkpoint.origin} before; pass --log-key PUB "
            "(the store's public key, as you trust it)"
        )
    return given


def _check_extends(url: str, seen: Seen, checkpoint: log.Checkpoint, records: list[bytes]) -> None:
    old = f"tree size {seen.size} (root {base64.b64encode(seen.root).decode('ascii')})"
    new = f"tree size {checkpoint.size} (root {base64.b64encode(checkpoint.root).decode('ascii')})"
    if checkpoint.size < seen.size:
        raise ForkError(
            f"{url}: its checkpoint of {new} is older than the {old} this witness cosigned: "
            "the log was rolled back, or shows this reader another branch; not cosigned"
        )
    if checkpoint.size == seen.size:
        if checkpoint.root != seen.root:
            raise ForkError(
                f"{url}: FORK: its checkpoint of {new} differs from the {old} this witness cosigned: "
                "two different logs of the same size; not cosigned"
            )
        return
    # the consistency proof a log hands a witness (tlog-witness); checked against the two roots only
    proof = merkle.consistency_proof(seen.size, [merkle.leaf_hash(r) for r in records[: checkpoint.size]])
    if not merkle.verify_consistency(seen.size, checkpoint.size, seen.root, checkpoint.root, proof):
        raise ForkError(
            f"{url}: FORK: its checkpoint of {new} does not extend the {old} this witness cosigned: "
            f"the first {seen.size} entries differ from what it saw; not cosigned"
        )
