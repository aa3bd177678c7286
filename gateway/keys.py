"""Key material: every key the gateway uses, derived from the one master secret by HKDF.

Owns the derivation labels, so two purposes can never share a key, and the
keyed forms that turn raw identifiers into the keys stored at rest: the
visitor key (always a keyed hash) and the user key (a keyed hash, a
deterministic AES-SIV ciphertext that exports can decrypt, or — only when the
operator says so — the plain user ID); the spellings of a raw ID in text (``spellings``),
for what must find it or take it out; and the visitor cookies a text holds written as the
``Cookie`` header has them (``visitor_cookies``), for whoever names a visitor so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

USER_KEY_MODES = ("hash", "encrypt", "plain")
MAX_USER_ID = 256
"""Longest user ID accepted (characters); longer ones are refused where they arrive."""
MAX_VISITOR_ID = 2000
"""Longest raw visitor ID an operator may name (characters): a sender's or an import's, at most
``campaign.max_value_length`` (itself at most 2000); the cookie's own are 22."""


def operator_user_id(given: str) -> tuple[str, str | None]:
    """A user ID an operator gives (admin API, CLI) as intake reads one, trimmed (" alice " is
    alice, as every webhook and rule records it), and why it cannot name a user (None if it can)."""
    user_id = given.strip()
    expected = f"expected 1..{MAX_USER_ID} printable characters"
    if not user_id:
        return user_id, f"{expected}, got {'white space only' if given else 'none'}"
    if len(user_id) > MAX_USER_ID:
        return user_id, f"{expected}, got {len(user_id):,} characters"
    if not user_id.isprintable():
        # Where and what, never the ID itself: a pasted tab or newline is found by its place.
        at = next(i for i, c in enumerate(user_id) if not c.isprintable())
        return user_id, f"{expected}, got {ascii(user_id[at])[1:-1]} at character {at + 1}"
    return user_id, None


_ENCRYPTED = "siv:"
_VISITOR_KEY = re.compile(r"[0-9a-f]{32}")
_PLAIN = "id:"


_SEALED = re.compile(r"[A-Za-z0-9_-]+")


def named_user_key(given: str) -> str | None:
    """The stored user key an operator names as ``given`` (trimmed already), when it has the
    shape of one (``Keys.user_key``): 32 hex digits (``hash``; read lower-cased), ``siv:`` and
    base64url (``encrypt``), ``id:`` and an ID (``plain``); None otherwise. A journey's header
    and the conversions download show these: the user lookup reads them as a key first."""
    if _VISITOR_KEY.fullmatch(given.lower()):
        return given.lower()
    if given.startswith(_ENCRYPTED) and _SEALED.fullmatch(given[len(_ENCRYPTED) :]):
        return given
    if given.startswith(_PLAIN) and len(given) > len(_PLAIN):
        return given
    return None


_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 6265's token: a cookie's name."""
_HEADER_LINE = re.compile(r"cookie:\s*", re.IGNORECASE)
"""The name a ``Cookie`` header's line starts with, pasted whole into a visitor lookup."""
MAX_COOKIE_HEADER = 8192
"""Longest sender's ``visitor_id`` read as a whole ``Cookie`` header (a server's header line limit, as
nginx's 8 KB); a raw visitor ID stays at ``campaign.max_value_length``."""


def _unquoted(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _is_ours(value: str) -> bool:
    return value.startswith("v1.") and value.count(".") == 2


def visitor_cookies(given: str) -> list[str] | None:
    """The values of ours (``v1.<id>.<tag>``) that ``given`` holds, written as a cookie is: the
    value alone (in the DQUOTEs RFC 6265 §4.1.1 allows, which a Java container keeps), a
    ``name=value`` pair, or a whole ``Cookie`` header a site's backend passed on (``session=…;
    gw_vid=v1.…; _ga=…``: each of ours in it, in order, as the gateway reads the header). None
    when it holds none: a raw visitor ID (``a=b`` too)."""
    alone = _unquoted(given)
    if _is_ours(alone):
        return [alone]
    found = []
    for pair in given.split(";"):
        name, sep, value = pair.partition("=")
        value = _unquoted(value)
        if sep and _COOKIE_NAME.fullmatch(name.strip()) and _is_ours(value):
            found.append(value)
    return found or None


def named_visitor_id(given: str) -> str | None:
    """The raw visitor ID an operator names as ``given`` (trimmed already): ``given`` itself, or
    the ID a cookie value (``v1.<id>.<tag>``, read as ``gateway.mapping`` reads a sender's)
    holds; None when no intake would record it (empty, too long, not printable)."""
    raw = given.split(".")[1] if given.startswith("v1.") and given.count(".") == 2 else given
    return raw if 0 < len(raw) <= MAX_VISITOR_ID and raw.isprintable() else None


def visitor_id_refused(given: str) -> str:
    """Why ``given`` (as the operator gave it, untrimmed) names no visitor, when
    ``named_visitor_id`` of it trimmed is None: what a lookup takes, and what it got, said as
    ``operator_user_id`` says it (how long, which character where; never the text itself)."""
    trimmed = given.strip()
    raw = trimmed.split(".")[1] if trimmed.startswith("v1.") and trimmed.count(".") == 2 else trimmed
    expected = (
        f"expected a visitor_key (32 hex digits), a visitor ID (1..{MAX_VISITOR_ID} printable"
        " characters) or a cookie value"
    )
    if not trimmed:
        return f"{expected}, got {'white space only' if given else 'none'}"
    if not raw:
        return f"{expected}, got a cookie value with no visitor ID in it"
    if len(raw) > MAX_VISITOR_ID:
        return f"{expected}, got {len(raw):,} characters"
    at = next((i for i, c in enumerate(trimmed) if not c.isprintable()), None)
    if at is not None:
        return f"{expected}, got {ascii(trimmed[at])[1:-1]} at character {at + 1}"
    return expected


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_NAMES_SHOWN = 5


def _shortened(text: str, most: int) -> str:
    return repr(text if len(text) <= most else text[:most] + "…")


def unlike_a_visitor(given: str, cookie_name: str) -> str | None:
    """Why ``given`` (trimmed), under which nothing is recorded, is not what a visitor lookup
    takes, when it has the shape of something else pasted: a URL (a page's address), the
    ``cookie_name`` cookie with a value not of ours (``gw_vid=`` and an empty or other value),
    or cookies none of which is ours (``session=…; _ga=…``, or a ``Cookie:`` line). None for any
    other text: a sender may name any printable text as a visitor ID, so these are told only
    once nothing was found under them. Never a cookie's value other than ours: it may be a
    session's."""
    forms = (
        f"expected a visitor_key (32 hex digits), a visitor ID (1..{MAX_VISITOR_ID} printable"
        f" characters) or the {cookie_name} cookie's value (v1.<id>.<tag>: alone, as"
        f" {cookie_name}=v1.… or in a Cookie header)"
    )
    if scheme := _URL.match(given):
        # Its scheme and host alone: a password before the host, a token in the path or query
        # (a reset link's, a session's) is echoed nowhere (until 2026-12-07 its first 40 characters).
        host = re.split(r"[/?#\\]", given[scheme.end() :], maxsplit=1)[0].rpartition("@")[2]
        return (
            f"{forms}, got a URL of {scheme.group()}{_shortened(host, 40)[1:-1]} ({len(given):,} characters;"
            " what follows its host not shown: a session's token may be in it)"
        )
    header = given[line.end() :] if (line := _HEADER_LINE.match(given)) else given
    if visitor_cookies(header) is not None:  # ours, whose visitor left nothing: the plain 404
        return None
    pairs = [(name.strip(), sep, value) for name, sep, value in (p.partition("=") for p in header.split(";"))]
    pairs = [pair for pair in pairs if pair != ("", "", "")]
    if not pairs and line is not None:  # "Cookie:" of a request that sent none (until 2026-12-08 an ID)
        return f"{forms}, got a Cookie header with no cookie in it"
    if not pairs or not all(sep and _COOKIE_NAME.fullmatch(name) for name, sep, _ in pairs):
        return None
    ours = [_unquoted(value) for name, _, value in pairs if name == cookie_name]
    if ours and not ours[0]:
        empty = "as the gateway leaves it when consent is refused or withdrawn"
        got = f"a {cookie_name} cookie with no value ({empty})"
    elif ours:
        got = f"a {cookie_name} cookie whose value is not the gateway's, {_shortened(ours[0], 20)}"
    elif line is None and len(pairs) < 2:
        return None  # one name=value alone: a raw ID may hold a "=" (base64's padding)
    else:
        names = [name for name, _, _ in pairs]
        more = f" and {len(names) - _NAMES_SHOWN:,} more" if len(names) > _NAMES_SHOWN else ""
        shown = ", ".join(_shortened(n, 40)[1:-1] for n in names[:_NAMES_SHOWN])
        got = f"cookies {shown}{more} (values not shown), none of them {cookie_name}"
    return f"{forms}, got {got}"


def is_plain_key(user_key: str) -> bool:
    """Whether ``user_key`` is the raw user ID itself (``user_id_storage = "plain"``)."""
    return user_key.startswith(_PLAIN)


class Mac:
    """HMAC-SHA256 under one fixed key, with the key's inner and outer pads hashed once.

    Gives exactly ``hmac.new(key, msg, hashlib.sha256).digest()`` at about a third of its cost:
    ``hmac.new`` re-derives both pads on every call, and the hot path MACs every request.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def derive(master: bytes, label: str, length: int = 32) -> bytes:
    """One purpose-bound key from the master secret (HKDF-SHA256, label as ``info``)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label.encode())
    return hkdf.derive(master)


def key_check(master: bytes) -> str:
    """A value that tells whether two gateways hold the same ``identity.secret`` without telling
    the secret (HKDF under a label of its own, 32 hex digits): recorded in the central store by
    every node, so that one syncing under another secret is found (``storage.sync``)."""
    return derive(master, "gateway/key-check/v1", 16).hex()


@dataclass(frozen=True)
class Keys:
    cookie_mac: bytes
    visitor_hash: bytes
    user_hash: bytes = b""
    user_siv: bytes = field(default=b"", repr=False)
    user_mode: str = "hash"
    """How user IDs are kept at rest: ``hash``, ``encrypt`` or ``plain`` (``identity.user_id_storage``)."""
    _visitor_mac: Mac = field(init=False, repr=False, compare=False)
    _user_mac: Mac = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_visitor_mac", Mac(self.visitor_hash))
        object.__setattr__(self, "_user_mac", Mac(self.user_hash))

    @classmethod
    def from_master(cls, master: bytes, user_mode: str = "hash") -> Keys:
        if user_mode not in USER_KEY_MODES:
            raise ValueError(f"user_mode must be one of {USER_KEY_MODES}, got {user_mode!r}")
        return cls(
            cookie_mac=derive(master, "gateway/cookie-mac/v1"),
            visitor_hash=derive(master, "gateway/visitor-key/v1"),
            user_hash=derive(master, "gateway/user-key/v1"),
            user_siv=derive(master, "gateway/user-siv/v1", 64),
            user_mode=user_mode,
        )

    def visitor_key(self, visitor_id: str) -> str:
        """The only form of a visitor ID that is ever stored: a keyed hash, 32 hex digits."""
        # The first 16 bytes in hex: the first 32 digits of the whole digest's, without them.
        return self._visitor_mac.digest(visitor_id.encode())[:16].hex()

    def named_visitor_keys(self, given: str) -> list[str]:
        """The keys of the visitor an operator names as ``given`` (trimmed already): ``given``
        itself when it is a visitor_key (32 hex digits), then the key of the visitor each cookie
        value of ours it holds names (``visitor_cookies``, as ``gateway.mapping`` reads a
        sender's), then the key of the raw visitor ID it is or, a cookie value (``v1.<id>.<tag>``),
        holds. Empty: ``given`` names no visitor. The journey lookup and an erasure read these."""
        keys: list[str] = []
        if _VISITOR_KEY.fullmatch(given.lower()):
            keys.append(given.lower())
        # The cookie as the browser sent it (gw_vid=v1.…, the whole Cookie header, quoted): the
        # visitor in it; then the text's own key, which a sender's such ID was kept under before.
        # The header's whole line too, as a browser's developer tools copy it ("Cookie: gw_vid=…").
        header = given[line.end() :] if (line := _HEADER_LINE.match(given)) else given
        keys += [self.visitor_key(value.split(".")[1]) for value in visitor_cookies(header) or ()]
        raw = named_visitor_id(given)
        if raw is not None:
            keys.append(self.visitor_key(raw))
        return list(dict.fromkeys(keys))

    def user_key(self, user_id: str) -> str:
        """The stored form of a site's user ID, per ``user_mode``; the same ID always gives the
        same key, so a user is found again by their raw ID.

        hash: 32 hex digits (HMAC-SHA256); encrypt: ``siv:`` + base64url AES-SIV ciphertext
        (deterministic, decrypted by ``recover_user_id``); plain: ``id:`` + the ID.
        """
        if self.user_mode == "encrypt":
            sealed = AESSIV(self.user_siv).encrypt(user_id.encode(), None)
            return _ENCRYPTED + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
        if self.user_mode == "plain":
            return _PLAIN + user_id
        return self._user_mac.digest(user_id.encode()).hex()[:32]

    def user_keys(self, user_id: str, lowercased: bool = False) -> list[str]:
        """Every form ``user_id`` may be stored under: this mode's key first, then the other
        modes' (``identity.user_id_storage`` may have changed since rows were written; an
        erasure must find them all); with ``lowercased`` (an identity rule lower-cases the IDs
        it reads), those of the lower-cased ID too."""
        keys = [self.user_key(user_id)]
        for form in dict.fromkeys([user_id, user_id.lower() if lowercased else user_id]):
            for mode in USER_KEY_MODES:
                key = replace(self, user_mode=mode).user_key(form)
                if key not in keys:
                    keys.append(key)
        return keys

    def recover_user_id(self, user_key: str) -> str | None:
        """The raw user ID behind a stored key, when the mode keeps it recoverable; else None."""
        if user_key.startswith(_PLAIN):
            return user_key[len(_PLAIN) :]
        if user_key.startswith(_ENCRYPTED):
            data = user_key[len(_ENCRYPTED) :]
            try:
                sealed = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
                return AESSIV(self.user_siv).decrypt(sealed, None).decode()
            except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
                return None
        return None


def spellings(raw_user_id: str) -> set[str]:
    """The ways a text can spell a raw user ID: as typed, and inside a JSON string as senders'
    libraries escape it: Python's ``json`` writes ``ö`` as ``\\u00f6``, PHP's ``json_encode`` a
    ``/`` as ``\\/``, either or both. For an erasure's search of kept bad bodies (kept as they
    came, JSON or not) and for a destination's answer quoting a message (``without_user_ids``)."""
    escaped = {json.dumps(raw_user_id)[1:-1], json.dumps(raw_user_id, ensure_ascii=False)[1:-1]}
    return {raw_user_id} | escaped | {form.replace("/", "\\/") for form in escaped}
