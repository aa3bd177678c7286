"""History files for ``gateway import``: what one logged request is, and reading files of them.

Owns the records a reader yields (``Line``: a logged request; ``Record``: a
Segment event; ``Skip``: what could not be read, and why), opening a file or a
stream (standard input, read once from front to back; gzip recognised by its
magic bytes, whatever the name), its identity (the digest of its first line,
the same in a renamed, rotated, compressed, grown or piped copy, whatever its
line ends), reading it in chunks, and the timestamp forms logs use. The
per-format parsers are ``gateway.logformats``.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import select
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
"""What reading a file can raise when it breaks (a decompressor's own errors among them)."""
log = logging.getLogger("gateway.import")
TRAILING = (
    "{}: bytes after its last gzip member are not gzip (trailing garbage): ignored, as gzip -d"
    " ignores them; every line before them is read"
)
ZSTD = "compressed with zstd, which is not read here: decompress it first, as in {} | gateway import - …"
CHUNK = 4096
"""Lines parsed per call (one thread hop each)."""
CHUNK_BYTES = 32 << 20
"""Bytes of lines kept per chunk at most: a chunk of long lines ends sooner."""
MAX_LINE = 1 << 20
"""Bytes of one line at most. No logged request comes near it (the gateway refuses a request
line or header over 8 KiB; a Segment batch is at most 500 KB): a longer line (a binary file, a
log with no line ends) is skipped without being kept, so it cannot take all the memory."""
TOO_LONG = f"longer than {MAX_LINE:,} bytes: not a logged request (skipped unread)"
SHRUNK = "the file was cut short while it was read (as logrotate's copytruncate does): the rest was not read"
UNENDED = (
    "the last line has no line end, as a line still being written: not read (the next import"
    " reads it once it is whole; give a finished file its last line end)"
)
"""An uncompressed input's last line without a line end: a server writing its log, caught mid-line,
would have it imported as it was cut (a trailing field half there), then again once whole."""
LONE_CR = (
    "a carriage return inside the line: lines joined by a lone CR line end (a classic Mac file, a"
    " copy a tool mangled)? Not read"
)
"""Why a line holding a CR that does not end it (before its LF) is skipped: no server writes one in a
line (nginx and Apache write ``\\x0D``; in JSON it is ``\\r``), so it joins two lines, which a
combined line's trailing fields would have taken in silently, the second request lost (until
2026-12-07). A lone CR is not taken for a line end: the numbers of the lines (the event IDs' keys)
stay those the file has always had."""


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
    """The peer the server logged: the client, or a load balancer in front of the server."""
    forwarded_for: str = ""
    """The X-Forwarded-For the log kept (empty: none), believed only when ``ip`` is a trusted
    proxy (``Replayer.client``)."""
    cookie: str = ""
    headers: dict[str, str] | None = None
    """Every request header (lower-case names), when the source kept them (flow dumps)."""
    authority: str = ""
    """The host (and port) an absolute-form request line named (``GET http://host/p``), which
    ``target`` no longer holds; empty for origin-form. A proxy's request names another site."""


@dataclass(slots=True)
class Record:
    """One event of a Segment archive (a JSON object), with the bytes it came from."""

    number: int
    event: dict[str, Any]
    raw: bytes
    index: int = 0
    """Its place in the line's batch (0 for a line holding one event)."""


@dataclass(slots=True)
class Skip:
    number: int
    reason: str
    """Why, as the summary counts it: never the line's own value, or a log of such lines would
    count each apart (a summary of a line per line, a counter as large as the log)."""
    detail: str = ""
    """The line's own value that made it so (``' [2025-03-01T10:00:00+00:00]'``), shown after
    the reason in the first skips only."""


Item = Line | Record | Skip
BOM = b"\xef\xbb\xbf"
"""UTF-8's byte order mark."""


def _as_lf(line: bytes) -> bytes:
    """``line`` ending in LF if it ended in CRLF. An LF line is hashed as it always was (the ids
    of what was imported stay as they are); a CRLF copy of it gets the same digest."""
    return line[:-2] + b"\n" if line.endswith(b"\r\n") else line


Input = Path | BinaryIO
"""A history file, or a stream read once from front to back (``-``: standard input)."""
STDIN = "stdin"
"""What the summary and the messages call a stream."""


def input_name(source: Input) -> str:
    return source.name if isinstance(source, Path) else STDIN


class _Counted(io.RawIOBase):
    """A stream that cannot seek, as the raw layer of a buffered reader: its ``tell`` is the
    bytes read from it so far, and its first reads return at least six bytes unless the stream
    ends (enough to tell a compressed one by its magic)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._head = b""
        while len(self._head) < 6 and (more := self._wait_read(6 - len(self._head))):
            self._head += more
        self._read = 0

    def _wait_read(self, size: int) -> bytes:
        """Up to ``size`` bytes, at least one unless the stream ends. Standard input may come
        non-blocking (the parent set ``O_NONBLOCK`` on the pipe it shares with us): a read finding
        nothing there yet returns None, so this waits until there is (in the stream's own
        reader thread). The flag is left as it is, for the other processes sharing the pipe."""
        while True:
            data: bytes | None = self._stream.read(size)
            if data is not None:
                return data
            select.select([self._stream], [], [])

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._wait_read(len(buffer))
        buffer[: len(data)] = data
        self._read += len(data)
        return len(data)

    def tell(self) -> int:
        return self._read


def open_input(source: Input) -> io.BufferedReader:
    """``source`` to read: a file opened, or a stream buffered. Either way ``tell`` is the bytes
    of the input read so far and ``peek`` shows its first bytes before they are read."""
    if isinstance(source, Path):
        return source.open("rb")
    return io.BufferedReader(_Counted(source))


class _Gunzip(io.RawIOBase):
    """A gzip file read as ``gzip -d`` reads it: bytes after its last member that do not start
    another (trailing garbage: a copy padded, a line appended by mistake) end it, ``trailing``
    set, where ``gzip.GzipFile`` raises "Not a gzipped file" (bzip2 ignores them too). A member
    cut short or corrupt still raises. ``read1`` so that nothing read before the garbage is held
    back when it is found."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._gz = gzip.GzipFile(fileobj=raw)
        self.trailing = False
        """Whether trailing garbage was found and not said yet (``History`` says it once)."""
        self.ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.trailing or self.ended:
            return 0
        try:
            data = self._gz.read1(len(buffer))
        except gzip.BadGzipFile as err:
            if not str(err).startswith("Not a gzipped file"):  # another member's header is bad
                raise
            self.trailing = True  # the first member's magic was checked: this is after a member
            return 0
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._gz.close()
        super().close()


def _decompressed(raw: io.BufferedReader, source: Input) -> BinaryIO:
    """``raw`` read through its decompressor, told by its magic bytes whatever its name (gzip,
    bzip2, xz: the ``compresscmd`` logrotate offers); as it is when none. A zstd file is refused
    (OSError) rather than read as lines of binary garbage."""
    head = raw.peek(6)[:6]
    if head[:2] == b"\x1f\x8b":
        return io.BufferedReader(_Gunzip(raw), 1 << 16)
    if head[:3] == b"BZh" and head[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9"):
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if head == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if head[:4] == b"\x28\xb5\x2f\xfd":
        how = f"zstdcat {source}" if isinstance(source, Path) else "… | zstd -dc"
        raise OSError(errno.EINVAL, ZSTD.format(how))
    return raw


def check_opens(path: Path) -> None:
    """Open ``path`` and look at its first bytes as ``History`` does: OSError when it cannot be
    opened (permission denied) or is a compression it refuses (zstd), naming it."""
    with open_input(path) as raw:
        try:
            _decompressed(raw, path)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from err


class History:
    """An open history file (or stream): compressed or not, read in chunks of parsed items."""

    def __init__(self, source: Input, parse: Callable[[int, bytes], list[Item]]) -> None:
        self._owned = isinstance(source, Path)
        self._raw = open_input(source)
        try:
            self._stream: BinaryIO = _decompressed(self._raw, source)
        except OSError:
            if self._owned:
                self._raw.close()
            raise
        self._parse = parse
        self._name = str(source) if isinstance(source, Path) else "stdin"
        self._number = 0
        self.blank = 0
        """Blank lines read so far (counted in ``lines``, neither replayed nor skipped)."""
        # A byte order mark (Windows tools write one) is not part of the first line, which then
        # parses (JSON with one is not JSON; a combined line's address would keep it).
        first, whole = self._readline()
        first = first.removeprefix(BOM)
        self.identity = hashlib.blake2b(_as_lf(first), digest_size=16).digest()
        """The digest of the first line (of its first ``MAX_LINE`` bytes, if longer): the same in a
        renamed, rotated, compressed or grown copy, and in one with CRLF line ends or a byte order
        mark (the lines are the same)."""
        self._pending: tuple[bytes, bool] | None = (first, whole) if first else None
        self._ended = False
        self._broken: BaseException | None = None
        """What broke the reading (a truncated or corrupt gzip member), raised once the lines
        read before it were returned."""

    @property
    def lines(self) -> int:
        """Lines read so far."""
        return self._number

    @property
    def position(self) -> int:
        """Bytes of the file on disk consumed so far (compressed bytes for gzip)."""
        return self._raw.tell()

    def _readline(self) -> tuple[bytes, bool]:
        """The next line (empty at the end of the file), and whether it is whole: one longer than
        ``MAX_LINE`` is read past, and only its first ``MAX_LINE`` + 1 bytes are returned."""
        raw = self._stream.readline(MAX_LINE + 1)
        if len(raw) <= MAX_LINE or raw.endswith(b"\n"):
            return raw, True
        while (rest := self._stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
            pass
        return raw, False

    def raw_lines(self) -> list[tuple[int, bytes] | Skip]:
        """The next ``CHUNK`` non-blank lines (fewer when they hold over ``CHUNK_BYTES``) as
        (number, bytes), unparsed (the rest of a file cut short as it was read, or a line over
        ``MAX_LINE``, is a ``Skip``); empty at the end of the file. A file that breaks (a gzip
        member cut short or corrupt) raises, once the lines read before the break were returned."""
        if self._broken is not None:
            raise self._broken
        out: list[tuple[int, bytes] | Skip] = []
        kept = 0
        while len(out) < CHUNK and kept < CHUNK_BYTES:
            if self._pending:
                (raw, whole), self._pending = self._pending, None
            else:
                try:
                    raw, whole = self._readline()
                except READ_ERRORS as err:  # a truncated or corrupt compressed member
                    if not self._shrunk():
                        # Broken (cut short on disk, corrupt): the lines read before the break
                        # go in, then the import ends here, naming the file (exit 1).
                        self._broken = err
                        if out:
                            break
                        raise
                    self._number += 1
                    out.append(Skip(self._number, SHRUNK))
                    self._stream = io.BytesIO()
                    break
            if not raw:
                self._say_trailing()
                if self._shrunk():
                    self._number += 1
                    out.append(Skip(self._number, SHRUNK))
                break
            self._number += 1
            if not whole:
                out.append(Skip(self._number, TOO_LONG))
                continue
            if not raw.endswith(b"\n") and self._stream is self._raw:
                # Only the end of the input has no line end. A compressed file, read to the end of
                # its archive, is finished: its last line is whole, line end or not. A plain one
                # ends here for this import: what its writer adds meanwhile begins with the rest
                # of this line, which, read as a line of its own, would shift the numbers (the
                # event IDs) of every line after it, imported again by the next import.
                out.append(Skip(self._number, UNENDED))
                self._stream = io.BytesIO()
                break
            raw = raw.rstrip(b"\r\n")
            if b"\r" in raw and raw.strip():
                out.append(Skip(self._number, LONE_CR))
                continue
            if raw.strip():
                out.append((self._number, raw))
                kept += len(raw)
            else:
                self.blank += 1
        return out

    def first_time(self, lines: int) -> datetime | None:
        """The time of the first logged request among the next ``lines`` lines, within their
        first ``MAX_LINE`` bytes (None: none has one). It reads them: a history so peeked is
        closed after, not read on."""
        left = MAX_LINE
        for number in range(1, lines + 1):
            if self._pending:
                (raw, _), self._pending = self._pending, None
            else:
                raw = self._stream.readline(left)
            left -= len(raw)
            if not raw or (left <= 0 and not raw.endswith(b"\n")):
                return None
            for item in self._parse(number, raw.rstrip(b"\r\n")):
                if type(item) is Line:
                    return item.ts
        return None

    def _say_trailing(self) -> None:
        """At the end of a gzip file, say (once) that bytes after its last member were ignored."""
        gunzip = getattr(self._stream, "raw", None)
        if isinstance(gunzip, _Gunzip) and gunzip.trailing:
            gunzip.trailing = False  # said; the file reads as ended all the same
            gunzip.ended = True
            log.warning(TRAILING.format(self._name))

    def _shrunk(self) -> bool:
        """At the end of a file, whether it is now shorter than what was read of it: it was
        truncated as it was read (once; a stream is never)."""
        if self._ended or not self._owned:
            return False
        self._ended = True
        return os.fstat(self._raw.fileno()).st_size < self._raw.tell()

    def chunk(self) -> list[Item]:
        """The next items (``CHUNK`` lines' worth), parsed; empty at the end of the file."""
        items: list[Item] = []
        parse = self._parse
        for entry in self.raw_lines():
            if type(entry) is tuple:
                items.extend(parse(*entry))
            else:
                assert isinstance(entry, Skip)
                items.append(entry)
        return items

    def close(self) -> None:
        """Close the file. A stream is left as it is: it is the caller's, and a stopped import
        may have left a thread waiting on it for input that never comes."""
        if self._owned:
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


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def in_range(ts: datetime) -> datetime | None:
    """``ts``, when it can be an event's time: from 1970 on (event IDs hold Unix milliseconds: an
    earlier one would sort after every other) and one UTC can hold (``31/Dec/9999:23:59:59 -1200``
    is in year 10000 there); None otherwise, as for a time that cannot be read."""
    try:
        return ts if ts.astimezone(UTC) >= EPOCH else None
    except OverflowError:
        return None


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
        ts = in_range(ts.replace(tzinfo=timezone(offset)))
    except ValueError:
        return None
    if ts is None:
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
            return in_range(datetime.fromtimestamp(seconds / 1000 if seconds > 1e11 else seconds, UTC))
        if not isinstance(value, str):
            return None
        if "/" in value:
            return parse_clf_time(value.strip("[]"), cache)
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return in_range(ts if ts.tzinfo else ts.replace(tzinfo=UTC))
