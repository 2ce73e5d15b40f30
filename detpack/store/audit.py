"""``store verify``: audit a store (or a copy of one) with nothing but its public key.

Re-hashes every live blob, recomputes the Merkle tree, checks every checkpoint's signature
and the consistency between successive checkpoints, and cross-checks name bindings and the
live set against what the log says. Each problem is one line naming the object; notes
describe what an interrupted writer left behind, which is harmless by construction.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from detpack.digest import stream_sha256
from detpack.errors import KeyFileError, StoreError
from detpack.provenance.signing import PublicKey, parse_public_key
from detpack.store import governance, log, merkle, note, recheck, witness
from detpack.store.backend import Backend, Records
from detpack.store.state import State, apply
from detpack.wording import count

#: Told how far a long job got: (items done, items in all). The CLI draws it on a terminal.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class StoreAudit:
    """What ``store verify`` found."""

    problems: tuple[str, ...]  # one line each; empty when the store verifies
    notes: tuple[str, ...]  # harmless leftovers of interrupted writers, and how the key was chosen
    entries: int  # log entries the last good checkpoint covers
    checkpoints: int
    blobs: int  # live blobs re-hashed
    keyid: str | None  # the key checked with
    #: The store is signed by another key than the one given: nothing else was checked (the one
    #: problem says which keyid signs it), and this is not evidence of tampering.
    wrong_key: bool = False
    #: With witnesses: the tree size of the newest checkpoint a quorum of them cosigned (0: none), and who.
    witnessed: int = 0
    cosigners: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def _published_key(backend: Backend) -> PublicKey | None:
    pem = backend.read_public_key()
    if pem is None:
        return None
    try:
        return parse_public_key(pem, f"{backend.url}: published key")
    except KeyFileError:
        return None


def _signed_by(record: bytes, key: PublicKey) -> bool:
    try:
        return log.Checkpoint.parse(record).verifies(key)
    except ValueError:
        return False


def _recorded_keyids(entries: list[dict[str, object]], checkpoint_records: tuple[bytes, ...]) -> list[str]:
    """The keyids the store says it signs with: its init entry's, then its checkpoints' (in order, once each)."""
    keyids: list[str] = []
    if entries and entries[0].get("type") == "init" and isinstance(entries[0].get("keyid"), str):
        keyids.append(str(entries[0]["keyid"]))
    for record in checkpoint_records:
        with contextlib.suppress(ValueError):
            keyid = log.Checkpoint.parse(record).keyid
            if keyid not in keyids:
                keyids.append(keyid)
    return keyids


def verify_store(
    backend: Backend,
    key: PublicKey | None,
    since: bytes | None = None,
    witnesses: Sequence[note.VerifierKey] = (),
    quorum: int = 0,
    progress: Progress | None = None,
) -> StoreAudit:
    """Audit ``backend``; ``since`` is a checkpoint saved earlier (a record, or a C2SP note), which the log
    must still extend; with ``quorum``, the newest checkpoint ``quorum`` of ``witnesses`` cosigned is the
    one trusted, and a cosignature of another history (a fork) is a problem."""
    checkpoint_records = backend.read_log("checkpoints")
    entry_records = backend.read_log("entries")
    notes = _torn_notes(checkpoint_records, entry_records)
    if not checkpoint_records.items and not entry_records.items:
        return StoreAudit((), (*notes, "the store is empty"), 0, 0, 0, key.keyid if key else None)
    if key is None:
        key = _published_key(backend)
        if key is None:
            return StoreAudit(
                (f"{backend.url}: no readable public key is published; pass --key PUB",), (), 0, 0, 0, None
            )
        notes.append("checked with the public key published in the store; pass --key PUB to check with one you trust")

    entries = list(entry_records.items)
    parsed, problems = _parse_entries(entries, backend.url)
    wrong_key = _wrong_key_problem(backend, parsed, checkpoint_records.items, key)
    if wrong_key is not None:
        return StoreAudit((wrong_key,), tuple(notes), 0, len(checkpoint_records.items), 0, key.keyid, wrong_key=True)
    origin, init_problems = _check_init(parsed, key)
    problems.extend(init_problems)

    result = log.audit(entries, checkpoint_records.items, key, origin)
    problems.extend(result.problems)
    notes.extend(result.notes)
    if since is not None:
        problems.extend(log.check_saved(since, entries[: result.committed], checkpoint_records.items, key))
    state = _replay_judged(parsed[: result.committed], problems)
    problems.extend(recheck.bindings(state))
    problems.extend(recheck.promotions(backend, key, parsed[: result.committed]))
    problems.extend(recheck.images(backend, state))
    witnessed: tuple[int, tuple[str, ...]] = (0, ())
    if witnesses or quorum:
        witnessed = _check_witnesses(backend, entries[: result.committed], key, witnesses, quorum, problems, notes)

    live = set(backend.list_blobs())
    for found_problems, found_notes in (_check_blobs(backend, live, state, progress), _check_names(backend, state)):
        problems.extend(found_problems)
        notes.extend(found_notes)
    return StoreAudit(
        tuple(problems), tuple(notes), result.committed, result.checkpoints, len(live), key.keyid,
        witnessed=witnessed[0], cosigners=witnessed[1],
    )  # fmt: skip


def _replay_judged(parsed: list[dict[str, Any]], problems: list[str]) -> State:
    """Replay the log, judging every entry against the access policy in force at its position."""
    state = State()
    for index, entry in enumerate(parsed):
        problem = governance.judge(state, entry, index)
        if problem is not None:
            problems.append(f"log entry {index + 1} ({entry.get('type')}): {problem}")
        apply(state, entry)
    return state


def _check_witnesses(
    backend: Backend,
    entries: list[bytes],
    key: PublicKey,
    witnesses: Sequence[note.VerifierKey],
    quorum: int,
    problems: list[str],
    notes: list[str],
) -> tuple[int, tuple[str, ...]]:
    """Which committed checkpoint a quorum of witnesses cosigned, and any cosignature of another history.
    A quorum counts distinct public keys: a key given twice (or under two names) is refused."""
    from detpack.store.proofs import distinct_witnesses

    distinct_witnesses(witnesses)
    checkpoints = []  # their signatures are checked by ``log.audit``; the one trusted is checked again below
    for record in backend.read_log("checkpoints").items:
        with contextlib.suppress(ValueError):
            cp = log.Checkpoint.parse(record)
            if cp.size <= len(entries):
                checkpoints.append(cp)
    if any(cp.form != "c2sp" for cp in checkpoints) and not any(cp.form == "c2sp" for cp in checkpoints):
        problems.append(
            f"{backend.url}: a store of format 1 or 2 signs detpack-form checkpoints, which witnesses do not cosign"
        )
        return 0, ()
    leaves = [merkle.leaf_hash(e) for e in entries]
    roots: dict[int, bytes] = {}
    by_tree: dict[tuple[int, bytes], dict[bytes, str]] = {}  # (size, root) -> the cosigners' keys -> names
    origin = checkpoints[-1].origin if checkpoints else ""
    for cosig in witness.cosignatures(backend):
        vkey = next((w for w in witnesses if w.name == cosig.signature.name and w.hash == cosig.signature.hash), None)
        text = note.checkpoint_text(origin, cosig.size, cosig.root)
        if vkey is None or not note.verifies(vkey, text, cosig.signature):
            continue  # not one of the witnesses asked for, or not a real cosignature: proves nothing
        if cosig.size > len(entries):
            problems.append(
                f"witness {vkey.name} cosigned tree size {cosig.size}, but this log holds {len(entries)} entries: "
                "it was rolled back, or this reader is shown another branch"
            )
            continue
        if cosig.size not in roots:
            roots[cosig.size] = merkle.root(leaves[: cosig.size])
        if roots[cosig.size] != cosig.root:
            problems.append(
                f"FORK: witness {vkey.name} cosigned tree size {cosig.size} with root "
                f"{base64.b64encode(cosig.root).decode('ascii')}, but this log's root at that size is "
                f"{base64.b64encode(roots[cosig.size]).decode('ascii')}: the witness saw another history"
            )
            continue
        by_tree.setdefault((cosig.size, cosig.root), {})[vkey.key.raw] = vkey.name
    trusted = next(
        (
            cp
            for cp in reversed(checkpoints)
            if len(by_tree.get((cp.size, cp.root), ())) >= max(quorum, 1) and cp.verifies(key)
        ),
        None,
    )
    names = ", ".join(w.name for w in witnesses)
    if trusted is None:
        if quorum:
            problems.append(
                f"no checkpoint is cosigned by {quorum} of the witnesses {names} (store witness add-checkpoint)"
            )
        return 0, ()
    cosigners = tuple(sorted(by_tree[(trusted.size, trusted.root)].values()))
    notes.append(f"trusted checkpoint: tree size {trusted.size}, cosigned by {', '.join(cosigners)}")
    if trusted.size < len(entries):
        later = len(entries) - trusted.size
        notes.append(f"{later} later log entr{'y is' if later == 1 else 'ies are'} not witnessed yet")
    return trusted.size, cosigners


def _torn_notes(checkpoint_records: Records, entry_records: Records) -> list[str]:
    return [
        f"a partial last line in the {stream} log: an interrupted write (the next write removes it)"
        for stream, records in (("checkpoints", checkpoint_records), ("entries", entry_records))
        if records.torn
    ]


def _parse_entries(entries: list[bytes], url: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The log's entries as read (an unreadable one stands in as ``{"type": "unreadable"}``), and the problems."""
    problems: list[str] = []
    parsed: list[dict[str, Any]] = []
    for number, record in enumerate(entries, 1):
        try:
            parsed.append(log.parse_entry(record))
        except ValueError:
            problems.append(f"log entry {number}: unreadable (changed by hand)")
            parsed.append({"type": "unreadable"})
    try:
        log.store_format(parsed, url)
    except log.NewerFormatError:
        raise  # to be judged by a detpack that knows the format, not here
    except StoreError:
        problems.append(f"log entry 1: records store format {parsed[0].get('format')!r}, which is no store format")
    return parsed, problems


def _wrong_key_problem(
    backend: Backend, parsed: list[dict[str, Any]], checkpoint_records: tuple[bytes, ...], key: PublicKey
) -> str | None:
    """The one problem when the store is signed by another key than ``key`` (then nothing else is checked)."""
    recorded = _recorded_keyids(parsed, checkpoint_records)
    if recorded and key.keyid not in recorded and not any(_signed_by(r, key) for r in checkpoint_records):
        return (
            f"{backend.url}: checkpoints are signed by keyid {', '.join(k[:16] for k in recorded)}, "
            f"the given key is keyid {key.keyid[:16]} (wrong key?)"
        )
    return None


def _check_init(parsed: list[dict[str, Any]], key: PublicKey) -> tuple[str | None, list[str]]:
    """The store's origin as its init entry records it, and the problems with that entry."""
    if not parsed:
        return None, []
    if parsed[0].get("type") != "init":
        return None, ["log entry 1: not the store's init entry"]
    origin = parsed[0].get("origin")
    problems = []
    if parsed[0].get("keyid") != key.keyid:
        problems.append(
            f"log entry 1: names keyid {str(parsed[0].get('keyid'))[:16]}, not the store's key {key.keyid[:16]}"
        )
    return (origin if isinstance(origin, str) else None), problems


def _check_blobs(
    backend: Backend, live: set[str], state: State, progress: Progress | None = None
) -> tuple[list[str], list[str]]:
    """Every live blob re-hashed, and the live set against the log's: (problems, notes)."""
    problems: list[str] = []
    notes: list[str] = []
    for done, digest in enumerate(sorted(live)):
        if progress is not None:
            progress(done, len(live))
        with backend.open_blob(digest) as f:
            actual = stream_sha256(f)
        if actual != digest:
            names = ", ".join(state.items[digest].names) if digest in state.items else "not in the log"
            problems.append(
                f"blob sha256:{digest[:16]}… ({names}): its bytes do not match its digest (changed by hand)"
            )
    for digest, item in sorted(state.items.items()):
        label = f"blob sha256:{digest[:16]}… ({', '.join(item.names) or item.kind})"
        if item.expired is None and digest not in live:
            problems.append(f"{label}: missing from the store, but the log has not expired it")
        elif item.expired is not None and digest in live:
            notes.append(
                f"{label}: expired in the log but still live (an interrupted expire; the next write retires it)"
            )
    stray = sorted(live - set(state.items))
    if stray:
        stray_blobs = count(len(stray), "blob")
        notes.append(f"{stray_blobs} not in the log (an interrupted push); they are not part of the store")
    return problems, notes


def _check_names(backend: Backend, state: State) -> tuple[list[str], list[str]]:
    """The names bound in the store against the log's bindings: (problems, notes)."""
    problems: list[str] = []
    bound = backend.list_names()
    for name, digest in sorted(bound.items()):
        logged = state.names.get(name)
        if logged is None:
            problems.append(f"name {name}: bound to sha256:{digest[:16]}… outside the log (bound by hand)")
        elif logged != digest:
            problems.append(
                f"name {name}: bound to sha256:{digest[:16]}…, but the log binds it to sha256:{logged[:16]}… "
                "(rebound by hand)"
            )
    notes = [
        f"name {name}: logged but not bound yet (an interrupted write; the next write binds it)"
        for name in sorted(set(state.names) - set(bound))
    ]
    return problems, notes
