"""detpack: reproducible, traceable Python release artifacts.

The public API: build a project reproducibly (``build_project``), normalize existing
archives (``normalize_file``), compare two builds (``compare_paths``), check a project
under varied conditions (``run_check``), pack deterministic tarballs, OCI layers and images
and push them by digest (``write_tarball``, ``build_layer``, ``build_image``, ``push_image``),
sign provenance (``sign_file`` and the key helpers), keep releases in a write-once store
(``open_store``, ``verify_store``), and the values and errors they use.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:  # the names below load on first use (PEP 562): `detpack normalize` stays fast
    from detpack.archive.normalize import NormalizeOptions, NormalizeResult, normalize_file
    from detpack.archive.tarball import directory_items, write_tarball
    from detpack.build.config import BuildRequest, FrontendSettings
    from detpack.build.pipeline import BuildResult, BuiltArtifact, build_project
    from detpack.oci.image import ImageSettings, LayerBlob, build_image
    from detpack.oci.layer import Addition, PythonTarget, WheelInput, build_layer
    from detpack.oci.layout import LayoutRef
    from detpack.oci.push import push_image
    from detpack.oci.registry import Registry, RegistryRef
    from detpack.provenance.reader import Envelope
    from detpack.provenance.signing import generate_keypair, load_private_key, load_public_key, sign_file
    from detpack.store import Store, StoreAudit, open_store, verify_store
    from detpack.verify.check import CheckResult, CheckSettings, run_check
    from detpack.verify.compare import Comparison, Difference, FileComparison, compare_paths

from detpack.errors import (
    ArchiveError,
    BackendError,
    ConfigError,
    DetpackError,
    EnvironmentSetupError,
    InputError,
    KeyFileError,
    LockError,
    OutputError,
    RegistryError,
    StoreError,
    StoreRefusedError,
    TagConflictError,
    VerificationError,
)

_LAZY = {
    "CheckResult": "detpack.verify.check",
    "CheckSettings": "detpack.verify.check",
    "run_check": "detpack.verify.check",
    "Comparison": "detpack.verify.compare",
    "Difference": "detpack.verify.compare",
    "FileComparison": "detpack.verify.compare",
    "compare_paths": "detpack.verify.compare",
    "BuildRequest": "detpack.build.config",
    "FrontendSettings": "detpack.build.config",
    "NormalizeOptions": "detpack.archive.normalize",
    "NormalizeResult": "detpack.archive.normalize",
    "normalize_file": "detpack.archive.normalize",
    "BuildResult": "detpack.build.pipeline",
    "BuiltArtifact": "detpack.build.pipeline",
    "build_project": "detpack.build.pipeline",
    "Envelope": "detpack.provenance.reader",
    "generate_keypair": "detpack.provenance.signing",
    "load_private_key": "detpack.provenance.signing",
    "load_public_key": "detpack.provenance.signing",
    "sign_file": "detpack.provenance.signing",
    "Store": "detpack.store",
    "StoreAudit": "detpack.store",
    "open_store": "detpack.store",
    "verify_store": "detpack.store",
    "ImageSettings": "detpack.oci.image",
    "LayerBlob": "detpack.oci.image",
    "build_image": "detpack.oci.image",
    "Addition": "detpack.oci.layer",
    "PythonTarget": "detpack.oci.layer",
    "WheelInput": "detpack.oci.layer",
    "build_layer": "detpack.oci.layer",
    "LayoutRef": "detpack.oci.layout",
    "push_image": "detpack.oci.push",
    "Registry": "detpack.oci.registry",
    "RegistryRef": "detpack.oci.registry",
    "directory_items": "detpack.archive.tarball",
    "write_tarball": "detpack.archive.tarball",
}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detpack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "Addition",
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
    "Envelope",
    "EnvironmentSetupError",
    "FileComparison",
    "FrontendSettings",
    "ImageSettings",
    "InputError",
    "KeyFileError",
    "LayerBlob",
    "LayoutRef",
    "LockError",
    "NormalizeOptions",
    "NormalizeResult",
    "OutputError",
    "PythonTarget",
    "Registry",
    "RegistryError",
    "RegistryRef",
    "Store",
    "StoreAudit",
    "StoreError",
    "StoreRefusedError",
    "TagConflictError",
    "VerificationError",
    "WheelInput",
    "__version__",
    "build_image",
    "build_layer",
    "build_project",
    "compare_paths",
    "directory_items",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "normalize_file",
    "open_store",
    "push_image",
    "run_check",
    "sign_file",
    "verify_store",
    "write_tarball",
]
