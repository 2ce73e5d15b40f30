"""Who may do what: each log entry judged against the access policy in force at its position.

``judge`` is the one rule book: the writer asks it before it appends an entry (and refuses
with its answer, writing nothing), and ``store verify`` asks it again for every entry of the
log while replaying it, so an entry a writer holding only the store's key added by hand, or
one signed by a revoked key, is named in the audit. A store without an access policy is open:
every entry is accepted, as before.

Every answer names the rule (``push``, ``promote.ENV``, ``promote.ENV.approvals``, ``hold``,
``expire``, ``root.threshold``, ``keys``) and the log entry of the policy that holds it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
from collections.abc import Iterator
from typing import Any

from detpack.errors import ConfigError
from detpack.provenance.signing import PublicKey
from detpack.store import access
from detpack.store.access import AccessPolicy
from detpack.store.state import State, apply


def where(state: State) -> str:
    return f"the access policy of log entry {state.access_index + 1}"


def judge(state: State, entry: dict[str, Any], index: int) -> str | None:
    """The problem with ``entry`` as log entry ``index`` (0-based) after ``state``; None when it is allowed."""
    kind = entry.get("type")
    origin = state.origin or ""
    if kind == "access":
        return _judge_access(state, entry, index, origin)
    policy = state.access
    if policy is None:
        return None
    if kind == "policy":
        change = change_of(state, entry)
        if isinstance(change, str):
            return change
        return _root_threshold(state, policy, entry, change, f"the change of the {entry.get('env')} promotion policy")
    found = access.signatures(entry)
    if not found:
        return (
            f"unsigned, but {where(state)} requires every entry to be signed by its author "
            "(pass --author KEY; rule keys)"
        )
    keyid = found[0][0]
    known = policy.by_keyid()
    if keyid not in known:
        return unknown_key(state, keyid)
    name = str(policy.name_of(keyid))
    if keyid not in access.verified_signers(entry, origin, index, {keyid: known[keyid]}):
        return f"the signature of key {name} does not verify (changed by hand?)"
    if entry.get("author") != name:
        return f"signed by key {name} but names {entry.get('author')!r} as its author (changed by hand?)"
    return permits(state, name, entry)


def believe(entries: list[dict[str, Any]]) -> tuple[State, list[tuple[int, str]]]:
    """What readers believe of a log: its entries in order, less those the access policy in force at their
    position refuses (each skipped, with its 0-based index and the refusal). Without an access policy
    every entry is believed."""
    state = State()
    refused: list[tuple[int, str]] = []
    with _no_gc():  # a replay makes an object per item, none of them garbage: collecting as it goes only costs
        _believe(state, entries, refused)
    return state, refused


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _believe(state: State, entries: list[dict[str, Any]], refused: list[tuple[int, str]]) -> None:
    for index, entry in enumerate(entries):
        if state.access is None and entry.get("type") != "access":  # an open store: everything is believed
            apply(state, entry)
            continue
        problem = judge(state, entry, index)
        if problem is None:
            apply(state, entry)
        else:
            refused.append((index, problem))
            state.size += 1


def unknown_key(state: State, keyid: str) -> str:
    if keyid in state.revoked:
        name, index = state.revoked[keyid]
        return (
            f"key {name} (keyid {keyid[:16]}) was revoked by the access policy of log entry {index + 1}; "
            "what it signs from then on is refused (rule keys)"
        )
    return f"keyid {keyid[:16]} is no key of {where(state)} (rule keys)"


def author_name(state: State, key: PublicKey | None) -> str:
    """The policy's name for the author's key; ValueError with the refusal when there is none."""
    if state.access is None:
        raise ValueError("the store has no access policy")
    if key is None:
        raise ValueError(
            f"{where(state)} requires every entry to be signed by its author: pass --author KEY (rule keys)"
        )
    name = state.access.name_of(key.keyid)
    if name is None:
        raise ValueError(unknown_key(state, key.keyid))
    return name


def permits(state: State, name: str, entry: dict[str, Any]) -> str | None:
    """Whether the policy in force lets key ``name`` make ``entry`` (its signature aside)."""
    policy = state.access
    if policy is None:
        return None
    kind = entry.get("type")
    if kind in ("push", "provenance", "log", "attestation", "tag"):
        return _may_push(state, policy, name, str(entry.get("name")))
    if kind in ("promote", "approve"):
        return _may_promote(state, policy, name, entry)
    if kind in ("hold", "release", "expire"):
        rule = "expire" if kind == "expire" else "hold"
        allowed = policy.expire if kind == "expire" else policy.hold
        if name not in allowed:
            who = ", ".join(allowed) or "no key"
            return f"key {name} may not {kind}: rule {rule} of {where(state)} allows {who}"
        return None
    return f"a {kind} entry is not allowed once the store has an access policy ({where(state)})"


def _may_push(state: State, policy: AccessPolicy, name: str, target: str) -> str | None:
    own = [p for rule in policy.push if name in rule.keys for p in rule.names]
    if any(fnmatch.fnmatchcase(target, p) for p in own):
        return None
    if not own:
        return f"key {name} may not push {target}: no rule push of {where(state)} names it"
    return f"key {name} may not push {target}: rule push of {where(state)} lets {name} push {', '.join(own)} only"


def approvers(state: State, digest: str, env: str, author: str | None) -> list[str]:
    """The distinct keys (names) approving ``digest`` for ``env`` now: earlier approvals by keys still in
    force, and the author's."""
    policy = state.access
    if policy is None:
        return []
    names = [n for k in state.approvals.get((digest, env), []) if (n := policy.name_of(k)) is not None]
    if author is not None and author not in names:
        names.append(author)
    return names


def _may_promote(state: State, policy: AccessPolicy, name: str, entry: dict[str, Any]) -> str | None:
    env = str(entry.get("env"))
    verb = "approve promotions" if entry.get("type") == "approve" else "promote"
    rule = policy.promote_rule(env)
    if rule is None:
        return f"key {name} may not {verb} to {env}: {where(state)} has no rule promote.{env}"
    if name not in rule.keys:
        allowed = ", ".join(rule.keys)
        return f"key {name} may not {verb} to {env}: rule promote.{rule.env} of {where(state)} allows {allowed}"
    if entry.get("type") == "approve" and entry.get("force") is True and name not in rule.force:
        return _no_force(state, rule, name, env, "agree to force a promotion")
    if entry.get("type") == "promote":
        have = approvers(state, str(entry.get("digest")), env, name)
        have = [n for n in have if n in rule.keys]
        if len(have) < rule.approvals:
            return (
                f"{env} needs {rule.approvals} approvals by distinct keys (rule promote.{rule.env}.approvals of "
                f"{where(state)}), and has {len(have)} ({', '.join(have)}); another of {', '.join(rule.keys)} "
                f"approves it with `detpack store approve sha256:{str(entry.get('digest'))[:16]} --to {env} --key KEY`"
            )
        if entry.get("forced") is True:
            return _may_force(state, policy, rule, name, entry)
    return None


def _no_force(state: State, rule: access.PromoteRule, name: str, env: str, verb: str) -> str:
    who = ", ".join(rule.force) or "no key"
    rule_name = f"promote.{rule.env}.force"
    return f"key {name} may not {verb} to {env} past its gate: rule {rule_name} of {where(state)} allows {who}"


def _may_force(
    state: State, policy: AccessPolicy, rule: access.PromoteRule, name: str, entry: dict[str, Any]
) -> str | None:
    """A promotion past a failing gate: a permission of its own, agreed by the threshold, with a reason."""
    env, digest = str(entry.get("env")), str(entry.get("digest"))
    if name not in rule.force:
        return _no_force(state, rule, name, env, "force a promotion")
    why = entry.get("why")
    if not isinstance(why, str) or not why.strip():
        return f"a promotion forced past the {env} gate must say why (--reason TEXT)"
    agreed = [n for k in state.force_approvals.get((digest, env), []) if (n := policy.name_of(k)) in rule.force]
    if name not in agreed:
        agreed.append(name)
    if len(agreed) < rule.approvals:
        return (
            f"forcing {env} needs {rule.approvals} distinct keys of rule promote.{rule.env}.force of {where(state)} "
            f"agreeing to force it, and has {len(agreed)} ({', '.join(agreed)}); each approves it with "
            f"`detpack store approve sha256:{digest[:16]} --to {env} --key KEY --force --reason TEXT`"
        )
    return None


def force_approvers(state: State, digest: str, env: str) -> list[str]:
    """The names of the keys in force that agreed to force ``digest`` into ``env``."""
    policy = state.access
    if policy is None:
        return []
    return [n for k in state.force_approvals.get((digest, env), []) if (n := policy.name_of(k)) is not None]


def change_of(state: State, entry: dict[str, Any]) -> access.PolicyChange | str:
    """The policy change an ``access`` or ``policy`` entry makes, as root keys sign it (or the problem)."""
    origin = state.origin or ""
    if entry.get("type") == "access":
        expected = state.access_version + 1
        change = access.access_change(origin, expected, entry.get("policy") or {})
    else:
        env = str(entry.get("env"))
        expected = state.gate_versions.get(env, 0) + 1
        change = access.gate_change(origin, expected, env, str(entry.get("digest")))
    if entry.get("version") != expected:
        return (
            f"{change.subject} policy version {entry.get('version')!r}, but this is change {expected} of it "
            "(a replayed or reordered policy change)"
        )
    return change


def _root_threshold(
    state: State, policy: AccessPolicy, entry: dict[str, Any], change: access.PolicyChange, what: str
) -> str | None:
    roots = policy.root()
    signed = change.signers(entry, roots)
    if len(signed) >= policy.root_threshold:
        return None
    names = ", ".join(policy.root_keys)
    return (
        f"{what} is signed by {len(signed)} of the root keys ({names}); rule root.threshold of {where(state)} "
        f"needs {policy.root_threshold} (pass --root-key KEY or --root-signature FILE for each)"
    )


def _judge_access(state: State, entry: dict[str, Any], index: int, origin: str) -> str | None:
    try:
        new = AccessPolicy.from_json(entry.get("policy"), f"log entry {index + 1}")
    except ConfigError as exc:
        return f"an unreadable access policy ({exc.message})"
    change = change_of(state, entry)
    if isinstance(change, str):
        return change
    if state.access is not None:
        problem = _root_threshold(state, state.access, entry, change, "the access policy change")
        if problem is not None:
            return problem
    signed = change.signers(entry, new.root())
    if len(signed) < new.root_threshold:
        return (
            f"the access policy is signed by {len(signed)} of its own root keys ({', '.join(new.root_keys)}); "
            f"its rule root.threshold needs {new.root_threshold} (pass --root-key KEY or --root-signature FILE "
            "for each)"
        )
    return None
