"""Dependencies carry provenance: each file of a closure built here, reproduced, different or unverified.

``closure`` reads what an application installs (a PEP 751 lock, hashed requirements);
``verify`` decides each file's state from build records, a cache and ``rebuild --pypi``.
"""

from __future__ import annotations

from detpack.deps.closure import Closure, ClosureFile, read_closure
from detpack.deps.report import STATES, Evidence, Report, State
from detpack.deps.verify import FileResult, Rebuilds, Tally, tally, verify_closure

__all__ = [
    "STATES",
    "Closure",
    "ClosureFile",
    "Evidence",
    "FileResult",
    "Rebuilds",
    "Report",
    "State",
    "Tally",
    "read_closure",
    "tally",
    "verify_closure",
]
