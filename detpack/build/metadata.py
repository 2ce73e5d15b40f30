"""``detpack build --metadata``: the wheel METADATA a build would produce, as build prints it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from detpack.build import environment
from detpack.build.config import BuildRequest, backend_name, resolve
from detpack.build.environment import LineSink
from detpack.build.frontend import wheel_metadata
from detpack.build.session import session
from detpack.build.workspace import lay_out, unpack_sdist
from detpack.errors import ArchiveError


def project_metadata(
    request: BuildRequest,
    *,
    on_line: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> bytes:
    """The METADATA of the wheel ``request`` would build (``python -m build --metadata``)."""
    if request.srcdir.is_file() and request.srcdir.name.endswith(".whl"):
        return _read_wheel_metadata(request.srcdir)
    plan = resolve(request, caller_env=caller_env)
    with session(plan, on_line=on_line) as ses, environment.applied(ses.env):
        if plan.source.kind == "sdist":
            srcdir = unpack_sdist(
                plan.source.path, ses.root.work / "unpacked", plan.source.path, plan.request.sdist_modes_kept
            )
        else:
            srcdir = lay_out(plan.source, ses.root)
        return wheel_metadata(
            srcdir,
            runner=ses.runner,
            settings=plan.frontend,
            env_dir=ses.env_dir("wheel"),
            root=ses.root.root,
            backend=plan.backend or backend_name(srcdir),
            label=plan.source.path,
        )


def _read_wheel_metadata(wheel: Path) -> bytes:
    """A given wheel's METADATA, read as ``archive.small`` reads a member of a hostile archive."""
    from detpack.archive.small import dist_info_member, open_zip_small

    with open_zip_small(wheel) as zf:
        data = dist_info_member(zf, "METADATA", str(wheel))
    if not data:
        raise ArchiveError(f"{wheel}: not a valid wheel: expected one top-level .dist-info/METADATA")
    return data
