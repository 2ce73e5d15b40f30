"""The one error hierarchy of detpack.

Every expected failure is a ``DetpackError``: its message names the object (a file, a
project, a setting) and what to do about it, and ``exit_code`` is what the CLI returns.
Subclasses are grouped by whose fault the failure is, so callers can react by kind.
"""

from __future__ import annotations


class DetpackError(Exception):
    """Root of every error detpack raises on purpose."""

    exit_code: int = 2

    def __init__(self, message: str, *, details: str | None = None) -> None:
        # One line, always: wrapped library errors sometimes carry several.
        message = " ".join(message.split())
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def diagnostics(self) -> str:
        """The one-line message plus any captured detail (for ``-v``)."""
        if self.details:
            return f"{self.message}\n{self.details.rstrip()}"
        return self.message


class InputError(DetpackError):
    """The user's input is missing, unreadable, malformed or hostile."""


class ArchiveError(InputError):
    """An archive is corrupt, truncated, or contains something detpack refuses to copy."""


class NotAnArchiveError(ArchiveError):
    """The file is not a zip, tar or gzip archive at all (empty, text, unknown bytes)."""


class ConfigError(InputError):
    """A command-line option or ``[tool.detpack]`` setting is invalid."""


class LockError(InputError):
    """A lock is malformed, incomplete, or a file does not match its locked hash."""


class OutputError(DetpackError):
    """An output could not be written (disk full, file too large, permissions)."""


class BackendError(DetpackError):
    """The PEP 517 backend, or installing its requirements, failed."""


class HookError(BackendError):
    """A PEP 517 hook itself failed (not the install before it); ``reason`` is its one line."""

    def __init__(self, message: str, *, reason: str, details: str | None = None) -> None:
        super().__init__(message, details=details)
        self.reason = " ".join(reason.split())


class EnvironmentSetupError(DetpackError):
    """The controlled build environment could not be prepared on this machine."""


class VerificationError(DetpackError):
    """Something is not the same / not verified; the CLI exits 1."""

    exit_code = 1


class RegistryError(DetpackError):
    """An OCI registry is unreachable or refused a request."""


class TagConflictError(DetpackError):
    """A tag already points at other content; detpack never re-points it. The CLI exits 1."""

    exit_code = 1


class KeyFileError(InputError):
    """A key file is missing, unreadable, corrupt, or not an ed25519 key."""


class StoreError(DetpackError):
    """The artifact store cannot be opened or used as asked (bad URL, missing item, unreadable file)."""


class StoreTrustError(StoreError):
    """What the store says is not vouched for by a key the reader trusts (a swapped published key, a
    promotion no verified checkpoint covers). The CLI exits 1."""

    exit_code = 1


class StoreRefusedError(StoreError):
    """The store refused a write that would break write-once or policy (a rebinding, an unverified
    promotion, expiring a held item); nothing was changed. The CLI exits 1."""

    exit_code = 1


class CacheEntryError(DetpackError):
    """A cache entry changed after detpack wrote it (found by the check made before each use); the
    message names the entry to remove."""
