"""Readers for ``gateway import``: log files and dumps → one ``Line`` (or ``Skip``) per request.

Owns opening a history file (gzip detected by its magic bytes, whatever its
name), reading it in chunks, and the per-format parsers: nginx/Apache combined
logs, JSON-lines access logs (fields found by JSON pointers, defaults in
``JSON_FIELDS``), mitmproxy flow dumps (``mitmproxy.io``, imported only for
that format) and Segment archives (``Record`` per ``page``/``identify`` call).
A line that cannot be read becomes a ``Skip`` with its reason; nothing here
raises for bad input. Knows nothing of the pipeline or the store.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from gateway.sources import MISSING, parse_pointer, resolve

FORMATS = ("combined", "json-lines", "mitm", "segment")
CHUNK = 4096
"""Lines parsed per call (one thread hop each)."""
JSON_FIELDS: dict[str, str] = {
    "time": "/time",
    "method": "/method",
    "uri": "/uri",
    "query": "/query",
    "request": "/request",
    "host": "/host",
    "status": "/status",
    "referer": "/referer",
    "user_agent": "/user_agent",
    "ip": "/remote_addr",
    "cookie": "/cookie",
    "vid": "/gw_vid",
}
"""JSON-lines default field → pointer. ``uri`` is path and query (nginx ``$request_uri``);
``request`` ("GET /p?q HTTP/1.1") is used when ``method``/``uri`` are absent; ``cookie`` is the
Cookie header and ``vid`` our cookie's value alone, when the log kept either."""


@dataclass(slots=True)
class Line:
    """One logged request, as much of it as the log kept."""

    number: int
    ts: datetime
    method: str
    target: str
    """Path and query, as requested (origin-form)."""
    status: int
    raw: bytes
    """The line as read: with the file identity and number, it keys the line's event ids."""
    host: str = ""
    referer: str = ""
    user_agent: str = ""
    ip: str = ""
    cookie: str = ""
    headers: dict[str, str] | None = None
    """Every request header (lower-case names), when the source kept them (flow dumps)."""


@dataclass(slots=True)
class Record:
    """One event of a Segment archive (a JSON object), with the bytes it came from."""

    number: int
    event: dict[str, Any]
    raw: bytes


@dataclass(slots=True)
class Skip:
    number: int
    reason: str


Item = Line | Record | Skip


class History:
    """An open history file: compressed or not, read in chunks of parsed items."""

    def __init__(self, path: Path, parse: Callable[[int, bytes], list[Item]]) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._raw: BinaryIO = path.open("rb")
        self._stream: BinaryIO = self._raw
        if self._raw.read(2) == b"\x1f\x8b":
            self._stream = gzip.GzipFile(fileobj=self._raw)  # type: ignore[assignment]
        self._raw.seek(0)
        self._parse = parse
        self._number = 0
        first = self._stream.readline()
        self.identity = hashlib.blake2b(first, digest_size=16).digest()
        """The digest of the first line: the same in a renamed, rotated, compressed or grown copy."""
        self._pending = first

    @property
    def lines(self) -> int:
        """Lines read so far."""
        return self._number

    @property
    def position(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for gzip)."""
        return self._raw.tell()

    def chunk(self) -> list[Item]:
        """The next items (at most ``CHUNK`` lines' worth); empty at the end of the file."""
        items: list[Item] = []
        for _ in range(CHUNK):
            if self._pending:
                raw, self._pending = self._pending, b""
            else:
                try:
                    raw = self._stream.readline()
                except (OSError, EOFError) as err:  # a truncated or corrupt gzip member
                    self._number += 1
                    items.append(Skip(self._number, f"unreadable: {err}"))
                    self._stream = io.BytesIO()
                    break
            if not raw:
                break
            self._number += 1
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                items.extend(self._parse(self._number, raw))
        return items

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


# -- timestamps ----------------------------------------------------------------------------

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}
_CLF_TIME = re.compile(r"(\d{2})/(\w{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")


def parse_clf_time(text: str, cache: dict[str, datetime]) -> datetime | None:
    """``10/Oct/2026:13:55:36 -0700`` → an aware datetime (cached: a second repeats many lines)."""
    ts = cache.get(text)
    if ts is not None:
        return ts
    m = _CLF_TIME.fullmatch(text)
    if m is None or m[2] not in _MONTHS:
        return None
    offset = timedelta(hours=int(m[8]), minutes=int(m[9])) * (-1 if m[7] == "-" else 1)
    try:
        ts = datetime(int(m[3]), _MONTHS[m[2]], int(m[1]), int(m[4]), int(m[5]), int(m[6]))
        ts = ts.replace(tzinfo=timezone(offset))
    except ValueError:
        return None
    if len(cache) > 10_000:
        cache.clear()
    cache[text] = ts
    return ts


def parse_any_time(value: Any, cache: dict[str, datetime]) -> datetime | None:
    """ISO 8601, Unix seconds or milliseconds (number or digits), or the combined-log form."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
            seconds = float(value)
            return datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC)
        if not isinstance(value, str):
            return None
        if "/" in value:
            return parse_clf_time(value.strip("[]"), cache)
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


# -- combined -------------------------------------------------------------------------------

_Q = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_COMBINED = re.compile(rf"(\S+) \S+ \S+ \[([^\]]+)\] {_Q} (\d{{3}}) \S+(?: {_Q} {_Q})?(.*)", re.DOTALL)
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)")
_SIGNED = re.compile(r"v1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}")


def _unescape(text: str) -> str:
    """nginx writes ``\\x22``, Apache ``\\"``: both back to the character."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 3 else m[1], text)


def split_request(request: str) -> tuple[str, str] | str:
    """``GET /p?q HTTP/1.1`` → (method, origin-form target), or why it is not a page request."""
    parts = request.split(" ")
    if len(parts) not in (2, 3) or not parts[0].isalpha() or not parts[0].isupper():
        return "unreadable request line"
    target = parts[1]
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash > 0 else "/"
    if not target.startswith("/"):
        return "not an origin-form request (CONNECT, OPTIONS *)"
    return parts[0], target


def logged_cookie(extra: str, cookie_name: str) -> str:
    """Our cookie among a log line's extra fields: a Cookie header or the bare signed value."""
    if cookie_name + "=" in extra:
        for field in re.findall(r'"([^"]*)"', extra) or [extra]:
            if cookie_name + "=" in field:
                return _unescape(field)
    m = _SIGNED.search(extra)
    return f"{cookie_name}={m[0]}" if m else ""


def combined_parser(cookie_name: str) -> Callable[[int, bytes], list[Item]]:
    times: dict[str, datetime] = {}

    def parse(number: int, raw: bytes) -> list[Item]:
        m = _COMBINED.fullmatch(raw.decode("utf-8", "replace"))
        if m is None:
            return [Skip(number, "not a combined-log line")]
        ts = parse_clf_time(m[2], times)
        if ts is None:
            return [Skip(number, f"unreadable time [{m[2][:40]}]")]
        request = split_request(_unescape(m[3]))
        if isinstance(request, str):
            return [Skip(number, request)]
        referer, agent, extra = m[5] or "", m[6] or "", m[7]
        return [
            Line(
                number,
                ts,
                request[0],
                request[1],
                int(m[4]),
                raw,
                referer="" if referer == "-" else _unescape(referer),
                user_agent="" if agent == "-" else _unescape(agent),
                ip=m[1],
                cookie=logged_cookie(extra, cookie_name) if extra else "",
            )
        ]

    return parse


# -- JSON lines -----------------------------------------------------------------------------


def json_parser(cookie_name: str, overrides: dict[str, str]) -> Callable[[int, bytes], list[Item]]:
    """A JSON-lines parser with ``overrides`` (field → JSON pointer, "" unmaps) over the defaults."""
    pointers = {name: parse_pointer(p) for name, p in {**JSON_FIELDS, **overrides}.items() if p}
    times: dict[str, datetime] = {}
    decode = msgspec.json.Decoder()

    def text(doc: Any, name: str) -> str:
        tokens = pointers.get(name)
        value = MISSING if tokens is None else resolve(doc, tokens)
        if value is MISSING or value is None or isinstance(value, dict | list) or value == "-":
            return ""
        return str(value)

    def parse(number: int, raw: bytes) -> list[Item]:
        try:
            doc = decode.decode(raw)
        except msgspec.DecodeError:
            return [Skip(number, "not valid JSON")]
        if not isinstance(doc, dict):
            return [Skip(number, "not a JSON object")]
        tokens = pointers.get("time")
        ts = parse_any_time(resolve(doc, tokens), times) if tokens else None
        if ts is None:
            return [Skip(number, f"time: missing or unreadable at {'/' + '/'.join(tokens or ())}")]
        method, uri = text(doc, "method"), text(doc, "uri")
        if not (method and uri):
            request = split_request(text(doc, "request"))
            if isinstance(request, str):
                return [Skip(number, "method/uri: missing (and no readable request line)")]
            method, uri = request
        elif not uri.startswith("/"):
            return [Skip(number, f"uri: not a path: {uri[:40]!r}")]
        query = text(doc, "query")
        if query and "?" not in uri:
            uri += "?" + query.removeprefix("?")
        status = text(doc, "status")
        vid = text(doc, "vid")
        return [
            Line(
                number,
                ts,
                method.upper(),
                uri,
                int(status) if status.isdigit() else 0,
                raw,
                host=text(doc, "host"),
                referer=text(doc, "referer"),
                user_agent=text(doc, "user_agent"),
                ip=text(doc, "ip"),
                cookie=f"{cookie_name}={vid}" if vid else text(doc, "cookie"),
            )
        ]

    return parse


# -- Segment archives -----------------------------------------------------------------------


def segment_parser() -> Callable[[int, bytes], list[Item]]:
    """One JSON object per line (a batch ``{"batch": [...]}`` too): ``page``/``identify`` calls."""
    decode = msgspec.json.Decoder()

    def parse(number: int, raw: bytes) -> list[Item]:
        try:
            doc = decode.decode(raw)
        except msgspec.DecodeError:
            return [Skip(number, "not valid JSON")]
        events = doc.get("batch") if isinstance(doc, dict) and "batch" in doc else doc
        events = events if isinstance(events, list) else [events]
        out: list[Item] = []
        for event in events:
            if isinstance(event, dict):
                out.append(Record(number, event, raw))
            else:
                out.append(Skip(number, "not a JSON object"))
        return out

    return parse


# -- mitmproxy flow dumps -------------------------------------------------------------------


def read_flows(path: Path) -> Iterator[tuple[list[Item], int]]:
    """A mitmproxy flow dump (``mitmdump -w``) in chunks of ``Line``, each with the bytes read so
    far; needs the ``mitm`` extra."""
    from mitmproxy import http
    from mitmproxy.exceptions import FlowReadException
    from mitmproxy.io import FlowReader

    with path.open("rb") as fo:
        items: list[Item] = []
        number = 0
        try:
            for flow in FlowReader(fo).stream():
                number += 1
                if not isinstance(flow, http.HTTPFlow):
                    items.append(Skip(number, f"not an HTTP flow ({type(flow).__name__})"))
                else:
                    items.append(flow_line(number, flow))
                if len(items) >= CHUNK:
                    yield items, fo.tell()
                    items = []
        except FlowReadException as err:
            items.append(Skip(number + 1, f"unreadable flow dump: {err}"))
        if items:
            yield items, fo.tell()


def flow_line(number: int, flow: Any) -> Line:
    """One recorded ``HTTPFlow`` → a ``Line`` (the request as the client sent it)."""
    req = flow.request
    peer = flow.client_conn.peername
    headers = req.headers
    joined: dict[str, str] = {}
    for name, value in headers.items(multi=True):
        key = name.lower()
        joined[key] = joined[key] + ("; " if key == "cookie" else ", ") + value if key in joined else value
    raw = b"\0".join(
        (req.method.encode(), req.url.encode(errors="replace"), repr(req.timestamp_start).encode())
    )
    return Line(
        number,
        datetime.fromtimestamp(req.timestamp_start, UTC),
        req.method,
        req.path,
        flow.response.status_code if flow.response is not None else 0,
        raw,
        host=headers.get("host") or req.pretty_host,
        referer=headers.get("referer", ""),
        user_agent=headers.get("user-agent", ""),
        ip=peer[0] if peer else "",
        cookie=joined.get("cookie", ""),
        headers=joined,
    )
