"""JWT (RFC 7519, compact JWS) reading for identity and conversion rules: verify, then read claims.

Pure functions, no I/O: ``load_key`` turns configured key material (an HMAC
secret, or a PEM public key or X.509 certificate) into a ``Verifier`` for one algorithm (HS/RS/ES
256/384/512, via ``cryptography``); ``read_claims`` checks the signature (the
token's ``alg`` must be the configured one, so ``none`` and algorithm swaps
fail; with a ``KeySet``, against the key its ``kid`` names) and ``exp``/``nbf``
when present. Without a verifier a token is only
decoded — rules allow that only with an explicit ``verify = false``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate

LEEWAY = 30
"""Seconds of clock skew tolerated on ``exp`` and ``nbf``."""
MAX_TOKEN = 8192
_HASHES: dict[str, tuple[Callable[[], Any], type[hashes.HashAlgorithm]]] = {
    "256": (hashlib.sha256, hashes.SHA256),
    "384": (hashlib.sha384, hashes.SHA384),
    "512": (hashlib.sha512, hashes.SHA512),
}
_ES_CURVE = {"ES256": ("secp256r1", 32), "ES384": ("secp384r1", 48), "ES512": ("secp521r1", 66)}


class JwtError(Exception):
    """Why a token was not read; ``reason`` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verifier:
    algorithm: str
    check: Callable[[bytes, bytes], bool]
    """(signing input, signature) → valid."""


def pem_public_key(material: bytes) -> PublicKeyTypes:
    """The key of a PEM public key, or of an X.509 certificate: what Auth0 ("signing
    certificate") and Firebase (Google's ``x509`` key list) hand out. Its dates are not
    checked: a provider's signing certificate is self-signed, the key is what counts."""
    if b"-----BEGIN CERTIFICATE-----" in material:
        return load_pem_x509_certificate(material).public_key()
    return load_pem_public_key(material)


def load_key(algorithm: str, material: bytes) -> Verifier:
    """A verifier for ``algorithm`` with an HMAC secret or a PEM public key (ValueError if unfit)."""
    if algorithm.startswith("HS"):
        digest = _HASHES[algorithm[2:]][0]

        def check_hmac(data: bytes, sig: bytes) -> bool:
            return hmac.compare_digest(hmac.new(material, data, digest).digest(), sig)

        return Verifier(algorithm, check_hmac)
    try:
        public = pem_public_key(material)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key or certificate") from None
    return public_verifier(algorithm, public)


def public_verifier(algorithm: str, public: PublicKeyTypes) -> Verifier:
    """A verifier for RS or ES ``algorithm`` with this public key (ValueError if of another
    kind or curve)."""
    family = algorithm[:2]
    hash_cls = _HASHES[algorithm[2:]][1]
    if family == "RS" and isinstance(public, rsa.RSAPublicKey):
        rsa_key = public

        def check_rsa(data: bytes, sig: bytes) -> bool:
            try:
                rsa_key.verify(sig, data, padding.PKCS1v15(), hash_cls())
            except InvalidSignature:
                return False
            return True

        return Verifier(algorithm, check_rsa)
    curve, size = _ES_CURVE.get(algorithm, ("", 0))
    if family == "ES" and isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == curve:
        ec_key = public

        def check_ec(data: bytes, sig: bytes) -> bool:
            if len(sig) != 2 * size:  # JWS carries r || s, fixed width (RFC 7518 §3.4)
                return False
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            try:
                ec_key.verify(der, data, ec.ECDSA(hash_cls()))
            except InvalidSignature:
                return False
            return True

        return Verifier(algorithm, check_ec)
    raise ValueError(
        f"{algorithm} needs {'an RSA public key' if family == 'RS' else 'an EC public key on ' + curve}"
    )


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass(frozen=True)
class KeySet:
    """The keys a rule verifies with. From a key set (``addons/jwks.py``) the token's ``kid``
    picks the key, and a token without one is checked only when the set holds one key; a
    lone PEM or secret (``by_kid`` false) checks every token, whatever its ``kid``."""

    algorithm: str
    keys: tuple[tuple[str, Verifier], ...]
    """(kid, verifier), in the order given; a kid may come twice (each is tried)."""
    by_kid: bool = True

    @classmethod
    def lone(cls, verifier: Verifier) -> KeySet:
        return cls(verifier.algorithm, (("", verifier),), by_kid=False)

    def pick(self, kid: object) -> list[Verifier]:
        """The keys a token with this ``kid`` (None: none given) is checked with."""
        if not self.by_kid or (kid is None and len(self.keys) == 1):
            return [verifier for _, verifier in self.keys]
        return [verifier for key_id, verifier in self.keys if key_id == kid]


def read_claims(token: str, verifier: Verifier | KeySet | None, now: float) -> dict[str, Any]:
    """The claims of a compact JWS; JwtError(reason) when malformed, badly signed or expired
    (or, with a key set, signed by a key it does not hold: ``jwt_unknown_kid``)."""
    if len(token) > MAX_TOKEN or not token.isascii():
        raise JwtError("jwt_malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("jwt_malformed")
    try:
        header = json.loads(_b64(parts[0]))
        claims = json.loads(_b64(parts[1]))
        signature = _b64(parts[2])
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise JwtError("jwt_malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("jwt_malformed")
    if verifier is not None:
        if header.get("alg") != verifier.algorithm:
            raise JwtError("jwt_algorithm")
        verifiers = verifier.pick(header.get("kid")) if isinstance(verifier, KeySet) else [verifier]
        if not verifiers:
            raise JwtError("jwt_unknown_kid")
        data = f"{parts[0]}.{parts[1]}".encode()
        if not any(v.check(data, signature) for v in verifiers):
            raise JwtError("jwt_signature")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None and (not _is_number(exp) or now > exp + LEEWAY):
        raise JwtError("jwt_expired")
    if nbf is not None and (not _is_number(nbf) or now < nbf - LEEWAY):
        raise JwtError("jwt_not_yet_valid")
    return claims


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
