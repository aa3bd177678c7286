"""The populations a report can be asked for, and the landings of each in a period.

``POPULATIONS`` are the values of ``touchpoints.consent``, those a report can be limited to;
``AGGREGATE`` the visitors counted only per day (``daily_counts``), which a report cannot be
(``population_refused``). ``population_counts`` gives the dashboard its
``populations``. Reads touchpoints and daily_counts through the caller's connection; never
writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import aiosqlite

from gateway.events import iso

POPULATIONS = ("cookie", "cookieless", "no_consent")
"""The values of ``touchpoints.consent`` (``addons/identity.py``)."""
AGGREGATE = "aggregate"
"""The population of ``daily_counts``: visitors who sent ``Sec-GPC`` (or ``DNT``)."""


def population_refused(value: str) -> str:
    """Why a report's ``population`` is refused: ``aggregate`` has no touchpoints to credit (a
    report of it would be empty, not theirs); anything else is no population."""
    choose = f"choose from {', '.join(POPULATIONS)}"
    if value == AGGREGATE:
        return (
            f"the aggregate population (Sec-GPC, DNT) has no touchpoints to credit, only daily counts of"
            f" its landings: the dashboard's populations count them; {choose}"
        )
    return f"expected one of {', '.join(POPULATIONS)}, got {value[:100]!r}"


async def population_counts(
    db: aiosqlite.Connection, since: datetime, until: datetime, landed: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Landings per population in ``since <= ts < until``: touchpoints by ``consent``, and the
    ``aggregate`` daily counts of the days the period touches (they have no time of day). Every
    population is named, those with none at 0 (until 2026-12-05 they were left out, so a
    chart or a script had to know the names to draw a zero). ``landed``: the touchpoints by
    ``consent``, in its order, when the caller counted them already (the dashboard, in the scan
    of its bot share), so they are not read again."""
    counts: dict[str, int] = dict.fromkeys((*POPULATIONS, AGGREGATE), 0)
    if landed is None:
        sql = "SELECT consent, count(*) FROM touchpoints WHERE ts >= ? AND ts < ? GROUP BY consent"
        async with db.execute(sql, (iso(since), iso(until))) as cursor:
            landed = {str(consent): int(n) async for consent, n in cursor}
    counts.update(landed)
    # The daily counts are kept per UTC day, whatever the report time zone.
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    days = (since.date().isoformat(), until.date().isoformat())
    sql = "SELECT coalesce(sum(count), 0) FROM daily_counts WHERE day >= ? AND day <= ?"
    if until.time() == until.time().min:  # until is midnight: that day is not in the period
        sql = sql.replace("day <= ?", "day < ?")
    async with db.execute(sql, days) as cursor:
        row = await cursor.fetchone()
    if row and row[0]:
        counts[AGGREGATE] = int(row[0])
    return counts
