"""``store verify``'s second look at what the log claims: promotions' verdicts and name bindings.

A promotion to an environment with a gate policy records the verdict the writer reached and the
digest of a VSA the store's key signed. Anyone holding only the store's key (or a buggy writer)
could log a PASSED verdict the VSA does not say, point at another policy, or skip the gate; so
every recorded verdict is checked again: the VSA blob is there, signed by the store's key, names
the promoted digest, the policy in force at that point and the same result, and a FAILED verdict
was promoted only as forced. An image's entry must name the config and layers its manifest names,
all stored. Names are write-once and must be store names: an entry that binds
a name again to other bytes, or binds no usable name, is named (readers never believe either).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from detpack.errors import DetpackError, VerificationError
from detpack.provenance import reader, signing
from detpack.provenance.signing import PublicKey
from detpack.store.backend import Backend, read_blob
from detpack.store.state import State, apply, linked_provenance
from detpack.verify import gate
from detpack.verify.deps_rule import about_digests


def promotions(backend: Backend, key: PublicKey, entries: list[dict[str, Any]]) -> list[str]:
    """One line per promotion whose recorded verdict does not hold up, in log order."""
    state = State()
    problems: list[str] = []
    for index, entry in enumerate(entries):
        if entry.get("type") == "promote":
            problem = _promotion(backend, key, state, entry)
            if problem is not None:
                where = (
                    f"log entry {index + 1} (promote of sha256:{str(entry.get('digest'))[:16]}… to {entry.get('env')})"
                )
                problems.append(f"{where}: {problem}")
        apply(state, entry)
    return problems


def bindings(state: State) -> list[str]:
    """The names the log binds again to other bytes, or that are no store names."""
    lines = [
        f"log entry {index + 1}: binds name {name} again, to sha256:{new[:16]}…, but it is bound to "
        f"sha256:{old[:16]}… (names are write-once: readers keep the first binding)"
        for index, name, old, new in state.rebound
    ]
    lines += [
        f"log entry {index + 1}: names {name!r}, which is no store name (not written by detpack; not bound)"
        for index, name in state.bad_names
    ]
    lines += [
        f"log entry {index + 1}: tags {name} to sha256:{digest[:16]}…, which the log never stored (not bound)"
        for index, name, digest in state.dangling
    ]
    return lines


def images(backend: Backend, state: State) -> list[str]:
    """The images whose log entry names a config or layers their manifest does not, or whose blobs the
    store does not hold (a reader follows the logged ones: they must be the manifest's)."""
    lines: list[str] = []
    for item in state.items.values():
        if item.media != "image" or item.expired:
            continue
        where = f"image {', '.join(item.names) or item.digest[:16]} (log entry {item.index + 1})"
        try:
            manifest = json.loads(read_blob(backend, item.digest))
            config = str(manifest["config"]["digest"]).removeprefix("sha256:")
            layers = [str(d["digest"]).removeprefix("sha256:") for d in manifest["layers"]]
        except DetpackError:
            continue  # a missing or changed blob is named by the blob check
        except (ValueError, KeyError, TypeError):
            lines.append(f"{where}: its manifest is no image manifest")
            continue
        if (config, layers) != (item.config, item.layers):
            lines.append(f"{where}: the log names config and layers other than its manifest's")
        lines += [
            f"{where}: blob sha256:{d[:16]}… of the image is not in the store"
            for d in dict.fromkeys([config, *layers])
            if d not in state.items or state.items[d].expired
        ]
    return lines


def _promotion(backend: Backend, key: PublicKey, state: State, entry: dict[str, Any]) -> str | None:
    env, digest = str(entry.get("env")), str(entry.get("digest"))
    gate_digest = state.policies.get(env)
    vsa = entry.get("vsa")
    forced = entry.get("forced") is True
    if gate_digest is None:
        return "records a policy verdict, but the environment had no policy then" if vsa is not None else None
    if not isinstance(vsa, dict):
        if forced:
            return None  # forced with nothing to judge (no provenance): the reason says so
        return (
            f"{env} had a policy (sha256:{gate_digest[:16]}…), but the promotion records no verdict and is not forced"
        )
    if entry.get("policy") != gate_digest:
        return (
            f"records policy sha256:{str(entry.get('policy'))[:16]}…, but the {env} policy then was "
            f"sha256:{gate_digest[:16]}…"
        )
    statement, problem = _signed_vsa(backend, key, str(vsa.get("digest", "")))
    if problem is not None:
        return problem
    predicate: dict[str, Any] = statement["predicate"] if isinstance(statement.get("predicate"), dict) else {}
    subjects = {str(s.get("digest", {}).get("sha256")) for s in statement.get("subject", []) if isinstance(s, dict)}
    said = predicate.get("verificationResult")
    policy: dict[str, Any] = predicate["policy"] if isinstance(predicate.get("policy"), dict) else {}
    if digest not in subjects:
        return "its VSA is about other artifacts, not the one promoted"
    if (policy.get("digest") or {}).get("sha256") != gate_digest:
        return f"its VSA checked another policy than the {env} policy then (sha256:{gate_digest[:16]}…)"
    if said != entry.get("verdict"):
        return f"records verdict {entry.get('verdict')!r}, but its VSA says {said!r}"
    if said != "PASSED" and not forced:
        return f"its VSA says {said}, and the promotion is not marked forced"
    if said == "PASSED" and not forced:
        return _judged_again(backend, state, entry, gate_digest=gate_digest, env=env, digest=digest)
    return None


def _judged_again(
    backend: Backend, state: State, entry: dict[str, Any], *, gate_digest: str, env: str, digest: str
) -> str | None:
    """The gate's rules checked again with the evidence the log held then, as of the promotion's time: a
    PASSED verdict that does not hold (whoever signed its VSA: every writer holds the store's key)."""
    item = state.items.get(digest)
    if item is None:
        return "promotes bytes the log never stored"
    judged = entry.get("judged_as")
    name = judged if isinstance(judged, str) and judged in item.names else (item.names[0] if item.names else None)
    try:
        policy = gate.parse(read_blob(backend, gate_digest), f"the {env} policy sha256:{gate_digest[:16]}", None)
        linked = linked_provenance(state, item, name)
        if linked is None:
            return "records a PASSED verdict, but the log held no provenance for it then"
        label = name or f"sha256:{digest}"
        provenance = gate.parse_evidence(read_blob(backend, linked.digest), label)
        about = about_digests(digest, provenance.provenance.statement)
        attestations = [
            gate.parse_evidence(read_blob(backend, a.digest), a.names[0] if a.names else a.digest)
            for a in state.items.values()
            if a.kind == "attestation" and not a.expired and about & set(a.subjects)
        ]
    except DetpackError as exc:
        return f"records a PASSED verdict that cannot be checked again ({exc.message})"
    when = _time(str(entry.get("time", "")))
    verdict = gate.evaluate(policy, {label: digest}, provenance, attestations, now=when)
    if verdict.passed:
        return None
    unmet = "; ".join(f"{r.name} ({r.detail})" for r in verdict.unmet)
    return f"records a PASSED verdict, but the {env} policy checked again with the evidence then is not met: {unmet}"


def _time(text: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _signed_vsa(backend: Backend, key: PublicKey, digest: str) -> tuple[dict[str, Any], str | None]:
    """The statement of the VSA blob ``digest``, if the store's key signed it (else the problem)."""
    try:
        data = read_blob(backend, digest)
    except (DetpackError, OSError):
        return {}, f"its VSA sha256:{digest[:16]}… is not in the store, or not as stored"
    try:
        parsed = reader.read(data, f"VSA sha256:{digest[:16]}…")
    except DetpackError as exc:
        return {}, f"its VSA is unreadable ({exc.message})"
    if parsed.envelope is None:
        return {}, "its VSA is not signed"
    try:
        signing.verify(parsed.envelope, key)
    except VerificationError:
        return {}, f"its VSA is not signed by the store's key (keyid {key.keyid[:16]})"
    return dict(parsed.statement), None
