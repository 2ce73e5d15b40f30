"""The transparency log: append-only entries, and a signed checkpoint after every append.

Entries are canonical JSON objects, one record each; entry ``i`` is leaf ``i`` of an RFC 6962
Merkle tree (leaf hash = SHA-256(0x00 || the record's exact bytes)). After each append the
writer signs a checkpoint (a signed tree head) with the store's ed25519 key: the store's origin
id, the tree size and the root, as a C2SP tlog-checkpoint signed note (format 3 stores), or in
the detpack text form with the time and the signer's keyid (formats 1 and 2; ``Checkpoint``).

The log *is* what the latest checkpoint covers. Entries appended after it belong to a writer
that was interrupted before it could sign: readers ignore them and the next writer drops
them (``committed_size``), so a crash never leaves a log that fails verification, and a
record added by hand is never believed.

The store's format is the ``format`` of its init entry (``STORE_FORMAT``; none means 1):

- 1: records serialised as ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``;
- 2: records are RFC 8785 canonical JSON (``digest.canonical_json``);
- 3: as 2, and checkpoints are C2SP ``tlog-checkpoint`` signed notes (``note``), which
  witnesses cosign (``witness``); formats 1 and 2 keep their detpack-form checkpoints.

The two differ only in the order of keys outside the Basic Multilingual Plane and in how
numbers other than integers are written; a store's records have ASCII keys and hold strings,
integers, booleans and null only, so every record format 1 wrote is byte for byte its format 2
form. And nothing re-serialises an entry to check it (a leaf hashes the record's bytes as
stored; a checkpoint's signature covers its text ``body``), so a format-1 store is read,
verified and extended as it is. A store of a format newer than ``STORE_FORMAT`` is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from detpack.digest import canonical_json
from detpack.errors import StoreError
from detpack.provenance.signing import PrivateKey, PublicKey
from detpack.store import merkle, note
from detpack.store.backend import Backend

CHECKPOINT_HEADER = "detpack-store-checkpoint/v1"
#: The format a new store's init entry records (see the module docstring).
STORE_FORMAT = 3


@dataclass(frozen=True)
class Checkpoint:
    """A signed tree head, in one of two forms.

    ``c2sp`` (format 3 stores): a C2SP ``tlog-checkpoint`` (origin, size, base64 root) in an
    Ed25519 ``signed-note`` under a key named after the origin; its record is canonical JSON
    ``{"keyid", "note"}``. ``detpack`` (format 1 and 2 stores): the detpack text form
    (``CHECKPOINT_HEADER``, origin, size, hex root, time, keyid), its record canonical JSON of
    those fields and the signature. A store keeps the form it was created with.
    """

    origin: str
    size: int
    root: bytes
    time: str  # the detpack form's signing time; empty in the C2SP form (cosignatures carry times)
    keyid: str
    sig: bytes
    form: str = "detpack"
    hint: bytes = b""  # the C2SP form's 4-byte key hash

    def body(self) -> bytes:
        """The signed text."""
        if self.form == "c2sp":
            return note.checkpoint_text(self.origin, self.size, self.root).encode("utf-8")
        return (
            f"{CHECKPOINT_HEADER}\n{self.origin}\n{self.size}\n{self.root.hex()}\n{self.time}\n{self.keyid}\n".encode()
        )

    def signed_note(self, cosignatures: Sequence[note.Signature] = ()) -> note.Note:
        """The C2SP signed note (with any witnesses' cosignatures after the log's signature)."""
        if self.form != "c2sp":
            raise ValueError("a detpack-form checkpoint (store format 1 or 2) is no signed note")
        own = note.Signature(self.origin, self.hint, self.sig)
        return note.Note(self.body().decode("utf-8"), (own,)).with_signatures(tuple(cosignatures))

    def record(self) -> bytes:
        if self.form == "c2sp":
            return canonical_json({"keyid": self.keyid, "note": self.signed_note().encode().decode("utf-8")})
        return canonical_json(
            {
                "origin": self.origin,
                "size": self.size,
                "root": self.root.hex(),
                "time": self.time,
                "keyid": self.keyid,
                "sig": base64.b64encode(self.sig).decode("ascii"),
            }
        )

    def to_json(self) -> dict[str, Any]:
        if self.form == "c2sp":
            return {"origin": self.origin, "size": self.size, "root": self.root.hex(), "keyid": self.keyid,
                    "note": self.signed_note().encode().decode("utf-8")}  # fmt: skip
        value: dict[str, Any] = json.loads(self.record())
        return value

    def verifies(self, key: PublicKey) -> bool:
        if self.form == "c2sp" and self.hint != note.key_hash(self.origin, note.ED25519, key.raw):
            return False
        return key.verify(self.sig, self.body())

    def vkey(self, key: PublicKey) -> note.VerifierKey:
        """The log's C2SP verifier key (named after the origin)."""
        return note.VerifierKey(self.origin, note.ED25519, key)

    @classmethod
    def signed(cls, key: PrivateKey, origin: str, size: int, root: bytes, time: str, *, c2sp: bool) -> Checkpoint:
        keyid = key.public.keyid
        if c2sp:
            sig = note.sign(note.checkpoint_text(origin, size, root), origin, key)
            return cls(origin, size, root, "", keyid, sig.signature, "c2sp", sig.hash)
        unsigned = cls(origin, size, root, time, keyid, b"")
        return cls(origin, size, root, time, keyid, key.sign(unsigned.body()))

    @classmethod
    def parse(cls, record: bytes) -> Checkpoint:
        """A checkpoint from its record; ValueError when it is not one, or not in canonical form."""
        try:
            value = json.loads(record)
            if "note" in value:
                cp = cls.from_note(note.Note.parse(str(value["note"]).encode("utf-8")), str(value["keyid"]))
            else:
                cp = cls(
                    origin=str(value["origin"]),
                    size=int(value["size"]),
                    root=bytes.fromhex(value["root"]),
                    time=str(value["time"]),
                    keyid=str(value["keyid"]),
                    sig=base64.b64decode(value["sig"], validate=True),
                )
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
            raise ValueError("unreadable (changed by hand)") from None
        if cp.record() != record:
            raise ValueError("not in canonical form (changed by hand)")
        return cp

    @classmethod
    def from_note(cls, signed: note.Note, keyid: str = "") -> Checkpoint:
        """The checkpoint a C2SP note holds, with the log's signature (the one named after the origin)."""
        origin, size, root = note.parse_checkpoint_text(signed.text)
        own = [s for s in signed.signatures if s.name == origin and len(s.signature) == 64]
        if not own:
            raise ValueError(f"no signature by the log ({origin}) on the checkpoint")
        return cls(origin, size, root, "", keyid, own[0].signature, "c2sp", own[0].hash)


def entry_record(entry: dict[str, Any]) -> bytes:
    return canonical_json(entry)


def parse_entry(record: bytes) -> dict[str, Any]:
    value = json.loads(record)
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError("not a log entry")
    return value


class NewerFormatError(StoreError):
    """A store written in a newer format than this detpack knows (upgrade detpack)."""


def store_format(entries: Sequence[dict[str, Any]], url: str) -> int:
    """The format the init entry records (1 when it records none).

    NewerFormatError for a format newer than ``STORE_FORMAT`` (upgrade detpack); StoreError for a
    value that is no format at all (the init entry was changed by hand).
    """
    init = entries[0] if entries and entries[0].get("type") == "init" else {}
    value = init.get("format", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StoreError(
            f"{url}: log entry 1 records store format {value!r}, which is no store format (changed by hand?); "
            "run `detpack store verify`"
        )
    if value > STORE_FORMAT:
        raise NewerFormatError(
            f"{url}: store format {value} is newer than this detpack reads (formats 1 to {STORE_FORMAT}); "
            "upgrade detpack to read, verify or write this store"
        )
    return value


def last_checkpoint(backend: Backend) -> Checkpoint | None:
    """The latest readable checkpoint (its signature is checked by ``audit``, not here)."""
    for record in reversed(backend.read_log("checkpoints").items):
        try:
            return Checkpoint.parse(record)
        except ValueError:
            continue
    return None


def truncate_unsigned(backend: Backend, checkpoints: int, entries: int) -> None:
    """Keep the first ``checkpoints`` checkpoint records and ``entries`` entries (call holding the lock): what
    follows the newest checkpoint the writer's key signed is unsigned (``view``) and not part of the log."""
    held = backend.read_log("checkpoints")
    if len(held.items) > checkpoints or held.torn:
        backend.truncate_log("checkpoints", checkpoints)
    logged = backend.read_log("entries")
    if len(logged.items) > entries or logged.torn:
        backend.truncate_log("entries", entries)


def append(
    backend: Backend, key: PrivateKey, origin: str, record: bytes, time: str, *, c2sp: bool
) -> tuple[int, Checkpoint]:
    """Append one entry and sign the new tree head (call holding the lock, after ``truncate_unsigned``);
    ``c2sp``: in the C2SP form (format 3 stores), else in the detpack form."""
    entries = list(backend.read_log("entries").items)
    index = len(entries)
    backend.append_log("entries", index, record)
    entries.append(record)
    root = merkle.root([merkle.leaf_hash(e) for e in entries])
    checkpoint = Checkpoint.signed(key, origin, index + 1, root, time, c2sp=c2sp)
    backend.append_log("checkpoints", len(backend.read_log("checkpoints").items), checkpoint.record())
    return index, checkpoint


@dataclass(frozen=True)
class LogAudit:
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    committed: int  # entries covered by the last good checkpoint
    checkpoints: int


def audit(
    entries: Sequence[bytes], checkpoint_records: Sequence[bytes], key: PublicKey, origin: str | None
) -> LogAudit:
    """Check every checkpoint's signature, its root against the entries, and consistency between them."""
    walk = _AuditWalk(entries, key, origin, _roots_at(entries, checkpoint_records))
    for number, record in enumerate(checkpoint_records, 1):
        walk.check(number, record)
    problems = walk.problems
    if walk.later_mismatches:
        problems.append(f"{walk.later_mismatches} later checkpoint(s) fail for the same reason")
    committed = walk.previous.size if walk.previous is not None else 0
    notes: list[str] = []
    if len(entries) > committed:
        notes.append(
            f"{len(entries) - committed} log entr{'y' if len(entries) - committed == 1 else 'ies'} after the last "
            "checkpoint: an interrupted write, not part of the log (the next write removes it)"
        )
    return LogAudit(tuple(problems), tuple(notes), min(committed, len(entries)), len(checkpoint_records))


def _roots_at(entries: Sequence[bytes], checkpoint_records: Sequence[bytes]) -> dict[int, bytes]:
    """The tree root of the first N entries for every size N a checkpoint names, in one pass over the log."""
    sizes = set()
    for record in checkpoint_records:
        with contextlib.suppress(ValueError):
            sizes.add(Checkpoint.parse(record).size)
    roots: dict[int, bytes] = {0: merkle.root([])} if 0 in sizes else {}
    frontier: list[bytes] = []
    for size, entry in enumerate(entries):
        merkle.frontier_append(frontier, size, merkle.leaf_hash(entry))
        if size + 1 in sizes:
            roots[size + 1] = merkle.frontier_root(frontier)
    return roots


@dataclass
class _AuditWalk:
    """``audit``'s pass over the checkpoints, oldest first. Each checkpoint's root is compared with the root
    of the entries it covers, so two checkpoints that both match are consistent by construction (the smaller
    tree is a prefix of the larger): no consistency proof between them is needed."""

    entries: Sequence[bytes]
    key: PublicKey
    origin: str | None
    roots: dict[int, bytes]  # the root of the first N entries, for every N a checkpoint names
    problems: list[str] = field(default_factory=list)
    previous: Checkpoint | None = None  # the last checkpoint whose signature holds
    first_mismatch: int | None = None
    later_mismatches: int = 0

    def root_of(self, size: int) -> bytes:
        return self.roots[size]

    def check(self, number: int, record: bytes) -> None:
        try:
            cp = Checkpoint.parse(record)
        except ValueError as exc:
            self.problems.append(f"checkpoint {number}: {exc}")
            return
        where = f"checkpoint {number} (tree size {cp.size})"
        if not cp.verifies(self.key):
            self.problems.append(
                f"{where}: signature does not verify with key {self.key.keyid[:16]} (changed, or signed by another key)"
            )
            return
        previous, held = self.previous, len(self.entries)
        if self.origin is not None and cp.origin != self.origin:
            self.problems.append(
                f"{where}: belongs to store {cp.origin}, not {self.origin} (copied from another store)"
            )
        if previous is not None and cp.size <= previous.size:
            self.problems.append(f"{where}: the tree did not grow after checkpoint {number - 1} (size {previous.size})")
        if cp.size > held:
            self.problems.append(f"{where}: covers {cp.size} entries but the log holds {held}: entries were removed")
        elif self.root_of(cp.size) != cp.root:
            self._mismatch(number, cp, where)
        self.previous = cp

    def _mismatch(self, number: int, cp: Checkpoint, where: str) -> None:
        if self.first_mismatch is not None:
            self.later_mismatches += 1
            return
        self.first_mismatch = number
        low = self.previous.size + 1 if self.previous is not None else 1
        if low == cp.size:
            self.problems.append(f"log entry {cp.size}: does not match {where}: changed, removed or inserted by hand")
        else:
            self.problems.append(
                f"log entries {low}-{cp.size}: do not match {where}: changed, removed or inserted by hand"
            )


def check_saved(
    saved: bytes, entries: Sequence[bytes], checkpoint_records: Sequence[bytes], key: PublicKey
) -> list[str]:
    """Whether the log still extends a checkpoint saved earlier (detects a rewritten or rolled-back log)."""
    try:
        if saved.lstrip().startswith(b"{"):
            old = Checkpoint.parse(saved.strip())
        else:
            old = Checkpoint.from_note(note.Note.parse(saved))
    except ValueError as exc:
        return [f"saved checkpoint: {exc}"]
    where = f"saved checkpoint (tree size {old.size})"
    if not old.verifies(key):
        return [f"{where}: signature does not verify with key {key.keyid[:16]}"]
    if old.size > len(entries):
        return [f"{where}: the log now holds only {len(entries)} entries: it was rolled back"]
    latest = None
    for record in reversed(checkpoint_records):
        try:
            latest = Checkpoint.parse(record)
        except ValueError:
            continue
        if latest.size <= len(entries):
            break
    if latest is None:
        return [f"{where}: the log has no readable checkpoint to compare with"]
    leaves = [merkle.leaf_hash(e) for e in entries[: latest.size]]
    proof = merkle.consistency_proof(old.size, leaves)
    if not merkle.verify_consistency(old.size, latest.size, old.root, latest.root, proof):
        return [f"{where}: the log is not an extension of it (entries up to {old.size} were rewritten)"]
    return []
