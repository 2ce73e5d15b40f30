"""Progress of long archive work, for a caller that shows it: bytes done of a total known up front.

The library never prints. A writer or reader takes an optional callback and tells it the bytes
done so far about once a MiB (``policy.CHUNK``) and at the end, so the cost of telling is one
call per MiB; the caller draws it (the command line: on a terminal only, see ``cli._progress``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from detpack import policy

#: Told ``(done, total)`` in bytes.
Progress = Callable[[int, int], None]
#: Told the bytes done so far (the total is the caller's).
Told = Callable[[int], None]


class CountingReader:
    """Passes reads (and seeks) through to ``raw``, telling ``told`` the bytes read so far."""

    def __init__(self, raw: BinaryIO, told: Told) -> None:
        self._raw = raw
        self._told = told
        self._said = 0
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        if self.count - self._said >= policy.CHUNK:
            self._said = self.count
            self._told(self.count)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()
