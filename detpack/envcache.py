"""Isolated build environments kept between builds, keyed by the lock they were made from.

Only locked builds use the cache: a lock fixes every file, so an environment made from it
once is the environment it would make again. The key covers the lock's sha256, the
interpreter and the installer; an entry is verified on every reuse (the sha256 of every
file in its site-packages against the manifest written when it was made) and remade when
anything changed. Entries live under the build root (``ROOT/cache``) and are moved to the
per-distribution environment path for the build, so the path a backend sees is the same
with or without the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

from detpack.environment import Runner
from detpack.installer import Installer, install_locked
from detpack.lock import BuildLock

MANIFEST = "detpack-env.json"
KEEP = 8  # entries kept; the least recently used beyond this are removed


class CachedEnv:
    """A virtual environment at a fixed path (build.env.IsolatedEnv protocol)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._bin = path / "bin"
        self.purelib = next(path.glob("lib/python*/site-packages"), path / "lib" / "site-packages")

    @property
    def python_executable(self) -> str:
        return str(self._bin / "python")

    def make_extra_environ(self) -> dict[str, str]:
        return {"PATH": os.pathsep.join([str(self._bin), os.environ.get("PATH", "")]), "PYTHONPATH": ""}


def key(lock: BuildLock, installer: Installer) -> str:
    facts = [lock.sha256, installer, sys.version, platform.machine(), str(Path(sys.executable).resolve())]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:32]


def _digest_tree(site: Path) -> dict[str, str]:
    out = {}
    for path in sorted(site.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            out[path.relative_to(site).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _valid(entry: Path) -> bool:
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    env = CachedEnv(entry)
    return bool(manifest.get("files")) and manifest["files"] == _digest_tree(Path(env.purelib))


@contextlib.contextmanager
def cached_env(
    cache: Path, lock: BuildLock, runner: Runner, *, installer: Installer, env_dir: Path
) -> Iterator[tuple[CachedEnv, list[dict[str, object]], bool]]:
    """Yield the environment for ``lock`` at ``env_dir`` (reused when its cache entry verifies).

    Yields the environment, pip-report-like items for provenance, and whether it was reused.
    """
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / key(lock, installer)
    reused = entry.is_dir() and _valid(entry)
    if entry.exists() and not reused:
        runner.emit(f"cached build environment {entry.name} changed or is incomplete: remaking it")
        shutil.rmtree(entry, ignore_errors=True)
    if env_dir.exists():
        shutil.rmtree(env_dir)
    if reused:
        entry.rename(env_dir)
        items: list[dict[str, object]] = [
            {
                "metadata": {"name": p.name, "version": p.version},
                "download_info": {"archive_info": {"hashes": {"sha256": p.sha256}}},
            }
            for p in lock.packages
        ]
    else:
        venv.EnvBuilder(symlinks=os.name != "nt", with_pip=False).create(env_dir)
        items = install_locked(CachedEnv(env_dir), lock, runner, installer=installer)  # type: ignore[arg-type]
    env = CachedEnv(env_dir)
    manifest = {"lock": lock.sha256, "files": _digest_tree(Path(env.purelib))}
    ok = False
    try:
        yield env, items, reused
        ok = True
    finally:
        if ok and manifest["files"] == _digest_tree(Path(env.purelib)):
            (env_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            shutil.rmtree(entry, ignore_errors=True)
            env_dir.rename(entry)
            os.utime(entry)
            _evict(cache)
        else:
            shutil.rmtree(env_dir, ignore_errors=True)


def _evict(cache: Path) -> None:
    entries = sorted((p for p in cache.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
