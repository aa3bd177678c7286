"""What sinks send: Segment-spec ``identify`` and ``track`` messages, and their packing into batches.

Pure functions over rows as dicts (no I/O). Owns the message shapes, the
deterministic ``messageId``s (from the event id, and for identify also from
its traits, so a retry or a re-send never counts twice while changed traits
still go out) and the batch limits (message count, bytes per batch, bytes per
message).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.events import iso
from gateway.har import printable
from gateway.keys import spellings
from gateway.options import SinkOptions

log = logging.getLogger("gateway.sinks")

TRAIT_FIELDS = ("source", "medium", "campaign", "term", "content", "channel", "creator_id")
TRACK_PROPERTIES = (
    *TRAIT_FIELDS,
    "sub_id",
    "click_id_kind",
    "referrer_host",
    "landing_path",
    "node",
    "verdict",  # the bot verdict it was scored with: a destination can leave out a click farm
)
EVENT = "Source Identified"
ONE_DAY = frozenset({"cookieless", "no_consent"})
"""Populations (``Touchpoint.consent``) keyed by a one-day hash of (host, IP, user agent), which
everyone behind the same address and browser shares that day: never an ``anonymousId``, since a
destination merges the profiles that share one (Segment's identity resolution)."""
_ENVELOPE = 200
"""Bytes a batch body adds around its messages (``{"batch": [...], "sentAt": ...}``)."""
_encode = msgspec.json.Encoder()


class SinkError(Exception):
    """A destination refused or could not be reached; the batch is retried later. ``gist``: what
    of it stays the same from one try to the next (the status and our own hint, not the
    destination's words, which may embed a request ID or a time), which the sink's failure log
    compares to tell a new problem from the same one again; the whole message by default."""

    def __init__(self, message: str, gist: str | None = None) -> None:
        super().__init__(message)
        self.gist = message if gist is None else gist


class SinkRefused(SinkError):
    """A destination said the batch itself is wrong (``REFUSED``): the same bytes will never be
    accepted, so retrying them would hold the sink's cursor for ever."""


REFUSED = frozenset({400, 413, 422})
"""Statuses that refuse the content (malformed, too large, unprocessable), not the sender: the
batch is split until the refused messages are alone, and those are counted and skipped. Every
other failure (401 and 403 included: fix the secret and the rows go out) is retried."""


def _traits(prefix: str, touch: dict[str, Any]) -> dict[str, Any]:
    traits = {f"source_{prefix}_{f}": touch[f] for f in TRAIT_FIELDS if f in touch}
    traits[f"source_{prefix}_timestamp"] = touch["ts"]
    return traits


def identify_message(
    binding: dict[str, Any], user_id: str, first: dict[str, Any], last: dict[str, Any]
) -> dict[str, Any]:
    """The user's ``identify`` for ``binding``, traits from their first and last landing; by
    ``userId`` alone when the binding's visitor key is a one-day one (``ONE_DAY``)."""
    traits = {**_traits("first", first), **_traits("last", last)}
    # The same binding with the same traits is the same message; new traits, a new message.
    digest = hashlib.sha256(_encode.encode(traits)).hexdigest()[:16]
    message: dict[str, Any] = {
        "type": "identify",
        "messageId": f"gw-identify-{binding['id']}-{digest}",
        "userId": user_id,
        "timestamp": binding["ts"],
        "traits": traits,
    }
    if binding.get("consent", "cookie") not in ONE_DAY:
        message["anonymousId"] = binding["visitor_key"]  # the device: its anonymous tracks join the user
    return message


def track_message(touch: dict[str, Any], user_id: str | None) -> dict[str, Any]:
    """The landing's ``track``. Segment needs a ``userId`` or an ``anonymousId`` on each message:
    a one-day key's landing (``ONE_DAY``) goes by the ``userId`` alone when it has one, else
    under an ``anonymousId`` of its own, ``gw-landing-<event id>``, which links it to no other
    landing nor to anyone else behind the same address."""
    message: dict[str, Any] = {
        "type": "track",
        "event": EVENT,
        "messageId": f"gw-touch-{touch['id']}",
        "timestamp": touch["ts"],  # when the visitor landed, not when it was sent
        "properties": {k: touch[k] for k in TRACK_PROPERTIES if touch.get(k) is not None},
    }
    if touch.get("consent", "cookie") not in ONE_DAY:
        message["anonymousId"] = touch["visitor_key"]
    elif user_id is None:
        message["anonymousId"] = f"gw-landing-{touch['id']}"
    if user_id is not None:
        message["userId"] = user_id
    return message


def pack(messages: Sequence[dict[str, Any]], options: SinkOptions) -> tuple[list[list[bytes]], int]:
    """Encoded messages cut into batches within the count and byte limits; and how many messages
    were too large to send at all (skipped)."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = _ENVELOPE
    skipped = 0
    for message in messages:
        encoded = _encode.encode(message)
        # Alone in a batch, its body must still fit max_batch_bytes, which may be as small as
        # max_message_bytes: until 2026-12-06 such a message went in a body over it.
        if len(encoded) > options.max_message_bytes or _ENVELOPE + len(encoded) + 1 > options.max_batch_bytes:
            skipped += 1
            log.warning(
                "sink %s: message %s is too large (%d bytes; max_message_bytes %d, and a batch"
                " of it alone at most max_batch_bytes %d); skipped",
                options.name,
                message["messageId"],
                len(encoded),
                options.max_message_bytes,
                options.max_batch_bytes,
            )
            continue
        if current and (
            len(current) >= options.batch_size or size + len(encoded) + 1 > options.max_batch_bytes
        ):
            batches.append(current)
            current, size = [], _ENVELOPE
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        batches.append(current)
    return batches, skipped


class _Id(msgspec.Struct):
    messageId: str


_read_id = msgspec.json.Decoder(_Id)


class _User(msgspec.Struct):
    userId: str | None = None


_read_user = msgspec.json.Decoder(_User)


def without_user_ids(answer: str, encoded: Sequence[bytes]) -> str:
    """A destination's answer with the batch's user IDs taken out, for a log line or an error:
    a destination may quote the message it refuses, and under ``user_id_storage = "encrypt"``
    (or ``"plain"``) its ``userId`` is the raw ID, which the log must not keep."""
    users = {m.userId for m in map(_read_user.decode, encoded) if m.userId}
    forms = {form for user in users for form in spellings(user)}
    for form in sorted(forms, key=len, reverse=True):  # a longer spelling before one inside it
        answer = answer.replace(form, "<userId>")
    return answer


REASON_CHARS = 200
"""Most characters of a destination's answer a log line or an error quotes."""


def destination_words(answer: bytes, encoded: Sequence[bytes]) -> str:
    """What a destination's answer says, for a log line or an error: decoded (bad UTF-8
    replaced), the batch's user IDs taken out (``without_user_ids``), its white space (a
    pretty-printed JSON's, an HTML page's lines) made single spaces, cut to ``REASON_CHARS``
    characters (``…`` marks the cut) and every character still not printable (an escape
    sequence, a NUL) written as its Python escape: an answer cannot forge a log line, nor
    recolour the terminal ``gateway sink send`` prints it on."""
    text = " ".join(without_user_ids(answer.decode("utf-8", "replace"), encoded).split())
    return printable(text[:REASON_CHARS] + ("…" if len(text) > REASON_CHARS else ""))


def message_id(encoded: bytes) -> str:
    """An encoded message's ``messageId``."""
    return _read_id.decode(encoded).messageId


def batch_body(encoded: Sequence[bytes]) -> bytes:
    sent_at = _encode.encode(iso(datetime.now(UTC)))
    return b'{"batch":[' + b",".join(encoded) + b'],"sentAt":' + sent_at + b"}"
