"""Key material: every key the gateway uses, derived from the one master secret by HKDF.

Owns the derivation labels, so two purposes can never share a key, and the
keyed hashes that turn raw identifiers into the keys stored at rest.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive(master: bytes, label: str, length: int = 32) -> bytes:
    """One purpose-bound key from the master secret (HKDF-SHA256, label as ``info``)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode())
    return hkdf.derive(master)


@dataclass(frozen=True)
class Keys:
    cookie_mac: bytes
    visitor_hash: bytes

    @classmethod
    def from_master(cls, master: bytes) -> Keys:
        return cls(
            cookie_mac=derive(master, "gateway/cookie-mac/v1"),
            visitor_hash=derive(master, "gateway/visitor-key/v1"),
        )

    def visitor_key(self, visitor_id: str) -> str:
        """The only form of a visitor ID that is ever stored: a keyed hash, 32 hex digits."""
        return hmac.new(self.visitor_hash, visitor_id.encode(), hashlib.sha256).hexdigest()[:32]
