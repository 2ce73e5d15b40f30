"""The variations ``detpack check`` applies between builds (after reprotest's list).

A ``RunSpec`` is everything one build run gets from outside: environment, umask, where the
tree lives and the order its files were created in. ``CONTROL`` fixes all of them; each
``Variation`` changes one. ``supported()`` says which ones this machine can apply (clock
needs faketime, locale a second UTF-8 locale) and why not otherwise.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from detpack import policy
from detpack.build import sandbox
from detpack.build import workspace as layout
from detpack.build.source import Source, walk
from detpack.errors import ConfigError, InputError

NAMES = (
    "build-path",
    "umask",
    "timezone",
    "locale",
    "home",
    "clock",
    "env-noise",
    "hash-seed",
    "file-order",
    "hostname",
    "uid",
    "cpus",
    "libz",
)
#: Names for several variations at once: ``--vary machine`` is what differs between two machines.
GROUPS = {"machine": ("libz", "hostname", "cpus", "uid")}
#: Variations of the sandbox itself: only a build that runs in one (not --raw) can be varied so.
SANDBOX_ONLY = frozenset({"hostname", "uid", "libz"})

#: Variables copied from the caller into every run: the build root, and the variables every
#: build passes through (where packages come from, proxies, certificates), never what a
#: backend writes.
CARRIED = ("DETPACK_BUILD_ROOT", *policy.PASSTHROUGH_ENV)


@dataclass(frozen=True)
class RunSpec:
    label: str
    env: Mapping[str, str]
    umask: int
    tree: Path
    reverse_order: bool = False
    pass_env: tuple[str, ...] = ()
    one_cpu: bool = False  # the build may run on one CPU only (its affinity mask), not all


@dataclass(frozen=True)
class Variation:
    name: str
    description: str
    apply: Callable[[RunSpec, Path], RunSpec]


def control(work: Path, caller_env: Mapping[str, str], extra: Mapping[str, str]) -> RunSpec:
    env = {k: caller_env[k] for k in CARRIED if k in caller_env}
    env.update(
        PATH=caller_env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        HOME=str(work / "home-control"),
        TZ="UTC",
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        PYTHONHASHSEED="0",
    )
    env.update(extra)
    return RunSpec("control", env, 0o022, work / "control" / "src")


def _second_locale() -> str | None:
    """A UTF-8 locale other than C, if one is installed."""
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    have = {line.strip().lower().replace("-", "") for line in out.splitlines()}
    for name in ("de_DE.UTF-8", "fr_FR.UTF-8", "en_US.UTF-8", "en_GB.UTF-8"):
        if name.lower().replace("-", "") in have:
            return name
    return None


def faketime_library() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    return found[0] if found else None


def _env(spec: RunSpec, **changes: str) -> RunSpec:
    return replace(spec, env={**spec.env, **changes})


def _build_path(spec: RunSpec, work: Path) -> RunSpec:
    return replace(spec, tree=work / "experiment" / "a" / "much" / "deeper" / "checkout")


def _umask(spec: RunSpec, work: Path) -> RunSpec:
    return replace(spec, umask=0o002)


def _timezone(spec: RunSpec, work: Path) -> RunSpec:
    return _env(spec, TZ="Asia/Tokyo")


def _home(spec: RunSpec, work: Path) -> RunSpec:
    return _env(spec, HOME=str(work / "elsewhere" / "home-experiment"))


def _noise(spec: RunSpec, work: Path) -> RunSpec:
    return _env(spec, DETPACK_CHECK_NOISE=os.urandom(6).hex())


def _hash_seed(spec: RunSpec, work: Path) -> RunSpec:
    return _env(spec, PYTHONHASHSEED="12345")


def _file_order(spec: RunSpec, work: Path) -> RunSpec:
    return replace(spec, reverse_order=True)


def _hostname(spec: RunSpec, work: Path) -> RunSpec:
    return _env(spec, **{sandbox.HOSTNAME_VARIABLE: "detpack-experiment"})


def _uid(spec: RunSpec, work: Path) -> RunSpec:
    return _env(spec, **{sandbox.IDS_VARIABLE: "2000:2000"})


def _cpus(spec: RunSpec, work: Path) -> RunSpec:
    return replace(spec, one_cpu=True)


def catalogue(libz: Path | None = None) -> dict[str, Variation]:
    loc = _second_locale() or "C"
    lib = faketime_library()

    def locale(spec: RunSpec, work: Path) -> RunSpec:
        return _env(spec, LANG=loc, LC_ALL=loc)

    def clock(spec: RunSpec, work: Path) -> RunSpec:
        if lib is None:
            raise ConfigError("--vary clock: faketime is not installed (apt-get install faketime)")
        # The monotonic clock is faked too: with FAKETIME_DONT_FAKE_MONOTONIC=1, libfaketime 0.9.10
        # makes every time.sleep fail with EINVAL (scikit-build-core's CMake probe, subprocess waits).
        faked = _env(spec, LD_PRELOAD=lib, FAKETIME="+1d")
        return replace(faked, pass_env=(*spec.pass_env, "LD_PRELOAD", "FAKETIME"))

    def other_libz(spec: RunSpec, work: Path) -> RunSpec:
        if libz is None:
            raise ConfigError("--vary libz: give another libz.so.1 with --libz PATH")
        return _env(spec, **{sandbox.LIBZ_VARIABLE: str(libz)})

    table = (
        Variation("build-path", "the tree lives at another, deeper path", _build_path),
        Variation("umask", "umask 002 instead of 022 (checkout and build)", _umask),
        Variation("timezone", "TZ=Asia/Tokyo instead of UTC", _timezone),
        Variation("locale", f"LANG/LC_ALL={loc} instead of C.UTF-8", locale),
        Variation("home", "another HOME", _home),
        Variation("clock", "the clock one day ahead (faketime)", clock),
        Variation("env-noise", "an unrelated extra environment variable", _noise),
        Variation("hash-seed", "PYTHONHASHSEED=12345 instead of 0", _hash_seed),
        Variation("file-order", "files created in reverse order (directory listing order)", _file_order),
        Variation("hostname", "the sandbox's hostname detpack-experiment instead of detpack", _hostname),
        Variation("uid", "uid/gid 2000 in the sandbox instead of 1000", _uid),
        Variation("cpus", "one CPU (affinity mask) instead of all", _cpus),
        Variation("libz", f"{libz} bound over the system's libz.so.1 in the sandbox", other_libz),
    )
    return {v.name: v for v in table}


def supported(libz: Path | None = None) -> dict[str, str]:
    """Variation name -> why this machine cannot apply it (only the unsupported ones)."""
    missing = {}
    if libz is None:
        missing["libz"] = (
            "no other libz.so.1 was given (--libz PATH: zlib-ng built with -DZLIB_COMPAT=ON, say); "
            "the libz was not varied"
        )
    elif sandbox.system_libz() is None:
        missing["libz"] = "this machine has no libz.so.1 to replace; the libz was not varied"
    if faketime_library() is None:
        missing["clock"] = "faketime is not installed (apt-get install faketime); the clock was not varied"
    if _second_locale() is None:
        missing["locale"] = "no second UTF-8 locale is installed; varied between C.UTF-8 and C instead"
    no_sandbox = sandbox.available()
    if no_sandbox is not None:
        for name in sorted(SANDBOX_ONLY):
            missing[name] = f"no sandbox can be made here ({no_sandbox}); the {name} was not varied"
    if len(os.sched_getaffinity(0)) < 2:
        missing["cpus"] = "this process may use one CPU only; the CPU count was not varied"
    return missing


def _unavailable_by_default(libz: Path | None) -> set[str]:
    """What the default selection leaves out: what cannot be varied here (the locale falls back to C)."""
    return {name for name in supported(libz) if name != "locale"}


def select(spec: str | None, libz: Path | None = None) -> tuple[str, ...]:
    """``--vary``: a comma list of names (or groups: ``machine``), or of ``-name`` to drop from the default (all).

    A group keeps only what this machine can vary (the rest is reported as not varied); a
    name asked for by itself that cannot be varied is an error.
    """
    if not spec:
        return tuple(n for n in NAMES if n not in _unavailable_by_default(libz))
    items = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in items if i.lstrip("+-") not in NAMES and i.lstrip("+-") not in GROUPS]
    if unknown:
        raise ConfigError(
            f"--vary: unknown variation(s) {', '.join(unknown)}; choose from {', '.join((*NAMES, *GROUPS))}"
        )

    def expand(item: str) -> tuple[str, ...]:
        return GROUPS.get(item, (item,))

    if all(i.startswith("-") for i in items):
        dropped = {n for i in items for n in expand(i[1:])}
        return tuple(n for n in select(None, libz) if n not in dropped)
    chosen = tuple(dict.fromkeys(n for i in items for n in expand(i.lstrip("+"))))
    if "clock" in chosen and faketime_library() is None:
        raise ConfigError("--vary clock: faketime is not installed (apt-get install faketime)")
    if "libz" in [i.lstrip("+") for i in items] and libz is None:
        raise ConfigError("--vary libz: give another libz.so.1 with --libz PATH (zlib-ng built with -DZLIB_COMPAT=ON)")
    return chosen


def lay_down(source: Source, spec: RunSpec) -> Path:
    """Copy the source to ``spec.tree`` as a checkout under ``spec.umask`` would create it.

    File times are kept (so only the build's own clock can differ), modes follow the umask
    (0666/0777 minus it), and with ``reverse_order`` files are created last-first. A git
    source becomes a checkout of its commit (``layout.lay_down``) with the work tree's
    uncommitted changes, so VCS-versioning plugins and the git epoch work as in ``build``.
    Returns the project directory (below ``spec.tree`` for a package in a subdirectory).
    """

    def copy(src: Source, project: Path) -> None:
        files = list(walk(src.path))
        if spec.reverse_order:
            files.reverse()
        project.mkdir(parents=True, exist_ok=True)
        try:
            for path in files:
                target = project / path.relative_to(src.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.is_symlink():
                    target.symlink_to(os.readlink(path))
                    continue
                shutil.copyfile(path, target)
                executable = path.stat().st_mode & stat.S_IXUSR
                target.chmod((0o777 if executable else 0o666) & ~spec.umask)
                st = path.stat()
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            for d in sorted({p.parent for p in project.rglob("*")} | {project}):
                d.chmod(0o777 & ~spec.umask)
        except OSError as exc:
            raise InputError(f"{src.path}: cannot copy it for a check build ({exc.strerror or exc})") from None

    return layout.lay_down(source, spec.tree, copy)
