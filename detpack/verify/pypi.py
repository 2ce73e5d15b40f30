"""``detpack rebuild --pypi NAME==VERSION``: check a published release against a local rebuild.

Fetch the release's sdist from the index's listing (sha256 checked; nothing of it is run, see
``verify.index``) and its wheel through pip (the user's index settings apply), read the backend
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
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from plumbum import local
from plumbum.commands.processes import ProcessExecutionError

from detpack import policy
from detpack.build.config import BuildRequest, FrontendSettings
from detpack.build.environment import LineSink
from detpack.build.pipeline import build_project
from detpack.digest import CHUNK, canonical_json, file_sha256
from detpack.errors import ConfigError, DetpackError, InputError
from detpack.provenance import attestation, reader
from detpack.verify import filetimes
from detpack.verify.causes import BACKEND_VERSION, CLOCK, NOT_IN_SDIST, SDIST_LAYOUT
from detpack.verify.compare import Difference, FileComparison, compare_files, same_bytes
from detpack.verify.index import fetch_sdist, index_url, project_files, release_wheels
from detpack.verify.publisher import (
    CLOCK_SPREAD,
    PublisherClock,
    backend_pins,
    comparable_here,
    extension_always_built,
    faketime_library,
    is_pure,
    publisher_clock,
    publisher_umask,
    sdist_modes_kept,
    speedup_switches,
    wheel_facts,
    wheel_tag,
)

Verdict = Literal["byte-identical", "content-identical", "different"]


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


#: pip's lines that say why, most telling first.
_WHY = (
    re.compile(r"No matching distribution found for .*"),
    re.compile(r"Could not find a version that satisfies the requirement .*"),
    re.compile(r"(?:ERROR: )?(?!Ignored the following)[A-Z].*(?:error|Error|failed).*"),
)


def _why(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "WARNING" not in ln]
    for pattern in _WHY:
        for line in lines:
            m = pattern.search(line)
            if m and "Ignored the following yanked" not in line:
                return m.group(0)
    return lines[-1] if lines else "pip failed"


@dataclass(frozen=True)
class Fetch:
    """Where pip may get the release from: the user's index settings, plus these."""

    find_links: tuple[Path, ...] = ()  # folders (or URLs) pip also looks in
    offline: bool = False  # no index at all: only find_links

    def pip_flags(self) -> list[str]:
        flags = [f for d in self.find_links for f in ("--find-links", str(d))]
        return ["--no-index", *flags] if self.offline else flags


def _download(spec: str, dest: Path, kind: Literal["pure wheel", "wheel"], fetch: Fetch) -> list[Path]:
    """A published wheel, through pip (the user's index settings apply; a wheel runs nothing)."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    flags = {
        # The platform-independent wheel when the release has one (what a pure rebuild can match).
        "pure wheel": ["--only-binary", ":all:", "--platform", "any", "--implementation", "py", "--abi", "none"],
        "wheel": ["--only-binary", ":all:"],
    }[kind]
    try:
        pip = local[sys.executable]["-m", "pip", "download", "--no-deps", *fetch.pip_flags(), *flags]
        pip["-d", str(dest), spec]()
    except ProcessExecutionError as exc:
        raise InputError(f"{spec}: cannot download its {kind} ({_why(str(exc.stderr))})") from None
    # What this download added, or (pip skips a file already there) what matches it by name.
    got = sorted(set(dest.iterdir()) - before)
    return got or sorted(dest.iterdir())


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
        rebuild = _Rebuild(spec, sdist, work / "rebuilt", scratch, fetch, on_step, on_line, caller_env)
        return [_check_wheel(rebuild, wheel, step) for wheel in wheels]


def _fetch_release(spec: str, published: Path, fetch: Fetch, step: LineSink) -> tuple[Path, list[Path]]:
    """The release's sdist and its wheels (the pure one when there is one), downloaded into ``published``."""
    where = f"from --find-links {', '.join(str(d) for d in fetch.find_links)}" if fetch.offline else "with pip"
    name, _, version = spec.partition("==")
    listed = release_wheels(name.strip(), version.strip(), find_links=fetch.find_links, offline=fetch.offline)
    comparable_here(spec, listed)
    step(f"downloading {spec} (sdist and wheel) {where}")
    # Not through pip: pip prepares an sdist's metadata, running its backend (and whatever that
    # builds first); the file, checked against the index's sha256, is all a rebuild needs.
    sdists = [fetch_sdist(name.strip(), version.strip(), published, find_links=fetch.find_links, offline=fetch.offline)]
    try:
        wheels = [p for p in _download(spec, published, "pure wheel", fetch) if p.suffix == ".whl"]
    except InputError:
        wheels = [p for p in _download(spec, published, "wheel", fetch) if p.suffix == ".whl"]
    if not sdists:
        raise InputError(f"{spec}: the index has no .tar.gz sdist for this release")
    return sdists[0], wheels


@dataclass(frozen=True)
class _Rebuild:
    """How every wheel of one release is rebuilt: from which sdist, into where, with which hooks."""

    spec: str
    sdist: Path
    rebuilt: Path  # the rebuilt wheels' directory
    scratch: Path  # for the backend's constraints file
    fetch: Fetch
    on_step: LineSink | None
    on_line: LineSink | None
    caller_env: Mapping[str, str] | None
    #: pip's and uv's upload-time cutoff for every install of the rebuild (empty: none)
    dated: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class _How:
    """How one wheel is rebuilt: the constraints file, the epoch, and what was turned on to match."""

    constraints: Path | None
    epoch: int | None
    variable: str | None = None  # NAME=VALUE: the project's switch for leaving out compiled speedups
    config: Mapping[str, str] = dataclasses.field(default_factory=dict)  # -C settings
    faked: Mapping[str, str] = dataclasses.field(default_factory=dict)  # libfaketime's variables
    umask: int = policy.UMASK  # the publisher's, as the modes of the wheel's generated files show it
    modes_kept: bool = False  # the publisher's frontend unpacked the sdist with its modes as they are
    also_install: tuple[str, ...] = ()  # beside the backend: the publisher's metadata writer (wheel<=0.40)
    setuptools: str | None = None  # the cap on setuptools behind bdist_wheel that writes the publisher's METADATA


@dataclass(frozen=True)
class _Built:
    path: Path
    sha256: str


def _check_wheel(rebuild: _Rebuild, wheel: Path, step: LineSink) -> WheelCheck:
    """Rebuild one published wheel with the backend, build-requirement date and epoch it was made
    with, match its file name, and compare (again under the publisher's clock if that helps)."""
    generator, epoch = wheel_facts(wheel)
    pins = backend_pins(generator)
    uploaded = None if rebuild.fetch.offline else upload_time(rebuild.spec, wheel, step)
    if uploaded is not None:
        day = time.strftime("%Y-%m-%d %H:%M", time.gmtime(uploaded))
        step(f"{wheel.name} was uploaded {day} UTC: build requirements resolved as the index had them then")
        rebuild = dataclasses.replace(rebuild, dated=_as_of(uploaded + 1))
    constraints = None
    if pins:
        constraints = rebuild.scratch / "constraints.txt"
        constraints.write_text("".join(f"{p}\n" for p in pins))
    when = "SOURCE_DATE_EPOCH unset" if epoch is None else f"SOURCE_DATE_EPOCH={epoch}"
    step(f"rebuilding {wheel.name} from {rebuild.sdist.name} with {', '.join(pins) or 'the newest backend'}, {when}")
    how = _How(constraints, epoch)
    built, how, switch = _matching_name(rebuild, wheel, how, _build(rebuild, how), step)
    if built.path.name != wheel.name:
        raise InputError(f"{rebuild.spec}: {_name_mismatch(wheel.name, built.path.name, generator)}")
    outcome = _verdict(wheel, built.path)
    if outcome[0] != "byte-identical" and generator.startswith("bdist_wheel") and _metadata_differs(outcome):
        built, outcome, how = _replay_setuptools(rebuild, wheel, how, built, outcome, step, pins)
    if outcome[0] == "different" and generator.startswith("scikit-build-core") and _only_cmake(outcome):
        built, outcome, how = _replay_cmake(rebuild, wheel, how, built, outcome, step)
    clock = None
    if outcome[0] != "byte-identical":
        old_writer = generator.startswith("setuptools") and _old_writer(wheel)
        built, outcome, how, clock = _replay(rebuild, wheel, how, built, outcome, step, epoch, old_writer)
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
            _clock_words(clock, how)
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


#: Releases of ``wheel`` whose metadata writer puts ``Requires-Dist: name (spec)`` (0.40 and older), tried in
#: order: setuptools' own bdist_wheel (70.1 and later) uses an installed ``wheel`` package's writer instead of
#: its vendored one. 0.38.4 also writes RECORD's zip entry as the long-lived 0.3x series did (0.39 changed it).
OLD_METADATA_WRITERS = ("wheel==0.38.4", "wheel==0.40.0")


def _old_writer(wheel: Path) -> bool:
    """Whether the published METADATA writes a ``Requires-Dist`` as ``name (spec)`` (wheel 0.40 and older)."""
    from detpack.verify.causes import unparenthesized

    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            text = zf.read(names[0]) if len(names) == 1 else b""
    except (OSError, zipfile.BadZipFile, KeyError):
        return False
    return any(unparenthesized(line) != line for line in text.splitlines())


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
        with tarfile.open(sdist) as tf:
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
    with zipfile.ZipFile(wheel) as zf:
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


def _rebuilder_of(built: _Built) -> Mapping[str, Any] | None:
    """The environment the rebuild recorded in the provenance written beside the rebuilt wheel."""
    for path in sorted(built.path.parent.glob("*.provenance.json")):
        record = reader.read_file(path)
        if record.names(built.sha256):
            definition = record.statement.get("predicate", {}).get("buildDefinition", {})
            digest = hashlib.sha256(canonical_json(definition)).hexdigest()
            return attestation.rebuilder_environment(record.statement, digest)
    return None


def _matching_name(
    rebuild: _Rebuild, wheel: Path, how: _How, built: _Built, step: LineSink
) -> tuple[_Built, _How, str | None]:
    """Turn on what the published file name says the publisher had: no compiled speedups (a pure
    wheel), a universal wheel (``py2.py3``). Returns the build, how it was made, and the switch."""
    switch = None
    if built.path.name != wheel.name and is_pure(wheel.name) and not is_pure(built.path.name):
        # The publisher's wheel is pure, this machine compiled the optional speedups: turn them off
        # the way the project documents (a variable its setup.py reads), and say which did it.
        tried = speedup_switches(rebuild.sdist)
        compiled = built
        for candidate in tried:
            step(f"the published wheel is pure, this build compiled speedups: trying {candidate}")
            attempt = dataclasses.replace(how, variable=candidate)
            built = _build(rebuild, attempt)
            if built.path.name == wheel.name:
                how, switch = attempt, candidate
                compiled.path.unlink(missing_ok=True)  # not what is compared; the record beside it is the pure build's
                break
        else:
            looked = f"tried {', '.join(tried)}" if tried else "its build code reads no such variable"
            why = f"(optional compiled speedups) and nothing turned them off ({looked})"
            if not tried and extension_always_built(rebuild.sdist):
                why = (
                    "(its setup.py builds the extension unconditionally: no switch, and not optional=True); the "
                    "published pure wheel was not made from this sdist as it is"
                )
            raise InputError(
                f"{rebuild.spec}: the published {wheel.name} is pure Python, but the sdist builds {built.path.name} "
                f"here {why}"
            )
    if (
        built.path.name != wheel.name
        and wheel_tag(wheel.name) == "py2.py3-none-any"
        and wheel_tag(built.path.name) == "py3-none-any"
    ):
        # A universal wheel: its publisher ran bdist_wheel --universal (or had universal=1 in setup.cfg).
        step("the published wheel is universal (py2.py3): rebuilding with --build-option=--universal")
        attempt = dataclasses.replace(how, config={"--build-option": "--universal"})
        first, built = built, _build(rebuild, attempt)
        if built.path.name == wheel.name:
            how, switch = attempt, "-C--build-option=--universal"
            first.path.unlink(missing_ok=True)
    return built, how, switch


Outcome = tuple[Verdict, FileComparison | None]


def _clock_words(clock: PublisherClock | None, how: _How) -> list[str]:
    """What of the publisher's clock beyond its instant the kept rebuild replayed, in words."""
    if clock is None or "FAKETIME" not in how.faked:
        return []
    words = []
    own = sum(1 for _, end in clock.each if not end.startswith(".dist-info/"))
    if own:
        words.append(f"{own} file{'s' if own > 1 else ''} at {'their' if own > 1 else 'its'} own instant")
    if clock.closed is not None and how.faked["FAKETIME"].startswith(clock.faketime(at_closing=True)):
        words.append(f"clock from {time.strftime('%H:%M:%S', time.gmtime(clock.closed))} (RECORD's time)")
    return words


def _clock_settings(
    rebuild: _Rebuild, wheel: Path, step: LineSink
) -> tuple[PublisherClock, dict[str, str], str] | None:
    """The publisher's clock, the variables that replay it (libfaketime, and detpack's file-time
    preload first: it sees the kernel's file times before libfaketime), and how, in words."""
    found, library = publisher_clock(wheel, rebuild.sdist), faketime_library()
    if found is None:
        return None
    if not found.real:  # a fixed time, not a clock: only the zone the copied files' times were written in
        if found.offset == 0 and found.zone is None:
            return None
        return found, {"TZ": found.tz()}, "the generated files carry a fixed time, not a clock: the zone only"
    if library is None:
        step("the publisher's clock could be replayed with libfaketime: apt-get install faketime")
        return None
    preload, how_files = [str(library)], "libfaketime"
    try:
        preload.insert(0, str(filetimes.library()))
        how_files = "libfaketime; files the build writes stamped at that instant"
    except filetimes.Unavailable as exc:
        step(f"files the build writes keep today's time: the file-time preload is unavailable ({exc})")
    faked = {
        "LD_PRELOAD": " ".join(preload),
        # a fifth of real speed: a backend that zips with its clock (time.time()) some seconds after
        # its process started still stamps the publisher's instant (zip times count in 2 s)
        "FAKETIME": f"{found.faketime()} x{_CLOCK_RATE}",
        "TZ": found.tz(),
        # libfaketime shifts the times some programs stat (CMake's, not Python's) by the fake offset,
        # sdist files' too (CMake's install copies that shift onto the headers): file times are the
        # preload's alone
        "NO_FAKE_STAT": "1",
        # a second's margin: a file the build writes is never older than the build
        **filetimes.variables(int(time.time()) - 1, found.utc, found.each),
    }
    return found, faked, how_files


_CLOCK_RATE = "0.2"
#: The clock's rate when it starts at the published RECORD's time: a twentieth of real speed, so a backend
#: that zips 8,000 members for half a minute (awscli) still closes the wheel within that zip time
_CLOSING_RATE = "0.05"


def _replay(
    rebuild: _Rebuild,
    wheel: Path,
    how: _How,
    built: _Built,
    outcome: Outcome,
    step: LineSink,
    epoch: int | None,
    old_writer: bool = False,
) -> tuple[_Built, Outcome, _How, PublisherClock | None]:
    """Rebuild again as the published wheel shows the publisher built, keeping whichever rebuild is
    nearest it: built without SOURCE_DATE_EPOCH, under the publisher's clock (the generated files
    carry it); then, when the wheel shows another umask (the mode of ``.dist-info/WHEEL``) or an sdist
    unpacked with its modes as they are, under those too. A backend that writes fixed modes
    (scikit-build-core's 0664 .dist-info) shows a umask it did not have: the first attempt stands."""
    attempts: list[tuple[str, _How, PublisherClock | None]] = []
    clocked, clock = how, None
    if epoch is None and (settings := _clock_settings(rebuild, wheel, step)) is not None:
        clock, faked, how_files = settings
        clocked = dataclasses.replace(how, faked=faked)
        attempts.append((f"under the publisher's {clock.describe()} ({how_files})", clocked, clock))
    umask, kept = publisher_umask(wheel), sdist_modes_kept(wheel, rebuild.sdist)
    if (umask is not None and umask != policy.UMASK) or kept:
        masked = dataclasses.replace(clocked, umask=how.umask if umask is None else umask, modes_kept=kept)
        words = [f"umask {masked.umask:04o} (the published .dist-info/WHEEL is mode {0o666 & ~masked.umask:04o})"]
        if kept:
            words.append(
                "the sdist unpacked with its modes as they are (the published copies keep its group-write bits)"
            )
        attempts.append((f"{'also ' if clock else ''}with {' and '.join(words)}", masked, clock))
    if old_writer:
        # The published METADATA writes Requires-Dist as "name (spec)": wheel 0.40 or older was installed
        # beside setuptools, whose bdist_wheel then uses its metadata writer.
        base, base_clock = (attempts[-1][1], attempts[-1][2]) if attempts else (how, None)
        for release in OLD_METADATA_WRITERS:
            writer = dataclasses.replace(base, also_install=(release,))
            said = f"also with {release} beside setuptools (the published METADATA writes 'name (spec)')"
            attempts.append((said, writer, base_clock))
    if clock is not None and clock.closed is not None:
        # bdist_wheel stamps RECORD with the clock as it closes the wheel: the publisher's closed it a zip
        # time or more after the other generated members; each attempt again, the clock started then
        closing = time.strftime("%H:%M:%S", time.gmtime(clock.closed))
        for what, attempt, attempt_clock in list(attempts):
            if attempt_clock is None or "FAKETIME" not in attempt.faked:
                continue
            faked = {**attempt.faked, "FAKETIME": f"{clock.faketime(at_closing=True)} x{_CLOSING_RATE}"}
            said = f"{what}, the clock started at {closing} UTC (the published RECORD's time: the wheel closed)"
            attempts.append((said, dataclasses.replace(attempt, faked=faked), attempt_clock))
    best: tuple[_Built, Outcome, _How, PublisherClock | None] = (built, outcome, how, None)
    keep = rebuild.scratch / "best"  # each attempt writes the same file names (wheel and provenance)
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(rebuild.rebuilt, keep)
    for what, attempt, attempt_clock in attempts:
        if best[1][0] == "byte-identical":
            break
        step(f"rebuilding {what}")
        try:
            again = _build(rebuild, attempt)
            again_outcome = _verdict(wheel, again.path)
        except DetpackError as exc:  # a backend that cannot run so: the best rebuild so far stands
            step(f"that rebuild failed ({exc.message}); keeping the rebuild before it")
        else:
            if _better(again_outcome, best[1]):
                best = (again, again_outcome, attempt, attempt_clock)
                shutil.rmtree(keep)
                shutil.copytree(rebuild.rebuilt, keep)
                continue
        shutil.copytree(keep, rebuild.rebuilt, dirs_exist_ok=True)  # what is compared, with its record
    return best


#: The policy range CMake writes into an exported targets file: ``cmake_policy(VERSION 3.0.0...3.29)``.
#: Its upper end is two minor releases behind the CMake 3 that wrote it (3.25 writes 3.23, 3.31
#: writes 3.29); CMake 4 writes 3.30 and later.
_POLICY_RANGE = re.compile(rb"cmake_policy\(VERSION [0-9.]+\.\.\.3\.(\d+)\)")


def cmake_series(wheel: Path) -> str | None:
    """The CMake release series that wrote the published wheel's exported targets file, as a
    version specifier for scikit-build-core's ``cmake.version`` (``==3.31.*``), or None."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.filename.endswith("Targets.cmake") and info.file_size < 1 << 20:
                found = _POLICY_RANGE.search(zf.read(info))
                if found is not None:
                    minor = int(found[1]) + 2
                    return f"==3.{minor}.*" if minor <= 31 else ">=4"
    return None


def _only_cmake(outcome: Outcome) -> bool:
    """Whether the only content that differs is in files CMake generates (and RECORD, their hashes)."""
    members = {d.member or "" for d in outcome[1].differences} if outcome[1] is not None else set()
    return bool(members) and all(m.endswith((".cmake", ".dist-info/RECORD")) for m in members)


def _replay_cmake(
    rebuild: _Rebuild, wheel: Path, how: _How, built: _Built, outcome: Outcome, step: LineSink
) -> tuple[_Built, Outcome, _How]:
    """Only CMake's generated files differ: rebuild with the CMake release the published targets
    file names (scikit-build-core installs it from the index, dated like every requirement), and
    keep it when it matches better."""
    series = cmake_series(wheel)
    if series is None:
        return built, outcome, how
    step(f"only files CMake generates differ: rebuilding with CMake {series} (scikit-build-core's cmake.version)")
    again_how = dataclasses.replace(how, config={**how.config, "cmake.version": series})
    keep = rebuild.scratch / "first"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(rebuild.rebuilt, keep)
    try:
        again = _build(rebuild, again_how)
        again_outcome = _verdict(wheel, again.path)
    except DetpackError as exc:
        step(f"the rebuild with CMake {series} failed ({exc.message}); keeping the first rebuild")
    else:
        if _better(again_outcome, outcome):
            return again, again_outcome, again_how
    shutil.copytree(keep, rebuild.rebuilt, dirs_exist_ok=True)
    return built, outcome, how


#: Caps on the setuptools behind ``bdist_wheel`` (newest first), each the last series to write METADATA as
#: older publishers have it: before 64 a ``Platform: UNKNOWN`` line and another field order (60), before 56 no
#: ``License-File``. Dated resolution gives the newest release below the cap as the index had it.
SETUPTOOLS_CAPS = ("<64", "<60", "<56")


def _metadata_differs(outcome: Outcome) -> bool:
    """Whether the published METADATA's content differs from the rebuild's."""
    return outcome[1] is not None and any(
        d.kind == "content" and (d.member or "").endswith(".dist-info/METADATA") for d in outcome[1].differences
    )


def _replay_setuptools(
    rebuild: _Rebuild, wheel: Path, how: _How, built: _Built, outcome: Outcome, step: LineSink, pins: Sequence[str]
) -> tuple[_Built, Outcome, _How]:
    """A wheel ``bdist_wheel`` wrote whose METADATA differs: setuptools wrote it, and the newest one below 70.1
    as of the upload need not be the publisher's. Rebuild under older caps (``SETUPTOOLS_CAPS``) and keep the
    first whose METADATA is the published one's (humanfriendly's has no License-File: setuptools<56)."""
    keep = rebuild.scratch / "before-setuptools"
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(rebuild.rebuilt, keep)
    others = [p for p in pins if not p.startswith("setuptools")]
    for i, cap in enumerate(SETUPTOOLS_CAPS):
        constraints = rebuild.scratch / f"constraints-setuptools-{i}.txt"
        constraints.write_text("".join(f"{p}\n" for p in [*others, f"setuptools{cap}"]))
        attempt = dataclasses.replace(how, constraints=constraints, setuptools=cap)
        step(f"the published METADATA differs: rebuilding with setuptools{cap} behind bdist_wheel")
        try:
            again = _build(rebuild, attempt)
            again_outcome = _verdict(wheel, again.path)
        except DetpackError as exc:
            step(f"that rebuild failed ({exc.message})")
            continue
        if not _metadata_differs(again_outcome):
            return again, again_outcome, attempt
    shutil.copytree(keep, rebuild.rebuilt, dirs_exist_ok=True)
    return built, outcome, how


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


def _as_of(when: int) -> dict[str, str]:
    """pip's and uv's "nothing uploaded after": every build requirement, to the last transitive
    one (hatch-vcs's setuptools-scm, the setuptools behind ``bdist_wheel``), as the index had it."""
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return {"PIP_UPLOADED_PRIOR_TO": moment, "UV_EXCLUDE_NEWER": moment}


def _build(rebuild: _Rebuild, how: _How) -> _Built:
    """Build the wheel from the sdist (backend bytes kept) as ``how`` says; every variable it sets
    is passed through, so the rebuild's own provenance records it."""
    caller_env = dict(rebuild.caller_env or os.environ)
    name = None
    if how.variable is not None:
        name, _, value = how.variable.partition("=")
        caller_env[name] = value
    caller_env.update({**rebuild.dated, **how.faked})
    passed = ((name,) if name is not None else ()) + tuple(rebuild.dated) + tuple(how.faked)
    request = BuildRequest(
        srcdir=rebuild.sdist,
        outdir=rebuild.rebuilt,
        distributions=("wheel",),
        frontend=FrontendSettings(
            config_settings=dict(how.config), constraints=how.constraints, also_install=how.also_install
        ),
        epoch_spec="unset" if how.epoch is None else str(how.epoch),
        pass_env=passed,
        normalize=False,
        find_links=rebuild.fetch.find_links,
        offline=rebuild.fetch.offline,
        umask=how.umask,
        sdist_modes_kept=how.modes_kept,
    )
    built = build_project(request, on_step=rebuild.on_step, on_line=rebuild.on_line, caller_env=caller_env)
    return _Built(built.artifacts[0].path, built.artifacts[0].sha256)


def _name_mismatch(published: str, rebuilt: str, generator: str) -> str:
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


_RANK = {"byte-identical": 0, "content-identical": 1, "different": 2}


def _better(a: Outcome, b: Outcome) -> bool:
    """Whether outcome ``a`` is nearer the published wheel than ``b``: a better verdict, or the same
    verdict with fewer differing members, or as many with fewer differences (a mode put right)."""

    def key(o: Outcome) -> tuple[int, int, int]:
        if o[1] is None:
            return _RANK[o[0]], 0, 0
        return _RANK[o[0]], o[1].members_differing, len(o[1].differences)

    return key(a) < key(b)


def _verdict(published: Path, rebuilt: Path) -> tuple[Verdict, FileComparison | None]:
    """Byte-identical; content-identical, with what else differs; or different, with which members."""
    if same_bytes(published, rebuilt):
        return "byte-identical", None
    content = compare_files(published, rebuilt, published.name, content_only=True)
    if content.identical:
        return "content-identical", compare_files(published, rebuilt, published.name)
    return "different", content
