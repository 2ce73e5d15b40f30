"""The build root: where every build's files live, at one fixed path as its subprocesses see it.

The build root is at one fixed path (``policy.BUILD_ROOT``, or ``$DETPACK_BUILD_ROOT``). With a
sandbox each build has a private directory (``BUILD_ROOT/runs/XXXX``) that its installs and hooks
see at that fixed path (bound there in their own mount namespace), so any number of builds run at
once. Without a sandbox there is one fixed directory for the whole machine, and a lock makes builds
take turns. The root is the user's own (0700; one of another owner, or a link, is refused): whoever
owns it could swap what a build installs and runs. Kept between builds under it: locked build
environments and requirement answers (``cache``), and the installers' download caches in a pool per
project (``cache/downloads-by-project``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from detpack import policy
from detpack.build import untrusted
from detpack.errors import EnvironmentSetupError

LineSink = Callable[[str], None]
RUNS = "runs"  # BUILD_ROOT/runs/: the private roots of builds in progress
DOWNLOADS = "downloads"  # a build's own installers' download caches, in its private root
#: BUILD_ROOT/cache/downloads-by-project/PROJECT/N/: sets of download caches, a pool per project: an
#: install's code (an sdist's setup.py, a .pth file) can change the set it used, so a set is only
#: ever used again by builds of the same project.
DOWNLOAD_POOLS = "downloads-by-project"
DOWNLOAD_SETS = 4  # sets kept per project: builds running at once each take one
DOWNLOAD_PROJECTS = 16  # projects whose pools are kept (the most recently used)
STALE_AFTER = 60.0  # seconds: a private root nobody holds, older than this, is a crashed build's


@dataclass(frozen=True)
class BuildRoot:
    """Fixed directories under the build root; their paths never depend on the user's tree.

    ``root`` is where the directories are on this machine; ``inside`` is where build
    subprocesses see them (the fixed path a private root is bound at; None: at ``root``).
    Build environments kept between builds live in ``cache``, shared by every build.
    """

    root: Path
    inside: Path | None = None

    @property
    def seen(self) -> Path:
        """The build root as build subprocesses see it (what provenance records)."""
        return self.inside or self.root

    @property
    def private(self) -> bool:
        return self.inside is not None

    def to_inside(self, text: str) -> str:
        """``text`` (a path, or a value holding paths) with this machine's root as subprocesses see it."""
        return text.replace(str(self.root), str(self.inside)) if self.inside is not None else text

    def to_host(self, text: str) -> str:
        return text.replace(str(self.inside), str(self.root)) if self.inside is not None else text

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def work(self) -> Path:
        return self.root / "src"

    @property
    def cache(self) -> Path:
        """Kept between builds, under the fixed root (a private root is bound over it inside, and
        lives under it on this machine)."""
        return self.seen / "cache"

    @property
    def downloads(self) -> Path:
        """The installers' download caches, taken from the pool in ``cache`` for the build."""
        return self.root / DOWNLOADS

    def env_dir(self, distribution: str) -> Path:
        return self.root / f"env-{distribution}"


def root_path() -> Path:
    """Where the build root is: ``$DETPACK_BUILD_ROOT``, else ``policy.BUILD_ROOT``."""
    return Path(os.environ.get("DETPACK_BUILD_ROOT") or policy.BUILD_ROOT)


@contextlib.contextmanager
def build_root(
    path: Path | None = None, on_wait: LineSink | None = None, *, private: bool = False, project: str = "unnamed"
) -> Iterator[BuildRoot]:
    """Take a build root, emptied, for the duration of one build.

    ``private`` (a build whose subprocesses run with the root bound at its fixed path): a
    fresh directory of this build's own under ``path/runs``, removed afterwards; nothing
    waits. Otherwise ``path`` itself, for one build at a time: ``on_wait`` hears one line
    when another build holds it and this one must wait. ``project`` names the pool of download
    caches the build takes one from and gives it back to.
    """
    root = path or root_path()
    taken = _private_root(root) if private else _shared_root(root, on_wait)
    with taken as br:
        pool = br.cache / DOWNLOAD_POOLS / (re.sub(r"[^a-z0-9._-]+", "-", project.lower()).strip(".-") or "unnamed")
        try:
            for d in (br.home, br.tmp, br.raw):
                d.mkdir()
            _claim_downloads(pool, br.downloads)
            yield br
        finally:
            _return_downloads(br.downloads, pool)


def _own_root(root: Path) -> None:
    """Make ``root`` (0700), or take it when it is a directory of this user's; refuse one of another
    owner or a link: whoever owns the build root can swap what a build installs and runs."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise EnvironmentSetupError(
            f"{root}: the build root is a link or a file, not a directory; remove it or set DETPACK_BUILD_ROOT "
            "to a directory of your own"
        )
    if info.st_uid != os.geteuid():
        raise EnvironmentSetupError(
            f"{root}: the build root is owned by uid {info.st_uid}, not by you (uid {os.geteuid()}); another user "
            "could swap what your builds install and run through it: remove it or set DETPACK_BUILD_ROOT to a "
            "directory of your own"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(root, 0o700)


def _cannot_create(root: Path, exc: OSError) -> EnvironmentSetupError:
    return EnvironmentSetupError(
        f"{root}: cannot create the build root ({exc.strerror}); set DETPACK_BUILD_ROOT to a writable path"
    )


@contextlib.contextmanager
def _private_root(root: Path) -> Iterator[BuildRoot]:
    """A new directory under ``root/runs``, held (flock) while the build runs, removed after."""
    try:
        _own_root(root)
        (root / RUNS).mkdir(mode=0o700, exist_ok=True)
        # Made under a dot name, held (flock), then renamed: a sweep never sees it unheld. Its age
        # alone cannot protect it: a build under faketime (check --vary clock) sees every root as old.
        making = Path(tempfile.mkdtemp(prefix=".new-", dir=root / RUNS))
        held = os.open(making, os.O_RDONLY)
    except OSError as exc:
        raise _cannot_create(root, exc) from None
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # a sweep leaves a held root alone
        own = making.with_name(making.name.removeprefix(".new-"))
        try:
            making.rename(own)
        except OSError as exc:
            shutil.rmtree(making, ignore_errors=True)
            raise _cannot_create(root, exc) from None
        _sweep_runs(root / RUNS)
        try:
            yield BuildRoot(own, inside=root)
        finally:
            shutil.rmtree(own, onerror=untrusted.force_remove)
    finally:
        os.close(held)


@contextlib.contextmanager
def _shared_root(root: Path, on_wait: LineSink | None) -> Iterator[BuildRoot]:
    """``root`` itself, emptied, for one build at a time (a lock; ``on_wait`` hears a wait)."""
    try:
        _own_root(root)
        lock = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise _cannot_create(root, exc) from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another detpack build to release {root} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        _empty(root)
        try:
            yield BuildRoot(root)
        finally:
            _empty(root)
    finally:
        os.close(lock)


def _claim_downloads(pool: Path, mine: Path) -> None:
    """Move a set of download caches from the pool into this build's root, the most recently used
    first: there they are on the same mount as the environments, so installers hard-link from them.
    A build that finds every set taken (builds running at once) starts with an empty one."""
    try:
        sets = sorted(pool.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for one in sets:
        if one.name.startswith("."):
            continue
        with contextlib.suppress(OSError):  # another build took it first
            one.rename(mine)
            return


def _return_downloads(mine: Path, pool: Path) -> None:
    """Give this build's download caches back to the pool, keeping the ``DOWNLOAD_SETS`` most recent."""
    if not mine.is_dir():
        return
    with contextlib.suppress(OSError):
        pool.mkdir(parents=True, exist_ok=True)
        mine.rename(pool / f"{time.time_ns():x}-{os.getpid()}")
        os.utime(pool)
        _keep_newest(pool, DOWNLOAD_SETS)
        _keep_newest(pool.parent, DOWNLOAD_PROJECTS)


def _keep_newest(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used entries of ``folder`` (each first renamed
    aside, so a build that would claim one finds it gone rather than half removed)."""
    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for old in entries[: max(len(entries) - keep, 0)]:
        gone = folder / f".gone-{old.name}-{os.getpid()}"
        with contextlib.suppress(OSError):
            old.rename(gone)
            shutil.rmtree(gone, onerror=untrusted.force_remove)


def _sweep_runs(runs: Path) -> None:
    """Remove the private roots of builds that died without cleaning up (nobody holds them)."""
    for run in runs.iterdir():
        if run.name.startswith("."):
            continue  # a root being made (see _private_root)
        try:
            if time.time() - run.stat().st_mtime < STALE_AFTER:
                continue  # a build that has just made its root may not hold it yet
            fd = os.open(run, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(run, onerror=untrusted.force_remove)
        except BlockingIOError:
            pass  # a build in progress
        finally:
            os.close(fd)


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if child.name in (".lock", "cache", RUNS):
            continue  # the lock file, locked build environments kept between builds, other builds' private roots
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, onerror=untrusted.force_remove)
        else:
            child.unlink()
