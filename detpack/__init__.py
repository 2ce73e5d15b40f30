"""detpack: reproducible, traceable Python release artifacts.

The public API: build a project reproducibly (``build_project``), normalize existing
archives (``normalize_file``), and the values and errors they use.
"""

from detpack.config import BuildRequest
from detpack.errors import (
    ArchiveError,
    BackendError,
    ConfigError,
    DetpackError,
    EnvironmentSetupError,
    InputError,
    VerificationError,
)
from detpack.frontend import FrontendSettings
from detpack.normalize import NormalizeOptions, NormalizeResult, normalize_file
from detpack.pipeline import BuildResult, BuiltArtifact, build_project

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "BackendError",
    "BuildRequest",
    "BuildResult",
    "BuiltArtifact",
    "ConfigError",
    "DetpackError",
    "EnvironmentSetupError",
    "FrontendSettings",
    "InputError",
    "NormalizeOptions",
    "NormalizeResult",
    "VerificationError",
    "__version__",
    "build_project",
    "normalize_file",
]
