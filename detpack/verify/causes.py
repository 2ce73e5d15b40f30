"""Likely causes of differences, from evidence in the two archives, never guesswork.

Each rule looks at one difference and the facts around it (the two values, when each file
was written, the bytes near the first differing offset) and either names a cause with the
evidence it used, or says nothing. Rules, in order of preference:

- times apart by a whole number of hours (up to 26, not 24) -> timezone
- times near the moment the archive was written, on a side
  whose record beside it does not give that very time as
  its SOURCE_DATE_EPOCH                                     -> clock (SOURCE_DATE_EPOCH ignored)
- modes apart only in group/other write bits, on more than
  one member of the side that has them, whose record (if
  any) does not say a umask that clears them               -> umask
- a wheel's RECORD at 0664 (wheel's writer sets it)        -> a mode the archive writer sets itself
- the same text with CRLF line endings, zip made by MS-DOS -> built on another operating system
- owners differ                                          -> build user
- the same lines in another order inside a member         -> ordering (hash seed / set order)
- an absolute, build-like path on one side where the other
  has another (see ``_absolute_path_at``)                  -> build path
- the same tokens in another order inside a line          -> ordering (hash seed / set order)
- WHEEL Generator or Metadata-Version differ              -> backend version
- same members in another order                           -> file ordering
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

from detpack import policy

CLOCK = "clock / SOURCE_DATE_EPOCH ignored"
TIMEZONE = "timezone"
UMASK = "umask"
BUILD_USER = "build user"
BUILD_PATH = "build path"
HASH_ORDER = "ordering inside a file (hash seed / set order)"
BACKEND_VERSION = "backend or build plugin version"
FILE_ORDER = "file ordering"
ZIP_TOOL = "zip writer or backend version"
GZIP_NAME = "output file name in the gzip header"
LEVEL = "compression level or zlib version"
COMPRESSION = "compression implementation, version or level"
CMAKE_VERSION = "CMake version"
OTHER_OS = "built on another operating system"
WRITER_MODE = "a mode the archive writer sets itself"
NO_CAUSE = "no cause inferred"
OLD_METADATA_WRITER = "an older metadata writer (wheel 0.40 or before beside setuptools)"
COMPRESSED_OUTSIDE = "files gzipped outside the build (NAME in one, NAME.gz in the other)"
NOT_IN_SDIST = "files the sdist does not hold (built from another tree: a checkout, a stale build/ directory)"
SDIST_LAYOUT = "files the sdist holds but its build does not package (the build config and the sdist's layout disagree)"
LISTING_ORDER = "directory listing order (files the build found in the order their folder was listed)"
#: Two times this close (and not whole hours apart) are each a clock's reading during a build.
_SECONDS_APART = 60

# An absolute path starts where no path character precedes it (so the "/util.py" inside
# "pkg/util.py" or the "//host/a" of a URL are not one): POSIX "/a/b..." or a drive "C:\\a...".
_COMPONENT = rb"[A-Za-z0-9_.+@~-]+"
_ABSOLUTE = re.compile(
    rb"(?<![A-Za-z0-9_.+@~/\\-])(?:(?:/" + _COMPONENT + rb")+/?|[A-Za-z]:[\\/](?:" + _COMPONENT + rb"[\\/]?)+)"
)
#: First components of the places builds run from: temp dirs, homes, CI workspaces, build roots.
_BUILD_ROOTS = frozenset(
    b"tmp var home Users root build builds usr opt srv mnt media private nix gnu workspace work "
    b"runner github __w scratch data sandbox".split()
)
_NEAR = 15 * 60  # a member time this close to the archive's own write time was "now"


@dataclass(frozen=True)
class SideFacts:
    """What is known of how one side was made: from the provenance beside it that names it (its
    name and sha256), and from its own members."""

    epoch: int | None = None  # the SOURCE_DATE_EPOCH the record says the build used
    umask: int | None = None  # the umask the record says the build ran under
    record: str | None = None  # the record's file name, for evidence
    write_bits: int | None = None  # how many of its regular members have group/other write bits


@dataclass(frozen=True)
class Context:
    """Facts about the pair: when each archive was written (its file mtime, UTC seconds), and what
    the record beside each side says of it."""

    written_a: float
    written_b: float
    facts_a: SideFacts = SideFacts()
    facts_b: SideFacts = SideFacts()

    def side(self, name: str) -> SideFacts:
        return self.facts_a if name == "A" else self.facts_b


def _fmt(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _to_epoch(value: object) -> int | None:
    """A member or header time as UTC seconds (zip date_time strings are read as UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
        return calendar.timegm(parsed.timetuple())
    return None


def _near_write(t: int, written: float) -> int | None:
    """Offset in whole hours (-14..14) that puts ``t`` within minutes of ``written``, if any."""
    for hours in range(-14, 15):
        if abs(t + hours * 3600 - written) <= _NEAR:
            return hours
    return None


def _explain_time(attribute: str, a: object, b: object, ctx: Context) -> tuple[str | None, str]:
    ta, tb = _to_epoch(a), _to_epoch(b)
    if ta is None or tb is None:
        return None, ""
    delta = tb - ta
    # Whole hours apart (but not a whole day, which is a clock moved by a day): local time
    # written in two time zones, e.g. zip's DOS times without SOURCE_DATE_EPOCH.
    if delta and delta % 3600 == 0 and abs(delta) <= 26 * 3600 and abs(delta) != 24 * 3600:
        return TIMEZONE, f"the times differ by exactly {delta // 3600:+d} h"
    kept = {side: _is_epoch(t, ctx.side(side)) for side, t in (("A", ta), ("B", tb))}
    for side, t, written in (("B", tb, ctx.written_b), ("A", ta, ctx.written_a)):
        if kept[side]:
            continue  # the time its record says the build was given: no clock in it
        if t and _near_write(t, written) is not None:
            evidence = f"{side}'s {attribute} {_fmt(t)} is within minutes of when {side} was written ({_fmt(written)})"
            other = "A" if side == "B" else "B"
            if kept[other]:
                evidence += f"; {other}'s is the SOURCE_DATE_EPOCH recorded beside it ({ctx.side(other).record})"
            return CLOCK, evidence
    for side in ("A", "B"):
        if kept[side]:
            other = "A" if side == "B" else "B"
            return None, (
                f"{side}'s {attribute} is the SOURCE_DATE_EPOCH recorded beside it ({ctx.side(side).record}); "
                f"{other}'s differs by {(delta if side == 'A' else -delta):+d} s"
            )
    if abs(delta) <= _SECONDS_APART:
        # a file written a zip time or two later in one build (a large wheel's RECORD): a fixed
        # SOURCE_DATE_EPOCH gives every file the same time, however long the build takes
        return CLOCK, f"the times are {delta:+d} s apart: each a clock's reading during its build"
    return None, f"the times differ by {delta:+d} s"


def _is_epoch(t: int | None, facts: SideFacts) -> bool:
    """Whether ``t`` is the epoch the side's record says its build used (as it is, or as a zip can
    hold it: clamped to 1980..2107, a 2-second grain)."""
    if t is None or facts.epoch is None:
        return False
    clamped = min(max(facts.epoch, policy.ZIP_MIN_EPOCH), policy.ZIP_MAX_EPOCH)
    return abs(t - facts.epoch) <= 1 or abs(t - clamped) <= 1


def _explain_mode(a: object, b: object, ctx: Context, member: str) -> tuple[str | None, str]:
    try:
        ma, mb = int(str(a), 8), int(str(b), 8)
    except ValueError:
        return None, ""
    bits = ma ^ mb
    if bits and not bits & ~0o022:
        side = "A" if ma & bits else "B"
        facts = ctx.side(side)
        differ = f"only group/other write bits differ ({ma:04o} vs {mb:04o})"
        if member.endswith(".dist-info/RECORD") and (ma if side == "A" else mb) & 0o777 == 0o664:
            return WRITER_MODE, f"{differ}; wheel's writer writes RECORD 0664 itself, whatever the umask"
        if facts.umask is not None and facts.umask & bits == bits:
            return None, f"{differ}; {side}'s record ({facts.record}) says umask {facts.umask:04o}, which clears them"
        if facts.write_bits is not None and facts.write_bits <= 1:
            return None, f"{differ}; the only member of {side} with them (a umask sets them on every file)"
        return UMASK, differ
    if bits and not bits & ~0o111:
        return None, f"only exec bits differ ({ma:04o} vs {mb:04o}): the source files' modes differ"
    return None, f"{ma:04o} vs {mb:04o}"


def explain_attribute(attribute: str, a: object, b: object, ctx: Context, member: str = "") -> tuple[str | None, str]:
    if attribute in ("mtime", "date_time", "gzip.mtime"):
        return _explain_time(attribute, a, b, ctx)
    if attribute == "mode":
        return _explain_mode(a, b, ctx, member)
    if attribute in ("uid", "gid", "uname", "gname"):
        return BUILD_USER, f"the archive records the owner of the files ({a!r} vs {b!r})"
    if attribute == "pax" and isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if any(k in ("atime", "ctime", "mtime") for k in keys):
            return CLOCK, f"PAX records {', '.join(keys)} carry file access/change times"
        return None, f"PAX records {', '.join(keys)} differ"
    if attribute == "extra":
        if "5554" in str(a) + str(b):  # 0x5455 'UT': extended timestamp, little-endian tag
            return CLOCK, "a zip extended-timestamp (UT) extra field stores file times"
        return ZIP_TOOL, "zip extra fields differ"
    if attribute == "create_system" and {a, b} == {0, 3}:
        dos = "A" if a == 0 else "B"
        return (
            OTHER_OS,
            f"zip create_system {a!r} vs {b!r}: {dos} was written on MS-DOS/Windows (0), the other on Unix (3)",
        )
    if attribute in (
        "create_system",
        "create_version",
        "extract_version",
        "flag_bits",
        "compress_type",
        "file_type",
        "dos_attr",
    ):
        return ZIP_TOOL, f"zip {attribute} {a!r} vs {b!r}"
    if attribute == "gzip.name":
        return GZIP_NAME, f"the gzip header names the file ({a!r} vs {b!r})"
    if attribute in ("gzip.level", "gzip.os"):
        return LEVEL, f"{attribute} {a!r} vs {b!r}"
    return None, ""


def _absolute_path_at(data: bytes, offset: int) -> bytes | None:
    """The absolute path spanning ``offset``, if it looks like a place a build ran in.

    Evidence, not a guess: the path must start at a word boundary and be either a drive path
    (``C:\\...``) or a POSIX path under a usual build root (``/tmp/...``, ``/home/...``,
    ``/build...``) or three components deep. ``/a``, a URL's path and a relative path are not.
    """
    for m in _ABSOLUTE.finditer(data, max(0, offset - 300), offset + 300):
        if not m.start() <= offset <= m.end():
            continue
        path = m.group()
        if path[:1] != b"/":
            return path  # a drive path
        parts = [p for p in path.split(b"/") if p]
        if (parts[0] in _BUILD_ROOTS and len(parts) >= 2) or len(parts) >= 3:
            return path
    return None


def _line_at(data: bytes, offset: int) -> bytes:
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    return data[start : end if end >= 0 else len(data)]


def _clip(line: bytes, limit: int = 60) -> str:
    text = line.decode(errors="replace").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reordered_lines(a: bytes, b: bytes) -> str | None:
    """Evidence that ``b`` holds exactly ``a``'s lines in another order, or None."""
    lines_a, lines_b = a.split(b"\n"), b.split(b"\n")
    if lines_a == lines_b or sorted(lines_a) != sorted(lines_b):
        return None
    i = next(i for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=True)) if x != y)
    count = len(lines_a) - (lines_a[-1] == b"")
    where = f"line {i + 1}: A has {_clip(lines_a[i])!r}, B has {_clip(lines_b[i])!r}"
    return f"the same {count} lines in another order ({where})"


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def explain_content(member: str, a: bytes, b: bytes, *, complete: bool = True) -> tuple[str | None, str]:
    """Look at two member heads: their lines, and the bytes around the first differing offset.

    ``complete`` says the heads are the whole members: only then can equal sets of lines be
    told apart from a difference further on.
    """
    is_metadata = member.endswith(("METADATA", "PKG-INFO"))
    if complete and is_metadata and (said := old_requires_dist(a, b)):
        return OLD_METADATA_WRITER, said
    if complete and (a.count(b"\r\n") > 0) != (b.count(b"\r\n") > 0) and _lf(a) == _lf(b):
        crlf = "A" if b"\r\n" in a else "B"
        return OTHER_OS, f"the same text, {crlf} with CRLF line endings (written in text mode on Windows)"
    if complete and is_metadata and (said := listing_order(a, b)):
        return LISTING_ORDER, said
    if complete and is_metadata and sorted(filter(None, a.splitlines())) == sorted(filter(None, b.splitlines())):
        # The same fields, placed or spaced otherwise: what wrote them, not what they say.
        return (
            BACKEND_VERSION,
            "the same metadata fields in another order or with other blank lines (the metadata writer's version)",
        )
    if complete and is_metadata and _writer_lines(a) == _writer_lines(b):
        return (
            BACKEND_VERSION,
            "the same metadata but for what the writer's version decides (Platform: UNKNOWN, License-File, the "
            "name's spelling, Requires-Dist spacing, field order, trailing blank lines)",
        )
    if complete and (moved := _reordered_lines(a, b)):
        return HASH_ORDER, moved
    if member.endswith(".cmake"):
        return CMAKE_VERSION, "a file CMake generates (package config/targets): its text changes between CMake releases"
    if member.endswith(".dist-info/WHEEL") or is_metadata:
        for key in (b"Generator:", b"Metadata-Version:"):
            la = [ln for ln in a.splitlines() if ln.startswith(key)]
            lb = [ln for ln in b.splitlines() if ln.startswith(key)]
            if la != lb:
                return (
                    BACKEND_VERSION,
                    f"{la[0].decode() if la else '(none)'} vs {lb[0].decode() if lb else '(none)'}",
                )
    offset = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    line_a, line_b = _line_at(a, offset), _line_at(b, offset)
    if b"generated by" in line_a + line_b and line_a != line_b:
        # e.g. "# file generated by setuptools_scm" vs "# file generated by vcs-versioning"
        return (
            BACKEND_VERSION,
            f"{line_a.decode(errors='replace').strip()!r} vs {line_b.decode(errors='replace').strip()!r}",
        )
    pa, pb = _absolute_path_at(a, offset), _absolute_path_at(b, offset)
    if pa and pb and pa != pb:
        return (
            BUILD_PATH,
            f"A has {pa.decode(errors='replace')!r} where B has {pb.decode(errors='replace')!r}",
        )
    tokens = re.compile(rb"[\w./-]+")
    if line_a != line_b and sorted(tokens.findall(line_a)) == sorted(tokens.findall(line_b)):
        return HASH_ORDER, "the differing line holds the same tokens in another order"
    return None, ""


#: Lines an older or newer metadata writer adds or leaves out on its own.
_WRITER_ONLY = (b"Platform: UNKNOWN", b"License-File:", b"Dynamic:")
_SPACED = re.compile(rb"^(Requires-Dist: [A-Za-z0-9._\[\], -]*?[A-Za-z0-9\]]) +([<>=!~(])")


def _writer_lines(data: bytes) -> list[bytes]:
    """METADATA's header lines as a set would hold them, without what the writer's version decides: the
    lines it adds on its own, the name's spelling, ``name (spec)``, ``name >=1``, `` ; `` before a marker."""
    head = _lf(data).split(b"\n\n", 1)
    lines = []
    for line in head[0].splitlines():
        if line.startswith(_WRITER_ONLY):
            continue
        if line.startswith(b"Name: "):
            line = re.sub(rb"[-_.]+", b"-", line.lower())
        line = _SPACED.sub(rb"\1\2", unparenthesized(line)).replace(b" ; ", b"; ")
        lines.append(line)
    return [*sorted(lines), head[1].strip() if len(head) > 1 else b""]


_PARENS = re.compile(rb"^(Requires-Dist: [A-Za-z0-9._\[\], -]+?) \(([^()]*)\)( ?;.*)?$")


def unparenthesized(line: bytes) -> bytes:
    """``Requires-Dist: x (<2,>=1) ; extra == 'a'`` as newer writers put it: ``x <2,>=1 ; extra == 'a'``."""
    m = _PARENS.match(line)
    return line if m is None else m[1] + b" " + m[2] + (m[3] or b"")


def old_requires_dist(a: bytes, b: bytes) -> str:
    """Why two METADATA files differ when one writes ``Requires-Dist: name (spec)`` (wheel 0.40 and older,
    which setuptools' bdist_wheel uses when it is installed beside it) and the other ``name spec``: "" when
    that is not all that differs."""
    la, lb = a.splitlines(), b.splitlines()
    if len(la) != len(lb) or la == lb:
        return ""
    old_in = {"A": False, "B": False}
    for x, y in zip(la, lb, strict=True):
        if x == y:
            continue
        if unparenthesized(x) == y and x != y:
            old_in["A"] = True
        elif unparenthesized(y) == x:
            old_in["B"] = True
        else:
            return ""
    side = "A" if old_in["A"] else "B"
    if old_in["A"] and old_in["B"]:
        return ""
    return (
        f"{side} writes Requires-Dist as 'name (spec)', the other as 'name spec': {side}'s METADATA was written "
        "by wheel 0.40 or older, which setuptools' bdist_wheel uses when it is installed beside it"
    )


_EXTRA = re.compile(rb"""^Provides-Extra: *(\S+)""")
_FOR_EXTRA = re.compile(rb"""extra *== *["']([^"']+)["']""")


def _units(header: list[bytes]) -> list[tuple[str, bytes, tuple[bytes, ...]]]:
    """METADATA header lines as units that a writer emits in its input's order: each ``License-File`` line, each
    extra (its ``Provides-Extra`` line with the ``Requires-Dist`` lines for it that follow); any other line."""
    units: list[tuple[str, bytes, tuple[bytes, ...]]] = []
    i = 0
    while i < len(header):
        line = header[i]
        if line.startswith(b"License-File:"):
            units.append(("license files", line.split(b":", 1)[1].strip(), (line,)))
        elif m := _EXTRA.match(line):
            block = [line]
            while i + 1 < len(header) and (f := _FOR_EXTRA.search(header[i + 1])) and f[1] == m[1]:
                i += 1
                block.append(header[i])
            units.append(("extras", m[1], tuple(block)))
        else:
            units.append(("", line, (line,)))
        i += 1
    return units


def _runs_sorted(units: list[tuple[str, bytes, tuple[bytes, ...]]]) -> list[tuple[bytes, ...]]:
    out: list[tuple[bytes, ...]] = []
    i = 0
    while i < len(units):
        j = i
        while units[i][0] and j < len(units) and units[j][0] == units[i][0]:
            j += 1
        if j > i:
            out += sorted(u[2] for u in units[i:j])
            i = j
        else:
            out.append(units[i][2])
            i += 1
    return out


def listing_order(a: bytes, b: bytes) -> str:
    """Why two METADATA files differ when each holds the same license files, or the same extras, in another
    order and nothing else moved: the backend took them in the order it found them (a folder listed as its
    filesystem lists it: ext4 by hash, tmpfs newest first), not the writer's version. "" otherwise."""
    ha, hb = _lf(a).split(b"\n\n", 1)[0].splitlines(), _lf(b).split(b"\n\n", 1)[0].splitlines()
    if ha == hb or sorted(ha) != sorted(hb) or _lf(a).partition(b"\n\n")[2] != _lf(b).partition(b"\n\n")[2]:
        return ""
    ua, ub = _units(ha), _units(hb)
    if _runs_sorted(ua) != _runs_sorted(ub):
        return ""
    for kind in ("license files", "extras"):
        na, nb = [u[1] for u in ua if u[0] == kind], [u[1] for u in ub if u[0] == kind]
        if na != nb:
            said = ", ".join(x.decode(errors="replace") for x in na), ", ".join(x.decode(errors="replace") for x in nb)
            return (
                f"the same {kind} in another order (A: {said[0]}; B: {said[1]}): the backend took them in the order "
                "it found them, as a folder was listed on each machine (ext4 lists by hash, tmpfs newest first)"
            )
    return ""
