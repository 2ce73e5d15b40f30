"""The controlled build environment: what every build subprocess sees.

Owns the fixed build root (one build at a time per machine, guarded by a lock), the
allowlisted environment, the umask, and the one subprocess runner (plumbum, argv lists,
never a shell). Invariant: a backend sees only ``policy.FIXED_ENV``, the per-build
variables (SOURCE_DATE_EPOCH, HOME, TMPDIR), allowlisted pass-through variables and what
the isolated environment adds; everything set or passed is recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plumbum import local
from plumbum.commands.processes import CommandNotFound

from detpack import policy
from detpack.build.sandbox import Sandbox
from detpack.errors import ConfigError, EnvironmentSetupError
from detpack.wording import redact

LineSink = Callable[[str], None]


@dataclass(frozen=True)
class BuildRoot:
    """Fixed directories under the build root; their paths never depend on the user's tree."""

    root: Path

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
        return self.root / "cache"

    def env_dir(self, distribution: str) -> Path:
        return self.root / f"env-{distribution}"


def root_path() -> Path:
    """Where the build root is: ``$DETPACK_BUILD_ROOT``, else ``policy.BUILD_ROOT``."""
    return Path(os.environ.get("DETPACK_BUILD_ROOT") or policy.BUILD_ROOT)


@contextlib.contextmanager
def build_root(path: Path | None = None, on_wait: LineSink | None = None) -> Iterator[BuildRoot]:
    """Take the machine-wide build root, emptied, for the duration of one build.

    ``on_wait`` hears one line when another build holds the root and this one must wait.
    """
    root = path or root_path()
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = (root / ".lock").open("a+")
    except OSError as exc:
        raise EnvironmentSetupError(
            f"{root}: cannot create the build root ({exc.strerror}); set DETPACK_BUILD_ROOT to a writable path"
        ) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another detpack build to release {root} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _empty(root)
            br = BuildRoot(root)
            for d in (br.home, br.tmp, br.raw):
                d.mkdir()
            yield br
        finally:
            _empty(root)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if child.name in (".lock", "cache"):
            continue  # the lock file, and locked build environments kept between builds
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, onerror=_force_remove)
        else:
            child.unlink()


def _force_remove(func: Callable[..., object], path: str, _exc: object) -> None:
    # Read-only directories (some backends copy 0o555 trees) block rmtree: open them up.
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o755)
        os.chmod(path, 0o755)
        func(path)


@dataclass(frozen=True)
class ControlledEnvironment:
    """The complete environment for build subprocesses, and where each part came from."""

    variables: Mapping[str, str]
    passed_through: tuple[str, ...]
    umask: int = policy.UMASK
    redacted: Mapping[str, str] = field(default_factory=dict)

    @property
    def injects_code(self) -> tuple[str, ...]:
        """Passed-through variables that load code into every build process (flagged in provenance)."""
        return tuple(n for n in self.passed_through if n in policy.INJECTS_CODE)

    def recorded(self) -> dict[str, str]:
        """The variables as provenance records them (credentials in URLs hidden)."""
        return {k: self.redacted.get(k, v) for k, v in sorted(self.variables.items())}


def controlled_environment(
    *,
    epoch: int | None,
    root: BuildRoot,
    caller_env: Mapping[str, str],
    pass_env: Sequence[str] = (),
    find_links: Sequence[Path] = (),
    offline: bool = False,
) -> ControlledEnvironment:
    """Assemble the allowlisted environment for one build."""
    variables = dict(policy.FIXED_ENV)
    variables.update(HOME=str(root.home), TMPDIR=str(root.tmp))
    if epoch is not None:  # None only to reproduce a build that was made without it
        variables["SOURCE_DATE_EPOCH"] = str(epoch)
    passed: list[str] = []
    for name in (*policy.PASSTHROUGH_ENV, *pass_env):
        if name in policy.NEVER_PASS:
            raise ConfigError(
                f"--pass-env {name}: refusing; {name} would point the isolated build environment's "
                "Python at other packages and defeat isolation"
            )
        if name in caller_env and name not in passed:
            variables[name] = caller_env[name]
            passed.append(name)
    # Compilers write the build directory into objects (DWARF comp_dir, __FILE__): map the
    # build root away so a C extension's bytes do not depend on where the build ran.
    prefix_map = f"-ffile-prefix-map={root.root}=."
    for flag in ("CFLAGS", "CXXFLAGS"):
        variables[flag] = f"{variables[flag]} {prefix_map}" if flag in variables else prefix_map
    if find_links:
        links = " ".join(str(p.resolve()) for p in find_links)
        variables["PIP_FIND_LINKS"] = links
        variables["UV_FIND_LINKS"] = links
    if offline:
        variables["PIP_NO_INDEX"] = "1"
        variables["UV_OFFLINE"] = "1"
        variables["UV_NO_INDEX"] = "1"
    redacted = {k: redact(v) for k, v in variables.items() if redact(v) != v}
    return ControlledEnvironment(variables, tuple(passed), policy.UMASK, redacted)


@contextlib.contextmanager
def applied(env: ControlledEnvironment) -> Iterator[None]:
    """Make ``env`` this process's environment and umask (the isolated-env installer inherits both).

    Everything process-wide that changes is put back on the way out: the environment, the
    umask, the working directory and ``tempfile``'s cached directory (which would otherwise
    keep pointing at the build root's TMPDIR after the root is emptied).
    """
    saved_environ = dict(os.environ)
    saved_tempdir = tempfile.tempdir
    saved_cwd = _cwd()
    saved_umask = os.umask(env.umask)
    os.environ.clear()
    os.environ.update(env.variables)
    tempfile.tempdir = None  # recomputed from the controlled TMPDIR on first use
    try:
        with local.env():
            local.env.clear()
            local.env.update(env.variables)
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        tempfile.tempdir = saved_tempdir
        os.umask(saved_umask)
        if saved_cwd is not None and _cwd() != saved_cwd:
            with contextlib.suppress(OSError):
                os.chdir(saved_cwd)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the working directory was removed
        return None


@dataclass
class Runner:
    """Runs build subprocesses under the controlled environment, keeping a transcript.

    Matches pyproject_hooks' runner signature, so ``build.ProjectBuilder`` uses it for
    every hook call.
    """

    env: ControlledEnvironment
    on_line: LineSink | None = None
    on_warning: LineSink | None = None
    sandbox: Sandbox | None = None  # where backend hooks run (installs run outside it, before)
    transcript: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a backend warning once (hooks often repeat them) and pass it on."""
        self.emit(f"warning: {message}")
        if message not in self.warnings:
            self.warnings.append(message)
            if self.on_warning is not None:
                self.on_warning(message)

    def __call__(
        self, cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
    ) -> None:
        """Run one backend hook (pyproject_hooks' runner signature), in the sandbox when there is one."""
        if self.sandbox is None:
            self.run(cmd, cwd=cwd, extra_environ=extra_environ)
            return
        shown = (
            f"[sandbox, network {'allowed' if self.sandbox.network else 'none'}] {subprocess.list2cmdline(list(cmd))}"
        )
        self.run(self.sandbox.wrap(cmd, cwd), cwd=cwd, extra_environ=extra_environ, shown=shown)

    def run(
        self,
        cmd: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        extra_environ: Mapping[str, str] | None = None,
        shown: str | None = None,
    ) -> str:
        environ = {**self.env.variables, **(extra_environ or {})}
        self.emit("$ " + (shown or subprocess.list2cmdline(list(cmd))))
        start = len(self.transcript)
        try:
            command = local[cmd[0]][list(cmd[1:])]
        except CommandNotFound:
            raise EnvironmentSetupError(f"{cmd[0]}: command not found on the build PATH") from None
        with local.env():
            local.env.clear()
            local.env.update(environ)
            proc = command.popen(cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            for raw in proc.stdout:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                self.emit(text.rstrip("\n"))
            code = proc.wait()
        if code:
            output = "\n".join(self.transcript[start:])
            raise subprocess.CalledProcessError(code, list(cmd), output=output)
        return "\n".join(self.transcript[start + 1 :])

    def emit(self, line: str) -> None:
        self.transcript.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def log_text(self) -> str:
        return "\n".join(self.transcript) + "\n"
