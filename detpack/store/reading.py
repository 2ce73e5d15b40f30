"""Reading a store: what its log says, as the store's trusted key vouches for it.

Every reader works from ``Reader.view``: the entries covered by the newest checkpoint that
verifies with the trusted key (``--store-key``, ``[tool.detpack] store-key``, the writer's own
key while it writes, or the published key as pinned at first use: ``pins``) and matches them
(``view``). ``state`` folds those entries, less what the access policy refuses
(``governance.believe``). What was not believed is said in ``notices``, for the CLI to show.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any

from detpack.errors import KeyFileError, StoreError, StoreTrustError
from detpack.provenance import reader, signing
from detpack.store import governance, log, pins
from detpack.store import view as views
from detpack.store.backend import Backend, read_blob
from detpack.store.keys import StoreKeys
from detpack.store.state import Item, Promotion, State, linked_provenance
from detpack.verify import gate
from detpack.verify.deps_rule import about_digests
from detpack.wording import Distrusted


class Reader:
    """A store as its readers see it (``Store`` adds the writes)."""

    def __init__(
        self,
        backend: Backend,
        keys: StoreKeys,
        author: signing.PrivateKey | None = None,
        trust: pins.TrustedKey | None = None,
    ) -> None:
        self.backend = backend
        self.keys = keys
        #: The key that signs the entries this writer makes (required once the store has an access policy).
        self.author = author
        #: The store key readers believe (None: the published key, pinned at first use; see ``pins``).
        self.trust = trust
        #: The key the last ``view`` believed checkpoints signed by.
        self.trusted: pins.TrustedKey | None = None
        #: The entries the last ``state`` did not believe (0-based): the access policy refused them.
        self.refused_entries: tuple[int, ...] = ()
        #: What reading did not believe, or pinned: one line each, for the CLI to show on stderr.
        self.notices: list[str] = []  # ``wording.Distrusted`` lines: what was not believed
        self._writer_key: signing.PublicKey | None = None  # while writing: the key the writer signs with

    # -- reading --------------------------------------------------------------------------
    def _notice(self, line: str) -> None:
        if line not in self.notices:
            self.notices.append(line)

    def trusted_key(self, checkpoints: Sequence[bytes]) -> pins.TrustedKey | None:
        """The key checkpoints must be signed by: given, the writer's own, or the published one as pinned."""
        if self._writer_key is not None:
            return pins.TrustedKey(self._writer_key, "the store's private key")
        if self.trust is not None:
            return self.trust
        pem = self.backend.read_public_key()
        if pem is None:
            if not checkpoints:
                return None
            raise StoreTrustError(
                f"{self.backend.url}: publishes no public key; pass --store-key PUB (the store's key, as you trust it)"
            )
        try:
            published = signing.parse_public_key(pem, f"{self.backend.url}: published key")
        except KeyFileError as exc:
            raise StoreTrustError(f"{exc.message}; pass --store-key PUB (the store's key, as you trust it)") from None
        return pins.check(pins.known_stores(), pins.location_of(self.backend.url), published)

    def view(self, *, refuse_rewound: bool = True) -> views.View:
        """The log as the trusted key vouches for it (``view``); what was not believed goes to ``notices``."""
        checkpoints = self.backend.read_log("checkpoints").items
        entries = self.backend.read_log("entries").items
        trusted = self.trusted_key(checkpoints)
        if trusted is None:
            return views.empty(len(entries))
        self.trusted = trusted
        location = pins.location_of(self.backend.url)
        cache = views.cache_path(location, trusted.key.keyid)
        seen = views.believe(entries, checkpoints, trusted.key, cache)
        if seen.held > len(seen.records) and not seen.failed:  # a writer between its entry and its checkpoint?
            again = self.backend.read_log("checkpoints").items
            if len(again) > len(checkpoints):
                seen = views.believe(entries, again, trusted.key, cache)
        if seen.records:
            with contextlib.suppress(ValueError):  # an unreadable entry 1 is reported by ``entries``
                log.store_format([log.parse_entry(seen.records[0])], self.backend.url)
        if refuse_rewound:
            self.refuse_rewound(seen)
        if seen.checkpoint is not None:
            self._check_origin(seen, trusted, location)
        if seen.ignored is not None:
            believed = (
                f"believing the log up to tree size {len(seen.records)}" if seen.checkpoint else "believing none of it"
            )
            self._notice(
                Distrusted(
                    f"{self.backend.url}: not signed by the trusted key (keyid {trusted.key.keyid[:16]}, "
                    f"{trusted.source}): {seen.ignored}; {believed} (`detpack store verify` says more)"
                )
            )
        return seen

    def refuse_rewound(self, seen: views.View) -> None:
        """StoreTrustError when the log no longer extends what this reader verified before (``View.rewound``)."""
        if seen.rewound is None or self.trusted is None:
            return
        said = f": {seen.ignored}" if seen.ignored else ""
        cache = views.cache_path(pins.location_of(self.backend.url), self.trusted.key.keyid)
        raise StoreTrustError(
            f"{self.backend.url}: the log no longer extends the tree of size {seen.rewound} this reader verified "
            f"before{said}; it was rolled back or rewritten (`detpack store verify` says more; if the store was "
            f"replaced on purpose, delete {cache})"
        )

    def _check_origin(self, seen: views.View, trusted: pins.TrustedKey, location: str) -> None:
        """The verified checkpoint's origin is the init entry's, and the one pinned for this store."""
        assert seen.checkpoint is not None
        origin = seen.checkpoint.origin
        with contextlib.suppress(ValueError, IndexError):
            init = log.parse_entry(seen.records[0])
            if init.get("type") == "init" and init.get("origin") != origin:
                raise StoreTrustError(
                    f"{self.backend.url}: its checkpoints are of origin {origin}, its first entry names "
                    f"{init.get('origin')}; run `detpack store verify`"
                )
        if self._writer_key is None and self.trust is None:
            pins.settle(pins.known_stores(), location, trusted, origin)
            if trusted.pin is not None:
                self._notice(f"{self.backend.url}: trusting keyid {trusted.key.keyid[:16]}, {trusted.source}")

    def records(self) -> tuple[list[bytes], log.Checkpoint | None]:
        """The believed log records and the checkpoint covering them (refusing a format this detpack cannot read)."""
        seen = self.view()
        return list(seen.records), seen.checkpoint

    def entries(self, records: Sequence[bytes] | None = None) -> list[dict[str, Any]]:
        """The believed log's entries, parsed (``records``: those, already read)."""
        out = []
        for number, record in enumerate(self.records()[0] if records is None else records, 1):
            try:
                out.append(log.parse_entry(record))
            except ValueError:
                raise StoreError(
                    f"{self.backend.url}: log entry {number} is unreadable; run `detpack store verify`"
                ) from None
        return out

    def state(self, records: Sequence[bytes] | None = None) -> State:
        """What the believed log says; with an access policy, entries its rules refuse are not believed."""
        state, refused = governance.believe(self.entries(records))
        self.refused_entries = tuple(index for index, _ in refused)
        if refused:
            first = refused[0]
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            self._notice(Distrusted(f"{self.backend.url}: log entry {first[0] + 1} is not believed: {first[1]}{more}"))
        return state

    def find(self, state: State, ref: str) -> Item:
        """An item by name, ``sha256:HEX``, or a unique hex prefix of 7+ digits."""
        digest = ref.removeprefix("sha256:").lower()
        hexlike = re.fullmatch(r"[0-9a-f]{7,64}", digest) is not None
        if ref in state.names:
            named = state.names[ref]
            if hexlike and any(d.startswith(digest) and d != named for d in state.items):
                raise StoreError(
                    f"{ref}: both a name and the start of another digest in {self.backend.url}; give sha256:HEX"
                )
            return state.items[named]
        if hexlike:
            matches = [d for d in state.items if d.startswith(digest)]
            if len(matches) == 1:
                return state.items[matches[0]]
            if len(matches) > 1:
                raise StoreError(f"{ref}: ambiguous in {self.backend.url} ({len(matches)} digests start with it)")
        raise StoreError(f"{ref}: no such name or digest in {self.backend.url} (see `detpack store log`)")

    def provenance_of(self, state: State, item: Item, name: str | None = None) -> Item | None:
        """An artifact's provenance (``state.linked_provenance``)."""
        return linked_provenance(state, item, name)

    def read_provenance(self, item: Item) -> reader.Provenance:
        data = read_blob(self.backend, item.digest)
        return reader.read(data, f"{self.backend.url}: provenance sha256:{item.digest[:16]}")

    def refused(self, records: Sequence[bytes]) -> frozenset[int]:
        """The (0-based) entries of ``records`` the access policy in force at their position refuses (none
        before the log sets one)."""
        # a cheap superset of the logs with an access entry: one spelled with escapes is parsed, not skipped
        if not any(b'"access"' in r or b"\\u" in r for r in records):
            return frozenset()
        return frozenset(index for index, _ in governance.believe(self.entries(records))[1])

    def resolve(self, env: str) -> Promotion:
        """What is live in ``env``: StoreTrustError when the log's last word on it is not believed (a promotion
        no checkpoint signed by the trusted key covers, or one the access policy refuses)."""
        seen = self.view()
        records = list(seen.records)
        state = self.state(records)
        matches = [p for p in state.promotions if p.env == env]
        # the last promotion to ``env`` in everything the log holds, believed or not: the believed one, or a
        # later one among the entries not believed (refused by the access policy, or after the checkpoint)
        said = (matches[-1].index, matches[-1].digest) if matches else None
        unbelieved = [*((i, records[i]) for i in self.refused_entries), *enumerate(seen.tail, len(records))]
        for index, record in unbelieved:
            with contextlib.suppress(ValueError):
                entry = log.parse_entry(record)
                if entry.get("type") == "promote" and entry.get("env") == env and (said is None or index > said[0]):
                    said = (index, str(entry.get("digest", "")))
        if said is not None and (not matches or (matches[-1].index, matches[-1].digest) != said):
            believed = (
                f"the last believed promotion is sha256:{matches[-1].digest} (log entry {matches[-1].index + 1})"
                if matches
                else "no believed entry promotes anything there"
            )
            why = "no checkpoint signed by the trusted key covers it" if said[0] >= len(records) else "it is refused"
            raise StoreTrustError(
                f"{env}: log entry {said[0] + 1} of {self.backend.url} promotes sha256:{said[1][:16]}… there, but "
                f"{why}; {believed}; not resolved (run `detpack store verify`)"
            )
        if not matches:
            raise StoreError(f"{env}: nothing has been promoted to this environment in {self.backend.url}")
        return matches[-1]

    def policy(self, state: State, env: str) -> gate.Policy | None:
        """The policy promotions to ``env`` must meet (None: only a verified provenance)."""
        digest = state.policies.get(env)
        if digest is None:
            return None
        data = read_blob(self.backend, digest)
        return gate.parse(data, f"{self.backend.url}: the {env} policy sha256:{digest[:16]}", None)

    def evidence(
        self, state: State, item: Item, name: str | None = None
    ) -> tuple[gate.Evidence | None, list[gate.Evidence]]:
        """What the store holds about an artifact for a policy: its provenance (the one linked to ``name``, the
        name it is judged under: another name's pusher never decides it), its rebuild attestations."""
        linked = self.provenance_of(state, item, name)
        provenance = self._evidence(linked) if linked is not None else None
        about = about_digests(item.digest, provenance.provenance.statement if provenance is not None else None)
        attestations = [
            self._evidence(a)
            for a in state.items.values()
            if a.kind == "attestation" and not a.expired and about & set(a.subjects)
        ]
        return provenance, attestations

    def _evidence(self, item: Item) -> gate.Evidence:
        data = read_blob(self.backend, item.digest)
        return gate.parse_evidence(data, item.names[0] if item.names else f"sha256:{item.digest}")
