"""``store verify``'s second look at what the log claims: promotions' verdicts and name bindings.

A promotion to an environment with a gate policy records the verdict the writer reached and the
digest of a VSA the store's key signed. Anyone holding only the store's key (or a buggy writer)
could log a PASSED verdict the VSA does not say, point at another policy, or skip the gate; so
every recorded verdict is checked again: the VSA blob is there, signed by the store's key, names
the promoted digest, the policy in force at that point and the same result, and a FAILED verdict
was promoted only as forced. Names are write-once and must be store names: an entry that binds
a name again to other bytes, or binds no usable name, is named (readers never believe either).
"""

from __future__ import annotations

from typing import Any

from detpack.errors import DetpackError, VerificationError
from detpack.provenance import reader, signing
from detpack.provenance.signing import PublicKey
from detpack.store.backend import Backend
from detpack.store.state import State, apply


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
    return lines


def _promotion(backend: Backend, key: PublicKey, state: State, entry: dict[str, Any]) -> str | None:
    env, digest = str(entry.get("env")), str(entry.get("digest"))
    gate = state.policies.get(env)
    vsa = entry.get("vsa")
    forced = entry.get("forced") is True
    if gate is None:
        return "records a policy verdict, but the environment had no policy then" if vsa is not None else None
    if not isinstance(vsa, dict):
        if forced:
            return None  # forced with nothing to judge (no provenance): the reason says so
        return f"{env} had a policy (sha256:{gate[:16]}…), but the promotion records no verdict and is not forced"
    if entry.get("policy") != gate:
        return (
            f"records policy sha256:{str(entry.get('policy'))[:16]}…, but the {env} policy then was sha256:{gate[:16]}…"
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
    if (policy.get("digest") or {}).get("sha256") != gate:
        return f"its VSA checked another policy than the {env} policy then (sha256:{gate[:16]}…)"
    if said != entry.get("verdict"):
        return f"records verdict {entry.get('verdict')!r}, but its VSA says {said!r}"
    if said != "PASSED" and not forced:
        return f"its VSA says {said}, and the promotion is not marked forced"
    return None


def _signed_vsa(backend: Backend, key: PublicKey, digest: str) -> tuple[dict[str, Any], str | None]:
    """The statement of the VSA blob ``digest``, if the store's key signed it (else the problem)."""
    try:
        with backend.open_blob(digest) as f:
            data = f.read()
    except (DetpackError, OSError):
        return {}, f"its VSA sha256:{digest[:16]}… is not in the store"
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
