"""Rebuild a published wheel again as its publisher built it, when the first rebuild differs.

What the published wheel shows of its build, replayed one thing at a time and kept when nearer:
the name it was published under (no compiled speedups, a universal tag), the publisher's clock
(libfaketime and detpack's file-time preload), umask and sdist modes, the METADATA writer (an older
``wheel`` beside setuptools, older setuptools behind ``bdist_wheel``), and the CMake release that
wrote exported targets files.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from detpack import policy
from detpack.archive.small import dist_info_member, open_zip_small, zip_member
from detpack.build.environment import LineSink
from detpack.errors import ArchiveError, DetpackError, InputError
from detpack.verify import filetimes, pypibuild
from detpack.verify.publisher import (
    PublisherClock,
    extension_always_built,
    faketime_library,
    is_pure,
    publisher_clock,
    publisher_umask,
    sdist_modes_kept,
    speedup_switches,
    wheel_tag,
)
from detpack.verify.pypibuild import Built, How, Outcome, Rebuild, better

#: Releases of ``wheel`` whose metadata writer puts ``Requires-Dist: name (spec)`` (0.40 and older), tried in
#: order: setuptools' own bdist_wheel (70.1 and later) uses an installed ``wheel`` package's writer instead of
#: its vendored one. 0.38.4 also writes RECORD's zip entry as the long-lived 0.3x series did (0.39 changed it).
OLD_METADATA_WRITERS = ("wheel==0.38.4", "wheel==0.40.0")


#: The ``wheel`` release whose metadata writer setuptools' own bdist_wheel uses when it is installed beside it,
#: for a published METADATA that writes ``Requires-Dist: name>=1`` where this build's writer puts ``name >=1``
#: (the copy setuptools 70.1 to 75 vendors, wheel 0.43, spaces it; wheel 0.45 and later do not): the newest
#: as of the upload, as every build requirement of the rebuild (azure-mgmt-dns 9.0.0, its publisher's pipeline
#: installs wheel beside setuptools 75.3.2).
NEWER_METADATA_WRITER = "wheel"

#: ``Requires-Dist: name >=1``, ``name[extra] <2``: a space between the name and its version specifier.
_SPACED = re.compile(rb"^Requires-Dist: [A-Za-z0-9._-]+(\[[^\]]*\])? +[<>=!~]")
#: ``Requires-Dist: name>=1``: none.
_UNSPACED = re.compile(rb"^Requires-Dist: [A-Za-z0-9._-]+(\[[^\]]*\])?[<>=!~]")


def _metadata(wheel: Path) -> bytes:
    try:
        with open_zip_small(wheel) as zf:
            return dist_info_member(zf, "METADATA", str(wheel))
    except ArchiveError:
        return b""


def metadata_writers(generator: str, published: Path, rebuilt: Path) -> tuple[tuple[str, ...], str]:
    """The ``wheel`` releases to install beside setuptools (its bdist_wheel then writes METADATA with theirs),
    each tried in turn, and why, in words: from how the published METADATA writes ``Requires-Dist`` against
    the rebuild's. Nothing for a wheel setuptools did not write."""
    if not generator.startswith("setuptools"):
        return (), ""
    from detpack.verify.causes import unparenthesized

    theirs = _metadata(published).splitlines()  # read once: both questions are asked of it
    if any(unparenthesized(line) != line for line in theirs):
        return OLD_METADATA_WRITERS, "the published METADATA writes 'name (spec)'"
    ours = _metadata(rebuilt).splitlines()
    unspaced = any(_UNSPACED.match(x) for x in theirs) and not any(_SPACED.match(x) for x in theirs)
    if unspaced and any(_SPACED.match(y) for y in ours):
        return (NEWER_METADATA_WRITER,), "the published METADATA writes 'name>=1', this build's 'name >=1'"
    return (), ""


def matching_name(
    rebuild: Rebuild, wheel: Path, how: How, built: Built, step: LineSink
) -> tuple[Built, How, str | None]:
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
            built = pypibuild.rebuild_wheel(rebuild, attempt)
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
        first, built = built, pypibuild.rebuild_wheel(rebuild, attempt)
        if built.path.name == wheel.name:
            how, switch = attempt, "-C--build-option=--universal"
            first.path.unlink(missing_ok=True)
    return built, how, switch


def clock_words(clock: PublisherClock | None, how: How) -> list[str]:
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


def clock_settings(rebuild: Rebuild, wheel: Path, step: LineSink) -> tuple[PublisherClock, dict[str, str], str] | None:
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


def replay(
    rebuild: Rebuild,
    wheel: Path,
    how: How,
    built: Built,
    outcome: Outcome,
    step: LineSink,
    epoch: int | None,
    writers: tuple[tuple[str, ...], str] = ((), ""),
) -> tuple[Built, Outcome, How, PublisherClock | None]:
    """Rebuild again as the published wheel shows the publisher built, keeping whichever rebuild is
    nearest it: built without SOURCE_DATE_EPOCH, under the publisher's clock (the generated files
    carry it); then, when the wheel shows another umask (the mode of ``.dist-info/WHEEL``) or an sdist
    unpacked with its modes as they are, under those too; then with each of ``writers`` (``metadata_writers``)
    beside setuptools. A backend that writes fixed modes (scikit-build-core's 0664 .dist-info) shows a umask it
    did not have: the first attempt stands."""
    attempts: list[tuple[str, How, PublisherClock | None]] = []
    clocked, clock = how, None
    if epoch is None and (settings := clock_settings(rebuild, wheel, step)) is not None:
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
    releases, why = writers
    if releases:
        # The published METADATA writes Requires-Dist as another wheel release does ("name (spec)": 0.40 or older;
        # "name>=1": 0.45 or newer): it was installed beside setuptools, whose bdist_wheel then uses its writer.
        base, base_clock = (attempts[-1][1], attempts[-1][2]) if attempts else (how, None)
        for release in releases:
            writer = dataclasses.replace(base, also_install=(release,))
            attempts.append((f"also with {release} beside setuptools ({why})", writer, base_clock))
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
    best: tuple[Built, Outcome, How, PublisherClock | None] = (built, outcome, how, None)
    keep = rebuild.scratch / "best"  # each attempt writes the same file names (wheel and provenance)
    shutil.rmtree(keep, ignore_errors=True)
    shutil.copytree(rebuild.rebuilt, keep)
    for what, attempt, attempt_clock in attempts:
        if best[1][0] == "byte-identical":
            break
        step(f"rebuilding {what}")
        try:
            again = pypibuild.rebuild_wheel(rebuild, attempt)
            again_outcome = pypibuild.judge(wheel, again.path)
        except DetpackError as exc:  # a backend that cannot run so: the best rebuild so far stands
            step(f"that rebuild failed ({exc.message}); keeping the rebuild before it")
        else:
            if better(again_outcome, best[1]):
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
    with open_zip_small(wheel) as zf:
        for info in zf.infolist():
            if info.filename.endswith("Targets.cmake") and info.file_size < 1 << 20:
                found = _POLICY_RANGE.search(zip_member(zf, info, str(wheel)))
                if found is not None:
                    minor = int(found[1]) + 2
                    return f"==3.{minor}.*" if minor <= 31 else ">=4"
    return None


def only_cmake(outcome: Outcome) -> bool:
    """Whether the only content that differs is in files CMake generates (and RECORD, their hashes)."""
    members = {d.member or "" for d in outcome[1].differences} if outcome[1] is not None else set()
    return bool(members) and all(m.endswith((".cmake", ".dist-info/RECORD")) for m in members)


def replay_cmake(
    rebuild: Rebuild, wheel: Path, how: How, built: Built, outcome: Outcome, step: LineSink
) -> tuple[Built, Outcome, How]:
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
        again = pypibuild.rebuild_wheel(rebuild, again_how)
        again_outcome = pypibuild.judge(wheel, again.path)
    except DetpackError as exc:
        step(f"the rebuild with CMake {series} failed ({exc.message}); keeping the first rebuild")
    else:
        if better(again_outcome, outcome):
            return again, again_outcome, again_how
    shutil.copytree(keep, rebuild.rebuilt, dirs_exist_ok=True)
    return built, outcome, how


#: Caps on the setuptools behind ``bdist_wheel`` (newest first), each the last series to write METADATA as
#: older publishers have it: before 64 a ``Platform: UNKNOWN`` line and another field order (60), before 56 no
#: ``License-File``. Dated resolution gives the newest release below the cap as the index had it.
SETUPTOOLS_CAPS = ("<64", "<60", "<56")


def metadata_differs(outcome: Outcome) -> bool:
    """Whether the published METADATA's content differs from the rebuild's."""
    return outcome[1] is not None and any(
        d.kind == "content" and (d.member or "").endswith(".dist-info/METADATA") for d in outcome[1].differences
    )


def replay_setuptools(
    rebuild: Rebuild, wheel: Path, how: How, built: Built, outcome: Outcome, step: LineSink, pins: Sequence[str]
) -> tuple[Built, Outcome, How]:
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
            again = pypibuild.rebuild_wheel(rebuild, attempt)
            again_outcome = pypibuild.judge(wheel, again.path)
        except DetpackError as exc:
            step(f"that rebuild failed ({exc.message})")
            continue
        if not metadata_differs(again_outcome):
            return again, again_outcome, attempt
    shutil.copytree(keep, rebuild.rebuilt, dirs_exist_ok=True)
    return built, outcome, how
