"""The provenance statement: an in-toto Statement v1 with an SLSA Provenance v1 predicate.

Pure: ``statement`` takes values and returns a JSON-ready dict; ``canonical_json`` gives
the exact bytes detpack writes (and later signs). Everything needed to rerun the build is
in ``buildDefinition``; times and host details live in ``runDetails`` only, so two
reproducible builds of one source on different machines have equal buildDefinitions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from detpack import policy

if TYPE_CHECKING:
    from detpack.git import GitInfo

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://detpack.dev/buildtypes/pep517/v1"
#: The buildTypes of ``detpack layer`` and ``detpack image`` statements (detpack.oci.attest writes them).
LAYER_BUILD_TYPE = "https://detpack.dev/buildtypes/oci-layer/v1"
IMAGE_BUILD_TYPE = "https://detpack.dev/buildtypes/oci-image/v1"
BUILDER_ID = "https://detpack.dev/builders/local/v1"

JSON = dict[str, Any]


# What the statement reads from the build's values, and nothing more: the build's frozen
# dataclasses (build.source.Source, build.deps.InstalledDependency, ...) fit these as they are,
# so provenance sits below the build and never imports it.


class SourceFacts(Protocol):
    """The source built: its path, kind (``sdist`` or a directory), digest and what git says."""

    @property
    def path(self) -> Path: ...
    @property
    def kind(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def git(self) -> GitInfo | None: ...


class EpochFacts(Protocol):
    """SOURCE_DATE_EPOCH and where it came from."""

    @property
    def value(self) -> int: ...
    @property
    def origin(self) -> str: ...


class DependencyFacts(Protocol):
    """A package installed into the isolated build environment."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def requested(self) -> bool: ...
    @property
    def sha256(self) -> str | None: ...


class RawArtifactFacts(Protocol):
    """One distribution as the backend made it, with the environment it was made in."""

    @property
    def distribution(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def requires(self) -> Sequence[str]: ...
    @property
    def installed(self) -> Sequence[DependencyFacts]: ...


class LockFacts(Protocol):
    """The build lock used: its file and digest."""

    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def project(self) -> str | None: ...
    @property
    def other_project(self) -> bool: ...


@dataclass(frozen=True)
class Subject:
    name: str
    sha256: str


@dataclass(frozen=True)
class Toolchain:
    """What ran the build, captured once per invocation (see ``capture_toolchain``)."""

    python_implementation: str
    python_version: str
    python_sha256: str
    zlib_version: str
    deflate: str  # "zlib-ng 2.3.3": what wrote every canonical deflate stream (archive.codec)
    deflate_package: str  # the pinned package that carries it, "zlib-ng 1.1.0"
    detpack_version: str
    detpack_sha256: str
    build_version: str
    pip_version: str | None


@dataclass(frozen=True)
class RunFacts:
    """Host details and times: recorded in runDetails, never in buildDefinition."""

    invocation_id: str
    started: dt.datetime
    finished: dt.datetime
    log_sha256: str
    host: Mapping[str, str]
    raw_outputs: Sequence[Subject]
    sandbox: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # tool version, visible host paths
    log_file: Subject | None = None  # the build log as written beside the provenance (gzip)
    ci: CIFacts | None = None  # the CI run that made the build
    #: (the previous release tag, the commits since it) of a git source
    changes: tuple[str | None, Sequence[ChangeFacts]] | None = None
    #: per distribution, what the build took from before instead of doing again (a resolution, an environment)
    reused: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)


class CIFacts(Protocol):
    """The CI run a build ran in, as ``detpack.build.ci`` reads it."""

    @property
    def run_url(self) -> str | None: ...
    @property
    def builder_id(self) -> str | None: ...
    def record(self) -> dict[str, object]: ...


class ChangeFacts(Protocol):
    """One commit since the previous release, as ``detpack.git`` reads it."""

    @property
    def commit(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def trailers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def references(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class BuildParameters:
    distributions: tuple[str, ...]
    via_sdist: bool
    config_settings: Mapping[str, Any]
    isolation: bool
    installer: str
    skip_dependency_check: bool
    offline: bool
    lock: LockFacts | None = None
    normalized: bool = True
    allow_network: bool = False  # the hooks could reach the network (--allow-network)
    sbom_in_wheel: bool = False  # an SBOM was added to each wheel's .dist-info/sboms/ (PEP 770)
    sdist_fallback: str | None = None  # why the wheel was built from the tree, not from an sdist


@dataclass(frozen=True)
class ResolvedDuplicate:
    """A backend output held two different members under one name; the last one was kept."""

    artifact: str  # the backend's file name
    member: str


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _source_descriptor(source: SourceFacts) -> JSON:
    rd: JSON = {"name": "source", "digest": {"sha256": source.digest}}
    annotations: JSON = {"kind": source.kind}
    if source.git is not None:
        rd["digest"]["gitCommit"] = source.git.commit
        annotations["dirty"] = source.git.dirty
        if source.git.refs:
            annotations["refs"] = list(source.git.refs)
        if source.git.subdir:
            annotations["subdirectory"] = source.git.subdir
        if source.git.remote:
            rd["uri"] = f"git+{source.git.remote}@{source.git.commit}"
    if source.kind == "sdist":
        rd["name"] = source.path.name
    rd["annotations"] = annotations
    return rd


def _dependency_descriptor(dep: DependencyFacts, used_for: Sequence[str]) -> JSON:
    rd: JSON = {
        "name": dep.name,
        "uri": f"pkg:pypi/{dep.name}@{dep.version}",
        "annotations": {"version": dep.version, "requested": dep.requested, "usedFor": sorted(used_for)},
    }
    if dep.sha256:
        rd["digest"] = {"sha256": dep.sha256}
    return rd


def _dependencies(raws: Sequence[RawArtifactFacts]) -> list[JSON]:
    used: dict[tuple[str, str, str | None], tuple[DependencyFacts, list[str]]] = {}
    for raw in raws:
        for dep in raw.installed:
            key = (dep.name, dep.version, dep.sha256)
            used.setdefault(key, (dep, []))[1].append(raw.distribution)
    return [_dependency_descriptor(dep, dists) for _, (dep, dists) in sorted(used.items(), key=lambda kv: kv[0][:2])]


def statement(
    *,
    subjects: Sequence[Subject],
    source: SourceFacts,
    epoch: EpochFacts,
    parameters: BuildParameters,
    environment: Mapping[str, str],
    paths: Mapping[str, str],
    passed_through: Sequence[str],
    injects_code: Sequence[str] = (),
    duplicates: Sequence[ResolvedDuplicate] = (),
    sandbox: Mapping[str, Any] | None = None,
    raws: Sequence[RawArtifactFacts],
    toolchain: Toolchain,
    run: RunFacts,
    native: Sequence[JSON] = (),
    umask: int = policy.UMASK,
    sdist_modes_kept: bool = False,
) -> JSON:
    """Assemble the statement for one build (``native``: the compilers and system files it used,
    as resolved dependencies)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": s.name, "digest": {"sha256": s.sha256}} for s in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": _external_parameters(source, epoch, parameters),
                "internalParameters": _internal_parameters(
                    environment, paths, passed_through, injects_code, sandbox, duplicates, umask, sdist_modes_kept
                ),
                "resolvedDependencies": [*_resolved_dependencies(source, raws, toolchain), *native],
            },
            "runDetails": _run_details(toolchain, run),
        },
    }


def _resolved_dependencies(source: SourceFacts, raws: Sequence[RawArtifactFacts], toolchain: Toolchain) -> list[JSON]:
    """The source, the interpreter, every installed package, the backends and detpack's own tools."""
    backends = sorted({raw.backend for raw in raws})
    requires = sorted({r for raw in raws for r in raw.requires})
    resolved: list[JSON] = [
        _source_descriptor(source),
        {
            "name": "python",
            "uri": f"pkg:generic/{toolchain.python_implementation.lower()}@{toolchain.python_version}",
            "digest": {"sha256": toolchain.python_sha256},
            "annotations": {
                "implementation": toolchain.python_implementation,
                "version": toolchain.python_version,
            },
        },
        *_dependencies(raws),
        {"name": "build-backend", "annotations": {"backends": backends, "requires": requires}},
        {"name": "zlib", "annotations": {"version": toolchain.zlib_version, "role": "the interpreter's"}},
        {
            "name": "deflate",
            "uri": "pkg:pypi/" + "@".join(toolchain.deflate_package.split(" ", 1)),
            "annotations": {
                "implementation": toolchain.deflate.split(" ")[0],
                "version": toolchain.deflate.split(" ")[-1],
                "role": "writes every canonical deflate stream",
            },
        },
        {"name": "build", "uri": f"pkg:pypi/build@{toolchain.build_version}"},
        {
            "name": "detpack",
            "uri": f"pkg:pypi/detpack@{toolchain.detpack_version}",
            "digest": {"sha256": toolchain.detpack_sha256},
        },
    ]
    if toolchain.pip_version:
        resolved.append({"name": "pip", "uri": f"pkg:pypi/pip@{toolchain.pip_version}"})
    return resolved


def _external_parameters(source: SourceFacts, epoch: EpochFacts, parameters: BuildParameters) -> JSON:
    """What the build was asked to do: everything needed to run it again."""
    external: JSON = {
        "source": {k: v for k, v in _source_descriptor(source).items() if k != "name"},
        "distributions": list(parameters.distributions),
        "viaSdist": parameters.via_sdist,
        "configSettings": dict(parameters.config_settings),
        "isolation": parameters.isolation,
        "installer": parameters.installer,
        "skipDependencyCheck": parameters.skip_dependency_check,
        "offline": parameters.offline,
        "allowNetwork": parameters.allow_network,
        "normalized": parameters.normalized,
        "sourceDateEpoch": {"value": epoch.value, "origin": epoch.origin},
    }
    if parameters.sdist_fallback is not None:
        external["sdistFallback"] = parameters.sdist_fallback
    if parameters.sbom_in_wheel:
        external["sbomInWheel"] = True
    if parameters.lock is not None:
        external["lock"] = {"name": parameters.lock.path.name, "digest": {"sha256": parameters.lock.sha256}}
        if parameters.lock.project:
            external["lock"]["project"] = parameters.lock.project
        if parameters.lock.other_project:  # --lock-any: a lock made for another project, used on purpose
            external["lock"]["lockAny"] = True
    return external


def _internal_parameters(
    environment: Mapping[str, str],
    paths: Mapping[str, str],
    passed_through: Sequence[str],
    injects_code: Sequence[str],
    sandbox: Mapping[str, Any] | None,
    duplicates: Sequence[ResolvedDuplicate] = (),
    umask: int = policy.UMASK,
    sdist_modes_kept: bool = False,
) -> JSON:
    """What detpack fixed for the build: its environment, umask, policy, paths and sandbox, and
    how it read the backend's output (two different members under one name: the last kept)."""
    return {
        **({"sandbox": dict(sorted(sandbox.items()))} if sandbox is not None else {}),
        **(
            {"duplicateMembers": [{"artifact": d.artifact, "member": d.member, "kept": "last"} for d in duplicates]}
            if duplicates
            else {}
        ),
        "environment": dict(sorted(environment.items())),
        "passedThrough": sorted(passed_through),
        "codeInjectingVariables": sorted(injects_code),
        "umask": f"{umask:04o}",
        # an sdist unpacked with its files' modes as they are, not as the data filter makes them
        **({"sdistModes": "kept"} if sdist_modes_kept else {}),
        "policyVersion": policy.POLICY_VERSION,
        **dict(sorted(paths.items())),
    }


def _changes(since: str | None, commits: Sequence[ChangeFacts]) -> JSON:
    """The commits since the previous release tag, with their trailers and the issues they name."""
    return {
        "since": since,
        "commits": [
            {
                "commit": c.commit,
                "subject": c.subject,
                "trailers": [{"key": k, "value": v} for k, v in c.trailers],
                "references": list(c.references),
            }
            for c in commits
        ],
        "references": sorted({r for c in commits for r in c.references}),
    }


def _run_details(toolchain: Toolchain, run: RunFacts) -> JSON:
    """Who ran the build, when, and what it left besides the artifacts (never part of buildDefinition)."""
    log: JSON = {"name": "build.log", "digest": {"sha256": run.log_sha256}, "mediaType": "text/plain"}
    if run.log_file is not None:  # where it is kept: the file beside the provenance, gzip-compressed
        log["annotations"] = {"file": run.log_file.name, "fileDigest": {"sha256": run.log_file.sha256}}
    extra: list[JSON] = []
    if run.ci is not None:
        extra.append({"name": "ci", "annotations": run.ci.record()})
    if run.changes is not None:
        since, commits = run.changes
        extra.append({"name": "changes", "annotations": _changes(since, commits)})
    byproducts: list[JSON] = [
        log,
        *extra,
        {"name": "host", "annotations": dict(sorted(run.host.items()))},
        *([{"name": "sandbox", "annotations": dict(sorted(run.sandbox.items()))}] if run.sandbox else []),
        *([{"name": "reused", "annotations": {k: list(v) for k, v in sorted(run.reused.items())}}] * bool(run.reused)),
        *({"name": f"backend-output/{s.name}", "digest": {"sha256": s.sha256}} for s in run.raw_outputs),
    ]
    ci_builder = run.ci.builder_id if run.ci is not None else None
    return {
        "builder": {"id": ci_builder or BUILDER_ID, "version": {"detpack": toolchain.detpack_version}},
        "metadata": {
            "invocationId": (run.ci.run_url if run.ci is not None else None) or run.invocation_id,
            "startedOn": rfc3339(run.started),
            "finishedOn": rfc3339(run.finished),
        },
        "byproducts": byproducts,
    }
