"""Who and when, as log entries record them: the user, the CI run that acted, the time (UTC)."""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Mapping

from detpack.provenance import statement as provenance

#: Environment variables that name a CI run, in the order they are tried.
CI_RUN_VARIABLES = ("GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILDKITE_BUILD_ID", "CIRCLE_WORKFLOW_ID", "BUILD_TAG")


def now() -> str:
    return provenance.rfc3339(dt.datetime.now(dt.UTC))


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def ci_run(environ: Mapping[str, str]) -> str | None:
    if environ.get("GITHUB_RUN_ID"):
        server, repo = environ.get("GITHUB_SERVER_URL"), environ.get("GITHUB_REPOSITORY")
        if server and repo:
            return f"{server}/{repo}/actions/runs/{environ['GITHUB_RUN_ID']}"
    return next((f"{v}={environ[v]}" for v in CI_RUN_VARIABLES if environ.get(v)), None)
