"""The sandbox every backend hook runs in: bubblewrap, no network, no host files but the system's.

Each PEP 517 hook (``get_requires_for_build_*``, ``prepare_metadata_*``, ``build_sdist``,
``build_wheel``) runs under ``bwrap`` with its own user, mount, network, PID, IPC and UTS
namespaces: a fixed hostname and uid/gid, loopback only (unless the network is allowed), a
private ``/tmp``, ``/proc`` and ``/dev``, the build root (source, isolated environment, HOME,
TMPDIR) at its own fixed path read-write, and read-only only what a build legitimately reads:
the system directories (``/usr``, ``/etc`` and the ``/bin``-style links into ``/usr``), the
interpreter's installation and the hook runner. The user's checkout, HOME, ``/home``, ``/root``
and the host's ``/tmp`` are not there. Installing build dependencies is not a hook: it runs
between hooks in a sandbox of its own (``wrap_install``): with the network, but of the host only
what an install reads, hash-checked and recorded. Neither sees installer configuration a hook could
have planted, nor the caller's secrets (see SECURITY.md).

Where no sandbox can be made (no ``bwrap``, user namespaces disabled, not Linux) the build runs
without one and says so (``NoSandbox``); ``--require-sandbox`` makes that an error.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack import policy, probes
from detpack.errors import ConfigError, InputError

HOSTNAME = "detpack"
UID = 1000
GID = 1000
#: ``detpack check --vary hostname,uid`` sets these to build once as another machine would.
HOSTNAME_VARIABLE = "DETPACK_SANDBOX_HOSTNAME"
IDS_VARIABLE = "DETPACK_SANDBOX_IDS"  # "UID:GID"
#: ``detpack check --vary libz`` sets this to another libz.so.1, bound over the system's inside.
LIBZ_VARIABLE = "DETPACK_SANDBOX_LIBZ"
_HOSTNAME_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
#: Host directories every build may read (read-only), when they exist.
SYSTEM_DIRS = ("/usr", "/etc")
#: Top-level names that are links into /usr on merged-/usr systems (bound read-only when they are directories).
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

#: What a process that tried to reach the network without one prints (Python, pip, curl, git). In a
#: sandbox with no network only loopback exists and nothing listens there: a refused connection is
#: an attempt to reach a server outside too.
_NETWORK_ATTEMPT = re.compile(
    r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
    r"No address associated with hostname|\[Errno -[23]\]|\[Errno 101\]|Could not resolve host|"
    r"getaddrinfo failed|nodename nor servname|Connection refused|\[Errno 111\]"
)


@dataclass(frozen=True)
class Sandbox:
    """A bubblewrap sandbox for one build's hooks."""

    bwrap: str
    version: str
    network: bool  # True only with --allow-network
    writable: tuple[tuple[str, str], ...]  # (host path, path inside): the build root (at its fixed path)
    # and a chosen env or sdist-extract dir (at their own), read-write
    readonly: tuple[str, ...]  # host paths visible, read-only
    links: tuple[tuple[str, str], ...]  # (path, target) symlinks recreated inside
    hostname: str = HOSTNAME
    uid: int = UID
    gid: int = GID
    libz: tuple[str, str] | None = None  # (another libz.so.1, the system's it replaces inside)
    #: A toolchain image's system directories (its unpacked root's usr, etc, opt…: host path, path inside),
    #: bound read-only in place of this machine's; ``links`` are then the image's top-level links
    image: tuple[tuple[str, str], ...] = ()
    #: host paths hooks read (the hook runner) that lie where the image has its own directory: seen under
    #: ``HOST_FILES`` (a hook's command names them there: ``moved``)
    displaced: tuple[str, ...] = ()

    @property
    def hermetic(self) -> bool:
        return not self.network

    def wrap(
        self,
        cmd: Sequence[str],
        cwd: str | os.PathLike[str] | None,
        *,
        protected: Sequence[tuple[str, str]] = (),
        hidden: Sequence[str] = (),
    ) -> list[str]:
        """``cmd`` as run inside the sandbox (with ``cwd`` as its working directory); ``protected``
        (host path, path inside) read-only within the writable paths, ``hidden`` directories empty."""
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
        if self.network:
            args.append("--share-net")
        args += ["--hostname", self.hostname, "--uid", str(self.uid), "--gid", str(self.gid)]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for path, inside in self.image:
            args += ["--ro-bind", path, inside]
        # "-try": a directory the build makes later (an --sdist-extract-dir before the sdist is
        # unpacked) is bound from the first hook that runs after it exists
        for path in self.readonly:
            args += ["--ro-bind-try", path, path]
        for path in self.displaced:
            args += ["--ro-bind-try", path, HOST_FILES + path]
        for path, target in self.links:
            args += ["--symlink", target, path]
        if self.libz is not None:
            args += ["--ro-bind", *self.libz]
        for path, inside in self.writable:
            args += ["--bind-try", path, inside]
        for path, inside in protected:
            args += ["--ro-bind-try", path, inside]
        for inside in hidden:
            args += ["--tmpfs", inside]
        # The machine's installer configuration may hold index passwords: installs read it, hooks do not.
        for conf in policy.INSTALLER_CONFIG_FILES:
            if os.path.isfile(self._system_path(conf)):
                args += ["--ro-bind", os.devnull, conf]
        for conf in policy.INSTALLER_CONFIG_DIRS:
            if os.path.isdir(self._system_path(conf)):
                args += ["--tmpfs", conf]
        if cwd is not None:
            args += ["--chdir", str(cwd)]
        return [*args, "--", *cmd]

    def carry_in(self, argv: Sequence[str], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """``argv`` (a wrapped command) and ``environ`` with the variables that load code into every
        process (LD_PRELOAD: libfaketime for ``check --vary clock``) moved from bwrap's own
        environment to ``--setenv``: they are for the build's processes, and bwrap must not run
        under them (libfaketime keeps it from making namespaces)."""
        outside = dict(environ)
        moved: list[str] = []
        for name in sorted(policy.INJECTS_CODE & outside.keys()):
            moved += ["--setenv", name, outside.pop(name)]
        if not moved or not argv or argv[0] != self.bwrap:
            return list(argv), dict(environ)
        return [argv[0], *moved, *argv[1:]], outside

    def wrap_install(
        self,
        cmd: Sequence[str],
        root: Path,
        inside: Path,
        *,
        readonly: Sequence[str] = (),
        writable: Sequence[str] = (),
    ) -> list[str]:
        """``cmd`` (an installer) run with the network but none of the host's files beyond what an
        install needs: the system directories and the interpreter (as a hook has them), ``readonly``
        (the installer itself, ``--find-links`` folders, constraints, certificates: read-only),
        ``writable`` (a download cache of the caller's) and the private build root ``root`` at its
        fixed path ``inside``, with an empty HOME (a hook may have planted installer configuration
        in the one it had). What the installer builds from an sdist runs with no more than a hook."""
        args = [self.bwrap, "--unshare-all", "--share-net", "--unshare-user", "--die-with-parent", "--new-session"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        base = {str(p) for p in interpreter_paths()}
        if self.image:  # the image's system, never this machine's
            shown = [at for _, at in self.image]
            for path, at in self.image:
                args += ["--ro-bind", path, at]
            # but this machine's network: how it names hosts (an image's resolv.conf is its builder's, or empty)
            for conf in NETWORK_CONFIG:
                if os.path.isfile(conf) and os.path.lexists(self._system_path(conf)):
                    args += ["--ro-bind", conf, conf]
        else:
            shown = [p for p in self.readonly if p in SYSTEM_DIRS or p in SYSTEM_LINKS or p in base]
            for path in shown:
                args += ["--ro-bind-try", path, path]
        for path, target in self.links:
            args += ["--symlink", target, path]
        there = [*shown, *(link for link, _ in self.links)]
        for path in sorted(set(readonly)):
            if not _within(path, there):  # not there already
                args += ["--ro-bind-try", path, path]
            elif self.image:  # a host path the image has a directory for: elsewhere (``relocated``)
                args += ["--ro-bind-try", path, HOST_FILES + path]
        for path in sorted(set(writable)):
            args += ["--bind-try", path, path]
        for path, seen in self.writable:  # a directory the user chose for the environment (--env-dir)
            if seen != str(inside):
                args += ["--bind-try", path, seen]
        args += ["--bind", str(root), str(inside), "--tmpfs", str(inside / "home"), "--chdir", str(inside)]
        return [*args, "--", *cmd]

    def in_image(self, path: str) -> bool:
        """Whether ``path`` is a file of the toolchain image (it has one there)."""
        return bool(self.image) and self.relocated([path]) != {} and os.path.lexists(self._system_path(path))

    @property
    def moved(self) -> dict[str, str]:
        """Where hooks see the ``displaced`` host paths."""
        return {p: HOST_FILES + p for p in self.displaced}

    def relocated(self, paths: Sequence[str]) -> dict[str, str]:
        """Where an install in a toolchain image sees each of ``paths`` (host files it reads: the installer,
        certificates, constraints) that the image has a directory for: under ``HOST_FILES``, never over the
        image's own files."""
        if not self.image:
            return {}
        there = [at for _, at in self.image] + [link for link, _ in self.links]
        return {p: HOST_FILES + p for p in paths if _within(p, there)}

    def probe(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (``TOOL --version``) in this sandbox, as a hook would, and capture its output."""
        env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
        return probes.run(self.wrap(cmd, None), env=env)

    def sees(self, path: str) -> bool:
        """Whether a hook in this sandbox could see ``path`` (a system directory, a link, a bound path)."""
        places = [*self.readonly, *(inside for _, inside in self.writable), *(link for link, _ in self.links)]
        places += [inside for _, inside in self.image]
        return _within(path, places)

    @property
    def image_root(self) -> Path | None:
        """The unpacked toolchain image the system directories come from (None: this machine's)."""
        return Path(self.image[0][0]).parent if self.image else None  # its usr, first

    def _system_path(self, path: str) -> str:
        """Where a system path seen inside is on this machine (in the image's root, with one)."""
        root = self.image_root
        return path if root is None else str(root) + path

    def record(self) -> dict[str, Any]:
        """What shapes the build (buildDefinition): the same on every machine for the same options."""
        return {
            "kind": "bubblewrap",
            **({"system": "toolchain image"} if self.image else {}),
            "network": "allowed" if self.network else "none",
            "hermetic": self.hermetic,
            "hostname": self.hostname,
            "uid": self.uid,
            "gid": self.gid,
        }

    def details(self) -> dict[str, Any]:
        """This machine's side of it (runDetails): the tool's version and the host paths that were visible."""
        return {
            "version": self.version,
            "readOnly": sorted(self.readonly),
            "readWrite": sorted(inside for _, inside in self.writable),
            "links": [f"{path} -> {target}" for path, target in self.links],
            **({"image": [inside for _, inside in self.image]} if self.image else {}),
            **({"libz": {"system": self.libz[1], "replacedBy": self.libz[0]}} if self.libz else {}),
        }


@dataclass(frozen=True)
class NoSandbox:
    """No sandbox could be made here; the hooks run as plain subprocesses."""

    reason: str

    network = True
    hermetic = False

    def record(self) -> dict[str, Any]:
        return {"kind": "none", "network": "allowed", "hermetic": False}

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason}

    def warning(self) -> str:
        return (
            f"no sandbox: {self.reason}; the backend runs with the network and the host's files "
            "(recorded as sandbox: none). Install bubblewrap (apt-get install bubblewrap) for hermetic "
            "builds, or pass --require-sandbox to refuse building without one"
        )


def _probe(bwrap: str) -> str | None:
    """Why ``bwrap`` cannot make a sandbox here, or None when it can."""
    try:
        ran = probes.run(
            [bwrap, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"], env=_without_injected(os.environ)
        )
    except OSError as exc:
        return f"{bwrap} cannot run ({exc})"
    if ran.returncode != 0:
        why = (ran.stderr.strip().splitlines() or [f"exit status {ran.returncode}"])[-1]
        return f"{bwrap} cannot create user namespaces here ({why})"
    return None


def _without_injected(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables that load code into every process (bwrap runs without them)."""
    return {k: v for k, v in environ.items() if k not in policy.INJECTS_CODE}


def _version(bwrap: str) -> str:
    out = probes.run([bwrap, "--version"], env=_without_injected(os.environ)).stdout.strip()
    return out.split()[-1] if out else "unknown"


def interpreter_paths() -> tuple[Path, ...]:
    """The host paths a build's interpreter and hook runner live in (read-only inside)."""
    import pyproject_hooks

    # the hook runner at the path the hook command names (it may go through a symlinked
    # environment) and at its real path
    hooks = Path(pyproject_hooks.__file__).absolute().parent / "_in_process"
    seeded = Path(__file__).absolute().parent / "inproc"  # detpack's runner of it (tempfile names fixed)
    return tuple(sorted({Path(sys.base_prefix).resolve(), hooks, hooks.resolve(), seeded, seeded.resolve()}))


def make(
    found: str,
    writable: Sequence[Path | tuple[Path, Path]],
    *,
    network: bool,
    readonly: Sequence[Path] = (),
    caller_env: Mapping[str, str] | None = None,
    image_root: Path | None = None,
) -> Sandbox:
    """The sandbox, with the ``bwrap`` that ``locate`` found, for a build that writes only to
    ``writable`` (a path, or a host path and the path it is bound at inside). With ``image_root`` (an
    unpacked toolchain image), the system directories and top-level links are the image's."""
    if image_root is not None:
        image, links = image_system(image_root)
        there = [inside for _, inside in image] + [link for link, _ in links]
        visible: set[str] = set()
        displaced: set[str] = set()
        for extra in (*interpreter_paths(), *readonly):  # the hook runner; never this machine's Python
            if extra == Path(sys.base_prefix).resolve():
                continue
            (displaced if _within(str(extra), there) else visible).add(str(extra))
        pairs = sorted({(str(w), str(w)) if isinstance(w, Path) else (str(w[0]), str(w[1])) for w in writable})
        hostname, uid, gid = _identity(caller_env or os.environ)
        inside = {i for _, i in pairs}
        return Sandbox(found, _version(found), network, tuple(pairs), tuple(sorted(visible - inside)), links,
                       hostname, uid, gid, None, image, tuple(sorted(displaced)))  # fmt: skip
    visible = {d for d in SYSTEM_DIRS if os.path.isdir(d)}
    links_found: list[tuple[str, str]] = []
    for name in SYSTEM_LINKS:
        if os.path.islink(name):
            links_found.append((name, os.readlink(name)))
        elif os.path.isdir(name):
            visible.add(name)
    for extra in (*interpreter_paths(), *readonly):  # unless a system directory already holds it
        if not any(extra.is_relative_to(v) for v in visible):
            visible.add(str(extra))
    pairs = sorted({(str(w), str(w)) if isinstance(w, Path) else (str(w[0]), str(w[1])) for w in writable})
    hostname, uid, gid = _identity(caller_env or os.environ)
    libz = _libz(caller_env or os.environ)
    inside = {i for _, i in pairs}
    return Sandbox(
        found,
        _version(found),
        network,
        tuple(pairs),
        tuple(sorted(visible - inside)),
        tuple(links_found),
        hostname,
        uid,
        gid,
        libz,
    )


#: What an install in a toolchain image reads of this machine's network configuration (over the image's).
NETWORK_CONFIG = ("/etc/resolv.conf", "/etc/hosts")
#: Where an install in a toolchain image sees this machine's files that lie where the image has its own.
HOST_FILES = "/run/detpack-host"
#: The top-level directories (or links) of a toolchain image its builds see: its system, not its home
#: directories, /var or /tmp.
IMAGE_SYSTEM = ("usr", "etc", "opt", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def image_system(root: Path) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """An unpacked image's system directories (host path, path inside) and top-level links (path inside,
    target). A link is recreated inside, never followed here: the image is not this machine's to resolve."""
    mounts: list[tuple[str, str]] = []
    links: list[tuple[str, str]] = []
    for name in IMAGE_SYSTEM:
        path = root / name
        if path.is_symlink():
            links.append((f"/{name}", os.readlink(path)))
        elif path.is_dir():
            mounts.append((str(path), f"/{name}"))
    dpkg = root / "var" / "lib" / "dpkg"  # its package database, for dpkg-query run in the image
    if not any(p.is_symlink() for p in (root / "var", root / "var" / "lib", dpkg)) and dpkg.is_dir():
        mounts.append((str(dpkg), "/var/lib/dpkg"))
    if not any(inside == "/usr" for _, inside in mounts):
        raise InputError(f"{root}: the toolchain image has no /usr directory; is it a root filesystem?")
    return tuple(mounts), tuple(links)


def _within(path: str, places: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in places)


def locate(caller_env: Mapping[str, str] | None = None) -> str | NoSandbox:
    """``bwrap`` when it can make a sandbox on this machine, else why not."""
    bwrap, why = _find(caller_env)
    if bwrap is None or why is not None:
        return NoSandbox(why or "bubblewrap (bwrap) is not on PATH")
    return bwrap


def _identity(environ: Mapping[str, str]) -> tuple[str, int, int]:
    """The sandbox's hostname, uid and gid: fixed, unless ``check --vary hostname,uid`` changes them."""
    hostname = environ.get(HOSTNAME_VARIABLE) or HOSTNAME
    if not _HOSTNAME_SHAPE.fullmatch(hostname):
        raise ConfigError(f"{HOSTNAME_VARIABLE}={hostname!r}: not a host name (letters, digits, '.', '-')")
    ids = environ.get(IDS_VARIABLE) or f"{UID}:{GID}"
    uid, _, gid = ids.partition(":")
    if not (uid.isdigit() and gid.isdigit()):
        raise ConfigError(f"{IDS_VARIABLE}={ids!r}: give UID:GID as two numbers (e.g. 2000:2000)")
    return hostname, int(uid), int(gid)


def system_libz() -> Path | None:
    """The real path of the system's ``libz.so.1`` (the one the interpreter loads), if there is one."""
    arch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    for d in (f"/lib/{arch}", f"/usr/lib/{arch}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        candidate = Path(d) / "libz.so.1"
        if candidate.exists():
            return candidate.resolve()
    return None


def check_libz(path: Path, what: str) -> Path:
    """``path`` when it is a readable ELF shared object (another libz.so.1), else an ``InputError``."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if magic != b"\x7fELF":
        raise InputError(f"{what} {path}: not an ELF shared library; give a libz.so.1 (e.g. zlib-ng with ZLIB_COMPAT)")
    return path.resolve()


def _libz(environ: Mapping[str, str]) -> tuple[str, str] | None:
    given = environ.get(LIBZ_VARIABLE)
    if not given:
        return None
    system = system_libz()
    if system is None:
        raise ConfigError(f"{LIBZ_VARIABLE}: this machine has no libz.so.1 to replace")
    return str(check_libz(Path(given), LIBZ_VARIABLE)), str(system)


def _find(caller_env: Mapping[str, str] | None) -> tuple[str | None, str | None]:
    """``bwrap`` on the caller's PATH, and why it cannot make a sandbox here (None when it can)."""
    if not sys.platform.startswith("linux"):
        return None, f"sandboxes need Linux namespaces; this is {sys.platform}"
    bwrap = shutil.which("bwrap", path=(caller_env or os.environ).get("PATH", os.defpath))
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not on PATH"
    return bwrap, _probe(bwrap)


def available(caller_env: Mapping[str, str] | None = None) -> str | None:
    """Why no sandbox can be made on this machine, or None when one can."""
    return _find(caller_env)[1]


def network_attempt(output: str) -> bool:
    """Whether a failed hook's output shows it tried to reach the network."""
    return _NETWORK_ATTEMPT.search(output) is not None
