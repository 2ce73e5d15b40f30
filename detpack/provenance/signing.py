"""ed25519 keys, and signing and verifying DSSE envelopes over detpack's canonical JSON.

Invariants: the signed bytes are the payload exactly as carried in the envelope (for a
provenance statement, its canonical JSON: what ``detpack build`` writes); signatures are over
DSSE's pre-authentication encoding of (payloadType, payload); a key's ``keyid`` is the one
securesystemslib 1.x computes for an ed25519 ``SSlibKey`` (sha256 of the canonical JSON of
``{"keytype", "scheme", "keyval": {"public": hex}}``), so the in-toto tooling finds our
signatures by keyid. Private keys are PKCS#8 PEM files with mode 0600, never overwritten.
Envelopes are values of ``reader`` (which parses them); this module signs and verifies them.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from detpack.digest import CanonicalJSONError, canonical_json
from detpack.errors import InputError, KeyFileError, OutputError, VerificationError
from detpack.provenance import reader
from detpack.provenance.reader import PAYLOAD_TYPE, Envelope, Signature

KEY_TYPE = "ed25519"
SCHEME = "ed25519"


@dataclass(frozen=True)
class PublicKey:
    """An ed25519 public key: its 32 raw bytes."""

    raw: bytes

    @property
    def keyid(self) -> str:
        # securesystemslib's compute_default_keyid: sha256 over its canonical JSON of the key
        # dict. For these ASCII-only values its encoding and ours are the same bytes (a test
        # checks against the library).
        key = {"keytype": KEY_TYPE, "scheme": SCHEME, "keyval": {"public": self.raw.hex()}}
        return hashlib.sha256(canonical_json(key)).hexdigest()

    def pem(self) -> bytes:
        return self._crypto().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._crypto().verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def _crypto(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)


@dataclass(frozen=True)
class PrivateKey:
    """An ed25519 private key (the 32-byte seed) and the file it came from."""

    seed: bytes

    @property
    def public(self) -> PublicKey:
        raw = self._crypto().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey(raw)

    def sign(self, data: bytes) -> bytes:
        return self._crypto().sign(data)

    def pem(self) -> bytes:
        return self._crypto().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def _crypto(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @classmethod
    def generate(cls) -> PrivateKey:
        key = Ed25519PrivateKey.generate()
        return cls(
            key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        )


def _public_key_path(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def _create_exclusive(target: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``target`` with ``mode``: complete or absent, never overwriting."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".detpack-tmp-{os.getpid()}-{target.name}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, target)  # fails if target exists: no overwrite, even in a race
    except FileExistsError:
        raise OutputError(f"{target}: already exists; refusing to overwrite a key (choose another path)") from None
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc}); no key was written") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_keypair(key: PrivateKey, private: Path) -> Path:
    """Write ``private`` (PEM, 0600) and its public key beside it; return the public key's path."""
    public = _public_key_path(private)
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path}: already exists; refusing to overwrite a key (choose another path)")
    _create_exclusive(private, key.pem(), 0o600)
    try:
        _create_exclusive(public, key.public.pem(), 0o644)
    except OutputError:
        private.unlink()
        raise
    return public


def generate_keypair(private: Path) -> tuple[PrivateKey, Path]:
    key = PrivateKey.generate()
    return key, write_keypair(key, private)


def _read_key_file(path: Path) -> bytes:
    from detpack.atomic import read_input

    return read_input(path, "key file", KeyFileError)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No library warnings: cryptography 51 deprecates DSA and finite-field DH, and reading such a
    key, or naming its kind, only to refuse it in one line is no use of either."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _key_kind(key: object) -> str:
    """``an RSA key``, ``an ECDSA key``, ``a DSA key``: the kind of ``key`` with its article."""
    from cryptography.hazmat.primitives.asymmetric import dh, dsa, ec, ed448, rsa, x448, x25519

    with _quiet():
        kinds: tuple[tuple[tuple[type, ...], str], ...] = (
            ((rsa.RSAPrivateKey, rsa.RSAPublicKey), "an RSA key"),
            ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), "an ECDSA key"),
            ((dsa.DSAPrivateKey, dsa.DSAPublicKey), "a DSA key"),
            ((dh.DHPrivateKey, dh.DHPublicKey), "a DH key"),
            ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), "an Ed448 key"),
            ((x25519.X25519PrivateKey, x25519.X25519PublicKey), "an X25519 key"),
            ((x448.X448PrivateKey, x448.X448PublicKey), "an X448 key"),
        )
    for classes, phrase in kinds:
        if isinstance(key, classes):
            return phrase
    return f"a key of another kind ({type(key).__name__})"


def _private_of(public: Path) -> str:
    if public.name.endswith(".pub"):
        return str(public.with_name(public.name.removesuffix(".pub")))
    return "the key file it was made with"


def _public_of(private: Path) -> str:
    return str(_public_key_path(private))


def load_private_key(path: Path) -> PrivateKey:
    data = _read_key_file(path)
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{path} is a public key; sign with the private key ({_private_of(path)})")
    try:
        with _quiet():  # a DSA key read only to be refused by name
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{path}: the key is encrypted; detpack needs an unencrypted ed25519 PEM key") from None
    except (ValueError, binascii.Error):
        raise KeyFileError(f"{path}: not a PEM private key (make one with `detpack keygen -o {path}`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: {_key_kind(key)}; detpack signs with ed25519 keys (detpack keygen)")
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return PrivateKey(seed)


def load_public_key(path: Path, *, private_ok: bool = True) -> PublicKey:
    """A PEM public key; a private key's public half unless ``private_ok`` is False.

    ``detpack verify`` passes False: an auditor must never need the signer's secret, and a
    private key given where a public one belongs is most likely a mistake worth stopping.
    """
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        if not private_ok:
            raise KeyFileError(
                f"{path} is a private key; verify with its public key ({_public_of(path)}): "
                "checking a signature never needs the secret"
            )
        return load_private_key(path).public
    return parse_public_key(data, path)


def parse_public_key(data: bytes, source: Path | str) -> PublicKey:
    try:
        with _quiet():
            key = serialization.load_pem_public_key(data)
    except (ValueError, binascii.Error):
        raise KeyFileError(f"{source}: not a PEM public key (detpack keygen writes one as KEY.pub)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source}: {_key_kind(key)}; detpack verifies ed25519 keys (detpack keygen)")
    return PublicKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign(payload: bytes, key: PrivateKey, payload_type: str = PAYLOAD_TYPE) -> Envelope:
    signature = Signature(key.public.keyid, key.sign(pae(payload_type, payload)))
    return Envelope(payload, payload_type, (signature,))


def signed_by(envelope: Envelope, key: PublicKey) -> bool:
    """Whether one of the envelope's signatures verifies with ``key``."""
    message = pae(envelope.payload_type, envelope.payload)
    # keyid is only a hint (DSSE): try every signature, matching keyids first.
    ordered = sorted(envelope.signatures, key=lambda s: s.keyid != key.keyid)
    return any(key.verify(s.sig, message) for s in ordered)


def verify(envelope: Envelope, key: PublicKey, source: Path | str = "envelope") -> bytes:
    """Return the payload if a signature verifies with ``key``; else raise VerificationError."""
    if not envelope.signatures:
        raise VerificationError(f"{source}: the envelope carries no signature")
    if signed_by(envelope, key):
        return envelope.payload
    signers = ", ".join(sorted({s.keyid[:16] or "?" for s in envelope.signatures}))
    raise VerificationError(
        f"{source}: no signature verifies with key {key.keyid[:16]} (signed by keyid {signers}); "
        "the payload was changed or another key signed it"
    )


def _statement_payload(data: bytes, source: Path) -> bytes:
    """The canonical bytes of an in-toto statement file (what gets signed): the file's own bytes
    when detpack wrote it (they are canonical already), else the statement re-serialised."""
    provenance = reader.read(data, source)
    assert provenance.envelope is None
    try:
        canonical = canonical_json(provenance.statement)
    except CanonicalJSONError as exc:
        raise InputError(f"{source}: cannot be written as RFC 8785 canonical JSON ({exc})") from None
    return data if data == canonical else canonical


def envelope_path(provenance: Path) -> Path:
    name = provenance.name
    for suffix in (".provenance.json", ".json"):
        if name.endswith(suffix):
            return provenance.with_name(name.removesuffix(suffix) + ".intoto.jsonl")
    return provenance.with_name(name + ".intoto.jsonl")


def cosign(envelope: Envelope, key: PrivateKey, source: Path | str) -> Envelope:
    """``envelope`` with one more signature, by ``key``, over the same payload (a threshold of signers)."""
    if any(s.keyid == key.public.keyid for s in envelope.signatures):
        raise InputError(f"{source}: already signed by keyid {key.public.keyid[:16]}; a key signs once")
    signature = Signature(key.public.keyid, key.sign(pae(envelope.payload_type, envelope.payload)))
    return Envelope(envelope.payload, envelope.payload_type, (*envelope.signatures, signature))


def sign_file(provenance: Path, key: PrivateKey, output: Path | None = None) -> Path:
    """Sign a provenance file; write the envelope (default: ``NAME.intoto.jsonl`` beside it).

    Given an envelope already, add ``key``'s signature to it (written in place unless ``output``)."""
    from detpack.atomic import read_input, write_bytes

    data = read_input(provenance)
    found = reader.read(data, provenance)
    if found.envelope is not None:
        target = output or provenance
        write_bytes(target, cosign(found.envelope, key, provenance).to_json())
        return target
    target = output or envelope_path(provenance)
    write_bytes(target, sign(_statement_payload(data, provenance), key).to_json())
    return target
