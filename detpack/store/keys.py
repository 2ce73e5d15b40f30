"""Where a writer keeps a store's private key: never inside the store.

A store holds public keys only, so a copy of it (an auditor's, a mirror, a backup) cannot
sign. The private key lives in the writer's key directory, ``$XDG_DATA_HOME/detpack/store-keys``
(``~/.local/share/detpack/store-keys``, mode 0700), as ``KEYID.key`` (mode 0600), where KEYID
is the keyid the store's init entry records (and its published public key has): it is found
again after the store is moved or copied to another path or registry, and after a writer was
killed between publishing the public key and logging the init entry. ``store init --key K``
makes ``KEYID.key`` a symlink to K instead of copying it (K stays the only copy);
``--signing-key KEY`` names the key for every write instead of looking anywhere.

Earlier versions kept a local store's key inside it (``STORE/keys/store.key``) and named a
registry store's key by a digest of its URL: both places are still read (``inside``,
``legacy``), and ``inside_store`` lets the CLI warn that every copy of such a store holds it.
A new key made by a writer killed before it published it stays unused in the directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from detpack.errors import OutputError, StoreError
from detpack.provenance import signing

_KEYID = re.compile(r"^[0-9a-f]{64}$")


def user_dir(variable: str, fallback: str) -> Path:
    """``$VARIABLE`` if set and not empty, else ``~/FALLBACK`` (the XDG base directory rule)."""
    return Path(os.environ.get(variable) or Path.home() / fallback)


def default_key_dir() -> Path:
    """``$XDG_DATA_HOME/detpack/store-keys`` (``~/.local/share/detpack/store-keys``)."""
    return user_dir("XDG_DATA_HOME", ".local/share") / "detpack" / "store-keys"


def _private_dir(directory: Path) -> None:
    """Create the key directory (0700), and narrow it to 0700 if it is ours and wider."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077:
            directory.chmod(0o700)
    except OSError as exc:
        raise OutputError(f"{directory}: cannot create the key directory ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class StoreKeys:
    """Where the writer of one store looks for its private key."""

    #: The writer's key directory, where ``ID.key`` is made and looked for.
    directory: Path
    #: ``--signing-key KEY``: this key, made here if the store is new; nothing else is looked at.
    explicit: Path | None = None
    #: A key file inside the store (older local stores): read if present, warned about.
    inside: Path | None = None
    #: Other places earlier versions kept the key (read, never written).
    legacy: tuple[Path, ...] = ()

    def default(self, keyid: str) -> Path:
        """Where the key with ``keyid`` is kept (``explicit``, else ``KEYID.key`` in the key directory)."""
        if self.explicit is not None:
            return self.explicit
        if not _KEYID.match(keyid):
            raise StoreError(f"{keyid!r}: not a keyid; the store's log is damaged (run `detpack store verify`)")
        return self.directory / f"{keyid}.key"

    def find(self, keyid: str | None) -> Path | None:
        """The first place holding the key (a symlink counts only if its target exists); ``keyid``
        is the store's, or None for a new store (then only ``explicit`` can hold it)."""
        if self.explicit is not None:
            return self.explicit if self.explicit.exists() else None
        candidates = [*([self.default(keyid)] if keyid else []), *([self.inside] if self.inside else []), *self.legacy]
        return next((p for p in candidates if p.exists()), None)

    def inside_store(self) -> Path | None:
        """The private key file inside the store, if an older version left one there."""
        return self.inside if self.inside is not None and self.inside.exists() else None

    def missing(self, url: str, keyid: str) -> StoreError:
        """The one line a writer without the key gets: where it looked, and the fix."""
        path = self.default(keyid)
        looked = f"{path} (a link to {os.readlink(path)}, which is missing)" if path.is_symlink() else str(path)
        return StoreError(
            f"{url}: no signing key for this store: looked for {looked}; "
            "pass --signing-key KEY (the key the store was created with)"
        )

    def create(self) -> signing.PrivateKey:
        """Make the key of a new store (0600; in the key directory, 0700, unless ``explicit``)."""
        key = signing.PrivateKey.generate()
        path = self.default(key.public.keyid)
        if self.explicit is None:
            _private_dir(path.parent)
        signing.write_keypair(key, path)
        return key

    def link(self, key_file: Path) -> signing.PrivateKey:
        """Use an existing key in place: ``KEYID.key`` becomes a symlink to ``key_file`` (never a copy)."""
        key = signing.load_private_key(key_file)
        path = self.default(key.public.keyid)
        if path.exists() and signing.load_private_key(path) == key:
            return key  # already known (another store signs with the same key)
        _private_dir(path.parent)
        try:
            path.symlink_to(key_file.resolve())
        except FileExistsError:
            raise OutputError(f"{path}: already exists (a link to a missing file?); remove it and try again") from None
        except OSError as exc:
            raise OutputError(f"{path}: cannot link the store's key ({exc.strerror or exc})") from None
        return key

    def move_out(self) -> Path:
        """Move the key an older version kept inside the store to where it belongs."""
        inside = self.inside_store()
        if inside is None:
            raise StoreError(f"{self.inside}: no private key inside the store; nothing to move")
        key = signing.load_private_key(inside)
        target = self.default(key.public.keyid)
        if target.exists():
            if signing.load_private_key(target) != key:
                raise StoreError(f"{target}: already holds another key; move {inside} by hand")
        else:
            if self.explicit is None:
                _private_dir(target.parent)
            signing.write_keypair(key, target)
        inside.unlink()
        return target
