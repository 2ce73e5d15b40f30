"""Read a directory tree (or one file) into canonical entries for the tar writer.

``collect`` walks with ``lstat`` and never follows a symlink: links are kept as links, a
link whose target climbs out of the archive root is refused, and so are sockets, devices
and fifos. Regular files with several names in the tree become one file plus hardlinks
(the first name in sorted order carries the data). ``place`` maps entries under a
destination path; ``merge`` joins several sources into one namespace and refuses a path
that two sources both claim (unless both are directories).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from detpack import policy
from detpack.archive.entry import Entry, check_link_target, parents, safe_name
from detpack.archive.tar import Opener
from detpack.errors import ArchiveError, InputError


@dataclass(frozen=True)
class TreeItem:
    """An entry and, for a file with data, how to open its bytes."""

    entry: Entry
    opener: Opener | None = None

    def pair(self) -> tuple[Entry, Opener | None]:
        """The (entry, opener) pair ``archive.tar.write_entries`` takes."""
        return self.entry, self.opener


def file_item(entry: Entry, path: Path) -> TreeItem:
    return TreeItem(entry, functools.partial(_open, path))


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _kind_error(path: Path, mode: int) -> ArchiveError:
    what = (
        "a socket"
        if stat.S_ISSOCK(mode)
        else "a fifo"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a file, directory or link"
    )
    return ArchiveError(f"{path}: is {what}; only files, directories and links can be packed (remove or exclude it)")


def _excluded(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def _walk(root: Path, patterns: Sequence[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    stack = [("", root)]
    while stack:
        rel_dir, directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name.encode("utf-8", "surrogateescape"), reverse=True)
        except OSError as exc:
            raise InputError(f"{directory}: cannot be read ({exc.strerror or exc})") from None
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            if _excluded(rel, patterns):
                continue
            st = child.stat(follow_symlinks=False)
            yield rel, Path(child.path), st
            if stat.S_ISDIR(st.st_mode):
                stack.append((rel, Path(child.path)))


def collect(root: Path, *, exclude: Sequence[str] = (), absolute_links: bool = False) -> list[TreeItem]:
    """The canonical entries of ``root`` (names relative to it), in no particular order.

    ``absolute_links`` allows symlinks such as ``/usr/bin/python3``: inside a container
    image they resolve within the image's root, so layers may carry them.
    """
    try:
        top = root.lstat()
    except FileNotFoundError:
        raise InputError(f"{root}: no such file or directory") from None
    except OSError as exc:
        raise InputError(f"{root}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISREG(top.st_mode):
        return [file_item(Entry(root.name, "file", policy.canonical_mode(top.st_mode), top.st_size), root)]
    if not stat.S_ISDIR(top.st_mode):
        raise (
            _kind_error(root, top.st_mode)
            if not stat.S_ISLNK(top.st_mode)
            else InputError(f"{root}: is a symlink; name the directory or file it points to")
        )
    items: list[TreeItem] = []
    inodes: dict[tuple[int, int], list[tuple[str, Path, os.stat_result]]] = {}
    for rel, path, st in _walk(root, exclude):
        name = safe_name(rel, str(root))
        if stat.S_ISDIR(st.st_mode):
            items.append(TreeItem(Entry(name, "dir", policy.DIR_MODE)))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if not (absolute_links and target.startswith("/")):
                check_link_target(name, target, str(root))
            items.append(TreeItem(Entry(name, "symlink", policy.SYMLINK_MODE, 0, target)))
        elif stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append((name, path, st))
            else:
                items.append(file_item(Entry(name, "file", policy.canonical_mode(st.st_mode), st.st_size), path))
        else:
            raise _kind_error(path, st.st_mode)
    for group in inodes.values():
        group.sort(key=lambda g: g[0].encode("utf-8", "surrogateescape"))
        (first, path, st), *others = group
        mode = policy.canonical_mode(st.st_mode)
        items.append(file_item(Entry(first, "file", mode, st.st_size), path))
        items.extend(TreeItem(Entry(name, "hardlink", mode, 0, first)) for name, _, _ in others)
    return items


def place(items: Iterable[TreeItem], dest: str) -> list[TreeItem]:
    """Move entries under ``dest`` (a clean relative path; "" is the root)."""
    if not dest:
        return list(items)
    moved = []
    for item in items:
        e = item.entry
        link = f"{dest}/{e.linkname}" if e.kind == "hardlink" else e.linkname
        moved.append(TreeItem(Entry(f"{dest}/{e.name}", e.kind, e.mode, e.size, link), item.opener))
    return moved


def merge(sources: Iterable[tuple[str, Iterable[TreeItem]]], label: str) -> list[TreeItem]:
    """Join several sources' entries into one sorted namespace with every parent directory.

    A path claimed by two sources is refused unless both are directories: silently letting
    the later one win would make the result depend on argument order in a way nobody sees.
    """
    owner: dict[str, tuple[str, TreeItem]] = {}
    for origin, items in sources:
        for item in items:
            name = item.entry.name
            if name in owner:
                first_origin, first = owner[name]
                if first.entry.kind == "dir" and item.entry.kind == "dir":
                    continue
                raise ArchiveError(
                    f"{label}: {name!r} comes from both {first_origin} and {origin}; "
                    "remove one of them or add them at different destinations"
                )
            owner[name] = (origin, item)
    for name in list(owner):
        for parent in parents(name):
            if parent in owner and owner[parent][1].entry.kind != "dir":
                raise ArchiveError(
                    f"{label}: {parent!r} is a file in {owner[parent][0]} and a directory in another source"
                )
            owner.setdefault(parent, ("(parent)", TreeItem(Entry(parent, "dir", policy.DIR_MODE))))
    return sorted((item for _, item in owner.values()), key=lambda item: item.entry.sort_key)
