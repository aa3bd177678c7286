"""A recorded browser session (HAR 1.2, a browser's "Save all as HAR with content") read into
the requests and answers ``gateway rules try`` runs the rules on.

Owns reading the file (``Recording``: JSON, gzip'd or not, ``log.entries``, each entry kept as its text and
read when tried, in the order sent), each entry's checks (one
line naming the entry and the field, ``entry 12 (POST /login): response.content.text is not
base64``) and what an entry becomes: the request as the gateway's host would see it (method,
scheme, host and path of its URL, its headers, its ``startedDateTime`` as the request's time),
the answer's status and headers, and both bodies. A HAR's bodies are already decoded: a browser
writes the body as the page got it, after any ``Content-Encoding`` (HAR 1.2 ``content.text``),
so they are taken as they are, never decoded again. A body the file does not hold (exported
without content) is ``None``, and said so, not taken for an empty one. Reads nothing else,
writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import SplitResult, urlencode, urlsplit

import msgspec
from multidict import CIMultiDict

_CHARSET = re.compile(r"(?i)\bcharset\s*=\s*\"?([^\";\s]+)")
_EMPTY_ANSWERS = frozenset({204, 304})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A method name (RFC 9110 ``token``)."""


def printable(text: str) -> str:
    """``text`` as printed to a terminal: a character that is not printable (an escape sequence
    in a recorded URL or answer) written as its Python escape."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class HarError(Exception):
    """The file cannot be read as a HAR at all: one line saying why."""


class EntryError(Exception):
    """One entry cannot be tried: one line naming it and the field."""


class NotHttp(EntryError):
    """An entry that is no HTTP request (a WebSocket's messages, a ``data:`` image, an
    extension's file): browsers record them with the rest, and the gateway sees none."""


_NOT_HTTP = frozenset({"ws", "wss", "data", "blob", "about", "chrome-extension", "moz-extension", "file"})


@dataclass(slots=True)
class Entry:
    """One request and its answer, as recorded."""

    number: int
    """1 for the file's first entry: the order of the browser's network panel."""
    method: str
    scheme: str
    host: str
    """The URL's host and port, as a ``Host`` header sends them."""
    path: str
    """As sent, still percent-encoded: what a rule's ``path`` matches."""
    query: str
    ts: datetime
    request_headers: CIMultiDict[str]
    status: int
    response_headers: CIMultiDict[str]
    request_body: bytes | None
    """None: the request had a body the file does not hold."""
    response_body: bytes | None
    """None: the answer had a body the file does not hold (exported without content)."""

    @property
    def response_cut(self) -> bool:
        """The file holds the answer's body cut short (its ``content.size`` is larger by more
        than a byte order mark, which a browser may leave out of the text)."""
        body, size = self.response_body, self.response_size
        return body is not None and size is not None and size > len(body) + 3

    response_size: int | None = None
    """``content.size``: the answer's size as the browser counted it, decoded; larger than
    ``response_body`` when the file holds it cut (Firefox keeps 1 MB of each answer)."""
    cached: str = ""
    """Chrome's ``_fromCache`` (``memory``, ``disk``): the answer came from the browser's cache,
    the request never left the browser (no site, no gateway saw it)."""


class _Log(msgspec.Struct):
    entries: list[msgspec.Raw]


class _Document(msgspec.Struct):
    log: _Log


class _Started(msgspec.Struct):
    started: Any = msgspec.field(default=None, name="startedDateTime")


class _Request(msgspec.Struct):
    url: Any = None
    headers: Any = None


class _Kind(msgspec.Struct):
    request: _Request | None = None
    resource_type: Any = msgspec.field(default=None, name="_resourceType")
    started: Any = msgspec.field(default=None, name="startedDateTime")


class Recording:
    """A HAR file's entries, each kept as its JSON text (a slice of the file's bytes) and read
    into an ``Entry`` only when tried, one at a time: a recording of hundreds of megabytes (a
    long session, its images and scripts with content) costs its size in memory, not the
    several times that its parsed objects would (1.8 GB for a 240 MB file of 100,000 entries
    when read whole)."""

    def __init__(self, path: Path | str, data: bytes | None = None) -> None:
        """``path``'s HAR, or ``data`` read already (standard input), named ``path``. Gzip'd
        (``session.har.gz``, told by its magic bytes whatever the name) is read decompressed."""
        if data is None:
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                raise HarError(f"cannot read {path}: {err.strerror or err}") from None
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as err:
                raise HarError(f"{path}: not a HAR file: gzip'd, and cut short or corrupt ({err})") from None
        view = memoryview(data)[3:] if data.startswith(b"\xef\xbb\xbf") else memoryview(data)
        try:
            self.raw = msgspec.json.decode(view, type=_Document).log.entries
        except (msgspec.DecodeError, RecursionError) as err:  # ValidationError is a DecodeError
            raise HarError(f"{path}: not a HAR file: {_why_not(data, err)}") from None

    def __len__(self) -> int:
        return len(self.raw)

    def in_time_order(self) -> list[int]:
        """The entries' numbers in the order they were sent (``startedDateTime``), as the gateway
        would have seen them: a HAR merged from several tabs, or edited, need not be in that
        order. Entries sent at the same time, or whose time cannot be read, keep the file's."""

        def started(number: int) -> datetime:
            try:
                value = msgspec.json.decode(self.raw[number - 1], type=_Started).started
            except (msgspec.DecodeError, RecursionError):
                return _NEVER
            return _time(value) or _NEVER

        return sorted(range(1, len(self.raw) + 1), key=started)

    def first_page(self, order: list[int]) -> tuple[str, bool] | None:
        """The host of the page the recording starts on, from its first http(s) request sent
        (by ``order``), and True: a page load's (a navigation, which Chrome marks
        ``_resourceType: "document"``), its own host; another's (an XHR, an image, a beacon:
        the recording started on a page already loaded), the host of the page that sent it,
        its ``Referer``, else its own. An entry no browser marked (not every browser writes
        ``_resourceType``): its own host, and False. None when no entry is an http(s) request."""
        for number in order:
            try:
                kind = msgspec.json.decode(self.raw[number - 1], type=_Kind)
            except (msgspec.DecodeError, RecursionError):  # said when the entry is read
                continue
            request = kind.request or _Request()
            host = _http_host(request.url)
            if host is None or _time(kind.started) is None:  # no request, or one said unreadable
                continue
            if not isinstance(kind.resource_type, str) or not kind.resource_type:
                return host, False
            if kind.resource_type != "document":
                sent = request.headers if isinstance(request.headers, list) else []
                referers = [
                    h.get("value")
                    for h in sent
                    if isinstance(h, dict) and str(h.get("name")).lower() == "referer"
                ]
                host = _http_host(referers[0] if referers else None) or host
            return host, True
        return None

    def entry(self, number: int) -> Entry:
        """Entry ``number`` (1: the file's first); EntryError naming it and what is wrong."""
        try:
            raw = json.loads(bytes(self.raw[number - 1]).decode("utf-8"))
        except UnicodeDecodeError as err:
            raise EntryError(f"entry {number}: not UTF-8 text (its byte {err.start})") from None
        except (ValueError, RecursionError):
            raise EntryError(f"entry {number}: not JSON, or nested too deep") from None
        return entry(number, raw)


_NEVER = datetime.min.replace(tzinfo=UTC)


def _time(value: Any) -> datetime | None:
    """A ``startedDateTime`` read (ISO 8601; UTC when it names no zone); None when it is none."""
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _split(url: Any) -> SplitResult | None:
    """A URL's parts; None for no URL (not text, or an unclosed ``[`` of an IPv6 address)."""
    try:
        return urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return None


def _is_http(parts: SplitResult | None) -> TypeGuard[SplitResult]:
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)


def _host(parts: SplitResult) -> str:
    """The host and port, as the ``Host`` header sends them: a URL's ``user:password@`` is no part of it."""
    return parts.netloc.rpartition("@")[2]


def _http_host(url: Any) -> str | None:
    """An http(s) URL's host and port, as its ``Host`` header sends them; None for another."""
    parts = _split(url)
    return _host(parts) if _is_http(parts) else None


def _why_not(data: bytes, err: Exception) -> str:
    """Why a file is no HAR, said as Python's own JSON reader says it (line numbers)."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as undecoded:
        return f"not UTF-8 text (byte {undecoded.start})"
    except json.JSONDecodeError as invalid:
        return f"not JSON ({invalid.msg}, line {invalid.lineno})"
    except RecursionError:
        return "JSON nested too deep"
    log = document.get("log") if isinstance(document, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        return 'no log.entries list (a HAR is {"log": {"entries": [...]}})'
    return f"not JSON ({err})"  # what Python's reader takes and JSON does not (NaN)


def entry(number: int, raw: Any) -> Entry:
    """One ``log.entries`` item; EntryError naming it and what is wrong."""
    label = f"entry {number}"
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        raise EntryError(f"{label}: no request object")
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise EntryError(f"{label}: request.method is not a method name: {method!r}"[:200])
    parts = _split(url)
    if parts is not None and parts.scheme.lower() in _NOT_HTTP:
        raise NotHttp(f"{label} ({method} {parts.scheme}: URL): not an HTTP request, skipped")
    if not _is_http(parts):
        raise EntryError(f"{label} ({method}): request.url is not an http(s) URL: {url!r}"[:300])
    label = f"{label} ({method} {printable(parts.path or '/')})"
    host = _host(parts)

    def fail(message: str) -> EntryError:
        return EntryError(f"{label}: {message}")

    response = raw.get("response")
    if not isinstance(response, dict):
        raise fail("no response object")
    status = response.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise fail(f"response.status is not a number: {status!r}")
    request_headers = _headers(request, "request", fail)
    response_headers = _headers(response, "response", fail)
    crumbs = request_headers.popall("cookie", [])
    if crumbs:  # HTTP/2 may send the cookies in several fields: joined, as a front proxy joins them
        request_headers["cookie"] = "; ".join(crumbs)
    else:  # some exporters list the cookies alone
        sent = [f"{c['name']}={c['value']}" for c in _cookies(request, "request", fail)]
        if sent:
            request_headers["cookie"] = "; ".join(sent)
    if "set-cookie" not in response_headers:
        for cookie in _cookies(response, "response", fail):
            response_headers.add("set-cookie", _set_cookie_line(cookie))
    request_headers.setdefault("host", host)
    return Entry(
        number=number,
        method=method,
        scheme=parts.scheme,
        host=host,
        path=parts.path or "/",
        query=parts.query,
        ts=_started(raw.get("startedDateTime"), fail),
        request_headers=request_headers,
        status=status,
        response_headers=response_headers,
        request_body=_request_body(request, request_headers, fail),
        response_body=_response_body(response, response_headers, status, method, fail),
        response_size=_size(response),
        cached=cached if isinstance(cached := raw.get("_fromCache"), str) else "",
    )


def _size(response: dict[str, Any]) -> int | None:
    content = response.get("content")
    size = content.get("size") if isinstance(content, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def _headers(part: dict[str, Any], name: str, fail: Callable[[str], EntryError]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    listed = part.get("headers", [])
    if not isinstance(listed, list):
        raise fail(f"{name}.headers is not a list")
    for i, header in enumerate(listed):
        key = header.get("name") if isinstance(header, dict) else None
        value = header.get("value") if isinstance(header, dict) else None
        if not isinstance(key, str) or not isinstance(value, str):
            raise fail(f"{name}.headers[{i}] is not a {{name, value}} pair of strings")
        if key.startswith(":"):  # HTTP/2's pseudo-headers: the URL and status say them
            continue
        # Some exporters write a response's Set-Cookie lines as one value, a line each.
        lines = value.split("\n") if key.lower() == "set-cookie" else [value]
        for line in lines:
            headers.add(key.lower(), line)
    return headers


def _cookies(part: dict[str, Any], name: str, fail: Callable[[str], EntryError]) -> list[dict[str, Any]]:
    listed = part.get("cookies", [])
    if not isinstance(listed, list):
        raise fail(f"{name}.cookies is not a list")
    for i, cookie in enumerate(listed):
        if not (
            isinstance(cookie, dict)
            and isinstance(cookie.get("name"), str)
            and isinstance(cookie.get("value"), str)
        ):
            raise fail(f"{name}.cookies[{i}] has no name and value strings")
    return listed


def _set_cookie_line(cookie: dict[str, Any]) -> str:
    """A ``Set-Cookie`` value from a HAR cookie object (its expiry kept: a deletion stays one;
    its Path and Domain too: two of a name in other scopes are two cookies, ``cookies.scope``)."""
    line = f"{cookie['name']}={cookie['value']}"
    for attribute in ("path", "domain"):
        if isinstance(value := cookie.get(attribute), str) and value and ";" not in value:
            line += f"; {attribute.capitalize()}={value}"
    expires = cookie.get("expires")
    if isinstance(expires, str) and expires:
        try:
            when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            return line
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        line += "; Expires=" + when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    return line


def _started(value: Any, fail: Callable[[str], EntryError]) -> datetime:
    """``startedDateTime`` (ISO 8601): the request's time, which a JWT's ``exp`` and a cookie's
    ``Expires`` are judged at, as when it was recorded."""
    if not isinstance(value, str):
        raise fail("startedDateTime is missing")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"startedDateTime is not an ISO 8601 date: {value!r}"[:200]) from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _request_body(
    request: dict[str, Any], headers: CIMultiDict[str], fail: Callable[[str], EntryError]
) -> bytes | None:
    post = request.get("postData")
    if post is None:
        # Browsers leave postData out of a request without a body; one that says it had a body
        # was exported without it.
        length = headers.get("content-length", "0").strip()
        return None if length.isdigit() and int(length) > 0 else b""
    if not isinstance(post, dict):
        raise fail("request.postData is not an object")
    mime = post.get("mimeType")
    if isinstance(mime, str) and mime and "content-type" not in headers:
        headers["content-type"] = mime
    text = post.get("text")
    if text is None:
        params = post.get("params")
        form = headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded")
        if isinstance(params, list) and form:  # a form listed field by field only
            try:
                return urlencode([(p["name"], p.get("value", "")) for p in params]).encode()
            except (TypeError, KeyError):
                raise fail("request.postData.params is not a list of {name, value}") from None
        return None
    if not isinstance(text, str):
        raise fail("request.postData.text is not a string")
    return _encoded(text, headers.get("content-type", ""))


def _response_body(
    response: dict[str, Any],
    headers: CIMultiDict[str],
    status: int,
    method: str,
    fail: Callable[[str], EntryError],
) -> bytes | None:
    content = response.get("content")
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise fail("response.content is not an object")
    mime = content.get("mimeType")
    if isinstance(mime, str) and mime and "content-type" not in headers:
        headers["content-type"] = mime
    text = content.get("text")
    encoding = content.get("encoding") or ""
    size = content.get("size")
    if text is None or (text == "" and isinstance(size, int) and size > 0):
        empty = status in _EMPTY_ANSWERS or method == "HEAD" or size == 0
        return b"" if empty else None
    if not isinstance(text, str):
        raise fail("response.content.text is not a string")
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise fail("response.content.text is not base64") from None
    if encoding:
        raise fail(f"response.content.encoding is {encoding!r}: a HAR body is base64 or text")
    return _encoded(text, headers.get("content-type", ""))


def _encoded(text: str, content_type: str) -> bytes:
    """A body's text as the bytes the site sent: in the charset its type names (a HAR holds text
    as Unicode), UTF-8 when none, or when the text does not fit the charset named."""
    declared = _CHARSET.search(content_type)
    if declared is not None:
        try:
            return text.encode(declared.group(1))
        except (LookupError, UnicodeError):
            pass
    return text.encode("utf-8", "surrogateescape")
