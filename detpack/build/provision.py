"""Which isolated environment a build gets: the image's, a cached one, or a fresh one.

``provisioned`` picks the way:

- with a toolchain image, an environment made by the image's interpreter;
- with a lock and the cache, ``envcache``'s environment for that lock;
- unlocked with uv and the cache, a pooled environment (``PooledProvisioner``): the requirements
  are resolved (or the resolution remembered in ``reuse`` is taken while it stands), and the
  environment of exactly the files chosen is taken from ``envcache`` when an entry verifies, else
  made and kept; the sdist and wheel phases of one build share it when they resolve to the same
  files, as do later builds;
- otherwise ``build``'s own isolated environment, filled as the backend asks.

What was taken from before is listed in ``Provisioner.reused`` (the provenance records it).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from detpack.build import envcache, reuse, untrusted
from detpack.build.deps import (
    InstalledDependency,
    InstallSettings,
    Provisioner,
    find_uv,
    from_lock,
    install_files,
    install_lock,
    isolated_env,
    uv_resolve,
)
from detpack.build.environment import Runner, Started
from detpack.errors import EnvironmentSetupError


@contextlib.contextmanager
def provisioned(env_dir: Path, settings: InstallSettings, runner: Runner, who: Path) -> Iterator[Provisioner]:
    """An isolated environment at ``env_dir`` for building ``who``, ready to ``require`` into."""
    lock = settings.lock
    root = runner.root
    if root is not None and env_dir.is_relative_to(root.root):
        # An earlier hook could have left files where this environment goes (a pip.conf an
        # installer would read): it is made where nothing is, never through a link.
        untrusted.check_dirs(root.root, env_dir)
        untrusted.remove(env_dir)
    if settings.toolchain_python is not None:
        from detpack.build.imagebuild import ImageEnv

        python = settings.toolchain_python.rpartition("@sha256:")[0]
        made = ImageEnv.make(env_dir, python, runner, settings.uv or find_uv(os.environ))
        yield Provisioner(made, env_dir, settings, runner, who)
        return
    if lock is None and settings.cache is not None and settings.installer == "uv":
        pooled = PooledProvisioner(env_dir, settings, runner, who)
        ok = False
        try:
            yield pooled
            ok = True
        finally:
            pooled.close(keep=ok)
        return
    if lock is None or settings.cache is None:
        with isolated_env(env_dir, installer=settings.installer, uv=settings.uv) as env:
            yield Provisioner(env, Path(env.path), settings, runner, who)
        return
    got = [from_lock(p) for p in lock.packages]

    def make(env: envcache.CachedEnv) -> None:
        got[:] = install_lock(env.python_executable, env_dir, settings, runner)

    cache = envcache.cached_env(settings.cache, lock, runner, installer=settings.installer, env_dir=env_dir, make=make)
    with cache as (cached, reused):
        runner.emit(f"{'reusing' if reused else 'made'} cached build environment for lock {lock.sha256[:12]}")
        provisioner = Provisioner(cached, env_dir, settings, runner, who, got=got)
        if reused:
            provisioner.reused.append(f"environment for lock {lock.sha256[:12]} (every file checked)")
        yield provisioner


def _known(files: dict[str, InstalledDependency]) -> list[str]:
    return [f"{d.name}=={d.version} sha256:{d.sha256}" for d in sorted(files.values(), key=lambda d: d.name)]


class PooledProvisioner(Provisioner):
    """An unlocked build's environment, resolved first and installed only when a hook needs it.

    ``require`` resolves (or takes the remembered resolution); the environment is made or taken
    from the cache by ``ready``, keyed by the files resolved, so a backend whose answer to
    ``get_requires_for_build_*`` is remembered for those files runs no installer at all.
    """

    def __init__(self, env_dir: Path, settings: InstallSettings, runner: Runner, who: Path) -> None:
        assert settings.cache is not None
        super().__init__(envcache.CachedEnv(env_dir), env_dir, settings, runner, who)
        self._cache = settings.cache
        self._held: str | None = None  # the entry name of the environment at env_dir, once there is one
        self._env: envcache.Held | None = None  # it as it was taken or made (None while its bytecode is made)
        self._compiling: Started | None = None  # a new environment's bytecode, made beside the first hooks
        self._installed: dict[str, InstalledDependency] = {}

    def require(self, requirements: Collection[str]) -> None:
        new = set(requirements) - self._asked
        if not new:
            return
        if self._held is not None:  # checked before this resolution writes its own files in it
            self._settle()
            if self._env is None or envcache.stat_tree(self._path) != self._env.stats:
                raise EnvironmentSetupError(
                    f"{self._path}: the build environment changed while a hook ran; refusing to add to it"
                )
        self._asked |= new
        self._got = {d.name: d for d in self._resolve()}
        self._filled = True

    def _resolve(self) -> list[InstalledDependency]:
        interpreter = [sys.version, platform.machine(), str(Path(sys.executable).resolve())]
        uv = self._settings.uv or find_uv(os.environ)
        variables = self._runner.env.variables
        facts = reuse.facts(
            self._asked, python=interpreter, installer=uv, constraints=self._settings.constraints, variables=variables
        )
        if facts is not None and self._settings.resolution_ttl > 0:
            known = reuse.recall(self._cache, facts, ttl=self._settings.resolution_ttl)
            if known is not None:
                said = known.said(time.time())
                self._runner.emit(f"build requirements: taking the {said} (same requirements, settings, find-links)")
                self.reused.append(said)
                return [InstalledDependency(f.name, f.version, f.sha256, f.url, False) for f in known.files]
        python = self.env.python_executable
        if not Path(python).exists():  # the resolution is for this interpreter: uv asks the environment's
            envcache.made(self._path)
        reqfile = self._path / "detpack-requirements.txt"
        reqfile.write_text("\n".join(sorted(self._asked)) + "\n", encoding="utf-8")
        started = time.time()
        chosen = uv_resolve(python, self._path, reqfile, self._settings, self._runner)
        if facts is not None:
            files = tuple(
                reuse.ChosenFile(d.name, d.version, d.sha256 or "", d.url or "") for d in chosen if d.sha256 and d.url
            )
            if len(files) == len(chosen):
                reuse.remember(self._cache, facts, reuse.Resolution(files, started, reuse.uses_index(variables)))
        return chosen

    def _installer_identity(self) -> str:
        """The installer that fills the environment, down to its binary: another uv may install otherwise."""
        uv = self._settings.uv or find_uv(os.environ)
        try:
            st = os.stat(uv)
        except OSError:
            return f"{self._settings.installer} {uv}"
        return f"{self._settings.installer} {Path(uv).resolve()} {st.st_size} {st.st_mtime_ns}"

    def ready(self) -> None:
        name = envcache.files_key(_known(self._got), self._installer_identity())
        if self._held == name:
            return
        env = envcache.CachedEnv(self._path)
        if self._held is None:
            taken = envcache.claim(self._cache, name, self._path, self._runner)
            if taken is not None:
                self._runner.emit(f"reusing cached build environment {name} (every file checked)")
                self.reused.append(f"environment {name} (every file checked)")
                self._held, self._env, self._installed = name, taken, dict(self._got)
                return
            env = envcache.made(self._path)
            todo = list(self._got.values())
        else:  # made for fewer requirements (a hook asked for more): the rest goes in
            self._settle()  # checked unchanged by ``require``, before the resolution wrote in it
            have = self._installed
            dropped = sorted(have.keys() - self._got.keys())
            if dropped:  # kept, the entry would hold files its key and manifest do not name: made again
                self._runner.emit(f"the build requirements no longer resolve to {', '.join(dropped)}: remaking")
                shutil.rmtree(self._path)
                env, have = envcache.made(self._path), {}
            todo = [d for d in self._got.values() if d.name not in have or have[d.name].sha256 != d.sha256]
        install_files(env.python_executable, self._path, todo, self._settings, self._runner)
        self._runner.emit(f"made cached build environment {name}")
        self._held, self._installed = name, dict(self._got)
        if self._runner.sandbox is not None:  # the hooks see it read-only: compile beside them
            self._compiling = envcache.compile_started(env, self._runner)
        else:  # hooks could write it: what is given back is checked against this, taken before they run
            self._env = envcache.Held(envcache.compiled(env, self._runner), envcache.stat_tree(self._path))

    def _settle(self) -> None:
        """Wait for the bytecode being made; then the manifest is known."""
        if self._compiling is None:
            return
        compiling, self._compiling = self._compiling, None
        try:
            compiling.wait()
        except subprocess.CalledProcessError as exc:  # a module that does not compile runs from source
            self._runner.emit(f"compiling the build environment's modules ended with exit status {exc.returncode}")
        self._env = envcache.Held(envcache.digests(self._path), envcache.stat_tree(self._path))

    def close(self, *, keep: bool) -> None:
        """Give the environment back to the cache (when the build went well and nothing changed it)."""
        self._settle()
        if keep and self._held is not None and self._env is not None:
            facts: dict[str, object] = {"installed": _known(self._installed)}
            envcache.give_back(self._cache, self._held, self._path, self._env, facts)
        else:
            shutil.rmtree(self._path, ignore_errors=True)
