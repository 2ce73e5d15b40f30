"""Keys, DSSE envelopes and `detpack verify`, checked against securesystemslib (in-toto's library)."""

from __future__ import annotations

import base64
import json
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, rsa, x25519
from securesystemslib.dsse import Envelope as SSlibEnvelope
from securesystemslib.exceptions import VerificationError as SSlibVerificationError
from securesystemslib.signer import SSlibKey

from conftest import DETPACK, FIXTURES, materialize, run, sha256
from detpack.digest import canonical_json
from detpack.errors import VerificationError
from detpack.provenance import reader, signing


def _statement(artifact: Path, commit: str = "0123456789abcdef0123456789abcdef01234567") -> bytes:
    value = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": artifact.name, "digest": {"sha256": sha256(artifact)}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {"externalParameters": {"source": {"digest": {"gitCommit": commit}}}},
            "runDetails": {"builder": {"id": "https://detpack.dev/builders/local/v1"}},
        },
    }
    return canonical_json(value)


@pytest.fixture
def signed(tmp_path: Path) -> dict[str, Path]:
    artifact = tmp_path / "demo-1.0-py3-none-any.whl"
    artifact.write_bytes(b"not really a wheel")
    prov = tmp_path / "demo-1.0.provenance.json"
    prov.write_bytes(_statement(artifact))
    assert run([DETPACK, "keygen", "-o", tmp_path / "key"]).code == 0
    r = run([DETPACK, "sign", prov, "--key", tmp_path / "key"])
    assert r.code == 0, r.stderr
    return {"artifact": artifact, "prov": prov, "key": tmp_path / "key", "envelope": tmp_path / "demo-1.0.intoto.jsonl"}


def _sslib_key(pub: Path) -> SSlibKey:
    return SSlibKey.from_crypto(serialization.load_pem_public_key(pub.read_bytes()))


def test_keygen_writes_a_0600_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    r = run([DETPACK, "keygen", "-o", tmp_path / "k"], umask=0)
    assert r.code == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "k.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = (tmp_path / "k").read_bytes()
    r = run([DETPACK, "keygen", "-o", tmp_path / "k"])
    assert r.code == 2
    assert "already exists; refusing to overwrite" in r.stderr
    assert (tmp_path / "k").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]


def test_keyid_is_the_one_securesystemslib_computes(signed: dict[str, Path]) -> None:
    ours = signing.load_public_key(Path(f"{signed['key']}.pub"))
    assert ours.keyid == _sslib_key(Path(f"{signed['key']}.pub")).keyid


def test_envelope_verifies_with_securesystemslib(signed: dict[str, Path]) -> None:
    line = signed["envelope"].read_bytes()
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    envelope = SSlibEnvelope.from_dict(json.loads(line))
    assert envelope.payload_type == "application/vnd.in-toto+json"
    assert envelope.payload == signed["prov"].read_bytes()  # the exact canonical bytes
    accepted = envelope.verify([_sslib_key(Path(f"{signed['key']}.pub"))], 1)
    assert list(accepted) == [signing.load_public_key(signed["key"]).keyid]


def test_a_changed_payload_byte_or_another_key_fails_securesystemslib(signed: dict[str, Path], tmp_path: Path) -> None:
    value = json.loads(signed["envelope"].read_bytes())
    payload = bytearray(base64.b64decode(value["payload"]))
    payload[10] ^= 1
    tampered = {**value, "payload": base64.b64encode(bytes(payload)).decode()}
    with pytest.raises(SSlibVerificationError):
        SSlibEnvelope.from_dict(json.loads(json.dumps(tampered))).verify([_sslib_key(Path(f"{signed['key']}.pub"))], 1)
    assert run([DETPACK, "keygen", "-o", tmp_path / "other"]).code == 0
    other = _sslib_key(tmp_path / "other.pub")
    forged = {**value, "signatures": [{**value["signatures"][0], "keyid": other.keyid}]}
    with pytest.raises(SSlibVerificationError):
        SSlibEnvelope.from_dict(forged).verify([other], 1)
    # and detpack's own verifier agrees
    with pytest.raises(VerificationError):
        signing.verify(
            reader.Envelope.parse(json.dumps(tampered).encode(), "t"), signing.load_public_key(signed["key"])
        )


def test_verify_passes_and_applies_the_policy(signed: dict[str, Path]) -> None:
    base = [DETPACK, "verify", signed["artifact"], "--provenance", signed["envelope"], "--key", f"{signed['key']}.pub"]
    r = run(base)
    assert r.code == 0, r.stderr
    assert r.stdout.startswith("verified  ")
    assert run([*base, "--source-commit", "0123456789ab"]).code == 0
    r = run([*base, "--source-commit", "fedcba9876"])
    assert r.code == 1 and "source commit is 0123456789" in r.stderr
    r = run([*base, "--builder", "https://example.com/other"])
    assert r.code == 1 and "builder is" in r.stderr
    assert run([*base, "--builder", "https://detpack.dev/builders/local/v1"]).code == 0
    r = run([*base, "--source-commit", "0123"])
    assert r.code == 2 and "expected 7 to 64 hex digits" in r.stderr


def test_verify_refuses_an_artifact_that_is_not_a_subject(signed: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.whl"
    other.write_bytes(b"different bytes")
    r = run([DETPACK, "verify", other, "--provenance", signed["envelope"], "--key", f"{signed['key']}.pub"])
    assert r.code == 1
    assert "is not a subject of the provenance" in r.stderr


def test_verify_fails_with_another_key_or_a_changed_envelope(signed: dict[str, Path], tmp_path: Path) -> None:
    assert run([DETPACK, "keygen", "-o", tmp_path / "other"]).code == 0
    r = run(
        [DETPACK, "verify", signed["artifact"], "--provenance", signed["envelope"], "--key", tmp_path / "other.pub"]
    )
    assert r.code == 1 and "no signature verifies" in r.stderr
    value = json.loads(signed["envelope"].read_bytes())
    sig = bytearray(base64.b64decode(value["signatures"][0]["sig"]))
    sig[0] ^= 1
    value["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    changed = tmp_path / "changed.intoto.jsonl"
    changed.write_text(json.dumps(value))
    r = run([DETPACK, "verify", signed["artifact"], "--provenance", changed, "--key", f"{signed['key']}.pub"])
    assert r.code == 1


def test_an_unsigned_statement_is_not_verified(signed: dict[str, Path]) -> None:
    r = run([DETPACK, "verify", signed["artifact"], "--provenance", signed["prov"], "--key", f"{signed['key']}.pub"])
    assert r.code == 1
    assert "unsigned statement" in r.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"not json at all", "not JSON"),
        (b'{"payload": "!!", "payloadType": "x", "signatures": []}', "corrupt DSSE envelope"),
        (b'{"payload": "e30="}', "not a DSSE envelope"),
        (b"", "is empty"),
    ],
)
def test_bad_envelopes_are_input_errors(
    signed: dict[str, Path], tmp_path: Path, content: bytes | None, message: str
) -> None:
    bad = tmp_path / "bad.intoto.jsonl"
    if content is not None:
        bad.write_bytes(content)
    r = run([DETPACK, "verify", signed["artifact"], "--provenance", bad, "--key", f"{signed['key']}.pub"])
    assert r.code == 2, r.stderr
    assert message in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_keys_are_input_errors_and_write_nothing(signed: dict[str, Path], tmp_path: Path) -> None:
    rsa_like = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_like.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signed["envelope"].unlink()
    for key, message in ((rsa_like, "detpack signs with ed25519 keys"), (signed["artifact"], "not a PEM private key"),
                         (tmp_path / "missing", "no such key file")):  # fmt: skip
        r = run([DETPACK, "sign", signed["prov"], "--key", key])
        assert r.code == 2, r.stderr
        assert message in r.stderr and str(key) in r.stderr
        assert not signed["envelope"].exists()
    r = run([DETPACK, "sign", tmp_path / "nope.json", "--key", signed["key"]])
    assert r.code == 2 and "no such file" in r.stderr
    r = run([DETPACK, "sign", signed["artifact"], "--key", signed["key"]])
    assert r.code == 2 and "not JSON" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".detpack-tmp")) == []


@pytest.mark.slow
def test_build_sign_writes_an_envelope_that_verifies(tmp_path: Path, wheelhouse: Path) -> None:
    assert run([DETPACK, "keygen", "-o", tmp_path / "key"]).code == 0
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    out = tmp_path / "out"
    r = run([DETPACK, "build", src, "-o", out, "--find-links", wheelhouse, "--offline", "--sign", tmp_path / "key"])
    assert r.code == 0, r.stderr
    [envelope] = out.glob("*.intoto.jsonl")
    [prov] = out.glob("*.provenance.json")
    assert envelope.name == prov.name.replace(".provenance.json", ".intoto.jsonl")
    sslib = SSlibEnvelope.from_dict(json.loads(envelope.read_bytes()))
    sslib.verify([_sslib_key(tmp_path / "key.pub")], 1)
    import rfc8785

    written = prov.read_bytes()  # what detpack build wrote: its own RFC 8785 form, byte for byte
    assert (
        written == rfc8785.dumps(json.loads(written)) == base64.b64decode(json.loads(envelope.read_bytes())["payload"])
    )
    assert sslib.payload == prov.read_bytes()
    artifacts = sorted(p for p in out.iterdir() if p.name.endswith((".whl", ".tar.gz")))
    r = run([DETPACK, "verify", *artifacts, "--provenance", envelope, "--key", tmp_path / "key.pub"])
    assert r.code == 0, r.stderr
    assert r.stdout.count("verified  ") == 2


def test_build_sign_with_a_bad_key_fails_before_building(tmp_path: Path) -> None:
    src = materialize(FIXTURES / "flit", tmp_path / "src", 0o022)
    r = run([DETPACK, "build", src, "-o", tmp_path / "out", "--sign", tmp_path / "missing-key"])
    assert r.code == 2
    assert "no such key file" in r.stderr
    assert not (tmp_path / "out").exists()


def test_sign_with_a_public_key_names_the_private_key(signed: dict[str, Path]) -> None:
    pub = Path(f"{signed['key']}.pub")
    r = run([DETPACK, "sign", signed["prov"], "--key", pub])
    assert r.code == 2, r.stderr
    assert f"{pub} is a public key; sign with the private key ({signed['key']})" in r.stderr
    assert "keygen" not in r.stderr


def test_verify_refuses_a_private_key(signed: dict[str, Path]) -> None:
    r = run([DETPACK, "verify", signed["artifact"], "--provenance", signed["envelope"], "--key", signed["key"]])
    assert r.code == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is a private key" in lines[0] and f"{signed['key']}.pub" in lines[0], r.stderr
    assert r.stdout == ""


def _dsa_key() -> object:
    """A DSA key, made without the deprecation warning cryptography 51 gives (a key someone has)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dsa.generate_private_key(key_size=2048)


def _pem_private(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "an RSA key"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "an ECDSA key"),
        (ed448.Ed448PrivateKey.generate, "an Ed448 key"),
        (lambda: _dsa_key(), "a DSA key"),
        (x25519.X25519PrivateKey.generate, "an X25519 key"),
    ],
)
def test_other_kinds_of_keys_are_named_with_the_right_article(
    signed: dict[str, Path], tmp_path: Path, make: Any, phrase: str
) -> None:
    key = make()
    private = tmp_path / "other.pem"
    private.write_bytes(_pem_private(key))
    public = tmp_path / "other.pub"
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    r = run([DETPACK, "sign", signed["prov"], "--key", private])
    assert r.code == 2 and f"{private}: {phrase}; detpack signs with ed25519 keys" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line: no library warning with it
    r = run([DETPACK, "verify", signed["artifact"], "--provenance", signed["envelope"], "--key", public])
    assert r.code == 2 and f"{public}: {phrase}; detpack verifies ed25519 keys" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# RFC 8785 section 3.2.3: object keys sort by their UTF-16 code units (so U+1F600, a surrogate
# pair starting 0xD83D, sorts before U+FB33, though its code point is larger).
RFC8785_SORTING = {
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\U0001f600": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
}
RFC8785_SORTED_KEYS = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
# RFC 8785 section 3.2.2 (numbers as ECMAScript writes them, strings escaping only what JSON must).
RFC8785_VALUES = (
    b'{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
    b'"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}'
)
RFC8785_VALUES_CANONICAL = (
    b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)


def test_canonical_json_is_rfc8785_on_its_test_vectors() -> None:
    out = canonical_json(RFC8785_SORTING)
    assert list(json.loads(out)) == RFC8785_SORTED_KEYS
    assert out == ("{" + ",".join(f'"{k}":"{RFC8785_SORTING[k]}"' for k in RFC8785_SORTED_KEYS) + "}").replace(
        "\r", "\\r"
    ).encode("utf-8")
    assert canonical_json(json.loads(RFC8785_VALUES)) == RFC8785_VALUES_CANONICAL
    # Python's sort_keys orders by code point: it is not RFC 8785 for these keys
    naive = json.dumps(RFC8785_SORTING, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert naive != out


def test_sign_writes_rfc8785_bytes_whatever_the_statement_file_holds(tmp_path: Path) -> None:
    import rfc8785

    artifact = tmp_path / "demo-1.0-py3-none-any.whl"
    artifact.write_bytes(b"not really a wheel")
    value = json.loads(_statement(artifact))
    value["predicate"]["buildDefinition"]["externalParameters"].update(
        {"keys": RFC8785_SORTING, "ratio": 1.0, "note": "caf\u00e9 \u2615"}
    )
    prov = tmp_path / "demo-1.0.provenance.json"
    prov.write_text(json.dumps(value, indent=2, ensure_ascii=True))  # not canonical in any way
    assert run([DETPACK, "keygen", "-o", tmp_path / "key"]).code == 0
    assert run([DETPACK, "sign", prov, "--key", tmp_path / "key"]).code == 0
    line = (tmp_path / "demo-1.0.intoto.jsonl").read_bytes()
    assert line == rfc8785.dumps(json.loads(line)) + b"\n"
    payload = base64.b64decode(json.loads(line)["payload"])
    assert payload == rfc8785.dumps(json.loads(payload))
    keys = json.loads(payload)["predicate"]["buildDefinition"]["externalParameters"]["keys"]
    assert list(keys) == RFC8785_SORTED_KEYS and b'"ratio":1,' in payload
    assert SSlibEnvelope.from_dict(json.loads(line)).verify([_sslib_key(tmp_path / "key.pub")], 1)
    r = run(
        [DETPACK, "verify", artifact, "--provenance", tmp_path / "demo-1.0.intoto.jsonl", "--key", tmp_path / "key.pub"]
    )
    assert r.code == 0, r.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"payload": "e30=", "payloadType": "text/plain", "signatures": []}', "payloadType is 'text/plain'"),
        (b'{"payload": "bm90IGpzb24=", "payloadType": "application/vnd.in-toto+json", "signatures": []}',
         "the envelope's payload is not JSON"),
        (b'{"payload": "e30=", "payloadType": "application/vnd.in-toto+json", "signatures": []}',
         "the envelope's payload: not an in-toto SLSA provenance statement (no _type)"),
        (b'{"payload": "e30=", "payloadType": "application/vnd.in-toto+json", "signatures": [{"sig": 1}]}',
         "signature 1 is not base64"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "x"}], "predicateType": "p"}',
         "subject 1 has no digest"),
        (b'{"_type": "https://example.com/other", "subject": []}', "_type is 'https://example.com/other'"),
        (b"{}\n{}\n", "holds 2 JSON lines"),
    ],
)  # fmt: skip
def test_the_reader_names_the_file_and_the_problem_in_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    from detpack.errors import InputError
    from detpack.provenance import reader

    bad = tmp_path / "bad.intoto.jsonl"
    bad.write_bytes(content)
    with pytest.raises(InputError) as caught:
        reader.read_file(bad)
    assert message in caught.value.message and str(bad) in caught.value.message
    assert "\n" not in caught.value.message


def test_the_reader_reads_a_statement_and_its_envelope_as_one_value(signed: dict[str, Path]) -> None:
    from detpack.provenance import reader

    bare = reader.read_file(signed["prov"])
    wrapped = reader.read_file(signed["envelope"])
    pretty = signed["envelope"].with_name("pretty.dsse.json")
    pretty.write_text(json.dumps(json.loads(signed["envelope"].read_bytes()), indent=2))  # a JSON document, not a line
    assert reader.read_file(pretty).envelope == wrapped.envelope
    assert bare.envelope is None and bare.form == "provenance" and wrapped.form == "dsse"
    assert bare.statement == wrapped.statement and bare.payload == wrapped.payload == signed["prov"].read_bytes()
    assert bare.subjects == wrapped.subjects and bare.names(sha256(signed["artifact"]))
    assert wrapped.predicate_type == "https://slsa.dev/provenance/v1"
    assert wrapped.envelope is not None
    assert signing.verify(wrapped.envelope, signing.load_public_key(signed["key"])) == wrapped.payload
