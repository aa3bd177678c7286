"""JWT key sets: a JWKS or Google's x509 map parsed for a rule's algorithm, the token's ``kid``
picking the key, and a key file followed while it is replaced (real files, a real loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import addons.jwks
from addons.jwks import RuleKeys, parse_key_set
from addons.jws import JwtError, read_claims
from tests.jwts import CURVE, b64, certificate, jwk, jwks, token

NOW = 1_800_000_000


RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def reason(error: pytest.ExceptionInfo[JwtError]) -> str:
    return error.value.reason


def test_a_jwks_token_s_kid_picks_its_key() -> None:
    keys = parse_key_set("RS256", jwks(jwk(RSA_A, "a"), jwk(RSA_B, "b")))
    assert read_claims(token({"sub": "u1"}, RSA_A, "RS256", "a"), keys, NOW)["sub"] == "u1"
    assert read_claims(token({"sub": "u2"}, RSA_B, "RS256", "b"), keys, NOW)["sub"] == "u2"
    with pytest.raises(JwtError) as err:  # a kid the set names, a signature of another key
        read_claims(token({"sub": "u1"}, RSA_A, "RS256", "b"), keys, NOW)
    assert reason(err) == "jwt_signature"
    with pytest.raises(JwtError) as err:
        read_claims(token({"sub": "u1"}, RSA_A, "RS256", "c"), keys, NOW)
    assert reason(err) == "jwt_unknown_kid"
    with pytest.raises(JwtError) as err:  # no kid: which of two keys is not guessed
        read_claims(token({"sub": "u1"}, RSA_A, "RS256", None), keys, NOW)
    assert reason(err) == "jwt_unknown_kid"
    with pytest.raises(JwtError) as err:  # the token's alg is still the rule's
        read_claims(token({"sub": "u1"}, RSA_A, "RS384", "a"), keys, NOW)
    assert reason(err) == "jwt_algorithm"


def test_a_token_without_kid_is_checked_against_a_set_of_one_key() -> None:
    keys = parse_key_set("RS256", jwks(jwk(RSA_A, "a")))
    assert read_claims(token({"sub": "u1"}, RSA_A, "RS256", None), keys, NOW)["sub"] == "u1"
    with pytest.raises(JwtError) as err:
        read_claims(token({"sub": "u1"}, RSA_B, "RS256", None), keys, NOW)
    assert reason(err) == "jwt_signature"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "ES512"])
def test_ec_keys_of_each_curve(alg: str) -> None:
    curve, crv = CURVE[alg]
    key, other = ec.generate_private_key(curve()), ec.generate_private_key(curve())
    keys = parse_key_set(alg, jwks(jwk(other, "old"), jwk(key, "new", alg=alg, use="sig")))
    assert read_claims(token({"sub": crv}, key, alg, "new"), keys, NOW)["sub"] == crv
    with pytest.raises(JwtError) as err:
        read_claims(token({"sub": crv}, key, alg, "old"), keys, NOW)
    assert reason(err) == "jwt_signature"


def test_google_s_x509_map_of_key_ids_to_certificates() -> None:
    """Firebase ID tokens: ``securetoken@system.gserviceaccount.com``'s x509 list, two keys."""
    document = {"kid-1": certificate(RSA_A), "kid-2": certificate(RSA_B)}
    keys = parse_key_set("RS256", json.dumps(document).encode())
    assert (
        read_claims(token({"sub": "firebase-uid"}, RSA_B, "RS256", "kid-2"), keys, NOW)["sub"]
        == "firebase-uid"
    )
    with pytest.raises(JwtError) as err:
        read_claims(token({"sub": "u"}, RSA_B, "RS256", "kid-3"), keys, NOW)
    assert reason(err) == "jwt_unknown_kid"


def test_keys_the_rule_cannot_use_are_left_out() -> None:
    """Another alg, a ``use`` other than ``sig``, another kind or curve, an unknown kty: left out
    (a token naming one counts ``jwt_unknown_kid``); the rest of the set is used."""
    p384 = ec.generate_private_key(ec.SECP384R1())
    document = jwks(
        jwk(RSA_B, "enc", use="enc"),
        jwk(RSA_B, "ps", alg="PS256"),
        jwk(p384, "p384"),
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        jwk(RSA_A, "good", alg="RS256"),
    )
    keys = parse_key_set("RS256", document)
    assert [kid for kid, _ in keys.keys] == ["good"]
    for kid in ("enc", "ps", "p384", "ed"):
        with pytest.raises(JwtError) as err:
            read_claims(token({"sub": "u"}, RSA_B, "RS256", kid), keys, NOW)
        assert reason(err) == "jwt_unknown_kid"
    with pytest.raises(
        ValueError, match=r"holds no key for ES256: left out kid 'enc' \(use 'enc'\), kid 'ps'"
    ):
        parse_key_set("ES256", document)


def test_a_lone_pem_checks_every_token_whatever_its_kid() -> None:
    """As before key sets: Auth0's signing certificate verifies its tokens, which carry a kid."""
    keys = parse_key_set("RS256", certificate(RSA_A).encode())
    assert read_claims(token({"sub": "u"}, RSA_A, "RS256", "any"), keys, NOW)["sub"] == "u"
    assert read_claims(token({"sub": "u"}, RSA_A, "RS256", None), keys, NOW)["sub"] == "u"


def test_an_hmac_secret_that_looks_like_json_is_a_secret() -> None:
    keys = parse_key_set("HS256", b'{"keys": []}')
    assert len(keys.keys) == 1 and not keys.by_kid


@pytest.mark.parametrize(
    ("material", "problem"),
    [
        (b'{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}', "kid 's' is a shared secret (\"oct\")"),
        (b'{"keys": [', "a key set must be JSON"),
        (b'{"keys": {}}', '"keys" is a list'),
        (b'{"keys": ["x"]}', "keys[0] is not a JSON object"),
        (b'{"keys": [{"kty": "RSA", "kid": 7}]}', "keys[0].kid is not a string"),
        (b'{"keys": [{"kty": "RSA", "n": "a+b/", "e": "AQAB"}]}', "keys[0].n is not base64url"),
        (b'{"keys": [{"kty": "RSA", "e": "AQAB"}]}', "keys[0].n is not base64url"),
        (b'{"keys": []}', "the key set holds no key for RS256"),
        (b'{"issuer": 1}', "neither a JWKS"),
        (b"{}", "neither a JWKS"),
        (
            b'{"k1": "-----BEGIN CERTIFICATE-----\\nnope\\n-----END CERTIFICATE-----\\n"}',
            "kid 'k1' is not a PEM",
        ),
        (b"[]", "not a PEM public key or certificate, nor a JSON key set"),
        (b"{" + b" " * addons.jwks.MAX_KEY_FILE, "larger than 1048576 bytes"),
    ],
)
def test_a_key_set_that_cannot_be_used_says_why(material: bytes, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_key_set("RS256", material)
    assert problem in str(err.value)


def test_an_ec_point_off_its_curve_or_of_the_wrong_width_is_refused() -> None:
    key = jwk(ec.generate_private_key(ec.SECP256R1()), "k")
    with pytest.raises(ValueError, match="kid 'k' is not a valid EC public key"):
        parse_key_set("ES256", jwks({**key, "y": key["x"]}))
    with pytest.raises(ValueError, match=r"keys\[0\].x is 31 bytes, not 32"):
        parse_key_set("ES256", jwks({**key, "x": b64(b"\1" * 31)}))


# -- a key file followed while it changes --------------------------------------------------------


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look at key files every 20 ms rather than every few seconds."""
    monkeypatch.setattr(addons.jwks, "CHECK_EVERY", 0.02)


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def replace(path: Path, data: bytes | None) -> None:
    """As a cron job does: write aside, then rename over (atomic); None: remove the file."""
    if data is None:
        path.unlink()
        return
    aside = path.with_suffix(".tmp")
    aside.write_bytes(data)
    os.replace(aside, path)


async def settled(keys: RuleKeys, looks: int = 3) -> None:
    """Until ``keys`` has looked at its file ``looks`` times more, the second of them begun
    after this was called: what the file holds now has been seen (a sleep instead let a test
    that expects nothing new pass when, on a loaded machine, no look had come)."""
    enough = keys.looks + max(looks, 2)
    await until(lambda: keys.looks >= enough)


async def until(holds: Callable[[], bool], timeout: float = 10) -> None:
    """Wait for the key file to have been looked at and ``holds()``."""
    deadline = time.monotonic() + timeout
    while not holds():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(addons.jwks.CHECK_EVERY)


def kids(keys: RuleKeys) -> list[str]:
    return [kid for kid, _ in keys.current.keys]


async def test_a_replaced_key_file_is_used_and_a_broken_one_leaves_the_keys_before(
    tmp_path: Path, quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = await asyncio.to_thread(written, tmp_path / "keys.json", jwks(jwk(RSA_A, "a")))
    keys = RuleKeys("identity.rules[0].user_id.key (rule 'login')", "RS256", jwks(jwk(RSA_A, "a")), path)
    caplog.set_level(logging.INFO, "gateway.jwks")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    keys.start()
    try:
        await asyncio.to_thread(replace, path, jwks(jwk(RSA_A, "a"), jwk(RSA_B, "b")))
        await until(lambda: kids(keys) == ["a", "b"])
        assert read_claims(token({"sub": "u"}, RSA_B, "RS256", "b"), keys.current, NOW)["sub"] == "u"
        broken = (b'{"keys": [', b"", jwks(jwk(RSA_A, "a", kty="oct")), None)
        for count, data in enumerate(broken, 1):  # None: the file is gone
            await asyncio.to_thread(replace, path, data)
            await until(lambda: len(warnings()) == count)  # noqa: B023 (awaited in this turn)
            assert kids(keys) == ["a", "b"]
        await settled(keys)  # looked at again and again, each broken state logged once
        logged = warnings()
        assert len(logged) == 4, logged
        assert logged[0].startswith(
            f"identity.rules[0].user_id.key (rule 'login'): {path}: a key set must be JSON"
        )
        assert logged[0].endswith("; still verifying with the keys read before (kid a, b)")
        assert "not a PEM public key or certificate, nor a JSON key set" in logged[1]
        assert "kid 'a' is a shared secret" in logged[2]
        assert ": cannot read it: No such file or directory; still verifying" in logged[3]
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert len(said) == 1 and said[0].endswith("keys.json changed: verifying with kid a, b"), said
        await asyncio.to_thread(replace, path, jwks(jwk(RSA_A, "a"), jwk(RSA_B, "b")))  # back as it was
        await until(lambda: len(caplog.records) == 6)
        assert caplog.records[-1].getMessage().endswith("keys.json is as it was again (kid a, b)")
        await asyncio.to_thread(replace, path, jwks(jwk(RSA_B, "b")))
        await until(lambda: kids(keys) == ["b"])
        with pytest.raises(JwtError) as err:  # the key taken out of the file is gone
            read_claims(token({"sub": "u"}, RSA_A, "RS256", "a"), keys.current, NOW)
        assert reason(err) == "jwt_unknown_kid"
    finally:
        keys.stop()


async def test_a_key_file_rewritten_as_it_was_is_not_read_again_nor_logged(
    tmp_path: Path, quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = await asyncio.to_thread(written, tmp_path / "keys.json", jwks(jwk(RSA_A, "a")))
    keys = RuleKeys("conversions[0].when[0].key (rule 'buy')", "RS256", jwks(jwk(RSA_A, "a")), path)
    before = keys.current
    caplog.set_level(logging.INFO, "gateway.jwks")
    keys.start()
    try:
        for _ in range(3):  # a cron fetching the same keys every few minutes
            await asyncio.to_thread(replace, path, jwks(jwk(RSA_A, "a")))
            await settled(keys)
        assert keys.current is before
        assert caplog.records == []
    finally:
        keys.stop()


async def test_a_pem_file_is_followed_too_until_stopped(tmp_path: Path, quick: None) -> None:
    path = await asyncio.to_thread(written, tmp_path / "keys.pem", certificate(RSA_A).encode())
    keys = RuleKeys(
        "identity.rules[0].user_id.key (rule 'login')", "RS256", certificate(RSA_A).encode(), path
    )
    claims = {"sub": "u"}
    keys.start()
    await asyncio.to_thread(replace, path, certificate(RSA_B).encode())
    await until(lambda: keys.material != certificate(RSA_A).encode())
    assert read_claims(token(claims, RSA_B, "RS256", "any"), keys.current, NOW) == claims
    keys.stop()
    looked = keys.looks
    await asyncio.to_thread(replace, path, certificate(RSA_A).encode())
    # Another follower of the file, still running, sees the change: the stopped one would have.
    witness = RuleKeys("witness", "RS256", certificate(RSA_B).encode(), path)
    witness.start()
    try:
        await until(lambda: witness.material == certificate(RSA_A).encode())
        await settled(witness)
    finally:
        witness.stop()
    assert keys.looks == looked
    assert read_claims(token(claims, RSA_B, "RS256", "any"), keys.current, NOW) == claims


async def test_a_named_pipe_or_a_device_put_in_the_key_file_s_place_is_not_read(
    tmp_path: Path, quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening a named pipe waits for a writer: a FIFO renamed over the key file (or a
    symlink swapped to one, or to /dev/zero) hung the look in its thread for ever, so no later
    file was read, and the process's exit waited on that thread. Now it is said, once each,
    and the keys before stay in use until a key file is there again."""
    path = await asyncio.to_thread(written, tmp_path / "keys.json", jwks(jwk(RSA_A, "a")))
    keys = RuleKeys("identity.rules[0].user_id.key (rule 'login')", "RS256", jwks(jwk(RSA_A, "a")), path)
    caplog.set_level(logging.INFO, "gateway.jwks")
    fifo, held = tmp_path / "fifo", tmp_path / "fifo-held"
    await asyncio.to_thread(os.mkfifo, fifo)
    await asyncio.to_thread(os.link, fifo, held)  # to release a reader stuck on it, below
    keys.start()
    try:
        await asyncio.to_thread(os.replace, fifo, path)
        await until(lambda: any("named pipe" in r.getMessage() for r in caplog.records), timeout=3)
        zero = tmp_path / "zero"
        await asyncio.to_thread(os.symlink, "/dev/zero", zero)
        await asyncio.to_thread(os.replace, zero, path)
        await until(lambda: any("a device" in r.getMessage() for r in caplog.records), timeout=3)
        await asyncio.to_thread(replace, path, jwks(jwk(RSA_B, "b")))
        await until(lambda: kids(keys) == ["b"], timeout=3)
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert logged == [
            f"identity.rules[0].user_id.key (rule 'login'): {path}: it is {what}, not a file; "
            "still verifying with the keys read before (kid a)"
            for what in ("a named pipe", "a device")
        ]
    finally:
        keys.stop()
        with contextlib.suppress(OSError):  # a look stuck opening the pipe: let it go
            os.close(os.open(held, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_key_file_behind_swapped_symlinks_is_followed(tmp_path: Path, quick: None) -> None:
    """A Kubernetes Secret or ConfigMap volume: ``keys.json`` links to ``..data/keys.json``,
    and an update swaps the ``..data`` link to a new folder at once; the file the rule names
    never changes itself. The look follows the links, so it sees the new keys."""

    def publish(version: str, data: bytes) -> None:
        folder = tmp_path / version
        folder.mkdir()
        (folder / "keys.json").write_bytes(data)
        link = tmp_path / "..data_tmp"
        link.symlink_to(version)
        os.replace(link, tmp_path / "..data")

    await asyncio.to_thread(publish, "..v1", jwks(jwk(RSA_A, "a")))
    path = tmp_path / "keys.json"
    await asyncio.to_thread(path.symlink_to, "..data/keys.json")
    keys = RuleKeys("identity.rules[0].user_id.key (rule 'login')", "RS256", jwks(jwk(RSA_A, "a")), path)
    keys.start()
    try:
        await asyncio.to_thread(publish, "..v2", jwks(jwk(RSA_A, "a"), jwk(RSA_B, "b")))
        await until(lambda: kids(keys) == ["a", "b"], timeout=3)
    finally:
        keys.stop()
