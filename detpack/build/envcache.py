"""Isolated build environments kept between builds, keyed by the lock they were made from.

Only locked builds use the cache: a lock fixes every file, so an environment made from it
once is the environment it would make again. The key covers the lock's sha256, the
interpreter and the installer; an entry is verified on every reuse (the sha256 of every
file in its site-packages against the manifest written when it was made) and remade when
anything changed. Entries live under the fixed build root (``ROOT/cache``), shared by the
builds that run at once, and are moved to the build's per-distribution environment path,
so the path a backend sees is the same with or without the cache.
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from detpack.build.environment import DOWNLOAD_POOLS, DOWNLOADS, Runner
from detpack.build.lockfile import BuildLock

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


def key(lock: BuildLock, installer: str) -> str:
    facts = [lock.sha256, installer, sys.version, platform.machine(), str(Path(sys.executable).resolve())]
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:32]


def _digest_tree(site: Path) -> dict[str, str]:
    """sha256 of every file under ``site``, compiled bytecode included (it is what runs)."""
    out = {}
    for path in sorted(site.rglob("*")):
        if path.is_file():
            out[path.relative_to(site).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _compile(env: CachedEnv, runner: Runner) -> None:
    """Compile a new entry's modules once, as the hooks will see them: every build that reuses it
    imports its backend from bytecode (hooks never write bytecode; PYTHONDONTWRITEBYTECODE)."""
    cmd = [env.python_executable, "-m", "compileall", "-q", "-j", "0", str(env.purelib)]
    runner.install(cmd, extra_environ={"PYTHONPATH": ""})


def _verified_files(entry: Path) -> dict[str, str] | None:
    """The entry's file digests when they match its manifest, else None."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = _digest_tree(Path(CachedEnv(entry).purelib))
    return files if manifest.get("files") and manifest["files"] == files else None


@contextlib.contextmanager
def cached_env(
    cache: Path, lock: BuildLock, runner: Runner, *, installer: str, env_dir: Path, make: Callable[[CachedEnv], None]
) -> Iterator[tuple[CachedEnv, bool]]:
    """Yield the environment for ``lock`` at ``env_dir`` and whether it was reused.

    Builds run at once share the cache: an entry is claimed by renaming it to ``env_dir``
    (one build holds it; another one finds no entry and makes its own), verified there, and
    given back by renaming it into place again unless another build gave one back first.
    Otherwise a fresh virtual environment is made at ``env_dir`` and ``make`` fills it.
    """
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / key(lock, installer)
    if env_dir.exists():
        shutil.rmtree(env_dir)
    verified = None
    with contextlib.suppress(OSError):  # no entry, another build holds it, or another filesystem
        entry.rename(env_dir)
        verified = _verified_files(env_dir)
        if verified is None:
            runner.emit(f"cached build environment {entry.name} changed or is incomplete: remaking it")
            shutil.rmtree(env_dir)
    reused = verified is not None
    if not reused:
        venv.EnvBuilder(symlinks=os.name != "nt", with_pip=False).create(env_dir)
        make(CachedEnv(env_dir))
        _compile(CachedEnv(env_dir), runner)
    env = CachedEnv(env_dir)
    # A reused entry was just hashed file by file: that is its manifest (no second pass).
    manifest = {"lock": lock.sha256, "files": verified if verified is not None else _digest_tree(Path(env.purelib))}
    ok = False
    try:
        yield env, reused
        ok = True
    finally:
        kept = False
        if ok and manifest["files"] == _digest_tree(Path(env.purelib)):
            (env_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            with contextlib.suppress(OSError):  # another build gave its copy back first: keep that one
                env_dir.rename(entry)
                os.utime(entry)
                kept = True
        if kept:
            _evict(cache)
        else:
            shutil.rmtree(env_dir, ignore_errors=True)


def _evict(cache: Path) -> None:
    kept = ("requires", DOWNLOADS, DOWNLOAD_POOLS)  # not environments
    entries = sorted(
        (p for p in cache.iterdir() if p.is_dir() and p.name not in kept and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[KEEP:]:
        gone = cache / f".evicted-{old.name}-{os.getpid()}"
        with contextlib.suppress(OSError):  # taken away from under a build that would claim it next
            old.rename(gone)
            shutil.rmtree(gone, ignore_errors=True)


def cached_requires(cache: Path, facts: Sequence[str], compute: Callable[[], set[str]]) -> tuple[set[str], bool]:
    """A backend's ``get_requires_for_build_*`` answer, remembered under ``facts``, and whether
    it was remembered.

    The facts name everything the answer can depend on (the interpreter, the environment file
    by file, the distribution, the config settings, a digest of the whole source tree), so a
    hit is the same question asked again; asking costs a backend process (~0.3 s for
    setuptools). A damaged entry is asked again.
    """
    key = hashlib.sha256("\n".join(facts).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    path = cache / "requires" / f"{key}.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return set(value), True
    except (OSError, ValueError):
        pass
    answer = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(sorted(answer)), encoding="utf-8")
    os.replace(tmp, path)
    return answer, False
