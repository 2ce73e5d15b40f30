"""Closure reports in the dashboard: an item's closure as a bar, a report's files by state, and a
dependency's release history across every report in the store.

A report is an item of the snapshot (the store's trusted view: what its key signed and the access
policy lets stand) named ``*.closure.json``; nothing else is read as one. Its bytes are read with
``read_blob`` (re-hashed against the digest) each time a page shows it and parsed strictly
(``deps.report.parse``): a report that cannot be read or parsed is shown as its one-line error and
counted nowhere. ``Reports`` remembers only which digest each report describes (a digest's bytes
never change), to find an item's reports without parsing every report on every page.

The newest report (the last stored, in log order: the log is the order the store vouches for, the
``verifiedOn`` inside a report is only its writer's word) describes an item. A version's state
across reports and files is the worst of them (``RANK``): built here, reproduced, unverified,
different. Unverified is never clean: a release history flags a regression when a version's
state is in a worse tier (``TIER``: clean, unverified, different) than an earlier version's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from detpack.deps.report import REPORT_SUFFIX, STATES, Entry, Report, State, parse
from detpack.errors import DetpackError, InputError
from detpack.serve import model
from detpack.store.backend import read_blob
from detpack.store.state import Item
from detpack.store.store import Store

#: Worse is higher: the state a version has across reports is the highest of them.
RANK: dict[str, int] = {"built here": 0, "reproduced": 1, "unverified": 2, "different": 3}
#: Clean (built here or reproduced), unverified, different: a step up between versions is a regression.
TIER: dict[str, int] = {"built here": 0, "reproduced": 0, "unverified": 1, "different": 2}
#: Each state's name in CSS classes and page anchors.
SLUG: dict[str, str] = {"built here": "built", "reproduced": "reproduced", "different": "different",
                        "unverified": "unverified"}  # fmt: skip
#: Reports listed on the home page.
HOME_LIMIT = 20


@dataclass(frozen=True)
class Loaded:
    """A closure report item and what reading it gave."""

    item: Item  # the report as the store holds it
    report: Report | None  # None: it could not be read or parsed (``error`` says why)
    error: str = ""  # one line

    @property
    def label(self) -> str:
        return self.item.names[0] if self.item.names else f"sha256:{self.item.digest[:16]}…"


@dataclass(frozen=True)
class Part:
    """One state's part of a closure bar."""

    state: str
    slug: str  # CSS class and anchor
    count: int
    percent: str  # of every file, as text ("33.3%")
    href: str  # the report's page, listing only this state's files


@dataclass(frozen=True)
class Bar:
    """A closure drawn in proportion: every state in ``STATES`` order, a part per state."""

    digest: str  # the report's
    parts: tuple[Part, ...]
    total: int

    @property
    def drawn(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if p.count)


def is_report(item: Item) -> bool:
    return item.kind == "artifact" and any(n.endswith(REPORT_SUFFIX) for n in item.names)


def report_items(snap: model.Snapshot) -> list[Item]:
    """The snapshot's closure reports that are not expired, newest (last stored) first."""
    found = (i for i in snap.state.items.values() if is_report(i) and not i.expired)
    return sorted(found, key=lambda i: -i.index)


def load(store: Store, item: Item) -> Loaded:
    """Read (re-hashing its bytes) and parse one report; a failure is its one-line message."""
    where = f"closure report {item.names[0] if item.names else ''} (sha256:{item.digest[:16]}…)"
    try:
        return Loaded(item, parse(read_blob(store.backend, item.digest), where))
    except DetpackError as exc:
        return Loaded(item, None, exc.message.splitlines()[0] if exc.message else type(exc).__name__)
    except OSError as exc:
        return Loaded(item, None, f"{where}: cannot be read ({exc.strerror or exc})")
    except RecursionError:  # JSON nested deeper than the parser goes: not a report either
        return Loaded(item, None, f"{where}: not a closure report (nested too deeply to read)")


def _percent(count: int, total: int) -> str:
    if not count:
        return "0%"
    value = 100 * count / total
    return "<0.1%" if value < 0.1 else f"{value:.1f}%".replace(".0%", "%")


def bar(digest: str, report: Report) -> Bar:
    counts = report.counts
    total = len(report.entries)
    parts = tuple(
        Part(s, SLUG[s], counts[s], _percent(counts[s], total), f"/closure/sha256:{digest}?state={SLUG[s]}")
        for s in STATES
    )
    return Bar(digest, parts, total)


def state_of_slug(slug: str) -> State | None:
    return next((s for s in STATES if SLUG[s] == slug), None)


@dataclass
class Reports:
    """The closure reports of a store, as the dashboard's pages read them."""

    store: Store
    #: report digest -> the digest its closure names, for the reports that parsed (bytes never change under a
    #: digest); one that did not is read again next time (it may have been unreadable for a while)
    _subjects: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def all(self, snap: model.Snapshot) -> list[Loaded]:
        found = [load(self.store, i) for i in report_items(snap)]
        with self._lock:
            self._subjects.update((x.item.digest, x.report.closure_sha256) for x in found if x.report)
        return found

    def describing(self, snap: model.Snapshot, digest: str) -> list[Loaded]:
        """The reports whose closure is ``digest``, newest first, each read again."""
        out = []
        for item in report_items(snap):
            with self._lock:
                subject = self._subjects.get(item.digest)
            if subject is not None and subject != digest:
                continue
            loaded = load(self.store, item)
            if loaded.report is None:
                continue
            with self._lock:
                self._subjects[item.digest] = loaded.report.closure_sha256
            if loaded.report.closure_sha256 == digest:
                out.append(loaded)
        return out


def item_values(reports: Reports, snap: model.Snapshot, item: Item) -> dict[str, Any]:
    """What an item's page shows of closures: the newest report describing it (with its bar and the older
    ones), and, for a report itself, its page."""
    found = reports.describing(snap, item.digest)
    newest = found[0] if found else None
    return {
        "closure": newest,
        "closure_bar": bar(newest.item.digest, newest.report) if newest and newest.report else None,
        "closure_older": found[1:],
        "closure_report": is_report(item),
    }


def home_values(reports: Reports, snap: model.Snapshot) -> dict[str, Any]:
    """The newest reports, each with its bar and the item its closure names (None: the store does not hold it)."""
    shown = [load(reports.store, i) for i in report_items(snap)[:HOME_LIMIT]]
    return {
        "closures": [
            (x, bar(x.item.digest, x.report), snap.state.items.get(x.report.closure_sha256))
            if x.report
            else (x, None, None)
            for x in shown
        ]
    }


def page(reports: Reports, snap: model.Snapshot, path: str, query: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The template and values of ``/closure/REF[?state=STATE]`` or ``/dependency/NAME``."""
    if path.startswith("/closure/"):
        return "closure.html", closure_values(
            reports.store, snap, path.removeprefix("/closure/"), query.get("state", "")
        )
    return "dependency.html", dependency_values(reports, snap, path.removeprefix("/dependency/"))


def closure_values(store: Store, snap: model.Snapshot, ref: str, slug: str) -> dict[str, Any]:
    """The values of ``/closure/REF``: a report's bar and its files by state (only ``slug``'s, when given)."""
    item = store.find(snap.state, ref)
    if not is_report(item):
        raise InputError(f"{ref}: not a closure report (its name does not end with {REPORT_SUFFIX})")
    wanted = state_of_slug(slug) if slug else None
    if slug and wanted is None:
        raise InputError(f"state={slug}: not a state (one of {', '.join(SLUG.values())})")
    loaded = load(store, item)
    groups: list[tuple[Part, list[Entry]]] = []
    drawn = bar(item.digest, loaded.report) if loaded.report else None
    if loaded.report is not None and drawn is not None:
        for part in drawn.parts:
            if wanted is None or part.state == wanted:
                entries = sorted((e for e in loaded.report.entries if e.state == part.state),
                                 key=lambda e: (e.name, _version_key(e.version), e.label))  # fmt: skip
                groups.append((part, entries))
    subject = snap.state.items.get(loaded.report.closure_sha256) if loaded.report else None
    return {
        "title": f"Closure {loaded.report.closure_name}" if loaded.report else f"Closure report {loaded.label}",
        "loaded": loaded,
        "bar": drawn,
        "groups": groups,
        "wanted": wanted,
        "subject": subject,
        "held": {d for g in groups for e in g[1] for d in _digests(e) if d in snap.state.items},
    }


def _digests(entry: Entry) -> tuple[str, ...]:
    return (entry.sha256,) + ((entry.evidence.sha256,) if entry.evidence else ())


@dataclass(frozen=True)
class Source:
    """One file of a release as one report found it."""

    report: Loaded
    entry: Entry


@dataclass(frozen=True)
class Release:
    """One version of a dependency across every report that names it."""

    version: str
    state: str  # the worst of its files' states across reports (``RANK``)
    sources: tuple[Source, ...]  # newest report first
    regression: str = ""  # "reproduced for 2.31.0, different for 2.32.0": worse than an earlier version


def _version_key(text: str) -> tuple[int, Version | str]:
    try:
        return (0, Version(text))
    except InvalidVersion:
        return (1, text)  # not a version: after every version, by its text


def history(loaded: Sequence[Loaded], name: str) -> list[Release]:
    """``name``'s versions, oldest first, each with its state across ``loaded`` and the regression it shows."""
    wanted = canonicalize_name(name)
    by_version: dict[str, list[Source]] = {}
    for x in loaded:
        for e in x.report.entries if x.report else ():
            if canonicalize_name(e.name) == wanted:
                by_version.setdefault(e.version, []).append(Source(x, e))
    releases: list[Release] = []
    for version in sorted(by_version, key=_version_key):
        sources = by_version[version]
        state = max((s.entry.state for s in sources), key=lambda s: RANK[s])
        better = [r for r in releases if TIER[r.state] < TIER[state]]
        regression = f"{better[-1].state} for {better[-1].version}, {state} for {version}" if better else ""
        releases.append(Release(version, state, tuple(sources), regression))
    return releases


def dependency_values(reports: Reports, snap: model.Snapshot, name: str) -> dict[str, Any]:
    """The values of ``/dependency/NAME``; InputError when no readable report names it."""
    loaded = reports.all(snap)
    releases = history(loaded, name)
    if not releases:
        raise InputError(f"{name}: no closure report in the store names this dependency")
    return {
        "title": f"Dependency {canonicalize_name(name)}",
        "name": canonicalize_name(name),
        "releases": releases,
        "regressions": [r.regression for r in releases if r.regression],
        "unreadable": [x for x in loaded if x.report is None],
        "reports": len(loaded),
    }
