"""A mutation fuzzer for detpack's archive readers (normalize and diff).

  python fuzz/run.py [--seconds N] [--seed S]

Seeds are valid archives of every kind made here; each round flips, inserts, deletes or
truncates bytes of one, then normalizes it and compares it with its seed. Any exception
that is not a DetpackError is a crash: the input is saved under fuzz/crashes/ (turn it into
a regression test in tests/test_hostile.py) and the run exits 1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import random
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

from repro_zipfile import ReproducibleZipFile

from detpack import DetpackError, NormalizeOptions, compare_paths, normalize_file

HERE = Path(__file__).resolve().parent


def seeds() -> dict[str, bytes]:
    files = {"pkg/__init__.py": b"VALUE = 1\n" * 20, "pkg/data.bin": bytes(range(256)) * 4, "README": b"hello\n"}
    out: dict[str, bytes] = {}
    buf = io.BytesIO()
    # repro-zipfile stamps every member with SOURCE_DATE_EPOCH (zipfile would use the clock), so
    # the seed corpus, and with it a fuzz run from a given seed, is the same bytes every time.
    os.environ["SOURCE_DATE_EPOCH"] = "315532800"
    with ReproducibleZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("demo-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        zf.writestr("demo-1.0.dist-info/RECORD", "")
    out["demo-1.0-py3-none-any.whl"] = buf.getvalue()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(f"demo-1.0/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        link = tarfile.TarInfo("demo-1.0/link")
        link.type, link.linkname = tarfile.SYMTYPE, "README"
        tf.addfile(link)
    out["demo-1.0.tar"] = raw.getvalue()
    out["demo-1.0.tar.gz"] = gzip.compress(raw.getvalue(), mtime=0)
    out["notes.txt.gz"] = gzip.compress(b"some notes\n" * 30, mtime=0)
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if not b:
            break
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.choice([0, 0xFF, 0x7F, 0x80, ord("/"), ord(".")])
        elif op == 2:
            del b[i : i + rng.randint(1, 16)]
        elif op == 3:
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        else:
            del b[rng.randrange(len(b)) :]
    return bytes(b)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    corpus = seeds()
    runs = refused = accepted = 0
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="detpack-fuzz-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        work = Path(tmp)
        originals = {}
        for name, data in corpus.items():
            originals[name] = work / "seeds" / name
            originals[name].parent.mkdir(exist_ok=True)
            originals[name].write_bytes(data)
        while time.monotonic() < deadline:
            name = rng.choice(sorted(corpus))
            data = mutate(corpus[name], rng)
            case = work / "case" / name
            case.parent.mkdir(exist_ok=True)
            case.write_bytes(data)
            out = work / "out" / name
            try:
                normalize_file(case, out, NormalizeOptions(315532800))
                compare_paths(originals[name], case)
                accepted += 1
            except DetpackError:
                refused += 1
            except Exception:  # noqa: BLE001 - this is what the fuzzer looks for
                crashes = HERE / "crashes"
                crashes.mkdir(exist_ok=True)
                saved = crashes / f"{hashlib.sha256(data).hexdigest()[:16]}-{name}"
                saved.write_bytes(data)
                traceback.print_exc()
                print(f"CRASH after {runs} runs (seed {args.seed}): input saved to {saved}", file=sys.stderr)
                return 1
            runs += 1
    rate = runs / args.seconds
    print(
        f"fuzz: {runs} executions in {args.seconds:.0f} s ({rate:.0f}/s), {accepted} accepted, {refused} refused "
        f"with a clear error, 0 crashes (seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
