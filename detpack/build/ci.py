"""Which CI run made a build: read from an allowlist of the CI system's own variables, never more.

Recognised: GitHub Actions, GitLab CI, Buildkite, CircleCI, Jenkins, and a generic
``DETPACK_CI_*`` set (``RUN_URL``, ``WORKFLOW``, ``JOB``, ``REF``, ``EVENT``, ``PULL_REQUEST``,
``PULL_REQUEST_URL``, ``ACTOR``, ``BUILDER_ID``) that fills in or overrides what a system says.
Only the variables named here are read (no token, password or other secret ever is), URLs have any
credentials redacted, and none of it reaches the backend's environment: it is recorded in the
provenance's ``runDetails`` only (``byproducts[name=ci]``, the run URL as ``invocationId`` and the
workflow as ``builder.id``), since it says who ran the build, not what shaped its bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from detpack.wording import redact

_Getter = Callable[[str], "str | None"]


@dataclass(frozen=True)
class CIContext:
    system: str  # "github-actions", "gitlab-ci", "buildkite", "circleci", "jenkins" or "generic"
    run_url: str | None = None
    workflow: str | None = None  # the workflow or pipeline
    job: str | None = None
    ref: str | None = None  # a full ref name where the system gives one (refs/heads/…, refs/tags/…)
    is_tag: bool | None = None
    event: str | None = None  # what started it: push, pull_request, schedule, merge_request_event, …
    pull_request: str | None = None  # the pull or merge request number
    pull_request_url: str | None = None
    actor: str | None = None
    repository: str | None = None  # the repository's URL
    commit: str | None = None
    builder_id: str | None = None  # the workflow definition that ran, as a URL (the SLSA builder id)

    def record(self) -> dict[str, object]:
        """The fields the system gave, for the provenance (keys in camelCase, sorted)."""
        camel = {k: v for k, v in asdict(self).items() if v is not None}
        return {re.sub(r"_([a-z])", lambda m: m[1].upper(), k): v for k, v in sorted(camel.items())}


#: Every variable this module reads (documentation, and the test that secrets are not among them).
VARIABLES = frozenset(
    {
        "GITHUB_ACTIONS",
        "GITHUB_SERVER_URL",
        "GITHUB_REPOSITORY",
        "GITHUB_RUN_ID",
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_WORKFLOW",
        "GITHUB_WORKFLOW_REF",
        "GITHUB_JOB",
        "GITHUB_REF",
        "GITHUB_REF_TYPE",
        "GITHUB_EVENT_NAME",
        "GITHUB_ACTOR",
        "GITHUB_SHA",
        "GITLAB_CI",
        "CI_JOB_URL",
        "CI_PIPELINE_URL",
        "CI_PROJECT_URL",
        "CI_PIPELINE_NAME",
        "CI_CONFIG_PATH",
        "CI_JOB_NAME",
        "CI_COMMIT_REF_NAME",
        "CI_COMMIT_TAG",
        "CI_COMMIT_BRANCH",
        "CI_PIPELINE_SOURCE",
        "CI_MERGE_REQUEST_IID",
        "CI_MERGE_REQUEST_PROJECT_URL",
        "GITLAB_USER_LOGIN",
        "CI_COMMIT_SHA",
        "BUILDKITE",
        "BUILDKITE_BUILD_URL",
        "BUILDKITE_PIPELINE_SLUG",
        "BUILDKITE_STEP_KEY",
        "BUILDKITE_BRANCH",
        "BUILDKITE_TAG",
        "BUILDKITE_SOURCE",
        "BUILDKITE_PULL_REQUEST",
        "BUILDKITE_BUILD_CREATOR",
        "BUILDKITE_REPO",
        "BUILDKITE_COMMIT",
        "CIRCLECI",
        "CIRCLE_BUILD_URL",
        "CIRCLE_WORKFLOW_ID",
        "CIRCLE_JOB",
        "CIRCLE_BRANCH",
        "CIRCLE_TAG",
        "CIRCLE_PULL_REQUEST",
        "CIRCLE_PR_NUMBER",
        "CIRCLE_USERNAME",
        "CIRCLE_REPOSITORY_URL",
        "CIRCLE_SHA1",
        "CIRCLE_PROJECT_REPONAME",
        "JENKINS_URL",
        "BUILD_URL",
        "JOB_NAME",
        "JOB_URL",
        "BRANCH_NAME",
        "TAG_NAME",
        "CHANGE_ID",
        "CHANGE_URL",
        "CHANGE_AUTHOR",
        "GIT_COMMIT",
        "GIT_URL",
        "DETPACK_CI_RUN_URL",
        "DETPACK_CI_WORKFLOW",
        "DETPACK_CI_JOB",
        "DETPACK_CI_REF",
        "DETPACK_CI_EVENT",
        "DETPACK_CI_PULL_REQUEST",
        "DETPACK_CI_PULL_REQUEST_URL",
        "DETPACK_CI_ACTOR",
        "DETPACK_CI_BUILDER_ID",
    }
)


def detect(env: Mapping[str, str]) -> CIContext | None:
    """The CI run ``env`` describes, or None outside CI."""

    def get(name: str) -> str | None:
        assert name in VARIABLES, name
        value = env.get(name, "").strip()
        return redact(value) if value else None

    found = None
    if get("GITHUB_ACTIONS") == "true":
        found = _github(get)
    elif get("GITLAB_CI") == "true":
        found = _gitlab(get)
    elif get("BUILDKITE") == "true":
        found = _buildkite(get)
    elif get("CIRCLECI") == "true":
        found = _circleci(get)
    elif get("JENKINS_URL") and get("BUILD_URL"):
        found = _jenkins(get)
    return _generic(get, found)


def _github(get: _Getter) -> CIContext:
    server, repo = get("GITHUB_SERVER_URL") or "https://github.com", get("GITHUB_REPOSITORY")
    run = get("GITHUB_RUN_ID")
    run_url = (
        f"{server}/{repo}/actions/runs/{run}/attempts/{get('GITHUB_RUN_ATTEMPT') or '1'}" if repo and run else None
    )
    ref = get("GITHUB_REF")
    pull = re.fullmatch(r"refs/pull/(\d+)/(?:merge|head)", ref or "")
    workflow_ref = get("GITHUB_WORKFLOW_REF")
    return CIContext(
        system="github-actions",
        run_url=run_url,
        workflow=get("GITHUB_WORKFLOW"),
        job=get("GITHUB_JOB"),
        ref=ref,
        is_tag=(get("GITHUB_REF_TYPE") == "tag") if get("GITHUB_REF_TYPE") else None,
        event=get("GITHUB_EVENT_NAME"),
        pull_request=pull[1] if pull else None,
        pull_request_url=f"{server}/{repo}/pull/{pull[1]}" if pull and repo else None,
        actor=get("GITHUB_ACTOR"),
        repository=f"{server}/{repo}" if repo else None,
        commit=get("GITHUB_SHA"),
        builder_id=f"{server}/{workflow_ref}" if workflow_ref else None,
    )


def _gitlab(get: _Getter) -> CIContext:
    project, iid = get("CI_PROJECT_URL"), get("CI_MERGE_REQUEST_IID")
    tag, branch = get("CI_COMMIT_TAG"), get("CI_COMMIT_BRANCH")
    ref = f"refs/tags/{tag}" if tag else (f"refs/heads/{branch}" if branch else get("CI_COMMIT_REF_NAME"))
    mr_project = get("CI_MERGE_REQUEST_PROJECT_URL") or project
    config = get("CI_CONFIG_PATH") or ".gitlab-ci.yml"
    return CIContext(
        system="gitlab-ci",
        run_url=get("CI_JOB_URL") or get("CI_PIPELINE_URL"),
        workflow=get("CI_PIPELINE_URL") or get("CI_PIPELINE_NAME"),
        job=get("CI_JOB_NAME"),
        ref=ref,
        is_tag=bool(tag),
        event=get("CI_PIPELINE_SOURCE"),
        pull_request=iid,
        pull_request_url=f"{mr_project}/-/merge_requests/{iid}" if iid and mr_project else None,
        actor=get("GITLAB_USER_LOGIN"),
        repository=project,
        commit=get("CI_COMMIT_SHA"),
        builder_id=f"{project}/-/blob/{get('CI_COMMIT_REF_NAME') or 'HEAD'}/{config}" if project else None,
    )


def _buildkite(get: _Getter) -> CIContext:
    tag, branch, pull = get("BUILDKITE_TAG"), get("BUILDKITE_BRANCH"), get("BUILDKITE_PULL_REQUEST")
    pull = pull if pull and pull != "false" else None
    return CIContext(
        system="buildkite",
        run_url=get("BUILDKITE_BUILD_URL"),
        workflow=get("BUILDKITE_PIPELINE_SLUG"),
        job=get("BUILDKITE_STEP_KEY"),
        ref=f"refs/tags/{tag}" if tag else (f"refs/heads/{branch}" if branch else None),
        is_tag=bool(tag),
        event=get("BUILDKITE_SOURCE"),
        pull_request=pull,
        actor=get("BUILDKITE_BUILD_CREATOR"),
        repository=get("BUILDKITE_REPO"),
        commit=get("BUILDKITE_COMMIT"),
    )


def _circleci(get: _Getter) -> CIContext:
    tag, branch, url = get("CIRCLE_TAG"), get("CIRCLE_BRANCH"), get("CIRCLE_PULL_REQUEST")
    number = get("CIRCLE_PR_NUMBER") or (url.rstrip("/").rsplit("/", 1)[-1] if url else None)
    return CIContext(
        system="circleci",
        run_url=get("CIRCLE_BUILD_URL"),
        workflow=get("CIRCLE_WORKFLOW_ID"),
        job=get("CIRCLE_JOB"),
        ref=f"refs/tags/{tag}" if tag else (f"refs/heads/{branch}" if branch else None),
        is_tag=bool(tag),
        pull_request=number,
        pull_request_url=url,
        actor=get("CIRCLE_USERNAME"),
        repository=get("CIRCLE_REPOSITORY_URL"),
        commit=get("CIRCLE_SHA1"),
    )


def _jenkins(get: _Getter) -> CIContext:
    tag, branch = get("TAG_NAME"), get("BRANCH_NAME")
    return CIContext(
        system="jenkins",
        run_url=get("BUILD_URL"),
        workflow=get("JOB_NAME"),
        ref=f"refs/tags/{tag}" if tag else (f"refs/heads/{branch}" if branch else None),
        is_tag=bool(tag),
        pull_request=get("CHANGE_ID"),
        pull_request_url=get("CHANGE_URL"),
        actor=get("CHANGE_AUTHOR"),
        repository=get("GIT_URL"),
        commit=get("GIT_COMMIT"),
        builder_id=get("JOB_URL"),
    )


def _generic(get: _Getter, found: CIContext | None) -> CIContext | None:
    """``DETPACK_CI_*`` fills in or overrides what a system said (or describes a system detpack does not know)."""
    given: dict[str, str | None] = {
        "run_url": get("DETPACK_CI_RUN_URL"),
        "workflow": get("DETPACK_CI_WORKFLOW"),
        "job": get("DETPACK_CI_JOB"),
        "ref": get("DETPACK_CI_REF"),
        "event": get("DETPACK_CI_EVENT"),
        "pull_request": get("DETPACK_CI_PULL_REQUEST"),
        "pull_request_url": get("DETPACK_CI_PULL_REQUEST_URL"),
        "actor": get("DETPACK_CI_ACTOR"),
        "builder_id": get("DETPACK_CI_BUILDER_ID"),
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return found
    base = asdict(found) if found is not None else {"system": "generic"}
    merged = {**base, **given}
    ref = given.get("ref")
    if ref is not None:
        merged["is_tag"] = ref.startswith("refs/tags/")
    return CIContext(**merged)
