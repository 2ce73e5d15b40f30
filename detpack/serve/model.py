"""What the dashboard shows, as values: read once from a store, then rendered (``pages``).

A ``Snapshot`` is the store as of one checkpoint: its replayed state and log entries. Views
(``environments``, ``lineage``, ``log_page``, ``search``) are pure functions of a snapshot and
of the blobs they read through the store; nothing here writes.

An item's lineage follows what its provenance records, one link down at a time: an image's
statement names its layers (each with its own statement's inputs), a layer's names its wheels
(each with the digest of its own ``detpack build`` provenance and the source commit it
records), and a wheel's build provenance names its builder, toolchain and source. Each link is
a node; a node whose digest the store holds links to that item, and says whether its bytes are
logged, whether its provenance is signed and, with trusted keys, whether the signature verifies
(a keyid that no trusted key verifies is only claimed: ``signers``).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from detpack.errors import DetpackError
from detpack.provenance import reader, signing
from detpack.provenance.statement import IMAGE_BUILD_TYPE, LAYER_BUILD_TYPE
from detpack.store import log, merkle
from detpack.store.facts import statement_facts
from detpack.store.state import Item, Promotion, State
from detpack.store.store import Store
from detpack.wording import Distrusted

JSON = dict[str, Any]
#: How deep a lineage is followed (image -> layer -> wheel -> build -> source is 5).
MAX_DEPTH = 6


@dataclass(frozen=True)
class Inclusion:
    """An entry's inclusion proof, checked against the snapshot's signed checkpoint."""

    index: int
    tree_size: int
    proof: tuple[bytes, ...]
    checks: bool


@dataclass(frozen=True)
class Snapshot:
    """The store as of its latest checkpoint (what is derived from it is computed once, on demand)."""

    url: str
    state: State
    records: tuple[bytes, ...]
    entries: tuple[JSON, ...]
    checkpoint: log.Checkpoint | None
    #: What reading did not believe (entries or checkpoints not signed by the trusted key, entries the access
    #: policy refuses), one line each: every page shows them.
    distrusted: tuple[str, ...] = ()

    @classmethod
    def read(cls, store: Store) -> Snapshot:
        """What the store's trusted key vouches for (``Store.view``), as every other reader sees it."""
        seen = store.view()
        records = tuple(seen.records)
        state = store.state(records)
        entries = tuple(log.parse_entry(r) for r in records)
        distrusted = tuple(line for line in store.notices if isinstance(line, Distrusted))
        store.notices.clear()
        return cls(store.backend.url, state, records, entries, seen.checkpoint, distrusted)

    @property
    def size(self) -> int:
        return len(self.entries)

    @functools.cached_property
    def leaves(self) -> tuple[bytes, ...]:
        return tuple(merkle.leaf_hash(r) for r in self.records)

    @functools.cached_property
    def artifacts_newest_first(self) -> tuple[Item, ...]:
        return tuple(sorted((i for i in self.state.items.values() if i.kind == "artifact"), key=lambda i: -i.index))

    def inclusion(self, item: Item) -> Inclusion | None:
        """The inclusion proof of the entry that stored ``item`` (None without a checkpoint)."""
        if self.checkpoint is None or not 0 <= item.index < self.size:
            return None
        proof = tuple(merkle.inclusion_proof(item.index, self.leaves))
        ok = merkle.verify_inclusion(item.index, self.size, self.leaves[item.index], proof, self.checkpoint.root)
        return Inclusion(item.index, self.size, proof, ok)


@dataclass(frozen=True)
class Live:
    """What is live in one environment, and how it got there."""

    env: str
    item: Item
    promotion: Promotion
    history: int  # promotions to this environment so far
    policy: str | None  # the digest of the environment's gate policy, if it has one


def environments(snap: Snapshot) -> list[Live]:
    out = []
    for env, digest in sorted(snap.state.live_in().items()):
        promotions = [p for p in snap.state.promotions if p.env == env]
        out.append(Live(env, snap.state.items[digest], promotions[-1], len(promotions), snap.state.policies.get(env)))
    return out


def history(snap: Snapshot, env: str) -> list[Promotion]:
    """Every promotion to ``env``, newest first."""
    return [p for p in reversed(snap.state.promotions) if p.env == env]


def at_time(snap: Snapshot, env: str, when: dt.datetime) -> Promotion | None:
    """What was live in ``env`` at ``when`` (an aware datetime)."""
    found = None
    for p in snap.state.promotions:
        if p.env == env and _time(p.time) <= when:
            found = p
    return found


def _time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.max.replace(tzinfo=dt.UTC)  # an unreadable time is never "before"
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    state: str = ""  # "ok", "bad", "warn" or "" (plain)


@dataclass(frozen=True)
class Node:
    """One link of a lineage: an image, a layer, a wheel (or other artifact), a build, a source."""

    kind: str
    label: str
    digest: str | None  # sha256 hex, when the statement names one
    in_store: bool
    facts: tuple[Fact, ...] = ()
    children: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Lineage:
    root: Node
    problems: tuple[str, ...] = ()  # provenance that could not be read (named, not fatal)


@dataclass(frozen=True)
class Signers:
    """Who signed a provenance envelope, as far as the server can tell."""

    verified: tuple[str, ...]  # keyids of --trust'ed keys with a signature over the payload that verifies
    claimed: tuple[str, ...]  # every other keyid the envelope (or its log entry) names: not verified


def signers(
    envelope: reader.Envelope | None, keys: Sequence[signing.PublicKey], recorded: Sequence[str] = ()
) -> Signers:
    """The keyids ``envelope`` claims (and ``recorded``, what its log entry says it claimed), split into
    those a trusted key verifies and the rest: a keyid is only a name, so it proves nothing by itself."""
    verified = tuple(dict.fromkeys(k.keyid for k in keys if envelope is not None and signing.signed_by(envelope, k)))
    named = [s.keyid for s in envelope.signatures] if envelope is not None else []
    return Signers(verified, tuple(k for k in dict.fromkeys([*named, *recorded]) if k not in verified))


@dataclass
class _Walk:
    store: Store
    snap: Snapshot
    keys: Sequence[signing.PublicKey]
    problems: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def provenance(self, item: Item) -> tuple[Item, reader.Provenance] | None:
        linked = self.store.provenance_of(self.snap.state, item)
        if linked is None:
            return None
        try:
            return linked, self.store.read_provenance(linked)
        except DetpackError as exc:
            self.problems.append(f"provenance sha256:{linked.digest[:16]}… of {_label(item)}: {exc.message}")
            return None

    def signature(self, item: Item, linked: Item, prov: reader.Provenance) -> list[Fact]:
        if prov.envelope is None:
            return [Fact("signature", "unsigned statement", "warn")]
        found = signers(prov.envelope, self.keys, linked.signed_by)
        claimed = ", ".join(k[:16] for k in found.claimed) or "?"
        if not found.verified:
            why = "no signature verifies with a --trust'ed key" if self.keys else "the server was given no --trust key"
            state = "bad" if self.keys else "warn"
            return [Fact("signature", f"claimed by keyid {claimed}, not verified ({why})", state)]
        verified = ", ".join(k[:16] for k in found.verified)
        if not prov.names(item.digest):
            return [Fact("signature", f"verifies with {verified}, but does not name this digest", "bad")]
        facts = [Fact("signature", f"verifies with trusted key {verified}", "ok")]
        if found.claimed:
            facts.append(Fact("other signatures", f"keyid {claimed}: claimed, not verified", "warn"))
        return facts

    def stored_facts(self, item: Item) -> list[Fact]:
        facts = [Fact("log", f"entry {item.index + 1} of {self.snap.size} (covered by the signed checkpoint)", "ok")]
        if item.expired:
            facts.append(Fact("retention", f"expired {item.expired}", "warn"))
        live = sorted(env for env, d in self.snap.state.live_in().items() if d == item.digest)
        if live:
            facts.append(Fact("live in", ", ".join(live), "ok"))
        return facts

    def node(self, digest: str, label: str, kind: str, depth: int, recorded: JSON | None = None) -> Node:
        """The node for ``digest``: from the store when it holds it, else from what the parent recorded."""
        item = self.snap.state.items.get(digest)
        if item is None or depth >= MAX_DEPTH or digest in self.seen:
            return Node(kind, label, digest, item is not None, tuple(_recorded_facts(recorded)), ())
        self.seen.add(digest)
        facts = self.stored_facts(item)
        children: list[Node] = []
        found = self.provenance(item)
        if item.media is not None and kind == "artifact":
            kind = item.media
        if found is None:
            facts.append(Fact("provenance", "none in the store", "warn"))
            facts += _recorded_facts(recorded)
            if item.media == "image":  # its layers, as the push recorded them
                children = [self.node(d, f"layer {n}", "layer", depth + 1) for n, d in enumerate(item.layers, 1)]
        else:
            linked, prov = found
            facts.append(Fact("provenance", f"sha256:{linked.digest[:16]}… ({', '.join(linked.names)})"))
            facts += self.signature(item, linked, prov)
            build = _dict(prov.statement.get("predicate")).get("buildDefinition")
            build_type = _dict(build).get("buildType")
            if build_type == IMAGE_BUILD_TYPE:
                kind = "image"
                children = self.image_children(_dict(build), depth)
            elif build_type == LAYER_BUILD_TYPE:
                kind = "layer"
                children = self.layer_children(_dict(build), depth)
            else:
                children = [self.build_node(prov)]
        return Node(kind, label or _label(item), digest, True, tuple(facts), tuple(children))

    def image_children(self, build: JSON, depth: int) -> list[Node]:
        out = []
        for rd in build.get("resolvedDependencies") or []:
            if not isinstance(rd, dict):
                continue
            digest = _sha256(rd)
            inputs = _dict(rd.get("annotations")).get("inputs")
            if isinstance(inputs, list):
                node = self.node(digest, str(rd.get("name", "layer")), "layer", depth + 1) if digest else None
                if node is None or not node.children:  # not in the store: the image's record of the layer
                    kids = tuple(self.input_node(i, depth + 2) for i in inputs if isinstance(i, dict))
                    node = Node("layer", str(rd.get("name", "layer")), digest, node is not None and node.in_store,
                                node.facts if node else (), kids)  # fmt: skip
                out.append(node)
            else:
                out.append(Node("base image", str(rd.get("name", rd.get("uri", "base"))), digest,
                                digest in self.snap.state.items))  # fmt: skip
        return out

    def layer_children(self, build: JSON, depth: int) -> list[Node]:
        return [
            self.input_node(rd, depth + 1) for rd in build.get("resolvedDependencies") or [] if isinstance(rd, dict)
        ]

    def input_node(self, rd: JSON, depth: int) -> Node:
        """A layer input: a wheel (followed into the store) or a packed tree."""
        name = str(rd.get("name", "?"))
        digest = _sha256(rd)
        if name.endswith(".whl") or "source" in _dict(rd.get("annotations")):
            if digest:
                return self.node(digest, name, "wheel", depth, rd)
            return Node("wheel", name, None, False, tuple(_recorded_facts(rd)))
        commit = _dict(rd.get("digest")).get("gitCommit")
        facts = [Fact("commit", str(commit))] if commit else []
        return Node("tree", name, digest, False, tuple(facts))

    def build_node(self, prov: reader.Provenance) -> Node:
        summary = reader.summarize(prov)
        facts = [Fact("builder", summary.builder or "not recorded", "" if summary.builder else "warn")]
        if summary.started:
            facts.append(Fact("built", f"{summary.started} .. {summary.finished or '?'}"))
        if summary.toolchain:
            facts.append(Fact("toolchain", ", ".join(f"{k} {v}" for k, v in summary.toolchain)))
        deps = statement_facts(prov.statement).dependencies
        if deps:
            facts.append(Fact("build dependencies", ", ".join(f"{d.name} {d.version}" for d in deps)))
        source = Node(
            "source",
            summary.source_uri or "source",
            None,
            False,
            tuple(
                f
                for f in (
                    Fact("commit", summary.source_commit)
                    if summary.source_commit
                    else Fact("commit", "not recorded", "warn"),
                    Fact("work tree", "dirty", "bad") if summary.source_dirty else None,
                )
                if f is not None
            ),
        )
        return Node("build", summary.invocation or "build", None, False, tuple(facts), (source,))


def _recorded_facts(rd: JSON | None) -> list[Fact]:
    """What a parent statement recorded of an input the store does not hold."""
    if rd is None:
        return []
    own = _dict(rd.get("annotations"))
    facts = []
    source = _dict(own.get("source"))
    commit = _dict(source.get("digest")).get("gitCommit")
    if commit:
        facts.append(Fact("commit (as recorded)", str(commit)))
    builder = _dict(own.get("builder")).get("id")
    if builder:
        facts.append(Fact("builder (as recorded)", str(builder)))
    prov = _dict(own.get("provenance"))
    if prov:
        facts.append(Fact("build provenance (as recorded)", f"sha256:{_sha256(prov)[:16]}… ({prov.get('name', '?')})"))
    return facts


def lineage(store: Store, snap: Snapshot, item: Item, keys: Sequence[signing.PublicKey] = ()) -> Lineage:
    walk = _Walk(store, snap, keys)
    root = walk.node(item.digest, _label(item), item.what if item.media else "artifact", 0)
    return Lineage(root, tuple(walk.problems))


@dataclass(frozen=True)
class Page:
    entries: tuple[tuple[int, JSON], ...]  # (1-based number, entry), newest first
    page: int
    pages: int


def log_page(snap: Snapshot, page: int, per_page: int = 100) -> Page:
    pages = max(1, -(-snap.size // per_page))
    page = min(max(page, 1), pages)
    end = snap.size - (page - 1) * per_page
    start = max(0, end - per_page)
    numbered = tuple((i + 1, snap.entries[i]) for i in range(end - 1, start - 1, -1))
    return Page(numbered, page, pages)


_HEX = re.compile(r"^(?:sha256:)?([0-9a-f]{7,64})$")


def search(snap: Snapshot, query: str, limit: int = 200) -> list[Item]:
    """Items whose digest starts with ``query`` (7+ hex digits) or one of whose names matches it
    (a glob, or a substring when it has no glob characters)."""
    q = query.strip()
    if not q:
        return []
    found: list[Item] = []
    hexed = _HEX.match(q.lower())
    if hexed:
        found = [i for d, i in snap.state.items.items() if d.startswith(hexed.group(1))]
    pattern = q if any(c in q for c in "*?[") else f"*{q}*"
    for item in snap.state.items.values():
        if item not in found and any(fnmatch.fnmatchcase(n.lower(), pattern.lower()) for n in item.names):
            found.append(item)
    return sorted(found, key=lambda i: -i.index)[:limit]


def _label(item: Item) -> str:
    return item.names[0] if item.names else f"sha256:{item.digest[:16]}…"


@dataclass(frozen=True)
class Part:
    """A blob an image names (or an image a layer is part of), as the item page lists it."""

    label: str  # "config", "layer 2", or the image's name
    digest: str
    held: bool  # the store holds it


def image_parts(state: State, item: Item) -> tuple[Part, ...]:
    """An image's config and layers, or the images a layer or config was pushed with."""
    if item.media == "image":
        named = ([("config", item.config)] if item.config else []) + [
            (f"layer {n}", d) for n, d in enumerate(item.layers, 1)
        ]
        return tuple(Part(label, d, d in state.items) for label, d in named)
    return tuple(Part(_label(state.items[d]) if d in state.items else d[:16], d, d in state.items) for d in item.images)


def _dict(value: object) -> JSON:
    return value if isinstance(value, dict) else {}


def _sha256(rd: JSON) -> str:
    value = _dict(rd.get("digest")).get("sha256")
    return str(value) if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else ""
