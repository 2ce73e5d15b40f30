"""What goes into the isolated build environment, and the record of it.

One provisioner (``provisioned``) fills an isolated environment with build requirements,
locked or not, with pip or uv, from the environment cache or fresh, and says what it
installed as ``InstalledDependency`` values. pip runs with ``--report`` so every installed
file's sha256 is known; with a lock, pip runs in hash-checking mode (``--require-hashes
--no-deps``) over exactly the locked files, and a file whose hash differs is refused by
name. uv has no install report: it first resolves to a PEP 751 lock (every file's sha256),
detpack picks the one file of each package this Python installs, and uv installs exactly
those in hash-checking mode; with a lock it installs the locked files the same way.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from build.env import DefaultIsolatedEnv, IsolatedEnv
from packaging.pylock import PackageSdist, PackageWheel, Pylock, PylockValidationError
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import sys_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from detpack.build import envcache
from detpack.build.environment import Runner
from detpack.build.installerrors import raise_lock_problem
from detpack.build.lockfile import BuildLock, LockedPackage
from detpack.errors import EnvironmentSetupError, LockError

Installer = Literal["pip", "uv"]


@dataclass(frozen=True)
class InstalledDependency:
    """A package installed into the isolated build environment."""

    name: str
    version: str
    sha256: str | None
    url: str | None
    requested: bool


@dataclass(frozen=True)
class InstallSettings:
    """How to fill an isolated environment."""

    installer: Installer = "pip"
    uv: str | None = None  # with installer uv: the uv binary (``find_uv``)
    constraints: Path | None = None
    lock: BuildLock | None = None  # install exactly these files, and check they cover every requirement
    cache: Path | None = None  # with a lock: keep and reuse environments here (``envcache``)
    answers: Path | None = None  # remember get_requires_for_build_* answers here (``envcache.cached_requires``)
    #: a toolchain image's interpreter, ``PATH@sha256:IMAGE``: the environment is made with it, in the image
    toolchain_python: str | None = None
    #: how long an unlocked build's remembered resolution stands (``reuse``; 0: always resolve again)
    resolution_ttl: float = 600.0


def find_uv(caller_env: Mapping[str, str]) -> str:
    """uv as users have it: the ``uv`` package's binary, else ``$UV`` or ``uv`` on the caller's PATH.

    Looked up with the caller's environment: the build's own PATH is fixed and has no uv.
    """
    found = find_uv_or_none(caller_env)
    if found is None:
        raise EnvironmentSetupError(
            "--installer uv: uv not found (no uv package and no uv on PATH); "
            "install it with `pip install uv` or put uv on PATH"
        )
    return found


def find_uv_or_none(caller_env: Mapping[str, str]) -> str | None:
    """``find_uv``, or None when there is no uv."""
    try:
        import uv  # type: ignore[import-not-found, unused-ignore]

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which(caller_env.get("UV") or "uv", path=caller_env.get("PATH", os.defpath))
        return None if found is None else os.path.abspath(found)


#: pip's global configuration files, in the order pip reads them (a later one wins; a build's HOME
#: is its own, so only these reach pip).
PIP_CONFIG_FILES = ("/etc/xdg/pip/pip.conf", "/etc/pip.conf")
#: pip settings (config key, its PIP_ variable) and the uv variable that says the same.
PIP_TO_UV = (
    ("index-url", "UV_DEFAULT_INDEX"),
    ("extra-index-url", "UV_INDEX"),
    ("find-links", "UV_FIND_LINKS"),
    ("no-index", "UV_NO_INDEX"),
    ("constraint", "UV_CONSTRAINT"),
    ("trusted-host", "UV_INSECURE_HOST"),
    ("cert", "SSL_CERT_FILE"),
    ("timeout", "UV_HTTP_TIMEOUT"),
    ("default-timeout", "UV_HTTP_TIMEOUT"),
)
#: pip settings that change nothing uv would do differently.
_COSMETIC = frozenset(
    {"disable-pip-version-check", "no-input", "progress-bar", "quiet", "verbose", "no-color", "root-user-action"}
    | {"no-warn-script-location"}
)


def choose_installer(caller_env: Mapping[str, str]) -> tuple[Installer, str | None, str]:
    """The installer when none is named, its binary (uv) and why: uv when it is installed, unless
    pip's configuration says something uv cannot be told (``uv_settings`` tells it the rest)."""
    for config in PIP_CONFIG_FILES:
        for key in _pip_settings(Path(config)):
            if key not in _COSMETIC and key not in dict(PIP_TO_UV):
                return "pip", None, f"{config} sets {key}, which uv cannot be told"
    found = find_uv_or_none(caller_env)
    if found is None:
        return "pip", None, "uv is not installed"
    return "uv", found, "uv is installed"


def uv_settings(passed: Mapping[str, str]) -> dict[str, str]:
    """What pip would be told by its configuration files and the ``passed`` PIP_ variables, as uv's
    variables (uv reads neither); a uv variable already ``passed`` wins."""
    merged: dict[str, str] = {}
    for config in PIP_CONFIG_FILES:
        merged.update(_pip_settings(Path(config)))
    for key, _ in PIP_TO_UV:
        name = "PIP_" + key.upper().replace("-", "_")
        if name in passed:
            merged[key] = passed[name]
    out: dict[str, str] = {}
    for key, variable in PIP_TO_UV:
        if key in merged and variable not in passed:
            # pip's lists are one per line or space-separated; uv's find-links list is comma-separated
            out[variable] = ("," if key == "find-links" else " ").join(merged[key].split())
    return out


def _pip_settings(config: Path) -> dict[str, str]:
    """``[global]`` then ``[install]`` settings of a pip configuration file (none when it is unreadable)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return {}
    out: dict[str, str] = {}
    for section in ("global", "install"):
        if parser.has_section(section):
            out.update({key.replace("_", "-"): value for key, value in parser[section].items()})
    return out


class Provisioner:
    """An isolated environment being filled; ``require`` installs, ``installed`` reports.

    Unlocked: each ``require`` installs what it is given (the first one fresh). Locked: the
    whole lock is installed once (or came from the cache), and each ``require`` only checks
    that the lock covers what it is given.
    """

    def __init__(
        self,
        env: IsolatedEnv,
        path: Path,
        settings: InstallSettings,
        runner: Runner,
        who: Path,
        *,
        got: Sequence[InstalledDependency] | None = None,
    ) -> None:
        self.env = env
        self._path = path
        self._settings = settings
        self._runner = runner
        self._who = who
        self._filled = got is not None  # the first install happened (or the environment came filled)
        self._asked: set[str] = set()
        self._got: dict[str, InstalledDependency] = {}
        self._record(got or ())
        self.reused: list[str] = []  # what this build took from before instead of doing it again (recorded)

    def ready(self) -> None:
        """Make sure everything required is installed before a hook runs (here: it already is)."""

    def require(self, requirements: Collection[str]) -> None:
        """Make ``requirements`` available in the environment."""
        new = set(requirements) - self._asked
        self._asked |= new
        lock, python = self._settings.lock, self.env.python_executable
        if lock is None:
            if new:
                reqfile = self._path / "detpack-requirements.txt"
                reqfile.write_text("\n".join(sorted(new)) + "\n", encoding="utf-8")
                if self._settings.installer == "uv":  # resolved together with what is already there
                    reqfile.write_text("\n".join(sorted(self._asked)) + "\n", encoding="utf-8")
                fresh = not self._filled
                self._record(
                    _install(python, self._path, reqfile, self._settings, self._runner, fresh=fresh, have=self._got)
                )
                self._filled = True
            return
        if not self._filled:
            self._record(install_lock(python, self._path, self._settings, self._runner))
            self._filled = True
        missing = _unmet(new, versions(purelib(self._path)))
        if missing:
            raise LockError(
                f"{lock.path}: does not satisfy {', '.join(missing)} (needed to build {self._who}); "
                "re-run `detpack lock`"
            )

    def requires_for(self, facts: Callable[[], Sequence[str]], compute: Callable[[], set[str]]) -> set[str]:
        """A backend's ``get_requires_for_build_*`` answer: ``compute()``, or the answer it gave
        before in an environment known file by file (a lock, or every installed file's sha256) for
        the same ``facts`` (distribution, settings, the source tree's digest, the backend)."""
        answers = self._settings.answers or self._settings.cache
        if answers is None:
            return compute()
        if self._settings.lock is not None:
            known = [f"lock {self._settings.lock.sha256}"]
        else:
            got = sorted(self._got.values(), key=lambda d: d.name)
            if not got or any(d.sha256 is None for d in got):
                return compute()
            known = [f"{d.name}=={d.version} sha256:{d.sha256}" for d in got]
        interpreter = [sys.version, platform.machine(), str(Path(sys.executable).resolve())]
        if self._settings.toolchain_python is not None:  # the image's interpreter (PATH@IMAGE-DIGEST)
            interpreter = [self._settings.toolchain_python]
        answer, reused = envcache.cached_requires(answers, [*interpreter, *known, *facts()], compute)
        if reused:
            said = ", ".join(sorted(answer)) or "nothing more"
            self._runner.emit(f"build requirements: {said} (answered before: same environment, source, settings)")
            self.reused.append(f"get_requires_for_build_{facts()[0]} answer")
        return answer

    def installed(self) -> tuple[InstalledDependency, ...]:
        """One value per installed package, ``requested`` for those a requirement named."""
        wanted = set()
        for text in self._asked:
            with contextlib.suppress(InvalidRequirement):
                wanted.add(canonicalize_name(Requirement(text).name))
        return tuple(replace(self._got[k], requested=k in wanted) for k in sorted(self._got))

    def _record(self, items: Iterable[InstalledDependency]) -> None:
        for item in items:
            self._got[item.name] = item


def install_lock(python: str, path: Path, settings: InstallSettings, runner: Runner) -> list[InstalledDependency]:
    """Install exactly the locked files, each checked against its sha256."""
    assert settings.lock is not None
    reqfile = path / "detpack-locked.txt"
    reqfile.write_text(settings.lock.requirements(), encoding="utf-8")
    return _install(python, path, reqfile, settings, runner, fresh=True, locked=settings.lock)


def _install(
    python: str,
    path: Path,
    reqfile: Path,
    settings: InstallSettings,
    runner: Runner,
    *,
    fresh: bool,
    locked: BuildLock | None = None,
    have: Mapping[str, InstalledDependency] | None = None,
) -> list[InstalledDependency]:
    """Run pip (with ``--report``) or uv on ``reqfile`` for the environment at ``path``."""
    if settings.installer == "uv" and locked is None:
        return _uv_install(python, path, reqfile, settings, runner, have or {})
    report = path / "detpack-install-report.json"
    report.unlink(missing_ok=True)
    if settings.installer == "uv":
        cmd = [settings.uv or find_uv(os.environ), "pip", "install", "--python", python]
    else:
        cmd = [*_pip(python), "install", "--no-warn-script-location", "--no-compile", "--no-input"]
        cmd += ["--report", str(report)]
        if fresh:
            cmd.append("--ignore-installed")
    if locked is not None:
        cmd += ["--require-hashes", "--no-deps"]
    cmd += ["-r", str(reqfile)]
    if settings.constraints is not None and locked is None:
        cmd += ["-c", str(settings.constraints.resolve())]
    extra = {"PYTHONPATH": ""}
    if settings.installer == "uv":
        extra["UV_CONSTRAINT"] = ""  # locked files with hashes take no constraints (uv refuses them)
    try:
        runner.install(cmd, extra_environ=extra)
    except subprocess.CalledProcessError as exc:
        if locked is not None:
            raise_lock_problem(locked, str(exc.output or ""))
        raise
    if settings.installer == "uv" or not report.is_file():
        return _from_metadata(purelib(path), locked)
    data = json.loads(report.read_text(encoding="utf-8"))
    return [_from_report(item) for item in data.get("install", [])]


def _uv_install(
    python: str,
    path: Path,
    reqfile: Path,
    settings: InstallSettings,
    runner: Runner,
    have: Mapping[str, InstalledDependency],
) -> list[InstalledDependency]:
    """uv in two steps, so every installed file's sha256 is known: resolve ``reqfile`` (``uv_resolve``),
    then install exactly the files chosen that are not there yet (``install_files``)."""
    chosen = uv_resolve(python, path, reqfile, settings, runner)
    install_files(python, path, [d for d in chosen if (d.name not in have or have[d.name].version != d.version)],
                  settings, runner)  # fmt: skip
    return chosen


def uv_resolve(
    python: str, path: Path, reqfile: Path, settings: InstallSettings, runner: Runner
) -> list[InstalledDependency]:
    """Resolve ``reqfile`` for ``python`` with uv to a PEP 751 lock (every file of every chosen
    version, with its sha256) and pick the one file of each package this Python installs."""
    uv = settings.uv or find_uv(os.environ)
    resolved = path / "pylock.detpack.toml"  # uv insists on the pylock.NAME.toml form
    cmd = [uv, "pip", "compile", "--quiet", "--no-header", "--format", "pylock.toml", "--python", python]
    cmd += ["-o", str(resolved), str(reqfile)]
    if settings.constraints is not None:
        cmd += ["-c", str(settings.constraints.resolve())]
    runner.install(cmd, extra_environ={"PYTHONPATH": ""})
    return _chosen_files(resolved)


def install_files(
    python: str, path: Path, files: Sequence[InstalledDependency], settings: InstallSettings, runner: Runner
) -> None:
    """Install exactly ``files`` (each by URL, checked against its sha256) with uv, nothing else."""
    if not files:
        return
    uv = settings.uv or find_uv(os.environ)
    hashed = path / "detpack-hashed.txt"
    hashed.write_text("".join(f"{d.name} @ {d.url} --hash=sha256:{d.sha256}\n" for d in files), encoding="utf-8")
    cmd = [uv, "pip", "install", "--python", python, "--require-hashes", "--no-deps", "-r", str(hashed)]
    # constraints shaped the resolution; exact files with hashes take none (uv refuses them)
    runner.install(cmd, extra_environ={"PYTHONPATH": "", "UV_CONSTRAINT": ""})


def _chosen_files(resolved: Path) -> list[InstalledDependency]:
    """From uv's PEP 751 resolution, the file of each package an installer picks for this Python:
    the wheel whose most specific tag ranks first among the interpreter's tags, else the sdist."""
    try:
        lock = Pylock.from_dict(tomllib.loads(resolved.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, PylockValidationError) as exc:
        raise EnvironmentSetupError(f"{resolved}: uv's resolution is not a readable PEP 751 lock ({exc})") from None
    rank = {tag: i for i, tag in enumerate(sys_tags())}
    out = []
    for pkg in lock.packages:
        best: tuple[int, PackageWheel | PackageSdist] | None = None
        for wheel in pkg.wheels or ():
            filename = wheel.name or (wheel.url or str(wheel.path or "")).rsplit("/", 1)[-1]
            try:
                tags = parse_wheel_filename(filename)[3]
            except InvalidWheelFilename:
                continue  # an index's misnamed file is not a wheel any installer would pick
            score = min((rank[t] for t in tags if t in rank), default=None)
            if score is not None and (best is None or score < best[0]):
                best = (score, wheel)
        file = best[1] if best is not None else pkg.sdist
        url = None if file is None else (file.url or (Path(file.path).absolute().as_uri() if file.path else None))
        digest = None if file is None else file.hashes.get("sha256")
        if file is None or url is None or not digest or pkg.version is None:
            raise EnvironmentSetupError(
                f"{resolved}: uv resolved {pkg.name} {pkg.version} but no file of it fits this Python "
                "with a sha256; install with --installer pip"
            )
        out.append(InstalledDependency(canonicalize_name(str(pkg.name)), str(pkg.version), digest, url, False))
    return out


def present(requirements: Collection[str]) -> tuple[InstalledDependency, ...]:
    """What of ``requirements`` this Python already has (a build without isolation; no hashes)."""
    deps = []
    for text in sorted(requirements):
        name = canonicalize_name(Requirement(text).name)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        deps.append(InstalledDependency(name, version, None, None, True))
    return tuple(deps)


@contextlib.contextmanager
def isolated_env(path: Path, *, installer: Installer, uv: str | None) -> Iterator[DefaultIsolatedEnv]:
    """``build``'s isolated environment at ``path``; for uv, made with the uv ``find_uv`` found."""
    saved = os.environ.get("UV")
    if installer == "uv":
        os.environ["UV"] = uv or find_uv(os.environ)  # build looks for $UV when the package is absent
    try:
        env = DefaultIsolatedEnv(installer=installer, path=str(path))
        env.__enter__()
    finally:
        if installer == "uv":
            if saved is None:
                os.environ.pop("UV", None)
            else:
                os.environ["UV"] = saved
    with contextlib.ExitStack() as stack:
        stack.push(env.__exit__)
        yield env


def _pip(python: str) -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "--python", python]
    return [python, "-Im", "pip"]


def purelib(env_path: Path) -> Path:
    """A virtual environment's site-packages (POSIX layout; detpack builds on POSIX only)."""
    return next(env_path.glob("lib/python*/site-packages"), env_path / "lib" / "site-packages")


def versions(purelib: Path) -> dict[str, str]:
    return {
        canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=[str(purelib)])
    }


def _from_report(item: Mapping[str, object]) -> InstalledDependency:
    """One ``install`` item of pip's ``--report``."""
    meta = item.get("metadata") or {}
    info = item.get("download_info") or {}
    assert isinstance(meta, dict) and isinstance(info, dict)
    archive = info.get("archive_info") or {}
    hashes = archive.get("hashes", {}) if isinstance(archive, dict) else {}
    url = info.get("url")
    return InstalledDependency(
        name=canonicalize_name(str(meta.get("name", ""))),
        version=str(meta.get("version", "")),
        sha256=hashes.get("sha256"),
        url=url if isinstance(url, str) else None,
        requested=False,
    )


def from_lock(package: LockedPackage) -> InstalledDependency:
    return InstalledDependency(package.name, package.version, package.sha256, None, False)


def _from_metadata(purelib: Path, locked: BuildLock | None) -> list[InstalledDependency]:
    # uv has no install report: versions come from the environment; hashes from a lock if any.
    pins = {p.name: p for p in locked.packages} if locked else {}
    out = []
    for dist in importlib.metadata.distributions(path=[str(purelib)]):
        name = canonicalize_name(dist.metadata["Name"])
        pin = pins.get(name)
        sha = pin.sha256 if pin is not None and pin.version == dist.version else None
        out.append(InstalledDependency(name, dist.version, sha, None, False))
    return out


def _unmet(requirements: Collection[str], versions: dict[str, str]) -> list[str]:
    """The requirements that the installed ``versions`` do not satisfy."""
    missing = []
    for text in sorted(requirements):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            missing.append(text)
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = versions.get(canonicalize_name(req.name))
        if have is None or not req.specifier.contains(have, prereleases=True):
            missing.append(text)
    return missing
