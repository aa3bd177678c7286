"""Typed events: what the pipeline learns about a request, written append-only to the store.

Each event carries a UUIDv7 ``id``, a UTC timestamp ``ts`` (ISO 8601 with
microseconds, so text order is time order) and the ``node`` that wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar


def iso(ts: datetime) -> str:
    """UTC ISO 8601 with microseconds and a Z, e.g. ``2026-11-25T14:00:00.000000Z``."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    # isoformat is several times cheaper than strftime; "+00:00" becomes the Z.
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


@dataclass(slots=True)
class Touchpoint:
    """One landing carrying campaign parameters, a click ID, a creator ID or an external referrer."""

    table: ClassVar[str] = "touchpoints"

    id: str
    ts: str
    node: str
    visitor_key: str
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None
    creator_id: str | None = None
    sub_id: str | None = None
    click_id_kind: str | None = None
    click_id: str | None = None
    referrer_host: str | None = None
    landing_path: str = "/"
    raw_params: dict[str, str] = field(default_factory=dict)


Event = Touchpoint
