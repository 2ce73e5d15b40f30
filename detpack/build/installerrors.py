"""What an installer's output says when it fails: the decisive line, and a lock's file refused by name."""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

from detpack.build.lockfile import BuildLock
from detpack.errors import LockError

_MISMATCH = re.compile(r"^\s+(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) from (?P<url>\S+?):?(?: \(from .*)?$")
_UV_MISMATCH = re.compile(r"Hash mismatch for `(?P<name>[^=`]+)==(?P<version>[^`]+)`")


def raise_lock_problem(lock: BuildLock, output: str) -> None:
    uv = _UV_MISMATCH.search(output)
    if uv:  # uv names the package, not the file: the lock says which file it must be
        computed = re.search(r"Computed:\s+sha256:(\w+)", output)
        pinned = next((p for p in lock.packages if p.name == canonicalize_name(uv["name"])), None)
        what = f" ({pinned.filename})" if pinned is not None and pinned.filename else ""
        raise LockError(
            f"{lock.path}: {uv['name']} {uv['version']}{what} does not match its locked sha256 "
            f"(got {computed[1] if computed else 'another'}); the file was changed or replaced - refusing it"
        )
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
        told: list[list[str]] = []  # each cause with its continuation lines (uv wraps long ones)
        for ln in lines[i + 1 :]:
            if not ln.startswith(" "):
                break
            if ln.strip().startswith("cause: "):
                told.append([ln.strip().removeprefix("cause: ")])
            elif told and ln.strip():
                told[-1].append(ln.strip())
        return f"{text}: {' '.join(told[-1])}" if told else text
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
