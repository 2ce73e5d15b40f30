"""Which key a reader trusts for a store: one it was given, or the one it saw first (pinned, like SSH).

A reader given the store's public key (``--store-key PUB``, or ``[tool.detpack] store-key`` in
pyproject.toml) uses it. Otherwise the key the store publishes is trusted on first use and pinned
in ``$XDG_CONFIG_HOME/detpack/known_stores`` (``~/.config/detpack/known_stores``): one line per
store, ``LOCATION ORIGIN KEYID``, where LOCATION is where the store is (a directory's absolute
path, or its URL without credentials or query) and ORIGIN is the id its checkpoints carry. From
then on a store at that location whose published key is another, or whose verified origin is
another, is refused, and so is a store elsewhere with that origin (a copy of it) signed by
another key, naming both keyids: whoever can write the storage can swap the
published key, but not the copy the reader kept. A user who knows the key really changed deletes
the line.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from detpack.atomic import exclusive, write_bytes
from detpack.errors import OutputError, StoreTrustError
from detpack.provenance.signing import PublicKey
from detpack.store.keys import user_dir

#: A store's origin, as pinned: one word (an ``urn:uuid:…`` for stores detpack made).
_ORIGIN = re.compile(r"[!-~]{1,200}")


@dataclass(frozen=True)
class TrustedKey:
    """The store key a reader believes checkpoints signed by, and how it came to trust it."""

    key: PublicKey
    source: str  # for messages: "--store-key FILE", "pinned at first use (FILE)", …
    pin: tuple[str, str] | None = None  # (location, "") to pin once a checkpoint verifies with it
    origin: str | None = None  # the origin pinned with it (None: not pinned, or given)


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


def check(path: Path, location: str, published: PublicKey) -> TrustedKey:
    """The published key, if the pin of the store at ``location`` is that key or there is none yet."""
    pin = next((p for p in read(path) if p.location == location), None)
    if pin is None:
        return TrustedKey(published, f"its published key, pinned now at first use ({path})", (location, ""))
    if pin.keyid != published.keyid:
        raise _changed(path, location, published, pin)
    return TrustedKey(published, f"its published key, pinned at first use ({path} line {pin.line})", None, pin.origin)


def settle(path: Path, location: str, trusted: TrustedKey, origin: str) -> None:
    """Once a checkpoint verified: the store's (verified) ``origin`` must be the one pinned for it, or for a
    copy of it elsewhere under the same key; a store seen for the first time is pinned."""
    if not _ORIGIN.fullmatch(origin):
        raise StoreTrustError(f"{location}: its checkpoints name origin {origin!r}, which is no store origin")
    if trusted.origin is not None and trusted.origin not in ("-", origin):
        raise StoreTrustError(
            f"{location}: is another store (origin {origin}) than the one pinned for it at first use (origin "
            f"{trusted.origin}, {path}); if it was replaced on purpose, delete that line"
        )
    if trusted.pin is None:
        return
    copy = next((p for p in read(path) if p.origin == origin), None)
    if copy is not None and copy.keyid != trusted.key.keyid:
        raise _changed(path, location, trusted.key, copy)
    add(path, location, origin, trusted.key.keyid)


def _changed(path: Path, location: str, published: PublicKey, pin: Pin) -> StoreTrustError:
    return StoreTrustError(
        f"{location}: publishes keyid {published.keyid[:16]}, but keyid {pin.keyid[:16]} was pinned for "
        + ("it" if pin.location == location else f"its origin {pin.origin} (at {pin.location})")
        + f" at first use ({path} line {pin.line}); refusing to read it. If the store's key really "
        "changed, delete that line (or pass --store-key PUB with the key you trust)"
    )


def add(path: Path, location: str, origin: str, keyid: str, *, replace: bool = False) -> None:
    """Pin ``keyid`` and ``origin`` for the store at ``location`` (a no-op when a pin of it is there already);
    ``replace``: a new store made there by this user replaces the pin of the one before it."""
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
