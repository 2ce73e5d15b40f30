"""One locked write to a store: the one way entries reach its log, and the inputs a push reads.

``Writer`` holds the state of one write made under the backend's lock (``Store._writing``):
every entry is prepared (time, user, author, signatures), judged by the access policy in force
(``governance.judge``) and only then appended with a new signed checkpoint (``commit``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.digest import file_sha256
from detpack.errors import InputError, StoreRefusedError
from detpack.provenance import reader, signing
from detpack.provenance.attestation import RebuildClaim
from detpack.store import access, governance, log
from detpack.store.backend import NAME_RE, Backend
from detpack.store.state import State, apply
from detpack.store.who import current_user, now

#: The longest name a store gives out (a backend's temporary adds to it, and a file name has 255 bytes).
NAME_MAX = 200


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InputError(
            f"{name!r}: not a usable store name (letters, digits and ._+~- only, no slashes; an image BASE:TAG)"
        )
    if len(name) > NAME_MAX:
        raise InputError(f"{name[:40]}…: a store name has at most {NAME_MAX} characters; rename the file")
    return name


@dataclass(frozen=True)
class Pushed:
    name: str
    digest: str
    kind: str  # "artifact" ("image", "layer", "config" for an image's blobs), "provenance", "log" or "attestation"
    stored: bool  # False: the same bytes were already there under this name (a no-op)


@dataclass(frozen=True)
class Input:
    path: Path
    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class Planned:
    """One blob a push stores: the file, the kind of entry (push, provenance, log, attestation), what it says."""

    input: Input
    kind: str
    extra: dict[str, Any]


def input_file(path: Path) -> Input:
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    return Input(path, check_name(path.name), file_sha256(path), path.stat().st_size)


@contextlib.contextmanager
def temp_blob(data: bytes) -> Iterator[Path]:
    """``data`` in a temporary file, for a backend that stores blobs from files."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="detpack-blob-") as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(data)
        yield path


def attestation_input(path: Path) -> tuple[Input, dict[str, Any]]:
    """A rebuild attestation to store: the file, and what its log entry says (subjects, signers)."""
    parsed = reader.read_file(path)
    RebuildClaim.of(parsed)  # refuses anything that is not a rebuild attestation
    if parsed.envelope is None:
        raise InputError(f"{path}: an unsigned statement; store the signed attestation (rebuild --attest KEY)")
    extra = {"subjects": [s.sha256 for s in parsed.subjects], "keyids": [s.keyid for s in parsed.envelope.signatures]}
    return input_file(path), extra


class Writer:
    """The state of one locked write, and the one way to append to the log."""

    def __init__(
        self, backend: Backend, key: signing.PrivateKey, state: State, author: signing.PrivateKey | None
    ) -> None:
        self._backend = backend
        self.key = key
        self.state = state
        self.author = author

    @property
    def backend(self) -> Backend:
        return self._backend

    def author_name(self) -> str:
        """The access policy's name for this writer's author key (StoreRefusedError when it has none)."""
        try:
            return governance.author_name(self.state, self.author.public if self.author else None)
        except ValueError as exc:
            raise StoreRefusedError(f"{self.backend.url}: {exc}; nothing was written") from None

    def permit(self, entry: dict[str, Any]) -> None:
        """Refuse, before anything is written, what the access policy in force does not let the author do."""
        if self.state.access is None:
            return
        problem = governance.permits(self.state, self.author_name(), entry)
        if problem is not None:
            raise StoreRefusedError(f"{self.backend.url}: {problem}; nothing was written")

    def prepare(
        self,
        entry: dict[str, Any],
        roots: Sequence[signing.PrivateKey] = (),
        detached: Sequence[tuple[bytes, str]] = (),
    ) -> dict[str, Any]:
        """The entry as it will be logged next (time, user, author, signatures), judged by the access policy.
        A policy change is signed by ``roots`` and carries the ``detached`` root signatures (file bytes, source)."""
        entry = {**entry, "time": now(), "user": current_user()}
        index = self.state.size
        origin = str(self.state.origin or entry.get("origin"))
        if entry["type"] in ("access", "policy"):
            if entry["type"] == "access":
                entry["version"] = self.state.access_version + 1
            else:
                entry["version"] = self.state.gate_versions.get(str(entry["env"]), 0) + 1
            change = governance.change_of(self.state, entry)
            assert not isinstance(change, str)  # the version was just set as expected
            signed = [change.sign(k) for k in roots]
            signed += [change.read_signature_file(data, source) for data, source in detached]
            if signed:
                entry["signatures"] = signed
        elif self.state.access is not None:
            entry["author"] = self.author_name()
            if self.author is not None:
                entry = access.sign_entry(entry, origin, index, [self.author])
        problem = governance.judge(self.state, entry, index)
        if problem is not None:
            raise StoreRefusedError(f"{self.backend.url}: {problem}; nothing was written")
        return entry

    def commit(self, entry: dict[str, Any]) -> int:
        """Append a prepared entry and sign the new checkpoint."""
        origin = str(self.state.origin or entry.get("origin"))
        c2sp = (self.state.format if self.state.origin else entry.get("format", 1)) >= 3
        record = log.entry_record(entry)
        index, _ = log.append(self.backend, self.key, origin, record, entry["time"], c2sp=c2sp)
        apply(self.state, log.parse_entry(record))  # judged in ``prepare``, signed by this writer's key
        return index

    def append(
        self,
        entry: dict[str, Any],
        roots: Sequence[signing.PrivateKey] = (),
        detached: Sequence[tuple[bytes, str]] = (),
    ) -> int:
        return self.commit(self.prepare(entry, roots, detached))

    def finish(self) -> None:
        """Complete what an interrupted writer logged but did not do (bindings, retirements)."""
        bound = self.backend.list_names()
        for name, digest in self.state.names.items():
            if name not in bound:
                self.backend.bind_name(name, digest)
        for item in self.state.items.values():
            if item.expired and self.backend.has_blob(item.digest):
                self.backend.retire_blob(item.digest)

    def store_all(self, plan: Sequence[Planned]) -> list[Pushed]:
        """Store every planned blob in order, after checking them all: nothing is written when one is refused
        (the access policy, a name bound to other bytes, a name linked to other provenance)."""
        for p in plan:
            self.permit({"type": "push", "name": p.input.name})
        for p in plan:
            i = p.input
            bound = self.state.names.get(i.name)
            if bound is not None and bound != i.digest:
                raise StoreRefusedError(
                    f"{i.name}: already bound to sha256:{bound[:16]}… in {self.backend.url}, and these bytes are "
                    f"sha256:{i.digest[:16]}…; names are write-once (publish a new version under a new name)"
                )
        for p in plan:
            item = self.state.items.get(p.input.digest)
            linked = item.links.get(p.input.name) if item is not None else None
            wanted = p.extra.get("provenance")
            if p.kind == "push" and wanted is not None and linked is not None and linked != wanted:
                raise StoreRefusedError(
                    f"{p.input.name}: linked to provenance sha256:{linked[:16]}… in {self.backend.url} already; a "
                    "name's provenance link is write-once (push these bytes under another name to link other "
                    "provenance)"
                )
        return [self.store_blob(p.input, p.kind, p.extra) for p in plan]

    def store_blob(self, i: Input, kind: str, extra: dict[str, Any]) -> Pushed:
        self.backend.put_blob(i.digest, i.path)
        item = self.state.items.get(i.digest)
        link = extra.get("provenance")
        unchanged = (
            item is not None
            and not item.expired
            and i.name in item.names
            and (kind != "push" or link is None or item.links.get(i.name) == link)
        )
        if unchanged:
            return Pushed(i.name, i.digest, _shown(kind, extra), False)
        if kind == "push" and link is None and item is not None:
            extra = {**extra, "provenance": item.links.get(i.name, item.provenance)}
        self.append({"type": kind, "name": i.name, "digest": i.digest, "size": i.size, **extra})
        self.backend.bind_name(i.name, i.digest)
        return Pushed(i.name, i.digest, _shown(kind, extra), True)


def _shown(kind: str, extra: dict[str, Any]) -> str:
    """What a stored blob is called: an image's blobs by what they are, other pushes "artifact"."""
    return str(extra.get("media") or "artifact") if kind == "push" else kind
