"""Why a date or date-time written in the extended ISO 8601 form is no moment: the part the
calendar has not (``2026-11-31``: November has 30 days; month 13; 25:00), for the 400 that
refuses a report's or a listing's ``since`` or ``until`` (``gateway.admin.parse_time``).

Pure, no I/O. Month names are English whatever the locale, as every message is.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, timedelta

_FIELDS = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d))?)?")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def no_such_moment(name: str, value: str) -> str:
    """``": no such day, November 2026 has 30 days"`` (or month, or time) for a ``value`` of
    the extended form that no calendar holds, else ``""``. For ``until`` (``--until``) past
    its month's end, what ends that month: a partner manager asking for November writes
    ``until=2026-11-31``, and ``until`` is exclusive (``until=2026-12-01``)."""
    fields = _FIELDS.match(value)
    if fields is None:
        return ""
    year, month, day = (int(part) for part in fields.group(1, 2, 3))
    if not 1 <= month <= 12:
        return f": no month {fields.group(2)}, months are 01 to 12"
    if year == 0:  # before the range the message states: nothing more to say
        return ""
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        said = f": no such day, {MONTHS[month - 1]} {year} has {days} days"
        if name.lstrip("-") == "until" and day > days:
            after = date(year, month, days) + timedelta(days=1)
            written = f"{name} {after}" if name.startswith("-") else f"{name}={after}"  # --until: an option
            said += f" (until is exclusive: {written} ends the period after {days} {MONTHS[month - 1]})"
        return said
    hour, minute, second = fields.group(4, 5, 6)
    if hour is not None and int(hour) > 23:
        return ": no such time, hours are 00 to 23 (24:00 alone is the end of a day)"
    if minute is not None and int(minute) > 59:
        return ": no such time, minutes are 00 to 59"
    if second is not None and int(second) > 59:
        return ": no such time, seconds are 00 to 59"
    return ""
