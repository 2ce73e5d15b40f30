"""A release gate's policy file: parsed once, strictly, into a ``Policy`` (``gate`` evaluates it).

The format is ``gate``'s (see its docstring): trusted keys and a threshold, builders, source rules,
hermeticity, independent rebuilders, age, CI, tags, reviews and the ``[dependencies]`` table. Key
entries are paths (relative to the policy file) or the PEM text itself; ``Policy.self_contained``
writes the policy with every key inline, which is the form a store keeps.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from detpack.atomic import read_input
from detpack.digest import sha256_hex
from detpack.errors import ConfigError
from detpack.provenance import signing
from detpack.provenance.signing import PublicKey
from detpack.verify.deps_rule import DependencyRule, parse_rule

_KEYS = {
    "version",
    "keys",
    "threshold",
    "builders",
    "source-repository",
    "source-refs",
    "source-commits",
    "require-hermetic",
    "require-reproduced",
    "rebuilder-keys",
    "max-age",
    "require-ci",
    "require-tag",
    "require-pull-request",
    "dependencies",
}
_AGE = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class TrustedKey:
    key: PublicKey
    label: str  # the key file's name, or "keyid HEX16" for one given inline


@dataclass(frozen=True)
class Policy:
    source: str  # where it was read from, for messages
    sha256: str  # of the bytes it was read from
    keys: tuple[TrustedKey, ...]
    threshold: int
    builders: tuple[str, ...]
    repository: str | None
    refs: tuple[str, ...]  # fnmatch patterns over full ref names
    commits: tuple[str, ...]  # lower-case hex prefixes
    require_hermetic: bool
    require_reproduced: int
    rebuilder_keys: tuple[TrustedKey, ...]
    max_age: dt.timedelta | None
    require_ci: bool = False  # built by a CI run (its run URL recorded)
    require_tag: bool = False  # from a release tag (the CI ref, or a tag at the commit)
    require_pull_request: bool = False  # the built commit is a reviewed change (``review.pull_request``)
    dependencies: DependencyRule | None = None  # [dependencies]: the evidence every shipped wheel must carry

    def self_contained(self) -> bytes:
        """The policy as TOML with every key inline (what a store keeps: it names no local file)."""
        value: dict[str, Any] = {
            "version": 1,
            "keys": [k.key.pem().decode("ascii") for k in self.keys],
            "threshold": self.threshold,
        }
        if self.builders:
            value["builders"] = list(self.builders)
        if self.repository is not None:
            value["source-repository"] = self.repository
        if self.refs:
            value["source-refs"] = list(self.refs)
        if self.commits:
            value["source-commits"] = list(self.commits)
        value["require-hermetic"] = self.require_hermetic
        if self.require_reproduced:
            value["require-reproduced"] = self.require_reproduced
        if self.rebuilder_keys:
            value["rebuilder-keys"] = [k.key.pem().decode("ascii") for k in self.rebuilder_keys]
        if self.max_age is not None:
            value["max-age"] = f"{int(self.max_age.total_seconds())}s"
        for name, on in (
            ("require-ci", self.require_ci),
            ("require-tag", self.require_tag),
            ("require-pull-request", self.require_pull_request),
        ):
            if on:
                value[name] = True
        if self.dependencies is not None:
            value["dependencies"] = self.dependencies.to_toml()
        return tomli_w.dumps(value).encode("utf-8")


def load(path: Path) -> Policy:
    return parse(read_input(path, "policy file"), str(path), path.parent)


def parse(data: bytes, source: str, base: Path | None) -> Policy:
    """A policy from TOML bytes; key paths resolve against ``base`` (None: keys must be inline)."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{source}: {why}")

    try:
        value = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"not a TOML policy ({exc})") from None
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise bad(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    if value.get("version", 1) != 1:
        raise bad(f"version {value.get('version')!r}: this detpack reads policy version 1")

    def strings(name: str) -> tuple[str, ...]:
        got = value.get(name, [])
        if not isinstance(got, list) or not all(isinstance(x, str) and x for x in got):
            raise bad(f"{name} must be a list of strings")
        return tuple(got)

    def integer(name: str, default: int, least: int) -> int:
        got = value.get(name, default)
        if not isinstance(got, int) or isinstance(got, bool) or got < least:
            raise bad(f"{name} must be a whole number of at least {least}")
        return got

    keys = tuple(_key(entry, n, base, source) for n, entry in enumerate(strings("keys"), 1))
    if not keys:
        raise bad("keys: name at least one trusted public key (a path to KEY.pub, or its PEM text)")
    threshold = integer("threshold", 1, 1)
    if threshold > len(keys):
        raise bad(f"threshold {threshold} is more than the {len(keys)} trusted keys can give")
    reproduced = integer("require-reproduced", 0, 0)
    rebuilders = tuple(_key(entry, n, base, source) for n, entry in enumerate(strings("rebuilder-keys"), 1))
    if reproduced > len(rebuilders):
        raise bad(f"require-reproduced {reproduced} needs at least {reproduced} rebuilder-keys (has {len(rebuilders)})")
    commits = strings("source-commits")
    for commit in commits:
        if not re.fullmatch(r"[0-9a-fA-F]{7,64}", commit):
            raise bad(f"source-commits: {commit!r} is not 7 to 64 hex digits of a commit id")
    repository = value.get("source-repository")
    if repository is not None and (not isinstance(repository, str) or not repository):
        raise bad("source-repository must be a URL string")
    flags = {}
    for name in ("require-hermetic", "require-ci", "require-tag", "require-pull-request"):
        flags[name] = value.get(name, False)
        if not isinstance(flags[name], bool):
            raise bad(f"{name} must be true or false")
    return Policy(
        source=source,
        sha256=sha256_hex(data),
        keys=keys,
        threshold=threshold,
        builders=strings("builders"),
        repository=repository,
        refs=strings("source-refs"),
        commits=tuple(c.lower() for c in commits),
        require_hermetic=flags["require-hermetic"],
        require_reproduced=reproduced,
        rebuilder_keys=rebuilders,
        max_age=_age(value.get("max-age"), source),
        require_ci=flags["require-ci"],
        require_tag=flags["require-tag"],
        require_pull_request=flags["require-pull-request"],
        dependencies=_dependencies(value, bad, len(rebuilders)),
    )


def _dependencies(value: dict[str, Any], bad: Any, rebuilders: int) -> DependencyRule | None:
    if "dependencies" not in value:
        return None
    rule = parse_rule(value["dependencies"], bad)
    if rule.require_reproduced > max(1, rebuilders):
        raise bad(
            f"dependencies.require-reproduced {rule.require_reproduced} needs at least that many rebuilder-keys "
            f"(has {rebuilders})"
        )
    return rule


def _key(entry: str, number: int, base: Path | None, source: str) -> TrustedKey:
    if entry.lstrip().startswith("-----BEGIN"):
        key = signing.parse_public_key(entry.encode("ascii", "replace"), f"{source}: key {number}")
        return TrustedKey(key, f"keyid {key.keyid[:16]}")
    if base is None:
        raise ConfigError(f"{source}: key {entry!r} is a path; a stored policy carries its keys inline")
    path = base / entry
    return TrustedKey(signing.load_public_key(path, private_ok=False), path.name)


def _age(text: object, source: str) -> dt.timedelta | None:
    if text is None:
        return None
    match = _AGE.match(str(text).strip()) if isinstance(text, str | int) and not isinstance(text, bool) else None
    if match is None:
        raise ConfigError(f'{source}: max-age {text!r}: give a duration such as "90d", "12h", "30m" or "45s"')
    return dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
