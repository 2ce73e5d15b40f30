"""``detpack build``: every ``python -m build`` option, plus detpack's reproducibility options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from detpack.build.config import BuildRequest, ConfigSettings, Distribution, FrontendSettings
from detpack.build.metadata import project_metadata
from detpack.build.pipeline import build_project
from detpack.cli._output import Output
from detpack.errors import ConfigError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "build",
        help="build an sdist and wheel reproducibly, with provenance",
        description=(
            "Build like `python -m build` (by default the sdist, then the wheel from it), in a controlled "
            "environment; rewrite the outputs into canonical bytes and write "
            "<name>-<version>.provenance.json beside them."
        ),
    )
    _add_distribution_options(p)
    _add_directory_options(p)
    add_backend_options(p)
    _add_environment_options(p)
    _add_report_options(p)
    det = p.add_argument_group("reproducibility")
    _add_reproducibility_options(det)
    _add_dependency_source_options(det)
    _add_sandbox_options(p.add_argument_group("sandbox"))


def _add_sandbox_options(box: argparse._ArgumentGroup) -> None:
    """The bubblewrap sandbox every backend hook runs in (no network; no host files but the system's)."""
    box.add_argument(
        "--allow-network",
        action="store_true",
        default=None,
        help="let the backend reach the network while it builds (recorded; the build is then not hermetic)",
    )
    box.add_argument(
        "--require-clean",
        action="store_true",
        default=None,
        help="refuse to build a git work tree that differs from its commit (dirty)",
    )
    box.add_argument(
        "--require-sandbox",
        action="store_true",
        default=None,
        help="refuse to build where no sandbox can be made (no bubblewrap, no user namespaces)",
    )
    box.add_argument(
        "--toolchain",
        metavar="REF",
        help="build inside this OCI image's system (compilers, headers, Python): oci:DIR[:TAG] or "
        "HOST[:PORT]/REPO[:TAG]@sha256:… (pinned by digest in the record)",
    )
    box.add_argument(
        "--toolchain-python", metavar="PATH", help="the image's interpreter to use (default: its newest python3.X)"
    )
    box.add_argument(
        "--repair",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --toolchain: auditwheel repair a wheel with native code to a manylinux tag (default: on)",
    )


def _add_distribution_options(p: argparse.ArgumentParser) -> None:
    """What to build from, what to build and where to put it (``python -m build``'s own options)."""
    p.add_argument("srcdir", nargs="?", default=".", help="project directory or sdist (.tar.gz); default: .")
    p.add_argument(
        "--sdist",
        "-s",
        dest="distributions",
        action="append_const",
        const="sdist",
        help="build a source distribution (disables the default behaviour)",
    )
    p.add_argument(
        "--wheel",
        "-w",
        dest="distributions",
        action="append_const",
        const="wheel",
        help="build a wheel (disables the default behaviour)",
    )
    p.add_argument("--outdir", "-o", type=Path, help="output directory (default: {srcdir}/dist)")
    p.add_argument(
        "--metadata",
        action="store_true",
        help="print the wheel's metadata as JSON (building it first unless srcdir is a .whl)",
    )


def _add_directory_options(p: argparse.ArgumentParser) -> None:
    """Where the intermediate sdist and the build environment go, instead of detpack's fixed paths."""
    p.add_argument(
        "--sdist-extract-dir",
        type=Path,
        metavar="PATH",
        help="unpack the intermediate sdist here (kept) instead of detpack's fixed path",
    )
    p.add_argument(
        "--env-dir",
        type=Path,
        metavar="PATH",
        help="create the isolated build environment here (must be empty; kept on failure)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="make every build environment afresh and ask the backend for its requirements again "
        "(nothing from detpack's caches; downloads are still reused)",
    )
    p.add_argument(
        "--refresh",
        action="store_true",
        help="resolve unlocked build requirements against the index again (a resolution is otherwise "
        "remembered for 10 minutes, as long as PyPI lets clients cache its answers)",
    )


def add_backend_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The settings passed to the build backend: ``-C`` items or one JSON object, not both."""
    cfg = p.add_mutually_exclusive_group()
    cfg.add_argument(
        "--config-setting",
        "-C",
        dest="config_settings",
        action="append",
        metavar="KEY[=VALUE]",
        help="setting passed to the backend; repeat for several",
    )
    cfg.add_argument("--config-json", metavar="JSON", help="backend settings as a JSON object")


def _add_environment_options(p: argparse.ArgumentParser) -> None:
    """How the build environment is made: the installer, or no isolation, and its constraints."""
    iso = p.add_mutually_exclusive_group()
    iso.add_argument(
        "--installer",
        choices=("pip", "uv"),
        default=None,
        help="installer for the isolated build environment (default: uv when it is installed, else pip)",
    )
    iso.add_argument(
        "--no-isolation",
        "-n",
        action="store_true",
        help="build in the current environment (its packages are recorded without file hashes)",
    )
    p.add_argument(
        "--skip-dependency-check",
        "-x",
        action="store_true",
        help="with --no-isolation, do not check that build dependencies are installed",
    )
    p.add_argument(
        "--dependency-constraints-txt",
        type=Path,
        metavar="PATH",
        help="pip constraints file applied when installing build dependencies",
    )


def _add_report_options(p: argparse.ArgumentParser) -> None:
    """What detpack writes and prints about the build."""
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="write a JSON report of the built artifacts (python -m build's format)",
    )
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("--verbose", "-v", action="count", default=0, help="show backend output")
    verbosity.add_argument("--quiet", "-q", action="count", default=0, help="only print results")


def _add_reproducibility_options(det: argparse._ArgumentGroup) -> None:
    """The build's time, compression and environment (all recorded in the provenance)."""
    det.add_argument(
        "--source-date-epoch",
        metavar="{N,git,sdist}",
        help="SOURCE_DATE_EPOCH: seconds, the last git commit, or the sdist's PKG-INFO time "
        "('unset' leaves it out, only to reproduce a build made without it)",
    )
    det.add_argument(
        "--recompress",
        action="store_true",
        default=None,
        help=argparse.SUPPRESS,  # always on since policy 5 (every member is re-deflated); kept for old scripts
    )
    det.add_argument(
        "--pass-env",
        action="append",
        default=[],
        metavar="NAME",
        help="also pass NAME from the environment to the build (recorded)",
    )


def _add_dependency_source_options(det: argparse._ArgumentGroup) -> None:
    """Where build dependencies come from, and the key the provenance is signed with."""
    det.add_argument(
        "--find-links",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="look for build dependencies in DIR (pip --find-links)",
    )
    det.add_argument(
        "--lock",
        type=Path,
        metavar="FILE",
        help="install exactly the build dependencies in this PEP 751 lock (detpack lock), hash-checked",
    )
    det.add_argument(
        "--lock-any",
        action="store_true",
        help="use the --lock even if it was made for another project (recorded in the provenance)",
    )
    det.add_argument(
        "--offline", action="store_true", default=None, help="do not use a package index (only --find-links)"
    )
    det.add_argument(
        "--sbom",
        action="store_true",
        help="also write the build's SBOMs beside it (NAME-VERSION.cdx.json, NAME-VERSION.spdx.json; see detpack sbom)",
    )
    det.add_argument(
        "--sbom-in-wheel",
        action="store_true",
        help="put a CycloneDX SBOM inside each wheel (.dist-info/sboms/detpack.cdx.json, PEP 770); "
        "the wheel stays canonical and the provenance records it",
    )
    det.add_argument(
        "--sign",
        type=Path,
        metavar="KEY",
        help="sign the provenance with this ed25519 key (writes NAME.intoto.jsonl beside it)",
    )


def config_settings(args: argparse.Namespace) -> ConfigSettings:
    if args.config_json is not None:
        try:
            value = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config-json: invalid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ConfigError("--config-json: must be a JSON object, not a list or a scalar")
        return value
    return parse_config_settings(args.config_settings or [])


def parse_config_settings(items: list[str]) -> ConfigSettings:
    """``-C KEY=VALUE`` items as build reads them: a repeated key collects a list."""
    settings: dict[str, str | list[str]] = {}
    for item in items:
        key, _, value = item.partition("=")
        existing = settings.get(key)
        if existing is None:
            settings[key] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            settings[key] = [existing, value]
    return settings


def _write_report(path: Path, artifacts: list[tuple[str, Path, str, int, str]]) -> None:
    from detpack.atomic import write_bytes

    report = {
        "version": "1.0",
        "artifacts": [
            {"name": name, "path": str(p), "kind": kind, "size": size, "hashes": {"sha256": digest}}
            for name, p, kind, size, digest in artifacts
        ],
    }
    write_bytes(path, (json.dumps(report, indent=2) + "\n").encode("utf-8"))


def _check_combinations(args: argparse.Namespace) -> None:
    if args.metadata and (args.distributions or args.report or args.sign or args.sbom or args.sbom_in_wheel):
        raise ConfigError("--metadata: not allowed with --sdist, --wheel, --report, --sign, --sbom or --sbom-in-wheel")
    if args.env_dir is not None and args.no_isolation:
        raise ConfigError("--env-dir: not allowed with --no-isolation")
    src = Path(args.srcdir)
    if src.name.endswith(".whl") and not args.metadata:
        raise ConfigError(f"{src}: a wheel can only be read with --metadata; it cannot be built from")


def run(args: argparse.Namespace, out: Output) -> int:
    _check_combinations(args)
    signing_key = None
    if args.sign is not None:
        from detpack.provenance.signing import load_private_key

        signing_key = load_private_key(args.sign)  # a bad key fails before anything is built
    request = _build_request(args)
    if args.metadata:
        import packaging.metadata

        raw = project_metadata(request, on_line=out.line)
        parsed, _ = packaging.metadata.parse_email(raw)
        out.result(json.dumps(parsed, ensure_ascii=False, indent=2))
        return 0
    extras = None
    if args.sbom_in_wheel:
        from detpack.sbom import in_wheel

        extras = in_wheel
    result = build_project(request, on_line=out.line, on_step=out.step, on_warning=out.warning, wheel_extras=extras)
    out.step(f"SOURCE_DATE_EPOCH={result.epoch.value} (from {result.epoch.origin})")
    for artifact in result.artifacts:
        note = "" if artifact.sha256 == artifact.backend_sha256 else " (normalized)"
        out.result(f"{artifact.path}  sha256:{artifact.sha256}{note}")
    if result.log is not None:
        out.result(f"{result.log}  build log")
    out.result(f"{result.provenance}  provenance")
    if args.sbom:
        from detpack.sbom.files import write_all

        for label, written in write_all(result.provenance)[0]:
            out.result(f"{written}  {label} SBOM")
    if signing_key is not None:
        from detpack.provenance.signing import sign_file

        envelope = sign_file(result.provenance, signing_key)
        out.result(f"{envelope}  signed provenance (keyid {signing_key.public.keyid})")
    if args.report is not None:
        _write_report(
            args.report,
            [(a.path.name, a.path, a.distribution, a.size, a.sha256) for a in result.artifacts],
        )
    names = " and ".join(a.path.name for a in result.artifacts)
    out.success(f"Successfully built {names}")
    return 0


def _load_toolchain(given: str, python: str | None) -> Any:
    from detpack.oci.toolchain import load

    return load(given, python)


def _build_request(args: argparse.Namespace) -> BuildRequest:
    distributions: tuple[Distribution, ...] | None = None
    if args.distributions:
        distributions = tuple(dict.fromkeys(args.distributions))
    return BuildRequest(
        srcdir=Path(args.srcdir),
        outdir=args.outdir,
        distributions=distributions,
        frontend=FrontendSettings(
            config_settings=config_settings(args),
            isolation=not args.no_isolation,
            installer=args.installer,
            skip_dependency_check=args.skip_dependency_check,
            constraints=args.dependency_constraints_txt,
            resolution_ttl=0 if getattr(args, "refresh", False) else 600.0,
        ),
        epoch_spec=args.source_date_epoch,
        pass_env=tuple(args.pass_env),
        find_links=tuple(args.find_links),
        offline=args.offline,
        env_dir=args.env_dir,
        sdist_extract_dir=args.sdist_extract_dir,
        lock=args.lock,
        lock_any=args.lock_any,
        allow_network=args.allow_network,
        require_sandbox=args.require_sandbox,
        require_clean=args.require_clean,
        cache=not args.no_cache,
        toolchain=args.toolchain,
        toolchain_python=args.toolchain_python,
        toolchain_loader=_load_toolchain,
        repair=args.repair,
    )
