"""Every canonical constant detpack applies, in one place.

Changing any value here changes output bytes, so ``POLICY_VERSION`` must change with it;
the version is recorded in every provenance statement.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Final

#: 2: gzip streams are block-parallel (pigz scheme); 3: gzip memLevel 8; 4: the JSON detpack writes
#: (statements, OCI configs, manifests and indexes) is RFC 8785 canonical JSON (``digest.canonical_json``);
#: 5: every deflate stream (zip members, gzip) is written by zlib-ng 2.3.3, never the host's zlib; every
#: wheel/zip member is re-deflated (already-compressed content and empty files stored)
POLICY_VERSION: Final = "5"

#: Used when neither the command line, the environment, git nor an sdist gives an epoch.
DEFAULT_EPOCH: Final = 315532800  # 1980-01-01T00:00:00Z, the earliest time zip can store
#: Zip stores local DOS time from 1980 to 2107; we store the epoch's UTC breakdown.
ZIP_MIN_EPOCH: Final = 315532800
ZIP_MAX_EPOCH: Final = 4354819198  # 2107-12-31T23:59:58Z

FILE_MODE: Final = 0o644
EXEC_MODE: Final = 0o755
DIR_MODE: Final = 0o755
SYMLINK_MODE: Final = 0o777

#: The deflate implementation every canonical stream is written with (``archive.codec``): zlib-ng,
#: through the ``zlib-ng`` package pinned in pyproject.toml. Its version is part of the policy.
DEFLATE_VERSION: Final = "2.3.3"
#: sha256 of ``codec.deflate(codec.known_input())``: checked before the first write on every machine.
DEFLATE_KNOWN_ANSWER: Final = "8a47ff5feef1738d178e0157dfe0e8d76264e6a747210c5d3fa7fc26efaaa6af"
#: Deflate level for zip members and gzip streams (gzip's own default: level 9 costs ~2x the
#: time for ~2% smaller sdists), and zlib-ng's memLevel (8, zlib's and pigz's default).
DEFLATE_LEVEL: Final = 6
DEFLATE_MEM_LEVEL: Final = 8
#: Zip members whose content starts with one of these is stored, not deflated: it is already
#: compressed (gzip, zip, bzip2, xz, zstd, PNG, JPEG, 7z), so deflate would only spend time.
#: A content rule, not a name rule: the same bytes are stored on every machine.
STORED_MAGIC: Final = (
    b"\x1f\x8b",
    b"PK\x03\x04",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"\x28\xb5\x2f\xfd",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"7z\xbc\xaf\x27\x1c",
)
#: gzip OS byte: 255 = unknown, what Python's gzip module writes on every platform.
GZIP_OS_BYTE: Final = 255
#: Every deflate stream is deflated in blocks of this size, each primed with the previous 32 KiB
#: (pigz's scheme; ``archive.codec``).
GZIP_BLOCK: Final = 128 * 1024
#: zstandard level for .tar.zst (one thread, so the frame depends on input and level only).
ZSTD_LEVEL: Final = 12
#: zstd OCI layers (``layer --compression zstd``): level 3 in zstd's multi-threaded mode (the same
#: bytes at any number of threads)
ZSTD_LAYER_LEVEL: Final = 3

#: Zip "version made by": 3 = Unix, so the mode bits in external_attr are honoured.
ZIP_CREATE_SYSTEM: Final = 3
ZIP_VERSION: Final = 20

#: Streaming chunk size for copying archive members.
CHUNK: Final = 1 << 20

#: Where builds run. A fixed path, so that nothing derived from the user's tree location
#: (``__file__``, DWARF comp_dir, generated text) can reach an output.
BUILD_ROOT: Final = "/tmp/detpack-build"

#: The controlled environment's fixed variables (SOURCE_DATE_EPOCH, HOME, TMPDIR are added
#: per build). PATH is fixed, not inherited: the isolated environment's scripts dir is
#: prepended by the frontend.
FIXED_ENV: Final[dict[str, str]] = {
    "TZ": "UTC",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONNOUSERSITE": "1",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "GIT_OPTIONAL_LOCKS": "0",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
}

#: Variables passed through from the caller's environment when set: they choose where
#: packages come from or how to reach it, never what a backend writes. Each one passed
#: is recorded (credentials in URLs redacted).
PASSTHROUGH_ENV: Final = (
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_NO_INDEX",
    "PIP_CERT",
    "PIP_TRUSTED_HOST",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_CONSTRAINT",
    "UV",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
    "UV_CACHE_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)

#: What only installers need (an index, a proxy, a trusted host): never given to a backend hook
#: without the network, and with it only when named by ``--pass-env``; nor is any variable whose
#: value holds credentials (``wording.redact`` changes it).
INSTALLER_ONLY: Final = frozenset(
    {
        *("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"),
        *("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX"),
        *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"),
    }
)
#: Machine-wide installer configuration (index URLs and their passwords), hidden from backend hooks.
INSTALLER_CONFIG_FILES: Final = ("/etc/pip.conf",)
INSTALLER_CONFIG_DIRS: Final = ("/etc/xdg/pip", "/etc/uv")

#: Never passed through, even when asked: they would point the isolated environment's
#: interpreter at other packages or another standard library, defeating isolation.
NEVER_PASS: Final = frozenset({"PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE"})
#: Passed only when asked by name, and flagged in provenance: they load code into every
#: process of the build (faketime works this way).
INJECTS_CODE: Final = frozenset({"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES"})

UMASK: Final = 0o022


def parse_epoch(text: str, what: str) -> int:
    """Seconds since 1970 from an option or variable named ``what``; refuse anything else."""
    from detpack.errors import ConfigError

    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an integer number of seconds (or 'git' / 'sdist')") from None
    if value < 0:
        raise ConfigError(f"{what}: {value} is negative; give seconds since 1970-01-01 UTC")
    return value


def epoch_from(option: str | None, environ: Mapping[str, str], default: int = DEFAULT_EPOCH) -> int:
    """``--source-date-epoch N``, else ``$SOURCE_DATE_EPOCH``, else ``default``."""
    if option is not None:
        return parse_epoch(option, "--source-date-epoch")
    if "SOURCE_DATE_EPOCH" in environ:
        return parse_epoch(environ["SOURCE_DATE_EPOCH"], "SOURCE_DATE_EPOCH")
    return default


def canonical_mode(mode: int, *, is_dir: bool = False, is_symlink: bool = False) -> int:
    """Map any permission bits to the canonical ones: keep only 'is executable'."""
    if is_symlink:
        return SYMLINK_MODE
    if is_dir:
        return DIR_MODE
    return EXEC_MODE if mode & 0o111 else FILE_MODE


@functools.lru_cache(maxsize=8)  # one epoch per archive, asked once per member
def zip_date_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    """The epoch as a zip date_time (UTC breakdown), clamped to what zip can store."""
    clamped = min(max(epoch, ZIP_MIN_EPOCH), ZIP_MAX_EPOCH)
    t = time.gmtime(clamped)
    return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


@dataclass(frozen=True)
class Limits:
    """Ceilings on what an archive may make detpack read or write (hostile-input guards).

    Each is reported by name when hit; ``--limit NAME=VALUE`` raises one for a trusted input.
    """

    max_members: int = 200_000
    max_total_bytes: int = 16 << 30  # uncompressed bytes over all members
    max_ratio: int = 1000  # uncompressed/compressed, for members above ratio_floor
    ratio_floor: int = 16 << 20
    max_name_bytes: int = 4096
    max_metadata_bytes: int = 64 << 20  # one member read whole: METADATA, WHEEL, RECORD, PKG-INFO

    @classmethod
    def parse(cls, items: Sequence[str]) -> Limits:
        """``--limit NAME=VALUE`` items over the defaults; a bad item is a ``ConfigError`` naming it."""
        from detpack.errors import ConfigError

        values: dict[str, int] = {}
        known = {f.name for f in fields(cls)}
        for item in items:
            name, sep, raw = item.partition("=")
            key = name.strip().replace("-", "_")
            if not sep or key not in known:
                raise ConfigError(f"--limit {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(known))}")
            suffix = raw.strip()[-1:].upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(suffix, 1)
            number = raw.strip()[:-1] if scale > 1 else raw.strip()
            if not number.isdigit():
                raise ConfigError(
                    f"--limit {item!r}: {raw!r} is not a whole number; give one with an optional K, M or G suffix "
                    f"(e.g. {key}={getattr(cls(), key)})"
                )
            values[key] = int(number) * scale
        return replace(cls(), **values)


DEFAULT_LIMITS: Final = Limits()


#: Left out when a directory is copied into the build root: local clutter a fresh checkout
#: does not have (a stale build/ tree is a classic source of drift). ``*.egg-info`` is kept:
#: setuptools takes an sdist's file list from its SOURCES.txt when there is no VCS.
TOP_LEVEL_EXCLUDES = frozenset({".venv", "venv", ".tox", ".nox", "build", "dist", ".eggs", ".git"})
ANYWHERE_EXCLUDES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


#: ``detpack lock``'s file at the project's top: the build's input, not the project's content, so
#: it stays out of the build copy (and so of the sdist, and of what counts as dirty) unless the
#: project includes it on purpose (``left_out_files``).
LOCK_FILE = "pylock.build.toml"


def copied(rel: str, left_out: frozenset[str] = frozenset()) -> bool:
    """Whether ``copy_tree`` copies the file at ``rel`` (a POSIX path relative to the project);
    ``left_out``: top-level files the project leaves out (``left_out_files``)."""
    parts = rel.split("/")
    if (
        parts == [".git"]
        or (len(parts) > 1 and parts[0] in TOP_LEVEL_EXCLUDES)
        or (len(parts) == 1 and rel in left_out)
    ):
        return False
    return not any(p in ANYWHERE_EXCLUDES for p in parts[:-1])


def left_out_files(project: Path) -> frozenset[str]:
    """The top-level files of ``project`` the build copy leaves out: ``LOCK_FILE``, unless the
    project names it in its packaging (``MANIFEST.in``, or ``pyproject.toml`` outside
    ``[tool.detpack]``, such as hatch's ``include``): then it goes into the sdist on purpose."""
    import tomllib

    named = ""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        named += (project / "MANIFEST.in").read_text(encoding="utf-8")
    with contextlib.suppress(OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
        tool = data.get("tool")
        if isinstance(tool, dict):
            tool.pop("detpack", None)
        named += repr(data)
    return frozenset() if LOCK_FILE in named else frozenset({LOCK_FILE})
