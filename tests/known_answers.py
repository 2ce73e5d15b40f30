"""Known answers: canonical outputs of fixed, noisy inputs, the same on every machine.

Run as a script (``python tests/known_answers.py WORKDIR``) it makes the inputs, writes their
canonical forms and prints one JSON object of name -> sha256, importing nothing but
``detpack.archive`` (and zlib-ng): so it runs as well under another libz, or an aarch64
interpreter under qemu, as here. ``tests/test_codec.py`` checks the answers on every run;
``tests/test_machines.py`` checks that other machines give the same ones.

The inputs are noisy on purpose: mixed stored/deflated members written at level 1 by the
running interpreter's zlib, shuffled, with times, comments and extra fields; a tar.gz at
level 9 with owners and pax times. Their own bytes depend on the machine's zlib; the
canonical outputs must not.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import sys
import tarfile
import zipfile
from pathlib import Path

EPOCH = 1_700_000_000

#: sha256 of each canonical output under detpack's policy 5 (zlib-ng 2.3.3).
GOLDEN = {
    "codec": "8a47ff5feef1738d178e0157dfe0e8d76264e6a747210c5d3fa7fc26efaaa6af",
    "gzip": "603ff341dd9ad6ca357d8ae1662a91da46be6b3375787df923f1e1539ca26ad5",
    "tar.gz": "9721f018b0cdf8414405b38edf1509382e82f2dae4605ae4ead4050580ff2c7f",
    "wheel": "c51bbc9ae5245db63f8c7ace9b449d5865b7ebe5a13754b66bc2d3e4f9da3048",
}


def _files() -> dict[str, bytes]:
    rng = random.Random(15)
    text = b"".join(b"def f%d(x):\n    return x * %d  # canonical\n" % (i, i) for i in range(4000))
    return {
        "demo/__init__.py": b"VALUE = 1\n",
        "demo/core.py": text,
        "demo/big.txt": text * 12,  # ~2 MiB: streamed, blocks in parallel
        "demo/noise.bin": bytes(rng.getrandbits(8) for _ in range(300_000)),
        "demo/data.json.gz": gzip.compress(b'{"key": "value"}\n' * 5000, mtime=0),
        "demo/empty.txt": b"",
        "demo/py.typed": b"\n",
    }


def noisy_wheel(path: Path) -> Path:
    files = _files()
    files["demo-1.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
    files["demo-1.0.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kat\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files["demo-1.0.dist-info/RECORD"] = b"stale,,\n"
    rng = random.Random(16)
    names = list(files)
    rng.shuffle(names)
    with zipfile.ZipFile(path, "w") as zf:
        zf.comment = b"noisy"
        for name in names:
            zi = zipfile.ZipInfo(name, (2001, 2, 3, 4, 5, rng.randrange(0, 60, 2)))
            zi.external_attr = (0o100664 if rng.random() < 0.5 else 0o100775) << 16
            zi.extra = b"UT\x05\x00\x01" + rng.getrandbits(32).to_bytes(4, "little")
            zi.compress_type = rng.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
            zf.writestr(zi, files[name], compresslevel=1)
    return path


def noisy_tar_gz(path: Path) -> Path:
    files = _files()
    rng = random.Random(17)
    names = list(files)
    rng.shuffle(names)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in names:
            ti = tarfile.TarInfo(f"demo-1.0/{name}")
            ti.size = len(files[name])
            ti.mtime = 1_000_000_000 + rng.randrange(10**6)
            ti.mode = 0o664
            ti.uid, ti.gid, ti.uname, ti.gname = 1234, 99, "someone", "staff"
            ti.pax_headers = {"atime": "1000000000.5"}
            tf.addfile(ti, io.BytesIO(files[name]))
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9, mtime=1234))
    return path


def answers(work: Path) -> dict[str, str]:
    """Make the inputs in ``work``, write their canonical forms, return name -> sha256."""
    from detpack.archive import codec, gz
    from detpack.archive.normalize import NormalizeOptions, normalize_file

    work.mkdir(parents=True, exist_ok=True)
    options = NormalizeOptions(EPOCH)
    result = {"codec": hashlib.sha256(codec.deflate(codec.known_input())).hexdigest()}
    for name, make in (("wheel", noisy_wheel), ("tar.gz", noisy_tar_gz)):
        src = make(work / ("demo-1.0-py3-none-any.whl" if name == "wheel" else "demo-1.0.tar.gz"))
        result[name] = normalize_file(src, work / "out" / src.name, options).sha256
    out = io.BytesIO()
    with gz.BlockGzipWriter(out, workers=3) as writer:
        writer.write(codec.known_input() * 3)
    result["gzip"] = hashlib.sha256(out.getvalue()).hexdigest()
    return result


if __name__ == "__main__":
    print(json.dumps(answers(Path(sys.argv[1])), sort_keys=True))
