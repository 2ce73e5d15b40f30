"""``detpack build --metadata``: the wheel METADATA a build would produce, as build prints it."""

from __future__ import annotations

import zipfile
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
            backend=plan.backend or backend_name(srcdir),
            label=plan.source.path,
        )


def _read_wheel_metadata(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise ArchiveError(f"{wheel}: not a valid wheel: expected one .dist-info/METADATA, found {len(names)}")
            return zf.read(names[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{wheel}: corrupt or unreadable wheel ({exc})") from None
