"""The CI recipes in docs/ci run as written: every step of the GitHub Actions workflow and of the GitLab
CI job (read from the YAML), with that CI's variables set, on a tagged git repository of a real project,
against a real store (a directory, and a repository in Debian's docker-registry), through the store's
staging policy. Only the steps that install detpack on the CI's runner are left out (it is on PATH)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import BIN, DETPACK, FIXTURES, ROOT, run, sha256

RECIPES = ROOT / "docs" / "ci"
TAG = "v1.0"


@pytest.fixture(params=["directory", "registry"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "directory":
        yield str(tmp_path / "store")
        return
    registry: str = request.getfixturevalue("registry")
    yield f"oci://{registry}/ci/{tmp_path.name.lower().replace('_', '-')}"


def _project(tmp_path: Path, wheelhouse: Path, env: dict[str, str]) -> tuple[Path, str]:
    """A tagged git repository of fixtures/flit whose build dependencies are locked and offline."""
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "flit", repo)
    with (repo / "pyproject.toml").open("a") as f:
        f.write(f'\n[tool.detpack]\nfind-links = ["{wheelhouse}"]\noffline = true\n')
    git = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    subprocess.run([*git, "-C", repo, "add", "-A"], check=True)
    subprocess.run([*git, "-C", repo, "commit", "-q", "-m", "Release 1.0"], check=True)
    r = run([DETPACK, "lock", repo], env=env)
    assert r.code == 0, r.stderr
    subprocess.run([*git, "-C", repo, "add", "pylock.build.toml"], check=True)
    subprocess.run([*git, "-C", repo, "commit", "-q", "-m", "Lock the build dependencies"], check=True)
    subprocess.run([*git, "-C", repo, "tag", TAG], check=True)
    head = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return repo, head.stdout.strip()


def _store_with_policy(tmp_path: Path, url: str, env: dict[str, str]) -> dict[str, Path]:
    """The admin's part: the builder's and the store's keys, the store, and its staging policy."""
    keys = {}
    for name in ("builder", "store"):
        keys[name] = tmp_path / "keys" / f"{name}.key"
        assert run([DETPACK, "keygen", "-o", keys[name]], env=env).code == 0
    assert run([DETPACK, "store", "--store", url, "init", "--key", keys["store"]], env=env).code == 0
    policy = tmp_path / "keys" / "staging.toml"
    policy.write_text(f'keys = ["{keys["builder"]}.pub"]\n')
    r = run([DETPACK, "store", "--store", url, "--signing-key", keys["store"], "policy", "staging", policy], env=env)
    assert r.code == 0, r.stderr
    return keys


def _sh(script: str, cwd: Path, env: dict[str, str]) -> str:
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, f"{script}\nexit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _base_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "runner-home"
    home.mkdir(exist_ok=True)
    return {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8", "CI": "true"}


def _expression(text: str, context: dict[str, dict[str, str]]) -> str:
    """GitHub's ``${{ secrets.X }}`` / ``${{ vars.X }}``, as the runner substitutes them."""
    return re.sub(r"\$\{\{\s*(\w+)\.(\w+)\s*\}\}", lambda m: context[m[1]][m[2]], text)


def _check_release(url: str, repo: Path, out: str, env: dict[str, str], run_url: str) -> None:
    wheel = next((repo / "dist").glob("*.whl"))
    assert out.strip().splitlines()[-1] == f"sha256:{sha256(wheel)}", out
    shown = json.loads(run([DETPACK, "store", "--store", url, "show", wheel.name, "--json"], env=env).stdout)
    assert shown["live_in"] == ["staging"] and shown["promotions"][0].get("vsa"), shown
    assert shown["provenance"]["signed_by"] and shown["provenance"]["ci"]["runUrl"] == run_url, shown["provenance"]


def test_the_github_actions_workflow_runs_as_written(tmp_path: Path, wheelhouse: Path, store_url: str) -> None:
    env = _base_env(tmp_path)
    repo, head = _project(tmp_path, wheelhouse, env)
    keys = _store_with_policy(tmp_path, store_url, env)
    workflow = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    job = workflow["jobs"]["release"]
    context = {
        "vars": {"DETPACK_STORE": store_url},
        "secrets": {name: keys[key].read_text() for name, key in
                    (("DETPACK_BUILDER_KEY", "builder"), ("DETPACK_STORE_KEY", "store"))},
    }  # fmt: skip
    runner = tmp_path / "runner-temp"
    runner.mkdir()
    github = {
        "GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "org/fx-flit",
        "GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_WORKFLOW": workflow["name"],
        "GITHUB_JOB": "release", "GITHUB_REF": f"refs/tags/{TAG}", "GITHUB_REF_TYPE": "tag", "GITHUB_SHA": head,
        "GITHUB_EVENT_NAME": "push", "GITHUB_ACTOR": "alice", "RUNNER_TEMP": str(runner),
    }  # fmt: skip
    job_env = {k: _expression(str(v), context) for k, v in job.get("env", {}).items()}
    ran, out = 0, ""
    for step in job["steps"]:
        if "uses" in step or step.get("id") == "install":
            continue  # actions/checkout is the repository above; detpack is installed here already
        step_env = {k: _expression(str(v), context) for k, v in step.get("env", {}).items()}
        out = _sh(_expression(step["run"], context), repo, {**env, **github, **job_env, **step_env})
        ran += 1
    assert ran == 5
    _check_release(store_url, repo, out, env, "https://github.com/org/fx-flit/actions/runs/4242/attempts/1")


def test_the_gitlab_ci_job_runs_as_written(tmp_path: Path, wheelhouse: Path, store_url: str) -> None:
    env = _base_env(tmp_path)
    repo, head = _project(tmp_path, wheelhouse, env)
    keys = _store_with_policy(tmp_path, store_url, env)
    job = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())["detpack-release"]
    gitlab = {
        "GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.example", "CI_PROJECT_URL": "https://gitlab.example/org/fx-flit",
        "CI_JOB_URL": "https://gitlab.example/org/fx-flit/-/jobs/77", "CI_JOB_NAME": "detpack-release",
        "CI_PIPELINE_URL": "https://gitlab.example/org/fx-flit/-/pipelines/12", "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_SHA": head, "CI_COMMIT_TAG": TAG, "CI_COMMIT_REF_NAME": TAG, "GITLAB_USER_LOGIN": "alice",
        "CI_PROJECT_DIR": str(repo),
        # CI/CD variables of type File: GitLab writes each to a file and passes its path
        "DETPACK_BUILDER_KEY": str(keys["builder"]), "DETPACK_STORE_KEY": str(keys["store"]),
        "DETPACK_STORE": store_url,
    }  # fmt: skip
    variables = {k: str(v) for k, v in job.get("variables", {}).items()}
    out = ""
    for line in job["script"]:
        out = _sh(line, repo, {**env, **gitlab, **variables})
    assert len(job["script"]) == 6
    _check_release(store_url, repo, out, env, "https://gitlab.example/org/fx-flit/-/jobs/77")
