"""Read directory trees (or single files) as a stream of canonical entries, already sorted.

``walk`` yields entries in the canonical order (UTF-8 bytes of the full path) without
listing the tree first: in each directory a subdirectory is visited at the key ``name/``,
which is exactly where its members fall in the global order. Memory therefore grows with
the depth and width of the tree, never with its size. Links are never followed: symlinks are
kept (a target climbing out of the archive root is refused), sockets, devices and fifos are
refused, and a file with several names in the tree becomes one file plus hardlinks (the
first name in sorted order carries the data). ``merge`` joins several sorted streams and
refuses a path that two sources both claim (unless both are directories).
"""

from __future__ import annotations

import fnmatch
import functools
import heapq
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from detpack import policy
from detpack.archive.entry import Entry, check_link_target, parents
from detpack.archive.tar import Opener
from detpack.errors import ArchiveError, InputError


@dataclass(frozen=True)
class TreeItem:
    """An entry; for a file, how to open its bytes; whether it is content or a synthesized parent."""

    entry: Entry
    opener: Opener | None = None
    content: bool = True
    origin: int = 0  # which of several merged sources it came from

    def pair(self) -> tuple[Entry, Opener | None]:
        """The (entry, opener) pair ``archive.tar.write_entries`` takes."""
        return self.entry, self.opener


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)  # read in whole pieces: a buffer would only add a copy
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _kind_error(path: str, mode: int) -> ArchiveError:
    what = (
        "a socket"
        if stat.S_ISSOCK(mode)
        else "a fifo"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a file, directory or link"
    )
    return ArchiveError(
        f"{path}: is {what}; only files, directories and links can be packed (remove it; detpack tar can also "
        "--exclude it)"
    )


def _excluded(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


class _Walker:
    def __init__(self, root: Path, dest: str, exclude: Sequence[str], absolute_links: bool, origin: int) -> None:
        self.root = str(root)
        self.origin = origin
        self.dest = dest
        self.exclude = exclude
        self.absolute_links = absolute_links
        self.first_name: dict[tuple[int, int], str] = {}  # files with several links only

    def name(self, rel: str) -> str:
        return f"{self.dest}/{rel}" if self.dest else rel

    def item(self, path: str, rel: str, st: os.stat_result) -> TreeItem:
        name = self.name(rel)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return TreeItem(Entry(name, "dir", policy.DIR_MODE), origin=self.origin)
        if stat.S_ISLNK(mode):
            target = os.readlink(path)
            if not (self.absolute_links and target.startswith("/")):
                check_link_target(name, target, self.root)
            return TreeItem(Entry(name, "symlink", policy.SYMLINK_MODE, 0, target), origin=self.origin)
        if stat.S_ISREG(mode):
            canonical = policy.canonical_mode(mode)
            if st.st_nlink > 1:
                first = self.first_name.setdefault((st.st_dev, st.st_ino), name)
                if first != name:  # sorted order: the first name seen carries the data
                    return TreeItem(Entry(name, "hardlink", canonical, 0, first), origin=self.origin)
            return TreeItem(
                Entry(name, "file", canonical, st.st_size), functools.partial(_open, path), origin=self.origin
            )
        raise _kind_error(path, mode)

    def directory(self, path: str, rel: str) -> Iterator[TreeItem]:
        try:
            with os.scandir(path) as it:
                children = list(it)
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        keyed: list[tuple[bytes, bool, str, str, os.stat_result]] = []
        for child in children:
            child_rel = f"{rel}/{child.name}" if rel else child.name
            if self.exclude and _excluded(child_rel, child.name, self.exclude):
                continue
            try:
                st = child.stat(follow_symlinks=False)
            except OSError as exc:
                raise InputError(f"{child.path}: cannot be read ({exc.strerror or exc})") from None
            key = child.name.encode("utf-8", "surrogateescape")
            keyed.append((key, False, child.path, child_rel, st))
            if stat.S_ISDIR(st.st_mode):
                keyed.append((key + b"/", True, child.path, child_rel, st))  # its members' place in the order
        keyed.sort(key=lambda k: (k[0], k[1]))
        for _key, members, child_path, child_rel, st in keyed:
            if members:
                yield from self.directory(child_path, child_rel)
            else:
                yield self.item(child_path, child_rel, st)


def walk(
    root: Path,
    dest: str = "",
    *,
    exclude: Sequence[str] = (),
    absolute_links: bool = False,
    rename: bool = False,
    origin: int = 0,
) -> Iterator[TreeItem]:
    """The canonical entries of ``root`` under ``dest``, in canonical order, with ``dest``'s parents.

    A directory's members are named ``dest/REL``; a file is named ``dest/NAME``, or ``dest``
    itself with ``rename``. ``absolute_links`` allows targets like ``/usr/bin/python3``:
    inside a container image they resolve within the image's root, so layers may carry them.
    """
    try:
        top = root.lstat()
    except FileNotFoundError:
        raise InputError(f"{root}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISLNK(top.st_mode):
        raise InputError(f"{root}: is a symlink; name the directory or file it points to")
    if not (stat.S_ISREG(top.st_mode) or stat.S_ISDIR(top.st_mode)):
        raise _kind_error(str(root), top.st_mode)
    walker = _Walker(root, dest, exclude, absolute_links, origin)
    if stat.S_ISREG(top.st_mode):
        name = dest if rename and dest else walker.name(root.name)
        for parent in parents(name):
            yield TreeItem(Entry(parent, "dir", policy.DIR_MODE), content=False, origin=origin)
        e = walker.item(str(root), root.name, top).entry
        yield TreeItem(Entry(name, e.kind, e.mode, e.size), functools.partial(_open, str(root)), origin=origin)
        return
    for parent in [*parents(dest), dest] if dest else []:
        yield TreeItem(Entry(parent, "dir", policy.DIR_MODE), content=False, origin=origin)
    yield from walker.directory(str(root), "")


def _keyed(origin: int, items: Iterable[TreeItem]) -> Iterator[tuple[bytes, int, int, TreeItem]]:
    for n, item in enumerate(items):
        yield item.entry.sort_key, origin, n, item


def merge(sources: Sequence[tuple[str, Iterable[TreeItem]]], label: str) -> Iterator[TreeItem]:
    """Join sorted streams into one, refusing a path claimed by two sources (unless both are dirs).

    Every stream carries all its parents, so a path that is a file in one source and a
    directory in another meets itself here too. Silently letting one win would make the
    result depend on argument order in a way nobody sees.
    """
    if len(sources) == 1:  # one sorted stream with its parents: nothing to join or to refuse
        yield from sources[0][1]
        return
    streams = [_keyed(i, items) for i, (_, items) in enumerate(sources)]
    previous: tuple[bytes, int, TreeItem] | None = None
    for key, i, _, item in heapq.merge(*streams):
        if previous is not None and previous[0] == key:
            first = previous[2].entry
            if first.kind == "dir" and item.entry.kind == "dir":
                continue
            raise ArchiveError(
                f"{label}: {item.entry.name!r} comes from both {sources[previous[1]][0]} and {sources[i][0]}; "
                "remove one of them or add them at different destinations"
            )
        previous = (key, i, item)
        yield item
