"""detpack: reproducible, traceable Python release artifacts.

The public API: build a project reproducibly (``build_project``), normalize existing
archives (``normalize_file``), compare two builds (``compare_paths``), check a project
under varied conditions (``run_check``), and the values and errors they use.
"""

from detpack.check import CheckResult, CheckSettings, run_check
from detpack.compare import Comparison, Difference, FileComparison, compare_paths
from detpack.config import BuildRequest
from detpack.errors import (
    ArchiveError,
    BackendError,
    ConfigError,
    DetpackError,
    EnvironmentSetupError,
    InputError,
    OutputError,
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
    "CheckResult",
    "CheckSettings",
    "Comparison",
    "ConfigError",
    "DetpackError",
    "Difference",
    "EnvironmentSetupError",
    "FileComparison",
    "FrontendSettings",
    "InputError",
    "NormalizeOptions",
    "NormalizeResult",
    "OutputError",
    "VerificationError",
    "__version__",
    "build_project",
    "compare_paths",
    "normalize_file",
    "run_check",
]
