"""Tracing a build back to its change: the CI run, the commits and issues since the last release, the
build log, in the provenance; kept by the store, shown by ``store show``, checked by a policy.

One repository: the flit fixture, tagged v0.9.0, then three commits whose messages carry trailers.
It is built three times: in a GitHub Actions-like environment, a GitLab CI-like one, and none.
Each CI environment also holds secret-looking variables that must appear in no output.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import DETPACK, FIXTURES, materialize, run

pytestmark = pytest.mark.slow

SECRETS = {"GITHUB_TOKEN": "ghp_SeCrEt0123456789abcdef", "AWS_SECRET_ACCESS_KEY": "aws/SeCrEt/9876543210"}
WHEEL, SDIST = "fx_flit-1.0.0-py3-none-any.whl", "fx_flit-1.0.0.tar.gz"


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent), "PATH": "/usr/bin:/bin"}
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def _github(commit: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "org/fx-flit",
        "GITHUB_RUN_ID": "9001",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_WORKFLOW": "release",
        "GITHUB_WORKFLOW_REF": "org/fx-flit/.github/workflows/release.yml@refs/pull/42/merge",
        "GITHUB_JOB": "build",
        "GITHUB_REF": "refs/pull/42/merge",
        "GITHUB_REF_TYPE": "branch",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_ACTOR": "alice",
        "GITHUB_SHA": commit,
        **SECRETS,
    }


def _gitlab(commit: str) -> dict[str, str]:
    return {
        "GITLAB_CI": "true",
        "CI_PROJECT_URL": "https://gitlab.example.com/org/fx-flit",
        "CI_PIPELINE_URL": "https://gitlab.example.com/org/fx-flit/-/pipelines/77",
        "CI_JOB_URL": "https://gitlab.example.com/org/fx-flit/-/jobs/701",
        "CI_JOB_NAME": "wheel",
        "CI_COMMIT_REF_NAME": "v1.0.0",
        "CI_COMMIT_TAG": "v1.0.0",
        "CI_PIPELINE_SOURCE": "push",
        "GITLAB_USER_LOGIN": "bob",
        "CI_COMMIT_SHA": commit,
        "CI_JOB_TOKEN": SECRETS["GITHUB_TOKEN"],
        **SECRETS,
    }


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trace")
    repo = materialize(FIXTURES / "flit", tmp / "repo", 0o022)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first release")
    _git(repo, "tag", "v0.9.0")
    messages = [
        "Handle empty input\n\nFixes #12\nReviewed-by: Carol <carol@example.com>",
        "Speed up the parser (#15)\n\nCloses PROJ-123",
        "Document the options\n\nRefs: org/docs#7\nSigned-off-by: t <t@example.com>",
    ]
    for number, message in enumerate(messages):
        (repo / f"NOTE{number}.txt").write_text(f"{number}\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", message)
    commit = _git(repo, "rev-parse", "HEAD")
    outs = {}
    for name, env in (("plain", {}), ("github", _github(commit)), ("gitlab", _gitlab(commit))):
        out = tmp / name
        r = run([DETPACK, "build", repo, "-o", out, "--find-links", wheelhouse, "--offline"], env=env)
        assert r.code == 0, r.stdout + r.stderr
        outs[name] = out
    return outs


def _record(out: Path) -> dict:
    return json.loads((out / "fx_flit-1.0.0.provenance.json").read_text())


def _byproducts(out: Path) -> dict[str, dict]:
    return {b["name"]: b for b in _record(out)["predicate"]["runDetails"]["byproducts"]}


def test_the_github_run_is_in_the_provenance(builds: dict[str, Path]) -> None:
    record = _record(builds["github"])
    ci = _byproducts(builds["github"])["ci"]["annotations"]
    assert ci == {
        "actor": "alice",
        "builderId": "https://github.com/org/fx-flit/.github/workflows/release.yml@refs/pull/42/merge",
        "commit": record["predicate"]["buildDefinition"]["externalParameters"]["source"]["digest"]["gitCommit"],
        "event": "pull_request",
        "isTag": False,
        "job": "build",
        "pullRequest": "42",
        "pullRequestUrl": "https://github.com/org/fx-flit/pull/42",
        "ref": "refs/pull/42/merge",
        "repository": "https://github.com/org/fx-flit",
        "runUrl": "https://github.com/org/fx-flit/actions/runs/9001/attempts/2",
        "system": "github-actions",
        "workflow": "release",
    }
    run_details = record["predicate"]["runDetails"]
    assert run_details["builder"]["id"] == ci["builderId"]
    assert run_details["metadata"]["invocationId"] == ci["runUrl"]


def test_the_gitlab_pipeline_is_in_the_provenance(builds: dict[str, Path]) -> None:
    ci = _byproducts(builds["gitlab"])["ci"]["annotations"]
    assert ci["system"] == "gitlab-ci" and ci["runUrl"] == "https://gitlab.example.com/org/fx-flit/-/jobs/701"
    assert ci["workflow"] == "https://gitlab.example.com/org/fx-flit/-/pipelines/77" and ci["job"] == "wheel"
    assert ci["ref"] == "refs/tags/v1.0.0" and ci["isTag"] is True and ci["event"] == "push"
    assert ci["actor"] == "bob" and "pullRequest" not in ci


def test_no_secret_reaches_any_output_and_the_bytes_do_not_change(builds: dict[str, Path]) -> None:
    for name in ("github", "gitlab"):
        for path in builds[name].iterdir():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data += gzip.decompress(data)
            for secret in SECRETS.values():
                assert secret.encode() not in data, f"{secret} in {path}"
        for artifact in (WHEEL, SDIST):
            assert (builds[name] / artifact).read_bytes() == (builds["plain"] / artifact).read_bytes()
    # the perturbation was real: the CI runs are recorded, and only there
    assert "ci" in _byproducts(builds["github"]) and "ci" not in _byproducts(builds["plain"])


def test_three_commits_since_the_tag_and_the_issues_they_name(builds: dict[str, Path]) -> None:
    changes = _byproducts(builds["plain"])["changes"]["annotations"]
    assert changes["since"] == "v0.9.0"
    assert [c["subject"] for c in changes["commits"]] == [
        "Document the options",
        "Speed up the parser (#15)",
        "Handle empty input",
    ]
    assert changes["commits"][2]["trailers"] == [
        {"key": "Fixes", "value": "#12"},
        {"key": "Reviewed-by", "value": "Carol <carol@example.com>"},
    ]
    assert changes["references"] == sorted(["#12", "#15", "PROJ-123", "org/docs#7"])


def test_the_build_log_is_kept_beside_the_provenance_and_its_digest_verifies(builds: dict[str, Path]) -> None:
    log = _byproducts(builds["plain"])["build.log"]
    path = builds["plain"] / log["annotations"]["file"]
    assert path.name == "fx_flit-1.0.0.build.log.gz"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == log["annotations"]["fileDigest"]["sha256"]
    text = gzip.decompress(data)
    assert hashlib.sha256(text).hexdigest() == log["digest"]["sha256"]
    # what the build said: build's steps and the hooks it ran (the install, when one ran, says flit_core)
    assert b"Building wheel..." in text and b"_in_process.py build_wheel" in text, text


def test_store_show_prints_the_run_the_pull_request_and_the_issues(builds: dict[str, Path], tmp_path: Path) -> None:
    out, store = builds["github"], ["--store", str(tmp_path / "store")]
    r = run([DETPACK, "store", *store, "push", out / WHEEL, "--provenance", out / "fx_flit-1.0.0.provenance.json"])
    assert r.code == 0, r.stdout + r.stderr
    assert "fx_flit-1.0.0.build.log.gz  sha256:" in r.stdout and "(log)" in r.stdout
    r = run([DETPACK, "store", *store, "show", WHEEL])
    assert r.code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert (
        "  ci run:       https://github.com/org/fx-flit/actions/runs/9001/attempts/2 "
        "(github-actions, pull_request, refs/pull/42/merge)" in lines
    ), r.stdout
    assert "  pull request: #42 https://github.com/org/fx-flit/pull/42" in lines
    assert "  issues:       #12, #15, PROJ-123, org/docs#7 (3 commits since v0.9.0)" in lines
    assert any(ln.startswith("  build log:    stored as fx_flit-1.0.0.build.log.gz (sha256:") for ln in lines)


@pytest.mark.parametrize(
    ("build", "rules", "unmet"),
    [
        ("github", ["require-ci", "require-pull-request"], set()),
        ("gitlab", ["require-ci", "require-tag"], set()),
        ("plain", ["require-ci", "require-tag"], {"require-ci", "require-tag"}),
        ("github", ["require-tag"], {"require-tag"}),
        # HEAD is "Document the options": a (#15) commit earlier in the range is not the built change
        ("plain", ["require-pull-request"], {"require-pull-request"}),
    ],
)
def test_policy_rules_on_the_change(
    builds: dict[str, Path], tmp_path: Path, build: str, rules: list[str], unmet: set[str]
) -> None:
    out = builds[build]
    assert run([DETPACK, "keygen", "-o", tmp_path / "key"]).code == 0
    r = run([DETPACK, "sign", out / "fx_flit-1.0.0.provenance.json", "--key", tmp_path / "key",
             "-o", tmp_path / "fx_flit-1.0.0.intoto.jsonl"])  # fmt: skip
    assert r.code == 0, r.stderr
    policy = tmp_path / "policy.toml"
    policy.write_text('keys = ["key.pub"]\n' + "".join(f"{rule} = true\n" for rule in rules))
    r = run([DETPACK, "verify", out / WHEEL, "--provenance", tmp_path / "fx_flit-1.0.0.intoto.jsonl",
             "--policy", policy])  # fmt: skip
    failed = {ln.split()[1].rstrip(":") for ln in r.stdout.splitlines() if ln.startswith("  FAIL")}
    assert failed == unmet, r.stdout + r.stderr
    assert r.code == (1 if unmet else 0), r.stdout + r.stderr


def test_the_ci_environment_is_not_given_to_the_backend(builds: dict[str, Path]) -> None:
    given = _record(builds["github"])["predicate"]["buildDefinition"]["internalParameters"]["environment"]
    assert not [k for k in given if k.startswith(("GITHUB_", "CI_", "GITLAB_", "AWS_"))], given
    assert given == _record(builds["plain"])["predicate"]["buildDefinition"]["internalParameters"]["environment"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"BUILDKITE": "true", "BUILDKITE_BUILD_URL": "https://buildkite.com/org/fx/builds/5",
             "BUILDKITE_PIPELINE_SLUG": "fx", "BUILDKITE_TAG": "v1.0.0", "BUILDKITE_PULL_REQUEST": "false",
             "BUILDKITE_AGENT_ACCESS_TOKEN": "secret"},
            {"system": "buildkite", "runUrl": "https://buildkite.com/org/fx/builds/5", "workflow": "fx",
             "ref": "refs/tags/v1.0.0", "isTag": True},
        ),
        (
            {"CIRCLECI": "true", "CIRCLE_BUILD_URL": "https://circleci.com/gh/org/fx/12", "CIRCLE_JOB": "wheel",
             "CIRCLE_BRANCH": "main", "CIRCLE_PULL_REQUEST": "https://github.com/org/fx/pull/8"},
            {"system": "circleci", "runUrl": "https://circleci.com/gh/org/fx/12", "job": "wheel",
             "ref": "refs/heads/main", "isTag": False, "pullRequest": "8",
             "pullRequestUrl": "https://github.com/org/fx/pull/8"},
        ),
        (
            {"JENKINS_URL": "https://ci.example.com/", "BUILD_URL": "https://ci.example.com/job/fx/3/",
             "JOB_NAME": "fx", "CHANGE_ID": "21", "CHANGE_URL": "https://git.example.com/fx/pulls/21",
             "BRANCH_NAME": "PR-21", "JOB_URL": "https://ci.example.com/job/fx/"},
            {"system": "jenkins", "runUrl": "https://ci.example.com/job/fx/3/", "workflow": "fx",
             "ref": "refs/heads/PR-21", "isTag": False, "pullRequest": "21",
             "pullRequestUrl": "https://git.example.com/fx/pulls/21", "builderId": "https://ci.example.com/job/fx/"},
        ),
        (
            {"DETPACK_CI_RUN_URL": "https://user:pw@ci.internal/runs/4", "DETPACK_CI_REF": "refs/tags/v2",
             "DETPACK_CI_BUILDER_ID": "https://ci.internal/pipelines/release"},
            {"system": "generic", "runUrl": "https://***@ci.internal/runs/4", "ref": "refs/tags/v2", "isTag": True,
             "builderId": "https://ci.internal/pipelines/release"},
        ),
        ({"CI": "true", "HOME": "/root"}, None),
    ],
)  # fmt: skip
def test_each_ci_system_is_read_from_its_own_variables(env: dict[str, str], expected: dict | None) -> None:
    from detpack.build import ci

    found = ci.detect(env)
    assert (found.record() if found is not None else None) == expected
    assert not [k for k in ci.VARIABLES if any(w in k for w in ("TOKEN", "PASSWORD", "SECRET", "CREDENTIAL"))]
