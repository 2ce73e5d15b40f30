"""Where a build's source lives: laid out at fixed paths under the build root.

A directory source is copied to ``ROOT/src/source`` (a subdirectory of a larger git
repository is used in place, since VCS-versioning plugins need the whole work tree); an
sdist, given or just built, is unpacked under ``ROOT/src/unpacked`` with the PEP 706
``data`` filter, so nothing can land outside it.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from detpack.archive.entry import READ_ERRORS
from detpack.environment import BuildRoot
from detpack.errors import ArchiveError
from detpack.source import Source, copy_tree


def lay_out(source: Source, root: BuildRoot) -> Path:
    if source.git is not None and source.git.subdir:
        # A subdirectory of a larger repository: VCS-versioning plugins need the whole work
        # tree, so build in place (the wheel still comes from an sdist at a fixed path).
        return source.path
    dest = root.work / "source"
    copy_tree(source, dest)
    return dest


def unpack_sdist(archive: Path, dest: Path, label: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tf:
            tops = {m.name.split("/", 1)[0] for m in tf.getmembers()}
            if len(tops) != 1:
                raise ArchiveError(f"{label}: an sdist must hold one top-level directory, found {sorted(tops)}")
            tf.extractall(dest, filter="data")
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: cannot unpack the sdist ({exc})") from None
    return dest / tops.pop()


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
