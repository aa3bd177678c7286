"""The creator registry: which influencers and affiliates the platform knows, and which it verified.

Starts from ``[[creators]]`` in the config; standings set through the admin API
(``PUT /api/creators/{id}``, stored append-only as ``CreatorStanding`` events)
are applied on top, at start-up from the store and live as they are set. The
bots addon asks it one question per click: is this creator listed, and verified?
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.options import CreatorOptions


@dataclass(frozen=True, slots=True)
class Creator:
    id: str
    verified: bool
    name: str = ""
    source: str = "config"
    """``config`` ([[creators]]) or ``api`` (an admin's standing, which wins)."""
    analyst: str | None = None
    ts: str | None = None


class CreatorRegistry:
    def __init__(self, entries: Iterable[CreatorOptions] = ()) -> None:
        self._creators = {c.id: Creator(c.id, c.verified, c.name) for c in entries}

    def __len__(self) -> int:
        return len(self._creators)

    def verified(self, creator_id: str) -> bool | None:
        """True or False for a listed creator; None for one nobody listed."""
        creator = self._creators.get(creator_id)
        return None if creator is None else creator.verified

    def name(self, creator_id: str) -> str:
        """The creator's name as known (the config's or the latest standing's); "" if unlisted."""
        creator = self._creators.get(creator_id)
        return "" if creator is None else creator.name

    def set(self, creator: Creator) -> None:
        self._creators[creator.id] = creator

    def apply(self, standings: Iterable[Mapping[str, Any]]) -> None:
        """Stored standings, oldest first: each replaces what was known of its creator."""
        for row in standings:
            self.set(
                Creator(
                    id=row["creator_id"],
                    verified=bool(row["verified"]),
                    name=row["name"],
                    source="api",
                    analyst=row["analyst"],
                    ts=row["ts"],
                )
            )

    def all(self) -> list[Creator]:
        return sorted(self._creators.values(), key=lambda c: c.id)
