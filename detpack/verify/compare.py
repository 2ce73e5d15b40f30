"""Member-by-member comparison of two archives (or two dist folders) -> a ``Comparison``.

Cost model: identical files cost one byte-for-byte pass and nothing else. Differing files
cost one index pass (central directory, or tar headers) plus reading only the members
whose content may differ (zip members with equal CRC and size are taken as equal).
Files that are not archives: provenance statements and DSSE envelopes are compared by what
they assert (``detpack.verify.provenance_compare``; run details become ``Note``s, which never make a
pair differ); anything else by its bytes (sizes, and a text diff or the first differing offset).
Renderers (text, JSON, HTML) live in ``detpack.cli``; this module never prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import gzip
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from detpack.archive.detect import ArchiveKind, detect
from detpack.archive.entry import same_streams
from detpack.archive.listing import ArchiveView, RawMember
from detpack.archive.normalize import NormalizeOptions, normalize_stream
from detpack.errors import InputError, NotAnArchiveError
from detpack.policy import DEFAULT_EPOCH
from detpack.verify import causes, provenance_compare
from detpack.verify.beside import facts_beside

DiffKind = Literal["added", "removed", "content", "attribute", "order", "header", "provenance"]

#: How much of a member is read for a text diff and for path evidence.
HEAD = 256 * 1024
DIFF_LINES = 80
#: A provenance file larger than this is compared as bytes (statements are a few KB).
MAX_STATEMENT = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Difference:
    """One way A and B differ."""

    kind: DiffKind
    member: str | None  # the member (or, for provenance, the asserted part); None: the whole file
    attribute: str  # what differs: content, mtime, mode, ..., or a statement's key path
    a: Any = None  # value in A (None when absent); sizes in bytes for content
    b: Any = None  # value in B
    detail: str = ""  # a unified diff (text), size and first differing offset (binary)
    cause: str | None = None  # the likely cause, named only from evidence
    evidence: str = ""  # what the cause was inferred from


@dataclass(frozen=True, slots=True)
class Note:
    """Information about a pair that is not a difference (it never changes the verdict)."""

    topic: Literal["runDetails", "signatures", "toolchain", "duplicates"]  # what it is about
    keys: tuple[str, ...]  # the key paths it covers (runDetails: relative to predicate.runDetails)
    text: str  # one line for people


@dataclass(frozen=True, slots=True)
class FileComparison:
    name: str  # the file name (in a folder diff, the name both sides share)
    kind: str | None  # archive kind, provenance, dsse, file (opaque bytes); None: byte-identical
    identical: bool  # no differences (notes do not count)
    members_total: int  # members in A or B (for provenance: the asserted parts compared)
    members_differing: int  # members (or asserted parts) with a difference
    differences: tuple[Difference, ...]
    notes: tuple[Note, ...] = ()

    def cause_tally(self) -> list[tuple[str, int]]:
        """Each likely cause with how many members (or the archive itself) show it, most first."""
        seen: dict[str, set[str]] = {}
        for d in self.differences:
            if d.cause:
                seen.setdefault(d.cause, set()).add(d.member or "(archive)")
        return sorted(((c, len(m)) for c, m in seen.items()), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    content_only: bool
    files: tuple[FileComparison, ...]
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return not self.only_a and not self.only_b and all(f.identical for f in self.files)

    @property
    def toolchain(self) -> tuple[str, ...]:
        """What differs in the native toolchain the records name (said before any byte difference)."""
        return tuple(dict.fromkeys(n.text for f in self.files for n in f.notes if n.topic == "toolchain"))

    def summary(self) -> str:
        if self.identical:
            return "same content" if self.content_only else "identical"
        if len(self.files) == 1 and not self.only_a and not self.only_b:
            f = self.files[0]
            if f.members_differing == 0 and f.kind not in STATEMENT_KINDS:
                return SAME_MEMBERS
            what = "asserted parts" if f.kind in STATEMENT_KINDS else "members"
            return f"{f.members_differing} of {f.members_total} {what} differ"
        differing = sum(1 for f in self.files if not f.identical)
        parts = [f"{differing} of {len(self.files)} paired files differ"]
        if self.only_a:
            parts.append(f"{len(self.only_a)} only in A")
        if self.only_b:
            parts.append(f"{len(self.only_b)} only in B")
        return ", ".join(parts)


#: File kinds compared by what a provenance statement asserts.
STATEMENT_KINDS = ("provenance", "dsse")


def same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        return same_streams(fa, fb)


#: The build log ``detpack build`` keeps beside its provenance (what the backend printed, not an output).
BUILD_LOG_SUFFIX = ".build.log.gz"


def compare_paths(a: Path, b: Path, *, content_only: bool = False, skip_suffixes: tuple[str, ...] = ()) -> Comparison:
    """Compare two archives, or two folders of archives paired by file name.

    Provenance statements and DSSE envelopes are compared by what they assert (their run
    details are reported as notes); other files that are not archives (a checksum list) are
    compared as bytes. Names ending in ``skip_suffixes`` are left out, and build logs always are.
    """
    for p in (a, b):
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
    if a.is_dir() != b.is_dir():
        raise InputError(f"{a} and {b}: compare two files or two directories, not one of each")
    if not a.is_dir():
        return Comparison(str(a), str(b), content_only, (compare_files(a, b, b.name, content_only=content_only),))
    skip = (*skip_suffixes, BUILD_LOG_SUFFIX)  # a byproduct: the records name it, it is not compared
    names_a = {p.name for p in a.iterdir() if p.is_file() and not p.name.endswith(skip)}
    names_b = {p.name for p in b.iterdir() if p.is_file() and not p.name.endswith(skip)}
    common = sorted(names_a & names_b)
    files = tuple(compare_files(a / n, b / n, n, content_only=content_only) for n in common)
    return Comparison(
        str(a),
        str(b),
        content_only,
        files,
        tuple(sorted(names_a - names_b)),
        tuple(sorted(names_b - names_a)),
    )


def _kind(path: Path) -> ArchiveKind | None:
    """The archive kind, or None for a file that is not an archive (compared as bytes)."""
    try:
        return detect(path)
    except NotAnArchiveError:
        return None


def compare_files(a: Path, b: Path, name: str, *, content_only: bool = False) -> FileComparison:
    if same_bytes(a, b):
        return FileComparison(name, None, True, 0, 0, ())
    kind_a, kind_b = _kind(a), _kind(b)
    if kind_a is None and kind_b is None:
        return _compare_statements(a, b, name) or _compare_bytes(a, b, name)
    if kind_a is None or kind_b is None:
        raise InputError(f"{a} and {b}: one is an archive and the other is not; compare like with like")
    if kind_a != kind_b:
        raise InputError(f"{a} is a {kind_a} but {b} is a {kind_b}; compare two archives of the same kind")
    if content_only:
        ctx = causes.Context(a.stat().st_mtime, b.stat().st_mtime)
        with tempfile.TemporaryDirectory(prefix="detpack-diff-") as tmp:
            na, nb = Path(tmp) / "a", Path(tmp) / "b"
            notes: list[Note] = []
            # Two members under one name: the last is kept, as detpack build, tar, pip and uv keep it.
            options = NormalizeOptions(DEFAULT_EPOCH, duplicates="last")
            for side, src, dst in (("A", a, na), ("B", b, nb)):
                with dst.open("wb") as out:
                    replaced = normalize_stream(src, out, kind_a, options, Path(tmp))
                notes += [_duplicate_note(side, member, None) for member in replaced]
            if same_bytes(na, nb):
                return FileComparison(name, kind_a, True, 0, 0, (), tuple(notes))
            found = _compare_views(na, nb, name, ctx, content_only=True)
            return dataclasses.replace(found, notes=(*notes, *found.notes))
    ctx = causes.Context(a.stat().st_mtime, b.stat().st_mtime, facts_beside(a), facts_beside(b))
    found = _compare_views(a, b, name, ctx, content_only=False)
    if found.identical:  # not the same bytes (checked above): the same members, compressed otherwise
        return dataclasses.replace(found, identical=False, differences=(_compressed_otherwise(a, b),))
    return found


#: How the text output says a pair differs only in its compressed bytes.
SAME_MEMBERS = "same members, different compressed bytes"


def _compressed_otherwise(a: Path, b: Path) -> Difference:
    """Two archives whose members are equal in content and metadata, whose bytes are not."""
    detail = f"{SAME_MEMBERS}: {a.stat().st_size} vs {b.stat().st_size} bytes, first difference at offset "
    detail += str(_first_difference(a, b))
    evidence = "every member's content and metadata are equal; only the compressed streams differ"
    return Difference(
        "content", None, "compressed bytes", a.stat().st_size, b.stat().st_size, detail, causes.COMPRESSION, evidence
    )


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD)


def _first_difference(a: Path, b: Path) -> int:
    """The first offset where two files differ (the shorter one's size when one is a prefix)."""
    offset = 0
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 16), fb.read(1 << 16)
            if ca != cb or not ca:
                return offset + next(
                    (i for i, (x, y) in enumerate(zip(ca, cb, strict=False)) if x != y), min(len(ca), len(cb))
                )
            offset += len(ca)


def _compare_bytes(a: Path, b: Path, name: str) -> FileComparison:
    """Two files that are not archives: their sizes and a text diff, or the first differing offset."""
    size_a, size_b = a.stat().st_size, b.stat().st_size
    head_a, head_b = _head(a), _head(b)
    if head_a != head_b and _as_text(head_a) is not None and _as_text(head_b) is not None:
        detail = _detail(name, head_a, head_b, size_a, size_b)
    else:
        kind = "text" if _as_text(head_a) is not None and _as_text(head_b) is not None else "binary"
        detail = f"{kind}: {size_a} vs {size_b} bytes, first difference at offset {_first_difference(a, b)}"
    diff = Difference("content", None, "content", size_a, size_b, detail)
    return FileComparison(name, "file", False, 1, 1, (diff,))


def _compare_statements(a: Path, b: Path, name: str) -> FileComparison | None:
    """Two provenance statements (or DSSE envelopes of them) by what they assert; None if not both."""
    read_a = provenance_compare.read(a.read_bytes(), name) if a.stat().st_size < MAX_STATEMENT else None
    read_b = provenance_compare.read(b.read_bytes(), name) if read_a and b.stat().st_size < MAX_STATEMENT else None
    if read_a is None or read_b is None or read_a.form != read_b.form:
        return None
    result = provenance_compare.compare_statements(read_a.statement, read_b.statement)
    diffs = [Difference("provenance", c.part, c.path, c.a, c.b) for c in result.asserted]
    notes: list[Note] = []
    if read_a.payload_type != read_b.payload_type:
        diffs.insert(
            0, Difference("provenance", "payloadType", "payloadType", read_a.payload_type, read_b.payload_type)
        )
    drift = provenance_compare.toolchain_drift(read_a.statement, read_b.statement)
    if drift:
        notes.append(Note("toolchain", drift, f"toolchain differs: {'; '.join(drift)}"))
    if result.run_details:
        shown = provenance_compare.short_run_details(result.run_details)
        text = f"run details differ: {shown} (expected between two builds)"
        notes.append(Note("runDetails", result.run_details, text))
    if read_a.keyids != read_b.keyids:
        text = f"signed by other keys: A {_keyids(read_a.keyids)}, B {_keyids(read_b.keyids)}"
        notes.append(Note("signatures", ("keyid",), text))
    elif read_a.signatures != read_b.signatures and read_a.statement == read_b.statement:
        # Over different payloads signatures always differ; over the same one only a
        # randomized signature scheme (or a re-signing) makes them differ.
        notes.append(Note("signatures", ("sig",), "signatures differ (same keys, same payload)"))
    parts = ("payloadType", *result.parts) if read_a.form == "dsse" else result.parts
    touched = len({d.member for d in diffs})
    return FileComparison(name, read_a.form, not diffs, len(parts), touched, tuple(diffs), tuple(notes))


def _keyids(keyids: tuple[str, ...]) -> str:
    return ", ".join(k[:16] or "(no keyid)" for k in keyids) or "(unsigned)"


def _compare_views(a: Path, b: Path, name: str, ctx: causes.Context, *, content_only: bool) -> FileComparison:
    with (
        tempfile.TemporaryDirectory(prefix="detpack-diff-") as tmp,
        ArchiveView(a, Path(tmp)) as va,
        ArchiveView(b, Path(tmp)) as vb,
    ):
        diffs: list[Difference] = []
        la, lb = va.listing, vb.listing
        ctx = dataclasses.replace(
            ctx,
            facts_a=dataclasses.replace(ctx.facts_a, write_bits=_group_writable(la.by_name.values())),
            facts_b=dataclasses.replace(ctx.facts_b, write_bits=_group_writable(lb.by_name.values())),
        )
        if not content_only:
            diffs += _header_diffs(la.header, lb.header, ctx)
        notes = [
            _duplicate_note(side, member, count)
            for side, listing in (("A", la), ("B", lb))
            for member, count in sorted(listing.duplicates.items())
        ]
        for member in sorted(set(la.duplicates) | set(lb.duplicates)):
            count_a, count_b = la.duplicates.get(member, 1), lb.duplicates.get(member, 1)
            if count_a != count_b and member in la.by_name and member in lb.by_name:
                evidence = "the last one is compared, as detpack build, tar, pip and uv keep it"
                diffs.append(Difference("attribute", member, "duplicate members", count_a, count_b, "", None, evidence))
        added = [m for m in lb.members if m.name not in la.by_name and lb.kept(m)]
        removed = [m for m in la.members if m.name not in lb.by_name and la.kept(m)]
        gzipped = _gzipped_pairs(va, vb, removed, added)
        for m, side in [*((m, "removed") for m in removed), *((m, "added") for m in added)]:
            if _is_dir(m):
                # A directory entry carries no content: its presence is archive-writer metadata.
                if not content_only:
                    in_a = True if side == "removed" else None
                    diffs.append(
                        Difference(
                            "attribute",
                            m.name,
                            "directory entry",
                            a=in_a,
                            b=None if in_a else True,
                            cause=causes.ZIP_TOOL,
                            evidence=f"directory entry {side} (archive writers list directories differently)",
                        )
                    )
            elif side == "removed":
                diffs.append(
                    Difference("removed", m.name, "presence", m.size, None, "", *gzipped.get(m.name, (None, "")))
                )
            else:
                diffs.append(
                    Difference("added", m.name, "presence", None, m.size, "", *gzipped.get(m.name, (None, "")))
                )
        common = [m for m in la.members if m.name in lb.by_name and la.kept(m)]
        if not content_only:
            diffs += _order_diff(common, [m for m in lb.members if m.name in la.by_name and lb.kept(m)])
        for ma in common:
            mb = lb.by_name[ma.name]
            if not content_only:
                diffs += _attribute_diffs(ma, mb, ctx)
            diffs += _content_diff(va, vb, ma, mb)
        members = len(la.by_name) + len({m.name for m in added})  # |names in A or B|, without a 40k-name set
        touched = {d.member for d in diffs if d.member is not None and d.kind != "order"}
        return FileComparison(name, la.kind, not diffs, members, len(touched), tuple(diffs), tuple(notes))


#: The largest member whose gzipped twin is decompressed to compare them (package data files are small).
GZIP_PAIR_LIMIT = 64 * 1024 * 1024


def _gzipped_pairs(
    va: ArchiveView, vb: ArchiveView, removed: list[RawMember], added: list[RawMember]
) -> dict[str, tuple[str, str]]:
    """Members present on one side as ``NAME`` and on the other as ``NAME.gz`` holding the same bytes once
    decompressed (botocore's release gzips its data files between the sdist and the wheel): each name's
    cause and evidence."""
    found: dict[str, tuple[str, str]] = {}
    by_a, by_b = {m.name: m for m in removed}, {m.name: m for m in added}
    for (gz_side, gz_view, gz_members), (plain_view, plain_members) in (
        (("A", va, by_a), (vb, by_b)),
        (("B", vb, by_b), (va, by_a)),
    ):
        for name, packed in gz_members.items():
            plain = plain_members.get(name.removesuffix(".gz")) if name.endswith(".gz") else None
            if plain is None or packed.size > GZIP_PAIR_LIMIT or plain.size > GZIP_PAIR_LIMIT:
                continue
            try:
                same = gzip.decompress(gz_view.read(packed, GZIP_PAIR_LIMIT)) == plain_view.read(plain, GZIP_PAIR_LIMIT)
            except (OSError, EOFError, zlib.error):
                continue
            if same:
                said = f"{gz_side} has {name}, the other {plain.name}: the same bytes once decompressed"
                found[name] = found[plain.name] = (causes.COMPRESSED_OUTSIDE, said)
    return found


def _group_writable(members: Iterable[RawMember]) -> int:
    """How many regular members have group/other write bits (a umask sets them on every file)."""
    count = 0
    for m in members:
        mode = m.attrs.get("mode")
        with contextlib.suppress(TypeError, ValueError):
            if not _is_dir(m) and int(str(mode), 8) & 0o022:
                count += 1
    return count


def _duplicate_note(side: str, member: str, count: int | None) -> Note:
    held = f"{count} members" if count else "more than one member"
    text = (
        f"warning: {side} holds {held} named {member!r}; the last one is compared "
        "(as detpack build, tar, pip and uv keep it)"
    )
    return Note("duplicates", (member,), text)


def _is_dir(m: RawMember) -> bool:
    return m.name.endswith("/") or m.attrs.get("type") == "5"


def _header_diffs(ha: dict[str, Any], hb: dict[str, Any], ctx: causes.Context) -> Iterator[Difference]:
    for key in sorted(set(ha) | set(hb)):
        if ha.get(key) != hb.get(key):
            cause, evidence = causes.explain_attribute(key, ha.get(key), hb.get(key), ctx)
            yield Difference("header", None, key, ha.get(key), hb.get(key), "", cause, evidence)


def _order_diff(in_a: list[RawMember], in_b: list[RawMember]) -> list[Difference]:
    order_a, order_b = [m.name for m in in_a], [m.name for m in in_b]
    if order_a == order_b:
        return []
    first = next(i for i, (x, y) in enumerate(zip(order_a, order_b, strict=True)) if x != y)
    detail = f"first difference at position {first}: A has {order_a[first]!r}, B has {order_b[first]!r}"
    return [
        Difference(
            "order",
            None,
            "member order",
            None,
            None,
            detail,
            causes.FILE_ORDER,
            "the same members appear in another order",
        )
    ]


def _attribute_diffs(ma: RawMember, mb: RawMember, ctx: causes.Context) -> Iterator[Difference]:
    if ma.keys is mb.keys and ma.values == mb.values:
        return
    attrs_a, attrs_b = ma.attrs, mb.attrs
    for key in sorted(set(attrs_a) | set(attrs_b)):
        va, vb = attrs_a.get(key), attrs_b.get(key)
        if va != vb:
            cause, evidence = causes.explain_attribute(key, va, vb, ctx, ma.name)
            yield Difference("attribute", ma.name, key, va, vb, "", cause, sys.intern(evidence))


def _content_diff(va: ArchiveView, vb: ArchiveView, ma: RawMember, mb: RawMember) -> list[Difference]:
    if ma.identity is not None and ma.identity == mb.identity:
        return []
    if ma.size == mb.size and _same_stream(va, vb, ma, mb):
        return []
    head_a, head_b = va.read(ma, HEAD), vb.read(mb, HEAD)
    complete = len(head_a) == ma.size and len(head_b) == mb.size
    cause, evidence = causes.explain_content(ma.name, head_a, head_b, complete=complete)
    return [
        Difference(
            "content",
            ma.name,
            "content",
            ma.size,
            mb.size,
            _detail(ma.name, head_a, head_b, ma.size, mb.size),
            cause,
            evidence,
        )
    ]


def _same_stream(va: ArchiveView, vb: ArchiveView, ma: RawMember, mb: RawMember) -> bool:
    buf_b = b""
    it_b = vb.chunks(mb)
    for chunk in va.chunks(ma):
        while len(buf_b) < len(chunk):
            nxt = next(it_b, b"")
            if not nxt:
                return False
            buf_b += nxt
        if buf_b[: len(chunk)] != chunk:
            return False
        buf_b = buf_b[len(chunk) :]
    return not buf_b and next(it_b, b"") == b""


def _as_text(data: bytes) -> str | None:
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _detail(name: str, a: bytes, b: bytes, size_a: int, size_b: int) -> str:
    ta, tb = _as_text(a), _as_text(b)
    if ta is not None and tb is not None:
        lines = list(difflib.unified_diff(ta.splitlines(), tb.splitlines(), f"a/{name}", f"b/{name}", lineterm="", n=2))
        if len(lines) > DIFF_LINES:
            lines = [*lines[:DIFF_LINES], f"... ({len(lines) - DIFF_LINES} more diff lines)"]
        return "\n".join(lines)
    offset = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"binary: {size_a} vs {size_b} bytes, first difference at offset {offset}"
