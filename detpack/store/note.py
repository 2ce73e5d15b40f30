"""C2SP signed notes, checkpoints and cosignatures: the store's tree heads in the standard form.

- ``signed-note`` (c2sp.org/signed-note): a UTF-8 text ending in a newline, a blank line, then
  one or more signature lines ``— NAME base64(key hash || signature)``. The key hash is the
  first four bytes of SHA-256(NAME || "\\n" || algorithm byte || public key); a verifier key
  (vkey) is ``NAME+HEX8+base64(algorithm byte || public key)``. Ed25519 is algorithm 0x01 and
  signs the text itself.
- ``tlog-checkpoint`` (c2sp.org/tlog-checkpoint): the note text ``ORIGIN\\nSIZE\\nbase64(ROOT)\\n``,
  signed by the log under a key named after its origin.
- ``tlog-cosignature`` v1 (c2sp.org/tlog-cosignature): a witness's Ed25519 note signature with
  algorithm byte 0x04; the signature is an 8-byte big-endian timestamp followed by an Ed25519
  signature over ``cosignature/v1\\ntime T\\n`` + the checkpoint text.

Go's ``golang.org/x/mod/sumdb/note`` opens these notes (a test checks it). Pure: bytes in,
values out; ValueError for anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from detpack.provenance.signing import PrivateKey, PublicKey

SIGNATURE_PREFIX = "\u2014 "
ED25519 = 0x01
COSIGNATURE_V1 = 0x04
_ALGORITHMS = {ED25519: "Ed25519 note key", COSIGNATURE_V1: "Ed25519 cosignature/v1 key"}


def valid_name(name: str) -> bool:
    """A key name: not empty, no whitespace, no ``+`` (the signed-note rule)."""
    return bool(name) and not re.search(r"\s|\+", name)


def key_hash(name: str, algorithm: int, raw: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([algorithm]) + raw).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A named public key: the log's (algorithm 0x01) or a witness's (0x04)."""

    name: str
    algorithm: int
    key: PublicKey

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.algorithm, self.key.raw)

    def text(self) -> str:
        encoded = base64.b64encode(bytes([self.algorithm]) + self.key.raw).decode("ascii")
        return f"{self.name}+{self.hash.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not valid_name(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise ValueError("not a verifier key (NAME+HASH+KEY)")
        try:
            material = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise ValueError("its key is not base64") from None
        if len(material) != 33 or material[0] not in _ALGORITHMS:
            raise ValueError("not an Ed25519 note or cosignature/v1 key")
        vkey = cls(parts[0], material[0], PublicKey(material[1:]))
        if vkey.hash.hex() != parts[1]:
            raise ValueError(f"its key hash {parts[1]} is not the hash of its name and key ({vkey.hash.hex()})")
        return vkey


@dataclass(frozen=True)
class Signature:
    """One signature line of a note."""

    name: str
    hash: bytes  # 4 bytes
    signature: bytes  # what follows the key hash

    def line(self) -> str:
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(self.hash + self.signature).decode('ascii')}\n"

    @classmethod
    def parse_line(cls, line: str) -> Signature:
        if not line.startswith(SIGNATURE_PREFIX):
            raise ValueError("a signature line does not start with an em dash and a space")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError(f"the signature of {name} is not base64") from None
        if not valid_name(name) or len(raw) < 5:
            raise ValueError("a signature line is malformed")
        return cls(name, raw[:4], raw[4:])

    @property
    def timestamp(self) -> int | None:
        """A cosignature's time (seconds since the epoch); None for a plain signature."""
        return int.from_bytes(self.signature[:8], "big") if len(self.signature) == 72 else None


@dataclass(frozen=True)
class Note:
    text: str  # ends with a newline
    signatures: tuple[Signature, ...]

    def encode(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")

    def by(self, vkey: VerifierKey) -> Signature | None:
        """The signature ``vkey`` names (by name and key hash), whether or not it verifies."""
        return next((s for s in self.signatures if s.name == vkey.name and s.hash == vkey.hash), None)

    def verified_by(self, vkey: VerifierKey) -> bool:
        sig = self.by(vkey)
        return sig is not None and verifies(vkey, self.text, sig)

    def with_signatures(self, extra: tuple[Signature, ...]) -> Note:
        known = {s.line() for s in self.signatures}
        return Note(self.text, (*self.signatures, *(s for s in extra if s.line() not in known)))

    @classmethod
    def parse(cls, data: bytes) -> Note:
        try:
            message = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not UTF-8") from None
        if any(ord(c) < 0x20 and c != "\n" for c in message):
            raise ValueError("holds control characters")
        text, sep, sigs = message.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise ValueError("no signature block after a blank line")
        signatures = tuple(Signature.parse_line(line) for line in sigs[:-1].split("\n"))
        return cls(text + "\n", signatures)


def sign(text: str, name: str, key: PrivateKey) -> Signature:
    return Signature(name, key_hash(name, ED25519, key.public.raw), key.sign(text.encode("utf-8")))


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: PrivateKey, timestamp: int) -> Signature:
    signed = key.sign(_cosigned_message(text, timestamp))
    return Signature(name, key_hash(name, COSIGNATURE_V1, key.public.raw), timestamp.to_bytes(8, "big") + signed)


def verifies(vkey: VerifierKey, text: str, sig: Signature) -> bool:
    if sig.name != vkey.name or sig.hash != vkey.hash:
        return False
    if vkey.algorithm == ED25519:
        return len(sig.signature) == 64 and vkey.key.verify(sig.signature, text.encode("utf-8"))
    timestamp = sig.timestamp
    if timestamp is None or timestamp >= 2**63:
        return False
    return vkey.key.verify(sig.signature[8:], _cosigned_message(text, timestamp))


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def parse_checkpoint_text(text: str) -> tuple[str, int, bytes]:
    """(origin, size, root) of a checkpoint body (extension lines are not written by detpack: refused)."""
    lines = text.split("\n")
    if len(lines) != 4 or lines[3] != "":
        raise ValueError("not a checkpoint body (origin, size, root hash)")
    origin, size, root = lines[:3]
    if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size):
        raise ValueError(f"tree size {size!r} is not a decimal")
    try:
        digest = base64.b64decode(root, validate=True)
    except binascii.Error:
        raise ValueError("its root hash is not base64") from None
    if len(digest) != 32 or not origin:
        raise ValueError("not a checkpoint body (origin, size, root hash)")
    return origin, int(size), digest
