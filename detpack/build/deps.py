"""What goes into the isolated build environment, and the record of it.

pip runs with ``--report`` so every installed file's sha256 is known; with a lock, pip runs
in hash-checking mode (``--require-hashes --no-deps``) over exactly the locked files, and a
file whose hash differs is refused by name. uv has no install report: versions are read
from the environment and file hashes are unknown (unless a lock pinned them).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from build.env import DefaultIsolatedEnv
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from detpack.build.environment import Runner
from detpack.errors import EnvironmentSetupError, LockError
from detpack.build.lockfile import BuildLock

Installer = Literal["pip", "uv"]
_MISMATCH = re.compile(r"^\s+(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) from (?P<url>\S+?):?(?: \(from .*)?$")


@dataclass(frozen=True)
class InstalledDependency:
    """A package installed into the isolated build environment."""

    name: str
    version: str
    sha256: str | None
    url: str | None
    requested: bool


def _pip(env: DefaultIsolatedEnv) -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "--python", env.python_executable]
    return [env.python_executable, "-Im", "pip"]


def find_uv(caller_env: Mapping[str, str]) -> str:
    """uv as users have it: the ``uv`` package's binary, else ``$UV`` or ``uv`` on the caller's PATH.

    Looked up with the caller's environment: the build's own PATH is fixed and has no uv.
    """
    try:
        import uv  # type: ignore[import-not-found, unused-ignore]

        return str(uv.find_uv_bin())
    except (ModuleNotFoundError, FileNotFoundError):
        found = shutil.which(caller_env.get("UV") or "uv", path=caller_env.get("PATH", os.defpath))
        if found is None:
            raise EnvironmentSetupError(
                "--installer uv: uv not found (no uv package and no uv on PATH); "
                "install it with `pip install uv` or put uv on PATH"
            ) from None
        return os.path.abspath(found)


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


def install(
    env: DefaultIsolatedEnv,
    requirements: Collection[str],
    runner: Runner,
    *,
    installer: Installer,
    constraints: Path | None,
    fresh: bool,
    uv: str | None = None,
) -> list[dict[str, object]]:
    """Install ``requirements``; return pip's report items (or equivalent for uv)."""
    if not requirements:
        return []
    reqfile = Path(env.path) / "detpack-requirements.txt"
    reqfile.write_text("\n".join(sorted(requirements)) + "\n", encoding="utf-8")
    return _run(env, reqfile, runner, installer=installer, constraints=constraints, fresh=fresh, locked=None, uv=uv)


def install_locked(
    env: DefaultIsolatedEnv, lock: BuildLock, runner: Runner, *, installer: Installer, uv: str | None = None
) -> list[dict[str, object]]:
    """Install exactly the locked files, each checked against its sha256."""
    reqfile = Path(env.path) / "detpack-locked.txt"
    reqfile.write_text(lock.requirements(), encoding="utf-8")
    return _run(env, reqfile, runner, installer=installer, constraints=None, fresh=True, locked=lock, uv=uv)


def _run(
    env: DefaultIsolatedEnv,
    reqfile: Path,
    runner: Runner,
    *,
    installer: Installer,
    constraints: Path | None,
    fresh: bool,
    locked: BuildLock | None,
    uv: str | None,
) -> list[dict[str, object]]:
    report = Path(env.path) / "detpack-install-report.json"
    report.unlink(missing_ok=True)
    if installer == "uv":
        cmd = [uv or find_uv(os.environ), "pip", "install", "--python", env.python_executable]
    else:
        cmd = [*_pip(env), "install", "--no-warn-script-location", "--no-compile", "--no-input"]
        cmd += ["--report", str(report)]
        if fresh:
            cmd.append("--ignore-installed")
    if locked is not None:
        cmd += ["--require-hashes", "--no-deps"]
    cmd += ["-r", str(reqfile)]
    if constraints is not None:
        cmd += ["-c", str(constraints.resolve())]
    try:
        runner.run(cmd, extra_environ={"PYTHONPATH": ""})
    except subprocess.CalledProcessError as exc:
        if locked is not None:
            _raise_lock_problem(locked, str(exc.output or ""))
        raise
    if installer == "uv" or not report.is_file():
        return _from_metadata(env, locked)
    data = json.loads(report.read_text(encoding="utf-8"))
    items: list[dict[str, object]] = data.get("install", [])
    return items


def _raise_lock_problem(lock: BuildLock, output: str) -> None:
    lines = output.splitlines()
    for i, line in enumerate(lines):
        m = _MISMATCH.match(line)
        if m and i + 2 < len(lines) and "Expected sha256" in lines[i + 1]:
            got = lines[i + 2].split()[-1]
            raise LockError(
                f"{lock.path}: {m['name']} {m['version']} from {m['url']} does not match its locked sha256 "
                f"(got {got}); the file was changed or replaced - refusing it"
            )
    missing = re.search(r"No matching distribution found for (\S+)", output)
    if missing:
        raise LockError(f"{lock.path}: locked {missing.group(1)} cannot be found on the index or in --find-links")


_HASHES_HEADER = "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE"


def install_failure(output: str) -> str | None:
    """The line of pip's or uv's output that says why an install failed, or None for no output.

    pip: its last ``ERROR:`` line (what it could not find, which hash differed, which
    requirements conflict), never the "ResolutionImpossible: for help visit" footer; uv: its
    ``error:`` line with the innermost ``cause:``; anything else: the last non-blank line.
    """
    lines = [ln.rstrip() for ln in output.splitlines()]
    pip = [i for i, ln in enumerate(lines) if ln.startswith("ERROR: ") and "ResolutionImpossible" not in ln]
    if pip:
        i = pip[-1]
        text = lines[i].removeprefix("ERROR: ").strip()
        if text.startswith(_HASHES_HEADER):
            return _hash_mismatch(lines[i + 1 :])
        if "conflicting dependencies" in text and "The conflict is caused by:" in lines:
            at = lines.index("The conflict is caused by:") + 1
            causes = []
            while at < len(lines) and lines[at].startswith(" ") and lines[at].strip():
                causes.append(lines[at].strip())
                at += 1
            return f"{text.rstrip('.')}: {'; '.join(causes)}" if causes else text
        return text
    uv = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    if uv:
        i = uv[-1]
        text = lines[i].removeprefix("error: ").strip()
        causes = []
        for ln in lines[i + 1 :]:
            if not ln.startswith(" "):
                break
            if ln.strip().startswith("cause: "):
                causes.append(ln.strip().removeprefix("cause: "))
        return f"{text}: {causes[-1]}" if causes else text
    rest = [ln.strip() for ln in lines if ln.strip()]
    return rest[-1] if rest else None


def _hash_mismatch(after: list[str]) -> str:
    # pip: "    name==1.0 from URL:" then "Expected sha256 X" then "Got        Y" (first package only).
    for i, line in enumerate(after):
        m = _MISMATCH.match(line)
        if m and i + 2 < len(after) and "Expected sha256" in after[i + 1]:
            expected, got = after[i + 1].split()[-1], after[i + 2].split()[-1]
            return (
                f"{_HASHES_HEADER}: {m['name']}=={m['version']} from {m['url']}: expected sha256 {expected}, got {got}"
            )
    return _HASHES_HEADER


def _from_metadata(env: DefaultIsolatedEnv, locked: BuildLock | None) -> list[dict[str, object]]:
    # uv has no install report: versions come from the environment; hashes from a lock if any.
    pins = {p.name: p for p in locked.packages} if locked else {}
    out: list[dict[str, object]] = []
    purelib = purelib_of(env)
    for dist in importlib.metadata.distributions(path=[purelib]):
        name = canonicalize_name(dist.metadata["Name"])
        item: dict[str, object] = {"metadata": {"name": name, "version": dist.version}}
        if name in pins and pins[name].version == dist.version:
            item["download_info"] = {"archive_info": {"hashes": {"sha256": pins[name].sha256}}}
        out.append(item)
    return out


def purelib_of(env: Any) -> str:
    """The site-packages of ``build``'s DefaultIsolatedEnv or of a cached environment."""
    return str(env.purelib) if hasattr(env, "purelib") else str(env._env_backend.purelib)


def installed_versions(env: Any) -> dict[str, str]:
    purelib = purelib_of(env)
    return {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=[purelib])}


def unmet(requirements: Collection[str], versions: dict[str, str]) -> list[str]:
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


def merge(items: Sequence[dict[str, object]], requested: Collection[str]) -> tuple[InstalledDependency, ...]:
    """pip report items -> one ``InstalledDependency`` per package, marking the requested ones."""
    wanted: set[str] = set()
    for r in requested:
        with contextlib.suppress(InvalidRequirement):
            wanted.add(canonicalize_name(Requirement(r).name))
    found: dict[str, InstalledDependency] = {}
    for item in items:
        meta = item.get("metadata", {})
        assert isinstance(meta, dict)
        name = canonicalize_name(str(meta.get("name", "")))
        info = item.get("download_info") or {}
        assert isinstance(info, dict)
        archive = info.get("archive_info") or {}
        hashes = archive.get("hashes", {}) if isinstance(archive, dict) else {}
        found[name] = InstalledDependency(
            name=name,
            version=str(meta.get("version", "")),
            sha256=hashes.get("sha256"),
            url=info.get("url"),
            requested=name in wanted,
        )
    return tuple(found[k] for k in sorted(found))
