"""Rebuilders on several machines sharing one queue in a PostgreSQL store.

``queue`` holds the jobs (one per release) and each key's outcome in the store's database, and
claims with ``SELECT … FOR UPDATE SKIP LOCKED`` and a lease; ``worker`` takes jobs, rebuilds with
``detpack rebuild --pypi --attest`` and posts the signed attestations to the store. Any number of
workers on any machines share the queue; each key attests a release at most once.
"""

from __future__ import annotations

from detpack.rebuilder.queue import Attested, Claim, JobState, Outcome, Queue, Remaining, release_of
from detpack.rebuilder.worker import Done, Event, Settings, run

__all__ = [
    "Attested",
    "Claim",
    "Done",
    "Event",
    "JobState",
    "Outcome",
    "Queue",
    "Remaining",
    "Settings",
    "release_of",
    "run",
]
