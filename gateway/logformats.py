"""Parsers for ``gateway import``: one history line (or flow) → ``Line``, ``Record`` or ``Skip``.

Owns the per-format parsers: nginx/Apache combined logs, JSON-lines access
logs (fields found by JSON pointers, defaults in ``JSON_FIELDS``), Segment
archives (a ``Record`` per event) and mitmproxy flow dumps (``mitmproxy.io``,
imported only for that format). A line that cannot be read becomes a ``Skip``
with its reason; nothing here raises for bad input. Files and records are
``gateway.history``; nothing here knows the pipeline or the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from gateway.forwarding import parse_ip
from gateway.history import CHUNK, Input, Item, Line, Record, Skip, open_input, parse_any_time, parse_clf_time
from gateway.sources import MISSING, decode_json, parse_pointer, resolve

FORMATS = ("combined", "json-lines", "mitm", "segment")
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
    "forwarded_for": "/x_forwarded_for",
}
"""JSON-lines default field → pointer. ``uri`` is path and query (nginx ``$request_uri``);
``request`` ("GET /p?q HTTP/1.1") is used when ``method``/``uri`` are absent; ``cookie`` is the
Cookie header and ``vid`` our cookie's value alone, when the log kept either; ``forwarded_for`` the
X-Forwarded-For (nginx ``$http_x_forwarded_for``)."""


NESTED = "JSON nested too deeply to read"
BATCH_NOT_ARRAY = "batch: not a JSON array of calls"
OLDEST_YEARS = 50
TOO_OLD = f"time: more than {OLDEST_YEARS} years ago, older than any logged request (a duration, a counter?)"
"""Why a line is skipped that is dated more than ``OLDEST_YEARS`` before now (``12``, read as Unix
seconds, is 1970-01-01T00:00:12): no logged request is that old, and a Segment event that old is
refused too (``Limits.max_age``)."""
NOT_IN_FORMAT = (
    "not a combined-log line",
    "unreadable time",  # a combined line but for its time: nginx's $time_iso8601, say
    "not valid JSON",
    "not a JSON object",
    BATCH_NOT_ARRAY,
    "time: missing or unreadable",
    "not an HTTP flow",
    "unreadable flow dump",
    TOO_OLD,  # a json-lines --field time at a duration, a counter: 12
)
"""The skips (their reasons' beginnings) that say a line is not in the format asked for: when
every line read is one of them, ``--format`` (or a json-lines ``--field``) is wrong."""


# -- combined -------------------------------------------------------------------------------

_Q = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
_LINE = rf"(\S+) \S+ \S+ \[([^\]]+)\] {_Q} (\d{{3}}) \S+(?: {_Q} {_Q})?(.*)"
_COMBINED = re.compile(rf"(){_LINE}", re.DOTALL)
_VHOST = re.compile(rf"((?:[\w-]+\.)*[\w-]+(?::\d+)?|\[[0-9A-Fa-f:.]+\](?::\d+)?) {_LINE}", re.DOTALL)
"""A combined line after the virtual host (Apache's ``vhost_combined``: ``%v:%p``, or ``%{Host}i``,
nginx ``$host``), tried when the line is not a plain one. Both: host (empty without), client, time,
request, status, referer, agent, extra."""
_SPACED = re.compile(rf"()(\S+) \S+ [^\[\]\"]+ \[([^\]]+)\] {_Q} (\d{{3}}) \S+(?: {_Q} {_Q})?(.*)", re.DOTALL)
"""A plain combined line whose user (``$remote_user``, ``%u``: an HTTP basic-auth name as sent)
holds spaces (``john doe``), which neither server escapes. Tried when the line reads as no
combined line, or as a vhost one whose client would be ``-`` (no server logs that for ``%h``):
``203.0.113.24 - john doe [`` has a vhost line's four fields before its time. Taken only when
its client is an address, so that a vhost line (a host name first) is not read as one."""
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)")
_FIRST_QUOTED = re.compile(rf"\s*{_Q}")
_SIGNED = re.compile(r"v1\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}")
_QUOTE_OR_ESCAPE = re.compile(r'\\.|"')
CUT = "cut short: a quoted field is not closed (a line truncated: a syslog size limit, a crash)"
"""Why a combined line is skipped whose Referer, User-Agent or a field after them opens a quote
that never closes: the rest of the line is missing, and read it would be a request that logged
no referrer and no agent (a referral lost, a touchpoint blocked as ``empty_agent``). nginx and
Apache escape a quote inside a field (``\\x22``, ``\\"``), so the format's own come in pairs."""


def _cut(extra: str) -> bool:
    """Whether the text after the status and size opens a quoted field it does not close."""
    return '"' in extra and _QUOTE_OR_ESCAPE.findall(extra).count('"') % 2 == 1


def _logged_bytes(field: str) -> bytes:
    """A combined line's quoted field (the line read with ``surrogateescape``) as the bytes the
    client sent: nginx's ``\\xC3\\xA9`` is the two bytes of an é, as a raw é or ``\\xC3`` beside a
    raw ``\\xA9`` are; Apache's ``\\"`` a quote."""
    out, at = bytearray(), 0
    for m in _ESCAPE.finditer(field):
        out += field[at : m.start()].encode("utf-8", "surrogateescape")
        out += bytes((int(m[1][1:], 16),)) if len(m[1]) == 3 else m[1].encode("utf-8", "surrogateescape")
        at = m.end()
    return bytes(out + field[at:].encode("utf-8", "surrogateescape"))


def _readable(text: str) -> str:
    """A field of a line read with ``surrogateescape``, a byte that is not UTF-8 as U+FFFD (as
    the other fields were read before the request's were read byte for byte)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _quoted(text: str) -> str:
    """``text`` between quotes as ``repr`` shows it, a control byte or other character that is not
    printable escaped (``\\x16``), but a backslash as it is. A skipped request line is shown from
    the client's bytes, one that is not UTF-8 escaped (``\\xe9``: nginx logs ``\\xE9``, a server
    that escapes nothing the byte); until 2026-12-07 ``repr`` escaped that escape's backslash
    again (``'GET /caf\\\\xe9'``), a text in no log."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + "'"


def _unescape(text: str) -> str:
    """nginx writes ``\\x22``, Apache ``\\"``: both back to the character."""
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 3 else m[1], text)


NOT_A_METHOD = "method: not an HTTP method"
"""Why a line is skipped whose method is not ASCII letters (``GÉT``, json-lines' ``G E T``):
live, the gateway's HTTP parser answers such a request 400, so it never makes a touchpoint."""
METHOD_CASE = "method: not in capitals (methods are case-sensitive: get is no GET; a 400 live)"
"""Why a line is skipped whose request line's method is letters but not capitals (``get /p
HTTP/1.1``): what the client sent, and no GET (RFC 9110 §9.1); the gateway's HTTP parser, as
nginx's, answers it 400. A json-lines ``method`` field is not the request line but a log
pipeline's field, which may have been lower-cased (ECS once asked for it: Filebeat 7.7 and
7.8 wrote ``get``): it is read upper-case."""
NOT_A_STATUS = "status: not an HTTP status"
"""Why a line is skipped whose status is not three ASCII digits (``abc``, ``٢٠٠`` in
Arabic-Indic digits): no response has it."""


def split_request(request: str) -> tuple[str, str, str] | str:
    """``GET /p?q HTTP/1.1`` → (method, origin-form target, authority), or why it is not a page
    request. The authority is what an absolute-form target (``GET http://host:8080/p``, as a
    client sends a proxy) named, userinfo left out; empty for origin-form."""
    parts = request.split(" ")
    if len(parts) in (2, 3) and not parts[0].isascii():  # ``GÉT``: no client sends it (a 400 live)
        return NOT_A_METHOD
    if len(parts) not in (2, 3) or not parts[0].isalpha():
        return "unreadable request line"
    if not parts[0].isupper():
        return METHOD_CASE
    target, authority = parts[1], ""
    if target[:8].lower().startswith(("http://", "https://")):
        start = target.find("//") + 2
        end = min((i for i in (target.find(c, start) for c in "/?#") if i >= 0), default=len(target))
        authority = target[start:end].rpartition("@")[2]
        if not authority:  # ``http:///p``: no host to tell this site's from another's
            return "unreadable request line"
        target = target[end:] if target[end:].startswith("/") else "/" + target[end:].partition("#")[0]
    if not target.startswith("/"):
        return "not an origin-form request (CONNECT, OPTIONS *)"
    if authority and not parts[1].isascii():  # only an origin-form target is read again live
        return RAW_BYTES
    refused = target_refused(target)
    return refused or (parts[0], target, authority)


def target_refused(target: str) -> str:
    """Why the live gateway answers 400 a request with this origin-form ``target`` (as decoded
    from the bytes sent, a byte that is not UTF-8 as a ``surrogateescape`` surrogate); "" when it
    forwards it. Raw UTF-8 (``/café``, the é not percent-encoded) it forwards since 2026-12-06
    (``gateway.raw_targets``), and records the landing; the import did not follow until
    2026-12-06: every such line was skipped as a 400 live."""
    if target.isascii():
        return CONTROL if _CONTROL.search(target) else ""
    try:
        target.encode()
    except UnicodeEncodeError:
        return NOT_UTF8
    return CONTROL if _CONTROL.search(target) else ""


NOT_AN_ADDRESS = "client address: not an IP address (nor a host name)"
"""Why a line is skipped whose logged client is neither an address nor a host name
(``300.1.1.1``): live, the client is the connection's address, always one."""
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
"""A host name's labels (Apache's ``%h`` with ``HostnameLookups On``); its last label must not
be all digits (``client_of``), which tells ``300.1.1.1``, an address that is not one, from
a name. Linear: a pattern with a letter required somewhere between two free runs backtracked
quadratically (1.7 s for a 16,000-character value, a hang on a long garbled field)."""
HOST_NAME_MAX = 253
_STATUS = re.compile(r"[0-9]{3}")
"""An HTTP status as a log writes it: three digits (the combined format's, ``%>s``)."""


def client_of(value: str) -> str | None:
    """A logged client (``$remote_addr``, ``%h``) as the live proxy sees it, read once per line;
    None for one no client can be (``300.1.1.1``). An IP address, with the port some logs write
    (Caddy's ``remote_addr``, a json log's ``$remote_addr:$remote_port``: ``1.2.3.4:5678``,
    ``[2001:db8::1]:5678``) left out — live, the client is the connection's address, which has
    no port: kept, each new connection of one person would be another approximate visitor, IP
    hash and velocity source — and spelled as the live proxy spells it: an IPv4-mapped IPv6
    address (``::ffff:1.2.3.4``, what a server listening on ``[::]`` logs for an IPv4 client)
    as IPv4, an IPv6 one compressed in lower case (``2001:DB8:0::01`` is ``2001:db8::1``): until
    2026-12-05 each was used as written, another visitor and IP hash than the live one. A host
    name (``HostnameLookups On``), nginx's ``unix:`` for a client on a Unix socket, or none
    logged (empty, ``-``): as logged."""
    if value in ("", "-", "unix:"):
        return value
    address = parse_ip(value)
    if address is not None:
        return str(address)
    name = value.removesuffix(".")
    if (
        len(name) <= HOST_NAME_MAX
        and name.isascii()
        and _HOST_NAME.fullmatch(name) is not None
        and not name.rpartition(".")[2].isdigit()
    ):
        return value
    return None


RAW_BYTES = (
    "an absolute-form request target with raw non-ASCII bytes (the gateway answers such a request 400)"
)
"""Why a line is skipped whose absolute-form target (``GET http://café.example/``) holds bytes a
client should have percent-encoded: live, only an origin-form one (``/café``) is read again, so
this one never makes a touchpoint."""
NOT_UTF8 = "a request target whose bytes are not UTF-8 (Latin-1?): the gateway answers such a request 400"
"""Why a line is skipped whose target holds raw bytes that are not UTF-8 (``caf\\xE9``, Latin-1):
live, the listener refuses them. A json-lines target holding U+FFFD is one: the line was read
with it in such a byte's place, or its writer put it there (Go's JSON, Caddy's log)."""
CONTROL = (
    "a request target with a control byte (CR, LF, NUL, tab, DEL): the gateway answers such a request 400"
)
"""Why a line is skipped whose target holds a control byte (nginx logs it ``\\x01``): live, the
listener's parser refuses it, raw UTF-8 beside it or not."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def forwarded_for(extra: str) -> str:
    """The X-Forwarded-For of a combined line: the quoted field right after the user agent
    (nginx's stock ``main`` format, ``"$http_x_forwarded_for"``; Apache's
    ``"%{X-Forwarded-For}i"`` put there), when it holds addresses and nothing else (``unknown``,
    which some proxies write for an address they hide, aside). Anything else there (a cookie,
    ``"-"``, a time) is not one."""
    m = _FIRST_QUOTED.match(extra)
    if m is None:
        return ""
    field = _unescape(m[1]).strip()
    addresses = [entry for entry in map(str.strip, field.split(",")) if entry != "unknown"]
    if not addresses or any(parse_ip(entry) is None for entry in addresses):
        return ""
    return field


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
        try:
            text, exact = raw.decode(), True
        except UnicodeDecodeError:  # the request's bytes kept, to be told from UTF-8 (below)
            text, exact = raw.decode("utf-8", "surrogateescape"), False
        m = _COMBINED.fullmatch(text) or _VHOST.fullmatch(text)
        if (m is None or m[2] == "-") and (spaced := _SPACED.fullmatch(text)) and parse_ip(spaced[2]):
            m = spaced  # a user name with a space (until 2026-12-07 read as a vhost line, or skipped)
        if m is None:
            return [Skip(number, "not a combined-log line")]
        fields: tuple[Any, ...] = (
            m.groups() if exact else tuple(f if f is None else _readable(f) for f in m.groups())
        )
        ts = parse_clf_time(fields[2], times)
        if ts is None:
            return [Skip(number, "unreadable time", f" [{fields[2][:40]}]")]
        logged = _logged_bytes(m[4])
        request_line = logged.decode("utf-8", "surrogateescape")
        request = split_request(request_line)
        if isinstance(request, str):  # shown: nginx's "-" (no request came) tells itself apart
            shown = logged.decode("utf-8", "backslashreplace")  # the client's bytes, é as é
            if request in (NOT_A_METHOD, METHOD_CASE):
                shown = shown.partition(" ")[0]
            return [Skip(number, request, f": {_quoted(shown[:40])}")]
        if not fields[4].isascii():  # ``\d`` is any script's digit: ``٢٠٠`` read as 200
            return [Skip(number, NOT_A_STATUS, f": {fields[4]!r}")]
        client = client_of(fields[1])
        if client is None:
            return [Skip(number, NOT_AN_ADDRESS, f": {fields[1][:40]!r}")]
        host, referer, agent, extra = fields[0] or "", fields[5] or "", fields[6] or "", fields[7]
        if extra and _cut(extra):
            return [Skip(number, CUT)]
        return [
            Line(
                number,
                ts,
                request[0],
                request[1],
                int(fields[4]),
                raw,
                host="" if host == "-" else host,
                referer="" if referer == "-" else _unescape(referer),
                user_agent="" if agent == "-" else _unescape(agent),
                ip=client,
                forwarded_for=forwarded_for(extra) if extra and fields[6] is not None else "",
                cookie=logged_cookie(extra, cookie_name) if extra else "",
                authority=request[2],
            )
        ]

    return parse


# -- JSON lines -----------------------------------------------------------------------------


def _decode_log_json(raw: bytes) -> Any:
    """A json-lines log line. nginx's ``escape=json`` writes a byte above 0x7F as it came, so a
    Latin-1 User-Agent or Referer makes a line that is JSON but not UTF-8: it is read with such
    bytes as U+FFFD, as a combined line is (a target holding one is then refused, as live)."""
    try:
        return decode_json(raw)
    except msgspec.DecodeError:
        try:
            raw.decode()
        except UnicodeDecodeError:
            return decode_json(raw.decode("utf-8", "replace").encode())
        raise


def json_parser(cookie_name: str, overrides: dict[str, str]) -> Callable[[int, bytes], list[Item]]:
    """A JSON-lines parser with ``overrides`` (field → JSON pointer, "" unmaps) over the defaults."""
    pointers = {name: parse_pointer(p) for name, p in {**JSON_FIELDS, **overrides}.items() if p}
    times: dict[str, datetime] = {}

    def text(doc: Any, name: str) -> str:
        tokens = pointers.get(name)
        value = MISSING if tokens is None else resolve(doc, tokens)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            # A header logged as the list of its values (Caddy: "User-Agent": ["Mozilla/5.0 …"])
            value = ("; " if name == "cookie" else ", ").join(value)
        if value is MISSING or value is None or isinstance(value, dict | list) or value == "-":
            return ""
        return str(value)

    def parse(number: int, raw: bytes) -> list[Item]:
        try:
            # A number beyond a double (1e400, 5,000 digits) in any field, valid JSON, read as
            # a Segment line's is: until 2026-12-05 the line was skipped as "not valid JSON".
            doc = _decode_log_json(raw)
        except (msgspec.DecodeError, ValueError):
            return [Skip(number, "not valid JSON")]
        except RecursionError:  # [[[[…]]]] thousands deep
            return [Skip(number, NESTED)]
        if not isinstance(doc, dict):
            return [Skip(number, "not a JSON object")]
        tokens = pointers.get("time")
        logged = resolve(doc, tokens) if tokens else MISSING
        ts = parse_any_time(logged, times) if tokens else None
        if ts is None:  # the value shown, as a combined line's: missing, or a form not read?
            shown = "" if logged is MISSING or logged is None else f": {str(logged)[:40]!r}"
            return [Skip(number, f"time: missing or unreadable at {'/' + '/'.join(tokens or ())}", shown)]
        method, uri, authority, field = text(doc, "method"), text(doc, "uri"), "", "uri"
        if method and uri and not (method.isascii() and method.isalpha()):  # as a request line's
            return [Skip(number, NOT_A_METHOD, f": {method[:40]!r}")]
        if not (method and uri):
            request = split_request(text(doc, "request"))
            if request in (RAW_BYTES, NOT_UTF8, CONTROL):
                return [Skip(number, f"request: {request}")]
            if request in (NOT_A_METHOD, METHOD_CASE):
                return [Skip(number, request, f": {text(doc, 'request').partition(' ')[0][:40]!r}")]
            if isinstance(request, str):
                logged = text(doc, "request")
                shown = f": {logged[:40]!r}" if logged else ""
                return [Skip(number, "method/uri: missing (and no readable request line)", shown)]
            method, uri, authority = request
            field = "request"
        elif not uri.startswith("/"):
            return [Skip(number, "uri: not a path", f": {uri[:40]!r}")]
        query = text(doc, "query")
        if query and "?" not in uri:
            uri += "?" + query.removeprefix("?")
        refused = target_refused(uri) or (NOT_UTF8 if "\ufffd" in uri else "")
        if refused:
            return [Skip(number, f"{field}: {refused}")]
        status = text(doc, "status")  # none logged: 0, as a flow's without a response
        if status and _STATUS.fullmatch(status) is None:  # "abc", 200.0, true: as combined's
            return [Skip(number, NOT_A_STATUS, f": {status[:40]!r}")]
        logged = text(doc, "ip")
        ip = client_of(logged)
        if ip is None:
            return [Skip(number, NOT_AN_ADDRESS, f": {logged[:40]!r}")]
        vid = text(doc, "vid")
        return [
            Line(
                number,
                ts,
                method.upper(),
                uri,
                int(status) if status else 0,
                raw,
                host=text(doc, "host"),
                referer=text(doc, "referer"),
                user_agent=text(doc, "user_agent"),
                ip=ip,
                forwarded_for=text(doc, "forwarded_for"),
                cookie=f"{cookie_name}={vid}" if vid else text(doc, "cookie"),
                authority=authority,
            )
        ]

    return parse


# -- Segment archives -----------------------------------------------------------------------


def segment_parser() -> Callable[[int, bytes], list[Item]]:
    """One JSON object per line (a batch ``{"batch": [...]}`` too): ``page``/``identify`` calls."""

    def parse(number: int, raw: bytes) -> list[Item]:
        try:
            doc = decode_json(raw)  # 1e400 read as the live endpoint reads it
        except (msgspec.DecodeError, ValueError):
            return [Skip(number, "not valid JSON")]
        except RecursionError:  # [[[[…]]]] thousands deep
            return [Skip(number, NESTED)]
        events = doc.get("batch") if isinstance(doc, dict) and "batch" in doc else doc
        if events is not doc and not isinstance(events, list):  # {"batch": "nope"}
            return [Skip(number, BATCH_NOT_ARRAY)]
        events = events if isinstance(events, list) else [events]
        out: list[Item] = []
        for index, event in enumerate(events):
            if isinstance(event, dict):
                out.append(Record(number, event, raw, index))
            else:
                out.append(Skip(number, "not a JSON object"))
        return out

    return parse


# -- mitmproxy flow dumps -------------------------------------------------------------------


def read_flows(source: Input) -> Iterator[tuple[list[Item], int]]:
    """A mitmproxy flow dump (``mitmdump -w``) in chunks of ``Line``, each with the bytes read so
    far; needs the ``mitm`` extra."""
    from mitmproxy import http
    from mitmproxy.exceptions import FlowReadException
    from mitmproxy.io import FlowReader

    with open_input(source) as fo:  # closing a stream's buffer leaves the stream open
        items: list[Item] = []
        number = 0
        try:
            for flow in FlowReader(fo).stream():
                number += 1
                if not isinstance(flow, http.HTTPFlow):
                    items.append(Skip(number, f"not an HTTP flow ({type(flow).__name__})"))
                elif why := target_refused(flow.request.path):
                    # Refused live (Latin-1 bytes, a control byte); a path that is not UTF-8
                    # comes decoded with surrogates, which failed its whole batch's commit.
                    items.append(Skip(number, why))
                else:
                    items.append(flow_line(number, flow))
                if len(items) >= CHUNK:
                    yield items, fo.tell()
                    items = []
        except FlowReadException as err:
            items.append(Skip(number + 1, f"unreadable flow dump: {err}"))
        if items:
            yield items, fo.tell()


def _flow_text(value: str) -> str:
    """A flow's header text as a log line's is read: mitmproxy decodes a byte that is not UTF-8
    (a Latin-1 User-Agent) as a surrogate, which no stored row or key can hold (the import
    stopped with a traceback): such a byte is U+FFFD, as in a combined line."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def flow_line(number: int, flow: Any) -> Line:
    """One recorded ``HTTPFlow`` → a ``Line`` (the request as the client sent it)."""
    req = flow.request
    peer = flow.client_conn.peername
    joined: dict[str, str] = {}
    for name, raw_value in req.headers.items(multi=True):
        key, value = _flow_text(name).lower(), _flow_text(raw_value)
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
        host=joined.get("host") or _flow_text(req.pretty_host),
        referer=joined.get("referer", ""),
        user_agent=joined.get("user-agent", ""),
        ip=(client_of(peer[0]) or peer[0]) if peer else "",  # ``::ffff:1.2.3.4`` on a dual-stack listener
        forwarded_for=joined.get("x-forwarded-for", ""),
        cookie=joined.get("cookie", ""),
        headers=joined,
    )


def parser_for(
    fmt: str, cookie_name: str, fields: dict[str, str] | None = None
) -> Callable[[int, bytes], list[Item]]:
    """The line parser of a line-based format (all but ``mitm``)."""
    if fmt == "combined":
        return combined_parser(cookie_name)
    if fmt == "json-lines":
        return json_parser(cookie_name, fields or {})
    if fmt == "segment":
        return segment_parser()
    raise ValueError(f"{fmt} is not a line format")
