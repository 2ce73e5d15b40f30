"""The store: write-once artifacts, linked provenance, promotions and retention, all logged.

Every change is a log entry followed by a signed checkpoint, made holding the backend's lock
after dropping whatever an interrupted writer left (``log.recover``); the log is written
before the change it records is made visible (a blob is stored before its push entry, a name
is bound after it, a blob is retired after its expire entry), and ``_finish`` completes any
such pending step, so a writer killed anywhere leaves a store that verifies. Refusals
(rebinding a name, promoting unverified provenance) happen before anything is written.

Once the store has an access policy (``set_access``), every entry is signed by its author
(``Store.author``, or the approver's key) and judged by ``governance`` before it is appended
(``_Writer.prepare``); the same judge replays the log in ``store verify``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.digest import canonical_json, file_sha256, sha256_hex
from detpack.errors import InputError, KeyFileError, StoreError, StoreRefusedError, StoreTrustError, VerificationError
from detpack.provenance import reader, signing
from detpack.provenance.attestation import RebuildClaim
from detpack.store import access, governance, log, merkle, pins
from detpack.store import view as views
from detpack.store.access import AccessPolicy
from detpack.store.backend import Backend
from detpack.store.keys import StoreKeys
from detpack.store.state import Item, Promotion, State, apply, replay
from detpack.store.who import ci_run, current_user, now
from detpack.verify import gate
from detpack.wording import Distrusted

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}$")
_ENV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"{name!r}: not a usable store name (letters, digits and ._+~- only, no slashes)")
    return name


@dataclass(frozen=True)
class Pushed:
    name: str
    digest: str
    kind: str  # "artifact", "provenance" or "attestation"
    stored: bool  # False: the same bytes were already there under this name (a no-op)


@dataclass(frozen=True)
class Decision:
    digest: str
    names: tuple[str, ...]
    expired: bool
    reason: str


@dataclass(frozen=True)
class _Input:
    path: Path
    name: str
    digest: str
    size: int


def _input(path: Path) -> _Input:
    if not path.is_file():
        raise InputError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    return _Input(path, check_name(path.name), file_sha256(path), path.stat().st_size)


class Store:
    """One store: its backend, and where a writer finds its private key (readers never need it)."""

    def __init__(
        self,
        backend: Backend,
        keys: StoreKeys,
        author: signing.PrivateKey | None = None,
        trust: pins.TrustedKey | None = None,
    ) -> None:
        self.backend = backend
        self.keys = keys
        #: The key that signs the entries this writer makes (required once the store has an access policy).
        self.author = author
        #: The store key readers believe (None: the published key, pinned at first use; see ``pins``).
        self.trust = trust
        #: What reading did not believe, or pinned: one line each, for the CLI to show on stderr.
        self.notices: list[str] = []  # ``wording.Distrusted`` lines: what was not believed
        self._writer_key: signing.PublicKey | None = None  # while writing: the key the writer signs with

    # -- reading --------------------------------------------------------------------------
    def _notice(self, line: str) -> None:
        if line not in self.notices:
            self.notices.append(line)

    def trusted_key(self, checkpoints: Sequence[bytes]) -> pins.TrustedKey | None:
        """The key checkpoints must be signed by: given, the writer's own, or the published one as pinned."""
        if self._writer_key is not None:
            return pins.TrustedKey(self._writer_key, "the store's private key")
        if self.trust is not None:
            return self.trust
        pem = self.backend.read_public_key()
        if pem is None:
            if not checkpoints:
                return None
            raise StoreTrustError(
                f"{self.backend.url}: publishes no public key; pass --store-key PUB (the store's key, as you trust it)"
            )
        try:
            published = signing.parse_public_key(pem, f"{self.backend.url}: published key")
        except KeyFileError as exc:
            raise StoreTrustError(f"{exc.message}; pass --store-key PUB (the store's key, as you trust it)") from None
        return pins.check(pins.known_stores(), pins.location_of(self.backend.url), views.origin(checkpoints), published)

    def view(self) -> views.View:
        """The log as the trusted key vouches for it (``view``); what was not believed goes to ``notices``."""
        checkpoints = self.backend.read_log("checkpoints").items
        entries = self.backend.read_log("entries").items
        trusted = self.trusted_key(checkpoints)
        if trusted is None:
            return views.empty(len(entries))
        origin = views.origin(checkpoints) or self.backend.url
        cache = views.cache_path(origin, trusted.key.keyid)
        seen = views.believe(entries, checkpoints, trusted.key, cache)
        if seen.held > len(seen.records) and not seen.failed:  # a writer between its entry and its checkpoint?
            again = self.backend.read_log("checkpoints").items
            if len(again) > len(checkpoints):
                seen = views.believe(entries, again, trusted.key, cache)
        if seen.records:
            with contextlib.suppress(ValueError):  # an unreadable entry 1 is reported by ``entries``
                log.store_format([log.parse_entry(seen.records[0])], self.backend.url)
        if seen.checkpoint is not None and trusted.pin is not None:
            pins.add(pins.known_stores(), *trusted.pin, trusted.key.keyid)
            if "pinned now" in trusted.source:
                self._notice(f"{self.backend.url}: trusting keyid {trusted.key.keyid[:16]}, {trusted.source}")
        if seen.ignored is not None:
            believed = (
                f"believing the log up to tree size {len(seen.records)}" if seen.checkpoint else "believing none of it"
            )
            self._notice(
                Distrusted(
                    f"{self.backend.url}: not signed by the trusted key (keyid {trusted.key.keyid[:16]}, "
                    f"{trusted.source}): {seen.ignored}; {believed} (`detpack store verify` says more)"
                )
            )
        return seen

    def records(self) -> tuple[list[bytes], log.Checkpoint | None]:
        """The believed log records and the checkpoint covering them (refusing a format this detpack cannot read)."""
        seen = self.view()
        return list(seen.records), seen.checkpoint

    def entries(self, records: Sequence[bytes] | None = None) -> list[dict[str, Any]]:
        """The believed log's entries, parsed (``records``: those, already read)."""
        out = []
        for number, record in enumerate(self.records()[0] if records is None else records, 1):
            try:
                out.append(log.parse_entry(record))
            except ValueError:
                raise StoreError(
                    f"{self.backend.url}: log entry {number} is unreadable; run `detpack store verify`"
                ) from None
        return out

    def state(self, records: Sequence[bytes] | None = None) -> State:
        """What the believed log says; with an access policy, entries its rules refuse are not believed."""
        state, refused = governance.believe(self.entries(records))
        if refused:
            first = refused[0]
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            self._notice(Distrusted(f"{self.backend.url}: log entry {first[0] + 1} is not believed: {first[1]}{more}"))
        return state

    def find(self, state: State, ref: str) -> Item:
        """An item by name, ``sha256:HEX``, or a unique hex prefix of 7+ digits."""
        if ref in state.names:
            return state.items[state.names[ref]]
        digest = ref.removeprefix("sha256:").lower()
        if re.fullmatch(r"[0-9a-f]{7,64}", digest):
            matches = [d for d in state.items if d.startswith(digest)]
            if len(matches) == 1:
                return state.items[matches[0]]
            if len(matches) > 1:
                raise StoreError(f"{ref}: ambiguous in {self.backend.url} ({len(matches)} digests start with it)")
        raise StoreError(f"{ref}: no such name or digest in {self.backend.url} (see `detpack store log`)")

    def provenance_of(self, state: State, item: Item) -> Item | None:
        if item.kind == "provenance":
            return None
        if item.provenance in state.items:
            return state.items[item.provenance]
        linked = [p for p in state.items.values() if p.kind == "provenance" and item.digest in p.subjects]
        return linked[-1] if linked else None

    def read_provenance(self, item: Item) -> reader.Provenance:
        with self.backend.open_blob(item.digest) as f:
            data = f.read()
        return reader.read(data, f"{self.backend.url}: provenance sha256:{item.digest[:16]}")

    def resolve(self, env: str) -> Promotion:
        """What is live in ``env``: StoreTrustError when the log's last word on it is not believed (a promotion
        no checkpoint signed by the trusted key covers, or one the access policy refuses)."""
        seen = self.view()
        records = list(seen.records)
        state = self.state(records)
        matches = [p for p in state.promotions if p.env == env]
        said = None  # the last promotion to ``env`` in everything the log holds, believed or not
        for index, record in enumerate((*records, *seen.tail)):
            with contextlib.suppress(ValueError):
                entry = log.parse_entry(record)
                if entry.get("type") == "promote" and entry.get("env") == env:
                    said = (index, str(entry.get("digest", "")))
        if said is not None and (not matches or (matches[-1].index, matches[-1].digest) != said):
            believed = (
                f"the last believed promotion is sha256:{matches[-1].digest} (log entry {matches[-1].index + 1})"
                if matches
                else "no believed entry promotes anything there"
            )
            why = "no checkpoint signed by the trusted key covers it" if said[0] >= len(records) else "it is refused"
            raise StoreTrustError(
                f"{env}: log entry {said[0] + 1} of {self.backend.url} promotes sha256:{said[1][:16]}… there, but "
                f"{why}; {believed}; not resolved (run `detpack store verify`)"
            )
        if not matches:
            raise StoreError(f"{env}: nothing has been promoted to this environment in {self.backend.url}")
        return matches[-1]

    # -- writing --------------------------------------------------------------------------
    def _signing_key(self, state: State, import_key: Path | None) -> signing.PrivateKey:
        """The store's private key: imported (``init --key``), found, or made for a new store."""
        keyid = state.keyid
        if keyid is None and (pem := self.backend.read_public_key()) is not None:
            # a writer was killed after publishing the key, before logging the init entry
            keyid = signing.parse_public_key(pem, f"{self.backend.url}: published key").keyid
        if import_key is not None:
            if state.origin is not None:
                raise StoreRefusedError(
                    f"{self.backend.url}: already has a signing key (keyid {str(state.keyid)[:16]}); "
                    "a store keeps its key"
                )
            if self.keys.explicit is not None:
                raise InputError("store init: give --key KEY or --signing-key KEY, not both")
            key = signing.load_private_key(import_key)
        elif (found := self.keys.find(keyid)) is not None:
            key = signing.load_private_key(found)
            if keyid is not None and key.public.keyid != keyid:
                raise StoreError(
                    f"{found}: keyid {key.public.keyid[:16]} is not this store's key ({keyid[:16]}); "
                    "pass the key the store was created with (--signing-key KEY)"
                )
        elif keyid is None:
            key = self.keys.create()
        else:
            raise self.keys.missing(self.backend.url, keyid)
        self.backend.publish_public_key(key.public.pem())
        if import_key is not None:
            self.keys.link(import_key)  # after publishing: a refused key is not remembered
        return key

    @contextlib.contextmanager
    def _writing(self, import_key: Path | None = None, author: signing.PrivateKey | None = None) -> Iterator[_Writer]:
        with self.backend.lock():
            log.recover(self.backend)
            records, _ = log.committed_entries(self.backend)  # what the log says its key is, to find that key
            said = State()
            with contextlib.suppress(ValueError):
                first = [log.parse_entry(r) for r in records[:1]]
                log.store_format(first, self.backend.url)  # a newer format is refused before anything else
                said = replay(first)
            key = self._signing_key(said, import_key)
            self._check_head(key.public)
            self._writer_key = key.public  # the writer believes what its own key signed
            try:
                state = self.state()
                writer = _Writer(self, key, state, author or self.author)
                if state.origin is None:
                    origin = f"urn:uuid:{os.urandom(16).hex()}"
                    init = {"type": "init", "origin": origin, "keyid": key.public.keyid, "format": log.STORE_FORMAT}
                    writer.append(init)
                    pins.add(pins.known_stores(), pins.location_of(self.backend.url), origin, key.public.keyid,
                             replace=True)  # fmt: skip
                writer.finish()
                yield writer
            finally:
                self._writer_key = None

    def _check_head(self, key: signing.PublicKey) -> None:
        """Refuse to extend a log that its last checkpoint does not vouch for (a writer never signs tampering)."""
        checkpoint = log.last_checkpoint(self.backend)
        entries = self.backend.read_log("entries").items
        if checkpoint is None:
            return
        leaves = [merkle.leaf_hash(e) for e in entries]
        if len(entries) != checkpoint.size or merkle.root(leaves) != checkpoint.root or not checkpoint.verifies(key):
            raise StoreRefusedError(
                f"{self.backend.url}: the log does not match its last signed checkpoint; nothing was written "
                "(run `detpack store verify` to see what changed)"
            )

    def init(self, key_file: Path | None = None) -> signing.PublicKey:
        """Create the store (a no-op if it exists); ``key_file`` is an existing key to sign with, used in place."""
        with self._writing(import_key=key_file) as w:
            return w.key.public

    def move_key_out(self) -> Path:
        """Move a private key an older version kept inside the store to the writer's key directory."""
        with self.backend.lock():
            return self.keys.move_out()

    def push(
        self, files: Sequence[Path], provenance_path: Path | None = None, attestations: Sequence[Path] = ()
    ) -> list[Pushed]:
        inputs = [_input(f) for f in files]
        claims = [_attestation_input(a) for a in attestations]
        names: dict[str, str] = {}
        for i in inputs:
            if names.setdefault(i.name, i.digest) != i.digest:
                raise InputError(f"{i.name}: given twice with different bytes")
        prov: _Input | None = None
        build_log: _Input | None = None
        subjects: list[str] = []
        keyids: list[str] = []
        if provenance_path is not None:
            prov = _input(provenance_path)
            parsed = reader.read_file(provenance_path)
            subjects = [s.sha256 for s in parsed.subjects]
            keyids = [s.keyid for s in parsed.envelope.signatures] if parsed.envelope else []
            for i in inputs:
                if i.digest not in subjects:
                    raise InputError(f"{i.path}: not a subject of {provenance_path} (sha256:{i.digest[:16]}…)")
            log_name = reader.summarize(parsed).log_file
            if log_name is not None and (provenance_path.parent / log_name).is_file():
                build_log = _input(provenance_path.parent / log_name)  # kept with the artifacts it made
        with self._writing() as w:
            everything = [
                *inputs,
                *([prov] if prov else []),
                *([build_log] if build_log else []),
                *(c for c, _ in claims),
            ]
            for i in everything:
                w.permit({"type": "push", "name": i.name})
            for i in everything:
                bound = w.state.names.get(i.name)
                if bound is not None and bound != i.digest:
                    raise StoreRefusedError(
                        f"{i.name}: already bound to sha256:{bound[:16]}… in {self.backend.url}, and these bytes are "
                        f"sha256:{i.digest[:16]}…; names are write-once (publish a new version under a new name)"
                    )
            results = []
            if prov is not None:
                extra = {"subjects": subjects, "keyids": keyids, "signed": bool(keyids)}
                results.append(w.store_blob(prov, "provenance", extra))
            for i in inputs:
                results.append(w.store_blob(i, "push", {"provenance": prov.digest if prov else None}))
            if build_log is not None and prov is not None:
                results.append(w.store_blob(build_log, "log", {"provenance": prov.digest}))
            for claim, extra in claims:
                results.append(w.store_blob(claim, "attestation", extra))
            return results

    def tag(self, name: str, ref: str) -> bool:
        check_name(name)
        with self._writing() as w:
            item = self.find(w.state, ref)
            bound = w.state.names.get(name)
            if bound == item.digest:
                return False
            if bound is not None:
                raise StoreRefusedError(
                    f"{name}: already bound to sha256:{bound[:16]}… in {self.backend.url}; names are write-once"
                )
            w.append({"type": "tag", "name": name, "digest": item.digest})
            self.backend.bind_name(name, item.digest)
            return True

    def set_policy(
        self,
        env: str,
        policy: gate.Policy,
        roots: Sequence[signing.PrivateKey] = (),
        detached: Sequence[tuple[bytes, str]] = (),
    ) -> tuple[str, bool]:
        """Make ``policy`` the gate of promotions to ``env`` (logged; once the store has an access policy,
        signed by a threshold of its root keys, ``roots``); (its digest, whether it changed)."""
        _check_env(env)
        data = policy.self_contained()
        digest = sha256_hex(data)
        with self._writing() as w:
            if w.state.policies.get(env) == digest:
                return digest, False
            entry = w.prepare({"type": "policy", "env": env, "digest": digest, "size": len(data)}, roots, detached)
            with _temp_blob(data) as path:
                self.backend.put_blob(digest, path)
            w.commit(entry)
            return digest, True

    def set_access(
        self,
        policy: AccessPolicy,
        roots: Sequence[signing.PrivateKey],
        detached: Sequence[tuple[bytes, str]] = (),
    ) -> tuple[int, bool]:
        """Put ``policy`` in force, signed by ``roots`` and the ``detached`` root signatures (file bytes,
        source), a threshold of the root keys of the policy in force and of its own; (its log entry,
        1-based, whether it changed)."""
        with self._writing() as w:
            if w.state.access == policy:
                return w.state.access_index + 1, False
            index = w.append({"type": "access", "policy": policy.to_json()}, roots, detached)
            return index + 1, True

    def policy_change(self, subject: AccessPolicy | tuple[str, gate.Policy]) -> access.PolicyChange:
        """The change root keys sign to put ``subject`` (an access policy, or (env, gate policy)) in force
        next, for a root-key holder signing apart from the writer (nothing is written)."""
        state = self.state()
        if state.origin is None:
            raise StoreError(f"{self.backend.url}: no store here yet (`detpack store init` creates one)")
        if isinstance(subject, AccessPolicy):
            return access.access_change(state.origin, state.access_version + 1, subject.to_json())
        env, policy = subject
        _check_env(env)
        digest = sha256_hex(policy.self_contained())
        return access.gate_change(state.origin, state.gate_versions.get(env, 0) + 1, env, digest)

    def policy(self, state: State, env: str) -> gate.Policy | None:
        """The policy promotions to ``env`` must meet (None: only a verified provenance)."""
        digest = state.policies.get(env)
        if digest is None:
            return None
        with self.backend.open_blob(digest) as f:
            data = f.read()
        return gate.parse(data, f"{self.backend.url}: the {env} policy sha256:{digest[:16]}", None)

    def promote(
        self, ref: str, env: str, keys: Sequence[signing.PublicKey], *, force: bool, environ: Mapping[str, str]
    ) -> Promotion:
        _check_env(env)
        with self._writing() as w:
            item = self._promotable(w.state, ref)
            w.permit({"type": "promote", "digest": item.digest, "env": env})
            return self._promote_in(w, item, env, keys, force=force, environ=environ)

    def approve(
        self,
        ref: str,
        env: str,
        key: signing.PrivateKey,
        trusted: Sequence[signing.PublicKey] = (),
        *,
        force: bool = False,
        environ: Mapping[str, str],
    ) -> Approval:
        """Approve ``ref`` for ``env`` with ``key``; the promotion is made when this approval meets the
        environment's threshold. A promotion the environment's gate refuses leaves the approval logged
        (StoreRefusedError says so); approving what is live in ``env`` already changes nothing."""
        _check_env(env)
        with self._writing(author=key) as w:
            item = self._promotable(w.state, ref)
            if w.state.access is None:
                raise StoreRefusedError(
                    f"{self.backend.url}: has no access policy, so nobody approves; set one (store access FILE)"
                )
            w.permit({"type": "approve", "digest": item.digest, "env": env})
            rule = w.state.access.promote_rule(env)
            needed = rule.approvals if rule is not None else 1
            live = [p for p in w.state.promotions if p.env == env]
            if live and live[-1].digest == item.digest:
                return Approval(list(live[-1].approvers), needed, live[-1], already_live=True)
            name = w.author_name()
            if name not in governance.approvers(w.state, item.digest, env, None):
                w.append({"type": "approve", "digest": item.digest, "env": env})
            have = governance.approvers(w.state, item.digest, env, None)
            if len(have) < needed:
                return Approval(have, needed, None)
            try:
                return Approval(have, needed, self._promote_in(w, item, env, trusted, force=force, environ=environ))
            except StoreRefusedError as exc:
                reason = exc.message.replace("(pass --key PUB)", "(pass --trust PUB)")
                raise StoreRefusedError(
                    f"approved ({len(have)} of {needed}: {', '.join(have)}), but {reason}"
                ) from None

    def _promotable(self, state: State, ref: str) -> Item:
        item = self.find(state, ref)
        if item.kind != "artifact":
            raise StoreError(f"{ref}: a {item.kind} record, not an artifact; promote the artifact it describes")
        if item.expired:
            raise StoreRefusedError(f"{ref}: expired on {item.expired}; push it again before promoting it")
        return item

    def _promote_in(
        self,
        w: _Writer,
        item: Item,
        env: str,
        keys: Sequence[signing.PublicKey],
        *,
        force: bool,
        environ: Mapping[str, str],
    ) -> Promotion:
        policy = self.policy(w.state, env)
        gate_check = None
        verified_by = None
        if policy is not None:
            if keys:
                raise InputError(f"{env}: promotions are checked against its policy (its keys); drop --key")
            gate_check = self._check_policy(w, item, env, policy)
            problem = gate_check.problem
        else:
            problem, verified_by = self._provenance_problem(w.state, item, keys)
        if problem and not force:
            raise StoreRefusedError(
                f"sha256:{item.digest[:16]}…: {problem}; not promoted to {env} (--force promotes anyway, logged)"
            )
        entry: dict[str, Any] = {"type": "promote", "digest": item.digest, "env": env, "forced": bool(problem)}
        if gate_check is not None and gate_check.vsa:  # stored only now: a refused promotion leaves none
            with _temp_blob(gate_check.vsa) as path:
                self.backend.put_blob(sha256_hex(gate_check.vsa), path)
            entry.update(gate_check.entry)
        if problem:
            entry["reason"] = problem
        if verified_by:
            entry["verified_by"] = verified_by
        run = ci_run(environ)
        if run:
            entry["ci_run"] = run
        if w.state.access is not None:
            entry["approvals"] = governance.approvers(w.state, item.digest, env, w.author_name())
        w.append(entry)
        return w.state.promotions[-1]

    def _check_policy(self, w: _Writer, item: Item, env: str, policy: gate.Policy) -> _GateCheck:
        """Check ``item`` against the environment's policy with the evidence in the store; the verdict is
        signed with the store's key as a VSA (kept, and its digest put in the promote entry, when the
        promotion is logged)."""
        provenance, attestations = self.evidence(w.state, item)
        if provenance is None:
            return _GateCheck("has no provenance in the store (push it with --provenance)", {}, b"")
        name = item.names[0] if item.names else f"sha256:{item.digest}"
        verdict = gate.evaluate(policy, {name: item.digest}, provenance, attestations)
        statement = gate.vsa(verdict, policy, {name: item.digest}, f"{self.backend.url}#policy/{env}")
        data = signing.sign(canonical_json(statement), w.key).to_json()
        entry = {
            "policy": w.state.policies[env],
            "verdict": "PASSED" if verdict.passed else "FAILED",
            "vsa": {"digest": sha256_hex(data), "size": len(data)},
        }
        unmet = "; ".join(f"{r.name} ({r.detail})" for r in verdict.unmet)
        return _GateCheck(None if verdict.passed else f"the {env} policy is not met: {unmet}", entry, data)

    def evidence(self, state: State, item: Item) -> tuple[gate.Evidence | None, list[gate.Evidence]]:
        """What the store holds about an artifact for a policy: its provenance, its rebuild attestations."""
        linked = self.provenance_of(state, item)
        attestations = [
            self._evidence(a)
            for a in state.items.values()
            if a.kind == "attestation" and not a.expired and item.digest in a.subjects
        ]
        return (self._evidence(linked) if linked is not None else None), attestations

    def _evidence(self, item: Item) -> gate.Evidence:
        with self.backend.open_blob(item.digest) as f:
            data = f.read()
        return gate.parse_evidence(data, item.names[0] if item.names else f"sha256:{item.digest}")

    def _provenance_problem(
        self, state: State, item: Item, keys: Sequence[signing.PublicKey]
    ) -> tuple[str | None, str | None]:
        linked = self.provenance_of(state, item)
        if linked is None:
            return "has no provenance in the store (push it with --provenance)", None
        try:
            prov = self.read_provenance(linked)
        except InputError as exc:
            return f"its provenance is unreadable ({exc.message})", None
        if prov.envelope is None:
            return "its provenance is unsigned (sign it: detpack sign)", None
        if not keys:
            return "no key given to verify its signed provenance (pass --key PUB)", None
        for key in keys:
            try:
                signing.verify(prov.envelope, key)
            except VerificationError:
                continue
            if not prov.names(item.digest):
                return "it is not a subject of its provenance", None
            return None, key.keyid
        return "its provenance signature does not verify with the given key(s)", None

    def hold(self, ref: str, *, release: bool = False) -> bool:
        with self._writing() as w:
            item = self.find(w.state, ref)
            if item.held != release:
                return False
            w.permit({"type": "release" if release else "hold", "digest": item.digest})
            w.append({"type": "release" if release else "hold", "digest": item.digest})
            return True

    def expire(self, older_than: dt.timedelta, keep_last: int | None) -> list[Decision]:
        decisions: list[Decision] = []
        with self._writing() as w:
            w.permit({"type": "expire"})
            cutoff = dt.datetime.now(dt.UTC) - older_than
            live = w.state.live_in()
            artifacts = sorted(
                (i for i in w.state.items.values() if i.kind == "artifact" and not i.expired), key=lambda i: -i.index
            )
            newest: dict[str, int] = {}
            for item in artifacts:
                project = _project(item.names[0] if item.names else item.digest)
                newest[project] = rank = newest.get(project, 0) + 1
                envs = sorted(env for env, d in live.items() if d == item.digest)
                reason = None
                if item.held:
                    reason = "held"
                elif envs:
                    reason = f"live in {', '.join(envs)}"
                elif keep_last is not None and rank <= keep_last:
                    reason = f"one of the newest {keep_last} of {project}"
                elif dt.datetime.fromisoformat(item.pushed.replace("Z", "+00:00")) > cutoff:
                    reason = f"pushed {item.pushed}, within --older-than"
                if reason is not None:
                    decisions.append(Decision(item.digest, tuple(item.names), False, reason))
                    continue
                policy = {"older_than_seconds": int(older_than.total_seconds()), "keep_last": keep_last}
                w.append({"type": "expire", "digest": item.digest, "policy": policy})
                self.backend.retire_blob(item.digest)
                decisions.append(Decision(item.digest, tuple(item.names), True, f"pushed {item.pushed}"))
        return decisions


@dataclass(frozen=True)
class Approval:
    """Where an approval left a promotion."""

    approvers: list[str]  # the names of the distinct keys approving it now
    needed: int  # the environment's threshold
    promotion: Promotion | None  # made now (or earlier, when ``already_live``); None: more approvals needed
    already_live: bool = False


@dataclass(frozen=True)
class _GateCheck:
    """An environment policy's verdict on one promotion."""

    problem: str | None  # None: every rule holds
    entry: dict[str, Any]  # what the promote entry records of it (policy, verdict, VSA digest)
    vsa: bytes  # the signed VSA envelope (empty when there was no provenance to judge)


def _check_env(env: str) -> None:
    if not _ENV.match(env):
        raise InputError(f"--to {env!r}: not a usable environment name (letters, digits and ._- only)")


@contextlib.contextmanager
def _temp_blob(data: bytes) -> Iterator[Path]:
    """``data`` in a temporary file, for a backend that stores blobs from files."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="detpack-blob-") as tmp:
        path = Path(tmp) / "blob"
        path.write_bytes(data)
        yield path


def _attestation_input(path: Path) -> tuple[_Input, dict[str, Any]]:
    """A rebuild attestation to store: the file, and what its log entry says (subjects, signers)."""
    parsed = reader.read_file(path)
    RebuildClaim.of(parsed)  # refuses anything that is not a rebuild attestation
    if parsed.envelope is None:
        raise InputError(f"{path}: an unsigned statement; store the signed attestation (rebuild --attest KEY)")
    extra = {"subjects": [s.sha256 for s in parsed.subjects], "keyids": [s.keyid for s in parsed.envelope.signatures]}
    return _input(path), extra


def _project(name: str) -> str:
    return re.split(r"-\d", name, maxsplit=1)[0].lower().replace("_", "-")


class _Writer:
    """The state of one locked write, and the one way to append to the log."""

    def __init__(self, store: Store, key: signing.PrivateKey, state: State, author: signing.PrivateKey | None) -> None:
        self.store = store
        self.key = key
        self.state = state
        self.author = author

    @property
    def backend(self) -> Backend:
        return self.store.backend

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

    def store_blob(self, i: _Input, kind: str, extra: dict[str, Any]) -> Pushed:
        self.backend.put_blob(i.digest, i.path)
        item = self.state.items.get(i.digest)
        link = extra.get("provenance")
        unchanged = (
            item is not None
            and not item.expired
            and i.name in item.names
            and (kind != "push" or link is None or item.provenance == link)
        )
        if unchanged:
            return Pushed(i.name, i.digest, "artifact" if kind == "push" else kind, False)
        if kind == "push" and link is None and item is not None:
            extra = {**extra, "provenance": item.provenance}
        self.append({"type": kind, "name": i.name, "digest": i.digest, "size": i.size, **extra})
        self.backend.bind_name(i.name, i.digest)
        return Pushed(i.name, i.digest, "artifact" if kind == "push" else kind, True)
