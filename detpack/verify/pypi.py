"""``detpack rebuild --pypi NAME==VERSION``: check a published release against a local rebuild.

Fetch the release's sdist and wheel from the index's listing (sha256 checked; nothing of them is run or
parsed on the way, see ``verify.index``; the user's index settings apply), read the backend
and its version from the wheel's ``WHEEL`` ``Generator:`` line (and what it implies), take the
epoch from the wheel's newest entry time, rebuild the wheel from the sdist in the controlled
environment with that backend pinned, keep the backend's bytes (no normalization: the
published wheel was not normalized either) and classify: byte-identical, content-identical
(only metadata differs: which) or different (which members). A pure published wheel whose sdist
compiles optional speedups here is rebuilt with the project's own switch turned on (a variable
its setup.py reads), recorded; a file name that still differs is said as what it is (a tag, or
a platform).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import hashlib
import os
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack import policy
from detpack.archive.entry import BoundedTarInfo
from detpack.archive.small import open_zip_small, tar_member
from detpack.build.environment import LineSink
from detpack.digest import CHUNK, canonical_json, file_sha256
from detpack.errors import BackendError, ConfigError, DetpackError, InputError
from detpack.provenance import attestation, reader
from detpack.verify import pypibuild, pypireplay
from detpack.verify.causes import BACKEND_VERSION, CLOCK, NOT_IN_SDIST, SDIST_LAYOUT
from detpack.verify.compare import Difference, FileComparison
from detpack.verify.index import fetch_sdist, fetch_wheel, index_url, project_files, release_wheels
from detpack.verify.publisher import CLOCK_SPREAD, backend_pins, comparable_here, is_pure, wheel_facts, wheel_tag
from detpack.verify.pypibuild import Built, Fetch, How, Rebuild, Verdict, as_of

__all__ = ["Fetch", "WheelCheck", "build_time_causes", "rebuild_pypi", "record_problems", "sdist_causes"]


@dataclass(frozen=True)
class WheelCheck:
    wheel: str
    generator: str
    pin: str | None
    epoch: int | None
    verdict: Verdict
    comparison: FileComparison | None
    rebuilt_sha256: str
    published_sha256: str
    record_problems: tuple[str, ...] = ()  # the published wheel against its own RECORD, per the `wheel` project
    switch: str | None = None  # the variable that turned optional compiled speedups off (a pure published wheel)
    clock: str | None = None  # the publisher's clock the rebuild ran under (no SOURCE_DATE_EPOCH)
    #: what else of the publisher's build was replayed ("umask 0002; sdist modes kept; CMake ==3.31.*")
    replayed: str | None = None
    #: the rebuilder's own environment, from the rebuild's provenance (attestation.rebuilder_environment)
    rebuilder: Mapping[str, Any] | None = None
    sdist: str = ""  # the sdist it was rebuilt from: file name
    sdist_sha256: str = ""


def record_problems(wheel: Path) -> tuple[str, ...]:
    """Where a wheel's members disagree with its own RECORD, checked by the ``wheel`` project's reader.

    ``wheel.wheelfile.WheelFile`` parses the file name and RECORD and verifies each member's
    sha256 while it is read; a member changed after the wheel was built, or missing from
    RECORD, is named. Members are streamed, never held whole.
    """
    from wheel.wheelfile import WheelError, WheelFile

    problems: list[str] = []
    try:
        with WheelFile(wheel) as wf:
            for info in wf.infolist():
                if info.is_dir():
                    continue
                try:
                    with wf.open(info) as member:
                        while member.read(CHUNK):
                            pass
                except WheelError as exc:
                    problems.append(str(exc))
    except WheelError as exc:
        return (str(exc),)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{wheel}: not a readable wheel ({exc})") from None
    return tuple(problems)


def rebuild_pypi(
    spec: str,
    *,
    outdir: Path | None = None,
    find_links: tuple[Path, ...] = (),
    offline: bool = False,
    on_step: LineSink | None = None,
    on_line: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> list[WheelCheck]:
    """Rebuild ``spec``'s wheels from its sdist; with ``outdir``, keep ``published/`` and ``rebuilt/`` there."""
    if "==" not in spec:
        raise InputError(f"{spec}: give an exact release, NAME==VERSION")
    if offline and not find_links:
        raise ConfigError(
            f"{spec}: --offline leaves nothing to fetch the release from; "
            "add --find-links DIR holding its sdist and wheel"
        )
    fetch = Fetch(tuple(find_links), offline)
    step = on_step or (lambda _: None)
    caller_env = os.environ if caller_env is None else caller_env
    with tempfile.TemporaryDirectory(prefix="detpack-pypi-") as tmp:
        scratch = Path(tmp)
        work = outdir if outdir is not None else scratch
        sdist, wheels = _fetch_release(spec, work / "published", fetch, step)
        rebuild = Rebuild(spec, sdist, work / "rebuilt", scratch, fetch, on_step, on_line, caller_env)
        return [_check_wheel(rebuild, wheel, step) for wheel in wheels]


def _fetch_release(spec: str, published: Path, fetch: Fetch, step: LineSink) -> tuple[Path, list[Path]]:
    """The release's sdist and its wheels (the pure one when there is one), downloaded into ``published``."""
    where = f"from --find-links {', '.join(str(d) for d in fetch.find_links)}" if fetch.offline else "from the index"
    name, _, version = spec.partition("==")
    listed = release_wheels(name.strip(), version.strip(), find_links=fetch.find_links, offline=fetch.offline)
    comparable_here(spec, listed)
    step(f"downloading {spec} (sdist and wheel) {where}")
    # Not through pip: pip prepares an sdist's metadata, running its backend (and whatever that builds
    # first), and parses a wheel's whole; the files, checked against the index's sha256, are all a rebuild needs.
    sdists = [fetch_sdist(name.strip(), version.strip(), published, find_links=fetch.find_links, offline=fetch.offline)]
    wheels = [fetch_wheel(name.strip(), version.strip(), published, find_links=fetch.find_links, offline=fetch.offline)]
    if not sdists:
        raise InputError(f"{spec}: the index has no .tar.gz sdist for this release")
    return sdists[0], wheels


def _check_wheel(rebuild: Rebuild, wheel: Path, step: LineSink) -> WheelCheck:
    """Rebuild one published wheel with the backend, build-requirement date and epoch it was made
    with, match its file name, and compare (again under the publisher's clock if that helps)."""
    generator, epoch = wheel_facts(wheel)
    pins = backend_pins(generator)
    uploaded = None if rebuild.fetch.offline else upload_time(rebuild.spec, wheel, step)
    if uploaded is not None:
        day = time.strftime("%Y-%m-%d %H:%M", time.gmtime(uploaded))
        step(f"{wheel.name} was uploaded {day} UTC: build requirements resolved as the index had them then")
        rebuild = dataclasses.replace(rebuild, dated=as_of(uploaded + 1))
    constraints = None
    if pins:
        constraints = rebuild.scratch / "constraints.txt"
        constraints.write_text("".join(f"{p}\n" for p in pins))
    when = "SOURCE_DATE_EPOCH unset" if epoch is None else f"SOURCE_DATE_EPOCH={epoch}"
    step(f"rebuilding {wheel.name} from {rebuild.sdist.name} with {', '.join(pins) or 'the newest backend'}, {when}")
    how = How(constraints, epoch)
    try:
        first = pypibuild.rebuild_wheel(rebuild, how)
    except BackendError as exc:
        installing = "installing the build requirements" in exc.message
        why = before_the_fallback(rebuild.spec, uploaded, rebuild.sdist) if installing and uploaded else None
        if why is None:
            raise
        raise InputError(why) from None
    built, how, switch = pypireplay.matching_name(rebuild, wheel, how, first, step)
    if built.path.name != wheel.name:
        raise InputError(f"{rebuild.spec}: {name_mismatch(wheel.name, built.path.name, generator)}")
    outcome = pypibuild.judge(wheel, built.path)
    if outcome[0] != "byte-identical" and generator.startswith("bdist_wheel") and pypireplay.metadata_differs(outcome):
        built, outcome, how = pypireplay.replay_setuptools(rebuild, wheel, how, built, outcome, step, pins)
    if outcome[0] == "different" and generator.startswith("scikit-build-core") and pypireplay.only_cmake(outcome):
        built, outcome, how = pypireplay.replay_cmake(rebuild, wheel, how, built, outcome, step)
    clock = None
    if outcome[0] != "byte-identical":
        writers = pypireplay.metadata_writers(generator, wheel, built.path)
        built, outcome, how, clock = pypireplay.replay(rebuild, wheel, how, built, outcome, step, epoch, writers)
        outcome = (outcome[0], build_time_causes(sdist_causes(outcome[1], rebuild.sdist), wheel))
    return WheelCheck(
        wheel.name,
        generator,
        pins[0] if pins else None,
        epoch,
        outcome[0],
        outcome[1],
        built.sha256,
        file_sha256(wheel),
        record_problems(wheel),
        switch,
        clock.describe() if clock is not None else None,
        "; ".join(
            pypireplay.clock_words(clock, how)
            + ([f"umask {how.umask:04o}"] if how.umask != policy.UMASK else [])
            + (["sdist modes kept"] if how.modes_kept else [])
            + ([f"CMake {how.config['cmake.version']}"] if "cmake.version" in how.config else [])
            + [f"{r} beside the backend (the publisher's metadata writer)" for r in how.also_install]
            + ([f"setuptools{how.setuptools} (the publisher's METADATA writer)"] if how.setuptools else [])
        )
        or None,
        _rebuilder_of(built),
        rebuild.sdist.name,
        file_sha256(rebuild.sdist),
    )


def sdist_causes(comparison: FileComparison | None, sdist: Path) -> FileComparison | None:
    """Name what the sdist shows of a member only one wheel holds, when nothing else named it: a member
    only the published wheel has that the sdist does not hold came from another tree (a checkout, a
    stale ``build/``: pre-commit-hooks' modules deleted a release before); one the sdist holds was left
    out by the build from it (a config written for the repository's layout)."""
    if comparison is None or not any(
        d.kind in ("removed", "added") and d.cause is None for d in comparison.differences
    ):
        return comparison
    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            paths = {m.name.split("/", 1)[1] for m in tf if m.isfile() and "/" in m.name}
    except (tarfile.TarError, OSError, EOFError):
        return comparison
    tails = {"/".join(p.split("/")[i:]) for p in paths for i in range(p.count("/") + 1)}

    def named(d: Difference) -> Difference:
        if d.cause is not None or d.kind not in ("removed", "added") or d.member is None:
            return d
        member = d.member
        generated = member.split("/", 1)[0].endswith(".dist-info")
        held = (member.rsplit("/", 1)[-1] in tails) if generated else (member in tails)
        where = "the published wheel" if d.kind == "removed" else "the rebuild"
        if not held and d.kind == "removed":
            return dataclasses.replace(
                d, cause=NOT_IN_SDIST, evidence=f"only {where} has it; the sdist has no such file"
            )
        if held and d.kind == "removed" and not generated:
            said = f"only {where} has it; the sdist holds it, and the build from it left it out"
            return dataclasses.replace(d, cause=SDIST_LAYOUT, evidence=said)
        if held and generated:
            said = f"only {where} has it; the sdist holds the file: which backend version copies it into .dist-info"
            return dataclasses.replace(d, cause=BACKEND_VERSION, evidence=said)
        return d

    return dataclasses.replace(comparison, differences=tuple(named(d) for d in comparison.differences))


#: How the evidence of build_time_causes begins (a published copy of an sdist file stamped at build time).
WRITTEN_AT_BUILD_TIME = "the published copy's time"


def build_time_causes(comparison: FileComparison | None, wheel: Path) -> FileComparison | None:
    """Name a member time nothing else explained when the published copy carries the time its build stamped
    the generated ``.dist-info`` files with (within a minute): the publisher's source files were written at
    build time (a fresh checkout or copy), not unpacked from this sdist with their times (mistral-common)."""
    if comparison is None or not any(d.attribute == "date_time" and d.cause is None for d in comparison.differences):
        return comparison
    with open_zip_small(wheel) as zf:
        stamps = {
            calendar.timegm((*i.date_time, 0, 0, 0))
            for i in zf.infolist()
            if i.filename.split("/", 1)[0].endswith(".dist-info")
        }
    if not stamps:
        return comparison
    first, last = min(stamps), max(stamps)

    def named(d: Difference) -> Difference:
        if d.attribute != "date_time" or d.cause is not None or not isinstance(d.a, str):
            return d
        try:
            t = calendar.timegm(time.strptime(d.a, "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            return d
        if not first - CLOCK_SPREAD <= t <= last + CLOCK_SPREAD:
            return d
        said = (
            f"{WRITTEN_AT_BUILD_TIME} {d.a} is its build's (the .dist-info files'), not the sdist file's: the "
            "publisher's source files were written at build time (a fresh checkout), not unpacked from this sdist"
        )
        return dataclasses.replace(d, cause=CLOCK, evidence=said)

    return dataclasses.replace(comparison, differences=tuple(named(d) for d in comparison.differences))


def _rebuilder_of(built: Built) -> Mapping[str, Any] | None:
    """The environment the rebuild recorded in the provenance written beside the rebuilt wheel."""
    for path in sorted(built.path.parent.glob("*.provenance.json")):
        record = reader.read_file(path)
        if record.names(built.sha256):
            definition = record.statement.get("predicate", {}).get("buildDefinition", {})
            digest = hashlib.sha256(canonical_json(definition)).hexdigest()
            return attestation.rebuilder_environment(record.statement, digest)
    return None


#: When setuptools 40.8.0 reached the index: the first with ``build_meta:__legacy__``, the backend PEP 517
#: gives a project that names no build requirements, with ``setuptools>=40.8.0``.
LEGACY_FALLBACK_SINCE = calendar.timegm((2019, 2, 5, 0, 0, 0))


def before_the_fallback(spec: str, uploaded: int, sdist: Path) -> str | None:
    """Why a release uploaded before ``LEGACY_FALLBACK_SINCE`` whose sdist names no build requirements cannot
    be rebuilt as of its upload (the index then had no setuptools a PEP 517 build of it may use), or None."""
    if uploaded >= LEGACY_FALLBACK_SINCE or _names_build_requirements(sdist):
        return None
    day = time.strftime("%Y-%m-%d", time.gmtime(uploaded))
    return (
        f"{spec}: not rebuilt as of its upload ({day}): its sdist names no build requirements (no [build-system] "
        "requires in a pyproject.toml), so a PEP 517 build needs setuptools>=40.8.0, which the index did not have "
        "before 2019-02-05; a newer setuptools would not be the publisher's build (rebuild it with the tools of its "
        "time, e.g. detpack build --toolchain with an image of then)"
    )


def _names_build_requirements(sdist: Path) -> bool:
    """Whether the sdist's top-level pyproject.toml has ``[build-system] requires`` (unreadable: assumed so)."""
    import tomllib

    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            for info in tf:
                if info.isfile() and info.name.count("/") == 1 and info.name.endswith("/pyproject.toml"):
                    table = tomllib.loads(tar_member(tf, info, str(sdist)).decode("utf-8")).get("build-system")
                    return isinstance(table, dict) and "requires" in table
    except (DetpackError, tarfile.TarError, OSError, EOFError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True
    return False


def upload_time(spec: str, wheel: Path, step: LineSink) -> int | None:
    """When the index received the published wheel (seconds since the epoch): its build
    environment can have held nothing newer."""
    name = spec.split("==", 1)[0].strip()
    try:
        uploaded = next((f.uploaded for f in project_files(index_url(), name) if f.filename == wheel.name), None)
    except InputError as exc:
        step(f"cannot read the index's upload time of {wheel.name} ({exc.message}); build requirements not dated")
        return None
    if uploaded is None:
        return None
    try:
        return int(dt.datetime.fromisoformat(uploaded.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def name_mismatch(published: str, rebuilt: str, generator: str) -> str:
    """Why the rebuild's file name is not the published one, in words: a tag is not a platform."""
    ours, theirs = wheel_tag(rebuilt), wheel_tag(published)
    if is_pure(published) and is_pure(rebuilt):
        hint = ""
        if theirs.startswith("py2.py3") and not ours.startswith("py2.py3"):
            hint = (
                f" (a universal wheel, made by {generator or 'its backend'}; the backend resolved here did not "
                "make one, even with --build-option=--universal)"
            )
        return (
            f"the published wheel is tagged {theirs}, this build makes {ours}: a tag difference, not a platform "
            f"one{hint}; the wheel cannot match byte for byte"
        )
    if is_pure(rebuilt):
        return f"the published {published} is platform-specific ({theirs}); the sdist builds a pure {rebuilt} here"
    return (
        f"the published {published} is for {theirs}; this machine builds {ours} (a platform-specific wheel is "
        "rebuilt only on its own platform)"
    )
