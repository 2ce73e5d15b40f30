"""Whether a build is of a reviewed change: the ``require-pull-request`` rule of a release gate.

It holds for the commit that was built, never for its history: the CI run that made the
provenance names a pull or merge request, or the built commit itself (recorded as the source's
``gitCommit``, its subject and trailers among the ``changes`` byproduct) is the merge or squash
commit of one and the tree had no uncommitted changes. An earlier commit since the previous
release that was merged says nothing about the commits pushed on top of it. Pure: it reads the
statement only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from detpack.provenance import reader

#: The built commit's own subject when it merged a pull request: GitHub's merge commit, or its squash.
PULL_SUBJECT = re.compile(r"^Merge pull request #\d+ from \S|\(#\d+\)$")
#: GitLab's merge commit ends with the trailer ``See merge request GROUP/PROJECT!N``.
MERGE_REQUEST = re.compile(r"^merge request \S+![0-9]+$")


def _built_commit(summary: reader.Summary, predicate: Any) -> Mapping[str, Any] | None:
    """The ``changes`` record of the built commit (its subject and trailers), or None when not recorded."""
    head = (summary.source_commit or "").lower()
    products = reader.dig(predicate, "runDetails", "byproducts") or []
    changes = next((b for b in products if isinstance(b, dict) and b.get("name") == "changes"), None)
    commits = reader.dig(changes, "annotations", "commits") or []
    return next((c for c in commits if isinstance(c, dict) and head and str(c.get("commit")).lower() == head), None)


def pull_request(summary: reader.Summary, predicate: Any) -> tuple[bool, str]:
    """(passed, what was found) for ``require-pull-request`` (see the module docstring)."""
    ci = summary.ci or {}
    if ci.get("pullRequest"):
        return True, f"pull request #{ci['pullRequest']} ({ci.get('pullRequestUrl', ci.get('system'))})"
    commit = _built_commit(summary, predicate)
    if commit is None:
        return False, "the CI run names no pull request, and the provenance records no subject for the built commit"
    head, subject = str(summary.source_commit)[:12], str(commit.get("subject", ""))
    trailers = [t for t in commit.get("trailers") or [] if isinstance(t, dict)]
    request = next(
        (
            f"See {t['value']}"
            for t in trailers
            if str(t.get("key")).lower() == "see" and MERGE_REQUEST.match(str(t.get("value")))
        ),
        None,
    )
    if request is None and not PULL_SUBJECT.search(subject):
        return False, f"the CI run names no pull request, and the built commit {head} ({subject!r}) is no merge of one"
    if summary.source_dirty:
        return (
            False,
            f"the built commit {head} ({subject!r}) merged a pull request, but the tree had uncommitted changes",
        )
    return True, f"the built commit {head} merged a pull request: {request or subject!r}"
