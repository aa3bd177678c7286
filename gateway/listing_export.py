"""Listings as downloads: every touchpoint or conversion of a period, or every bad event of a
sender, as CSV or NDJSON.

Owns ``format=csv|ndjson`` on ``/api/touchpoints``, ``/api/conversions`` (``/api/review``
too) and ``/api/bad-events``: the rows come from the reader page by page (``EXPORT_PAGE`` at
a time, bad events' bodies no more than ``EXPORT_BYTES`` at a time, so memory stays flat over
any period) and are written to the visitor as they come, under a ``Content-Disposition`` name.
The columns are the listing's item fields as the OpenAPI document names them, in its order;
a CSV cell is kept inert for spreadsheets (``reporting.csv_cell``), separated from the next
by the ``delimiter`` asked for (a cell holding it quoted), and a nested value (``raw_params``,
``reasons``) is its JSON text. A bad event's ``body`` and ``reason`` are opened as the JSON
page opens them (by the handler's ``page``).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import tzinfo
from typing import Any

import msgspec
from aiohttp import web

from gateway.accept import vary
from gateway.compressing import stream_coding
from gateway.openapi import BAD_EVENT, CONVERSION, TOUCHPOINT
from gateway.reporting import csv_cell, file_ending, file_word, period_words

log = logging.getLogger("gateway.admin")

EXPORT_PAGE = 250
"""Rows read from the store per step of a download. Each step's rows are made into cells on the
event loop, which the proxy shares when the admin API runs in a worker that proxies too (one
worker): a thousand rows held it 20-45 ms a step, landings taking 7-18 ms instead of 3 while a
quarter's touchpoints were downloaded (2026-12-06); 250 hold it a quarter of that, at about the
same rows a second (100 cost 15-25 % of them)."""
EXPORT_BYTES = 1 << 20
"""Most characters of kept bodies and reasons a step of a bad events' download reads (at least
one event): each body may be ``webhooks.bad_body_limit`` long (64 KiB, or more), and a thousand
of them held at once, sealed and opened, took half a gigabyte."""
COLUMNS: Mapping[str, Sequence[str]] = {
    "touchpoints": tuple(TOUCHPOINT["properties"]),
    "conversions": tuple(CONVERSION["properties"]),
    "bad-events": tuple(BAD_EVENT["properties"]),
}
"""A download's columns: every field of the listing's items, as the API document lists them."""

Page = Callable[[str | None], Awaitable[tuple[list[dict[str, Any]], str | None]]]
"""The listing's page from after a cursor (None: the first), with the next page's cursor."""

_encode = msgspec.json.Encoder(order="deterministic")
NEXT_CURSOR = "Next-Cursor"
"""The header of an ``order=stored`` download naming the cursor the next one starts from."""


def _cell(value: Any) -> Any:
    if isinstance(value, bool):  # as the JSON page and NDJSON spell it, not Python's ``True``
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return csv_cell(_encode.encode(value).decode())
    return csv_cell(value)


FILTER_WORDS = 120
"""Most characters a download's name gives its filters' values (five of 60 each would pass
the 255 bytes a file name may have on most file systems)."""


def file_name(
    kind: str,
    since: str | None,
    until: str | None,
    fmt: str,
    zone: tzinfo,
    filters: Mapping[str, str] | None = None,
    delimiter: str = ",",
    newest_first: bool = False,
    stored: bool = False,
) -> str:
    """``touchpoints-from-2026-11-01-to-2026-11-30.csv``: the period's first and last days in
    ``zone`` (``attribution.timezone``), as the reports' downloads name theirs
    (``reporting.period_words``; ``until`` is exclusive: November ends on the 30th), an open end
    left out (``touchpoints.csv``); after
    the kind, each filter's value in the order given (the listing's), as the reports name a
    conversion (``reporting.file_word``: ASCII letters, digits and ``.``, so the name needs
    no quoting in ``Content-Disposition``): ``conversions-purchase-from-….csv``; a CSV's
    ``delimiter`` other than the comma at its end, as the reports' (``file_ending``). Newest
    first, ``-newest`` after the period (``touchpoints-from-…-newest.csv``): the same rows in
    the other order are another file, not one saved over the other or as ``… (1).csv``; in the
    order stored (``order=stored``), ``-stored``."""
    parts = [kind]
    words = "-".join(filter(None, map(file_word, (filters or {}).values())))
    if words:
        parts.append(words[:FILTER_WORDS].rstrip("-_"))
    parts += period_words(since, until, zone)
    if newest_first:
        parts.append("newest")
    if stored:
        parts.append("stored")
    return "-".join(parts) + file_ending(fmt, delimiter)


async def download(
    request: web.Request,
    kind: str,
    fmt: str,
    bom: bool,
    name: str,
    page: Page,
    cursor: str | None,
    *,
    delimiter: str = ",",
    next_cursor: str | None = None,
) -> web.StreamResponse:
    """Every row of the listing from after ``cursor``, streamed as ``fmt`` (a CSV's cells
    separated by ``delimiter``, after a byte order mark with ``bom``). A failure once the
    headers are sent (the store gone mid-way) cuts the connection: a download that ends early
    is never mistaken for a whole one. A ``HEAD`` gets the headers alone, and a client that
    leaves part way (a cancelled download, ``curl … | head``) ends the download quietly.
    ``next_cursor`` (``order=stored``: where the rows it holds end) goes in the ``Next-Cursor``
    header: the next download's ``cursor``, for the rows stored since."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
            "Content-Disposition": f'attachment; filename="{name}"',
            **({NEXT_CURSOR: next_cursor} if next_cursor is not None else {}),
        }
    )
    resp.headers.update(vary(request.query))
    stream_coding(request, resp)  # gzip when accepted, chunk by chunk
    items, cursor = await page(cursor)  # the first page before the headers: a 503 can still be said
    await resp.prepare(request)
    if request.method == "HEAD":
        # No body, and no reading the rest of the period: aiohttp sends whatever a handler
        # writes, and after a HEAD's headers a client keeping the connection read the rows as
        # its next answer's status line.
        await resp.write_eof()
        return resp
    columns = COLUMNS[kind]
    try:
        if fmt == "csv":
            await resp.write(("\ufeff" if bom else "").encode() + _csv_lines([list(columns)], delimiter))
        while True:
            if fmt == "csv":
                chunk = _csv_lines([[_cell(item.get(c)) for c in columns] for item in items], delimiter)
            else:
                chunk = b"".join(_ndjson_line(item, columns) for item in items)
            if chunk:
                await resp.write(chunk)
            if cursor is None:
                break
            try:
                items, cursor = await page(cursor)
            except Exception as err:  # the headers are gone: no error answer can follow them
                log.warning("a %s download was cut short: %s", kind, err)
                if request.transport is not None:
                    request.transport.abort()  # cut, not ended: the file is visibly incomplete
                return resp
        await resp.write_eof()
    except ConnectionError:  # the client left: "Connection lost", or ClientConnectionResetError
        # Not the admin API failing (it logged a traceback at error until 2026-12-05).
        log.info("a %s download ended early: the client left", kind)
    return resp


def _ndjson_line(item: dict[str, Any], columns: Sequence[str]) -> bytes:
    """One row as an NDJSON line, its keys in the columns' order as the CSV's header and the
    reports' NDJSON have them (until 2026-12-07 sorted by name: ``campaign`` first, ``id``
    in the middle); a nested value's keys sorted, as in its CSV cell."""
    fields = (_encode.encode(c) + b":" + _encode.encode(item.get(c)) for c in columns)
    return b"{" + b",".join(fields) + b"}\n"


def _csv_lines(rows: list[list[Any]], delimiter: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()
