"""Offline verification of certificates of authenticity: what is accepted, what is refused, and why."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veriscope.sdk import CertificateError, ImageOrigin, Reason, Verdict, VeriscopeError
from veriscope.sdk.certificates import Certificate, canonical_json, verify_certificate

# A certificate issued by the device software (veriscope.device.certificates) with a fixed test key, kept
# byte for byte: certificates issued today must verify with every later SDK.
GOLDEN = (
    b'{"certificate":{"complete_time":"2026-05-28T12:03:07.654Z","create_time":"2026-05-28T12:00:00.123Z",'
    b'"device_id":"VS-SIM-0A1B2C3D","format":"veriscope.certificate/1","images":[{"accepted":false,'
    b'"image_id":"001","origin":"CAMERA","region":"canvas","sha256":'
    b'"0101010101010101010101010101010101010101010101010101010101010101","used":false},{"accepted":true,'
    b'"image_id":"002","origin":"CAMERA","region":"canvas","sha256":'
    b'"0202020202020202020202020202020202020202020202020202020202020202","used":true},{"accepted":true,'
    b'"image_id":"003","origin":"CAMERA","region":"canvas","sha256":'
    b'"0303030303030303030303030303030303030303030303030303030303030303","used":true},{"accepted":true,'
    b'"image_id":"004","origin":"UPLOAD","region":"trim","sha256":'
    b'"0404040404040404040404040404040404040404040404040404040404040404","used":true},{"accepted":true,'
    b'"image_id":"005","origin":"UPLOAD","region":"trim","sha256":'
    b'"0505050505050505050505050505050505050505050505050505050505050505","used":true}],'
    b'"issue_time":"2026-05-28T12:03:07.654Z","item_type":"tote-classic","model":{"name":"veriscope-demo",'
    b'"sha256":"abababababababababababababababababababababababababababababababab","version":"0.2.0"},'
    b'"partner_item_id":"listing-4711 \xc2\xb7 Z\xc3\xbcrich","reason":"COUNTERFEIT_INDICATORS",'
    b'"scan_id":"0f1e2d3c4b5a69788796a5b4c3d2e1f0","score":"0.1235","signing_key":{"algorithm":"Ed25519",'
    b'"certificate":null,"public_key":"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=","sha256":'
    b'"56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c"},"statement":"The tote-classic item '
    b"(partner item id listing-4711 \xc2\xb7 Z\xc3\xbcrich) scanned by Veriscope unit VS-SIM-0A1B2C3D at "
    b'2026-05-28T12:03:07.654Z could NOT be verified: counterfeit indicators.","summary":"Counterfeit '
    b'indicators in region canvas.","threshold":"0.5693","verdict":"UNVERIFIED"},"signature":'
    b'"YYuIhqSeN6CWrPJqx18TjbUcjT20wHMsrCOk/E22UKYvMr7zwsgjdtjBG2vgVqjehuXuSqYVv33LnN1Fdhe1Cw=="}\n'
)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
TRUST = KEY.public_key().public_bytes(PEM, SPKI)
REASONS = {"unknown_format", "not_canonical", "malformed", "key_not_trusted", "signature_mismatch"}


def statement() -> dict[str, Any]:
    """A fresh copy of the golden statement, to change and sign again."""
    document: dict[str, Any] = json.loads(GOLDEN)
    return document["certificate"]  # type: ignore[no-any-return]


def sign(statement: dict[str, Any], key: Ed25519PrivateKey = KEY) -> bytes:
    """A certificate file of ``statement``, signed as the unit signs: canonical JSON, Ed25519, one newline."""
    signature = base64.b64encode(key.sign(canonical_json(statement))).decode()
    return canonical_json({"certificate": statement, "signature": signature}) + b"\n"


def refused(document: bytes, trust: bytes | str = TRUST) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        verify_certificate(document, trust)
    error = info.value
    assert error.reason in REASONS and error.details and error.code == "INVALID_CERTIFICATE"
    assert isinstance(error, VeriscopeError)
    return error


# --- Valid certificates ------------------------------------------------------------------------------------------


def test_the_golden_certificate_verifies_and_reads_back() -> None:
    assert sign(statement()) == GOLDEN  # the test signer signs exactly as the unit does
    certificate = verify_certificate(GOLDEN, TRUST)
    assert isinstance(certificate, Certificate)
    assert certificate.format == "veriscope.certificate/1"
    assert certificate.device_id == "VS-SIM-0A1B2C3D" and certificate.item_type == "tote-classic"
    assert certificate.partner_item_id == "listing-4711 · Zürich"
    assert certificate.verdict is Verdict.UNVERIFIED and certificate.reason is Reason.COUNTERFEIT_INDICATORS
    assert certificate.score == Decimal("0.1235") and certificate.threshold == Decimal("0.5693")
    assert "could NOT be verified: counterfeit indicators" in certificate.statement
    assert (certificate.model.name, certificate.model.version) == ("veriscope-demo", "0.2.0")
    assert [i.image_id for i in certificate.images] == ["001", "002", "003", "004", "005"]
    assert [(i.accepted, i.used) for i in certificate.images][:2] == [(False, False), (True, True)]
    assert [i.origin for i in certificate.images] == [ImageOrigin.CAMERA] * 3 + [ImageOrigin.UPLOAD] * 2
    assert certificate.images[3].sha256 == "04" * 32
    assert certificate.create_time == datetime(2026, 5, 28, 12, 0, 0, 123000, tzinfo=UTC)
    assert certificate.complete_time == certificate.issue_time == datetime(2026, 5, 28, 12, 3, 7, 654000, tzinfo=UTC)
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert certificate.signing_key_sha256 == hashlib.sha256(raw).hexdigest()
    assert certificate.signing_public_key.encode() == TRUST
    assert certificate.signer_certificate is None and certificate.trusted_by == "the trusted public key"
    shown = certificate.to_dict()
    assert json.loads(json.dumps(shown)) == shown
    assert shown["score"] == "0.1235" and shown["complete_time"] == "2026-05-28T12:03:07.654Z"


def test_an_authentic_certificate_without_partner_id_verifies() -> None:
    authentic = statement()
    authentic.update(verdict="AUTHENTIC", reason=None, partner_item_id=None, score="1.0000")
    certificate = verify_certificate(sign(authentic), TRUST.decode())  # the PEM as text works too
    assert certificate.verdict is Verdict.AUTHENTIC and certificate.reason is None
    assert certificate.partner_item_id is None and certificate.score == Decimal("1.0000")


# --- Altered certificates ----------------------------------------------------------------------------------------


def test_every_single_bit_flip_anywhere_is_refused() -> None:
    reasons: dict[str, int] = {}
    flips = 0
    for position in range(len(GOLDEN)):
        # The lowest bit everywhere, and each of the 8 bits at every 8th byte.
        for bit in {0, position % 8}:
            altered = bytearray(GOLDEN)
            altered[position] ^= 1 << bit
            error = refused(bytes(altered))
            reasons[error.reason] = reasons.get(error.reason, 0) + 1
            flips += 1
    assert sum(reasons.values()) == flips > len(GOLDEN)
    # Flips land in every layer: bytes that are no longer JSON, JSON that is no longer canonical, and
    # canonical JSON that is no longer what was signed.
    assert {"unknown_format", "not_canonical", "signature_mismatch"} <= set(reasons)


def test_a_changed_verdict_is_a_signature_mismatch() -> None:
    altered = GOLDEN.replace(b'"verdict":"UNVERIFIED"', b'"verdict":"AUTHENTIC"')
    error = refused(altered)
    assert error.reason == "signature_mismatch"
    assert error.details == "signature does not match: the certificate was altered or signed by another key"


def test_padding_bits_of_the_signature_cannot_be_changed() -> None:
    # The last base64 digit of a 64-byte signature carries 4 padding bits that decoding ignores.
    end = GOLDEN.rindex(b'=="')
    last = GOLDEN[end - 1 : end].decode()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    sibling = alphabet[alphabet.index(last) ^ 1]
    altered = GOLDEN[: end - 1] + sibling.encode() + GOLDEN[end:]
    signature = json.loads(altered)["signature"]
    assert base64.b64decode(signature) == base64.b64decode(json.loads(GOLDEN)["signature"])
    assert refused(altered).reason == "signature_mismatch"


def _reversed(value: Any) -> Any:
    """``value`` with the keys of every object in reverse order (json.dumps without sort_keys keeps that order)."""
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(value)}
    return value


@pytest.mark.parametrize(
    ("name", "reformat"),
    [
        ("pretty-printed", lambda d: (json.dumps(json.loads(d), indent=2, ensure_ascii=False) + "\n").encode()),
        ("space after colons", lambda d: d.replace(b'":"', b'": "', 1)),
        ("space after a comma", lambda d: d.replace(b'","', b'", "', 1)),
        ("leading space", lambda d: b" " + d),
        ("no trailing newline", lambda d: d[:-1]),
        ("two trailing newlines", lambda d: d + b"\n"),
        ("CRLF", lambda d: d[:-1] + b"\r\n"),
        ("ASCII escapes", lambda d: (json.dumps(json.loads(d), sort_keys=True, separators=(",", ":")) + "\n").encode()),
        (
            "unsorted keys",
            lambda d: (json.dumps(_reversed(json.loads(d)), separators=(",", ":"), ensure_ascii=False) + "\n").encode(),
        ),
        ("escaped slash", lambda d: d.replace(b"/", b"\\/", 1)),
    ],
)
def test_non_canonical_forms_are_refused(name: str, reformat: Callable[[bytes], bytes]) -> None:
    document = reformat(GOLDEN)
    assert document != GOLDEN and json.loads(document) == json.loads(GOLDEN), name
    error = refused(document)
    assert error.reason == "not_canonical", name
    assert error.details.startswith("not canonical: ")


def test_a_missing_newline_is_named() -> None:
    assert "exactly one newline" in refused(GOLDEN[:-1]).details


def test_duplicate_keys_are_refused() -> None:
    document = GOLDEN.replace(b'{"certificate":', b'{"certificate":{},"certificate":', 1)
    error = refused(document)
    assert error.reason == "not_canonical" and "'certificate' appears twice" in error.details


# --- Keys --------------------------------------------------------------------------------------------------------


def test_a_key_of_another_unit_is_not_trusted() -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes(PEM, SPKI)
    error = refused(GOLDEN, other)
    assert error.reason == "key_not_trusted"
    assert error.details.startswith("key not trusted: the certificate was signed by key sha256 56475aa75463474c")


def test_a_certificate_signed_by_another_key_claiming_this_one_is_refused() -> None:
    forged = sign(statement(), Ed25519PrivateKey.generate())  # the statement still names the trusted key
    assert refused(forged).reason == "signature_mismatch"


@pytest.mark.parametrize(
    ("trust", "message"),
    [
        (b"", "neither a PEM public key"),
        (b"not a key", "neither a PEM public key"),
        (
            KEY.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            "private key",
        ),
        (ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(PEM, SPKI), "Ed25519"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "cannot be read"),
    ],
)
def test_an_unusable_trust_anchor_is_a_value_error(trust: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verify_certificate(GOLDEN, trust)


def test_arguments_of_the_wrong_type_are_type_errors() -> None:
    with pytest.raises(TypeError, match="document must be bytes"):
        verify_certificate(GOLDEN.decode(), TRUST)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="trust_pem"):
        verify_certificate(GOLDEN, 42)  # type: ignore[arg-type]
    assert verify_certificate(bytearray(GOLDEN), TRUST).scan_id == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


# --- Files that are not certificates -----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 15, 100, 1000, len(GOLDEN) - 3, len(GOLDEN) - 2])
def test_a_truncated_file_is_an_unknown_format(length: int) -> None:
    error = refused(GOLDEN[:length])
    assert error.reason == "unknown_format"
    assert "empty" in error.details if length == 0 else "truncated" in error.details


@pytest.mark.parametrize(
    "document",
    [
        b"\xff\xfe{}",
        b"PK\x03\x04 a zip file",
        b"[]\n",
        b'"certificate"\n',
        b"{}\n",
        b'{"certificate":{},"signature":"","x":1}\n',
        b'{"certificate":[],"signature":""}\n',
        b'{"signature":""}\n',
        b"[" * 100_000 + b"]" * 100_000,
        b"1" * 5000,
        b"{" + b" " * (2 * 1024 * 1024) + b"}",
    ],
)
def test_other_files_are_an_unknown_format(document: bytes) -> None:
    assert refused(document).reason == "unknown_format"


def test_a_statement_of_an_unknown_format_is_named() -> None:
    later = statement()
    later["format"] = "veriscope.certificate/2"
    error = refused(sign(later))
    assert error.reason == "unknown_format" and "'veriscope.certificate/2'" in error.details


def _changed(**changes: Any) -> dict[str, Any]:
    changed = statement()
    changed.update(changes)
    return changed


def _without(key: str) -> dict[str, Any]:
    changed = statement()
    del changed[key]
    return changed


def _image(**changes: Any) -> dict[str, Any]:
    changed = statement()
    changed["images"][1].update(changes)
    return changed


def _key(**changes: Any) -> dict[str, Any]:
    changed = statement()
    changed["signing_key"].update(changes)
    return changed


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        (_changed(score="0.97"), "certificate.score must be a decimal string"),
        (_changed(score="1.5000"), "certificate.score must be a decimal string"),
        (_changed(score=1), "certificate.score must be a non-empty string"),
        (_changed(verdict="GENUINE"), "certificate.verdict must be one of AUTHENTIC, UNVERIFIED"),
        (_changed(verdict="AUTHENTIC"), "reason must be null exactly when the verdict is AUTHENTIC"),
        (_changed(reason=None), "reason must be null exactly when the verdict is AUTHENTIC"),
        (_changed(device_id=""), "certificate.device_id must be a non-empty string"),
        (_changed(partner_item_id=7), "certificate.partner_item_id must be a non-empty string"),
        (_changed(images={}), "certificate.images must be a JSON array"),
        (_changed(images=[1]), "certificate.images[0] must be a JSON object"),
        (_changed(model=[]), "certificate.model must be a JSON object"),
        (_changed(issue_time="2026-05-28 12:03:07"), "certificate.issue_time must be an RFC 3339 UTC time"),
        (_changed(issue_time="2026-02-30T12:03:07.654Z"), "certificate.issue_time is not a real time"),
        (_changed(scan_id="../x"), "certificate.scan_id must be"),
        (_changed(extra="x"), "unknown members 'extra'"),
        (_without("statement"), "certificate lacks statement"),
        (_image(used=1), "certificate.images[1].used must be true or false"),
        (_image(origin="SCANNER"), "certificate.images[1].origin must be one of CAMERA, UPLOAD"),
        (_image(sha256="AB" * 32), "certificate.images[1].sha256 must be lowercase hex SHA-256"),
        (_image(accepted=False), "certificate.images[1] is used but was not accepted"),
        (_key(sha256="00" * 32), "signing_key.sha256 is not the SHA-256 of signing_key.public_key"),
    ],
)
def test_a_signed_statement_of_the_wrong_shape_is_malformed(changed: dict[str, Any], message: str) -> None:
    error = refused(sign(changed))
    assert error.reason == "malformed" and error.details.startswith("malformed: ")
    assert message in error.details


def test_floats_are_refused() -> None:
    error = refused(sign(_changed(score=0.1235)))
    assert error.reason == "malformed" and "certificates hold no floats" in error.details


def test_a_signature_of_the_wrong_type_or_length_is_refused() -> None:
    document = json.loads(GOLDEN)
    for signature, reason in [(12, "malformed"), ("", "signature_mismatch"), ("AAAA", "signature_mismatch")]:
        document["signature"] = signature
        assert refused(canonical_json(document) + b"\n").reason == reason


def test_a_public_key_that_is_not_32_bytes_is_malformed() -> None:
    error = refused(sign(_key(public_key="AAAA")))
    assert error.reason == "malformed" and "signing_key.public_key is not the base64 of 32 bytes" in error.details


# --- Fleet CA ----------------------------------------------------------------------------------------------------

NOW = datetime(2026, 5, 28, 12, 3, 7, tzinfo=UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(key: ec.EllipticCurvePrivateKey, *, is_ca: bool = True) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Veriscope fleet CA"))
        .issuer_name(_name("Veriscope fleet CA"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=365))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def _signer(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str = "VS-SIM-0A1B2C3D",
    key: Ed25519PrivateKey = KEY,
    valid_from: datetime = NOW - timedelta(days=1),
) -> str:
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(valid_from)
        .not_valid_after(valid_from + timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(PEM).decode()


@pytest.fixture(scope="module")
def fleet() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _ca(key)


def _with_signer(pem: str) -> bytes:
    return sign(_key(certificate=pem))


def test_a_fleet_ca_vouches_for_the_key_of_its_unit(fleet: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    ca_key, ca = fleet
    document = _with_signer(_signer(ca, ca_key))
    certificate = verify_certificate(document, ca.public_bytes(PEM))
    assert certificate.trusted_by == "certified by CA CN=Veriscope fleet CA"
    assert certificate.signer_certificate is not None and "BEGIN CERTIFICATE" in certificate.signer_certificate
    # A bundle of several CA certificates works, and the unit's own key still verifies the same file.
    other_key = ec.generate_private_key(ec.SECP256R1())
    bundle = _ca(other_key).public_bytes(PEM) + ca.public_bytes(PEM)
    assert verify_certificate(document, bundle).trusted_by == certificate.trusted_by
    assert verify_certificate(document, TRUST).trusted_by == "the trusted public key"


def test_a_fleet_ca_refuses_what_it_did_not_certify(fleet: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    ca_key, ca = fleet
    trust = ca.public_bytes(PEM)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = _ca(stranger_key)
    cases = [
        (GOLDEN, "carries no signer certificate"),
        (_with_signer(_signer(stranger, stranger_key)), "was not issued by the trusted CA"),
        (_with_signer(_signer(ca, ca_key, common_name="VS-SIM-FFFFFFFF")), "not for device 'VS-SIM-0A1B2C3D'"),
        (_with_signer(_signer(ca, ca_key, key=Ed25519PrivateKey.generate())), "certifies another key"),
        (_with_signer(_signer(ca, ca_key, valid_from=NOW + timedelta(days=2))), "not valid at the issue time"),
    ]
    for document, message in cases:
        error = refused(document, trust)
        assert error.reason == "key_not_trusted" and message in error.details, message
    not_a_ca = _ca(ca_key, is_ca=False)
    error = refused(_with_signer(_signer(not_a_ca, ca_key)), not_a_ca.public_bytes(PEM))
    assert error.reason == "key_not_trusted"
    error = refused(_with_signer("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), trust)
    assert error.reason == "malformed"


# --- Fuzz --------------------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _paths(item, (*prefix, index))
    return paths


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """The golden certificate with one value replaced, removed or added; sometimes signed again with the key."""
    document = json.loads(GOLDEN)
    path = draw(st.sampled_from(_paths(document)))
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if not path:
        document = draw(_JSON)
    else:
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if action == "replace" or (action == "remove" and isinstance(parent, list)):
            parent[path[-1]] = draw(_JSON)
        elif action == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(_JSON)
        else:
            parent.insert(path[-1], draw(_JSON))
    if draw(st.booleans()) and isinstance(document, dict) and isinstance(document.get("certificate"), dict):
        return sign(copy.deepcopy(document["certificate"]))
    return canonical_json(document) + draw(st.sampled_from([b"\n", b"", b" \n"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_only_certificate_errors(document: bytes) -> None:
    refused(document)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(mutated())
def test_mutated_certificates_give_only_certificate_errors(document: bytes) -> None:
    try:
        certificate = verify_certificate(document, TRUST)
    except CertificateError as error:
        assert error.reason in REASONS and error.details
    else:
        # Only a change the schema allows and the key signed again can verify.
        assert certificate.device_id and certificate.format == "veriscope.certificate/1"


def test_the_module_exports_every_public_name() -> None:
    import inspect

    from veriscope.sdk import certificates

    defined = {
        name
        for name, value in vars(certificates).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == certificates.__name__
    }
    assert defined <= set(certificates.__all__)
    assert certificates.CertificateError is CertificateError  # the one in the SDK's error tree
