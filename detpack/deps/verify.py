"""Verifying a closure: each distribution file built here, reproduced, different, or unverified.

Invariants:
- Every file gets exactly one of the four states; ``unverified`` always carries a reason and is
  never counted as clean (``Tally.clean`` is false while one is not allowed by name or count).
- **built here**: a build record (SLSA provenance statement, bare or in a DSSE envelope) in a
  ``--records`` folder names the file's sha256 as a subject. The envelope's signature is not
  checked here, and the evidence says so.
- **reproduced**: ``detpack rebuild --pypi`` of the file's release gave exactly its bytes (its
  sha256 is the rebuilt wheel's, or the published wheel's when that was byte-identical).
- **different**: the release was rebuilt and the file's bytes are not what the rebuild gives.
  A wheel whose name the rebuild compared but whose bytes are neither the published ones nor the
  rebuilt ones is *different*, not unverified: it is not the file the index publishes and no
  rebuild makes it, which is exactly what verification exists to catch, and an
  ``--allow-unverified`` must not wave it through.
- **unverified**: not tried (``rebuild=False``), not rebuilt (the rebuild's own reason: no sdist,
  backend failed, a platform wheel this machine does not make), or a file the rebuild did not
  compare (an sdist, another platform's wheel, a bare digest matching nothing compared).
- Results of rebuilds are cached by file sha256 under ``policy.POLICY_VERSION``; a cached result
  is used only for the same release and file name, so a second run starts no rebuild at all. The
  cache is not trusted beyond that: an entry or attestation that is not a regular file of this user
  is not read, an attestation is the evidence only when it says that state of those bytes (and, with
  ``--attest``, is signed by that key), and an evidence name is a plain file name, never a path.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detpack import policy
from detpack.atomic import write_bytes
from detpack.deps.closure import ClosureFile
from detpack.deps.report import STATES, Entry, Evidence, State, plain_name
from detpack.digest import file_sha256, sha256_hex
from detpack.errors import InputError
from detpack.provenance import reader
from detpack.provenance.attestation import REBUILD_PREDICATE
from detpack.provenance.statement import PREDICATE_TYPE
from detpack.verify.pypi_batch import DEFAULT_TIMEOUT, ReleaseOutcome, rebuild_many

if TYPE_CHECKING:
    from detpack.provenance.signing import PublicKey

#: Bumped when what a cached result means changes.
_CACHE_FORMAT = 2
_HEX = re.compile(r"^[0-9a-f]{64}$")
#: The states a rebuild's judgement gives (what the cache keeps).
_JUDGED = ("reproduced", "different", "unverified")


@dataclass(frozen=True)
class FileResult:
    """What is known about one file of the closure."""

    file: ClosureFile  # the file
    state: State  # its state
    reason: str  # the evidence (built here, reproduced) or why not (different, unverified)
    details: tuple[str, ...] = ()  # what differs, as the rebuild said it, a line each
    cached: bool = False  # read from the cache, not found by this run
    evidence: Evidence | None = None  # the record or signed attestation the state rests on
    #: where that statement's bytes are on this machine (a record, an attestation written or cached)
    evidence_path: Path | None = None

    def entry(self) -> Entry:
        f = self.file
        return Entry(f.name, f.version, f.filename, f.sha256, self.state, self.reason, self.details, self.evidence)

    def to_json(self) -> dict[str, Any]:
        return self.entry().to_json() | {"cached": self.cached}


@dataclass(frozen=True)
class Tally:
    """The counts of a run and whether they pass."""

    counts: Mapping[State, int]  # files per state, every state present
    unallowed: tuple[str, ...]  # unverified files not allowed by name (labels), when over the count
    clean: bool  # nothing different, and every unverified file allowed by name or count


def tally(results: Sequence[FileResult], *, allow: Iterable[str] = (), max_unverified: int = 0) -> Tally:
    """Count ``results``; the unverified pass when each is named in ``allow`` or, beyond those, at most
    ``max_unverified`` remain."""
    from packaging.utils import canonicalize_name

    allowed = {canonicalize_name(n) for n in allow}
    counts = {s: sum(1 for r in results if r.state == s) for s in STATES}
    rest = [r for r in results if r.state == "unverified" and r.file.name not in allowed]
    unallowed = tuple(f"{r.file.spec} {r.file.label}" for r in rest) if len(rest) > max_unverified else ()
    return Tally(counts, unallowed, counts["different"] == 0 and not unallowed)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/detpack/deps``, else ``~/.cache/detpack/deps``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "detpack" / "deps"


@dataclass(frozen=True)
class Found:
    """A statement naming a file: a build record (built here) or, from a store, a trusted rebuilder's
    attestation (reproduced); why it counts, and the statement as evidence."""

    reason: str
    evidence: Evidence
    path: Path | None  # the statement on this machine (None: read from a store)
    state: State = "built here"


def find_records(folders: Iterable[Path]) -> dict[str, Found]:
    """sha256 -> the record naming it, for every build record (``*.provenance.json``,
    ``*.intoto.jsonl``) under ``folders``; rebuild attestations and other statements are skipped."""
    found: dict[str, Found] = {}
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"{folder}: no such records folder; give --records a folder of *.provenance.json files")
        paths = sorted([*folder.rglob("*.provenance.json"), *folder.rglob("*.intoto.jsonl")])
        for path in paths:
            record = reader.read_file(path)
            if record.predicate_type != PREDICATE_TYPE:
                continue
            how = "unsigned statement" if record.envelope is None else "signed envelope, signature not checked here"
            evidence = Evidence("record", path.name, file_sha256(path))
            for subject in record.subjects:
                if subject.sha256:
                    found.setdefault(subject.sha256, Found(f"record {path} ({how})", evidence, path))
    return found


def judge(file: ClosureFile, outcome: ReleaseOutcome) -> FileResult:
    """The state of ``file`` given what the rebuild of its release found (pure: no I/O). A rebuild run with
    ``--attest`` lists its signed attestations, one per published wheel: the one about the wheel that
    decided the file's state is its evidence."""
    prefix = f"{file.spec}: "
    if outcome.report is None:
        return FileResult(file, "unverified", f"not rebuilt: {outcome.reason.removeprefix(prefix)}")
    wheels = [w for w in outcome.report.get("wheels", []) if isinstance(w, dict)]
    attested = {str(a.get("wheel")): a for a in outcome.report.get("attestations", []) or [] if isinstance(a, dict)}

    def with_evidence(result: FileResult, wheel: dict[str, Any]) -> FileResult:
        a = attested.get(str(wheel.get("wheel")))
        if a is None or not isinstance(a.get("path"), str) or not isinstance(a.get("sha256"), str):
            return result
        path = Path(a["path"])
        evidence = Evidence("attestation", path.name, a["sha256"])
        return FileResult(file, result.state, result.reason, result.details, False, evidence, path)

    for w in wheels:
        if file.sha256 == w.get("rebuiltSha256"):
            return with_evidence(FileResult(file, "reproduced", f"rebuilt from {file.spec}'s sdist: the same bytes"), w)
        if file.sha256 == w.get("publishedSha256"):
            if w.get("verdict") == "byte-identical":
                same = FileResult(file, "reproduced", f"rebuilt from {file.spec}'s sdist: the same bytes")
                return with_evidence(same, w)
            said = tuple(str(x) for x in w.get("explanation", []))
            other = FileResult(file, "different", f"rebuilt: {w.get('verdict')}, not the same bytes", said)
            return with_evidence(other, w)
    compared = ", ".join(str(w.get("wheel")) for w in wheels) or "no wheel"
    named = [w for w in wheels if file.filename is not None and w.get("wheel") == file.filename]
    if named:
        published = str(named[0].get("publishedSha256", ""))[:16]
        rebuilt = str(named[0].get("rebuiltSha256", ""))[:16]
        why = f"not the published file (sha256 {published}…) nor the rebuilt one ({rebuilt}…)"
        return FileResult(file, "different", why)
    if file.kind == "sdist":
        return FileResult(file, "unverified", "sdist: not rebuilt by itself")
    if file.kind == "wheel" and file.filename is not None and not file.filename.endswith("-none-any.whl"):
        tag = "-".join(file.filename.removesuffix(".whl").split("-")[-3:])
        return FileResult(file, "unverified", f"native wheel ({tag}): this machine compared only {compared}")
    if file.kind == "unknown":
        why = (
            f"no file the rebuild compared ({compared}) has this sha256: "
            "an sdist, another platform's wheel, or not the published file"
        )
        return FileResult(file, "unverified", why)
    return FileResult(file, "unverified", f"not a file the rebuild compared (it compared {compared})")


@dataclass(frozen=True)
class Rebuilds:
    """How releases are rebuilt, when they are."""

    enabled: bool = True  # False: nothing is rebuilt (files not known otherwise are "not tried")
    jobs: int = 1  # releases rebuilt at once, each in its own process
    find_links: tuple[Path, ...] = ()  # folders pip and the sdist fetch also look in
    offline: bool = False  # only find_links, no index
    attest: Path | None = None  # a private key: each rebuild signs what it found (rebuild --pypi --attest)
    timeout: float | None = DEFAULT_TIMEOUT  # seconds one release may take (None: no limit)


def verify_closure(
    files: Sequence[ClosureFile],
    *,
    records: Iterable[Path] = (),
    known: Mapping[str, Found] | None = None,
    rebuilds: Rebuilds = Rebuilds(),
    cache_dir: Path | None = None,
    refresh: bool = False,
    on_done: Callable[[int, int, ReleaseOutcome], None] | None = None,
) -> list[FileResult]:
    """Every file's result, in the order of ``files``. Records first (``--records`` folders, then ``known``:
    what a store holds), then the cache (unless ``refresh``), then one rebuild per release still undecided
    (none for a release whose only undecided files are sdists: a rebuild judges wheels). With
    ``rebuilds.attest`` a cached result counts only when it carries an attestation by that key."""
    built = dict(known or {}) | find_records(records)
    cache = _Cache(cache_dir if cache_dir is not None else default_cache_dir())
    signer = _public(rebuilds.attest) if rebuilds.attest is not None else None
    results: dict[int, FileResult] = {}
    pending: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        if f.sha256 in built:
            found = built[f.sha256]
            results[i] = FileResult(f, found.state, found.reason, evidence=found.evidence, evidence_path=found.path)
        elif not refresh and (hit := cache.get(f, signer)) is not None:
            results[i] = hit
        elif f.kind == "sdist":
            results[i] = FileResult(f, "unverified", "sdist: not rebuilt by itself")
        elif not rebuilds.enabled:
            results[i] = FileResult(f, "unverified", "not tried (--no-rebuild)")
        else:
            pending.setdefault(f.spec, []).append(i)
    specs = list(pending)
    if specs:
        done: Callable[[int, ReleaseOutcome], None] | None = None
        if on_done is not None:
            report = on_done
            done = lambda n, o: report(n, len(specs), o)  # noqa: E731 - a one-line adapter
        with tempfile.TemporaryDirectory(prefix="detpack-deps-") as work:
            outcomes = rebuild_many(
                specs,
                jobs=rebuilds.jobs,
                outdir=Path(work) if rebuilds.attest is not None else None,
                find_links=rebuilds.find_links,
                offline=rebuilds.offline,
                attest=rebuilds.attest,
                timeout=rebuilds.timeout,
                on_done=done,
            )
            for spec, outcome in zip(specs, outcomes, strict=True):
                for i in pending[spec]:
                    judged = judge(files[i], outcome)
                    results[i] = judged if outcome.timed_out else cache.put(judged)
    return [results[i] for i in range(len(files))]


def _public(key: Path) -> PublicKey:
    from detpack.provenance.signing import load_private_key

    return load_private_key(key).public


def _own_file(path: Path) -> bytes | None:
    """The bytes of ``path`` when it is a regular file of this user (not a link: never followed), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return None
        return f.read()


def _claims(envelope: bytes, sha256: str, state: object, signer: PublicKey | None) -> bool:
    """Whether a rebuild attestation (signed by ``signer``, when given) says ``state`` of the file ``sha256``:
    reproduced when a result rebuilt those bytes, different when they are a result's expected bytes, rebuilt
    to others."""
    from detpack.errors import DetpackError
    from detpack.provenance.signing import signed_by

    try:
        statement = reader.read(envelope, "a cached attestation")
    except DetpackError:
        return False
    if statement.predicate_type != REBUILD_PREDICATE:
        return False
    if signer is not None and (statement.envelope is None or not signed_by(statement.envelope, signer)):
        return False
    for r in statement.statement.get("predicate", {}).get("results") or []:
        expected = reader.dig(r, "expected", "sha256")
        rebuilt = reader.dig(r, "rebuilt", "sha256")
        if state == "reproduced" and rebuilt == sha256:
            return True
        if state == "different" and expected == sha256 and rebuilt != sha256:
            return True
    return False


class _Cache:
    """One JSON file per file sha256, under the policy version, and the attestations the rebuilds signed
    (``attestations/SHA256.intoto.jsonl``, by the sha256 of their bytes); written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root / f"policy-{policy.POLICY_VERSION}"

    def _path(self, sha256: str) -> Path:
        if not _HEX.match(sha256):  # the closure readers refuse such a digest; never a path out of the cache
            raise InputError(f"{sha256[:70]!r}: not a sha256 (64 hex digits); the closure must name each file's")
        return self.root / sha256[:2] / f"{sha256}.json"

    def _attestation(self, sha256: str) -> Path:
        return self.root / "attestations" / f"{sha256}.intoto.jsonl"

    def get(self, f: ClosureFile, signer: PublicKey | None) -> FileResult | None:
        # Whoever can write the cache writes what it says (a shared CI cache, a shared --cache-dir): an entry
        # counts only as a regular file of this user, and its attestation only when it is about these bytes,
        # says this state and, with --attest, is signed by that key (not the entry's word for any of it).
        try:
            entry = json.loads(_own_file(self._path(f.sha256)) or b"")
        except ValueError:
            return None
        if not isinstance(entry, dict) or entry.get("format") != _CACHE_FORMAT:
            return None
        # The same bytes claimed for another release (or under another name) are judged again, and so is a state
        # no rebuild gives ("built here" is a build record's word, and records are not cached).
        if entry.get("spec") != f.spec or entry.get("file") != f.filename or entry.get("state") not in _JUDGED:
            return None
        details = tuple(str(x) for x in entry.get("details", []))
        evidence, path = None, None
        if "evidence" in entry:
            ev = entry["evidence"]
            name, sha = (ev.get("name"), ev.get("sha256")) if isinstance(ev, dict) else (None, None)
            if not isinstance(name, str) or not plain_name(name) or not isinstance(sha, str) or not _HEX.match(sha):
                return None
            path = self._attestation(sha)
            data = _own_file(path)
            if data is not None:
                if sha256_hex(data) != sha or not _claims(data, f.sha256, entry["state"], signer):
                    return None
                evidence = Evidence("attestation", name, sha)
        rebuilt = entry["state"] in ("reproduced", "different")
        if signer is not None and rebuilt and evidence is None:
            return None  # asked to attest, and this result carries no attestation by that key: rebuild
        return FileResult(f, entry["state"], str(entry.get("reason", "")), details, True, evidence, path)

    def put(self, result: FileResult) -> FileResult:
        """Keep ``result`` (and its attestation); returns it with the evidence at its kept place."""
        entry: dict[str, Any] = {
            "format": _CACHE_FORMAT,
            "spec": result.file.spec,
            "file": result.file.filename,
            "state": result.state,
            "reason": result.reason,
            "details": list(result.details),
        }
        if result.evidence is not None and result.evidence_path is not None:
            data = result.evidence_path.read_bytes()
            kept = self._attestation(result.evidence.sha256)
            kept.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(kept, data)
            entry["evidence"] = result.evidence.to_json()
            entry["keyid"] = _signer(data)
            result = FileResult(result.file, result.state, result.reason, result.details, False, result.evidence, kept)
        path = self._path(result.file.sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, json.dumps(entry, sort_keys=True).encode("utf-8"))
        return result


def _signer(envelope: bytes) -> str | None:
    """The keyid of an envelope's first signature (what the cache checks ``--attest`` against)."""
    try:
        signatures = json.loads(envelope).get("signatures") or [{}]
        return str(signatures[0].get("keyid")) or None
    except (ValueError, AttributeError, IndexError, TypeError):
        return None
