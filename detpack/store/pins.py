"""Which key a reader trusts for a store: one it was given, or the one it saw first (pinned, like SSH).

A reader given the store's public key (``--store-key PUB``, or ``[tool.detpack] store-key`` in
pyproject.toml) uses it. Otherwise the key the store publishes is trusted on first use and pinned
in ``$XDG_CONFIG_HOME/detpack/known_stores`` (``~/.config/detpack/known_stores``): one line per
store, ``LOCATION ORIGIN KEYID``, where LOCATION is where the store is (a directory's absolute
path, or its URL without credentials or query) and ORIGIN is the id its checkpoints carry. From
then on a store at that location, or with that origin anywhere (a copy of it), whose published
key is another is refused, naming both keyids: whoever can write the storage can swap the
published key, but not the copy the reader kept. A user who knows the key really changed deletes
the line.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from detpack.atomic import exclusive, write_bytes
from detpack.errors import OutputError, StoreTrustError
from detpack.provenance.signing import PublicKey
from detpack.store.keys import user_dir


@dataclass(frozen=True)
class TrustedKey:
    """The store key a reader believes checkpoints signed by, and how it came to trust it."""

    key: PublicKey
    source: str  # for messages: "--store-key FILE", "pinned at first use (FILE)", …
    pin: tuple[str, str] | None = None  # (location, origin) to pin once a checkpoint verifies with it


@dataclass(frozen=True)
class Pin:
    location: str
    origin: str
    keyid: str
    line: int


def known_stores() -> Path:
    return user_dir("XDG_CONFIG_HOME", ".config") / "detpack" / "known_stores"


def location_of(url: str) -> str:
    """Where a store is, as pinned: a directory's absolute path, a URL without credentials or query."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return str(Path(parts.path if parts.scheme == "file" else url).absolute()).replace(" ", "%20")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def read(path: Path) -> list[Pin]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputError(f"{path}: cannot read the pinned store keys ({exc})") from None
    pins = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            pins.append(Pin(fields[0], fields[1], fields[2], number))
    return pins


def find(path: Path, location: str, origin: str | None) -> Pin | None:
    """The pin of the store at ``location``, else of a store with ``origin`` (a copy of it elsewhere)."""
    pins = read(path)
    return next((p for p in pins if p.location == location), None) or next(
        (p for p in pins if origin is not None and p.origin == origin), None
    )


def check(path: Path, location: str, origin: str | None, published: PublicKey) -> TrustedKey:
    """The published key, if the pin of this store is that key or there is none yet (then it is to be pinned)."""
    pin = find(path, location, origin)
    if pin is None:
        return TrustedKey(published, f"its published key, pinned now at first use ({path})", (location, origin or "-"))
    if pin.keyid != published.keyid:
        raise StoreTrustError(
            f"{location}: publishes keyid {published.keyid[:16]}, but keyid {pin.keyid[:16]} was pinned for "
            + ("it" if pin.location == location else f"its origin {pin.origin} (at {pin.location})")
            + f" at first use ({path} line {pin.line}); refusing to read it. If the store's key really "
            "changed, delete that line (or pass --store-key PUB with the key you trust)"
        )
    copy = (location, pin.origin) if pin.location != location else None  # a copy of a pinned store: pin it here too
    return TrustedKey(published, f"its published key, pinned at first use ({path} line {pin.line})", copy)


def add(path: Path, location: str, origin: str, keyid: str, *, replace: bool = False) -> None:
    """Pin ``keyid`` for the store at ``location`` (a no-op when a pin of it is there already); ``replace``:
    a new store made there by this user replaces the pin of the one before it."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_name(path.name + ".lock"), path, "the pinned store keys"):
        pinned = [p for p in read(path) if p.location == location]
        if pinned and not replace:
            return
        try:
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            lines = [b"# detpack: store keys pinned at first use (LOCATION ORIGIN KEYID)\n"]
        drop = {p.line for p in pinned}
        kept = [line for number, line in enumerate(lines, 1) if number not in drop]
        write_bytes(path, b"".join(kept) + f"{location} {origin} {keyid}\n".encode())
        with contextlib.suppress(OSError):
            os.chmod(path, 0o644)
