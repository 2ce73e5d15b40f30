"""A store's access policy: whose keys may push which names, promote to which environment (with
how many approvals), hold and expire; rooted in a threshold of root keys.

The policy is a log entry (``{"type": "access", "policy": …}``) signed by a threshold of the
root keys of the policy in force (and of its own root keys, so a new root set agrees to it);
every later entry is signed by its author's key and judged against the policy in force at its
position (``governance``). Keys are rotated and revoked by a new policy: a key that an earlier
policy named and the new one does not is revoked from that entry on; what it signed before
stays valid.

TOML, as a user writes it (key values are PEM files relative to the policy, or inline PEM)::

    [keys]
    root-a = "root-a.pub"
    ci = "ci.pub"

    [root]
    keys = ["root-a", "root-b"]
    threshold = 2

    [[push]]
    keys = ["ci"]
    names = ["demo-*"]

    [promote.prod]           # an environment name, or an fnmatch pattern of names
    keys = ["alice", "release"]
    approvals = 2            # distinct approving keys (the promoter counts); default 1
    force = ["alice"]        # may promote past a failing gate (with --reason); default: nobody

A promotion forced past its gate needs ``approvals`` distinct keys of ``force`` that each agreed to
force it (``approve --force``, the promoter counts), and says why (``--reason``). Which rule
holds for an environment: the one named exactly, else the pattern with the longest literal
prefix (the part before its first ``*``, ``?`` or ``[``), ties to the longer pattern, then the
first in alphabetical order (``prod-*`` before ``prod*`` before ``*``).

    [hold]
    keys = ["alice"]         # hold and release

    [expire]
    keys = ["alice"]

In the log the same policy is canonical JSON with keys as raw Ed25519 hex (``to_json``).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.digest import canonical_json
from detpack.errors import ConfigError
from detpack.provenance import signing
from detpack.provenance.signing import PrivateKey, PublicKey

ENTRY_DOMAIN = b"detpack-store-entry/v1\n"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TABLES = {"keys", "root", "push", "promote", "hold", "expire"}


@dataclass(frozen=True)
class PushRule:
    keys: tuple[str, ...]
    names: tuple[str, ...]  # fnmatch patterns of store names


@dataclass(frozen=True)
class PromoteRule:
    env: str  # an environment name or pattern
    keys: tuple[str, ...]
    approvals: int
    force: tuple[str, ...] = ()  # the keys that may promote past a failing gate (each agreeing, up to approvals)

    def specificity(self) -> tuple[int, int, int]:
        """How specific the pattern is: exact names first, then the longest literal prefix, then length."""
        literal = re.split(r"[*?\[]", self.env, maxsplit=1)[0]
        return (int(literal == self.env), len(literal), len(self.env))


@dataclass(frozen=True)
class AccessPolicy:
    keys: tuple[tuple[str, PublicKey], ...]  # name -> key, sorted by name
    root_keys: tuple[str, ...]
    root_threshold: int
    push: tuple[PushRule, ...] = ()
    promote: tuple[PromoteRule, ...] = ()
    hold: tuple[str, ...] = ()
    expire: tuple[str, ...] = ()

    def key(self, name: str) -> PublicKey:
        return dict(self.keys)[name]

    def name_of(self, keyid: str) -> str | None:
        return next((n for n, k in self.keys if k.keyid == keyid), None)

    def by_keyid(self) -> dict[str, PublicKey]:
        return {k.keyid: k for _, k in self.keys}

    def root(self) -> dict[str, PublicKey]:
        """keyid -> key of the root keys."""
        return {self.key(n).keyid: self.key(n) for n in self.root_keys}

    def promote_rule(self, env: str) -> PromoteRule | None:
        """The rule for ``env``: the most specific that matches (see the module docstring)."""
        matching = [r for r in self.promote if r.env == env or fnmatch.fnmatchcase(env, r.env)]
        return max(sorted(matching, key=lambda r: r.env), key=PromoteRule.specificity, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": {n: k.raw.hex() for n, k in self.keys},
            "root": {"keys": list(self.root_keys), "threshold": self.root_threshold},
            "push": [{"keys": list(r.keys), "names": list(r.names)} for r in self.push],
            "promote": {r.env: _promote_json(r) for r in self.promote},
            "hold": {"keys": list(self.hold)},
            "expire": {"keys": list(self.expire)},
        }

    @classmethod
    def from_json(cls, value: object, source: str) -> AccessPolicy:
        """Validate a policy (its JSON form); ConfigError naming the setting and the fix."""
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: not an access policy (a table)")
        unknown = sorted(set(value) - _TABLES)
        if unknown:
            raise ConfigError(f"{source}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_TABLES))})")
        keys = _keys(value.get("keys"), source)

        def names(table: str, field: object, *, empty: bool = False, setting: str = "keys") -> tuple[str, ...]:
            if not isinstance(field, list) or not (field or empty) or not all(isinstance(n, str) for n in field):
                raise ConfigError(f"{source}: [{table}] {setting}: give a list of key names from [keys]")
            missing = [n for n in field if n not in keys]
            if missing:
                raise ConfigError(f"{source}: [{table}] {setting}: {missing[0]!r} is not a key of [keys]")
            return tuple(dict.fromkeys(field))

        root = _table(value, "root", source, {"keys", "threshold"})
        root_keys = names("root", root.get("keys"))
        threshold = _count(root.get("threshold", 1), f"{source}: [root] threshold", 1, len(root_keys))
        push = []
        for number, rule in enumerate(value.get("push", []) or [], 1):
            if not isinstance(rule, dict) or set(rule) - {"keys", "names"}:
                raise ConfigError(f"{source}: [[push]] rule {number}: give keys and names only")
            patterns = rule.get("names")
            if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise ConfigError(f"{source}: [[push]] rule {number}: names: give a list of name patterns (demo-*)")
            push.append(PushRule(names(f"push {number}", rule.get("keys")), tuple(patterns)))
        promote = []
        envs = value.get("promote", {}) or {}
        if not isinstance(envs, dict):
            raise ConfigError(f"{source}: [promote]: give one table per environment ([promote.prod])")
        for env, rule in sorted(envs.items()):
            if not isinstance(rule, dict) or set(rule) - {"keys", "approvals", "force"}:
                raise ConfigError(f"{source}: [promote.{env}]: give keys, approvals and force only")
            who = names(f"promote.{env}", rule.get("keys"))
            approvals = _count(rule.get("approvals", 1), f"{source}: [promote.{env}] approvals", 1, len(who))
            force = names(f"promote.{env}", rule.get("force", []), empty=True, setting="force")
            outside = [n for n in force if n not in who]
            if outside:
                raise ConfigError(
                    f"{source}: [promote.{env}] force: {outside[0]!r} is not one of its keys (a key that may force a "
                    "promotion must be allowed to promote)"
                )
            promote.append(PromoteRule(str(env), who, approvals, force))
        hold = names("hold", _table(value, "hold", source, {"keys"}).get("keys"), empty=True) if "hold" in value else ()
        expire = (
            names("expire", _table(value, "expire", source, {"keys"}).get("keys"), empty=True)
            if "expire" in value
            else ()
        )
        return cls(tuple(sorted(keys.items())), root_keys, threshold, tuple(push), tuple(promote), hold, expire)


def _promote_json(rule: PromoteRule) -> dict[str, Any]:
    value: dict[str, Any] = {"keys": list(rule.keys), "approvals": rule.approvals}
    if rule.force:  # absent when empty: a policy from before this setting keeps its exact JSON (and signatures)
        value["force"] = list(rule.force)
    return value


def _table(value: dict[str, Any], name: str, source: str, allowed: set[str]) -> dict[str, Any]:
    table = value.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}]: missing (give {', '.join(sorted(allowed))})")
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{source}: [{name}]: unknown setting {extra[0]!r}")
    return table


def _count(value: object, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{where} = {value!r}: give a whole number from {low} to {high} (the number of its keys)")
    return value


def _keys(value: object, source: str) -> dict[str, PublicKey]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f'{source}: [keys]: name at least the root keys (name = "KEY.pub")')
    keys: dict[str, PublicKey] = {}
    for name, raw in value.items():
        if not _NAME.match(str(name)):
            raise ConfigError(f"{source}: [keys] {name!r}: not a usable key name (letters, digits, ._@- only)")
        try:
            material = bytes.fromhex(str(raw))
        except ValueError:
            material = b""
        if len(material) != 32:
            raise ConfigError(f"{source}: [keys] {name}: not an Ed25519 public key")
        key = PublicKey(material)
        if any(k == key for k in keys.values()):
            raise ConfigError(f"{source}: [keys] {name}: the same key is named twice")
        keys[str(name)] = key
    return keys


def parse(data: bytes, source: str, base: Path) -> AccessPolicy:
    """A policy from its TOML (key files relative to ``base``)."""
    try:
        value = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not TOML ({exc})") from None
    raw = value.get("keys")
    if isinstance(raw, dict):
        value["keys"] = {name: _load_key(str(entry), base, f"{source}: [keys] {name}").raw.hex()
                         for name, entry in raw.items()}  # fmt: skip
    return AccessPolicy.from_json(value, source)


def load(path: Path) -> AccessPolicy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the access policy ({exc.strerror or exc})") from None
    return parse(data, str(path), path.parent)


def _load_key(entry: str, base: Path, where: str) -> PublicKey:
    if entry.lstrip().startswith("-----BEGIN"):
        return signing.parse_public_key(entry.encode("ascii", "replace"), where)
    return signing.load_public_key(base / entry, private_ok=False)


# -- signed entries ---------------------------------------------------------------------------


def entry_message(origin: str, index: int, entry: dict[str, Any]) -> bytes:
    """What an author signs: the store, the entry's position, and the entry without its signatures."""
    unsigned = {k: v for k, v in entry.items() if k != "signatures"}
    return ENTRY_DOMAIN + f"{origin}\n{index}\n".encode() + canonical_json(unsigned)


def sign_entry(entry: dict[str, Any], origin: str, index: int, keys: list[PrivateKey]) -> dict[str, Any]:
    message = entry_message(origin, index, entry)
    signatures = [{"keyid": k.public.keyid, "sig": base64.b64encode(k.sign(message)).decode("ascii")} for k in keys]
    return {**entry, "signatures": signatures}


def signatures(entry: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(keyid, signature) of each well-formed signature of an entry."""
    found = []
    for s in entry.get("signatures") or []:
        if isinstance(s, dict) and isinstance(s.get("keyid"), str) and isinstance(s.get("sig"), str):
            try:
                found.append((s["keyid"], base64.b64decode(s["sig"], validate=True)))
            except binascii.Error:
                continue
    return found


def verified_signers(entry: dict[str, Any], origin: str, index: int, known: dict[str, PublicKey]) -> set[str]:
    """The keyids among ``known`` whose signatures on the entry verify."""
    message = entry_message(origin, index, entry)
    return {keyid for keyid, sig in signatures(entry) if keyid in known and known[keyid].verify(sig, message)}


# -- root signatures: over a policy change, not its log position, so root-key holders sign apart ----

POLICY_DOMAIN = b"detpack-store-policy/v1\n"


@dataclass(frozen=True)
class PolicyChange:
    """What root keys sign: the store, which policy (``access`` or ``gate ENV``), its version (one more
    than the number of earlier changes of it: an old signed change cannot be replayed), and its content
    (the access policy's canonical JSON, or the gate policy's sha256)."""

    origin: str
    subject: str
    version: int
    content: bytes

    def message(self) -> bytes:
        return POLICY_DOMAIN + f"{self.origin}\n{self.subject}\n{self.version}\n".encode() + self.content

    def sign(self, key: PrivateKey) -> dict[str, str]:
        return {"keyid": key.public.keyid, "sig": base64.b64encode(key.sign(self.message())).decode("ascii")}

    def signers(self, entry: dict[str, Any], known: dict[str, PublicKey]) -> set[str]:
        message = self.message()
        return {k for k, sig in signatures(entry) if k in known and known[k].verify(sig, message)}

    def signature_file(self, key: PrivateKey) -> bytes:
        """A detached root signature, for the writer to attach (``--root-signature FILE``)."""
        value = {**self.sign(key), "origin": self.origin, "subject": self.subject, "version": self.version,
                 "sha256": hashlib.sha256(self.content).hexdigest()}  # fmt: skip
        return canonical_json(value) + b"\n"

    def read_signature_file(self, data: bytes, source: str) -> dict[str, str]:
        """The signature a file holds, refused unless it signs this very change."""
        try:
            value = json.loads(data)
            keyid, sig = str(value["keyid"]), str(value["sig"])
            signed = (value["origin"], value["subject"], value["version"], value["sha256"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{source}: not a detpack root signature (store access FILE --sign-only)") from None
        expected = (self.origin, self.subject, self.version, hashlib.sha256(self.content).hexdigest())
        if signed != expected:
            what = ("store", "policy", "version", "content")
            differs = next(w for w, a, b in zip(what, signed, expected, strict=True) if a != b)
            raise ConfigError(
                f"{source}: signs another change (its {differs} is {signed[what.index(differs)]!r}, this change's "
                f"{expected[what.index(differs)]!r}); sign this one (--sign-only)"
            )
        return {"keyid": keyid, "sig": sig}


def access_change(origin: str, version: int, policy: dict[str, Any]) -> PolicyChange:
    return PolicyChange(origin, "access", version, canonical_json(policy))


def gate_change(origin: str, version: int, env: str, digest: str) -> PolicyChange:
    return PolicyChange(origin, f"gate {env}", version, digest.encode("ascii"))
