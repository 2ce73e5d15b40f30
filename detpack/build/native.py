"""The native toolchain a build used: which compilers and build tools ran, and what they read.

Before each hook, a shim is written for every compiler or build tool (``TOOLS``) that the hook's
PATH holds, in a directory put first on that PATH. A shim notes its name and the real tool it
runs (the first one on PATH after the shims), then execs it; a compiler driver also gets
``SUNPRO_DEPENDENCIES`` (the preprocessor appends every header it read, system headers
included, to a file of its own) and a linker ``-Map`` (the link map names every object and
library it loaded). Neither changes what the tools write. After the build, ``collect`` turns
the notes into resolved dependencies: each tool with its resolved path, version line and
sha256; each header and library with the system package that owns it (``dpkg -S``; a file no
package owns, with its sha256); the OS release and glibc. A build that ran no tool adds nothing.

What is recorded is what ran through PATH: a backend that calls a compiler by another absolute
path bypasses the shims (its tools are then not named). The shims are the same on every build
(fixed paths, no times), so the record is too.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from detpack import probes
from detpack.build import compileflags, untrusted
from detpack.errors import InputError

#: Tools a shim is made for (when the hook's PATH holds them), and their target-prefixed names.
TOOLS: tuple[str, ...] = (
    *("cc", "c++", "cpp", "gcc", "g++", "clang", "clang++", "gfortran"),
    *("ld", "ld.bfd", "ld.gold", "ld.lld", "as", "ar", "ranlib", "strip", "nm", "objcopy"),
    *("cmake", "ninja", "meson", "make", "pkg-config", "pkgconf", "rustc", "cargo", "nasm", "yasm"),
)
_COMPILERS = re.compile(r"(^|-)(cc|c\+\+|cpp|gcc|g\+\+|clang|clang\+\+|gfortran)(-[0-9.]+)?$")
_LINKERS = re.compile(r"(^|-)ld(\.(bfd|gold|lld))?$")
MAX_NOTE = 64 << 20  # bytes read of one note (a hook writes them: hostile input)
SHIMS = "native/shims"  # under the build root
NOTES = "native/notes"  # under the build root: what the shims noted

_SHIM = """#!/bin/sh
# detpack: note that {name} ran and which one, then run it (the first on PATH after this directory)
n='{name}'
real=
IFS=:
for d in $PATH; do
  [ "$d" = '{shims}' ] && continue
  if [ -f "$d/$n" ] && [ -x "$d/$n" ]; then real="$d/$n"; break; fi
done
unset IFS
if [ -z "$real" ]; then echo "$n: command not found" >&2; exit 127; fi
printf '%s\\t%s\\n' "$n" "$real" >> '{notes}/tools'
{extra}exec "$real" {args}"$@"
"""
#: A compiler's shim adds the path map to what the build gives it (never in place of it: the
#: build's own flags, sysconfig's ``-O3 -DNDEBUG`` under setuptools, stay) and notes the run's
#: arguments, NUL-separated, in a file of its own (parallel compiles never interleave).
_COMPILER_EXTRA = """SUNPRO_DEPENDENCIES='{notes}/deps.'$$
export SUNPRO_DEPENDENCIES
f=$(mktemp '{notes}/argv.XXXXXXXX' 2>/dev/null) && printf '%s\\0' "$real" {pmap} "$@" > "$f"
"""


def _triplet() -> str:
    import sysconfig

    multiarch = sysconfig.get_config_var("MULTIARCH")
    return str(multiarch) if multiarch else f"{platform.machine()}-linux-gnu"


def tool_names() -> tuple[str, ...]:
    """Every name a shim may be made for: ``TOOLS`` and ``TRIPLET-tool`` (what Debian's sysconfig names)."""
    triplet = _triplet()
    return (*TOOLS, *(f"{triplet}-{t}" for t in TOOLS if t not in ("cmake", "ninja", "meson", "make", "cargo")))


def prepare(root: Path, inside: Path, path: str, system: Path | None = None) -> str:
    """Write the shims a hook with ``path`` (its PATH, as the hook sees it) needs, under ``root``
    (this machine's build root, seen at ``inside``; ``system``: the toolchain image's root the hook's
    system directories come from); return the PATH the hook gets."""
    shims, notes = root / SHIMS, root / NOTES
    shims_inside, notes_inside = inside / SHIMS, inside / NOTES
    # An earlier hook could have put links here: a shim is kept only when it is a regular file with
    # the very text it should have, else written afresh, never through a link.
    if not untrusted.real_dir(root, shims):
        untrusted.fresh_dir(root, shims)
    if not untrusted.real_dir(root, notes):
        untrusted.fresh_dir(root, notes)
    dirs = [d for d in path.split(os.pathsep) if d and d != str(shims_inside)]
    for name in tool_names():
        shim = shims / name
        if not any(_runnable(_system_file(d, name, root, inside, system)) for d in dirs):
            continue  # a tool this PATH does not have gets no shim: `which` must still say so
        extra, args = "", ""
        if _COMPILERS.search(name):
            pmap = shlex.quote(prefix_map(inside))
            extra, args = _COMPILER_EXTRA.format(notes=notes_inside, pmap=pmap), pmap + " "
        elif _LINKERS.search(name):
            args = f"'-Map={notes_inside}/map.'$$ "
        text = _SHIM.format(name=name, shims=shims_inside, notes=notes_inside, extra=extra, args=args)
        if untrusted.read_plain(shim, len(text) + 1) == text.encode("utf-8") and os.access(shim, os.X_OK):
            continue
        untrusted.remove(shim)
        fd = os.open(shim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    return os.pathsep.join([str(shims_inside), *dirs])


def _system_file(directory: str, name: str, root: Path, inside: Path, system: Path | None) -> Path:
    """``directory/name`` as a hook sees it, on this machine: the build root's copy, else the toolchain
    image's file when the hook's system is the image's."""
    if system is None or not directory.startswith("/") or _under(directory, inside):
        return Path(_on_host(directory, root, inside)) / name
    from detpack.build.toolimage import inside as in_image

    return in_image(system, f"{directory.rstrip('/')}/{name}")


def prefix_map(inside: Path) -> str:
    """The flag every compiler run gets: the build root as the build sees it mapped to ``.``, so
    compilers write neither the build directory (DWARF ``DW_AT_comp_dir``) nor ``__FILE__`` paths."""
    return f"-ffile-prefix-map={inside}=."


def _on_host(directory: str, root: Path, inside: Path) -> str:
    return str(root) + directory[len(str(inside)) :] if directory.startswith(str(inside)) else directory


def _as_seen(path: str, root: Path, inside: Path) -> str:
    """A path on this machine as the build saw it (a tool in the build environment: at the fixed path)."""
    return str(inside) + path[len(str(root)) :] if _under(path, root) else path


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@dataclass(frozen=True)
class _Owner:
    package: str
    version: str
    arch: str


Probe = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
PROBE_ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}


def run_here(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a probe (``TOOL --version``) as a plain subprocess (a build without a sandbox)."""
    return probes.run(cmd, env=PROBE_ENV)


@dataclass(frozen=True)
class _View:
    """Paths as the build saw them, and the files they are on this machine: the build root's copy, the
    toolchain image's file (``system``: its unpacked root), else this machine's own."""

    root: Path
    inside: Path
    system: Path | None = None

    def local(self, seen: str) -> Path:
        if _under(seen, self.inside):
            return Path(_on_host(seen, self.root, self.inside))
        if self.system is not None:
            from detpack.build.toolimage import inside as in_image

            return in_image(self.system, seen)
        return Path(seen)

    def sha256(self, seen: str) -> str | None:
        """The sha256 of the file ``seen`` names (a regular file only: never a FIFO a hook left, never a link,
        never past ``untrusted.HASH_LIMIT``); None when it is not one."""
        try:
            return untrusted.plain_sha256(self.local(seen))
        except InputError:
            return None

    def runnable(self, seen: str) -> bool:
        try:
            return _runnable(self.local(seen))
        except InputError:
            return False

    def real(self, seen: str) -> str:
        """``seen`` with its links resolved, as the build sees it."""
        if _under(seen, self.inside):
            return _as_seen(os.path.realpath(_on_host(seen, self.root, self.inside)), self.root, self.inside)
        if self.system is not None:
            try:
                return "/" + self.local(seen).relative_to(self.system).as_posix()
            except InputError:
                return seen  # not in the image's system: the build saw nothing of the image there
        return os.path.realpath(seen)


def collect(
    root: Path,
    inside: Path,
    *,
    probe: Probe = run_here,
    visible: Callable[[str], bool] | None = None,
    system: Path | None = None,
) -> tuple[dict[str, Any], ...]:
    """The native toolchain the build's hooks used, as resolved dependencies (none when no tool ran).

    The notes are written inside the build, so a backend could write anything there: ``probe``
    runs each noted tool (``--version``) where the hooks ran (the sandbox), and only paths the
    build could see (``visible``; None: all) are hashed and recorded. With ``system`` (a toolchain
    image's root) the system's files, packages (its dpkg database) and release are the image's.
    """
    view = _View(root, inside, system)
    notes = root / NOTES
    tools = _noted_tools(notes / "tools")
    if not tools:
        return ()
    seen = visible or (lambda _: True)
    files = {path: kind for path, kind in _read_files(notes, inside).items() if seen(path)}
    by_file: dict[str, set[str]] = {}  # the same binary run by several names (cc, gcc, x86_64-linux-gnu-gcc): one entry
    for noted, names in tools.items():
        path = view.real(noted)
        if _under(path, inside) or seen(path):
            by_file.setdefault(path, set()).update(names)
    ran = {path: sorted(names) for path, names in by_file.items()}
    if not ran:
        return ()  # nothing the build could have run
    parts = {path: _component_paths(path, probe, view) for path, names in ran.items() if _is_compiler(names)}
    parts = {path: {prog: p for prog, p in found.items() if seen(p)} for path, found in parts.items()}
    runs = compileflags.summarize(compileflags.read_notes(notes), lambda noted: _ran(view.real(noted), ran))
    inner = [path for found in parts.values() for path in found.values()]
    libc = _libc(view)
    owners = _owners([*ran, *inner, *files, *libc], probe if system is not None else None)  # one query
    distro = _os_release(view)
    out = [
        _tool_entry(names, path, parts.get(path, {}), owners, distro, probe, view, runs.get(path))
        for path, names in sorted(ran.items(), key=lambda item: item[1])
    ]
    out += _file_entries(files, owners, distro, view)
    out += _system_entries(owners, distro, libc, probe if system is not None else None)
    return tuple(out)


def _ran(path: str, ran: Mapping[str, object]) -> str | None:
    """A noted compiler path (resolved as the build sees it), when it is one of the tools that ran."""
    return path if path in ran else None


def _noted_tools(log: Path) -> dict[str, list[str]]:
    """Each real tool that ran (as the hook saw its path) and the names it was run as."""
    tools: dict[str, set[str]] = {}
    data = untrusted.read_plain(log, MAX_NOTE)
    if data is not None:
        for line in data.decode("utf-8", errors="replace").splitlines():
            name, _, real = line.partition("\t")
            if real:
                tools.setdefault(real, set()).add(name)
    return {real: sorted(names) for real, names in tools.items()}


def _read_files(notes: Path, inside: Path) -> dict[str, str]:
    """The system files the tools read: headers (dependency output) and libraries (link maps), by
    normalized path; files under the build root (the source, the build environment) are left out,
    provenance has them already."""
    files: dict[str, str] = {}
    for dep in sorted(notes.glob("deps.*")):
        text = (untrusted.read_plain(dep, MAX_NOTE) or b"").decode("utf-8", errors="replace")
        for path in _make_rule_paths(text):
            files.setdefault(path, "header")
    for linkmap in sorted(notes.glob("map.*")):
        text = (untrusted.read_plain(linkmap, MAX_NOTE) or b"").decode("utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith("LOAD "):
                files[os.path.normpath(line[5:].strip())] = "library"
    return {p: kind for p, kind in sorted(files.items()) if p.startswith("/") and not _under(p, inside)}


def _make_rule_paths(text: str) -> Iterable[str]:
    """The prerequisites of make rules (``target: a.h b.h \\``), normalized."""
    for rule in text.replace("\\\n", " ").splitlines():
        _, colon, deps = rule.partition(": ")
        if colon:
            for word in re.split(r"(?<!\\)\s+", deps.strip()):
                if word:
                    yield os.path.normpath(word.replace("\\ ", " "))


def _under(path: str, directory: Path) -> bool:
    return path == str(directory) or path.startswith(str(directory) + "/")


def _libc(view: _View) -> list[str]:
    """The C library the build's programs link (its owner names glibc's package), as the build sees it."""
    found = []
    for candidate in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6", "/lib64/libc.so.6"):
        with contextlib.suppress(InputError):
            if view.local(candidate).exists():
                found.append(candidate)
    return found[:1]


def _owners(paths: Sequence[str], probe: Probe | None = None) -> dict[str, _Owner]:
    """The system package owning each path (``dpkg -S``), for the paths one owns. With ``probe`` (a build
    in a toolchain image) the image's own dpkg-query is asked, in its sandbox: its database is the image's,
    input no program of this machine reads."""
    found = shutil.which("dpkg-query") if probe is None else "dpkg-query"
    if found is None or not paths:
        return {}
    wanted = sorted(set(paths))
    env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def ask(args: list[str]) -> subprocess.CompletedProcess[str]:
        if probe is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                return probe([found, *args])
            return subprocess.CompletedProcess(args, 1, "", "")
        return subprocess.run([found, *args], capture_output=True, text=True, env=env, check=False)

    proc = ask(["-S", *_dpkg_spellings(wanted)])
    owner_of: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("diversion by"):
            continue
        packages, sep, path = line.partition(": ")
        if sep:
            owner_of[path.strip()] = packages.split(",")[0].strip()
    pkgs = sorted(set(owner_of.values()))
    if not pkgs:
        return {}
    fmt = "${binary:Package}\t${Version}\t${Architecture}\n"
    query = ask(["-W", "-f", fmt, *pkgs])
    versions: dict[str, tuple[str, str]] = {}
    for line in query.stdout.splitlines():
        name, version, arch = [*line.split("\t"), "", ""][:3]
        versions[name] = (version, arch)
        versions.setdefault(name.split(":")[0], (version, arch))
    out: dict[str, _Owner] = {}
    for path in wanted:
        for spelling in _spellings(path):
            pkg = owner_of.get(spelling)
            if pkg is not None and pkg in versions:
                version, arch = versions[pkg]
                out[path] = _Owner(pkg.split(":")[0], version, arch)
                break
    return out


def _spellings(path: str) -> list[str]:
    """A path as dpkg may have it: as given, and across the /usr merge (/lib vs /usr/lib)."""
    out = [path]
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/"):
        if path.startswith("/usr" + short):
            out.append(path[4:])
        elif path.startswith(short):
            out.append("/usr" + path)
    return out


def _dpkg_spellings(paths: Sequence[str]) -> list[str]:
    return sorted({s for p in paths for s in _spellings(p)})


def _os_release(view: _View) -> dict[str, str]:
    """The release the build's system is (``/etc/os-release``: this machine's, or the toolchain image's)."""
    text = ""
    if view.system is not None:
        with contextlib.suppress(InputError):
            text = (untrusted.read_plain(view.local("/etc/os-release"), 1 << 16) or b"").decode("utf-8", "replace")
    else:
        with contextlib.suppress(OSError):
            text = Path("/etc/os-release").read_text(encoding="utf-8")
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip().strip('"')
    return info


def _purl(owner: _Owner, distro: Mapping[str, str]) -> str:
    qualifiers = {"arch": owner.arch} if owner.arch else {}
    if distro.get("VERSION_ID"):
        qualifiers["distro"] = f"{distro.get('ID', 'linux')}-{distro['VERSION_ID']}"
    return PackageURL(
        type="deb",
        namespace=distro.get("ID", "linux"),
        name=owner.package,
        version=owner.version,
        qualifiers=qualifiers,
    ).to_string()


def _version_line(tool: str, probe: Probe) -> str:
    """The first line a tool prints for ``--version`` (``-V`` for those that want it), else ''."""
    for flag in ("--version", "-V"):
        try:
            proc = probe([tool, flag])
        except (OSError, subprocess.TimeoutExpired):
            return ""
        lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        if proc.returncode == 0 and lines:
            return lines[0]
    return ""


def _is_compiler(names: Sequence[str]) -> bool:
    return any(_COMPILERS.search(n) for n in names)


def _tool_entry(
    names: list[str],
    seen: str,
    parts: Mapping[str, str],
    owners: Mapping[str, _Owner],
    distro: Mapping[str, str],
    probe: Probe,
    view: _View,
    runs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A tool that ran, at ``seen`` as the build saw it (resolved); ``parts``: a gcc driver's compiler
    proper and link helper (the driver is a front, these do the work); ``runs``: a compiler's runs with
    their flags (``compileflags.summarize``)."""
    version = _version_line(seen, probe)
    owner = owners.get(seen)
    annotations: dict[str, Any] = {"kind": "tool", "path": seen, "invokedAs": names, "version": version}
    numbers = re.findall(r"\d+(?:\.\d+)+", version)
    if owner is not None:
        uri = _purl(owner, distro)
        annotations["package"] = {"name": owner.package, "version": owner.version}
    else:
        uri = PackageURL(type="generic", name=Path(seen).name, version=numbers[-1] if numbers else None).to_string()
    components: dict[str, Any] = {}
    for prog, path in sorted(parts.items()):
        components[prog] = {"path": path, "sha256": view.sha256(path)}
        if path in owners:
            components[prog]["uri"] = _purl(owners[path], distro)
    if components:
        annotations["components"] = components
    annotations.update(runs or {})
    entry: dict[str, Any] = {"name": names[0], "uri": uri, "annotations": annotations}
    digest = view.sha256(seen)
    if digest is not None:
        entry["digest"] = {"sha256": digest}
    return entry


def _component_paths(driver: str, probe: Probe, view: _View) -> dict[str, str]:
    """A gcc-style driver's ``cc1``, ``cc1plus`` and ``collect2`` (``-print-prog-name``), those installed."""
    found: dict[str, str] = {}
    for prog in ("cc1", "cc1plus", "collect2"):
        try:
            proc = probe([driver, f"-print-prog-name={prog}"])
        except (OSError, subprocess.TimeoutExpired):
            return found
        printed = proc.stdout.strip() if proc.returncode == 0 else ""
        path = view.real(printed) if printed.startswith("/") else ""
        if path and view.runnable(path):
            found[prog] = path  # else: not a gcc driver, or that part is not installed
    return found


def _file_entries(
    files: Mapping[str, str], owners: Mapping[str, _Owner], distro: Mapping[str, str], view: _View
) -> list[Any]:
    """One entry per package the headers and libraries came from, and one for those no package owns."""
    grouped: dict[_Owner, dict[str, list[str]]] = {}
    loose: dict[str, str] = {}
    for path, kind in files.items():
        owner = owners.get(path)
        if owner is None:
            digest = view.sha256(path)
            if digest is not None:
                loose[path] = digest
            continue
        grouped.setdefault(owner, {}).setdefault("headers" if kind == "header" else "libraries", []).append(path)
    out: list[Any] = []
    for owner in sorted(grouped, key=lambda o: o.package):
        annotations = {"kind": "system files", "version": owner.version, **grouped[owner]}
        out.append({"name": owner.package, "uri": _purl(owner, distro), "annotations": annotations})
    if loose:
        out.append({"name": "files of no package", "annotations": {"kind": "system files", "sha256": loose}})
    return out


def _system_entries(
    owners: Mapping[str, _Owner], distro: Mapping[str, str], libc_paths: Sequence[str], probe: Probe | None
) -> list[Any]:
    """The OS release and the C library the toolchain ran on (``probe``: asked where the build ran, for a
    toolchain image's; else this machine's)."""
    out: list[Any] = []
    if distro:
        keep = {k: distro[k] for k in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME") if k in distro}
        out.append({"name": "os", "annotations": {"kind": "os", **keep}})
    libc_name, libc_version = platform.libc_ver() if probe is None else _probed_libc(probe)
    libc: dict[str, Any] = {"name": libc_name or "libc", "annotations": {"kind": "libc", "version": libc_version}}
    for path in libc_paths:
        owner = owners.get(path)
        if owner is not None:
            libc["uri"] = _purl(owner, distro)
            libc["annotations"]["package"] = {"name": owner.package, "version": owner.version}
    out.append(libc)
    return out


def _probed_libc(probe: Probe) -> tuple[str, str]:
    """The C library where the build ran (``getconf GNU_LIBC_VERSION``: "glibc 2.36")."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        words = probe(["getconf", "GNU_LIBC_VERSION"]).stdout.split()
        if len(words) == 2:
            return words[0], words[1]
    return "", ""
