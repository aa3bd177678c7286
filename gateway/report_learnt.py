"""What ``data_driven`` learnt, as a report shows it: the JSON answer's ``learnt`` (the
journeys it learnt from, each channel's removal effect and weight), the rows of its download
(``table=learnt``) and the title of its terminal table.

Reads a ``gateway.attribution.Learnt`` (worked out by ``storage/report_learning.py`` from the
transition counts the report already has); turns its floats into decimals only here, so the
JSON, the CSV, the NDJSON and the terminal show the same numbers. Owns which reports carry it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from gateway.attribution import Learnt

LEARNT = "learnt"
"""The JSON answer's field, and the download's ``table=`` name."""
LEARNT_REPORTS = frozenset({"attribution", "timeseries"})
"""The reports that carry it under ``data_driven``. Not payouts: it learns twice there (the
approved rows' weights, and every verdict's for the quarantined rows), and the attribution
report of the same period, conversion and population, by ``creator_id``, shows each (with
``verdicts=allow,review,block,bot`` the second)."""
LEARNT_COLUMNS = [
    "channel",
    "removal_effect",
    "weight",
    "converting_journeys",
    "non_converting_journeys",
    "learnt_at",
]
"""The download's columns: a row per channel, the journeys and when they were learnt from on
every row (a CSV is one table)."""
PLACES = Decimal("0.000001")
"""Removal effects and weights to six decimals, as credited conversions are counted."""


def learns(report: str, models: tuple[str, ...] | list[str]) -> bool:
    """Whether ``report`` under ``models`` carries what ``data_driven`` learnt."""
    return report in LEARNT_REPORTS and "data_driven" in models


def learnt_part(learnt: Learnt) -> dict[str, Any]:
    """The JSON answer's ``learnt``: the journeys learnt from, converting and not, and a row per
    channel seen in them, largest weight first (as shown), then by name."""
    shown = [(_decimal(learnt.weights[c]), c, _decimal(effect)) for c, effect in learnt.effects.items()]
    shown.sort(key=lambda row: (-row[0], row[1]))
    channels = [{"channel": c, "removal_effect": effect, "weight": weight} for weight, c, effect in shown]
    part: dict[str, Any] = {
        "converting_journeys": learnt.converting,
        "non_converting_journeys": learnt.not_converting,
        "channels": channels,
    }
    if learnt.at is not None:  # when, and over which period: a report may reuse them
        part["learnt_at"] = _utc(learnt.at.replace(microsecond=0))
    if learnt.since is not None and learnt.until is not None:
        part["since"], part["until"] = _utc(learnt.since), _utc(learnt.until)
    return part


def learnt_rows(part: dict[str, Any]) -> list[dict[str, Any]]:
    """``learnt_part`` as the download's flat rows (``LEARNT_COLUMNS``)."""
    journeys = {k: part[k] for k in ("converting_journeys", "non_converting_journeys")}
    journeys["learnt_at"] = part.get("learnt_at")
    return [{**row, **journeys} for row in part["channels"]]


def learnt_title(part: dict[str, Any]) -> str:
    """The line over the terminal's table of it."""
    converting, other = part["converting_journeys"], part["non_converting_journeys"]
    journeys = "journey" if converting + other == 1 else "journeys"
    return (
        f"data_driven learnt from {converting + other} {journeys}: {converting} converting,"
        f" {other} not converting"
    )


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _decimal(number: float) -> Decimal:
    return Decimal(number).quantize(PLACES, ROUND_HALF_EVEN)
