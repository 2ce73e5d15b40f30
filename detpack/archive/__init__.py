"""Archive readers and canonical writers (zip, tar, gzip) on one ``Entry`` model.

Every writer here streams: member data is copied in chunks, never held whole in memory.
"""

from detpack.archive.detect import ArchiveKind, detect
from detpack.archive.entry import Entry

__all__ = ["ArchiveKind", "Entry", "detect"]
