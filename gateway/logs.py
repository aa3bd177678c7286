"""Logging set-up: one JSON object per line (or plain text for a terminal), level from ``[log]``.

Owns the root handler and its formatter. A JSON line carries ``ts`` (UTC,
ISO 8601), ``level``, ``logger``, ``msg`` (the formatted message), ``pid``, the
worker index when the process is one of several, any ``extra={...}`` fields,
and ``exc`` for a traceback. What goes into a message is the caller's care:
nothing in the gateway logs a secret, a client address or a user ID (a test
scans a full run's log output for them). ``Throttled`` keeps a failure that repeats
on every request (a full disk) from flooding the log it may be filling. Where stderr is the
journal (systemd's ``$JOURNAL_STREAM`` names it), each line starts with its syslog priority
(``<3>`` for an error: ``journalctl -p err`` finds it), and so does a traceback of an uncaught
exception, or of one Python ignored (``<4>``; ``journal_excepthooks``).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""A text line: every command's but ``gateway run``'s with ``log.format = "json"``."""
ACCESS_LOGGER = "gateway.access"
"""The logger of ``proxy.access_log``'s lines, written whatever ``log.level`` (``set_level``)."""
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_encode = msgspec.json.Encoder()
JOURNAL_ENV = "JOURNAL_STREAM"
"""Set by systemd for a service whose stderr (or stdout) is the journal: ``DEVICE:INODE`` of that
stream (systemd.exec(5)); inherited by whatever the service starts, whose stderr may be another."""


def priority(levelno: int) -> int:
    """A log level's syslog priority (sd-daemon(3)'s ``SD_CRIT`` … ``SD_DEBUG``)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal's: its device and inode those ``$JOURNAL_STREAM`` names
    (not a terminal, a file or a pipe the gateway's stderr was sent to instead)."""
    device, colon, inode = os.environ.get(JOURNAL_ENV, "").partition(":")
    if not colon:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (a test's StringIO)
        return False
    return (str(st.st_dev), str(st.st_ino)) == (device, inode)


def say_error(text: str) -> None:
    """``text`` on stderr, each line an error's (``<3>``) where stderr is the journal: why a
    command could not start or run, written before (or without) its log: a config refused, a
    store that cannot open, a port taken (``journalctl -p err`` shows them among the log's)."""
    if to_journal(sys.stderr):
        text = "\n".join(f"<3>{line}" for line in text.split("\n"))
    print(text, file=sys.stderr)


def journal_excepthooks() -> None:
    """Where stderr is the journal (``to_journal``): a traceback Python prints itself — an
    exception no code of ours caught, of the main thread (``sys.excepthook``) or another
    (``threading.excepthook``) — has each line an error's (``<3>``), as a logged traceback's
    lines have their record's. Until 2026-12-08 such a crash of ``gateway run`` reached the
    journal at info, and ``journalctl -p err`` missed it. An exception Python can only ignore
    (``sys.unraisablehook``: a ``__del__``'s, a finalizer's, ``Exception ignored in: …``) has
    each line a warning's (``<4>``): the process goes on (until 2026-12-08 at info too).
    Elsewhere nothing changes."""
    if not to_journal(sys.stderr):
        return
    sys.excepthook = _journal_excepthook
    threading.excepthook = _journal_thread_excepthook
    sys.unraisablehook = _journal_unraisablehook


def _journal_excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    _to_journal("".join(traceback.format_exception(kind, value, tb)))


def _journal_thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as Python's own: a thread's exit is no error
        return
    name = args.thread.name if args.thread is not None else threading.get_ident()
    trace = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    _to_journal(f"Exception in thread {name}:\n{trace}")


def _journal_unraisablehook(unraisable: sys.UnraisableHookArgs) -> None:
    """Python's own text (``Exception ignored in: <obj>``, the traceback), each line a warning's."""
    if unraisable.object is not None:
        try:
            shown = repr(unraisable.object)
        except Exception:  # as Python's own: a repr that fails says so
            shown = "<object repr() failed>"
        head = f"{unraisable.err_msg or 'Exception ignored in'}: {shown}\n"
    else:
        head = f"{unraisable.err_msg}:\n" if unraisable.err_msg else ""
    if unraisable.exc_traceback is not None or unraisable.exc_value is not None:
        trace = "".join(
            traceback.format_exception(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
        )
    else:
        trace = "".join(traceback.format_exception_only(unraisable.exc_type, unraisable.exc_value))
    _to_journal(head + trace, priority=4)


def _to_journal(text: str, priority: int = 3) -> None:
    """``text`` on stderr, each line of the syslog ``priority`` (``<3>``: an error's)."""
    if sys.stderr is None:  # started without one: Python's own hook would print nothing either
        return
    sys.stderr.write("".join(f"<{priority}>{line}\n" for line in text.rstrip("\n").split("\n")))
    sys.stderr.flush()


class JournalFormatter(logging.Formatter):
    """Another formatter's lines, each prefixed with the record's syslog priority (``<4>``), which
    journald takes for the line's priority and drops (a traceback's lines too: each its own
    journal entry)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """``{"ts": …, "level": …, "logger": …, "msg": …, <fields>}``, one line per record."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if self.worker is not None:
            line["worker"] = self.worker
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode.encode({k: _plain(v) for k, v in line.items()}).decode()


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, the event's own fields (``extra={...}``) after the message as
    ``key=value`` (a value JSON-written unless it is a word): until 2026-12-07 a text line
    dropped them, and `listening` named no address, `stopped` no count."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = "".join(
            f" {key}={_word(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        return super().formatMessage(record) + fields


def _word(value: Any) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return _encode.encode(_plain(value)).decode()


def _plain(value: Any) -> Any:
    """A field as JSON can hold it (anything else by its ``str``)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def setup_logging(
    level: str | int = "info", fmt: str = "text", *, worker: int | None = None, stream: TextIO | None = None
) -> None:
    """Replace the root logger's handlers with one that writes ``fmt`` lines to stderr, each
    prefixed with its syslog priority where stderr is the journal (``to_journal``)."""
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(worker)
    else:
        prefix = f"[worker {worker}] " if worker is not None else ""
        formatter = TextFormatter(TEXT_FORMAT.replace("%(message)s", prefix + "%(message)s"))
    handler.setFormatter(JournalFormatter(formatter) if to_journal(out) else formatter)
    handler.addFilter(_OwnDebug())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def command_logging() -> None:
    """Every command's log but ``gateway run``'s (which ``setup_logging`` sets up from its
    config): ``TEXT_FORMAT`` lines at info on stderr, as ``logging.basicConfig`` writes them,
    each prefixed with its syslog priority where stderr is the journal (``to_journal``: a
    ``gateway import`` or ``gateway purge`` in a timer's unit); until 2026-12-08 they reached
    the journal without it, every line info to ``journalctl -p``. As ``basicConfig``, nothing
    is changed when the root logger has a handler already (a host's, a test's capture)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(JournalFormatter(formatter) if to_journal(sys.stderr) else formatter)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def set_level(level: str | int) -> None:
    """The least severe level written (``log.level``): at start-up, and again at a reload."""
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # aiohttp logs a client's address when a request fails to parse: keep its noise out.
    logging.getLogger("aiohttp.server").setLevel(max(root.level, logging.ERROR))
    # Every SQL statement with its parameters, twice: not even worth making the records.
    logging.getLogger("aiosqlite").setLevel(max(root.level, logging.INFO))
    # The access log is asked for on its own (``proxy.access_log``), and its lines are info:
    # under ``log.level = "warning"`` it was on and wrote nothing, without a word.
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)


def set_own_level(level: str) -> dict[str, int]:
    """``log.level`` for the gateway's own loggers (``gateway.*``) only, where another program
    owns the root logger and its handlers (mitmdump, whose ``termlog_verbosity`` then filters
    what is left); aiosqlite's debug lines (every SQL statement with its parameters) are kept
    out as ``set_level`` keeps them. Returns the levels it replaced, for ``restore_levels``."""
    own, sql = logging.getLogger("gateway"), logging.getLogger("aiosqlite")
    before = {own.name: own.level, sql.name: sql.level}
    own.setLevel(level.upper())
    sql.setLevel(max(own.level, logging.INFO))
    return before


def restore_levels(levels: dict[str, int]) -> None:
    """Loggers' levels back as ``set_own_level`` found them (the host unloading the gateway)."""
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


class _OwnDebug(logging.Filter):
    """``debug`` is the gateway's own (``gateway.*``): a library's debug lines are not written.
    aiosqlite's are every SQL statement with its parameters (visitor keys, a campaign's query
    values, under ``user_id_storage = "plain"`` the user ID) in Python's reprs (until
    2026-12-05 ``log.level = "debug"`` wrote them all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.levelno >= logging.INFO or record.name == "gateway" or record.name.startswith("gateway.")
        )


class Throttled:
    """A log line that an outage repeats for every request or commit: the first goes out at
    once, then at most one every ``interval`` seconds, saying how many like it were held back
    since the last (and, for a line that names what it lost, ``events``: how many in all). The
    metrics still count every one. Those held back when the outage ends, or when the process
    stops in it, are for its owner to say (``take_held``): until 2026-12-07 they were said only
    by the next such line, and an outage shorter than ``interval`` after its first line never
    said them."""

    def __init__(self, logger: logging.Logger, level: int, interval: float = 10.0) -> None:
        self.logger, self.level, self.interval = logger, level, interval
        self._next = float("-inf")
        self._held = 0
        self._held_events = 0

    def __call__(self, msg: str, *args: object, events: int = 0) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            self._held_events += events
            return
        if self._held:
            msg += " (and %d more like it since the last such line"
            args = (*args, self._held)
            if self._held_events:
                msg += ", of %d events in all"
                args = (*args, self._held_events)
            msg += ")"
        self.logger.log(self.level, msg, *args)
        self._held = self._held_events = 0
        self._next = now + self.interval

    @property
    def holding(self) -> bool:
        """Lines are held back, said by no line yet."""
        return self._held > 0

    def take_held(self) -> tuple[int, int]:
        """The lines held back since the last (and their ``events``), for the line that ends
        the outage to say; none held from now on, and the next such line goes out at once (a
        new outage)."""
        held = self._held, self._held_events
        self._held = self._held_events = 0
        self._next = float("-inf")
        return held
