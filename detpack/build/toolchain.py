"""What ran the build: the interpreter, zlib, build, pip and detpack itself, and the host.

I/O at the edge: hashes the interpreter binary and detpack's own code; provenance takes the
resulting values.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import sys
import zlib
from pathlib import Path

import detpack
from detpack.archive import codec
from detpack.build.source import Source, tree_digest
from detpack.digest import file_sha256
from detpack.provenance import statement as provenance


def host_facts(source: Source) -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "pythonExecutable": sys.executable,
        "sourcePath": str(source.path),
    }


def capture_toolchain() -> provenance.Toolchain:
    executable = Path(sys.executable).resolve()
    try:
        pip_version: str | None = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        pip_version = None
    return provenance.Toolchain(
        python_implementation=platform.python_implementation(),
        python_version=platform.python_version(),
        python_sha256=file_sha256(executable),
        zlib_version=zlib.ZLIB_RUNTIME_VERSION,
        deflate=codec.check(),
        deflate_package=f"zlib-ng {codec.package_version()}",
        detpack_version=detpack.__version__,
        detpack_sha256=tree_digest(Path(detpack.__file__).parent),
        build_version=importlib.metadata.version("build"),
        pip_version=pip_version,
    )
