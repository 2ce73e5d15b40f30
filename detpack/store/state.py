"""What the log says: names, artifacts, provenance links, promotions, holds and expiries.

Pure: ``replay`` folds committed log entries (parsed JSON objects) into a ``State`` value.
Nothing about the store is known except from its log.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from detpack.errors import ConfigError
from detpack.store.access import AccessPolicy, signatures
from detpack.store.backend import NAME_RE


@dataclass(frozen=True)
class Promotion:
    index: int
    env: str
    digest: str
    time: str
    user: str
    ci_run: str | None
    forced: bool
    reason: str | None
    policy: str | None = None  # the digest of the environment's policy it was checked against
    vsa: str | None = None  # the digest of the signed VSA of that check
    author: str | None = None  # the name of the key that signed it (stores with an access policy)
    approvers: tuple[str, ...] = ()  # the names of the keys whose approvals it took effect with
    why: str | None = None  # a forced promotion: why, as its promoter said (``--reason``)


@dataclass(slots=True)
class Item:
    """One blob as the log knows it."""

    digest: str
    kind: str  # "artifact", "provenance", "attestation" (a rebuild's), "log" (a build's), "policy" or "vsa"
    size: int
    names: list[str] = field(default_factory=list)
    pushed: str = ""
    pushed_by: str = ""
    index: int = -1  # the log entry that first stored it
    provenance: str | None = None  # for artifacts: the provenance its first linking push named (never replaced)
    #: for artifacts: name -> the provenance the push that bound that name linked (each name's first link)
    links: dict[str, str] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)  # for provenance and attestations: the digests they cover
    signed_by: list[str] = field(default_factory=list)  # for provenance envelopes: keyids
    expired: str | None = None
    held: bool = False
    #: for an image's blobs (``store push oci:…``): "image" (its manifest), "layer" or "config", as first said
    media: str | None = None
    reference: str | None = None  # an image: the reference it was pushed from (first push)
    config: str | None = None  # an image: its config blob (first push)
    layers: list[str] = field(default_factory=list)  # an image: its layer blobs, in order (first push)
    images: list[str] = field(default_factory=list)  # a layer or config: the images it was pushed with

    @property
    def what(self) -> str:
        """What to call it: "image", "layer" or "config" for an image's blobs, else its kind."""
        return self.media or self.kind


@dataclass
class State:
    origin: str | None = None
    keyid: str | None = None
    items: dict[str, Item] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    promotions: list[Promotion] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)  # environment -> the digest of its policy
    format: int = 1
    access: AccessPolicy | None = None  # the access policy in force
    access_index: int = -1  # the log entry (0-based) that set it
    #: keyid -> (its name, the entry that revoked it): keys an earlier access policy named and a later one dropped
    revoked: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: (digest, environment) -> keyids that approved it, in order, since its last promotion there
    approvals: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: (digest, environment) -> keyids of those approvals that also agree to force it past the gate
    force_approvals: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: names are write-once: (0-based entry, name, the digest it is bound to, the digest the entry named)
    #: for every entry that bound a name again to other bytes (not believed; ``store verify`` names it)
    rebound: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: (0-based entry, name) for every name that is no store name (``../x``): not bound, named by verify
    bad_names: list[tuple[int, str]] = field(default_factory=list)
    #: (0-based entry, name, digest) for every tag of a digest the log never stored: not bound
    dangling: list[tuple[int, str, str]] = field(default_factory=list)
    size: int = 0  # entries applied
    access_version: int = 0  # access entries applied
    gate_versions: dict[str, int] = field(default_factory=dict)  # environment -> policy entries applied

    def live_in(self) -> dict[str, str]:
        """Environment -> the digest promoted there last."""
        live: dict[str, str] = {}
        for p in self.promotions:
            live[p.env] = p.digest
        return live


def replay(entries: list[dict[str, Any]]) -> State:
    """The store's state after ``entries`` (its log), in order."""
    state = State()
    for e in entries:
        apply(state, e)
    return state


def apply(state: State, e: dict[str, Any]) -> None:
    """Fold the next log entry into ``state``."""
    index = state.size
    state.size += 1
    kind = e.get("type")
    digest = str(e.get("digest", ""))
    if kind == "init":
        state.origin, state.keyid = e.get("origin"), e.get("keyid")
        fmt = e.get("format", 1)
        state.format = fmt if isinstance(fmt, int) and not isinstance(fmt, bool) else 1
    elif kind in ("push", "provenance", "attestation", "log"):
        _replay_push(state, e, index, digest)
    elif kind == "access":
        state.access_version += 1
        _replay_access(state, e, index)
    elif kind == "approve":
        author = _author(e)
        approvers = state.approvals.setdefault((digest, str(e.get("env"))), [])
        if author is not None and author not in approvers:
            approvers.append(author)
        forcing = state.force_approvals.setdefault((digest, str(e.get("env"))), [])
        if author is not None and e.get("force") is True and author not in forcing:
            forcing.append(author)
    elif kind == "policy":
        state.gate_versions[str(e["env"])] = state.gate_versions.get(str(e["env"]), 0) + 1
        _blob(state, e, index, digest, "policy")
        state.policies[str(e["env"])] = digest
    elif kind == "tag" and digest not in state.items:
        if isinstance(e.get("name"), str):
            state.dangling.append((index, str(e["name"]), digest))
    elif kind == "tag":
        bound = _bind(state, index, e.get("name"), digest)
        if bound and digest in state.items and e["name"] not in state.items[digest].names:
            state.items[digest].names.append(str(e["name"]))
    elif kind == "promote":
        state.approvals.pop((digest, str(e.get("env"))), None)
        state.force_approvals.pop((digest, str(e.get("env"))), None)
        vsa = e.get("vsa") if isinstance(e.get("vsa"), dict) else None
        if vsa is not None:
            _blob(state, {**e, "size": vsa.get("size", 0)}, index, str(vsa.get("digest", "")), "vsa")
        state.promotions.append(
            Promotion(
                index,
                str(e["env"]),
                digest,
                str(e.get("time", "")),
                str(e.get("user", "")),
                e.get("ci_run"),
                bool(e.get("forced", False)),
                e.get("reason"),
                e.get("policy"),
                str(vsa["digest"]) if vsa is not None else None,
                str(e["author"]) if isinstance(e.get("author"), str) else None,
                tuple(str(a) for a in e.get("approvals") or ()),
                str(e["why"]) if isinstance(e.get("why"), str) else None,
            )
        )
    elif kind in ("hold", "release") and digest in state.items:
        state.items[digest].held = kind == "hold"
    elif kind == "expire" and digest in state.items:
        state.items[digest].expired = str(e.get("time", ""))


def linked_provenance(state: State, item: Item, name: str | None = None) -> Item | None:
    """An artifact's provenance: the one the push that bound ``name`` linked, else the first one a push of
    these bytes linked, else the first stored that lists it as a subject. Later links never replace it."""
    if item.kind == "provenance":
        return None
    link = item.links.get(name) if name is not None else None
    for digest in (link, item.provenance):
        if digest is not None and digest in state.items:
            return state.items[digest]
    linked = (p for p in state.items.values() if p.kind == "provenance" and item.digest in p.subjects)
    return next(linked, None)


def _blob(state: State, e: dict[str, Any], index: int, digest: str, kind: str) -> Item:
    """The item of a blob the entry stores (made when it is new)."""
    item = state.items.get(digest)
    if item is None:
        item = state.items[digest] = Item(
            digest,
            kind,
            int(e.get("size", 0)),
            pushed=str(e.get("time", "")),
            pushed_by=str(e.get("author") or e.get("user", "")),
            index=index,
        )
    return item


def _replay_push(state: State, e: dict[str, Any], index: int, digest: str) -> None:
    """A ``push`` (an artifact), ``provenance`` or ``attestation`` entry: the item, its names, what signs or
    describes it."""
    kind = e.get("type")
    item = _blob(state, e, index, digest, "artifact" if kind == "push" else str(kind))
    item.expired = None  # pushing expired bytes again brings them back
    name = e.get("name")
    bound = _bind(state, index, name, digest)
    if bound and isinstance(name, str) and name not in item.names:
        item.names.append(name)
    if kind in ("provenance", "attestation"):
        if item.index == index:  # what a record covers and who signed it: as first stored
            item.subjects = [str(s) for s in e.get("subjects", [])]
            item.signed_by = [str(k) for k in e.get("keyids", [])]
    elif e.get("provenance"):
        link = str(e["provenance"])
        if item.provenance is None:
            item.provenance = link
        if bound and isinstance(name, str):
            item.links.setdefault(name, link)
    if kind == "push":
        _replay_media(item, e)


#: What a push entry may say a blob of an image is.
MEDIA = ("image", "layer", "config")


def _replay_media(item: Item, e: dict[str, Any]) -> None:
    """What an image push says of a blob: an image's reference, config and layers as first said; the images
    a layer or config was pushed with."""
    media = e.get("media")
    if media not in MEDIA:
        return
    if item.media is None:
        item.media = str(media)
    if media == "image" and item.media == "image" and item.reference is None:
        item.reference = str(e.get("reference", ""))
        config, layers = e.get("config"), e.get("layers")
        item.config = config if isinstance(config, str) else None
        item.layers = [str(d) for d in layers] if isinstance(layers, list) else []
    image = e.get("image")
    if media in ("layer", "config") and isinstance(image, str) and image not in item.images:
        item.images.append(image)


def _bind(state: State, index: int, name: object, digest: str) -> bool:
    """Bind ``name`` to ``digest`` as the log says; False when the entry names no usable name, or a name bound
    to other bytes already (names are write-once: the first binding is kept, the other recorded)."""
    if not isinstance(name, str):
        return False
    if not NAME_RE.fullmatch(name):
        state.bad_names.append((index, name))
        return False
    bound = state.names.get(name)
    if bound is not None and bound != digest:
        state.rebound.append((index, name, bound, digest))
        return False
    state.names[name] = digest
    return True


def _author(e: dict[str, Any]) -> str | None:
    """The keyid of an entry's (first) signature, as recorded (``governance`` checks it)."""
    found = signatures(e)
    return found[0][0] if found else None


def _replay_access(state: State, e: dict[str, Any], index: int) -> None:
    """A new access policy: in force from here; keys the previous one named and it does not are revoked."""
    with contextlib.suppress(ConfigError):  # an unreadable policy changes nothing (``governance`` reports it)
        policy = AccessPolicy.from_json(e.get("policy"), f"log entry {index + 1}")
        if state.access is not None:
            kept = policy.by_keyid()
            for name, key in state.access.keys:
                if key.keyid not in kept:
                    state.revoked[key.keyid] = (name, index)
        for keyid in policy.by_keyid():
            state.revoked.pop(keyid, None)
        state.access, state.access_index = policy, index
