"""The controlled build environment: what every build subprocess sees.

Owns the build root, the allowlisted environment, the umask, and the one subprocess runner
(plumbum, argv lists, never a shell). Invariant: a backend sees only ``policy.FIXED_ENV``,
the per-build variables (SOURCE_DATE_EPOCH, HOME, TMPDIR), allowlisted pass-through
variables and what the isolated environment adds; everything set or passed is recorded.

The build root itself (where it is, who may use it, what is kept in it) is ``buildroot``'s; its
names are re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from plumbum import local
from plumbum.commands.processes import CommandNotFound

from detpack import policy
from detpack.build import native, untrusted
from detpack.build.buildroot import (
    DOWNLOAD_POOLS,
    DOWNLOAD_SETS,
    DOWNLOADS,
    BuildRoot,
    LineSink,
    build_root,
    root_path,
)
from detpack.build.sandbox import Sandbox
from detpack.errors import ConfigError, EnvironmentSetupError
from detpack.wording import redact

__all__ = [
    "DOWNLOADS",
    "DOWNLOAD_POOLS",
    "DOWNLOAD_SETS",
    "BuildRoot",
    "ControlledEnvironment",
    "LineSink",
    "Runner",
    "applied",
    "build_root",
    "controlled_environment",
    "root_path",
    "seeded_hook",
]


def _install_inputs(values: Sequence[str], root: BuildRoot) -> list[str]:
    """The host paths an install reads (read-only in its sandbox): detpack's own environment (pip
    runs from it), and every existing absolute path named in the command or a variable (the
    installer, ``--find-links`` folders, constraints, certificates), outside the build root."""
    found = {sys.prefix, str(Path(sys.prefix).resolve())}
    for value in values:
        for word in re.split(r"[\s,]+", value):
            word = word.removeprefix("file://")
            if not word.startswith("/") or _under_root(word, root):
                continue
            path = Path(word)
            with contextlib.suppress(OSError):
                if path.exists():
                    found.add(str(path))
                    found.add(str(path.resolve()))
                    if path.is_file() and path.parent.name == "bin":  # an installer binary: its own folder
                        found.add(str(path.resolve().parent))
                    if path.is_dir():  # a --find-links folder of links to files elsewhere: those too
                        found.update(_link_targets(path))
    kept = sorted(p for p in found if p != "/" and not _under_root(p, root))
    # A path inside another one kept is seen through it (bwrap cannot mount inside a read-only bind)
    return [p for p in kept if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in kept)]


def _moved(value: str, moved: Mapping[str, str]) -> str:
    """``value`` with each path of ``moved`` (longest first) replaced where it stands as a path."""
    for path in sorted(moved, key=len, reverse=True):
        value = re.sub(rf"(?<![^\s,:=]){re.escape(path)}(?=$|[/\s,:])", moved[path], value)
    return value


def _link_targets(folder: Path, limit: int = 10_000) -> set[str]:
    """Where the symbolic links directly in ``folder`` lead (the first ``limit`` entries)."""
    found: set[str] = set()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for n, entry in enumerate(entries):
            if n >= limit:
                break
            if entry.is_symlink():
                with contextlib.suppress(OSError):
                    found.add(str(Path(entry.path).resolve(strict=True)))
    return found


def _under_root(path: str, root: BuildRoot) -> bool:
    return any(path == str(r) or path.startswith(str(r) + "/") for r in (root.root, root.seen))


@dataclass(frozen=True)
class ControlledEnvironment:
    """The complete environment for build subprocesses, and where each part came from.

    ``variables`` are what build subprocesses see (paths under the build root at its fixed
    path) and what provenance records; ``on_host`` the same with this machine's paths, for
    detpack's own process while it builds (a private root is elsewhere on the host).
    """

    variables: Mapping[str, str]
    passed_through: tuple[str, ...]
    umask: int = policy.UMASK
    redacted: Mapping[str, str] = field(default_factory=dict)
    on_host: Mapping[str, str] = field(default_factory=dict)
    named: tuple[str, ...] = ()  # the variables the user passed by name (--pass-env, [tool.detpack] pass-env)

    def hidden_from_hooks(self, network: bool) -> frozenset[str]:
        """The variables a backend hook does not get: what only installers need and whatever holds
        credentials; with the network, those the user named are given."""
        secret = {k for k in self.variables if k in policy.INSTALLER_ONLY or k in self.redacted}
        return frozenset(secret - set(self.named) if network else secret)

    @property
    def injects_code(self) -> tuple[str, ...]:
        """Passed-through variables that load code into every build process (flagged in provenance)."""
        return tuple(n for n in self.passed_through if n in policy.INJECTS_CODE)

    def recorded(self) -> dict[str, str]:
        """The variables as provenance records them (credentials in URLs hidden)."""
        return {k: self.redacted.get(k, v) for k, v in sorted(self.variables.items())}


#: Runs pyproject_hooks' ``_in_process.py`` with ``tempfile``'s names fixed (a script: the build
#: environment's interpreter runs it, in the sandbox).
SEEDED_HOOK = Path(__file__).with_name("inproc") / "seeded.py"


def seeded_hook(cmd: Sequence[str]) -> list[str]:
    """A hook command (``PYTHON .../_in_process.py HOOK CONTROL_DIR``) run through ``SEEDED_HOOK``."""
    if len(cmd) >= 2 and os.path.basename(cmd[1]) == "_in_process.py":
        return [cmd[0], str(SEEDED_HOOK.absolute()), *cmd[1:]]
    return list(cmd)


def controlled_environment(
    *,
    epoch: int | None,
    root: BuildRoot,
    caller_env: Mapping[str, str],
    pass_env: Sequence[str] = (),
    find_links: Sequence[Path] = (),
    offline: bool = False,
    translate: Callable[[Mapping[str, str]], Mapping[str, str]] | None = None,
    umask: int = policy.UMASK,
    path: str | None = None,
) -> ControlledEnvironment:
    """Assemble the allowlisted environment for one build (``translate`` adds variables said in
    another installer's words, from those passed through; ``path``: a toolchain image's PATH)."""
    variables = dict(policy.FIXED_ENV)
    if path is not None:
        variables["PATH"] = path
    variables.update(HOME=root.to_inside(str(root.home)), TMPDIR=root.to_inside(str(root.tmp)))
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
    # Compilers write the build directory into objects (DWARF comp_dir, __FILE__): the compiler
    # shims on a hook's PATH add the path map to every run (native.prefix_map). Not CFLAGS: a
    # build's CFLAGS replace the flags it would use (setuptools drops sysconfig's -O3 -DNDEBUG).
    if translate is not None:
        variables.update(translate({k: variables[k] for k in passed}))
    if find_links:
        links = [str(p.resolve()) for p in find_links]
        variables["PIP_FIND_LINKS"] = " ".join(links)
        variables["UV_FIND_LINKS"] = ",".join(links)  # uv's list is comma-separated
    if offline:
        variables["PIP_NO_INDEX"] = "1"
        variables["UV_OFFLINE"] = "1"
        variables["UV_NO_INDEX"] = "1"
    redacted = {k: redact(v) for k, v in variables.items() if redact(v) != v}
    on_host = {k: root.to_host(v) for k, v in variables.items()}
    if path is not None:  # the image's PATH is for its processes; detpack's own (git) never searches it
        on_host["PATH"] = policy.FIXED_ENV["PATH"]
    named = tuple(n for n in pass_env if n in passed)
    return ControlledEnvironment(variables, tuple(passed), umask, redacted, on_host, named)


@contextlib.contextmanager
def applied(env: ControlledEnvironment) -> Iterator[None]:
    """Make ``env`` this process's environment and umask (with this machine's paths).

    Everything process-wide that changes is put back on the way out: the environment, the
    umask, the working directory and ``tempfile``'s cached directory (which would otherwise
    keep pointing at the build root's TMPDIR after the root is emptied).
    """
    variables = env.on_host or env.variables
    saved_environ = dict(os.environ)
    saved_tempdir = tempfile.tempdir
    saved_cwd = _cwd()
    saved_umask = os.umask(env.umask)
    os.environ.clear()
    os.environ.update(variables)
    tempfile.tempdir = None  # recomputed from the controlled TMPDIR on first use
    try:
        with local.env():
            local.env.clear()
            local.env.update(variables)
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
class Started:
    """A command started by ``Runner.run(wait=False)``; its output is kept in ``aside``."""

    runner: Runner
    proc: Any  # plumbum's Popen
    aside: IO[bytes]
    named: list[str]

    def wait(self) -> None:
        """Wait for it, put its output in the transcript, raise ``CalledProcessError`` if it failed."""
        code = self.proc.wait()
        with self.aside:
            self.aside.seek(0)
            lines = [raw.decode("utf-8", "replace").rstrip("\n") for raw in self.aside]
        for line in lines:
            self.runner.emit(line)
        if code:
            raise subprocess.CalledProcessError(code, self.named, output="\n".join(lines))


@dataclass
class Runner:
    """Runs build subprocesses under the controlled environment, keeping a transcript.

    Matches pyproject_hooks' runner signature, so ``build.ProjectBuilder`` uses it for
    every hook call. Hooks run in the sandbox; installs (``install``) run where the network
    is allowed, and both see a private build root at its fixed path.
    """

    env: ControlledEnvironment
    on_line: LineSink | None = None
    on_warning: LineSink | None = None
    sandbox: Sandbox | None = None  # where backend hooks run
    root: BuildRoot | None = None  # a private root: subprocesses see it at root.inside
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
        """Run one backend hook (pyproject_hooks' runner signature), in the sandbox when there is one,
        with the native toolchain's shims first on its PATH (``native``), and ``tempfile``'s names in
        the hook's process fixed (``inproc/seeded.py``)."""
        cmd = seeded_hook(cmd)
        if self.root is not None:
            seen = {**self.env.variables, **(extra_environ or {})}.get("PATH", "")
            system = self.sandbox.image_root if self.sandbox is not None else None
            hook_path = native.prepare(self.root.root, self.root.seen, seen, system)
            extra_environ = {**(extra_environ or {}), "PATH": hook_path}
        if self.sandbox is None:
            self.run(cmd, cwd=cwd, extra_environ=extra_environ)
            return
        self._rewrite_hook_input(cmd)
        cmd, where, extra = self._inside(cmd, cwd, extra_environ)
        if self.sandbox.displaced:  # the hook runner, where a toolchain image has its own directory
            cmd = [_moved(c, self.sandbox.moved) for c in cmd]
        shown = (
            f"[sandbox, network {'allowed' if self.sandbox.network else 'none'}] {subprocess.list2cmdline(list(cmd))}"
        )
        # The isolated environments are read-only to the backend (it cannot change what a cached
        # environment or the installers' caches hold); the download caches are not there at all.
        protected: list[tuple[str, str]] = []
        hidden: list[str] = []
        if self.root is not None:
            ours = [*sorted(self.root.root.glob("env-*")), self.root.root / native.SHIMS]
            protected = [(str(p), self.root.to_inside(str(p))) for p in ours]
            if self.root.private:
                hidden.append(self.root.to_inside(str(self.root.downloads)))
        wrapped = self.sandbox.wrap(cmd, where, protected=protected, hidden=hidden)
        secret = self.env.hidden_from_hooks(self.sandbox.network)
        self.run(wrapped, cwd=cwd, extra_environ=extra, shown=shown, inside=True, named=cmd, without=secret)
        self._check_hook_output(cmd)

    def install(self, cmd: Sequence[str], *, extra_environ: Mapping[str, str] | None = None) -> str:
        """Run an installer filling the isolated environment: with the network (where the index and
        ``--find-links`` are), seeing a private build root at its fixed path, so what it writes (script
        shebangs, RECORD) names the path the hooks see."""
        argv, how = self._install_call(cmd, extra_environ)
        return str(self.run(argv, **how))

    def install_started(self, cmd: Sequence[str], *, extra_environ: Mapping[str, str] | None = None) -> Started:
        """``install``, started and not waited for: ``Started.wait`` says how it went (its output goes
        to the transcript then). Started here, so no other command's variables can reach it."""
        argv, how = self._install_call(cmd, extra_environ)
        started = self.run(argv, **how, wait=False)
        assert isinstance(started, Started)
        return started

    def _install_call(
        self, cmd: Sequence[str], extra_environ: Mapping[str, str] | None
    ) -> tuple[Sequence[str], dict[str, Any]]:
        caches: dict[str, str] = {}
        if self.root is not None:  # downloads kept between builds (installs are hash-checked)
            downloads = self.root.to_inside(str(self.root.downloads))
            # uv with --no-index still trusts index entries it cached earlier, and fails offline fetching
            # their URLs (astral-sh/uv#9277): installs that use no index get a cache of their own.
            uv_cache = "uv-no-index" if self.env.variables.get("UV_NO_INDEX") else "uv"
            caches = {"UV_CACHE_DIR": f"{downloads}/{uv_cache}", "PIP_CACHE_DIR": f"{downloads}/pip"}
            if self._callers_uv_cache:  # the caller's own, passed through: another mount
                caches = {"PIP_CACHE_DIR": caches["PIP_CACHE_DIR"], "UV_LINK_MODE": "copy"}
        if self.sandbox is None or self.root is None or not self.root.private:
            return cmd, {"extra_environ": {**caches, **(extra_environ or {})}}
        assert self.root.inside is not None
        cmd, _, extra = self._inside(cmd, None, extra_environ)
        shown = f"[install sandbox, build root at {self.root.inside}] {subprocess.list2cmdline(list(cmd))}"
        environ = {**self.env.variables, **caches, **extra}
        # A path the command names that a toolchain image has (its interpreter) is the image's, never a host
        # input moved aside; what the environment names (certificates, constraints) is the caller's
        named_files = [c for c in cmd if not self.sandbox.in_image(c)]
        values = [v for k, v in environ.items() if k != "PATH"]  # a list of where to look, not of inputs
        readonly = _install_inputs([*named_files, *values], self.root)
        moved = self.sandbox.relocated(readonly)
        if moved:  # what lies behind our links (CA bundles in a certificate folder) is the image's path there:
            words = [*cmd, *values]  # only what the install names itself is ours, seen elsewhere
            named = {p for p in moved if any(p in w for w in words)}
            readonly = [p for p in readonly if p not in moved or p in named]
            moved = {p: moved[p] for p in named}
        if moved:  # a toolchain image has its own files there: the install reads ours elsewhere
            cmd = [c if self.sandbox.in_image(c) else _moved(c, moved) for c in cmd]
            extra = {**extra, **{k: _moved(v, moved) for k, v in environ.items() if _moved(v, moved) != v}}
        writable = [environ["UV_CACHE_DIR"]] if self._callers_uv_cache else []
        wrapped = self.sandbox.wrap_install(cmd, self.root.root, self.root.inside, readonly=readonly, writable=writable)
        # No installer configuration but the machine's: uv reads none at all (detpack gives it pip's
        # settings), and the empty HOME holds no pip.conf a hook could have planted.
        extra = {"UV_NO_CONFIG": "1", **extra}
        how = {"extra_environ": {**caches, **extra}, "shown": shown, "inside": True, "named": cmd}
        return wrapped, {**how, "without": self.withheld_from_image}

    @property
    def withheld_from_image(self) -> frozenset[str]:
        """With a toolchain image, the variables holding credentials that installs do not get: the image's
        interpreter runs in them (uv inspects it) with the network. Those the caller named are given."""
        if self.sandbox is None or not self.sandbox.image:
            return frozenset()
        return frozenset(k for k in self.env.redacted if k not in self.env.named)

    @property
    def _callers_uv_cache(self) -> bool:
        """The caller's UV_CACHE_DIR is used (read-write) by installs: never in a toolchain image, whose code
        runs in them (the interpreter uv inspects) and must not reach a cache the caller's uv trusts later."""
        return "UV_CACHE_DIR" in self.env.variables and not (self.sandbox is not None and self.sandbox.image)

    def _check_hook_output(self, cmd: Sequence[str]) -> None:
        """pyproject_hooks reads the hook's answer from ``CONTROL_DIR/output.json`` once the hook has
        ended: it must be a regular file in a real directory (a hook can leave a FIFO there, on which
        a reader hangs, or a link to a host file)."""
        root = self.root
        if root is None or len(cmd) < 2:
            return
        control = Path(root.to_host(str(cmd[-1])))
        if not control.is_relative_to(root.root):
            return
        try:
            untrusted.plain_file(root.root, control / "output.json", f"hook {cmd[-2]} left its answer file")
        except untrusted.NotPlain:
            untrusted.remove(control / "output.json")  # never read by pyproject_hooks
            raise

    def _inside(
        self, cmd: Sequence[str], cwd: str | os.PathLike[str] | None, extra_environ: Mapping[str, str] | None
    ) -> tuple[list[str], str | None, dict[str, str]]:
        """``cmd``, ``cwd`` and the extra variables with this machine's build root as subprocesses see it."""
        root = self.root
        if root is None:
            return list(cmd), None if cwd is None else str(cwd), dict(extra_environ or {})
        return (
            [root.to_inside(str(c)) for c in cmd],
            None if cwd is None else root.to_inside(str(cwd)),
            {k: root.to_inside(v) for k, v in (extra_environ or {}).items()},
        )

    def _rewrite_hook_input(self, cmd: Sequence[str]) -> None:
        """pyproject_hooks hands a hook its arguments (``wheel_directory``, ``metadata_directory``)
        in ``CONTROL_DIR/input.json``, the control directory being the command's last argument:
        give the hook its paths as it sees them."""
        root = self.root
        if root is None or not root.private or not cmd:
            return
        control = Path(cmd[-1]) / "input.json"
        if not control.is_relative_to(root.root) or not control.is_file():
            return
        data = json.loads(control.read_text(encoding="utf-8"))
        kwargs = data.get("kwargs", {})
        for name, value in kwargs.items():
            if isinstance(value, str) and name.endswith("_directory"):
                kwargs[name] = root.to_inside(value)
        control.write_text(json.dumps(data, indent=2), encoding="utf-8")

    def run(
        self,
        cmd: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        extra_environ: Mapping[str, str] | None = None,
        shown: str | None = None,
        inside: bool = False,
        named: Sequence[str] | None = None,
        without: frozenset[str] = frozenset(),
        wait: bool = True,
    ) -> Any:
        """Run ``cmd`` on this machine (``inside``: it runs in a namespace that sees the build root at
        its fixed path, with the variables as subprocesses see them) and return its output. A failure
        names ``named`` (the command inside the namespace), else ``cmd``. ``wait=False``: return the
        ``Started`` process, its output kept aside until ``Started.wait``."""
        base = self.env.variables if inside else (self.env.on_host or self.env.variables)
        environ = {k: v for k, v in {**base, **(extra_environ or {})}.items() if k not in without}
        if self.sandbox is not None:
            cmd, environ = self.sandbox.carry_in(cmd, environ)
        self.emit("$ " + (shown or subprocess.list2cmdline(list(cmd))))
        start = len(self.transcript)
        try:
            command = local[cmd[0]][list(cmd[1:])]
        except CommandNotFound:
            raise EnvironmentSetupError(f"{cmd[0]}: command not found on the build PATH") from None
        aside = None if wait else tempfile.TemporaryFile()  # noqa: SIM115 (closed by Started.wait)
        with local.env():
            local.env.clear()
            local.env.update(environ)
            out = aside or subprocess.PIPE
            proc = command.popen(cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if aside is not None:
                return Started(self, proc, aside, list(named or cmd))
            assert proc.stdout is not None
            for raw in proc.stdout:
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                self.emit(text.rstrip("\n"))
            code = proc.wait()
        if code:
            output = "\n".join(self.transcript[start:])
            raise subprocess.CalledProcessError(code, list(named or cmd), output=output)
        return "\n".join(self.transcript[start + 1 :])

    def emit(self, line: str) -> None:
        self.transcript.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def log_text(self) -> str:
        return "\n".join(self.transcript) + "\n"
