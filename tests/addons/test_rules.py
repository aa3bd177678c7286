"""Rule helpers: form parsing (urlencoded, multipart), RFC 6901 pointers, value checks, JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from addons.amounts import money, scaled
from addons.conditions import Condition, conditions_hold, holding_operations
from addons.cookies import kept_set_cookie, sent_cookie
from addons.extract import Extractor, resolve_pointer
from addons.forms import parse_form
from addons.jws import JwtError, load_key, read_claims
from addons.values import ExtractError, user_id
from gateway.ruleconfig import Condition as ConditionOptions
from tests.addons.conftest import exchange
from tests.jwts import certificate

NOW = 1_800_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_input(claims: dict[str, Any], alg: str) -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return header + "." + b64(json.dumps(claims).encode())


def hs256(claims: dict[str, Any], secret: bytes, alg: str = "HS256") -> str:
    data = signing_input(claims, alg)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return data + "." + b64(hmac.new(secret, data.encode(), digest).digest())


def rs256(claims: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    data = signing_input(claims, "RS256")
    return data + "." + b64(key.sign(data.encode(), padding.PKCS1v15(), hashes.SHA256()))


def es256(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    data = signing_input(claims, "ES256")
    r, s = decode_dss_signature(key.sign(data.encode(), ec.ECDSA(hashes.SHA256())))
    return data + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- forms -------------------------------------------------------------------------------------


def test_urlencoded_form_first_value_wins_and_credentials_are_left_out() -> None:
    body = b"username=ada%40example.com&password=hunter2&next=%2Fhome&username=eve&csrf_token=x&a="
    fields = parse_form("application/x-www-form-urlencoded; charset=utf-8", body)
    assert fields == {"username": "ada@example.com", "next": "/home", "a": ""}


def test_bracketed_rails_field_names() -> None:
    body = b"user%5Bemail%5D=ada%40example.com&user%5Bpassword%5D=x&authenticity_token=t"
    assert parse_form("application/x-www-form-urlencoded", body) == {"user[email]": "ada@example.com"}


def multipart(fields: list[tuple[str, str, str | None]], boundary: str = "XyZ") -> tuple[str, bytes]:
    parts = []
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n")
    body = "".join(parts) + f"--{boundary}--\r\n"
    return f"multipart/form-data; boundary={boundary}", body.encode()


def test_multipart_form_skips_files_and_credentials() -> None:
    ctype, body = multipart(
        [
            ("email", "ada@example.com", None),
            ("Password", "hunter2", None),
            ("avatar", "GIF89a...", "me.gif"),
            ("bio", "Zürich", None),
        ]
    )
    assert parse_form(ctype, body) == {"email": "ada@example.com", "bio": "Zürich"}


def test_a_form_is_read_in_the_charset_it_declares() -> None:
    """Two different user IDs must never become one: a byte the charset does not decode stays
    an escape no value check accepts (it was U+FFFD, so ren%E9 and ren%E8 were one user)."""
    latin = "application/x-www-form-urlencoded; charset=windows-1252"
    assert parse_form(latin, b"email=ren%E9%40x.io") == {"email": "rené@x.io"}
    assert parse_form(latin, b"email=ren%E8%40x.io") == {"email": "renè@x.io"}
    utf8 = parse_form("application/x-www-form-urlencoded", "a=ren%E9&b=caf%C3%A9&c=café".encode())
    assert utf8["b"] == utf8["c"] == "café" and not utf8["a"].isprintable()
    assert user_id_problem_of(utf8["a"]) == "invalid_user_id"
    with pytest.raises(ValueError, match="unknown charset"):
        parse_form("application/x-www-form-urlencoded; charset=x-bogus", b"a=1")


def test_a_multipart_part_in_an_unknown_charset_is_left_out_and_the_rest_read() -> None:
    """It made the whole rules addon fail on the request: every conversion and binding lost."""
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="order"\r\n\r\nA17\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="note"\r\nContent-Type: text/plain; charset=x-bogus'
        b"\r\n\r\nhi\r\n--XX--\r\n"
    )
    assert parse_form("multipart/form-data; boundary=XX", body) == {"order": "A17"}


@pytest.mark.parametrize("charset", ["base64", "rot13"])
def test_a_charset_that_is_a_codec_but_not_a_text_encoding_is_unknown(charset: str) -> None:
    body = (
        b'--XX\r\nContent-Disposition: form-data; name="order"\r\n\r\nA17\r\n'
        b'--XX\r\nContent-Disposition: form-data; name="note"\r\nContent-Type: text/plain; charset='
        + charset.encode()
        + b"\r\n\r\nhi\r\n--XX--\r\n"
    )
    assert parse_form("multipart/form-data; boundary=XX", body) == {"order": "A17"}
    with pytest.raises(ValueError, match="unknown charset"):
        parse_form(f"application/x-www-form-urlencoded; charset={charset}", b"a=1")


def user_id_problem_of(value: str) -> str | None:
    from addons.values import ExtractError

    try:
        user_id(value)
    except ExtractError as err:
        return str(err)
    return None


@pytest.mark.parametrize(
    ("ctype", "body"),
    [("application/json", b"{}"), ("", b"a=1"), ("multipart/form-data; boundary=q", b"not multipart")],
)
def test_not_a_form(ctype: str, body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_form(ctype, body)


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=20), max_size=8))
def test_urlencoded_round_trip(fields: dict[str, str]) -> None:
    from urllib.parse import urlencode

    body = urlencode(list(fields.items())).encode()
    parsed = parse_form("application/x-www-form-urlencoded", body)
    from gateway.ruleconfig import FORBIDDEN_NAME

    assert parsed == {k: v for k, v in fields.items() if not FORBIDDEN_NAME.search(k)}


# -- JSON pointers -----------------------------------------------------------------------------

DOC = {"foo": ["bar", "baz"], "": 0, "a/b": 1, "m~n": 8, "user": {"id": 42}}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("", DOC),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/foo/1", "baz"),
        ("/", 0),
        ("/a~1b", 1),
        ("/m~0n", 8),
        ("/user/id", 42),
    ],
)
def test_pointer_rfc6901_examples(pointer: str, expected: Any) -> None:
    assert resolve_pointer(DOC, pointer) == expected


@pytest.mark.parametrize("pointer", ["/nope", "/foo/2", "/foo/01", "/foo/-", "/user/id/x", "user"])
def test_pointer_missing(pointer: str) -> None:
    with pytest.raises(LookupError):
        resolve_pointer(DOC, pointer)


# -- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (49.9, 49.9),
        ("49.90", 49.9),
        (0, 0.0),
        (" 12 ", 12.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        (float("inf"), None),
        (True, None),
        ("12,50", None),
        (None, None),
        ([1], None),
        (1e15, 1e15),  # MAX_VALUE, the largest recorded
        (1.0000001e15, None),
        ("1e30", None),
        (10**400, None),  # float() of it overflows
        ("1_000", None),  # float() reads these; no sender means them as amounts
        ("\u0661\u0662", None),
        (" 0x10", None),
        ("-0", 0.0),
        ("1e-999999999999", 0.0),
        ("1e999999999999", None),
        ("1e99999999999999999999", None),  # beyond even Decimal's exponents
        ("-1e99999999999999999999", None),
        ("1e-99999999999999999999", 0.0),
        ("9" * 100_000, None),
    ],
)
def test_money(raw: Any, expected: float | None) -> None:
    assert money(raw) == expected


@pytest.mark.parametrize(
    ("text", "separator", "expected"),
    [
        ("1,299.00", ".", 1299.0),  # WooCommerce's and most English-speaking shops' default
        ("1,234,567.5", ".", 1234567.5),
        ("1'299.00", ".", 1299.0),  # Swiss
        ("1\u2019299.00", ".", 1299.0),
        ("1,23,456.78", ".", 123456.78),  # India's lakh grouping
        ("1.299,00", ",", 1299.0),  # German, Dutch, Italian, Spanish…
        ("1 299,00", ",", 1299.0),  # French, with a plain space
        ("1\u202f299,00", ",", 1299.0),  # … a narrow no-break space (CLDR's French)
        ("1\u00a0299,00", ",", 1299.0),
        ("49,90", ",", 49.9),
        (" 1.299 ", ",", 1299.0),
        ("1.299", ".", 1.299),  # as before: a point is the decimal separator unless said otherwise
        ("49.90", ",", None),  # a point where a comma is the decimal separator is no decimal
        ("1,299", ",", 1.299),
        ("1,29", ".", None),  # a group of two is no group of thousands
        ("1,2345.00", ".", None),
        ("12,345,67", ".", None),
        ("1.299.000", ".", None),  # the decimal separator cannot group too
        ("1,299.000,5", ",", None),  # nor two separators
        ("1 299.00", ",", None),
        ("12,", ",", None),
        (",5", ",", None),
        ("1e3", ",", None),  # an exponent is JSON's, not a shop's
        ("-1.299,00", ",", None),
        ("\u0661,\u0662\u0663\u0664", ".", None),  # ASCII digits only
    ],
)
def test_amounts_as_shops_write_them(text: str, separator: str, expected: float | None) -> None:
    """A total read from a page (``response_text`` with a ``capture``) is written as the shop
    formats it: grouped thousands are read, whole groups separated alike, by anything but the
    decimal separator (``conversions[].decimal_separator``)."""
    assert money(text, 1.0, separator) == expected


def test_minor_units_scale_to_the_amount_they_name() -> None:
    """1999 cents at value_scale 0.01 was the float product 19.990000000000002 (one amount in
    seven): stored, summed and shown so. Scaled once, exactly, it is 19.99, as written."""
    assert [c for c in range(100_000) if money(c, 0.01) != c / 100] == []
    assert money("1999", 0.01) == money(1999.0, 0.01) == 19.99
    assert money(12345, 0.001) == 12.345
    assert scaled(-0.0) == 0.0 and str(scaled(-0.0)) == "0.0"


@pytest.mark.parametrize("raw", ["", "   ", "a\nb", "x" * 257, 4.5, True, None, {"id": 1}])
def test_user_id_rejected(raw: Any) -> None:
    from addons.values import ExtractError

    with pytest.raises(ExtractError):
        user_id(raw)


def test_user_id_accepted() -> None:
    assert user_id(42) == "42"
    assert user_id("ada@example.com") == "ada@example.com"
    # Trimmed, as a webhook's user_id is: the same person, whichever way they came in.
    assert user_id("  ada@example.com ") == "ada@example.com"
    # Checked once trimmed, as a webhook's: a line break after it, or spaces around the longest ID.
    assert user_id("ada@example.com\r\n") == "ada@example.com"
    assert user_id(" " + "x" * 256 + " ") == "x" * 256


def test_kept_set_cookie_reads_every_set_cookie() -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict([("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "session=abc.def; HttpOnly")])
    assert kept_set_cookie(headers, "session", NOW, "/", "shop.example") == "abc.def"
    assert kept_set_cookie(headers, "missing", NOW, "/", "shop.example") is None
    assert kept_set_cookie(headers, "sess*", NOW, "/", "shop.example") == "abc.def"


# -- JWT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hs_verified(alg: str) -> None:
    token = hs256({"sub": "u1", "exp": NOW + 60}, b"k" * 32, alg)
    assert read_claims(token, load_key(alg, b"k" * 32), NOW)["sub"] == "u1"


def test_hs_tampered_and_wrong_key_rejected() -> None:
    verifier = load_key("HS256", b"k" * 32)
    token = hs256({"sub": "u1"}, b"k" * 32)
    header, _, sig = token.split(".")
    forged = header + "." + b64(json.dumps({"sub": "admin"}).encode()) + "." + sig
    with pytest.raises(JwtError, match="jwt_signature"):
        read_claims(forged, verifier, NOW)
    with pytest.raises(JwtError, match="jwt_signature"):
        read_claims(hs256({"sub": "u1"}, b"other" * 8), verifier, NOW)


def test_alg_none_and_alg_swap_rejected() -> None:
    verifier = load_key("HS256", b"k" * 32)
    unsigned = signing_input({"sub": "u1"}, "none") + "."
    with pytest.raises(JwtError, match="jwt_algorithm"):
        read_claims(unsigned, verifier, NOW)
    with pytest.raises(JwtError, match="jwt_algorithm"):
        read_claims(hs256({"sub": "u1"}, b"k" * 32, "HS512"), verifier, NOW)


def test_unverified_read_only_without_verifier() -> None:
    token = hs256({"sub": "u1"}, b"whatever-key")
    assert read_claims(token, None, NOW) == {"sub": "u1"}


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"sub": "u", "exp": NOW - 3600}, "jwt_expired"),
        ({"sub": "u", "nbf": NOW + 3600}, "jwt_not_yet_valid"),
        ({"sub": "u", "exp": "tomorrow"}, "jwt_expired"),
    ],
)
def test_exp_and_nbf_checked(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(JwtError, match=reason):
        read_claims(hs256(claims, b"k" * 32), load_key("HS256", b"k" * 32), NOW)
    with pytest.raises(JwtError, match=reason):  # also when not verifying
        read_claims(hs256(claims, b"k" * 32), None, NOW)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# A header or claims nested deeper than Python's json takes (a visitor's own bearer token or
# cookie, under MAX_TOKEN): until 2026-12-05 a RecursionError, the addon's rules skipped.
_NESTED = _b64url(b"[" * 4000 + b"]" * 4000)  # valid JSON, deeper than any parser recurses
DEEP = [f"{_b64url(b'{}')}.{_NESTED}.c2ln", f"{_NESTED}.e30.c2ln"]


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.W10.", "é.é.é", *DEEP])
def test_malformed(token: str) -> None:
    with pytest.raises(JwtError, match="jwt_malformed"):
        read_claims(token, None, NOW)


def test_rs256_with_generated_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = load_key("RS256", pem(key))
    token = rs256({"sub": "u7", "exp": time.time() + 60}, key)
    assert read_claims(token, verifier, time.time())["sub"] == "u7"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(JwtError, match="jwt_signature"):
        read_claims(rs256({"sub": "u7"}, other), verifier, NOW)


def test_es256_with_generated_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier = load_key("ES256", pem(key))
    assert read_claims(es256({"sub": "u8"}, key), verifier, NOW)["sub"] == "u8"
    header, payload, sig = es256({"sub": "u8"}, key).split(".")
    with pytest.raises(JwtError, match="jwt_signature"):
        read_claims(f"{header}.{payload}.{sig[:-4]}", verifier, NOW)
    flipped = b64(bytes([_b64decode(sig)[0] ^ 1]) + _b64decode(sig)[1:])
    with pytest.raises(JwtError, match="jwt_signature"):
        read_claims(f"{header}.{payload}.{flipped}", verifier, NOW)


def test_a_provider_s_x509_certificate_is_a_key() -> None:
    """Until 2026-12-04 only a bare public key was accepted, and Auth0's downloaded signing
    certificate was refused at start-up ("not a PEM public key")."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = load_key("RS256", certificate(rsa_key, "tenant.eu.auth0.com").encode())
    assert read_claims(rs256({"sub": "auth0|65f0c1"}, rsa_key), verifier, NOW)["sub"] == "auth0|65f0c1"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(JwtError, match="jwt_signature"):
        read_claims(rs256({"sub": "u"}, other), verifier, NOW)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert (
        read_claims(es256({"sub": "u8"}, ec_key), load_key("ES256", certificate(ec_key).encode()), NOW)["sub"]
        == "u8"
    )
    with pytest.raises(ValueError, match="not a PEM public key or certificate"):
        load_key("RS256", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError):  # a certificate of the wrong kind, as a key of it
        load_key("RS256", certificate(ec_key).encode())


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_key_of_the_wrong_kind_refused() -> None:
    with pytest.raises(ValueError):
        load_key("RS256", pem(ec.generate_private_key(ec.SECP256R1())))


# -- when: conditions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "body", "holds"),
    [
        ({"equals": "Login"}, {"op": "Login"}, True),
        ({"equals": "Login"}, {"op": "login"}, False),  # exact text
        ({"equals": "Login"}, {"op": "LoginAs"}, False),
        ({"matches": "Place.*"}, {"op": "PlaceOrder"}, True),
        ({"matches": "Place"}, {"op": "PlaceOrder"}, False),  # the whole value
        ({"equals": "3"}, {"op": 3}, True),  # a whole number as written
        ({"equals": "true"}, {"op": True}, True),
        ({"equals": "1"}, {"op": True}, False),
        ({"equals": "1.5"}, {"op": 1.5}, False),  # a fraction is not compared
        ({"matches": ".*"}, {"op": {"a": 1}}, False),  # nor an object
        ({}, {"op": {"a": 1}}, True),  # present
        ({}, {"op": False}, True),
        ({}, {"op": None}, False),  # JSON null is absent
        ({}, {}, False),
        ({"absent": True}, {}, True),
        ({"absent": True}, {"op": None}, True),
        ({"absent": True}, {"op": False}, False),
        ({"absent": True}, {"op": ""}, False),
    ],
)
def test_a_condition_holds_when_its_value_is_there_and_fits(
    condition: dict[str, str], body: dict[str, Any], holds: bool
) -> None:
    check = Condition(ConditionOptions(response_json="/op", **condition))
    ex = exchange("/graphql", method="POST")
    ex.response_body = json.dumps(body).encode()
    assert conditions_hold([check], ex) is holds


@pytest.mark.parametrize(("body", "reason"), [(None, "body_not_read"), (b"<html>", "not_json")])
def test_a_condition_that_cannot_be_read_is_an_error_not_false(body: bytes | None, reason: str) -> None:
    ex = exchange("/graphql", method="POST")
    ex.response_body = body
    with pytest.raises(ExtractError) as err:
        Condition(ConditionOptions(response_json="/op"))(ex)
    assert err.value.reason == reason


def batch(request: Any, response: Any) -> Any:
    ex = exchange("/graphql", method="POST")
    ex.request_body = None if request is None else json.dumps(request).encode()
    raw = isinstance(response, bytes) or response is None
    ex.response_body = response if raw else json.dumps(response).encode()
    return ex


LOGIN = Condition(ConditionOptions(request_json="/operationName", equals="Login"))
ANSWERED = Condition(ConditionOptions(response_json="/data/login/user/id"))


@pytest.mark.parametrize(
    ("request_ops", "response", "picked"),
    [
        ({"operationName": "Login"}, {"data": {"login": {"user": {"id": "u"}}}}, [None]),  # no batch
        ({"operationName": "Viewer"}, {"data": {}}, []),
        (
            [{"operationName": "Viewer"}, {"operationName": "Login"}, {"operationName": "Login"}],
            [{"data": {}}, {"data": {"login": {"user": {"id": "u"}}}}, {"data": {"login": None}}],
            [1],  # the failed login (null) is not picked
        ),
        (
            [{"operationName": "Login"}, {"operationName": "Login"}],
            [{"data": {"login": {"user": {"id": "u"}}}}],
            [0],
        ),
        ([], [], []),
    ],
)
def test_when_picks_the_operations_of_a_batch_it_holds_for(
    request_ops: Any, response: Any, picked: list
) -> None:
    ex = batch(request_ops, response)
    assert holding_operations([LOGIN, ANSWERED], ex) == picked
    user = Extractor(ConditionOptions(response_json="/data/login/user/id"))
    assert [user(ex, op) for op in picked] == ["u"] * len(picked)


def test_a_batch_a_condition_cannot_read_is_counted_as_when_reason() -> None:
    with pytest.raises(ExtractError) as err:  # the answer was not read (over max_body)
        holding_operations([LOGIN, ANSWERED], batch([{"operationName": "Login"}], None))
    assert err.value.reason == "when_body_not_read"
    with pytest.raises(ExtractError) as err:
        holding_operations([ANSWERED], batch({"operationName": "Login"}, b"<html>"))
    assert err.value.reason == "when_not_json"
    # No when: the whole exchange, and a pointer into one operation of a batch is json_array.
    assert holding_operations([], batch([{"operationName": "Login"}], [])) == [None]
    with pytest.raises(ExtractError, match="json_array"):
        Extractor(ConditionOptions(request_json="/operationName"))(batch([{"operationName": "L"}], []))
    # A position still reads that position, whichever operation is picked.
    second = Extractor(ConditionOptions(request_json="/1/operationName"))
    assert second(batch([{"operationName": "A"}, {"operationName": "B"}], []), 0) == "B"


def test_money_scales_before_checking_the_range() -> None:
    assert money(4990, 0.01) == pytest.approx(49.9) and money("1999", 0.01) == pytest.approx(19.99)
    assert money(2e15, 0.01) == pytest.approx(2e13)  # in range once scaled
    assert money(2e15) is None


@pytest.mark.parametrize("name", ["Authorization", "proxy-authorization", "Cookie", "SET-COOKIE"])
def test_a_header_carrying_credentials_is_never_read(name: str) -> None:
    """devise-jwt answers a sign-in with ``Authorization: Bearer <JWT>``: a ``header`` rule
    on it would keep the token as the user ID (in the clear under ``user_id_storage =
    "plain"``). Refused at start-up, and here too should a rule get past the check."""
    from gateway.pipeline import ResponseView

    ex = exchange("/users/sign_in", method="POST", headers={"Authorization": "Bearer a.b.c", "Cookie": "s=1"})
    ex.response = ResponseView(
        200, {"authorization": "Bearer a.b.c", "set-cookie": "s=2", "x-user-id": "u-1"}
    )
    with pytest.raises(ExtractError) as err:
        Extractor(ConditionOptions(header=name))(ex)
    assert err.value.reason == "forbidden_field"
    assert Extractor(ConditionOptions(header="X-User-Id"))(ex) == "u-1"  # any other, as before


# -- captures, paths, cookies, request headers, text bodies -------------------------------------


def answered(ex: Any, body: bytes | None = None, headers: Any = None, status: int = 200) -> Any:
    from gateway.pipeline import ResponseView

    ex.response = ResponseView(status, headers if headers is not None else {})
    ex.response_body = body
    return ex


WC_ANSWER = (
    b'{"result":"success","redirect":"https:\\/\\/shop\\/checkout\\/order-received\\/727\\/?key=wc_order_x"}'
)


@pytest.mark.parametrize(
    ("source", "target", "body", "expected"),
    [
        # WooCommerce's checkout: the order number only in the redirect's path.
        ({"response_json": "/redirect", "capture": "order-received/(\\d+)/"}, "/", WC_ANSWER, "727"),
        ({"response_json": "/id", "capture": "([0-9]+)"}, "/", b'{"id": 727}', "727"),  # a number as text
        ({"response_json": "/ok", "capture": "(t)rue"}, "/", b'{"ok": true}', "t"),
        ({"path": True, "capture": "/checkout/order-received/(\\d+)/"}, "/checkout/order-received/727/", None,
         "727"),
        # The path is read as sent; the captured text's escapes are decoded.
        ({"path": True, "capture": "^/u/([^/]+)/"}, "/u/ada%40example.com/", None, "ada@example.com"),
        ({"path": True}, "/u/ada%40example.com/", None, "/u/ada%40example.com/"),  # whole: as sent
        # A query value is decoded already: a "%" there is one, not decoded twice.
        ({"query": "code", "capture": "(.*)"}, "/?code=50%2525", None, "50%25"),
        ({"query": "code", "capture": "(?P<code>[A-Z]+)-"}, "/?code=SALE-10", None, "SALE"),  # a named group
    ],
)  # fmt: skip
def test_a_capture_s_group_is_the_value(
    source: dict[str, Any], target: str, body: bytes | None, expected: str
) -> None:
    ex = answered(exchange(target), body)
    assert Extractor(ConditionOptions(**source))(ex) == expected


@pytest.mark.parametrize(
    ("capture", "body"),
    [
        ("order-received/(\\d+)/", b'{"redirect": "https://www.paypal.com/checkoutnow?token=EC-1"}'),
        ("([0-9]+)", b'{"redirect": {"url": "/order-received/727/"}}'),  # an object has no text
        ("([0-9]+)", b'{"redirect": 7.5}'),  # nor a fraction
        ("(x)?y", b'{"redirect": "y"}'),  # the group took no part
    ],
)
def test_no_match_is_no_value_counted_as_its_own_reason(capture: str, body: bytes) -> None:
    ex = answered(exchange("/"), body)
    with pytest.raises(ExtractError) as err:
        Extractor(ConditionOptions(response_json="/redirect", capture=capture))(ex)
    assert err.value.reason == "capture_no_match"
    # In a when: no value, so absent holds, and otherwise the condition does not (no error).
    assert Condition(ConditionOptions(response_json="/redirect", capture=capture, absent=True))(ex)
    assert not Condition(ConditionOptions(response_json="/redirect", capture=capture))(ex)


NOW_TS = 1_795_000_000  # 2026-11-18


@pytest.mark.parametrize(
    ("lines", "name", "expected"),
    [
        (["sessionid=k3y; HttpOnly; Path=/"], "sessionid", "k3y"),
        (['sessionid="k3y"; Path=/'], "sessionid", "k3y"),
        # Django's delete_cookie; PHP's deletion (setcookie with an empty value or a past expiry).
        (['sessionid=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/'], "sessionid", None),
        (["sessionid=; Path=/"], "sessionid", None),
        (["w_li_x=%20; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/"], "w_li_*", None),
        (["s=1; expires=Thu, 01-Jan-1970 00:00:01 GMT"], "s", None),  # Expires alone, in the past
        (["s=1; Max-Age=-1"], "s", None),
        (["s=1; expires=Thu, 01 Jan 1970 00:00:01 GMT; Max-Age=3600"], "s", "1"),  # Max-Age wins
        (["s=1; Max-Age=soon; expires=Thu, 01 Jan 1970 00:00:01 GMT"], "s", None),  # not one: ignored
        (["s=1; expires=Wed, 01 Dec 2027 00:00:00 GMT"], "s", "1"),
        (["s=1; expires=whenever"], "s", "1"),  # a date no one reads deletes nothing
        (["session=2"], "sessionid", None),
        # A prefix: the first cookie set (not deleted) whose name starts with it.
        (["wordpress_sec_5d=a%7C1", "wordpress_logged_in_5d=ada%7C1%7Ct%7Ch"], "wordpress_logged_in_*",
         "ada%7C1%7Ct%7Ch"),
        (["wp_li_old=; Max-Age=0", "wp_li_new=bob"], "wp_li_*", "bob"),
        # Applied in order, one cookie per Domain and Path: a later line of the scope replaces
        # an earlier one, a deletion removes it; a missing Path is the request's directory
        # (/accounts/ for /accounts/login).
        (["s=old; Path=/", "s=new; Path=/"], "s", "new"),
        (["s=old", "s=new; Path=/accounts"], "s", "new"),
        (["s=1; Path=/", "s=1; Path=/; Max-Age=0"], "s", None),
        (["s=1; Path=/", "s=; Path=/"], "s", None),
        (["s=1; Domain=.Shop.example; Path=/", "s=; Domain=shop.example; Path=/; Max-Age=0"], "s", None),
        # Another scope is kept beside it: a deletion of one leaves the other.
        (["s=; Path=/; Max-Age=0", "s=2; Domain=shop.example; Path=/"], "s", "2"),
        (["s=1; Domain=shop.example; Path=/", "s=; Path=/; Max-Age=0"], "s", "1"),
        # Two kept: the one the browser sends first, the longest Path, then the one set first
        # (a replacement keeps its place; one set again after a deletion is set last).
        (["s=root; Path=/", "s=deep; Path=/accounts"], "s", "deep"),
        (["s=host; Path=/", "s=domain; Domain=shop.example; Path=/"], "s", "host"),
        (["s=a; Path=/", "s=b; Domain=shop.example; Path=/", "s=a2; Path=/"], "s", "a2"),
        (["s=a; Path=/", "s=b; Domain=shop.example; Path=/", "s=; Path=/; Max-Age=0", "s=a3; Path=/"], "s",
         "b"),
        (["wp_li_a=; Max-Age=0; Path=/", "wp_li_b=bob; Path=/", "wp_li_a=ada; Path=/wp-admin"], "wp_li_*",
         "ada"),
    ],
)  # fmt: skip
def test_a_set_cookie_is_kept_unless_it_deletes_the_cookie(
    lines: list[str], name: str, expected: str | None
) -> None:
    from multidict import CIMultiDict

    headers = CIMultiDict([("Set-Cookie", "csrftoken=t; Path=/"), *(("Set-Cookie", line) for line in lines)])
    assert kept_set_cookie(headers, name, NOW_TS, "/accounts/login", "shop.example") == expected


@pytest.mark.parametrize(
    ("lines", "host", "expected"),
    [
        (["s=1; Path=/"], "shop.example", "1"),  # host-only
        (["s=1; Domain=; Path=/"], "shop.example", "1"),  # an empty Domain is none
        (["s=1; Domain=shop.example; Path=/"], "shop.example", "1"),  # the host itself
        (["s=1; Domain=example.com; Path=/"], "shop.example.com", "1"),  # a parent domain
        (["s=1; Domain=.Example.COM; Path=/"], "shop.example.com", "1"),  # its leading dot, any case
        (["s=1; Domain=example.com; Path=/"], "shop.example.com:8443", "1"),  # the port is no part
        # RFC 6265 §5.3 step 6: a Domain that does not cover the host, the browser refuses.
        (["s=1; Domain=other.example; Path=/"], "shop.example", None),
        (["s=1; Domain=hop.example; Path=/"], "shop.example", None),  # a suffix, not at a dot
        (["s=1; Domain=www.shop.example; Path=/"], "shop.example", None),  # under the host
        (["s=1; Domain=..shop.example; Path=/"], "shop.example", None),  # one dot is dropped
        # Step 5: a public suffix (private ones too) spans many sites, unless it is the host.
        (["s=1; Domain=com; Path=/"], "shop.com", None),
        (["s=1; Domain=.co.uk; Path=/"], "shop.co.uk", None),
        (["s=1; Domain=github.io; Path=/"], "ada.github.io", None),
        (["s=1; Domain=github.io; Path=/"], "github.io", "1"),  # kept, host-only
        # An IP address matches only itself: no parent domain.
        (["s=1; Domain=127.0.0.1; Path=/"], "127.0.0.1:8080", "1"),
        (["s=1; Domain=0.0.1; Path=/"], "127.0.0.1", None),
        (["s=1; Domain=::1; Path=/"], "[::1]:8080", "1"),
        # A line the browser refuses is not the one it sends first (its longer Path): it has none.
        (["s=1; Path=/", "s=2; Domain=other.example; Path=/account"], "shop.example", "1"),
        (["s=evil; Domain=com; Path=/account", "s=ok; Domain=shop.com; Path=/"], "shop.com", "ok"),
    ],
)  # fmt: skip
def test_a_set_cookie_whose_domain_does_not_cover_the_host_is_not_kept(
    lines: list[str], host: str, expected: str | None
) -> None:
    """Until 2026-12-06 any Domain was read as the browser's cookie: ``session=x;
    Domain=other.example`` from ``shop.example`` bound a user the browser never held a session
    for (it refuses the line). ``host`` as the request's ``Host`` names it."""
    from multidict import CIMultiDict

    headers = CIMultiDict(("Set-Cookie", line) for line in lines)
    assert kept_set_cookie(headers, "s", NOW_TS, "/account", host) == expected


def test_a_sent_cookie_by_name_or_prefix() -> None:
    cookies = {"a": "1", "wordpress_logged_in_5d": "ada%7C1", "wordpress_logged_in_6e": "bob", "e": ""}
    assert sent_cookie(cookies, "a") == "1"
    assert sent_cookie(cookies, "wordpress_logged_in_*") == "ada%7C1"  # the first
    assert sent_cookie(cookies, "e") is None and sent_cookie(cookies, "nope*") is None


def test_cookie_reads_the_one_set_else_the_one_sent_and_set_cookie_only_the_one_set() -> None:
    ex = exchange("/wp-login.php", method="POST", cookies={"wordpress_logged_in_5d": "old%7C1"})
    cookie = Extractor(ConditionOptions(cookie="wordpress_logged_in_*", capture="^(.+?)%7C"))
    set_cookie = Extractor(ConditionOptions(set_cookie="wordpress_logged_in_*", capture="^(.+?)%7C"))
    answered(ex, headers={"set-cookie": "wordpress_logged_in_5d=ada%40example.com%7C1%7Ct%7Ch; path=/"})
    assert cookie(ex) == set_cookie(ex) == "ada@example.com"  # percent-escapes decoded
    answered(ex, headers={"set-cookie": "wordpress_logged_in_5d=%20; Max-Age=0"})  # signed out
    assert cookie(ex) == "old"
    with pytest.raises(ExtractError, match="missing"):
        set_cookie(ex)
    assert not Condition(ConditionOptions(set_cookie="wordpress_logged_in_*"))(ex)
    assert Condition(ConditionOptions(set_cookie="wordpress_logged_in_*", absent=True))(ex)


def test_request_and_response_headers_join_repeats_and_never_read_credentials() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    ex = exchange(
        "/login", method="POST", headers={"Next-Action": "a1f0", "Cookie": "s=1", "Authorization": "B x"}
    )
    assert Extractor(ConditionOptions(request_header="next-action"))(ex) == "a1f0"
    with pytest.raises(ExtractError, match="missing"):
        Extractor(ConditionOptions(request_header="X-None"))(ex)
    for name in ("Cookie", "authorization"):
        with pytest.raises(ExtractError, match="forbidden_field"):
            Extractor(ConditionOptions(request_header=name))(ex)
    # The aiohttp host hands over its multi-valued headers: one list, as the mitmproxy host joins.
    ex.request.headers = CIMultiDictProxy(CIMultiDict([("X-Tag", "a"), ("x-tag", "b")]))
    assert Extractor(ConditionOptions(request_header="X-Tag"))(ex) == "a, b"
    # A response header sent on two lines is one list too (until 2026-12-05: its first line).
    answered(ex, headers=CIMultiDictProxy(CIMultiDict([("X-Role", "admin"), ("x-role", "editor")])))
    assert Extractor(ConditionOptions(header="X-Role"))(ex) == "admin, editor"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/x-component", b'0:{"a":"$@1"}\n1:{"ok":true,"user":"ada"}\n', "ada"),
        ("text/html; charset=ISO-8859-1", '<b data-user="José">'.encode("latin-1"), "José"),
        ('text/html; Charset="utf-8"', '<b data-user="José">'.encode(), "José"),
    ],
)
def test_response_text_reads_the_body_in_its_charset(content_type: str, body: bytes, expected: str) -> None:
    ex = answered(exchange("/login", method="POST"), body, {"content-type": content_type})
    assert Extractor(ConditionOptions(response_text=True)).response_body  # the host is asked for it
    found = Extractor(ConditionOptions(response_text=True, capture='(?:"user":"|data-user=")([^"]+)"'))(ex)
    assert found == expected


def test_response_text_that_cannot_be_read() -> None:
    ex = answered(exchange("/"), b"<p>", {"content-type": "text/html; charset=x-nope"})
    with pytest.raises(ExtractError, match="unknown_charset"):
        Extractor(ConditionOptions(response_text=True))(ex)
    with pytest.raises(ExtractError, match="body_not_read"):
        Extractor(ConditionOptions(response_text=True))(answered(exchange("/"), None))
