"""Where a build's source lives: laid out at fixed paths under the build root.

A directory source is copied to ``ROOT/src/source``. In a git repository that path is a
copy of the repository's work tree with a git directory of its own (``_attach_repository``):
the same commit, branch and tags, objects borrowed read-only from the user's repository,
and the project at its own subdirectory (``ROOT/src/source/packages/a``), so VCS-versioning
plugins see what they would in the checkout. Nothing is ever written into the user's
checkout or git directory. An sdist, given or just built, is unpacked under
``ROOT/src/unpacked`` with the PEP 706 ``data`` filter, so nothing can land outside it.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

from plumbum import ProcessExecutionError, local
from plumbum.commands.processes import CommandNotFound

from detpack.archive.entry import READ_ERRORS, BoundedTarInfo
from detpack.build import untrusted
from detpack.build.environment import BuildRoot
from detpack.build.source import Source, copy_tree
from detpack.errors import ArchiveError, EnvironmentSetupError
from detpack.git import GitInfo
from detpack.policy import copied, left_out_files


def lay_out(source: Source, root: BuildRoot) -> Path:
    """Copy a directory source to ``ROOT/src/source`` (git metadata included); the project's path."""
    return lay_down(source, root.work / "source", copy_tree)


def lay_down(source: Source, top: Path, copy: Callable[[Source, Path], None]) -> Path:
    """Lay ``source`` out with ``top`` as its work tree's root, files copied by ``copy``.

    Outside git ``top`` is the project; in git it is the repository's root, the project sits
    at its subdirectory and ``top`` gets a git directory of its own. Returns the project.
    """
    project = top / source.git.subdir if source.git is not None and source.git.subdir else top
    copy(source, project)
    if source.git is not None:
        _attach_repository(source.git, top, label=source.path)
    return project


def _attach_repository(info: GitInfo, top: Path, *, label: Path) -> None:
    """Make ``top`` (a copy of the project's files) a work tree of the commit in ``info``.

    The new repository borrows the user's objects through ``objects/info/alternates`` and
    copies its tags and branch name, so ``git describe`` and friends answer as in the
    checkout. Its index is the commit's; tracked files the copy leaves out on purpose (outside
    the project, or clutter ``copy_tree`` skips) are marked skip-worktree, so ``git status``
    in the copy reports exactly the changes that ``GitInfo.dirty`` counts.
    """
    user = _Git(info.toplevel, label)
    facts = user(
        "rev-parse", "--show-object-format", "--path-format=absolute", "--git-path", "objects", "--git-path", "shallow"
    )
    object_format, objects, shallow = facts.splitlines()[:3]
    tags = user("for-each-ref", "--format=create %(refname) %(objectname)", "refs/tags")
    git = _Git(top, label)
    git("init", "--quiet", "--template=", f"--object-format={object_format}", ".")
    dotgit = top / ".git"
    try:
        (dotgit / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (dotgit / "objects" / "info" / "alternates").write_text(objects + "\n", encoding="utf-8")
        if Path(shallow).is_file():
            shutil.copyfile(shallow, dotgit / "shallow")  # a shallow clone's boundary commits
    except OSError as exc:
        raise EnvironmentSetupError(f"{label}: cannot lay out a git copy at {top} ({exc.strerror or exc})") from None
    refs = tags
    if info.branch:
        refs += f"create refs/heads/{info.branch} {info.commit}\n"
    if refs.strip():
        git("update-ref", "--stdin", stdin=refs)
    if info.branch:
        git("symbolic-ref", "HEAD", f"refs/heads/{info.branch}")
    else:
        git("update-ref", "--no-deref", "HEAD", info.commit)
    git("read-tree", "HEAD")
    prefix = f"{info.subdir}/" if info.subdir else ""
    files_left_out = left_out_files(top / info.subdir if info.subdir else top)
    left_out = []
    for entry in git("ls-files", "-z", "--stage").split("\0"):
        meta, _, rel = entry.partition("\t")
        # Submodules are left out too: their files are copied, but their git directories
        # stay in the user's repository.
        if rel and (
            meta.startswith("160000") or not rel.startswith(prefix) or not copied(rel[len(prefix) :], files_left_out)
        ):
            left_out.append(rel)
    if left_out:
        git("update-index", "-z", "--skip-worktree", "--stdin", stdin="\0".join(left_out) + "\0")
    git("update-index", "-q", "--refresh", ok=(0, 1))  # 1: some files differ (a dirty tree)


class _Git:
    """git in one repository; a failure is an EnvironmentSetupError naming the source."""

    def __init__(self, repo: Path, label: Path) -> None:
        self.repo = repo
        self.label = label

    def __call__(self, *args: str, stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
        try:
            command = local["git"].with_env(GIT_OPTIONAL_LOCKS="0")["-C", str(self.repo), *args]
            if stdin is not None:
                return str((command << stdin)(retcode=ok))
            return str(command(retcode=ok))
        except ProcessExecutionError as exc:
            lines = [ln for ln in str(exc.stderr).splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"exit {exc.retcode}"
            raise EnvironmentSetupError(
                f"{self.label}: cannot lay out a git copy of the repository (git {args[0]}: {reason})"
            ) from None
        except (CommandNotFound, OSError) as exc:
            raise EnvironmentSetupError(f"{self.label}: cannot run git ({exc})") from None


def fresh_target(target: Path, root: Path) -> Path:
    """Where an sdist is unpacked for the wheel, after a hook has run: made afresh by the host under
    the build ``root`` (a hook may have left a link there to a host directory); a folder of the
    user's choosing outside it must at least not be a link."""
    if target.is_relative_to(root):
        return untrusted.fresh_dir(root, target)
    if target.is_symlink():
        raise EnvironmentSetupError(f"{target}: --sdist-extract-dir is a symbolic link; give a directory")
    return target


def unpack_sdist(archive: Path, dest: Path, label: Path, keep_modes: bool = False) -> Path:
    """Unpack an sdist as PEP 706's ``data`` filter does; ``keep_modes``: with its files' modes as
    the sdist has them, group and other write too (frontends before extraction filters did; a
    rebuild of a build they made)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz", tarinfo=BoundedTarInfo) as tf:
            tops = {m.name.split("/", 1)[0] for m in tf.getmembers()}
            if len(tops) != 1:
                raise ArchiveError(f"{label}: an sdist must hold one top-level directory, found {sorted(tops)}")
            if hasattr(tarfile, "data_filter"):
                # the data filter itself, or it with the sdist's modes
                tf.extractall(dest, filter=_modes_kept if keep_modes else "data")  # noqa: S202
            else:  # CPython before 3.11.4 / 3.12.0 has no extraction filters: check as "data" would
                tf.extractall(dest, members=_data_members(tf, dest, label))  # noqa: S202 (members checked above)
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label}: cannot unpack the sdist ({exc})") from None
    return dest / tops.pop()


def _modes_kept(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """The ``data`` filter, but a file keeps the sdist's mode (high bits aside)."""
    checked = tarfile.data_filter(member, path)
    if checked is None or not member.isreg():
        return checked
    return checked.replace(mode=(member.mode & 0o777) | stat.S_IRUSR | stat.S_IWUSR, deep=False)


def _data_members(tf: tarfile.TarFile, dest: Path, label: Path) -> list[tarfile.TarInfo]:
    """The members, refused as PEP 706's ``data`` filter refuses them: absolute or escaping
    paths and links, and anything but files, directories and links; modes made plain."""
    root = dest.resolve()
    members = []
    for m in tf.getmembers():
        target = (root / m.name).resolve()
        if m.name.startswith("/") or not target.is_relative_to(root):
            raise ArchiveError(f"{label}: member {m.name!r} would land outside the unpacked sdist")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise ArchiveError(f"{label}: member {m.name!r} is a device or fifo; an sdist holds files")
        if m.issym() or m.islnk():
            base = target.parent if m.issym() else root
            if m.linkname.startswith("/") or not (base / m.linkname).resolve().is_relative_to(root):
                raise ArchiveError(f"{label}: link {m.name!r} points outside the unpacked sdist")
        m.mode = (m.mode & 0o755) | (0o200 if m.isfile() or m.isdir() else 0)
        m.uid = m.gid = 0
        m.uname = m.gname = ""
        members.append(m)
    return members
