"""Bad-event bodies and reasons sealed at rest: a kept payload may hold raw user IDs, and a
reason quotes the values it refuses, so both are stored encrypted.

AES-GCM under a key derived from the master secret (label ``gateway/bad-body/v1``),
a random nonce per body; stored as ``gcm:`` + base64url(nonce + ciphertext).
``gateway replay-bad`` and ``GET /api/bad-events`` open it again; nothing else can.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.keys import derive

_PREFIX = "gcm:"


def body_key(master: bytes) -> bytes:
    return derive(master, "gateway/bad-body/v1")


def seal(key: bytes, text: str) -> str:
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, text.encode(), None)
    return _PREFIX + base64.urlsafe_b64encode(sealed).decode()


def unseal(key: bytes, stored: str) -> str | None:
    """The body as received; None when it was sealed under another secret or is damaged."""
    if not stored.startswith(_PREFIX):
        return stored  # written unsealed (by an older gateway): already readable
    try:
        raw = base64.urlsafe_b64decode(stored[len(_PREFIX) :])
        return AESGCM(key).decrypt(raw[:12], raw[12:], None).decode()
    except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
        return None
