"""``detpack rebuild PROVENANCE``: rebuild from a provenance record alone and compare digests.

The record is a statement or the signed DSSE envelope of one (``*.intoto.jsonl``; its
signature is checked when a key is given, and said to be unchecked otherwise). It gives the
source identity (sdist sha256, or tree digest and git commit), the build dependencies by name,
version and sha256 (installed in hash-checking mode, exactly as a lock), the epoch, the
distributions and settings. The rebuilt outputs are compared with every subject's digest;
where the original files lie beside the record, ``diff`` explains any difference member by
member.

A record of a tree build with no ``--source`` is rebuilt from its sdist subject lying beside
it (once that file's sha256 is the recorded one): the wheel is rebuilt and compared, and the
sdist is *skipped*, since it was the input and cannot also be a rebuilt output. Skipped
subjects do not count as reproduced nor as differing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detpack import policy
from detpack.build.config import BuildRequest, FrontendSettings
from detpack.build.environment import LineSink
from detpack.build.lockfile import BuildLock, LockedPackage
from detpack.build.pipeline import build_project
from detpack.digest import canonical_json, file_sha256
from detpack.errors import InputError, VerificationError
from detpack.provenance import attestation, reader
from detpack.provenance.signing import PublicKey, verify
from detpack.provenance.statement import BUILD_TYPE
from detpack.verify import provenance_compare
from detpack.verify.compare import FileComparison, compare_files

#: What is known of a record's signature: checked with the given key, not checked (no key), none.
Signature = Literal["verified", "unchecked", "unsigned"]
#: Why a tree build's sdist subject is not rebuilt when the wheel is rebuilt from it.
SDIST_SKIPPED = "rebuilt from itself; pass --source to rebuild the sdist from the tree"


@dataclass(frozen=True)
class SubjectResult:
    name: str  # the subject's file name
    expected: str  # its sha256 in the record
    actual: str | None  # the rebuilt file's sha256; None when the rebuild made no such file
    explanation: FileComparison | None = None  # member by member, when it differs and the original is at hand
    skipped: str | None = None  # why it was not rebuilt (then it neither matches nor differs)

    @property
    def matches(self) -> bool:
        return self.skipped is None and self.expected == self.actual


@dataclass(frozen=True)
class RebuildResult:
    subjects: tuple[SubjectResult, ...]  # every subject of the record, in its order
    source_matches: bool  # the source's digest is the recorded one
    source_note: str  # one phrase saying what was checked of the source
    signature: Signature = "unsigned"  # what is known of the record's signature
    toolchain: tuple[str, ...] = ()  # how the rebuild's native toolchain differs from the record's
    rebuilder: Mapping[str, Any] | None = None  # this rebuild's own environment (attestation.rebuilder_environment)
    record_sha256: str = ""  # the record's exact bytes, as read

    @property
    def rebuilt(self) -> tuple[SubjectResult, ...]:
        return tuple(s for s in self.subjects if s.skipped is None)

    @property
    def reproduced(self) -> bool:
        """Every rebuilt subject matches (skipped ones are reported, not counted)."""
        return bool(self.rebuilt) and all(s.matches for s in self.rebuilt)


@dataclass(frozen=True)
class Record:
    statement: dict[str, Any]  # the provenance statement
    signature: Signature  # whether its envelope's signature was checked


def _read_record(path: Path, key: PublicKey | None = None) -> Record:
    """A statement file or a DSSE envelope of one; with ``key``, the envelope must verify."""
    provenance = reader.read_file(path)
    if provenance.envelope is not None:
        if key is not None:
            verify(provenance.envelope, key, path)
            return Record(_load_statement(path, provenance), "verified")
        return Record(_load_statement(path, provenance), "unchecked")
    if key is not None:
        raise VerificationError(
            f"{path}: an unsigned statement, so --key cannot check it; pass the signed .intoto.jsonl envelope"
        )
    return Record(_load_statement(path, provenance), "unsigned")


def _load_statement(path: Path, provenance: reader.Provenance | None = None) -> dict[str, Any]:
    data = (provenance or reader.read_file(path)).statement
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


def _source(path: Path, ext: dict[str, Any], given: Path | None, subjects: list[Any]) -> tuple[Path, str | None]:
    """The source to rebuild from, and the name of the sdist subject it is (a tree build's sdist)."""
    kind = ext["source"].get("annotations", {}).get("kind")
    if kind == "sdist":
        name = ext["source"].get("name") or ""
        candidate = given or path.parent / name
        if not candidate.is_file():
            raise InputError(f"{path}: the recorded sdist {name or '(unnamed)'} is not beside it; pass --source PATH")
        return candidate, None
    if given is not None:
        return given, None
    sdists = [s for s in subjects if isinstance(s, dict) and str(s.get("name", "")).endswith(".tar.gz")]
    if not sdists:
        raise InputError(f"{path}: built from a source tree; pass --source PATH to the same tree")
    name, want = str(sdists[0]["name"]), str(sdists[0].get("digest", {}).get("sha256", ""))
    candidate = path.parent / name
    if not candidate.is_file():
        raise InputError(
            f"{path}: built from a source tree and its sdist {name} is not beside it; pass --source PATH to the tree"
        )
    got = file_sha256(candidate)
    if got != want:
        raise VerificationError(
            f"{candidate}: sha256 {got[:16]}… is not the recorded {want[:16]}… (the sdist beside the record was "
            "changed or replaced); pass --source PATH to rebuild from the tree"
        )
    return candidate, name


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
    on_warning: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
    key: PublicKey | None = None,
    toolchain: str | None = None,
) -> RebuildResult:
    record = _read_record(provenance, key)
    if record.signature == "unchecked" and on_warning is not None:
        on_warning(f"{provenance}: signature not checked (pass --key PUB to check it)")
    data = record.statement
    definition = data["predicate"]["buildDefinition"]
    ext = definition["externalParameters"]
    _name_the_source(definition)
    srcdir, from_subject = _source(provenance, ext, source, list(data["subject"]))
    lock = _lock_from(provenance, definition.get("resolvedDependencies", []))
    with tempfile.TemporaryDirectory(prefix="detpack-rebuild-") as tmp:
        out = outdir or Path(tmp)
        request = _request(ext, srcdir, out, lock, find_links, offline, definition.get("internalParameters", {}))
        request = _with_toolchain(request, definition.get("resolvedDependencies", []), toolchain, provenance)
        extras = None
        if ext.get("sbomInWheel"):  # the record's wheel carries the SBOM detpack put in it: so must the rebuild's
            from detpack.sbom import in_wheel

            extras = in_wheel
        built = build_project(request, on_step=on_step, on_line=on_line, caller_env=caller_env, wheel_extras=extras)
        want = ext["source"].get("digest", {}).get("sha256", "")
        source_ok = built.source.digest == want
        note = _source_note(built.source.kind, want, built.source.digest)
        if from_subject is not None:
            source_ok = True  # its sha256 was checked against the subject before the build
            note = "sdist beside the record: its sha256 is the recorded subject's; the tree itself is not checked"
        actual = {a.path.name: a.sha256 for a in built.artifacts}
        results = _subject_results(data["subject"], actual, from_subject, provenance.parent, out)
        own = _load_statement(built.provenance)
        drift = provenance_compare.toolchain_drift(data, own)
        definition_sha = hashlib.sha256(canonical_json(own["predicate"]["buildDefinition"])).hexdigest()
        environment = attestation.rebuilder_environment(own, definition_sha)
    return RebuildResult(results, source_ok, note, record.signature, drift, environment, file_sha256(provenance))


def _name_the_source(definition: dict[str, Any]) -> None:
    """Give the recorded source a name when the record has none: its resolved dependency's (in place)."""
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


def _request(
    ext: dict[str, Any],
    srcdir: Path,
    out: Path,
    lock: BuildLock,
    find_links: tuple[Path, ...],
    offline: bool | None,
    internal: Mapping[str, Any],
) -> BuildRequest:
    """The recorded build's parameters as a request (an sdist given as the source builds only the wheel;
    a build made under another umask, or from an sdist unpacked with its modes, is made so again)."""
    distributions = None if ext.get("viaSdist") else tuple(ext.get("distributions", ()))
    if srcdir.is_file():
        distributions = tuple(d for d in ext.get("distributions", ("wheel",)) if d == "wheel") or ("wheel",)
    return BuildRequest(
        srcdir=srcdir,
        outdir=out,
        distributions=distributions,
        frontend=FrontendSettings(
            config_settings=ext.get("configSettings", {}),
            isolation=ext.get("isolation", True),
            installer=ext.get("installer", "pip"),
        ),
        lock=lock,
        epoch_spec=str(ext["sourceDateEpoch"]["value"]),
        normalize=ext.get("normalized", True),
        find_links=find_links,
        offline=offline if offline is not None else ext.get("offline"),
        allow_network=bool(ext.get("allowNetwork", False)),  # a build that was let online is rebuilt online
        umask=_umask(internal.get("umask")),
        sdist_modes_kept=internal.get("sdistModes") == "kept",
    )


def _with_toolchain(
    request: BuildRequest, resolved: list[dict[str, Any]], given: str | None, provenance: Path
) -> BuildRequest:
    """A record made in a toolchain image is rebuilt in the same image, fetched by its recorded digest (from
    the recorded registry, or from ``given``, another copy that must have that digest), with the same
    interpreter, and repaired again when it was."""
    image = next((rd for rd in resolved if isinstance(rd, dict) and rd.get("name") == "toolchain image"), None)
    if image is None:
        if given is not None:
            raise InputError(f"{provenance}: not built with a toolchain image; drop --toolchain")
        return request
    digest = "sha256:" + str(reader.dig(image, "digest", "sha256") or "")
    uri = str(image.get("uri") or "")
    python = reader.dig(image, "annotations", "python", "path")
    repaired = any(rd.get("name") == "auditwheel" and reader.dig(rd, "annotations", "kind") == "repair"
                   for rd in resolved if isinstance(rd, dict))  # fmt: skip
    if given is None:
        if not uri.startswith("oci://"):
            raise InputError(
                f"{provenance}: built with the toolchain image {uri} (an image layout on the builder's machine); "
                f"give a copy of it with --toolchain oci:DIR[:TAG] (its digest must be {digest})"
            )
        given = uri.removeprefix("oci://")

    def load(ref: str, interpreter: str | None) -> Any:
        from detpack.oci.toolchain import load as load_image

        found = load_image(ref, interpreter)
        if found.digest != digest:
            raise InputError(
                f"--toolchain {ref}: its manifest is {found.digest}, the record's toolchain image is {digest}; "
                "give a copy of the recorded image"
            )
        return found

    return dataclasses.replace(
        request,
        toolchain=given,
        toolchain_python=python if isinstance(python, str) else None,
        toolchain_loader=load,
        repair=repaired,
    )


def _umask(recorded: object) -> int:
    """The recorded umask ("0022"); policy's when the record has none."""
    if recorded is None:
        return policy.UMASK
    if isinstance(recorded, str) and re.fullmatch(r"0?[0-7]{3}", recorded):
        return int(recorded, 8)
    raise InputError(f'the record\'s internalParameters.umask {recorded!r} is not an octal umask such as "0022"')


def _subject_results(
    subjects: list[dict[str, Any]], actual: Mapping[str, str], from_subject: str | None, originals: Path, out: Path
) -> tuple[SubjectResult, ...]:
    """Each recorded subject against what the rebuild made (explained when the original is beside the record)."""
    results = []
    for subject in subjects:
        name, expected = subject["name"], subject["digest"]["sha256"]
        if name == from_subject:
            results.append(SubjectResult(name, expected, expected, skipped=SDIST_SKIPPED))
            continue
        got = actual.get(name)
        explanation = None
        original = originals / name
        if got is not None and got != expected and original.is_file():
            explanation = compare_files(original, out / name, name)
        results.append(SubjectResult(name, expected, got, explanation))
    return tuple(results)
