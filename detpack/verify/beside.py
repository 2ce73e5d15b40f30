"""What the provenance beside an archive says of how it was made: facts ``diff`` weighs first.

``detpack build`` writes ``NAME-VERSION.provenance.json`` beside its outputs. A record counts for an
archive only when one of its subjects has the archive's file name and sha256; then its
SOURCE_DATE_EPOCH and umask are facts about that archive, and a cause that contradicts them is not
named (see ``causes``). A record that is unreadable, too large or about other files is no evidence
and is passed over in silence.
"""

from __future__ import annotations

from pathlib import Path

from detpack.digest import file_sha256
from detpack.errors import DetpackError
from detpack.provenance import reader
from detpack.verify.causes import SideFacts

MAX_RECORD = 16 * 1024 * 1024  # bytes: statements are a few KB
MAX_RECORDS = 64  # records looked at beside one archive


def facts_beside(archive: Path) -> SideFacts:
    """The facts the record beside ``archive`` gives of it, or none."""
    try:
        candidates = sorted(archive.parent.glob("*.provenance.json"))[:MAX_RECORDS]
    except OSError:
        return SideFacts()
    digest: str | None = None
    for candidate in candidates:
        try:
            if not candidate.is_file() or candidate.stat().st_size > MAX_RECORD:
                continue
            record = reader.read(candidate.read_bytes(), candidate)
        except (OSError, DetpackError):
            continue
        if not any(s.name == archive.name for s in record.subjects):
            continue
        digest = digest or file_sha256(archive)
        if not any(s.name == archive.name and s.sha256 == digest for s in record.subjects):
            continue
        return _facts(record, candidate.name)
    return SideFacts()


def _facts(record: reader.Provenance, name: str) -> SideFacts:
    definition = reader.dig(record.statement, "predicate", "buildDefinition")
    epoch = reader.dig(definition, "externalParameters", "sourceDateEpoch", "value")
    umask = reader.dig(definition, "internalParameters", "umask")
    try:
        umask_bits = int(umask, 8) if isinstance(umask, str) else None
    except ValueError:
        umask_bits = None
    return SideFacts(
        epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        umask=umask_bits,
        record=name,
    )
