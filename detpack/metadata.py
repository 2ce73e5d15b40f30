"""``detpack build --metadata``: the wheel METADATA a build would produce, as build prints it."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

from detpack import environment
from detpack.config import BuildRequest, load_tool_config
from detpack.environment import LineSink, Runner
from detpack.errors import ArchiveError
from detpack.frontend import wheel_metadata
from detpack.layout import lay_out, unpack_sdist
from detpack.source import inspect_source, resolve_epoch


def project_metadata(
    request: BuildRequest,
    *,
    on_line: LineSink | None = None,
    caller_env: Mapping[str, str] | None = None,
) -> bytes:
    """The METADATA of the wheel ``request`` would build (``python -m build --metadata``)."""
    if request.srcdir.is_file() and request.srcdir.name.endswith(".whl"):
        return read_wheel_metadata(request.srcdir)
    caller_env = dict(os.environ if caller_env is None else caller_env)
    source = inspect_source(request.srcdir)
    tool = load_tool_config(source.path)
    epoch = resolve_epoch(request.epoch_spec or tool.epoch_spec, caller_env, source)
    offline = tool.offline if request.offline is None else request.offline
    with environment.build_root() as root:
        env = environment.controlled_environment(
            epoch=epoch.value,
            root=root,
            caller_env=caller_env,
            pass_env=(*tool.pass_env, *request.pass_env),
            find_links=(*tool.find_links, *request.find_links),
            offline=offline,
        )
        runner = Runner(env, on_line)
        with environment.applied(env):
            if source.kind == "sdist":
                srcdir = unpack_sdist(source.path, root.work / "unpacked", source.path)
            else:
                srcdir = lay_out(source, root)
            return wheel_metadata(
                srcdir,
                runner=runner,
                settings=request.frontend,
                env_dir=request.env_dir or root.env_dir("wheel"),
                label=source.path,
            )


def read_wheel_metadata(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise ArchiveError(
                    f"{wheel}: not a valid wheel: expected one .dist-info/METADATA, found {len(names)}"
                )
            return zf.read(names[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{wheel}: corrupt or unreadable wheel ({exc})") from None
