"""``store show``: everything the store knows about one item, answered from its log and provenance."""

from __future__ import annotations

from typing import Any

from detpack.errors import DetpackError
from detpack.provenance import reader
from detpack.store.store import Store


def _log_item(state: Any, provenance: Any, name: str | None) -> dict[str, Any] | None:
    """The build log stored with the provenance (``store push`` keeps it), by name and digest."""
    if name is None:
        return None
    digest = state.names.get(name)
    stored = digest is not None and state.items[digest].kind == "log"
    return {"name": name, "digest": f"sha256:{digest}" if stored else None}


def _part(state: Any, store: Store, digest: str | None) -> dict[str, Any] | None:
    """A blob an image names: its digest, size and names, and whether the store holds it."""
    if digest is None:
        return None
    item = state.items.get(digest)
    return {
        "digest": f"sha256:{digest}",
        "size": item.size if item else None,
        "names": item.names if item else [],
        "stored": item is not None and store.backend.has_blob(digest),
    }


def describe(store: Store, ref: str) -> dict[str, Any]:
    """A JSON-ready description of the item ``ref`` (a name, a digest or a digest prefix)."""
    state = store.state()
    item = store.find(state, ref)
    live_in = sorted(env for env, digest in state.live_in().items() if digest == item.digest)
    value: dict[str, Any] = {
        "digest": f"sha256:{item.digest}",
        "kind": item.what,
        "names": item.names,
        "size": item.size,
        "pushed": {"time": item.pushed, "user": item.pushed_by, "log_entry": item.index + 1},
        "live": store.backend.has_blob(item.digest),
        "expired": item.expired,
        "held": item.held,
        "live_in": live_in,
        "promotions": [
            {
                "env": p.env,
                "time": p.time,
                "user": p.user,
                **({"author": p.author, "approvals": list(p.approvers)} if p.author else {}),
                "ci_run": p.ci_run,
                "forced": p.forced,
                "reason": p.reason,
                **({"why": p.why} if p.why else {}),
                **({"policy": f"sha256:{p.policy}", "vsa": f"sha256:{p.vsa}"} if p.vsa else {}),
            }
            for p in state.promotions
            if p.digest == item.digest
        ],
    }
    if item.kind in ("provenance", "attestation"):
        value["subjects"] = [f"sha256:{d}" for d in item.subjects]
        value["signed_by"] = item.signed_by
        return value
    if item.kind == "policy":
        value["environments"] = sorted(env for env, digest in state.policies.items() if digest == item.digest)
        return value
    if item.kind == "vsa":
        value["verdict_of"] = [
            {"env": p.env, "digest": f"sha256:{p.digest}", "log_entry": p.index + 1}
            for p in state.promotions
            if p.vsa == item.digest
        ]
        return value
    if item.media == "image":
        value["reference"] = item.reference
        value["config"] = _part(state, store, item.config)
        value["layers"] = [_part(state, store, d) for d in item.layers]
    elif item.media in ("layer", "config"):
        value["images"] = [
            {"digest": f"sha256:{d}", "names": state.items[d].names if d in state.items else []} for d in item.images
        ]
    linked = store.provenance_of(state, item, ref if ref in state.names else None)
    if linked is None:
        value["provenance"] = None
        return value
    prov: dict[str, Any] = {"digest": f"sha256:{linked.digest}", "names": linked.names, "signed_by": linked.signed_by}
    try:
        summary = reader.summarize(store.read_provenance(linked))
    except DetpackError as exc:
        prov["error"] = exc.message
    else:
        prov.update(
            builder=summary.builder,
            invocation=summary.invocation,
            started=summary.started,
            finished=summary.finished,
            source_commit=summary.source_commit,
            source_uri=summary.source_uri,
            source_dirty=summary.source_dirty,
            toolchain=dict(summary.toolchain),
            ci=dict(summary.ci) if summary.ci else None,
            references=list(summary.references),
            changes_since=summary.changes_since,
            commits=summary.commits,
            build_log=_log_item(state, linked, summary.log_file),
        )
    value["provenance"] = prov
    return value
