"""``detpack rebuild PROVENANCE``: rebuild from a provenance record alone and compare digests.

The record gives the source identity (sdist sha256, or tree digest and git commit), the
build dependencies by name, version and sha256 (installed in hash-checking mode, exactly as
a lock), the epoch, the distributions and settings. The rebuilt outputs are compared with
every subject's digest; where the original files lie beside the record, ``diff`` explains
any difference member by member.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.compare import FileComparison, compare_files
from detpack.config import BuildRequest
from detpack.environment import LineSink
from detpack.errors import InputError
from detpack.frontend import FrontendSettings
from detpack.lock import BuildLock, LockedPackage
from detpack.pipeline import build_project
from detpack.provenance import BUILD_TYPE


@dataclass(frozen=True)
class SubjectResult:
    name: str
    expected: str
    actual: str | None
    explanation: FileComparison | None = None

    @property
    def matches(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class RebuildResult:
    subjects: tuple[SubjectResult, ...]
    source_matches: bool
    source_note: str

    @property
    def reproduced(self) -> bool:
        return all(s.matches for s in self.subjects)


def load_statement(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: no such provenance file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    try:
        build_type = data["predicate"]["buildDefinition"]["buildType"]
        data["subject"], data["predicate"]["buildDefinition"]["externalParameters"]
    except (KeyError, TypeError):
        raise InputError(f"{path}: not an in-toto SLSA provenance statement") from None
    if build_type != BUILD_TYPE:
        raise InputError(f"{path}: buildType {build_type!r} is not detpack's ({BUILD_TYPE}); cannot rebuild it")
    return dict(data)


def _lock_from(path: Path, resolved: list[dict[str, Any]]) -> BuildLock:
    packages = []
    for rd in resolved:
        uri = str(rd.get("uri", ""))
        if not uri.startswith("pkg:pypi/") or "usedFor" not in rd.get("annotations", {}):
            continue
        name, _, version = uri.removeprefix("pkg:pypi/").partition("@")
        sha = rd.get("digest", {}).get("sha256")
        if not sha:
            raise InputError(
                f"{path}: build dependency {name} {version} has no sha256 in the record (built with --installer "
                "uv?); it cannot be reinstalled by hash"
            )
        packages.append(LockedPackage(name, version, sha))
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
    return BuildLock(path, digest, tuple(sorted(packages, key=lambda p: p.name)))


def _source(path: Path, ext: dict[str, Any], given: Path | None) -> Path:
    kind = ext["source"].get("annotations", {}).get("kind")
    if kind == "sdist":
        name = ext["source"].get("name") or ""
        candidate = given or path.parent / name
        if not candidate.is_file():
            raise InputError(f"{path}: the recorded sdist {name or '(unnamed)'} is not beside it; pass --source PATH")
        return candidate
    if given is None:
        raise InputError(f"{path}: built from a source tree; pass --source PATH to the same tree")
    return given


def _source_note(kind: str, want: str, have: str) -> str:
    what = "sdist sha256" if kind == "sdist" else "tree digest"
    if have == want:
        return f"{what} matches"
    return f"{what} DIFFERS (recorded {want[:12]}…, found {have[:12]}…)"


def rebuild(
    provenance: Path,
    *,
    source: Path | None = None,
    find_links: tuple[Path, ...] = (),
    offline: bool | None = None,
    outdir: Path | None = None,
    on_step: LineSink | None = None,
    on_line: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> RebuildResult:
    data = load_statement(provenance)
    definition = data["predicate"]["buildDefinition"]
    ext = definition["externalParameters"]
    if "source" not in ext:
        ext["source"] = {}
    ext["source"].setdefault(
        "name",
        next(
            (
                rd.get("name")
                for rd in definition.get("resolvedDependencies", [])
                if rd.get("annotations", {}).get("kind")
            ),
            None,
        ),
    )
    srcdir = _source(provenance, ext, source)
    lock = _lock_from(provenance, definition.get("resolvedDependencies", []))
    distributions = None if ext.get("viaSdist") else tuple(ext.get("distributions", ()))
    if srcdir.is_file():
        distributions = tuple(d for d in ext.get("distributions", ("wheel",)) if d == "wheel") or ("wheel",)
    with tempfile.TemporaryDirectory(prefix="detpack-rebuild-") as tmp:
        out = outdir or Path(tmp)
        request = BuildRequest(
            srcdir=srcdir,
            outdir=out,
            distributions=distributions,
            frontend=FrontendSettings(
                config_settings=ext.get("configSettings", {}),
                isolation=ext.get("isolation", True),
                installer=ext.get("installer", "pip"),
                lock=lock,
            ),
            epoch_spec=str(ext["sourceDateEpoch"]["value"]),
            recompress=ext.get("recompress", False),
            normalize=ext.get("normalized", True),
            find_links=find_links,
            offline=offline if offline is not None else ext.get("offline"),
        )
        built = build_project(request, on_step=on_step, on_line=on_line, caller_env=caller_env)
        want = ext["source"].get("digest", {}).get("sha256", "")
        source_ok = built.source.digest == want
        note = _source_note(built.source.kind, want, built.source.digest)
        actual = {a.path.name: a.sha256 for a in built.artifacts}
        results = []
        for subject in data["subject"]:
            name, expected = subject["name"], subject["digest"]["sha256"]
            got = actual.get(name)
            explanation = None
            original = provenance.parent / name
            if got is not None and got != expected and original.is_file():
                explanation = compare_files(original, out / name, name)
            results.append(SubjectResult(name, expected, got, explanation))
    return RebuildResult(tuple(results), source_ok, note)
