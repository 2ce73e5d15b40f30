"""``detpack check``: the raw backend's irreproducibility is traced to the variation that
causes it; detpack's own builds of every fixture are reproducible under all variations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_machines import NG_LIBZ, need_machine
from test_source import COMMIT_TIME, make_repo

from conftest import DETPACK, FIXTURES, MODULES, materialize, require_tool, run, sha256
from detpack.errors import ConfigError
from detpack.verify import variations

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _check(src: Path, wheelhouse: Path, *extra: str | Path) -> tuple[int, list[str], str]:
    require_tool("faketime")
    root = os.environ.get("DETPACK_BUILD_ROOT")
    env = {"DETPACK_BUILD_ROOT": root} if root else {}
    r = run([DETPACK, "check", src, "--find-links", wheelhouse, "--offline", *extra], env=env)
    return r.code, r.stdout.splitlines(), r.stderr


def test_raw_setuptools_names_umask(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    code, out, err = _check(src, wheelhouse, "--raw")
    assert code == 1, err
    assert out[0].startswith("not reproducible (the backend's raw output)")
    culprits = next(line for line in out if line.startswith("responsible variation(s): "))
    assert "umask" in culprits.split(": ", 1)[1].split(", ")
    # setuptools stamps generated members and the gzip header with "now": that shows as
    # noise between two identical builds, attributed to the clock.
    noise = next(line for line in out if line.startswith("differs even between two identical control builds"))
    assert "clock / SOURCE_DATE_EPOCH ignored" in noise
    assert any("mode: 0644 -> 0664" in line and "likely cause: umask" in line for line in out)


def test_raw_flit_without_source_date_epoch_names_timezone(tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    code, out, err = _check(src, wheelhouse, "--raw")
    assert code == 1, err
    assert out[1] == "responsible variation(s): timezone"
    assert any(
        "date_time" in line and "likely cause: timezone; the times differ by exactly +9 h" in line for line in out
    )


@pytest.mark.parametrize("fixture", sorted(MODULES))
def test_detpack_builds_of_every_fixture_are_reproducible(fixture: str, tmp_path: Path, wheelhouse: Path) -> None:
    src = materialize(FIXTURES / fixture, tmp_path / "src", 0o022)
    code, out, err = _check(src, wheelhouse, "--libz", need_machine(NG_LIBZ))  # every variation, libz too
    assert code == 0, "\n".join(out) + err
    assert out[0].startswith("reproducible: 2 builds (detpack build) identical under ")
    assert set(out[0].rsplit(" under ", 1)[1].split(", ")) == set(variations.NAMES)


def test_bad_input(tmp_path: Path) -> None:
    for argv, needle in (
        ([tmp_path / "missing"], "no such file or directory"),
        ([FIXTURES / "no-project"], "no pyproject.toml or setup.py"),
        ([FIXTURES / "flit", "--runs", "1"], "--runs 1"),
        ([FIXTURES / "flit", "--vary", "moon-phase"], "unknown variation(s) moon-phase"),
    ):
        r = run([DETPACK, "check", *argv])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("* ")]
        assert r.code == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_vary_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert variations.select("umask,timezone") == ("umask", "timezone")
    assert "umask" not in variations.select("-umask")
    monkeypatch.setattr(variations, "faketime_library", lambda: None)
    assert "clock" not in variations.select(None)
    assert "clock" in variations.supported()
    with pytest.raises(ConfigError, match="faketime is not installed"):
        variations.select("clock")


def test_git_project_versioned_by_setuptools_scm(tmp_path: Path, wheelhouse: Path) -> None:
    project = make_repo(tmp_path / "repo", "scm", tag="v1.2.3")
    code, out, err = _check(project, wheelhouse, "--vary", "build-path,umask,file-order", "--keep", tmp_path / "keep")
    assert code == 0, "\n".join(out) + err
    assert out[0] == "reproducible: 2 builds (detpack build) identical under build-path, umask, file-order"
    assert f"SOURCE_DATE_EPOCH={COMMIT_TIME} (from git)" in err
    outs = sorted((tmp_path / "keep").glob("out-*"))
    assert len(outs) == 2
    for outdir in outs:
        names = sorted(p.name for p in outdir.iterdir())
        assert names == [
            "fx_scm-1.2.3-py3-none-any.whl",
            "fx_scm-1.2.3.build.log.gz",
            "fx_scm-1.2.3.provenance.json",
            "fx_scm-1.2.3.tar.gz",
        ]
        prov = json.loads((outdir / "fx_scm-1.2.3.provenance.json").read_bytes())
        assert prov["predicate"]["buildDefinition"]["externalParameters"]["sourceDateEpoch"]["value"] == COMMIT_TIME

    # A dirty work tree is checked as it is, uncommitted edits included, and warned about.
    (project / "src" / "fx_scm" / "__init__.py").write_text("EDITED = True\n")
    code, out, err = _check(project, wheelhouse, "--vary", "umask", "--keep", tmp_path / "keep2")
    assert code == 0, "\n".join(out) + err
    assert "the work tree differs from commit" in err and "(1 modified, 0 untracked files" in err
    kept = sorted((tmp_path / "keep2").glob("out-*"))[0]
    wheel = next(kept.glob("fx_scm-*.whl"))
    assert wheel.name.startswith("fx_scm-1.2.4.dev0+"), wheel.name  # setuptools-scm's dirty version


def test_a_pass_through_variable_reaches_the_check_builds(tmp_path: Path, wheelhouse: Path) -> None:
    """Every check build gets the variables ``detpack build`` passes through: PIP_CONSTRAINT
    (which check once dropped) pins setuptools to a version the wheelhouse lacks, so the
    control build fails on exactly that."""
    from detpack import policy

    assert set(policy.PASSTHROUGH_ENV) <= set(variations.CARRIED)
    src = materialize(FIXTURES / "setuptools-basic", tmp_path / "src", 0o022)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("setuptools==0.0.1\n")
    root = os.environ.get("DETPACK_BUILD_ROOT")
    env = {"PIP_CONSTRAINT": str(constraints), **({"DETPACK_BUILD_ROOT": root} if root else {})}
    r = run([DETPACK, "check", src, "--find-links", wheelhouse, "--offline", "--vary", "umask"], env=env)
    assert r.code != 0 and "the control build failed" in r.stderr, r
    assert "setuptools==0.0.1" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["hostname", "uid", "cpus"])
def test_each_sandbox_variation_changes_what_it_names(name: str, tmp_path: Path, wheelhouse: Path) -> None:
    """fixtures/machine-facts writes the host name, uid/gid and CPU count into its wheel: in the
    sandbox they are fixed (two control builds agree), and each variation changes its own line."""
    require_tool("bwrap")
    src = materialize(FIXTURES / "machine-facts", tmp_path / "src", 0o022)
    code, out, err = _check(src, wheelhouse, "--vary", name, "-v")
    assert code == 1, "\n".join(out) + err
    assert out[1] == f"responsible variation(s): {name}", out
    assert not any(line.startswith("differs even between two identical control builds") for line in out), out
    changed = {"hostname": "host detpack", "uid": "ids 1000:1000", "cpus": "cpus "}[name]
    assert any(changed in line for line in out), "\n".join(out)


def test_check_builds_as_the_user_ships_it(tmp_path: Path, wheelhouse: Path) -> None:
    """--pass-env, --lock, -C and --installer reach every build of the check (each build's record says so)."""
    require_tool("bwrap")
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    lock = tmp_path / "pylock.build.toml"
    r = run([DETPACK, "lock", src, "-o", lock, "--find-links", wheelhouse, "--offline", "-q"])
    assert r.code == 0, r.stderr
    keep = tmp_path / "keep"
    argv = [DETPACK, "check", src, "--vary", "umask", "--keep", keep, "--find-links", wheelhouse, "--offline", "-q"]
    argv += ["--pass-env", "FX_CHECK_MARK", "--lock", lock, "-C", "fx-setting=1", "--installer", "pip"]
    r = run(argv, env={"FX_CHECK_MARK": "on"})
    assert r.code == 0, r.stdout + r.stderr
    records = sorted(keep.glob("out-*/*.provenance.json"))
    assert len(records) == 2, records  # the control and the varied build
    for record in records:
        definition = json.loads(record.read_bytes())["predicate"]["buildDefinition"]
        external, internal = definition["externalParameters"], definition["internalParameters"]
        assert internal["environment"].get("FX_CHECK_MARK") == "on", internal["passedThrough"]
        assert external["configSettings"] == {"fx-setting": "1"}, external
        assert external["installer"] == "pip", external
        assert external["lock"]["digest"]["sha256"] == sha256(lock), external

    r = run([DETPACK, "check", src, "--raw", "--lock", lock, "--find-links", wheelhouse, "--offline"])
    assert r.code == 2 and "python -m build (--raw) installs no lock" in r.stderr, r.stderr
