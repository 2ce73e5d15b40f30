"""Isolated build environments kept between builds, keyed by what fixes their files.

A locked build's entry is keyed by the lock (a lock fixes every file, so an environment made
from it once is the environment it would make again); an unlocked build's (uv) by the files its
resolution chose, each by sha256 (``files_key``). Either key also covers the interpreter and the
installer; an entry is verified on every reuse (the sha256 of every file of the environment,
bytecode included, and every link's target, against the manifest written when it was made) and
remade when anything changed. Entries live under the fixed build root (``ROOT/cache``), shared by the
builds that run at once, and are moved to the build's per-distribution environment path,
so the path a backend sees is the same with or without the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import venv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from detpack.build.environment import Runner, Started
from detpack.build.lockfile import BuildLock

MANIFEST = "detpack-env.json"
_ENTRY = re.compile(r"(files-)?[0-9a-f]{32}")  # an environment's name: ``key``, ``files_key``
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


def _digest_tree(env: Path) -> dict[str, str]:
    """Every file of the environment at ``env`` (its interpreter links, scripts, ``pyvenv.cfg`` and
    site-packages, compiled bytecode included: it is what runs) by sha256, a link by its target (never
    followed); the manifest itself aside."""
    out = {}
    base = str(env)
    for folder, dirs, names in os.walk(base):
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, base)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            elif rel != MANIFEST:
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return dict(sorted(out.items()))


#: How the environment's interpreter compiles it: isolated (``-I``: no working directory on ``sys.path``,
#: where a hook may have planted ``compileall.py`` in the build root installs start in) and without
#: ``site`` (``-S``: no build requirement's ``.pth`` runs); it writes the environment that is kept.
COMPILE_FLAGS = ("-I", "-S")


def _compile(env: CachedEnv, runner: Runner) -> None:
    """Compile a new entry's modules once, as the hooks will see them: every build that reuses it
    imports its backend from bytecode (hooks never write bytecode; PYTHONDONTWRITEBYTECODE)."""
    cmd = [env.python_executable, *COMPILE_FLAGS, "-m", "compileall", "-q", "-j", "0", str(env.purelib)]
    runner.install(cmd, extra_environ={"PYTHONPATH": ""})


#: ``stat_tree``: every entry's (inode, mode, size, mtime, change time) by its path in the environment
Stats = dict[str, tuple[int, int, int, int, int]]


@dataclass(frozen=True)
class Held:
    """An environment as it was taken or made: its manifest and every entry's ``stat_tree``."""

    files: dict[str, str]  # the sha256 of every file, the target of every link
    stats: Stats


def _verified(entry: Path) -> Held | None:
    """The entry as its manifest says, when it still is, else None."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    recorded = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict) or not recorded or not all(isinstance(v, str) for v in recorded.values()):
        return None
    now = stat_tree(entry)
    if manifest.get("stats") == {k: list(v) for k, v in now.items()}:
        return Held(recorded, now)  # no file written, replaced, added or removed since it was hashed
    return Held(recorded, now) if _digest_tree(entry) == recorded else None


def files_key(files: Sequence[str], installer: str) -> str:
    """The entry of an unlocked build's environment: the files installed (``name==version sha256:…``
    each), the interpreter and the installer; the same files make the same environment."""
    facts = [*sorted(files), installer, sys.version, platform.machine(), str(Path(sys.executable).resolve())]
    return "files-" + hashlib.sha256("\n".join(facts).encode()).hexdigest()[:32]


def claim(cache: Path, name: str, env_dir: Path, runner: Runner) -> Held | None:
    """Move entry ``name`` to ``env_dir`` and return it when it is as its manifest says; otherwise
    nothing is at ``env_dir`` and None is returned (no entry, another build holds it, or it changed:
    then it is removed)."""
    cache.mkdir(parents=True, exist_ok=True)
    if env_dir.exists():
        shutil.rmtree(env_dir)
    entry = cache / name
    verified = None
    with contextlib.suppress(OSError):  # no entry, another build holds it, or another filesystem
        entry.rename(env_dir)
        verified = _verified(env_dir)
        if verified is None:
            runner.emit(f"cached build environment {entry.name} changed or is incomplete: remaking it")
            shutil.rmtree(env_dir)
            if runner.root is not None:  # installers link files from their caches: what changed may be there too
                runner.emit("emptying this build's download caches: the environment is made from fresh downloads")
                shutil.rmtree(runner.root.downloads, ignore_errors=True)
                runner.root.downloads.mkdir(parents=True, exist_ok=True)
    return verified


def stat_tree(env: Path) -> Stats:
    """Every file, folder and link of the environment at ``env`` by (inode, mode, size, mtime, change
    time), never followed: what ``give_back`` and ``claim`` compare, cheaply, to see that nothing changed
    (no write, chmod, rename or replacement leaves a change time as it was; only the clock could)."""
    out: Stats = {}

    def walk(folder: str, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for e in entries:
                st = e.stat(follow_symlinks=False)
                out[prefix + e.name] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if e.is_dir(follow_symlinks=False):
                    walk(e.path, f"{prefix}{e.name}/")

    walk(str(env), "")
    out.pop(MANIFEST, None)
    return out


def made(env_dir: Path) -> CachedEnv:
    """A fresh virtual environment at ``env_dir`` (fill it, then ``compiled``). It is marked
    relocatable, so uv writes scripts that find their interpreter beside them: an entry moves
    between the phases' paths (``env-sdist``, ``env-wheel``) and its scripts still run."""
    venv.EnvBuilder(symlinks=os.name != "nt", with_pip=False).create(env_dir)
    with (env_dir / "pyvenv.cfg").open("a", encoding="utf-8") as cfg:
        cfg.write("relocatable = true\n")
    return CachedEnv(env_dir)


def compiled(env: CachedEnv, runner: Runner) -> dict[str, str]:
    """Compile a filled environment's modules; return its files' digests (its manifest)."""
    _compile(env, runner)
    return _digest_tree(Path(env.path))


def compile_started(env: CachedEnv, runner: Runner) -> Started:
    """Start compiling a filled environment's modules, one process, beside the hooks that use it
    meanwhile (each ``.pyc`` appears whole: written aside, then renamed); ``digests`` once it is done."""
    cmd = [env.python_executable, *COMPILE_FLAGS, "-m", "compileall", "-q", "-j", "1", str(env.purelib)]
    return runner.install_started(cmd, extra_environ={"PYTHONPATH": ""})


def digests(env_dir: Path) -> dict[str, str]:
    """Every file's sha256 and every link's target in the environment at ``env_dir`` (a manifest)."""
    return _digest_tree(env_dir)


def give_back(cache: Path, name: str, env_dir: Path, held: Held, facts: dict[str, object]) -> bool:
    """Put the environment at ``env_dir`` into the cache as ``name`` when no file or link of it changed
    since it was ``held`` (taken or made: the hooks saw it read-only), else remove it; whether it was kept."""
    kept = False
    if held.files and held.stats == stat_tree(env_dir):
        manifest = {**facts, "files": held.files, "stats": held.stats}
        (env_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        with contextlib.suppress(OSError):  # another build gave its copy back first: keep that one
            (env_dir).rename(cache / name)
            os.utime(cache / name)
            kept = True
    if kept:
        _evict(cache)
    else:
        shutil.rmtree(env_dir, ignore_errors=True)
    return kept


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
    name = key(lock, installer)
    held = claim(cache, name, env_dir, runner)
    reused = held is not None
    if held is None:
        env = made(env_dir)
        make(env)
        held = Held(compiled(env, runner), stat_tree(env_dir))
    ok = False
    try:
        yield CachedEnv(env_dir), reused
        ok = True
    finally:
        if ok:
            give_back(cache, name, env_dir, held, {"lock": lock.sha256})
        else:
            shutil.rmtree(env_dir, ignore_errors=True)


def _evict(cache: Path) -> None:
    """Remove the least recently used environments beyond ``KEEP``: only environments (named by ``key``
    or ``files_key``), never the remembered resolutions and answers or the download pools beside them."""
    entries = sorted(
        (p for p in cache.iterdir() if _ENTRY.fullmatch(p.name) and p.is_dir()),
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
