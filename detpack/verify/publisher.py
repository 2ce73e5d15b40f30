"""What a published wheel and its sdist tell of the publisher's build, read before anything is rebuilt:
the backend and its version (the ``Generator:`` line), the switches that leave compiled speedups out,
whether the release can be compared here at all, the publisher's clock, zone and umask, the modes its
frontend kept, and the SOURCE_DATE_EPOCH it most likely had (``verify.pypi`` rebuilds with them).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
import stat
import tarfile
import time
import zipfile
import zoneinfo
from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from detpack.archive.entry import BoundedTarInfo
from detpack.archive.small import open_zip_small, zip_member
from detpack.errors import InputError

#: ``Generator:`` value -> the requirement that pins the backend that wrote it (and what else
#: that implies: ``bdist_wheel (x)`` is the ``wheel`` project's command, which setuptools
#: delegated to before it carried its own in 70.1).
_GENERATORS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (re.compile(r"^flit (?P<v>\S+)"), "flit_core", ()),
    (re.compile(r"^hatchling (?P<v>\S+)"), "hatchling", ()),
    (re.compile(r"^poetry-core (?P<v>\S+)"), "poetry-core", ()),
    (re.compile(r"^poetry (?P<v>\S+)"), "poetry-core", ()),
    (re.compile(r"^setuptools \((?P<v>[^)]+)\)"), "setuptools", ()),
    (re.compile(r"^bdist_wheel \((?P<v>[^)]+)\)"), "wheel", ("setuptools<70.1",)),
    (re.compile(r"^pdm-backend \((?P<v>[^)]+)\)"), "pdm-backend", ()),
    (re.compile(r"^pdm-backend (?P<v>\S+)"), "pdm-backend", ()),
    (re.compile(r"^scikit-build-core (?P<v>\S+)"), "scikit-build-core", ()),
    (re.compile(r"^maturin \((?P<v>[^)]+)\)"), "maturin", ()),
    (re.compile(r"^uv (?P<v>\d\S*)"), "uv_build", ()),
    (re.compile(r"^meson-python (?P<v>\S+)"), "meson-python", ()),
)


#: Environment variables a setup.py reads to leave out optional compiled speedups (simplejson's
#: DISABLE_SPEEDUPS, msgpack's MSGPACK_PUREPYTHON, ...): a name holding one of these words.
_SWITCH_WORDS = ("PURE", "SPEEDUP", "NO_EXT", "NOEXT", "NO_CEXT", "DISABLE", "WITHOUT", "NO_C_EXT", "SKIP_EXT")


#: ... and the ones that turn them *on* (wrapt's WRAPT_INSTALL_EXTENSIONS): "false" turns them off.
_ON_WORDS = ("INSTALL_EXT", "WITH_EXT", "BUILD_EXT")


#: An upper-case string literal: a variable's name, read directly or through a constant
#: (frozenlist's in-tree backend: PURE_PYTHON_ENV_VAR = 'FROZENLIST_NO_EXTENSIONS').
_NAME_LITERAL = re.compile(r"""['"]([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)['"]""")


#: values that mean "off" when build code compares a switch variable with them
_OFF_VALUES = ("no", "0", "false", "off", "n")


def _compared_values(text: str, name: str) -> list[str]:
    """The literals build code compares ``os.environ.get("NAME")`` / ``getenv("NAME")`` with (== or !=)."""
    pattern = re.compile(
        r"""(?:environ\.get|getenv)\(\s*['"]""" + re.escape(name) + r"""['"][^)]*\)\s*[!=]=\s*['"]([^'"]{1,16})['"]"""
    )
    return list(dict.fromkeys(pattern.findall(text)))


def backend_pin(generator: str) -> str | None:
    """The requirement pinning the backend a ``Generator:`` line names (None: not known)."""
    pins = backend_pins(generator)
    return pins[0] if pins else None


def backend_pins(generator: str) -> tuple[str, ...]:
    """Every constraint a ``Generator:`` line implies, the backend's exact pin first."""
    for pattern, requirement, implied in _GENERATORS:
        m = pattern.match(generator.strip())
        if m:
            return (f"{requirement}=={m['v']}", *implied)
    return ()


def speedup_switches(sdist: Path) -> tuple[str, ...]:
    """``NAME=VALUE`` settings the sdist's build code (its setup.py, an in-tree backend) names that
    look like "leave the C speedups out", in the order found."""
    found: list[str] = []
    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            for info in tf:
                parts = info.name.split("/")
                build_code = parts[-1] == "setup.py" or any("backend" in p or p == "build_helpers" for p in parts[1:-1])
                if not (info.isfile() and info.name.endswith(".py") and len(parts) <= 5 and build_code):
                    continue
                data = tf.extractfile(info)
                text = data.read(1 << 20).decode("utf-8", "replace") if data else ""
                if "environ" not in text and "getenv" not in text:
                    continue
                for name in _NAME_LITERAL.findall(text):
                    if any(w in name for w in _ON_WORDS):
                        # the value the code compares it with to mean "off" (websockets: == "no"), else false
                        said = _compared_values(text, name)
                        off = [v for v in said if v.lower() in _OFF_VALUES] or ["false"]
                        found += [f"{name}={v}" for v in off]
                    elif any(w in name for w in _SWITCH_WORDS) and "REQUIRE" not in name:
                        found.append(f"{name}=1")
    except (tarfile.TarError, OSError, EOFError):
        return ()
    return tuple(dict.fromkeys(found))


def extension_always_built(sdist: Path) -> bool:
    """Whether the sdist's top-level ``setup.py`` declares an ``Extension`` and never marks one optional nor
    reads the environment (protobuf: its pure wheel comes from another source tree, not this sdist)."""
    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            for info in tf:
                parts = info.name.split("/")
                if len(parts) == 2 and parts[1] == "setup.py" and info.isfile():
                    data = tf.extractfile(info)
                    text = data.read(1 << 20).decode("utf-8", "replace") if data else ""
                    named = "Extension(" in text
                    switched = "optional=" in text or ("environ" in text and _NAME_LITERAL.search(text) is not None)
                    return named and not switched
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def comparable_here(spec: str, wheels: Sequence[str]) -> None:
    """Refuse, before anything is downloaded or built, a release whose published wheels are all for platforms
    a build here cannot name-match: a pure wheel is compared anywhere, a platform wheel only when its tag is
    the plain one this machine's build makes (``linux_x86_64``: PyPI takes only manylinux and musllinux
    wheels, made in their own build images). No wheel listed: the download says so."""
    import sysconfig

    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    if not wheels or any(is_pure(w) for w in wheels):
        return
    plain = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    here = {t for t in sys_tags() if t.platform == plain}
    if any(set(parse_wheel_filename(w)[3]) & here for w in wheels):
        return
    platforms = sorted({t.platform for w in wheels for t in parse_wheel_filename(w)[3]})
    shown = ", ".join(platforms[:4]) + (f" and {len(platforms) - 4} more" if len(platforms) > 4 else "")
    raise InputError(
        f"{spec}: not comparable here: platform wheels only ({len(wheels)} published, for {shown}); a build "
        f"on this machine makes {plain} wheels, so none could match byte for byte (rebuild them in the "
        "publisher's build image, e.g. detpack build --toolchain with a manylinux image)"
    )


def wheel_tag(filename: str) -> str:
    """``py3-none-any`` of ``name-1.0-py3-none-any.whl``."""
    return "-".join(filename.removesuffix(".whl").split("-")[-3:])


def is_pure(filename: str) -> bool:
    return wheel_tag(filename).endswith("-none-any")


@dataclass(frozen=True)
class PublisherClock:
    """When the publisher's build stamped its generated files, and its UTC offset, as the published
    wheel shows them (for a build made without SOURCE_DATE_EPOCH)."""

    utc: int  # the instant (seconds since the epoch) of the generated .dist-info members' time
    offset: int  # seconds east of UTC the zip times were written in (0: the writer stamps UTC)
    #: the IANA zone, when one offset does not explain every copied file (daylight saving time)
    zone: str | None = None
    #: False when that instant is older than the sdist's newest file: a fixed time the backend writes
    #: (flit's 2016-01-01) or a copied file's, not a clock; only the zone is replayed then
    real: bool = True
    #: Files the publisher's build wrote at another instant than that one (seconds since the epoch,
    #: and the end of the path such a file has in a build: ``.egg-info/top_level.txt``), from their
    #: members' times: setuptools' egg_info files, copied into the .dist-info a zip time or two later
    each: tuple[tuple[int, str], ...] = ()
    #: When the publisher's backend closed the wheel, when its RECORD (stamped with the clock, not a
    #: file's time, by bdist_wheel) is later than the other generated members: a rebuild whose clock
    #: starts at ``utc`` can close its wheel sooner, so another starts it there
    closed: int | None = None

    def tz(self) -> str:
        """The zone, or a POSIX TZ with that offset (POSIX counts west: UTC+2 is ``<+0200>-02:00``)."""
        if self.zone is not None:
            return self.zone
        sign, value = ("+", self.offset) if self.offset >= 0 else ("-", -self.offset)
        hours, minutes = divmod(value // 60, 60)
        west = "-" if sign == "+" else ""
        return f"<{sign}{hours:02d}{minutes:02d}>{west}{hours:02d}:{minutes:02d}"

    def faketime(self, at_closing: bool = False) -> str:
        """libfaketime's start-at form, in that zone's local time (the clock runs on from there);
        ``at_closing``: from when the wheel was closed (``closed``) instead."""
        local = time.gmtime(((self.closed if at_closing else None) or self.utc) + self.offset)
        return "@" + time.strftime("%Y-%m-%d %H:%M:%S", local)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.utc))
        hours, minutes = divmod(abs(self.offset) // 60, 60)
        if not self.real:
            return f"timezone {self.zone or ''}".rstrip() + (
                "" if self.zone else f" UTC{'+' if self.offset >= 0 else '-'}{hours:02d}:{minutes:02d}"
            )
        if self.zone is not None:
            return f"clock {when} {self.zone}"
        return f"clock {when} UTC{'+' if self.offset >= 0 else '-'}{hours:02d}:{minutes:02d}"


def publisher_clock(wheel: Path, sdist: Path) -> PublisherClock | None:
    """The publisher's clock from the wheel's generated members, and its UTC offset from members
    copied out of the sdist (their zip time against the sdist's mtime: a zip time is local); with
    the members the publisher's build wrote at other instants of that clock (see PublisherClock)."""
    with open_zip_small(wheel) as zf:
        infos = zf.infolist()
    found = _publisher_clock(infos, sdist)
    if found is None or not found.real:
        return found
    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            held = {m.name.split("/", 1)[1]: m.name for m in tf if m.isfile() and "/" in m.name}
    except (tarfile.TarError, OSError, EOFError):
        held = {}
    copies = {info.filename for info, _ in _copied_from(infos, held)}
    return dataclasses.replace(found, **_other_instants(infos, found, copies))


#: How long before the generated members' instant a member's time still shows a file the publisher's
#: build wrote (egg_info runs seconds before bdist_wheel zips; a large package's build_py a minute).
_BUILD_WINDOW = 120


#: How long after it the wheel's RECORD can show the clock at closing (a large wheel's zipping).
_CLOSING_WINDOW = 30


def _other_instants(infos: list[zipfile.ZipInfo], found: PublisherClock, copies: Set[str]) -> dict[str, Any]:
    """``each`` and ``closed`` for PublisherClock: members stamped within _BUILD_WINDOW before the
    generated members' instant (files the build wrote then; not ``copies``, the members the sdist
    holds, whose rebuilt copies keep the sdist's times: transformers' 3,000 modules checked out a
    minute before), each with the path ends its file has in a build (a .dist-info file is a copy of
    the .egg-info's), at most _MOST_EACH of them (the variable is one argument of the build's sandbox);
    and the RECORD's instant when it is up to _CLOSING_WINDOW later (bdist_wheel stamps RECORD with
    the clock as it closes the wheel, every other member with its file's time)."""
    stamped = found.utc + found.offset  # zip times are local
    each: list[tuple[int, str]] = []
    closed = None
    for info in infos:
        when = calendar.timegm((*info.date_time, 0, 0, 0))
        name = info.filename
        top, _, rest = name.partition("/")
        if top.endswith(".dist-info") and rest == "RECORD":
            if stamped < when <= stamped + _CLOSING_WINDOW:
                closed = when - found.offset
            continue
        if name.endswith("/") or name in copies or not stamped - _BUILD_WINDOW <= when < stamped:
            continue
        if top.endswith(".dist-info"):
            each += [(when - found.offset, f".egg-info/{rest}"), (when - found.offset, f".dist-info/{rest}")]
        else:
            each.append((when - found.offset, f"/{name}"))
    if len(each) > _MOST_EACH:  # the .dist-info's first (they come last in a wheel)
        each = sorted(each, key=lambda e: not e[1].startswith((".egg-info/", ".dist-info/")))[:_MOST_EACH]
    return {"each": tuple(each), "closed": closed}


#: The most files given their own instant (a file's path end is up to a few hundred bytes; an
#: argument is at most 128 KiB).
_MOST_EACH = 256


def _publisher_clock(infos: list[zipfile.ZipInfo], sdist: Path) -> PublisherClock | None:
    generated = [i for i in infos if i.filename.split("/", 1)[0].endswith(".dist-info")]
    if not generated:
        return None
    stamps = Counter(calendar.timegm((*i.date_time, 0, 0, 0)) for i in generated)
    stamped = max(stamps.items(), key=lambda kv: (kv[1], kv[0]))[0]
    mtimes: dict[str, float] = {}
    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            for info in tf:
                if info.isfile() and "/" in info.name:
                    mtimes[info.name.split("/", 1)[1]] = info.mtime
    except (tarfile.TarError, OSError, EOFError):
        mtimes = {}
    copied = _copied_from(infos, mtimes)
    offsets = Counter(round((calendar.timegm((*i.date_time, 0, 0, 0)) - mtime) / 900) * 900 for i, mtime in copied)
    # A real UTC offset is within +-14 h and shared by most copied members; anything else means the
    # backend wrote its own times (not file times), and the zip times are taken as UTC.
    offset, agreeing = offsets.most_common(1)[0] if offsets else (0, 0)
    if abs(offset) > _MAX_OFFSET or agreeing * 2 <= sum(offsets.values()) or not _a_zones(offset, stamped - offset):
        offset = 0
    elif agreeing < len(copied) and (zone := _zone_of(copied)) is not None:
        # some files in summer time, some in winter: a zone with daylight saving time wrote them
        where = zoneinfo.ZoneInfo(zone)
        shift = where.utcoffset(dt.datetime.fromtimestamp(stamped - offset, dt.UTC).replace(tzinfo=None))
        local_offset = int(shift.total_seconds()) if shift is not None else offset
        return PublisherClock(stamped - local_offset, local_offset, zone, _real(stamped - local_offset, mtimes))
    return PublisherClock(stamped - offset, offset, real=_real(stamped - offset, mtimes))


def _a_zones(offset: int, instant: int) -> bool:
    """Whether some zone was ``offset`` seconds east of UTC at ``instant``: copies 32 minutes newer than the
    sdist's files (sqlalchemy's modules, written at build time) round to +00:30, which no zone has."""
    if offset == 0:
        return True
    when = dt.datetime.fromtimestamp(instant, dt.UTC)
    for name in zoneinfo.available_timezones():
        try:
            shift = when.astimezone(zoneinfo.ZoneInfo(name)).utcoffset()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            continue
        if shift is not None and int(shift.total_seconds()) == offset:
            return True
    return False


def _real(instant: int, mtimes: Mapping[str, float]) -> bool:
    """Whether ``instant`` can be when the publisher built: not before the sdist's newest file (2 s
    of zip-time rounding allowed), leaving out the files the sdist's own build writes (PKG-INFO, the
    ``.egg-info``, the ``setup.cfg`` setuptools rewrites): made after the wheel, they are newer
    (transformers' sdist, 3 s after its wheel)."""
    sources = [t for path, t in mtimes.items() if not _written_by_sdist(path)]
    return not sources or instant + 2 >= max(sources)


def _written_by_sdist(path: str) -> bool:
    """Whether an sdist member (below its top directory) is one the sdist's build writes, not a source file."""
    return path in ("PKG-INFO", "setup.cfg") or ".egg-info/" in f"{path}/"


def _zone_of(copied: list[tuple[zipfile.ZipInfo, float]]) -> str | None:
    """The IANA zone whose local time gives every copied file's zip time from its sdist mtime (a
    zip time is local and counts in 2 s), preferring a zone named for its rules (CET) over a city;
    only a zone this system's C library can load (the build reads TZ through it)."""
    for name in sorted(zoneinfo.available_timezones(), key=lambda n: ("/" in n, n)):
        if not (_SYSTEM_ZONES / name).is_file():
            continue
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            continue
        if all(
            -1
            < (
                dt.datetime.fromtimestamp(mtime, zone).replace(tzinfo=None) - dt.datetime(*info.date_time)
            ).total_seconds()
            < 3
            for info, mtime in copied
        ):
            return name
    return None


_SYSTEM_ZONES = Path("/usr/share/zoneinfo")


_MAX_OFFSET = 14 * 3600


_T = TypeVar("_T")


def publisher_umask(wheel: Path) -> int | None:
    """The umask the publisher built under, from the mode of the ``.dist-info/WHEEL`` file its
    backend wrote afresh (other .dist-info files can be copies; RECORD has a fixed mode): its group
    and other bits, when it is a plain file's mode. None when the wheel does not show it (a backend
    that writes fixed modes shows 0022)."""
    with open_zip_small(wheel) as zf:
        infos = zf.infolist()
    modes = {
        i.external_attr >> 16
        for i in infos
        if i.filename.count("/") == 1
        and i.filename.split("/")[0].endswith(".dist-info")
        and i.filename.endswith("/WHEEL")
    }
    if len(modes) != 1:
        return None
    mode = modes.pop()
    if not stat.S_ISREG(mode) or mode & 0o7111 or mode & 0o600 != 0o600:
        return None  # not a file's mode as written (no type, executable, or not the owner's rw)
    return 0o066 & ~mode


def sdist_modes_kept(wheel: Path, sdist: Path) -> bool:
    """Whether the publisher's frontend unpacked the sdist with its files' modes as they are (before
    PEP 706's extraction filters): the wheel's copies of its group- or other-writable files keep
    those bits."""
    try:
        with tarfile.open(sdist, tarinfo=BoundedTarInfo) as tf:
            modes = {m.name.split("/", 1)[1]: m.mode for m in tf if m.isfile() and "/" in m.name and m.mode & 0o022}
    except (tarfile.TarError, OSError, EOFError):
        return False
    with open_zip_small(wheel) as zf:
        copied = _copied_from(zf.infolist(), modes)
    # every copy keeps them (setuptools writes modules afresh under the umask: they keep them either
    # way; a package data file copied from a data-filtered sdist does not)
    return bool(copied) and all((info.external_attr >> 16) & 0o022 == mode & 0o022 for info, mode in copied)


def _copied_from(infos: list[zipfile.ZipInfo], mtimes: Mapping[str, _T]) -> list[tuple[zipfile.ZipInfo, _T]]:
    """The wheel's members copied from the sdist, each with its file's value there (mtime, mode): the member's
    path in the sdist (below its top directory), or the one sdist path ending in it (a ``src/``
    layout, a package under another directory)."""
    by_tail: dict[str, list[str]] = {}
    for path in mtimes:
        parts = path.split("/")
        for start in range(1, len(parts)):
            by_tail.setdefault("/".join(parts[start:]), []).append(path)
    found = []
    for info in infos:
        if info.filename in mtimes:
            found.append((info, mtimes[info.filename]))
        elif len(candidates := by_tail.get(info.filename, [])) == 1:
            found.append((info, mtimes[candidates[0]]))
    return found


def faketime_library() -> Path | None:
    """libfaketime (Debian's faketime package), which fakes the clock a build's processes read."""
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1"):
        for found in sorted(Path("/").glob(pattern.lstrip("/"))):
            return found
    return None


def wheel_facts(wheel: Path) -> tuple[str, int | None]:
    """The ``Generator:`` of a wheel and the SOURCE_DATE_EPOCH its build most likely had.

    Backends stamp the files they generate (``.dist-info``) with SOURCE_DATE_EPOCH when it is
    set, and every other member too. When the members' times vary while the ``.dist-info``
    ones agree, the publisher had no SOURCE_DATE_EPOCH: ``None``. So too when those generated files
    were stamped over a few seconds of a clock (a large wheel's RECORD, written last, a zip time or
    two after METADATA: awscli's 8,000 members): an epoch, clamped or not, stamps them all alike.
    """
    with open_zip_small(wheel) as zf:
        names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/WHEEL")]
        if not names:
            raise InputError(f"{wheel}: no .dist-info/WHEEL inside; not a wheel")
        lines = zip_member(zf, names[0], str(wheel)).decode("utf-8", "replace").splitlines()
        generator = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Generator:")), "")
        prefix = names[0].rsplit("/", 1)[0] + "/"
        times = {i.filename: calendar.timegm((*i.date_time, 0, 0, 0)) for i in zf.infolist()}
    generated = (f"{prefix}WHEEL", f"{prefix}METADATA", f"{prefix}RECORD")
    meta = {t for n, t in times.items() if n in generated}
    if len(set(times.values())) == 1:
        return generator, next(iter(times.values()))
    if len(meta) == 1 or (meta and max(meta) - min(meta) <= CLOCK_SPREAD):
        return generator, None
    return generator, max(times.values())


#: How far apart a clock can stamp a wheel's generated .dist-info files (WHEEL, METADATA, RECORD).
CLOCK_SPREAD = 60
