"""The store: write-once artifacts, linked provenance, promotions and retention, all logged.

Every change is a log entry followed by a signed checkpoint, made holding the backend's lock
after dropping whatever is unsigned past the newest checkpoint its key signed (``_recover``); the log is written
before the change it records is made visible (a blob is stored before its push entry, a name
is bound after it, a blob is retired after its expire entry), and ``_finish`` completes any
such pending step, so a writer killed anywhere leaves a store that verifies. Refusals
(rebinding a name, promoting unverified provenance) happen before anything is written.

Once the store has an access policy (``set_access``), every entry is signed by its author
(``Store.author``, or the approver's key) and judged by ``governance`` before it is appended
(``Writer.prepare``); the same judge replays the log in ``store verify``.
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

from detpack.digest import canonical_json, sha256_hex
from detpack.errors import InputError, StoreError, StoreRefusedError, VerificationError
from detpack.oci.fetch import Image
from detpack.provenance import reader, signing
from detpack.store import access, governance, images, log, merkle, pins
from detpack.store import view as views
from detpack.store.access import AccessPolicy
from detpack.store.reading import Reader
from detpack.store.state import Item, Promotion, State, replay
from detpack.store.who import ci_run
from detpack.store.writer import (
    Input,
    Planned,
    Pushed,
    Writer,
    attestation_input,
    check_name,
    input_file,
    temp_blob,
)
from detpack.verify import gate

_ENV = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Decision:
    digest: str
    names: tuple[str, ...]
    expired: bool
    reason: str


class Store(Reader):
    """One store: its backend, and where a writer finds its private key (readers never need it)."""

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
    def _writing(self, import_key: Path | None = None, author: signing.PrivateKey | None = None) -> Iterator[Writer]:
        with self.backend.lock():
            first = self.backend.read_log("entries").items[:1]  # what the log says its key is, to find that key
            said = State()
            with contextlib.suppress(ValueError):
                parsed = [log.parse_entry(r) for r in first]
                log.store_format(parsed, self.backend.url)  # a newer format is refused before anything else
                said = replay(parsed)
            key = self._signing_key(said, import_key)
            if not first and not self.backend.read_log("checkpoints").items:
                with contextlib.suppress(OSError):  # a new store here: what was seen of one it replaces is void
                    views.cache_path(pins.location_of(self.backend.url), key.public.keyid).unlink()
            self._writer_key = key.public  # the writer believes what its own key signed
            try:
                self._recover()
                self._check_head(key.public)
                state = self.state()
                writer = Writer(self.backend, key, state, author or self.author)
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

    def _recover(self) -> None:
        """Drop what is not signed past the newest checkpoint the writer's key signed (an interrupted write's
        leftovers, or records a writer without the key appended); refuse a log whose signed entries changed."""
        seen = self.view(refuse_rewound=False)
        if seen.changed:
            raise StoreRefusedError(
                f"{self.backend.url}: the log does not match its last signed checkpoint; nothing was written "
                "(run `detpack store verify` to see what changed)"
            )
        self.refuse_rewound(seen)  # a writer never extends a log rolled back under it
        log.truncate_unsigned(self.backend, seen.position, len(seen.records))

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
        inputs = [input_file(f) for f in files]
        claims = [attestation_input(a) for a in attestations]
        names: dict[str, str] = {}
        for i in inputs:
            if names.setdefault(i.name, i.digest) != i.digest:
                raise InputError(f"{i.name}: given twice with different bytes")
        prov: Input | None = None
        build_log: Input | None = None
        subjects: list[str] = []
        keyids: list[str] = []
        if provenance_path is not None:
            prov = input_file(provenance_path)
            parsed = reader.read_file(provenance_path)
            subjects = [s.sha256 for s in parsed.subjects]
            keyids = [s.keyid for s in parsed.envelope.signatures] if parsed.envelope else []
            for i in inputs:
                if i.digest not in subjects:
                    raise InputError(f"{i.path}: not a subject of {provenance_path} (sha256:{i.digest[:16]}…)")
            log_name = reader.summarize(parsed).log_file
            if log_name is not None and (provenance_path.parent / log_name).is_file():
                build_log = input_file(provenance_path.parent / log_name)  # kept with the artifacts it made
        plan: list[Planned] = []
        if prov is not None:
            plan.append(Planned(prov, "provenance", {"subjects": subjects, "keyids": keyids, "signed": bool(keyids)}))
        plan += [Planned(i, "push", {"provenance": prov.digest if prov else None}) for i in inputs]
        if build_log is not None and prov is not None:
            plan.append(Planned(build_log, "log", {"provenance": prov.digest}))
        plan += [Planned(claim, "attestation", extra) for claim, extra in claims]
        with self._writing() as w:
            return w.store_all(plan)

    def push_image(self, image: Image, name: str | None = None) -> list[Pushed]:
        """Store an image by reference (``images.plan``): its provenance, config, layers, manifest and SBOMs."""
        plan = images.plan(image, name or image.name)
        with self._writing() as w:
            return w.store_all(plan)

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
            with temp_blob(data) as path:
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

    def promote(
        self,
        ref: str,
        env: str,
        keys: Sequence[signing.PublicKey],
        *,
        force: bool,
        environ: Mapping[str, str],
        reason: str | None = None,
    ) -> Promotion:
        """Promote ``ref`` to ``env``; ``force``: even past a failing gate, logged with ``reason`` (required by
        an access policy, which also decides who may force)."""
        _check_env(env)
        with self._writing() as w:
            item = self._promotable(w.state, ref)
            w.permit({"type": "promote", "digest": item.digest, "env": env})
            name = _judged_as(w.state, ref, item)
            return self._promote_in(w, item, env, keys, force=force, environ=environ, reason=reason, name=name)

    def approve(
        self,
        ref: str,
        env: str,
        key: signing.PrivateKey,
        trusted: Sequence[signing.PublicKey] = (),
        *,
        force: bool = False,
        environ: Mapping[str, str],
        reason: str | None = None,
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
            approval: dict[str, Any] = {"type": "approve", "digest": item.digest, "env": env}
            if force:  # this key agrees to force it past the gate (an access policy decides whose agreement counts)
                approval.update(force=True, **({"why": reason} if reason else {}))
            w.permit(approval)
            rule = w.state.access.promote_rule(env)
            needed = rule.approvals if rule is not None else 1
            live = [p for p in w.state.promotions if p.env == env]
            if live and live[-1].digest == item.digest:
                return Approval(list(live[-1].approvers), needed, live[-1], already_live=True)
            name = w.author_name()
            agreed = governance.force_approvers(w.state, item.digest, env)
            if name not in governance.approvers(w.state, item.digest, env, None) or (force and name not in agreed):
                w.append(approval)
            have = governance.approvers(w.state, item.digest, env, None)
            if len(have) < needed:
                return Approval(have, needed, None)
            try:
                promotion = self._promote_in(
                    w,
                    item,
                    env,
                    trusted,
                    force=force,
                    environ=environ,
                    reason=reason,
                    name=_judged_as(w.state, ref, item),
                )
                return Approval(have, needed, promotion)
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
        w: Writer,
        item: Item,
        env: str,
        keys: Sequence[signing.PublicKey],
        *,
        force: bool,
        environ: Mapping[str, str],
        reason: str | None = None,
        name: str | None = None,
    ) -> Promotion:
        """``name``: the name the artifact is judged under (its provenance link is that name's)."""
        policy = self.policy(w.state, env)
        gate_check = None
        verified_by = None
        if policy is not None:
            if keys:
                raise InputError(f"{env}: promotions are checked against its policy (its keys); drop --key")
            gate_check = self._check_policy(w, item, env, policy, name)
            problem = gate_check.problem
        else:
            problem, verified_by = self._provenance_problem(w.state, item, keys, name)
        if problem and not force:
            raise StoreRefusedError(
                f"sha256:{item.digest[:16]}…: {problem}; not promoted to {env} (--force promotes anyway, logged)"
            )
        entry: dict[str, Any] = {"type": "promote", "digest": item.digest, "env": env, "forced": bool(problem)}
        if gate_check is not None and gate_check.vsa:  # stored only now: a refused promotion leaves none
            with temp_blob(gate_check.vsa) as path:
                self.backend.put_blob(sha256_hex(gate_check.vsa), path)
            entry.update(gate_check.entry)
        if problem:
            entry["reason"] = problem
            if reason:
                entry["why"] = reason
        if verified_by:
            entry["verified_by"] = verified_by
        run = ci_run(environ)
        if run:
            entry["ci_run"] = run
        if w.state.access is not None:
            entry["approvals"] = governance.approvers(w.state, item.digest, env, w.author_name())
        w.append(entry)
        return w.state.promotions[-1]

    def _check_policy(self, w: Writer, item: Item, env: str, policy: gate.Policy, judged_as: str | None) -> _GateCheck:
        """Check ``item`` against the environment's policy with the evidence in the store; the verdict is
        signed with the store's key as a VSA (kept, and its digest put in the promote entry, when the
        promotion is logged)."""
        provenance, attestations = self.evidence(w.state, item, judged_as)
        if provenance is None:
            return _GateCheck("has no provenance in the store (push it with --provenance)", {}, b"")
        name = judged_as or f"sha256:{item.digest}"
        verdict = gate.evaluate(policy, {name: item.digest}, provenance, attestations)
        statement = gate.vsa(verdict, policy, {name: item.digest}, f"{self.backend.url}#policy/{env}")
        data = signing.sign(canonical_json(statement), w.key).to_json()
        entry = {
            "judged_as": name,
            "policy": w.state.policies[env],
            "verdict": "PASSED" if verdict.passed else "FAILED",
            "vsa": {"digest": sha256_hex(data), "size": len(data)},
        }
        unmet = "; ".join(f"{r.name} ({r.detail})" for r in verdict.unmet)
        return _GateCheck(None if verdict.passed else f"the {env} policy is not met: {unmet}", entry, data)

    def _provenance_problem(
        self, state: State, item: Item, keys: Sequence[signing.PublicKey], name: str | None = None
    ) -> tuple[str | None, str | None]:
        linked = self.provenance_of(state, item, name)
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


def _judged_as(state: State, ref: str, item: Item) -> str | None:
    """The name an artifact is promoted under: the name given, else the first it was stored under."""
    if state.names.get(ref) == item.digest:
        return ref
    return item.names[0] if item.names else None


def _check_env(env: str) -> None:
    if not _ENV.match(env):
        raise InputError(f"--to {env!r}: not a usable environment name (letters, digits and ._- only)")


def _project(name: str) -> str:
    return re.split(r"-\d", name, maxsplit=1)[0].lower().replace("_", "-")
