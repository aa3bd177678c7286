"""The reports as tables: attribution (one model or all), its daily series (every day of the
period), path lengths and time to convert, creator payouts, click fraud — and their renderings
(CSV, NDJSON, an aligned text table); under ``data_driven``, what it learnt beside them
(``gateway/report_learnt.py``).

Shared by the admin API (``gateway/reportapi.py``) and ``gateway report``. Reads through
``storage.reports.Reports``; turns minor units and millionths into exact decimals only
here, at the edge. A report is one table: ``columns`` and flat ``rows``, plus ``meta``
(what was asked, totals), so every format carries the same rows.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
import unicodedata
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec

from gateway.attribution import Learnt, Params, from_minor
from gateway.events import VERDICTS, printable_name
from gateway.openapi import DELIMITERS
from gateway.payouts import Payouts
from gateway.report_learnt import LEARNT, LEARNT_COLUMNS, learns, learnt_part, learnt_rows, learnt_title
from gateway.textwidth import ELLIPSIS, INDENT, cut, width, wrap
from storage.crediting import MICRO, Conv, Table, add_tables, credit_table, quarantined_credit
from storage.queries import share
from storage.report_clicks import Clicks
from storage.report_period import Part, period_days
from storage.reports import Reports

TOUCH_BUCKETS = (*(str(n) for n in range(10)), "10+")
DAY_BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("0", 0, 1),
    ("1", 1, 2),
    ("2-3", 2, 4),
    ("4-7", 4, 8),
    ("8-14", 8, 15),
    ("15-30", 15, 31),
    ("31+", 31, 10**9),
)
"""Time to convert: (bucket, from day, to day) over whole days since the first eligible touch."""
_encode = msgspec.json.Encoder(decimal_format="number")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a CSV cell as a formula (OWASP, CSV injection)."""


@dataclass(frozen=True)
class Query:
    since: datetime
    until: datetime
    models: tuple[str, ...] = ("linear",)
    group_by: str = "channel"
    conversion: str | None = None
    verdicts: frozenset[str] | None = None
    """None: ``attribution.verdicts``."""
    population: str | None = None
    """Only touchpoints of this population (``touchpoints.consent``); None: all."""

    @property
    def model(self) -> str:
        return "all" if len(self.models) > 1 else self.models[0]

    def accepted(self, reports: Reports) -> frozenset[str]:
        """The verdicts whose touchpoints count: those asked for, else the configured ones."""
        return reports.attribution.verdicts if self.verdicts is None else self.verdicts

    def key(self, reports: Reports, kind: str, *more: Hashable) -> tuple[Hashable, ...]:
        """What makes the ``kind`` report of this query, for identical ones in flight to share
        one computation (``Reports.run``): every parameter, the verdicts as counted (those
        asked for, else the configured ones), and ``more`` that the kind depends on."""
        return (
            kind,
            self.since,
            self.until,
            self.models,
            self.group_by,
            self.conversion,
            self.accepted(reports),
            self.population,
            *more,
        )


def is_conversion_name(text: str) -> bool:
    """Whether ``text`` can name a conversion to report on (``signup``): 1..200 printable
    characters, no white space around them. No conversion is recorded with such spaces (a
    webhook's name is trimmed, a ``[[conversions]]`` rule's refused with them), so
    `` purchase`` would count none: a report of nothing that reads as "no purchases"."""
    return 0 < len(text) <= 200 and text == text.strip() and printable_name(text)


def conversion_name(text: str, key: str) -> str:
    """``text`` if it can name a conversion (``is_conversion_name``), else a ``ValueError``
    naming ``key``."""
    if not is_conversion_name(text):
        raise ValueError(
            f"{key}: expected a conversion name (1..200 printable characters, no spaces around"
            f" them, as conversions are recorded), got {text[:100]!r}"
        )
    return text


def verdict_names(text: str, key: str) -> frozenset[str]:
    """Comma-separated bot verdicts (``allow,review``) as a set; an unknown name is a
    ``ValueError`` naming ``key``: a typo would otherwise count no touchpoint at all."""
    names = [name.strip() for name in text.split(",")]
    unknown = next((name for name in names if name not in VERDICTS), None)
    if unknown == "":
        raise ValueError(f"{key}: an empty verdict name (a stray comma?) in {text[:100]!r}")
    if unknown is not None:
        # allow+review, as the downloads' names write it, arrives as "allow review" in a query.
        joined = unknown.split() != [unknown] and all(part in VERDICTS for part in unknown.split())
        query = "" if key.startswith("-") else " (a + in a query is a space)"
        hint = f"; separate them with commas: {','.join(unknown.split())}{query}" if joined else ""
        raise ValueError(
            f"{key}: expected comma-separated verdicts among {', '.join(VERDICTS)},"
            f" got {unknown[:100]!r}{hint}"
        )
    return frozenset(names)


def payout_verdicts(text: str, key: str, example: str) -> frozenset[str]:
    """``verdict_names`` for the payout report, which pays the accepted traffic and lists the
    rest apart as quarantined: a list without ``allow`` is a ``ValueError`` naming ``key``
    (``example``: the list as the caller writes it). Until 2026-12-07 ``verdicts=review`` was
    taken: ordinary traffic listed among the quarantined rows, the reviewed paid alone."""
    verdicts = verdict_names(text, key)
    if "allow" not in verdicts:
        raise ValueError(
            f"{key}: a payout report pays the allowed traffic and lists the rest apart; name allow"
            f" with the verdicts that count too ({example}), got {text[:100]!r}"
        )
    return verdicts


@dataclass
class Report:
    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def filename(self, extension: str, zone: tzinfo = UTC, delimiter: str = ",") -> str:
        """The download's name, in the one form of every download (the listings' too:
        ``listing_export.file_name``): the report, model, grouping, the conversion and
        population it is limited to, the verdicts it counts unless ``allow`` alone
        (``allow+review``), then the period (``period_words``: ``from-2026-11-01-to-2026-11-30``
        for November; until 2026-12-07 ``2026-11-01-2026-11-30``, where a listing of it was
        ``from-…-to-…``). A conversion's name keeps its ASCII letters, digits and ``.``, each
        run of anything else becoming one ``_``, so the name is one safe ASCII word. A CSV's
        ``delimiter`` other than the comma ends it (``file_ending``)."""
        parts = [self.name, self.meta.get("model"), self.meta.get("group_by")]
        parts += [file_word(self.meta.get("conversion")), self.meta.get("population")]
        verdicts = self.meta.get("verdicts")
        if verdicts is not None and verdicts != ["allow"]:  # not every report counts allow alone
            parts.append("+".join(verdicts))
        parts += period_words(self.meta["since"], self.meta["until"], zone)
        return "-".join(str(p) for p in parts if p) + file_ending(extension, delimiter)

    def table(self, which: str) -> Report:
        """The report itself (``rows``), or its ``totals`` (per currency) or the paths report's
        ``summary`` as a table of their own, for a CSV or NDJSON download (``table=``): until
        2026-12-05 they were in the JSON and the terminal only, and a partner manager
        approving from the CSV added the payouts up by hand. Named ``payouts-totals-…``. Or
        what ``data_driven`` learnt (``learnt``), a row per channel."""
        if which == "rows":
            return self
        if which == "totals":
            rows, columns = list(self.meta["totals"]), TOTALS_COLUMNS[self.name]
        elif which == LEARNT:
            rows, columns = learnt_rows(self.meta[LEARNT]), LEARNT_COLUMNS
        else:
            rows, columns = [dict(self.meta["summary"])], list(self.meta["summary"])
        return Report(f"{self.name}-{which}", columns, rows, self.meta)

    def json(self) -> bytes:
        return _encode.encode(
            {"ok": True, "report": self.name, **self.meta, "columns": self.columns, "rows": self.rows}
        )

    def ndjson(self) -> bytes:
        return b"".join(_encode.encode(row) + b"\n" for row in self.rows)

    def csv(self, delimiter: str = ",") -> str:
        """The header and rows as CSV, cells separated by ``delimiter`` (``,``, ``;`` or a tab;
        a cell holding it is quoted), each kept inert for a spreadsheet (``csv_cell``); numbers
        keep their decimal point whatever the delimiter."""
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([csv_cell(row.get(c)) for c in self.columns])
        return out.getvalue()

    def text(self, columns: int = 0, encoding: str = "utf-8") -> str:
        """An aligned table for a terminal: text left, numbers right; a cell in a right-to-left
        script fenced by left-to-right marks (``ltr_fenced``). With ``columns`` (0: none), the
        widest text columns are cut (``fit``) so that each line of the table fits in it, and
        so is the conversion's name in the title (to fit a line of its own); numbers never
        are. The lines around the tables (the title, the totals, the paths' summary, what
        data_driven learnt, why a table has no rows) are wrapped to ``columns`` (``wrap``):
        until 2026-12-07 only the tables fitted, and at ``COLUMNS=40`` the title ran past the
        edge. A character the
        terminal's ``encoding`` cannot show is written as its escape (``\\u65e5``) before the
        widths are counted, and a cut name ends in ``...`` where it cannot show ``…``: until
        2026-12-05 the escapes were made after, and on an ASCII or Latin-1 terminal such a
        row stood out of line and past the terminal's width (``…`` itself six columns)."""

        def shown(text: str) -> str:
            return text.encode(encoding, "backslashreplace").decode(encoding)

        ellipsis = ELLIPSIS if shown(ELLIPSIS) == ELLIPSIS else "..."
        fenced = shown(LRM) == LRM  # else the marks would be escapes, six columns each
        since, until = self.meta["since"] or "the first touchpoint", self.meta["until"] or "now"
        head = f"{self.name}: {since} .. {until}"
        # What limits the report is said as the download's name says it: the verdicts unless
        # allow alone, a population, the conversion (last: the one name cut to fit).
        said = dict(self.meta)
        said["verdicts"] = None if said.get("verdicts") == ["allow"] else ",".join(said.get("verdicts") or [])
        for key in ("model", "group_by", "verdicts", "population", "conversion"):
            if said.get(key):
                value = shown(str(said[key]))
                if columns and key == "conversion":  # the one name here (1..200 characters)
                    value = cut(value, max(MIN_CUT, columns - width(f"{INDENT}{key} ")), ellipsis)
                head += f", {key} {ltr_fenced(value) if fenced else value}"

        def wrapped(line: str) -> list[str]:
            return wrap(shown(line), columns)

        out = [*wrapped(head), "", *self._grid(columns, encoding)]
        if "summary" in self.meta:
            summary = self.meta["summary"].items()  # None: nothing to average (no conversions)
            out += wrapped(", ".join(f"{k} {'(none)' if v is None else _cell(v, k)}" for k, v in summary))
            if not self.meta["summary"]["conversions"]:  # its buckets are there whatever: say why
                why = self.why_empty(columns, ellipsis)
                out += wrapped(f"({why})" if why == NO_CONVERSIONS else f"(no conversions: {why})")
        for total in self.meta.get("totals", []):
            parts = [f"{k} {_cell(v, k)}" for k, v in total.items() if k != "currency"]
            out += wrapped(f"total {total['currency'] or '(no currency)'}: " + ", ".join(parts))
        if (uncredited := self.uncredited(columns, ellipsis)) is not None:
            out += wrapped(f"({uncredited})")
        elif self.name == "payouts" and self.rows and not self.meta.get("totals"):
            out += wrapped(f"({NOTHING_TO_APPROVE})")  # until 2026-12-07 no line: nor a total, nor why
        if LEARNT in self.meta:  # a second table: what data_driven learnt
            part = self.meta[LEARNT]
            learnt = Report(LEARNT, LEARNT_COLUMNS[:3], part["channels"], {"since": None, "until": None})
            out += ["", *wrapped(learnt_title(part)), "", *learnt._grid(columns, encoding)]
        return "\n".join(out) + "\n"

    def _grid(self, columns: int, encoding: str) -> list[str]:
        """``text``'s table: the header, its rule and the rows (or what no rows means), each
        line cut to ``columns`` (0: none) as ``text`` says."""

        def shown(text: str) -> str:
            return text.encode(encoding, "backslashreplace").decode(encoding)

        ellipsis = ELLIPSIS if shown(ELLIPSIS) == ELLIPSIS else "..."
        fenced = shown(LRM) == LRM
        cells = [[shown(_cell(row.get(c), c)) for c in self.columns] for row in self.rows]
        widths = [max([width(c), *(width(r[i]) for r in cells)]) for i, c in enumerate(self.columns)]
        numeric = [all(isinstance(row.get(c), int | Decimal) for row in self.rows) for c in self.columns]
        if columns:
            # Numbers and the time series' day are never cut: "2026-11-…" on every row would
            # leave the day of none (until 2026-12-05 a narrow terminal cut it so).
            whole = [num or c in UNCUT for num, c in zip(numeric, self.columns, strict=True)]
            widths = fit(widths, [width(c) for c in self.columns], whole, columns)
            cells = [[cut(v, w, ellipsis) for v, w in zip(r, widths, strict=True)] for r in cells]
        if fenced:
            cells = [[ltr_fenced(v) for v in r] for r in cells]

        def line(values: Sequence[str]) -> str:
            padded = []
            for v, w, num in zip(values, widths, numeric, strict=True):
                pad = " " * (w - width(v))
                padded.append(pad + v if num else v + pad)
            return (" " * GAP).join(padded).rstrip()

        out = [line(self.columns), line(["-" * w for w in widths])]
        return out + ([line(r) for r in cells] or wrap(shown(self.no_rows(columns, ellipsis)), columns))

    def wants_names(self) -> bool:
        """Whether why this report counts nothing may be in the period's conversion names
        (``conversion_names``, read by the caller then given to ``named``): it is limited to a
        conversion name or a population and counts no conversion; a payout report, which lists
        the creators clicked whatever it credits, to a name and credits none."""
        conversion, population = self.meta.get("conversion"), self.meta.get("population")
        if self.name == "payouts":
            return conversion is not None and not any(row["conversions"] for row in self.rows)
        counted = self.meta["summary"]["conversions"] if self.name == "paths" else len(self.rows)
        return (conversion is not None or population is not None) and not counted

    def named(self, names: list[str]) -> None:
        """Keep the period's conversion names (``wants_names``), for the JSON's
        ``conversion_names`` and the terminal's reason. A payout report keeps them only when its
        name is none of them: credited to no creator, conversions of that name may be there."""
        if self.name != "payouts" or self.meta.get("conversion") not in names:
            self.meta["conversion_names"] = names

    def uncredited(self, columns: int = 0, ellipsis: str = ELLIPSIS) -> str | None:
        """Why a payout report that lists creators credits none of them, when that is its
        conversion name, none of the period's (a typo): its rows read as nothing owed (until
        2026-12-07 with nothing said). None for any other report, or when it is not so."""
        if self.name != "payouts" or not self.rows or "conversion_names" not in self.meta:
            return None
        return f"no conversions credited: {self.why_empty(columns, ellipsis)}"

    def no_rows(self, columns: int = 0, ellipsis: str = ELLIPSIS) -> str:
        """What an empty terminal table says. When the caller read the period's conversion
        names (``conversion_names``, most frequent first), a report limited to a name none of
        them has says so, and lists them; one limited to a population, that none of the
        period's conversions (of that name) has a touchpoint of it. Until 2026-12-06 each said
        "no conversions in this period" over a period full of them (``--conversion purchse``,
        a typo) and pointed at the [[conversions]] rules. An empty payouts report says that no
        creator was clicked or credited (it said "(no rows)"). ``columns``: as ``why_empty``."""
        if self.name == "payouts":  # every creator clicked in the period is listed
            population = self.meta.get("population")
            of = "" if population is None else f" of population {population}"
            return (
                f"(no rows: no click{of} with a creator ID in this period, and no conversion credited to one)"
            )
        if self.name not in NO_ROWS:
            return "(no rows)"
        return f"(no rows: {self.why_empty(columns, ellipsis)})"

    def why_empty(self, columns: int = 0, ellipsis: str = ELLIPSIS) -> str:
        """Why a report of the period's conversions counts none (``no_rows``; the paths report,
        whose buckets are there whatever, says it under its summary: until 2026-12-06 it
        printed zeros alone for a typo in ``--conversion``). With ``columns`` (0: none), each
        conversion name it quotes is cut to fit a line of its own (the table's rule), as the
        title cuts the one asked for."""

        def quoted(name: str) -> str:
            # The quotes and a comma or a parenthesis after them on the line, besides the name.
            room = max(MIN_CUT, columns - width(INDENT) - 3)
            return repr(cut(name, room, ellipsis) if columns else name)

        names = self.meta.get("conversion_names")
        if not names:  # not read, or none recorded at all
            return NO_CONVERSIONS
        conversion, population = self.meta.get("conversion"), self.meta.get("population")
        if conversion is not None and conversion not in names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            recorded = ", ".join(quoted(n) for n in names[:5]) + more
            return f"no conversion named {quoted(conversion)} in this period; recorded in it: {recorded}"
        if population is not None:
            named = "" if conversion is None else f" named {quoted(conversion)}"
            return (
                f"no conversion{named} in this period has a touchpoint of population {population}"
                " in its lookback window"
            )
        return NO_CONVERSIONS


NO_ROWS = frozenset({"attribution", "timeseries"})
"""The reports whose rows are there exactly when the period has conversions (a conversion
without an eligible touch is credited to Direct), whose empty terminal table says why: until
2026-12-05 a bare "(no rows)", under which a newcomer with landings recorded was left to guess
whether the store, the period or the model was at fault."""
NO_CONVERSIONS = "no conversions in this period; [[conversions]] rules and signed events record them"
NOTHING_TO_APPROVE = (
    "no payout to approve: no conversion in this period is credited to a creator's accepted traffic;"
    " the rows list the creators clicked, and their quarantined traffic"
)
"""Why a payout report that lists creators has no totals: its rows are creators clicked and
credited nothing, or credited from quarantined traffic alone."""


TABLES = {
    "attribution": ("rows", "totals"),
    "timeseries": ("rows", "totals"),
    "payouts": ("rows", "totals"),
    "paths": ("rows", "summary"),
}
"""What each report's download may be (``table=``): its rows, or what the JSON carries beside
them; and, under ``data_driven``, what it learnt (``tables``)."""


def tables(report: str, models: Sequence[str]) -> tuple[str, ...]:
    """The ``table=`` choices of ``report`` under ``models``: ``TABLES``, and ``learnt`` where
    the report carries what ``data_driven`` learnt."""
    return (*TABLES[report], LEARNT) if learns(report, tuple(models)) else TABLES[report]


TOTALS_COLUMNS = {
    "attribution": ["currency", "conversions", "value"],
    "timeseries": ["currency", "conversions", "value"],
    "payouts": ["currency", "payout"],
}
"""The columns of each report's ``totals``, as its JSON writes them."""


MIN_CUT = 8
"""The fewest columns a name is cut to, however narrow the terminal: below, a line wraps."""
UNCUT = frozenset({"day"})
"""Text columns never cut to fit a terminal, as numbers are not: a date cut is no date."""
GAP = 2
"""Spaces between two columns of the terminal table."""


def fit(widths: list[int], headers: list[int], whole: list[bool], columns: int) -> list[int]:
    """The columns' widths once the table is made to fit in ``columns``: the widest text
    columns cut first, to one width, the largest that fits (a column more for the first of
    them when there is room for it); those ``whole`` marks never (numbers, and the ``UNCUT``
    text columns). A column is
    not cut below its header nor below ``MIN_CUT``: a table that does not fit even so (a narrow
    terminal, or ``model=all``'s eight columns of numbers) is left whole, its lines wrapping —
    cut names would be lost for lines that wrap anyway."""
    gaps = GAP * (len(widths) - 1)
    if sum(widths) + gaps <= columns:
        return widths
    floors = [
        w if kept else min(w, max(MIN_CUT, h)) for w, h, kept in zip(widths, headers, whole, strict=True)
    ]
    if sum(floors) + gaps > columns:
        return widths

    def capped(cap: int) -> list[int]:
        return [max(floor, min(w, cap)) for w, floor in zip(widths, floors, strict=True)]

    low, high = 0, max(widths)  # the widest cap that fits, by bisection: capped grows with it
    while low < high:
        mid = (low + high + 1) // 2
        if sum(capped(mid)) + gaps <= columns:
            low = mid
        else:
            high = mid - 1
    fitted = capped(low)
    spare = columns - sum(fitted) - gaps  # less than one more column for each one cut
    for i, w in enumerate(widths):
        if spare > 0 and fitted[i] < w:
            fitted[i] += 1
            spare -= 1
    return fitted


_RIGHT_TO_LEFT = frozenset({"R", "AL", "AN"})
"""Bidirectional classes that a terminal's bidi algorithm lays out right to left: Hebrew,
Arabic (and Syriac, Thaana…) letters and Arabic-Indic digits."""
LRM = "\u200e"


def ltr_fenced(text: str) -> str:
    """``text`` between two LEFT-TO-RIGHT MARKs when it holds a right-to-left letter or digit,
    else as it is. A terminal that applies the Unicode bidi algorithm (GNOME Terminal, Konsole,
    mlterm) reverses a run of right-to-left text together with the spaces and numbers that
    follow it: ``מבצע  6  0  1`` showed as ``1  0  6  עצבמ``, the columns out of order, and a
    line whose first letter is Hebrew or Arabic laid out from the right. The marks (no column
    wide, invisible elsewhere) keep the name's own run inside its cell."""
    if text.isascii() or not any(unicodedata.bidirectional(ch) in _RIGHT_TO_LEFT for ch in text):
        return text
    return LRM + text + LRM


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: None is empty; text that a spreadsheet would run as a formula
    (a group, source, campaign or creator ID a visitor or a sender chose, e.g.
    ``=HYPERLINK(...)``) gets a leading ``'`` so that it shows as text, and so does text it
    would read as a number shown otherwise (``renumbered``). Numbers are never text here
    (counts are ints, credited values Decimals), so a negative one stays a number."""
    if value is None:
        return ""
    if isinstance(value, str) and (value.startswith(FORMULA_STARTS) or renumbered(value)):
        return "'" + value
    return value


_NUMBER_TEXT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A number as text. ``[0-9]+(?:[.][0-9]*)?``, not ``[0-9]+[.]?[0-9]*``: the same texts, but the
latter split a long run of digits every way before refusing the letter after it (5 s for
20,000 digits)."""
_SHOWN_AS_WRITTEN = re.compile(r"0|[1-9][0-9]{0,10}")
_YEAR = r"(?:1[89]|[2-9][0-9])[0-9]{2}"
"""A four-digit year a spreadsheet takes in a date (1800-9999): ``1001-2``, an order number, is
none."""
_DATE_OR_TIME = re.compile(
    rf"[0-9]{{1,2}}([-/.])[0-9]{{1,2}}(?:\1(?:[0-9]{{2}}|{_YEAR}))?"  # 2-3, 3/4, 12.11.2026
    rf"|{_YEAR}([-/.])[0-9]{{1,2}}(?:\2[0-9]{{1,2}})?"  # 2026-11, 2026/11/01
    rf"|[0-9]{{1,2}}[-/.]{_YEAR}"  # 11/2026
    r"|[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)? ?(?:[aApP][mM])?"  # 10:30, 10:30 AM
    r"|[0-9]{1,2} ?[aApP][mM]"  # 3 pm
)
"""A date of two or three numbers (day, month and year as spreadsheets read them, one separator)
or a time of day: ``2-3`` (3-Feb, the paths report's bucket), ``3/4``, ``12.11.2026``,
``2026-11``, ``10:30``, ``3 pm``. Not a phone number, an order number or a code of more parts
(``800-555-1234``, ``1001-2``, ``1-2-3-4-5``, ``1:2:3:4``), which spreadsheets show as written."""
_AMOUNT_TEXT = re.compile(
    r"[-+]?[$€£¥]?[-+]?"
    r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?"  # 1,234
    r"|[0-9]+ [0-9]+/[0-9]+"  # 1 1/2
    r"|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"(?:%|[$€£¥]|-)?"
)
"""A number as money (``$5``, ``5$``, ``$-5``), a percentage (``50%``), with thousands
(``1,234``), a fraction (``1 1/2``) or a minus after it (``5-``); between parentheses (``(123)``),
an accountant's negative."""
_BOOLEAN = frozenset({"TRUE", "FALSE"})
"""Text a spreadsheet reads as a truth value, in any case, and shows in capitals."""
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_MONTH_DATE = re.compile(
    rf"[0-9]{{1,4}}[-/ .]?{_MONTH}(?:[-/ .]?[0-9]{{1,4}})?"
    rf"|{_MONTH}[-/ .]?[0-9]{{1,4}}(?:[-/ .][0-9]{{1,4}})?",
    re.IGNORECASE,
)
"""A date written with its month's name: ``nov-26``, ``26 Nov``, ``MARCH1`` (as Excel read gene
names)."""
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def renumbered(text: str) -> bool:
    """Whether a spreadsheet opening the CSV would read ``text`` as a number and show it
    otherwise than written: ``0042`` as 42, ``12E3`` as 12000, ``1.50`` as 1.5, an ID of 12
    digits or more in exponent form (Excel's General format) or, past 15, with its last
    digits lost (``7123456789012345678``, a TikTok-length ID, as 7.12345678901235E+18). Until
    2026-12-06 such a creator ID reached the partner manager's sheet as another number. A
    whole number of at most 11 digits without a leading zero (``2024``) is shown as written.
    Text it reads as a date, a time, money or a percentage is shown otherwise too (``nov-26``
    as 26-Nov, the paths report's bucket ``2-3`` as 3-Feb, ``3/4`` as 4-Mar, ``(123)`` as
    -123, ``1,234`` as 1234; in a locale whose decimal mark is a comma, where ``CSV (;)`` is
    opened, ``1.2`` as 1 February): until 2026-12-07 it was left as it was. So is text read
    as a truth value (``true`` as TRUE), a time with AM or PM (``3 pm`` as 03:00:00 PM), money
    with its sign after (``5$``) or a number between spaces (`` 1e5`` as 1.00E+05): until
    2026-12-07 they were left as they were. A code of more parts (``800-555-1234``, an order
    number ``1001-2``) is shown as written, and left so. An ISO date (``2026-11-01``, the time series'
    ``day``) is left a date, for a chart."""
    if _NUMBER_TEXT.fullmatch(text) is not None:
        return _SHOWN_AS_WRITTEN.fullmatch(text) is None
    if _ISO_DATE.fullmatch(text):
        return False
    trimmed = text.strip()
    if trimmed.upper() in _BOOLEAN:
        return text != trimmed.upper()  # ``true`` shown TRUE; ``TRUE`` as written
    if trimmed != text and _NUMBER_TEXT.fullmatch(trimmed) is not None:
        return True  # `` 1e5``: the spaces dropped, then read as any number
    if _DATE_OR_TIME.fullmatch(trimmed) is not None:
        return True
    paired = trimmed.startswith("(") and trimmed.endswith(")")
    if _AMOUNT_TEXT.fullmatch(trimmed[1:-1] if paired else trimmed) is not None:
        return True
    return _MONTH_DATE.fullmatch(trimmed) is not None


NO_VALUE = "(none)"
"""How the terminal writes a group or creator ID that has no value (JSON's ``null``)."""
_NAMED = ("group", "creator_id")


def _cell(value: Any, column: str) -> str:
    """A value as the terminal table shows it. A group or creator ID with no value is
    ``(none)``; one whose text is literally ``(none)`` (a link's ``utm_campaign=(none)``, as
    Google Analytics writes direct traffic's medium) is shown quoted, ``"(none)"``, and so is
    one already written between double quotes (``"x"`` as ``"\"x\""``, JSON's quoting), so
    that every shown cell reads back one way."""
    if value is None:
        return NO_VALUE if column in _NAMED else ""
    if column in _NAMED and isinstance(value, str) and (value == NO_VALUE or _quoted(value)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] == '"'


def money(minor: int, currency: str | None) -> Decimal:
    return from_minor(minor, currency)


def count(micro: int) -> Decimal:
    """Millionths of a conversion → a decimal without trailing zeros (``1.5``, ``3``)."""
    return Decimal(format((Decimal(micro) / MICRO).normalize(), "f"))


def _meta(q: Query, reports: Reports) -> dict[str, Any]:
    verdicts = q.accepted(reports)
    return {
        "since": _iso(q.since),
        "until": _iso(q.until),
        "conversion": q.conversion,
        "verdicts": sorted(verdicts),
        "population": q.population,
    }


def file_ending(extension: str, delimiter: str = ",") -> str:
    """A download's name's end, for the reports' and the listings' alike: ``.csv``,
    ``.ndjson``; a CSV whose cells ``delimiter`` separates other than a comma says which,
    ``-semicolon.csv``, ``-tab.csv``, so that one report's ``CSV`` and ``CSV (;)`` (the
    dashboard's links) are two files, not the second saved as ``… (1).csv`` beside the first."""
    named = next((name for name, char in DELIMITERS.items() if char == delimiter), "comma")
    return f".{extension}" if named == "comma" else f"-{named}.{extension}"


def period_words(since: str | None, until: str | None, zone: tzinfo) -> list[str]:
    """A download's period in its name: ``from`` and the first day, ``to`` and the last, in
    ``zone`` (``attribution.timezone``: the dates asked for, not the UTC dates they begin on;
    ``until`` is exclusive, so November is ``from-2026-11-01-to-2026-11-30``); an open end
    (None: the fraud report's, a listing's) left out, so that ``since=2026-11-01`` and
    ``until=2026-11-02`` differ (``from-2026-11-01``, ``to-2026-11-01``)."""
    words = [] if since is None else ["from", local_date(since, zone)]
    return words + ([] if until is None else ["to", local_date(until, zone, last=True)])


def file_word(text: str | None) -> str | None:
    """``text`` as one word of a file name (see ``Report.filename``), at most 60 characters;
    ``conversion`` when none of its characters is kept (``注文``)."""
    if text is None:
        return None
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:60] or "conversion"


def local_date(moment: str | None, zone: tzinfo, last: bool = False) -> str:
    """A period's end (UTC text; None: unbounded, no date) as its date in ``zone``; with
    ``last``, the date of the period's last microsecond (``moment`` is exclusive)."""
    if moment is None:
        return ""
    instant = datetime.fromisoformat(moment) - (timedelta(microseconds=1) if last else timedelta(0))
    return instant.astimezone(zone).date().isoformat()


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def echoed(moment: str | None) -> str | None:
    """A listing's ``since`` or ``until`` (``parse_time``'s text, always with microseconds) as
    the reports echo theirs: ``2026-11-01T00:00:00Z``, microseconds only when there are some."""
    return None if moment is None else _iso(datetime.fromisoformat(moment))


Totals = dict[str | None, list[int]]
"""Currency → [conversions, value in minor units]."""


def _count_totals(convs: Sequence[Conv]) -> Totals:
    by_currency: Totals = defaultdict(lambda: [0, 0])
    for c in convs:
        by_currency[c.currency][0] += 1
        by_currency[c.currency][1] += c.minor
    return dict(by_currency)


def _totals(parts: Sequence[Totals]) -> list[dict[str, Any]]:
    by_currency: Totals = defaultdict(lambda: [0, 0])
    for part in parts:
        for cur, (n, v) in part.items():
            by_currency[cur][0] += n
            by_currency[cur][1] += v
    return [
        {"currency": cur, "conversions": n, "value": money(v, cur)}
        for cur, (n, v) in sorted(by_currency.items(), key=lambda kv: kv[0] or "")
    ]


def _attribution_part(
    reports: Reports, part: Part, q: Query, by_day: bool, params: Params
) -> tuple[Table, Totals]:
    """One slice of an attribution report (``Reports.map``): its credits and totals. The
    conversions and their touches live and die inside one worker call."""
    accepted = q.accepted(reports)
    convs = reports.read(q.since, q.until, q.conversion, q.group_by, q.population, part)
    days = reports.attribution.zone if by_day else None
    table = credit_table(reports.eligible, convs, q.models, q.group_by, accepted, params, days)
    return table, _count_totals(convs)


def _learn(reports: Reports, q: Query, group_by: str) -> tuple[Params, list[Part]]:
    """The models' parameters (``data_driven`` learns its weights from the period's journeys,
    read grouped as the report then reads them), and the parts to map the report over."""
    accepted = q.accepted(reports)
    return reports.learn(q.models, q.since, q.until, q.conversion, accepted, q.population, group_by)


async def attribution(reports: Reports, q: Query, *, by_day: bool = False) -> Report:
    """Credited conversions and value per group and currency (and per day with ``by_day``);
    with several models, one column pair per model. By day the series is dense: each group
    and currency credited on any day of the period has a row on every day of it
    (``period_days``), zero where it was credited nothing, so that a chart of it does not
    skip the days in between; a period without conversions has no rows."""

    def compute() -> tuple[Learnt | None, list[tuple[Table, Totals]]]:
        params, parts = _learn(reports, q, q.group_by)
        return params.learnt, reports.map(_attribution_part, parts, q, by_day, params)

    learnt, parts = await reports.run(compute, key=q.key(reports, "attribution", by_day))
    table = add_tables(p[0] for p in parts)
    totals = _totals([p[1] for p in parts])
    single = len(q.models) == 1
    pairs = [("conversions", "value")] if single else [(f"{m}_conversions", f"{m}_value") for m in q.models]
    columns = [*(["day"] if by_day else []), "group", "currency", *(c for pair in pairs for c in pair)]
    rows = []
    for (day, group, currency), sums in table.items():
        row: dict[str, Any] = {"day": day} if by_day else {}
        row |= {"group": group, "currency": currency}
        for m, (n_col, v_col) in zip(q.models, pairs, strict=True):
            row[n_col], row[v_col] = count(sums[m][1]), money(sums[m][0], currency)
        # Largest value first as the column shows it (in the currency's units, not its minor
        # units: 1.250 KWD is not above 10.00 EUR), then the most conversions.
        value = from_minor(sums[q.models[0]][0], currency)
        rows.append((day or "", -value, -sums[q.models[0]][1], group or "", currency or "", row))
    if by_day:
        rows += _empty_days(table, period_days(q.since, q.until, reports.attribution.zone), pairs)
    rows.sort(key=lambda r: r[:5])
    meta = {"model": q.model, "models": list(q.models), "group_by": q.group_by, **_meta(q, reports)}
    meta["totals"] = totals
    name = "timeseries" if by_day else "attribution"
    if learnt is not None and learns(name, q.models):  # what data_driven learnt, for the analyst
        meta[LEARNT] = learnt_part(learnt)
    return Report(name, columns, [r[-1] for r in rows], meta)


def _empty_days(table: Table, days: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[tuple[Any, ...]]:
    """The time series' rows of no credit, keyed for its sort as ``attribution``'s rows: for
    each (group, currency) with a row on any day, one on each of ``days`` it has none, every
    model's conversions and value zero (rendered as a computed zero is: ``0`` and ``0.00`` in
    EUR, ``0`` in JPY). One pass over the table's keys, then every group and day: no read of
    the store."""
    had: dict[tuple[str | None, str | None], set[str | None]] = defaultdict(set)
    for day, group, currency in table:
        had[group, currency].add(day)
    rows: list[tuple[Any, ...]] = []
    for (group, currency), seen in had.items():
        zeros: dict[str, Any] = {}
        for n_col, v_col in pairs:
            zeros[n_col], zeros[v_col] = count(0), money(0, currency)
        key = (group or "", currency or "")
        for day in days:
            if day not in seen:
                rows.append((day, 0, 0, *key, {"day": day, "group": group, "currency": currency, **zeros}))
    return rows


def _paths_part(reports: Reports, part: Part, q: Query) -> tuple[list[int], list[float]]:
    """One slice of the paths report: each conversion's eligible touches, and the days from
    the first of them (for those that have one)."""
    accepted = q.accepted(reports)
    lengths, days = [], []
    for c in reports.read(q.since, q.until, q.conversion, population=q.population, part=part):
        path = reports.eligible(c, accepted)
        lengths.append(len(path))
        if path:
            days.append((c.at - datetime.fromisoformat(path[0][0])).total_seconds() / 86400)
    return lengths, days


HUNDREDTHS = Decimal("0.01")


def hundredths(number: Fraction) -> Decimal:
    """A mean or median of the paths report's summary to two decimals, rounded half to even:
    ``4.00``, ``1.50``, the same number in the JSON, the CSV, the NDJSON and the terminal, as
    its shares have four (until 2026-12-07 a float, ``4.0`` and ``5.6`` in the CSV and the
    terminal beside ``5.12``)."""
    return (Decimal(number.numerator) / Decimal(number.denominator)).quantize(HUNDREDTHS)


async def paths(reports: Reports, q: Query) -> Report:
    """How many eligible touches led to each conversion, and how long from the first one."""

    def compute() -> list[tuple[list[int], list[float]]]:
        return reports.map(_paths_part, reports.slices(q.since, q.until, q.conversion), q)

    # Paths credit nothing: the model and grouping asked for do not change them.
    parts = await reports.run(compute, key=replace(q, models=(), group_by="").key(reports, "paths"))
    lengths = [n for part in parts for n in part[0]]
    days = [d for part in parts for d in part[1]]
    touches = defaultdict(int, {b: 0 for b in TOUCH_BUCKETS})
    for n in lengths:
        touches[str(n) if n < 10 else "10+"] += 1
    waits = {name: sum(lo <= d < hi for d in days) for name, lo, hi in DAY_BUCKETS}
    rows = [
        {
            "measure": "touches",
            "bucket": b,
            "conversions": touches[b],
            "share": share(touches[b], len(lengths)),
        }
        for b in TOUCH_BUCKETS
    ] + [
        {"measure": "days", "bucket": b, "conversions": n, "share": share(n, len(days))}
        for b, n in waits.items()
    ]
    summary = {
        "conversions": len(lengths),
        "with_touches": len(days),
        "mean_touches": hundredths(Fraction(sum(lengths), len(lengths))) if lengths else None,
        "median_touches": hundredths(Fraction(statistics.median(lengths))) if lengths else None,
        "mean_days": hundredths(Fraction(statistics.fmean(days))) if days else None,
        "median_days": hundredths(Fraction(statistics.median(days))) if days else None,
    }
    meta = {**_meta(q, reports), "summary": summary}
    return Report("paths", ["measure", "bucket", "conversions", "share"], rows, meta)


FRAUD_VERDICTS = (*VERDICTS, "unscored")
FRAUD_COLUMNS = [
    "group",
    "clicks",
    *FRAUD_VERDICTS,
    *(f"{v}_share" for v in FRAUD_VERDICTS),
    "distinct_visitors",
    "distinct_ips",
    "top_reasons",
]


def fraud(groups: list[dict[str, Any]], group_by: str, since: str | None, until: str | None) -> Report:
    """The fraud report's groups (``Reader.fraud``) as one flat table, for its CSV, NDJSON and
    terminal renderings: a column per verdict count and share, the top reasons as text
    (``headless: 12; http_library: 3``). ``since``/``until`` None: unbounded."""
    rows = [
        {
            "group": g["key"],
            "clicks": g["clicks"],
            **{v: g["verdicts"][v] for v in FRAUD_VERDICTS},
            **{f"{v}_share": share(g["verdicts"][v], g["clicks"]) for v in FRAUD_VERDICTS},
            "distinct_visitors": g["distinct_visitors"],
            "distinct_ips": g["distinct_ips"],
            "top_reasons": "; ".join(f"{r['reason']}: {r['count']}" for r in g["top_reasons"]),
        }
        for g in groups
    ]
    meta = {"since": echoed(since), "until": echoed(until), "group_by": group_by}
    return Report("fraud", FRAUD_COLUMNS, rows, meta)


PAYOUT_COLUMNS = [
    "creator_id",
    "status",
    "tier",
    "rule",
    "currency",
    "clicks",
    "conversions",
    "value",
    "payout",
]


Withheld = dict[tuple[str, str | None], list[int]]
"""(creator_id, currency) → [value in minor units, millionths] its quarantined touches would
have earned."""


def _payouts_part(
    reports: Reports, part: Part, q: Query, params: Params, every_params: Params, currency: str | None
) -> tuple[Table, Withheld, Clicks]:
    """One slice of the payouts report: credits by creator, what quarantined traffic would
    have earned (under ``every_params``: the model's parameters had every verdict counted),
    and the creator clicks among the touchpoints its part covers (counted here, in each
    worker beside the crediting, not after it in the gateway process). ``currency``
    (``payouts.currency``): the currency of each conversion that has none and no value (a
    sign-up), chosen per conversion: a creator's sums no longer tell a sign-up from a share
    of a conversion with a value and no currency."""
    model = q.models[0]
    accepted = q.accepted(reports)
    convs = reports.read(q.since, q.until, q.conversion, "creator_id", q.population, part)
    if currency is not None:
        convs = [replace(c, currency=currency) if c.currency is None and not c.minor else c for c in convs]
    earned = credit_table(reports.eligible, convs, [model], "creator_id", accepted, params)
    withheld = quarantined_credit(reports.eligible, convs, model, accepted, every_params)
    return earned, withheld, reports.count_clicks(q.since, q.until, accepted, part, q.population)


async def payouts(reports: Reports, rules: Payouts, q: Query) -> Report:
    """Per creator and currency: credited conversions and value under the model and the
    amount to approve; traffic with an unaccepted verdict listed apart (``quarantined``),
    with its clicks and what it would have earned, and paid nothing."""
    model = q.models[0]

    def compute() -> list[tuple[Table, Withheld, Clicks]]:
        params, parts = _learn(reports, q, "creator_id")
        # What quarantined traffic would have earned had every verdict counted: for
        # data_driven that includes the weights, learnt again from every journey with every
        # verdict (those learnt from the accepted ones alone do not know a channel whose
        # traffic was all blocked, and would credit it nothing). The other models' parameters
        # do not depend on the verdicts.
        every_params = params
        if model == "data_driven" and not set(VERDICTS) <= q.accepted(reports):
            every = replace(q, verdicts=frozenset(VERDICTS))
            every_params, _ = _learn(reports, every, "creator_id")
        return reports.map(_payouts_part, parts, q, params, every_params, rules.currency)

    # The rules' currency is all of them the computation uses (the amounts come after it).
    parts = await reports.run(compute, key=q.key(reports, "payouts", rules.currency))
    earned = add_tables(p[0] for p in parts)
    withheld: Withheld = defaultdict(lambda: [0, 0])
    clicks: Clicks = defaultdict(int)
    for _, part, part_clicks in parts:
        for key, (value, n) in part.items():
            withheld[key][0] += value
            withheld[key][1] += n
        for click, n in part_clicks.items():
            clicks[click] += n
    rows: list[dict[str, Any]] = []
    totals: dict[str | None, int] = defaultdict(int)
    creators = {k[1] for k in earned if k[1] is not None} | {
        c for c, quarantined in clicks if not quarantined
    }
    for creator in sorted(creators):
        rule = rules.rule(creator)
        cells = {k[2]: v[model] for k, v in earned.items() if k[1] == creator}
        # A creator with clicks but no credit is listed (currency null, payout 0) but adds no
        # total: a null-currency total of 0 would be a line to approve that stands for nothing.
        credited = bool(cells)
        for currency, (value, micro) in sorted((cells or {None: [0, 0]}).items(), key=lambda kv: kv[0] or ""):
            payout = rule.amount(micro, value, currency)
            if credited:
                totals[currency] += payout
            label = rule.label_in(currency) if credited else rule.label
            rows.append(_payout_row(creator, "approve", rule.tier, label, currency))
            rows[-1] |= {"clicks": clicks.get((creator, False), 0), "conversions": count(micro)}
            rows[-1] |= {"value": money(value, currency), "payout": money(payout, currency)}
    for creator in sorted({c for c, _ in withheld} | {c for c, quarantined in clicks if quarantined}):
        rule = rules.rule(creator)
        cells = {cur: v for (c, cur), v in withheld.items() if c == creator}
        would = bool(cells)  # else clicks alone: the rule as a whole
        for currency, (value, micro) in sorted((cells or {None: [0, 0]}).items(), key=lambda kv: kv[0] or ""):
            label = rule.label_in(currency) if would else rule.label
            rows.append(_payout_row(creator, "quarantined", rule.tier, label, currency))
            rows[-1] |= {"clicks": clicks.get((creator, True), 0), "conversions": count(micro)}
            rows[-1] |= {"value": money(value, currency), "payout": money(0, currency)}
    meta = {"model": model, **_meta(q, reports)}
    meta["totals"] = [
        {"currency": c, "payout": money(v, c)} for c, v in sorted(totals.items(), key=lambda kv: kv[0] or "")
    ]
    return Report("payouts", PAYOUT_COLUMNS, rows, meta)


def _payout_row(
    creator: str, status: str, tier: str | None, rule: str, currency: str | None
) -> dict[str, Any]:
    return {"creator_id": creator, "status": status, "tier": tier, "rule": rule, "currency": currency}
