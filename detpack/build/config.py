"""Build settings: the request value, and ``[tool.detpack]`` in a project's pyproject.toml.

Precedence: command line, then ``[tool.detpack]``, then defaults. Unknown keys are refused
(a misspelt ``source-date-epoch`` must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detpack.errors import ConfigError
from detpack.build.frontend import Distribution, FrontendSettings

KNOWN_KEYS = frozenset({"source-date-epoch", "recompress", "pass-env", "find-links", "offline", "lock", "store"})


@dataclass(frozen=True)
class BuildRequest:
    """Everything ``pipeline.build_project`` needs; the CLI builds one from argv."""

    srcdir: Path
    outdir: Path | None = None
    distributions: tuple[Distribution, ...] | None = None  # None: sdist, then wheel from it
    frontend: FrontendSettings = dataclasses.field(default_factory=lambda: FrontendSettings({}))
    epoch_spec: str | None = None
    recompress: bool | None = None
    pass_env: tuple[str, ...] = ()
    find_links: tuple[Path, ...] = ()
    offline: bool | None = None
    env_dir: Path | None = None  # build's --env-dir: a fixed, user-chosen isolated-env path
    sdist_extract_dir: Path | None = None  # build's --sdist-extract-dir
    lock: Path | None = None  # a PEP 751 lock of the build dependencies (detpack lock)
    normalize: bool = True  # False: keep the backend's bytes (rebuild --pypi compares those)


@dataclass(frozen=True)
class ToolConfig:
    epoch_spec: str | None = None
    recompress: bool = False
    pass_env: tuple[str, ...] = ()
    find_links: tuple[Path, ...] = ()
    offline: bool = False
    lock: Path | None = None
    store: str | None = None  # the artifact store's URL (`detpack store`); a relative path is from srcdir


def load_tool_config(srcdir: Path) -> ToolConfig:
    """Read ``[tool.detpack]`` from ``srcdir/pyproject.toml`` (absent file or table: defaults)."""
    pyproject = srcdir / "pyproject.toml"
    if not srcdir.is_dir() or not pyproject.is_file():
        return ToolConfig()
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: invalid TOML ({exc})") from None
    table = data.get("tool", {}).get("detpack", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.detpack] must be a table")
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{pyproject}: unknown [tool.detpack] key(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_KEYS))}"
        )
    epoch = table.get("source-date-epoch")
    if epoch is not None and not isinstance(epoch, int | str):
        raise ConfigError(f"{pyproject}: [tool.detpack] source-date-epoch must be an integer, 'git' or 'sdist'")
    return ToolConfig(
        epoch_spec=None if epoch is None else str(epoch),
        recompress=_bool(table, "recompress", pyproject),
        pass_env=tuple(_strings(table, "pass-env", pyproject)),
        find_links=tuple(srcdir / p for p in _strings(table, "find-links", pyproject)),
        offline=_bool(table, "offline", pyproject),
        lock=srcdir / str(table["lock"]) if "lock" in table else None,
        store=_store_url(table, srcdir, pyproject),
    )


def _store_url(table: dict[str, Any], srcdir: Path, where: Path) -> str | None:
    value = table.get("store")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: [tool.detpack] store must be a directory path or an oci:// URL")
    return value if "://" in value else str(srcdir / value)


def _bool(table: dict[str, Any], key: str, where: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: [tool.detpack] {key} must be true or false")
    return value


def _strings(table: dict[str, Any], key: str, where: Path) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: [tool.detpack] {key} must be an array of strings")
    return value
