"""The ``[dependencies]`` rule of a policy: every wheel a layer or an image ships carries evidence.

::

    [dependencies]
    require = "reproduced-or-built"      # each wheel built here or reproduced ("any": only the counts below)
    allow-unverified = ["certifi"]       # projects that may stay unverified, by name
    max-unverified = 0                   # how many others may
    require-reproduced = 2               # with rebuilder-keys: distinct rebuilders that must attest each one

An image layer its statement records without inputs (one ``detpack image --layer`` was given with no
provenance beside it) counts as one unverified input, named by its file name: what it installs is not
known. The states are read from the signed statement itself: a wheel's ``annotations.evidence.state``
(what a closure report found, copied in by ``layer --evidence``), "built here" for a wheel whose own
build record the layer found beside it, else unverified ("no evidence recorded"). When the policy
names ``rebuilder-keys``, the statement's word is not enough for "reproduced": a wheel counts as
reproduced only when an attestation signed by one of those keys (given with ``--attestation``, or
held by the store) claims its exact bytes; otherwise it is unverified ("claimed reproduced, no
attestation by a rebuilder key"); ``require-reproduced = N`` asks for N distinct rebuilder keys (the
independent rebuilders of ``detpack rebuilder``), default 1. A *different*
wheel never passes; an unverified one passes only allowed by name or within the count. The rule
fails, naming each wheel, otherwise; a statement that records no wheel (a wheel's own build) fails it
too, since there is nothing to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

REQUIRE = ("reproduced-or-built", "any")
#: How bad a state is (any other word: as unverified), for a wheel a statement lists twice.
_WORSE = {"built here": 0, "reproduced": 1, "unverified": 2, "different": 3}


@dataclass(frozen=True)
class DependencyRule:
    require: str  # one of REQUIRE
    allow_unverified: tuple[str, ...]  # canonical project names
    max_unverified: int
    require_reproduced: int = 1  # with rebuilder-keys: distinct trusted rebuilders per reproduced wheel

    def to_toml(self) -> dict[str, Any]:
        return {
            "require": self.require,
            "allow-unverified": list(self.allow_unverified),
            "max-unverified": self.max_unverified,
            "require-reproduced": self.require_reproduced,
        }


def parse_rule(value: object, bad: Callable[[str], Exception]) -> DependencyRule:
    if not isinstance(value, dict):
        raise bad("dependencies must be a table ([dependencies])")
    known = {"require", "allow-unverified", "max-unverified", "require-reproduced"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise bad(f"dependencies: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    require = value.get("require", "reproduced-or-built")
    if require not in REQUIRE:
        raise bad(f"dependencies.require {require!r}: give one of {', '.join(REQUIRE)}")
    allowed = value.get("allow-unverified", [])
    if not isinstance(allowed, list) or not all(isinstance(x, str) and x for x in allowed):
        raise bad("dependencies.allow-unverified must be a list of project names")
    most = value.get("max-unverified", 0)
    if not isinstance(most, int) or isinstance(most, bool) or most < 0:
        raise bad("dependencies.max-unverified must be a whole number of at least 0")
    times = value.get("require-reproduced", 1)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise bad("dependencies.require-reproduced must be a whole number of at least 1")
    return DependencyRule(str(require), tuple(canonicalize_name(x) for x in allowed), most, times)


@dataclass(frozen=True)
class Shipped:
    file: str  # the wheel's file name
    sha256: str  # the wheel's, as the statement records it
    name: str  # canonical project name
    state: str  # built here, reproduced, different, unverified
    reason: str


def shipped_wheels(statement: Any) -> list[Shipped]:
    """Every wheel a layer or an image statement records, with the state its evidence gives (each file and sha256
    once, with the worst state said of it)."""
    build = statement.get("predicate", {}).get("buildDefinition", {}) if isinstance(statement, dict) else {}
    inputs: list[Any] = []
    found: dict[tuple[str, str], Shipped] = {}
    for rd in build.get("resolvedDependencies") or []:
        annotations = rd.get("annotations") if isinstance(rd, dict) else None
        if isinstance(annotations, dict) and isinstance(annotations.get("inputs"), list):
            inputs += annotations["inputs"]  # an image: each layer's inputs
        elif isinstance(annotations, dict) and "diffID" in annotations:
            # an image's added layer with no statement of its own: what it installs is unknown, never skipped
            layer, sha256 = str(rd.get("name", "")), str((rd.get("digest") or {}).get("sha256", ""))
            why = "an image layer with no provenance of its own: the wheels it installs are not recorded"
            found[(layer, sha256)] = Shipped(layer, sha256, canonicalize_name(layer), "unverified", why)
        else:
            inputs.append(rd)
    for rd in inputs:
        file = str(rd.get("name", "")) if isinstance(rd, dict) else ""
        if not file.endswith(".whl"):
            continue
        try:
            name: str = canonicalize_name(parse_wheel_filename(file)[0])
        except InvalidWheelFilename:
            name = file
        own = rd.get("annotations") if isinstance(rd.get("annotations"), dict) else {}
        evidence = own.get("evidence")
        if isinstance(evidence, dict) and isinstance(evidence.get("state"), str):
            state, reason = evidence["state"], str(evidence.get("reason", ""))
        elif isinstance(own.get("provenance"), dict):
            state, reason = "built here", "its own build record"
        else:
            state, reason = "unverified", "no evidence recorded (make the layer with --evidence REPORT)"
        sha256 = str((rd.get("digest") or {}).get("sha256", ""))
        # Each (file, bytes) once: other bytes under a name already seen (another layer's) are judged too,
        # and the same bytes said twice keep the worse state, so an entry never hides the one after it.
        seen = found.setdefault((file, sha256), Shipped(file, sha256, name, state, reason))
        if _WORSE.get(state, 2) > _WORSE.get(seen.state, 2):
            found[(file, sha256)] = Shipped(file, sha256, name, state, reason)
    return list(found.values())


def wheel_digests(statement: Any) -> set[str]:
    """The sha256 of every wheel a layer or image statement records (what attestations about them name)."""
    return {w.sha256 for w in shipped_wheels(statement) if w.sha256}


def judge(
    rule: DependencyRule,
    statement: Any,
    reproduced_by: Mapping[str, Sequence[str]] | None = None,
    differed_by: Mapping[str, Sequence[str]] | None = None,
) -> tuple[bool, str]:
    """(passed, one phrase naming every wheel that fails it, and the counts). ``reproduced_by``: sha256 -> the
    trusted rebuilders whose attestations claim those bytes (None: the policy names no rebuilder keys);
    ``differed_by``: those whose attestations say a rebuild gave other bytes, which makes the wheel
    different whatever the statement says (a trusted rebuilder's disagreement is never outvoted)."""
    wheels = shipped_wheels(statement)
    if reproduced_by is not None:
        need = rule.require_reproduced
        against = differed_by or {}

        def proven(w: Shipped) -> Shipped:
            keys = sorted(set(reproduced_by.get(w.sha256, ())))
            disagree = sorted(set(against.get(w.sha256, ())))
            if disagree:
                why = f"a rebuild by {', '.join(disagree)} gave other bytes"
                return Shipped(w.file, w.sha256, w.name, "different", why)
            if w.state != "reproduced" or len(keys) >= need:
                return w
            if not keys:
                why = "claimed reproduced, but no attestation by a rebuilder key of the policy claims these bytes"
            else:
                why = f"reproduced by {len(keys)} of {need} rebuilder keys required ({', '.join(keys)})"
            return Shipped(w.file, w.sha256, w.name, "unverified", why)

        wheels = [proven(w) for w in wheels]
    if not wheels:
        return False, "the provenance records no installed wheel (the rule applies to layers and images)"
    counts = {
        s: sum(1 for w in wheels if w.state == s) for s in ("built here", "reproduced", "different", "unverified")
    }
    said = ", ".join(f"{n} {s}" for s, n in counts.items())
    problems = [f"{w.file}: different ({w.reason})" for w in wheels if w.state == "different"]
    unverified = [w for w in wheels if w.state not in ("built here", "reproduced", "different")]
    if rule.require == "reproduced-or-built":
        rest = [w for w in unverified if w.name not in rule.allow_unverified]
        if len(rest) > rule.max_unverified:
            problems += [f"{w.file}: unverified ({w.reason}), not allowed" for w in rest]
    if problems:
        return False, f"{len(wheels)} wheels: {said}; " + "; ".join(problems)
    allowed = [w.name for w in unverified if w.name in rule.allow_unverified]
    note = f" (unverified allowed by name: {', '.join(sorted(set(allowed)))})" if allowed else ""
    return True, f"{len(wheels)} wheels: {said}{note}"


def about_digests(digest: str, statement: Any | None) -> set[str]:
    """The digests whose rebuild attestations a policy may use for an artifact: its own, and each wheel its
    (layer's or image's) statement records as shipped, whose trusted rebuilders' claims the rule counts."""
    return {digest} | (wheel_digests(statement) if statement is not None else set())
