"""The central PostgreSQL store: its versioned schema and idempotent bulk inserts, via asyncpg.

Owns ``storage/pg_migrations/NNNN_name.sql`` (version in a ``schema_version``
table, applied under an advisory lock so many nodes can start at once), the
mapping of local rows to PostgreSQL values (by the central column's type, so
a new column needs a migration and nothing else), the bulk insert (COPY into
a temporary staging table, then one ``INSERT … SELECT … ON CONFLICT DO
NOTHING``), and applying erasures across every node's rows, in turn with the inserts of
rows they erase (``ERASURE_LOCK``): an erased user's rows arriving later, and verdict changes
of touchpoints no longer there, are not inserted. Also the upsert of a node's daily counts
(``CentralWriter.upsert_counts``: absolute counts, a larger one replacing the one stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import asyncpg
import msgspec

from gateway.metrics import Metrics
from gateway.networds import not_connected
from gateway.options import CentralOptions
from storage.backoff import REFRESH_MAX, Backoff, Failures, wait_refreshing
from storage.migrate import SchemaTooNew, migrations
from storage.roundlock import Holder, RoundLock

_storage_log = logging.getLogger("gateway.storage")
"""Where a local store's migration is said (``storage.migrate``): the central one's too."""
MIGRATION_LOCK = 0x6761_7465_7761_7901
"""Advisory lock key held while migrating ("gatewa" y): one node migrates, the others wait."""
ERASURE_LOCK = 0x6761_7465_7761_7902
"""Advisory lock key taken by every transaction that inserts rows about a user or visitor:
shared by those only filtered by ``erased_keys``, exclusive by those that erase (an erasure; a
batch of bindings, which may name a device of an erased user). Without it, an erasure and
another node's rows about its user committed at the same moment each missed the other's."""
COUNT_KEY = ("day", "source", "medium", "campaign", "channel", "creator_id")
"""The values a daily count is kept under (local migration 0007); centrally also its node and
store instance (PostgreSQL migration 0008)."""
IN_THREAD_ROWS = 256
"""A batch of more rows than this is converted (the sync's local rows to asyncpg's values, the
mirror's asyncpg values to the local store's forms) in a thread, not on the event loop, which
the proxy's requests share (worker 0): pure Python over every value, ~10 ms a thousand
touchpoints; the interpreter switches threads every few milliseconds, so the loop keeps getting
turns. A smaller batch is not worth the hand-off."""
COPY_PACE = 250
"""Rows of a batch asyncpg encodes for its COPY between two turns of the event loop
(``CentralWriter._insert``): given a list it encodes all of them in one go, on the loop."""
PG_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""What a PostgreSQL that is away, restarting or refusing looks like: retried, never fatal."""


class ForeignSchema(Exception):
    """The database's ``schema_version`` table is another application's."""


def url_key(url: str) -> str:
    """The setting a wrong URL is fixed in, as the log names it: ``central.url (NAME)``."""
    return f"central.url ({url[4:]})" if url.startswith("env:") else "central.url"


def log_failed_round(
    failures: Failures,
    err: Exception,
    key: str,
    delay: float,
    connecting: bool,
    refusals: tuple[type[Exception], ...] = (),
    reader: str = "central",
) -> None:
    """A failed round of a reader of the central store (the sync, the reporting mirror: its
    ``reader``, for the rights it needs), logged
    once by ``failures`` as the operator fixes it: a schema it must not write to (and
    ``refusals``) in its own words, PostgreSQL's or the network's failure through ``explain``,
    a DSN asyncpg cannot read by its kind only (its message quotes the password), anything else
    as a defect, with its traceback."""
    if isinstance(err, (SchemaTooNew, ForeignSchema, *refusals)):
        failures.failed(str(err), delay, logging.ERROR)
    elif isinstance(err, PG_ERRORS):
        failures.failed(explain(err, key, connecting=connecting, reader=reader), delay)
    elif isinstance(err, ValueError) and connecting:  # from asyncpg's DSN parser
        failures.failed(
            f"{key} is not a PostgreSQL DSN it can read: {type(err).__name__};"
            " `gateway check` says what is wrong",
            delay,
        )
    else:
        failures.failed(f"{type(err).__name__}: {err}", delay, logging.ERROR, err)


async def keep_in_rounds(
    connecting: Callable[[], Awaitable[asyncpg.Connection]],
    options: CentralOptions,
    metrics: Metrics,
    reader: str,
    failures: Failures,
    round_on: Callable[[asyncpg.Connection], Awaitable[object]],
    publish: Callable[[bool, bool], Awaitable[object]],
    refusals: tuple[type[Exception], ...] = (),
    *,
    lock: RoundLock,
) -> None:
    """Until cancelled, a reader of the central store's rounds (the sync, the reporting mirror):
    ``round_on`` a connection every ``interval_seconds``, the connection made by ``connecting``
    (and the central schema migrated) when there is none, and on one kept, its schema version
    checked again first (``still_known``). A failed round drops the connection, is counted,
    logged once by ``failures`` (``log_failed_round``) and retried with backoff. After each
    attempt ``publish(failing, True)`` brings the reader's gauges up to date, and while it
    waits for the next ``publish(failing, False)``, every ``interval_seconds`` (at most 5 s).
    Each round holds ``lock`` (``storage.roundlock``); while it waits for another process's
    round (a ``--once``, perhaps stopped with Ctrl-Z), ``publish(failing, True)`` goes on at
    that pace: the rows counted as an attempt counts them, the gauges not frozen."""
    backoff = Backoff(options.backoff_min_seconds, options.backoff_max_seconds)
    key = url_key(options.url)
    every = min(options.interval_seconds, REFRESH_MAX)
    conn: asyncpg.Connection | None = None
    known = 0  # the schema version this connection's migration reached
    failing = False
    try:
        while True:
            refresh = functools.partial(publish, failing, True)
            failing = False
            try:
                if conn is None or conn.is_closed():
                    conn = None
                    conn = await connecting()
                    known = await migrate(conn)
                else:
                    await still_known(conn, known)
                async with lock.hold("gateway", refresh=refresh, every=every):
                    await round_on(conn)
                backoff.reset()
                failures.succeeded()
                metrics.sync_last_success.labels(reader).set(time.time())
                delay = options.interval_seconds
            except Exception as err:  # a background task must outlive every failure
                metrics.sync_errors.labels(reader).inc()
                delay = backoff.next()
                log_failed_round(failures, err, key, delay, conn is None, refusals, reader)
                if conn is not None:
                    conn.terminate()
                    conn = None
                failing = True
            with contextlib.suppress(Exception):
                await publish(failing, True)
            await wait_refreshing(delay, options.interval_seconds, functools.partial(publish, failing, False))
    finally:
        if conn is not None:
            conn.terminate()


T = TypeVar("T")


async def one_round(
    lock: RoundLock,
    what: str,
    connecting: Callable[[], Awaitable[asyncpg.Connection]],
    round_on: Callable[[asyncpg.Connection], Awaitable[T]],
    waiting: Callable[[Holder], object] | None,
    wait: float | None,
) -> T:
    """One round of a reader of the central store for a ``--once`` command (``what``: ``sync
    --once``), errors propagating: ``lock`` held first (a round of another process, the
    gateway's task, waited for: ``waiting`` told whose, ``RoundTimeout`` after ``wait``
    seconds), then a connection by ``connecting``, the central schema migrated, ``round_on``
    it, the connection closed. ``keep_in_rounds`` is the task's loop of the same."""
    async with lock.hold(what, waiting=waiting, limit=wait):
        conn = await connecting()
        try:
            await migrate(conn)
            return await round_on(conn)
        finally:
            await conn.close()


_REFUSED = re.compile(r"Connect call failed \('([^']*)', (\d+)")
"""The address in asyncio's words for a refused connection (``… ('127.0.0.1', 5432)``)."""


def explain(
    err: BaseException,
    key: str = "central.url",
    connecting: bool = True,
    via_connect: bool = True,
    reader: str = "central",
) -> str:
    """A failure to reach or use the central store, as the operator fixes it: what PostgreSQL
    or the network said, and, for what a wrong URL or server setting causes, which part of
    ``key`` (``central.url (NAME)``: the setting and its variable) to check. Never the DSN
    itself: it holds the password. ``connecting``: the failure came before a connection was
    made (a network error later is a connection lost, not a server that cannot be reached).
    ``via_connect``: the connection came from ``connect``, whose own timeout is a
    ``ConnectTimeout``, so any other timeout is a statement's (a pool's are either).
    ``reader``: whose failure (``READER_RIGHTS``), for the rights a refusal says it needs."""
    # PostgreSQL's DETAIL comes on a line of its own: one line, as the log and stderr say it.
    shown = err.__cause__ if isinstance(err, NotPostgres) and err.__cause__ is not None else err
    refused = _REFUSED.search(str(shown)) if isinstance(shown, ConnectionRefusedError) else None
    if (
        refused is not None
    ):  # as an upstream's: not "ConnectionRefusedError: [Errno 111] …" (until 2026-12-07)
        said = not_connected(refused.group(1), int(refused.group(2)), shown)
    elif isinstance(shown, NoSocket | UnknownHost):  # its own words name the socket, the host
        said = str(shown)
    else:
        name = "ConnectTimeout" if isinstance(shown, SilentPeer) else type(shown).__name__
        said = re.sub(r"\s*\n\s*", " ", f"{name}: {shown}").strip().rstrip(":")
    text = str(err)
    # A reader's round (the sync's, the mirror's) whose connection went: not the admin pool's.
    lost = via_connect and (
        isinstance(err, asyncpg.AdminShutdownError)
        or (
            not connecting
            and (
                isinstance(err, asyncpg.ConnectionDoesNotExistError | ConnectionError)
                or (isinstance(err, asyncpg.InterfaceError) and "connection is closed" in text)
            )
        )
    )
    if lost and "__aexit__" in said:  # asyncpg's `cannot call Transaction.__aexit__(): …`
        said = "InterfaceError: the underlying connection is closed"
    if isinstance(err, NotPostgres):
        hint = (
            f"what answers at the host and port in {key}, {err.address}, "
            + (
                "closed the connection before PostgreSQL's start-up was done: it is not PostgreSQL"
                " (another service, the site's web server?) or a proxy whose PostgreSQL is away"
                if err.closed
                else "is not PostgreSQL (another service, the site's web server?)"
            )
            + ": check the port, PostgreSQL's is 5432 unless set otherwise"
        )
    elif lost:
        hint = (
            f"the connection to the server in {key} was lost in the middle of a round (the server"
            " stopped or restarted, or the network cut it): the round goes again, and rows it had"
            f" {'read' if reader == 'mirror' else 'sent'} are not doubled"
        )
    elif isinstance(err, SilentPeer):
        hint = (
            f"what listens at the host and port in {key}, {err.address}, took the connection but"
            " did not complete PostgreSQL's start-up: a server too busy or hung, or another service"
            " that waits for its client to speak first"
        )
    elif isinstance(err, asyncpg.InvalidPasswordError):
        hint = f"the user name or password in {key} is refused"
    elif isinstance(err, asyncpg.InvalidCatalogNameError):
        hint = f"the database named in {key} does not exist: create it, or correct the URL"
    elif isinstance(err, asyncpg.InvalidAuthorizationSpecificationError) and text.startswith("role "):
        # `role "x" does not exist` is this class too: pg_hba.conf was not the cause.
        hint = f"the user named in {key} does not exist on the server: create it, or correct the URL"
    elif isinstance(err, asyncpg.InvalidAuthorizationSpecificationError):
        hint = f"the server's pg_hba.conf refuses this user, database or host: check {key}"
        if "no encryption" in text:
            hint += " (it may want TLS: add ?sslmode=require)"
    elif "rejected SSL upgrade" in text:
        hint = f"{key} asks for TLS (sslmode) and the server offers none"
    elif connecting and isinstance(err, asyncpg.UndefinedObjectError) and "configuration parameter" in text:
        # asyncpg sends each URL parameter it does not know to the server as a setting.
        hint = (
            f"a parameter in the query of {key} is neither one asyncpg takes nor a setting of the"
            " server: correct its spelling or remove it"
        )
    elif isinstance(err, asyncpg.ClientConfigurationError):
        hint = f"a parameter of {key} is refused (sslmode, sslrootcert…): correct the URL"
    elif isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError):
        hint = f"a file {key} names (sslrootcert, sslcert, sslkey) cannot be read"
    elif isinstance(err, ssl.SSLError):
        hint = f"TLS failed: check the sslmode (and sslrootcert) in {key}, and the server's certificate"
    elif isinstance(err, asyncpg.InsufficientPrivilegeError) and "CONNECT privilege" in text:
        hint = f"the user in {key} may not connect to that database: grant it CONNECT, or correct the URL"
    elif isinstance(err, asyncpg.InvalidSchemaNameError) and "no schema has been selected" in text:
        hint = (
            f"no schema of the search_path in {key} exists, or the user may not use it: create"
            " the one it names (CREATE SCHEMA name), grant the user USAGE on it, or correct the"
            " URL's ?search_path="
        )
    elif isinstance(err, asyncpg.InsufficientPrivilegeError) and "temporary tables" in text:
        # Each batch goes through a staging table: TEMPORARY, not a table right, is missing.
        named = re.search(r'in database ("(?:[^"]|"")+")', text)
        database = named.group(1) if named else "<database>"
        hint = (
            f"the user in {key} may not make the sync's staging tables: grant it TEMPORARY on the"
            f" database (GRANT TEMPORARY ON DATABASE {database} TO <user>)"
        )
    elif isinstance(err, asyncpg.QueryCanceledError) and "statement timeout" in text:
        # A DBA's statement_timeout (the server's, the database's, the role's, or the URL's
        # ``options``): PostgreSQL's words alone named neither it nor what to do (until 2026-12-07).
        hint = (
            f"a statement_timeout of the server, the database or the user in {key} cancelled a"
            f" statement of the {'mirror' if reader == 'mirror' else 'sync'}: raise it for that user"
            " (ALTER ROLE <user> SET statement_timeout = '5min') or lower central.batch_size"
        )
    elif isinstance(err, asyncpg.InsufficientPrivilegeError):
        hint = f"the user in {key} lacks a privilege {READER_RIGHTS.get(reader, READER_RIGHTS['central'])}"
    elif via_connect and isinstance(err, asyncio.TimeoutError) and not isinstance(err, ConnectTimeout):
        hint = (
            f"a statement on the server in {key} took longer than {STATEMENT_SECONDS:g} s (or"
            " central.connect_timeout, when longer): a lock another session holds, or a server"
            " overloaded; what it was sending goes again in the next round"
        )
    elif isinstance(err, UnknownHost) and err.temporary:
        hint = (
            f"check the host in {key}, and this machine's DNS server (/etc/resolv.conf), which did not answer"
        )
    elif isinstance(err, UnknownHost):
        hint = f"check the host in {key}: a typo, or a name only another network's DNS knows"
    elif connecting and isinstance(err, OSError | asyncio.TimeoutError):
        hint = f"the server in {key} cannot be reached"
    else:
        return said
    return f"{said}; {hint}"


READER_RIGHTS = {
    "central": (
        "the central store needs (CREATE on the schema to make or migrate the tables; SELECT,"
        " INSERT, UPDATE, DELETE on them)"
    ),
    "mirror": (
        "the reporting mirror needs: it only reads, SELECT on the central tables (GRANT SELECT ON"
        " ALL TABLES IN SCHEMA <schema> TO <user>); CREATE on the schema only while the tables are"
        " missing or a migration is due, which a node's sync does"
    ),
}
"""What a refused reader of the central store (its ``READER``: the sync, the mirror) needs."""


STATEMENT_SECONDS = 60.0
"""The longest a statement on the central store may take (``central.connect_timeout`` when
longer): past it the round fails and is retried, as when the server is away."""


class ConnectTimeout(TimeoutError):
    """No connection within ``central.connect_timeout``: the server cannot be reached (a
    ``TimeoutError`` once connected is a statement that took too long)."""


class SilentPeer(ConnectTimeout):
    """The connection was taken, but PostgreSQL's start-up got no answer in time: what listens
    there is hung, overloaded, or a service that waits for its client to speak first. Until
    2026-12-07 said as a server that cannot be reached (the sync) or as a statement that took
    longer than 60 s (``gateway doctor``)."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


async def timed_out(dsn: str, timeout: float, setting: str) -> ConnectTimeout:
    """What a connection attempt to ``dsn`` that ran out of ``timeout`` (``setting``, the option
    that gives it) says: a ``SilentPeer`` when a TCP connection to its host and port is taken
    (within ``timeout`` again, at most 5 s), else a ``ConnectTimeout`` (nothing answers: a host
    down, a firewall dropping the packets). A DSN of several hosts or a Unix socket is not
    probed."""
    parts = urllib.parse.urlsplit(dsn)
    plain = ConnectTimeout(f"no connection within {timeout:g} s ({setting})")
    try:
        host, port = parts.hostname, parts.port or 5432
    except ValueError:
        return plain
    if not host or "," in parts.netloc or "host=" in parts.query:
        return plain
    try:
        async with asyncio.timeout(min(timeout, 5.0)):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return plain
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return SilentPeer(f"no answer within {timeout:g} s ({setting})", dsn_address(dsn))


def dsn_address(dsn: str) -> str:
    """The host and port ``dsn`` names, as written (several, comma-separated, for a multi-host
    DSN; "" for none): its user and password, before the ``@``, are never said."""
    return urllib.parse.urlsplit(dsn).netloc.rpartition("@")[2]


def failed_what(err: BaseException) -> str:
    """How a command starts its message about ``err`` (``explain`` gives the rest)."""
    if isinstance(err, asyncio.TimeoutError) and not isinstance(err, ConnectTimeout):
        return "the central store did not answer in time"
    if isinstance(err, SilentPeer):  # connected, but no start-up: not a server that is away
        return "the central store did not answer"
    if isinstance(err, asyncpg.PostgresError):  # it answered: a refusal, not a server away
        return "the central store refused"
    return "cannot reach the central store"


def hold_at_most() -> str:
    """The statement that starts each of our write transactions: the server ends one left idle
    longer than ``STATEMENT_SECONDS`` — its client gone silent (a network path that drops every
    packet, a hung proxy, a paused VM). Else it keeps the transaction open, and its locks (the
    erasure lock, the migration lock, rows' unique keys), until TCP keepalive gives up on the
    client, two hours and more by default: every other node's round waits on them and fails
    meanwhile. ``SET LOCAL``: only the transaction's, nothing left on a pooled session."""
    return f"SET LOCAL idle_in_transaction_session_timeout = {int(STATEMENT_SECONDS * 1000)}"


class NotPostgres(ConnectionError):
    """What answers at the DSN's host and port is not PostgreSQL: ``explain`` says to check
    the port, where asyncpg's own words blamed TLS (``rejected SSL upgrade``, under the
    default ``sslmode``, which asks for no TLS) or nothing (a connection closed mid start-up)."""

    def __init__(self, address: str, closed: bool) -> None:
        super().__init__(f"{address} does not answer as PostgreSQL")
        self.address = address
        self.closed = closed


TLS_ASKED = frozenset({"require", "verify-ca", "verify_ca", "verify-full", "verify_full"})
"""The ``sslmode`` values under which a PostgreSQL server refusing TLS is refused in turn."""


def not_postgres(err: BaseException, dsn: str) -> NotPostgres | None:
    """``err`` of a connection attempt to ``dsn`` as a ``NotPostgres`` when it means the peer
    does not speak PostgreSQL's protocol: it answered the TLS request with neither yes nor no
    (a PostgreSQL server without TLS says no, which only an ``sslmode`` asking for TLS
    refuses), or closed the connection during the start-up, which a PostgreSQL server that
    refuses does with an error message. Else None."""
    parts = urllib.parse.urlsplit(dsn)
    address = dsn_address(dsn) or "localhost"
    if isinstance(err, asyncpg.ConnectionDoesNotExistError):
        return NotPostgres(address, closed=True)
    said = re.search(r'at "([^"]*)" rejected SSL upgrade', str(err))
    if not isinstance(err, ConnectionError) or said is None:
        return None
    query = urllib.parse.parse_qs(parts.query)
    sslmode = (query.get("sslmode") or [os.environ.get("PGSSLMODE", "prefer")])[-1]
    return None if sslmode in TLS_ASKED else NotPostgres(said.group(1), closed=False)


class NoSocket(ConnectionError):
    """Nothing listens at the Unix socket ``central.url`` names (``?host=/run/postgresql``): no
    socket file there (the server stopped, or listens in another folder or on another port),
    which asyncpg says as a bare ``FileNotFoundError`` that ``explain`` took for a certificate
    file (until 2026-12-07), or one left behind that refuses (``missing`` False)."""

    def __init__(self, path: str, missing: bool) -> None:
        super().__init__(
            f"no PostgreSQL socket at {path} (the server is not running, or listens in another"
            " folder or on another port)"
            if missing
            else f"connection refused: nothing listens on {path}"
        )
        self.path = path


def unix_socket(dsn: str) -> str | None:
    """The Unix socket file ``dsn`` connects to (its host a folder: ``?host=/run/postgresql``,
    or ``%2Frun%2Fpostgresql`` before the ``/database``), or None: a TCP host, several hosts."""
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qs(parts.query)
    netloc = parts.netloc.rpartition("@")[2]
    host = (query.get("host") or [urllib.parse.unquote(netloc.rpartition(":")[0] or netloc)])[-1]
    if not host.startswith("/") or "," in host:
        return None
    port = (query.get("port") or [""])[-1] or (netloc.rpartition(":")[2] if ":" in netloc else "")
    port = port or os.environ.get("PGPORT", "") or "5432"
    return f"{host.rstrip('/')}/.s.PGSQL.{port}" if port.isdigit() else None


async def no_socket(err: OSError, dsn: str) -> NoSocket | None:
    """``err`` of a connection attempt to ``dsn`` as a ``NoSocket`` when ``dsn`` names a Unix
    socket nothing listens at; None otherwise (a TCP host, a certificate file not there)."""
    path = unix_socket(dsn)
    if path is None:
        return None
    exists = await asyncio.to_thread(os.path.exists, path)
    if isinstance(err, FileNotFoundError) and exists:  # a certificate file it names, then
        return None
    return NoSocket(path, missing=not exists)


class UnknownHost(OSError):
    """The resolver knows no host ``central.url`` names (``socket.gaierror``), which asyncpg's
    words named neither (``gaierror: [Errno -2] Name or service not known``, until 2026-12-07):
    ``hosts``, those the URL names; ``temporary``, the DNS server did not answer (``EAI_AGAIN``)."""

    def __init__(self, hosts: list[str], err: socket.gaierror) -> None:
        named = (
            "a host of " + ", ".join(hosts) if len(hosts) > 1 else f"host {hosts[0]}" if hosts else "its host"
        )
        super().__init__(f"{named} cannot be resolved ({err.strerror or err})")
        self.hosts = hosts
        self.temporary = err.errno == socket.EAI_AGAIN


def dsn_hosts(dsn: str) -> list[str]:
    """The host names (or addresses) a TCP ``dsn`` connects to, as written, without their ports:
    its ``?host=`` when given, else those before the ``/database``; a Unix socket folder is none."""
    parts = urllib.parse.urlsplit(dsn)
    given = urllib.parse.parse_qs(parts.query).get("host")
    spec = given[-1] if given else urllib.parse.unquote(parts.netloc.rpartition("@")[2])
    hosts = []
    for item in spec.split(","):
        if item.startswith("["):  # an IPv6 address, its port after the bracket
            host = item[1:].partition("]")[0]
        else:
            host = item.rpartition(":")[0] if ":" in item else item
        if host and not host.startswith("/"):
            hosts.append(host)
    return hosts


async def connect(dsn: str, timeout: float) -> asyncpg.Connection:
    return await said_so(
        asyncpg.connect(dsn, timeout=timeout, command_timeout=max(timeout, STATEMENT_SECONDS)), dsn, timeout
    )


async def pool_connect(dsn: str, *, timeout: float, **kwargs: Any) -> asyncpg.Connection:
    """A connection of an asyncpg pool (``create_pool(connect=pool_connect)``, which passes its own
    ``kwargs``) as ``connect`` makes one: its failures in the same words (the admin API's reader,
    ``admin.source = "central"``, blamed a socket nothing listens at on a certificate file until
    2026-12-07)."""
    return await said_so(asyncpg.connect(dsn, timeout=timeout, **kwargs), dsn, timeout)


async def said_so(
    attempt: Awaitable[asyncpg.Connection], dsn: str, timeout: float, setting: str = "central.connect_timeout"
) -> asyncpg.Connection:
    """``attempt`` (asyncpg's connection to ``dsn`` within ``timeout``, the option ``setting``
    gives it), its failures as what ``explain`` says in the operator's words: no answer in time
    (``timed_out``), a host the resolver does not know (``UnknownHost``), a Unix socket nothing
    listens at (``NoSocket``), a peer that is not PostgreSQL (``NotPostgres``)."""
    try:
        return await attempt
    except TimeoutError as err:
        raise await timed_out(dsn, timeout, setting) from err
    except socket.gaierror as err:
        raise UnknownHost(dsn_hosts(dsn), err) from err
    except (FileNotFoundError, ConnectionRefusedError) as err:
        if (gone := await no_socket(err, dsn)) is None:
            raise
        raise gone from err
    except (ConnectionError, asyncpg.ConnectionDoesNotExistError) as err:
        found = not_postgres(err, dsn)
        if found is None:
            raise
        raise found from err


def too_new(current: int, newest: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"the central store is at schema version {current}, newer than this gateway knows "
        f"({newest}); upgrade the gateway"
    )


async def still_known(conn: asyncpg.Connection, known: int) -> None:
    """``SchemaTooNew`` when a newer gateway has migrated the central store past ``known`` (the
    version ``migrate`` reached on this connection) since: in a rolling upgrade the node not
    upgraded yet stops at its next round, as it would at connecting, instead of writing on into
    a schema it does not know until its connection happens to drop."""
    current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    if current > known:
        raise too_new(current, known)


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply every PostgreSQL migration newer than the store's version; the version reached. An
    existing store this call migrated is said in the log, once, at info, as a local store's is
    (``storage.migrate``): by the node that took the lock first; the others find it current."""
    available = await asyncio.to_thread(migrations, "pg_migrations")
    newest = available[-1][0] if available else 0
    # A transaction's lock, not the session's: a node gone silent while it holds it has its
    # transaction, and the lock, ended by the server (``hold_at_most``), not kept for hours.
    async with conn.transaction():
        await conn.execute(hold_at_most())
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        kinds = await central_columns(conn, "schema_version")
        if not kinds:
            # Only when missing: even with IF NOT EXISTS, CREATE needs the schema's CREATE
            # right, which a role that only reads (the mirror's) or writes rows lacks.
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, name text NOT NULL, "
                "applied timestamptz NOT NULL DEFAULT now())"
            )
            kinds = await central_columns(conn, "schema_version")
        if kinds.get("version") != "integer" or "name" not in kinds:
            # Another application's migrations (Flyway's former default table name): its
            # versions are not ours, and read as ours they stopped or silently emptied the sync.
            raise ForeignSchema(
                "the database's schema_version table is not the gateway's (another application's"
                " migrations?): give the gateway a database of its own, or a schema of its own"
                " (CREATE SCHEMA gateway, and ?search_path=gateway at the end of central.url)"
            )
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        if current > newest:
            raise too_new(current, newest)
        began = current
        for version, name, sql in available:
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name
                )
            current = version
    if 0 < began < current:  # an existing store upgraded (a new one, at 0, has nothing to undo)
        where = await conn.fetchrow("SELECT current_database() AS db, current_schema() AS schema")
        versions = {"from_version": began, "to_version": current}
        _storage_log.info(
            "central store (database %s, schema %s) migrated from schema %d to %d: the nodes of an"
            " older gateway stop syncing to it until they are upgraded, keeping their rows"
            " (migrations are not undone; the pg_dump taken before the upgrade is the way back)",
            where["db"], where["schema"], began, current, extra=versions,
        )  # fmt: skip
    return current


def _int(value: Any) -> Any:
    return None if value is None else int(value)


def _float(value: Any) -> Any:
    return None if value is None else float(value)


def _bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _timestamp(value: Any) -> Any:
    return None if value is None else datetime.fromisoformat(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "timestamp with time zone": _timestamp,
    "boolean": _bool,
    "integer": _int,
    "bigint": _int,
    "smallint": _int,
    "double precision": _float,
    "real": _float,
}
"""Local (SQLite) value → what asyncpg's binary COPY wants, by the central column's type.
Text, uuid and jsonb columns take the local text as it is."""


async def central_columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    """Column name → data type of a central table (empty when it does not exist), named as
    ``information_schema.columns`` names them. Read from the catalog, not from that view: the
    view leaves out the tables the role has no right on, so a table whose GRANT was forgotten
    looked missing and was skipped without a word (an erasure through another node never
    applied here); found, its statements are refused, and the round fails saying so."""
    rows = await conn.fetch(
        "SELECT a.attname AS column_name, CASE"
        " WHEN t.typelem <> 0 AND t.typlen = -1 THEN 'ARRAY'"
        " WHEN n.nspname = 'pg_catalog' THEN format_type(a.atttypid, NULL)"
        " ELSE 'USER-DEFINED' END AS data_type"
        " FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = $1"
        " AND c.relkind IN ('r', 'p', 'v') AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum",
        table,
    )
    return {row["column_name"]: row["data_type"] for row in rows}


@dataclass(frozen=True)
class TablePlan:
    """How one local table is copied: the columns both sides have, and their conversions."""

    table: str
    columns: tuple[str, ...]
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def build(cls, table: str, local: Sequence[str], central: dict[str, str]) -> TablePlan:
        columns = tuple(c for c in local if c in central)
        converters = tuple((i, _CONVERT[central[c]]) for i, c in enumerate(columns) if central[c] in _CONVERT)
        return cls(table, columns, converters)

    def records(self, rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        if not self.converters:
            return list(rows)
        converted: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for i, convert in self.converters:
                values[i] = convert(values[i])
            converted.append(values)
        return converted

    @property
    def erases(self) -> bool:
        """Its batches erase rows: erasures, and bindings (a late device of an erased user)."""
        return self.table == "erasures" or (self.table == "identities" and "user_key" in self.columns)

    @property
    def erasable(self) -> bool:
        """Its rows are about a visitor or a user, or a touchpoint of one, and an erasure
        deletes them."""
        about = {"visitor_key", "user_key"} & set(self.columns)
        return ("ts" in self.columns and bool(about)) or self.of_touchpoints

    @property
    def of_touchpoints(self) -> bool:
        """Its rows are about a touchpoint (verdict changes): kept only while it is there."""
        return self.table == "verdict_changes" and "touchpoint_id" in self.columns

    def _not_erased(self) -> str:
        """Rows about an erased user or visitor, older than the erasure, are not inserted; nor
        a verdict change of a touchpoint the central store has not: erased (by another node's
        erasure, this node not erased), or never there. The sync delivers the touchpoints
        stored before a batch of changes first (``storage.sync``), so a touchpoint not there
        yet is not taken for one not there at all."""
        if self.of_touchpoints:
            return " WHERE EXISTS (SELECT 1 FROM touchpoints t WHERE t.id = s.touchpoint_id)"
        if self.table == "erasures" or "ts" not in self.columns:
            return ""
        tests = [
            f"NOT EXISTS (SELECT 1 FROM erased_keys e WHERE e.key = s.{c} AND s.ts <= e.erased_at)"
            for c in ("visitor_key", "user_key")
            if c in self.columns
        ]
        return " WHERE " + " AND ".join(tests) if tests else ""

    def insert_sql(self) -> str:
        """The INSERT from the staging table; it answers the new rows' ids for erasures (they are
        applied next) and only their number for every other table (no rows back to decode)."""
        cols = ", ".join(self.columns)
        answer = "SELECT id FROM ins" if self.table == "erasures" else "SELECT count(*) AS n FROM ins"
        return (
            f"WITH ins AS (INSERT INTO {self.table} ({cols}) SELECT {cols} FROM _stage_{self.table} s"
            f"{self._not_erased()} ON CONFLICT DO NOTHING RETURNING id) {answer}"
        )


class CentralWriter:
    """Bulk inserts on one connection; each batch is one transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._staged: set[str] = set()

    async def insert(self, plan: TablePlan, rows: Sequence[Sequence[Any]]) -> int:
        """Insert the rows no node has inserted before; how many were new.

        SQLite text may hold NUL characters, which PostgreSQL text cannot: a batch refused for
        its characters is sent again with each NUL replaced by U+FFFD, so one odd value does not
        stop the sync for ever.
        """
        if not rows:
            return 0
        records = await off_loop(plan.records, rows)
        try:
            return await self._insert(plan, records)
        except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
            return await self._insert(plan, [_without_nul(r) for r in records])

    async def _insert(self, plan: TablePlan, records: Sequence[Sequence[Any]]) -> int:
        conn = self.conn
        async with conn.transaction():
            await conn.execute(hold_at_most())
            staged = plan.table in self._staged
            if not staged:
                # Per connection, emptied at each commit; a column-less LIKE keeps types and NOT NULLs.
                await conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS _stage_{plan.table} "
                    f"(LIKE {plan.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
            await conn.copy_records_to_table(
                f"_stage_{plan.table}", records=_paced(records), columns=list(plan.columns)
            )
            # Copied while others insert too; from here on, in turn with any erasure (see
            # ``ERASURE_LOCK``): each sees what the other committed.
            if plan.erases:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", ERASURE_LOCK)
            elif plan.erasable:
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", ERASURE_LOCK)
            if plan.table == "identities" and "user_key" in plan.columns:
                await erase_late_devices(conn)
            inserted = await conn.fetch(plan.insert_sql())
            if plan.table == "erasures" and inserted:
                await apply_erasures(conn, [row["id"] for row in inserted])
        self._staged.add(plan.table)  # only once committed: a rolled-back CREATE left nothing
        return len(inserted)

    async def upsert_counts(self, node: str, instance: str, rows: Sequence[Sequence[Any]]) -> int:
        """A store's daily counts (rows of ``COUNT_KEY`` values and the count, absolute: the
        store's whole count of its key so far) under its ``instance`` (``node`` the name it is
        sent under: a renamed node's count replaces its row, not adds one), in one
        statement: each new one inserted, each larger than the one stored replacing it (and
        ``ingested`` set again, so the mirror reads it); how many changed. One not larger
        changes nothing (not even ``ingested``): a batch sent again, or the older read of a
        second sync of the store (a cron ``sync --once``) committing after the newer one.
        A count never goes down on its node. NULs as in ``insert``."""
        if not rows:
            return 0
        try:
            return await self._upsert_counts(node, instance, rows)
        except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError):
            return await self._upsert_counts(node, instance, [_without_nul(r) for r in rows])

    async def _upsert_counts(self, node: str, instance: str, rows: Sequence[Sequence[Any]]) -> int:
        key = ", ".join(COUNT_KEY)
        columns = [[row[i] for row in rows] for i in range(len(COUNT_KEY) + 1)]
        columns[0] = [date.fromisoformat(day) for day in columns[0]]
        changed = await self.conn.fetchval(
            "WITH up AS (INSERT INTO daily_counts (node, instance, "
            + key
            + ", count) SELECT $1::text, $2::text, u.* FROM unnest($3::date[], $4::text[],"
            " $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[]) AS u("
            + key
            + ", count) ON CONFLICT (instance, "
            + key
            + ") DO UPDATE SET count = excluded.count, node = excluded.node, ingested = excluded.ingested"
            " WHERE daily_counts.count < excluded.count RETURNING 1) SELECT count(*) FROM up",
            node,
            instance,
            *columns,
        )
        return int(changed)


async def off_loop(convert: Callable[[Sequence[Any]], list[T]], rows: Sequence[Any]) -> list[T]:
    """``convert(rows)``, in a thread when the rows are more than ``IN_THREAD_ROWS``."""
    if len(rows) > IN_THREAD_ROWS:
        return await asyncio.to_thread(convert, rows)
    return convert(rows)


async def _paced(records: Sequence[Sequence[Any]]) -> AsyncIterator[Sequence[Any]]:
    """The records of one COPY, the event loop given a turn after every ``COPY_PACE``: asyncpg
    encodes a list's in one go on the loop (2,000 touchpoints, tens of milliseconds)."""
    for start in range(0, len(records), COPY_PACE):
        if start:
            await asyncio.sleep(0)
        for record in records[start : start + COPY_PACE]:
            yield record


def _without_nul(record: Sequence[Any]) -> list[Any]:
    """NUL → U+FFFD, in text and in JSON text (where it is the escape ``\\u0000``)."""
    return [
        v.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd") if isinstance(v, str) else v for v in record
    ]


async def apply_erasures(conn: asyncpg.Connection, ids: Sequence[Any]) -> None:
    """Inside a transaction: erase each erasure's user from every node's rows — their bindings,
    every touchpoint and conversion of every visitor bound to them anywhere (not only the
    visitors the erasing node knew), their conversions — and remember the keys. An erasure of
    a visitor alone (its key both ``user_key`` and listed) erases that visitor's rows only."""
    for erasure in await conn.fetch(
        "SELECT user_key, also_keys, visitors, ts FROM erasures WHERE id = ANY($1::uuid[]) ORDER BY id", ids
    ):
        listed = asyncpg_json_list(erasure["visitors"])
        # Its other keys: the user's rows from before identity.user_id_storage changed. A
        # visitor's own erasure names its key as the user_key too (``erasure.erase_visitor``): a
        # visitor then, no user (and each key once: ``erased_keys`` takes one once a statement).
        users = [
            k for k in (erasure["user_key"], *asyncpg_json_list(erasure["also_keys"])) if k not in listed
        ]
        bound = await conn.fetch(
            "SELECT DISTINCT visitor_key FROM identities WHERE user_key = ANY($1::text[])", users
        )
        visitors = sorted({*listed, *(row["visitor_key"] for row in bound)})
        await conn.execute(
            "DELETE FROM verdict_changes WHERE touchpoint_id IN "
            "(SELECT id FROM touchpoints WHERE visitor_key = ANY($1::text[]))",
            visitors,
        )
        await conn.execute("DELETE FROM touchpoints WHERE visitor_key = ANY($1::text[])", visitors)
        await conn.execute(
            "DELETE FROM conversions WHERE user_key = ANY($1::text[]) OR visitor_key = ANY($2::text[])",
            users,
            visitors,
        )
        await conn.execute("DELETE FROM identities WHERE user_key = ANY($1::text[])", users)
        await conn.execute(
            "INSERT INTO erased_keys (key, erased_at) SELECT unnest($1::text[]), $2 "
            "ON CONFLICT (key) DO UPDATE SET erased_at = greatest(erased_keys.erased_at, excluded.erased_at),"
            " ingested = excluded.ingested",
            [*users, *visitors],
            erasure["ts"],
        )


async def erase_late_devices(conn: asyncpg.Connection) -> None:
    """Inside a transaction, with a batch of bindings staged: a binding made before its user's
    erasure, arriving after it (from a node that had not synced), names a device of the
    erased user that the erasure could not know. That visitor is erased too — its rows from
    before the erasure deleted, its key remembered so that later batches skip them — as
    ``apply_erasures`` would have done had the binding been there first."""
    late = await conn.fetch(
        "SELECT s.visitor_key, max(e.erased_at) AS erased_at FROM _stage_identities s"
        " JOIN erased_keys e ON e.key = s.user_key AND s.ts <= e.erased_at GROUP BY s.visitor_key"
    )
    for row in late:
        visitor, erased_at = row["visitor_key"], row["erased_at"]
        await conn.execute(
            "DELETE FROM verdict_changes WHERE touchpoint_id IN "
            "(SELECT id FROM touchpoints WHERE visitor_key = $1 AND ts <= $2)",
            visitor,
            erased_at,
        )
        await conn.execute("DELETE FROM touchpoints WHERE visitor_key = $1 AND ts <= $2", visitor, erased_at)
        await conn.execute("DELETE FROM conversions WHERE visitor_key = $1 AND ts <= $2", visitor, erased_at)
        await conn.execute(
            "INSERT INTO erased_keys (key, erased_at) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET erased_at = greatest(erased_keys.erased_at, excluded.erased_at),"
            " ingested = excluded.ingested",
            visitor,
            erased_at,
        )


SHARED_NODE_SECONDS = 3600
"""How long another store instance's last sync under a node name counts as a second gateway
under that name: past it, the old one is taken for gone (a store lost and made again)."""


async def claim_node(
    conn: asyncpg.Connection, node: str, instance: str, key_check: str | None = None
) -> list[tuple[str, datetime]]:
    """Record that store ``instance`` syncs under ``node`` now (the server's clock, the same for
    every node), with its ``key_check`` when given (``gateway.keys.key_check``); the other
    instances that synced under it within ``SHARED_NODE_SECONDS``, with when they last did,
    latest first."""
    await conn.execute(
        "INSERT INTO node_instances (node, instance, key_check) VALUES ($1, $2, $3) "
        "ON CONFLICT (node, instance) DO UPDATE SET last_synced = now(),"
        " key_check = coalesce(excluded.key_check, node_instances.key_check)",
        node,
        instance,
        key_check,
    )
    rows = await conn.fetch(
        "SELECT instance, last_synced FROM node_instances WHERE node = $1 AND instance <> $2"
        " AND last_synced > now() - make_interval(secs => $3) ORDER BY last_synced DESC",
        node,
        instance,
        float(SHARED_NODE_SECONDS),
    )
    return [(row["instance"], row["last_synced"]) for row in rows]


async def other_secrets(conn: asyncpg.Connection, key_check: str) -> list[tuple[str, datetime]]:
    """The nodes whose store instances synced within ``SHARED_NODE_SECONDS`` under another
    ``identity.secret`` than ``key_check``'s (their own check value differs), with when they
    last did, latest first: one gateway's cookies and user keys are not the other's."""
    rows = await conn.fetch(
        "SELECT node, max(last_synced) AS last_synced FROM node_instances"
        " WHERE key_check IS NOT NULL AND key_check <> $1"
        " AND last_synced > now() - make_interval(secs => $2)"
        " GROUP BY node ORDER BY max(last_synced) DESC, node",
        key_check,
        float(SHARED_NODE_SECONDS),
    )
    return [(row["node"], row["last_synced"]) for row in rows]


def asyncpg_json_list(value: Any) -> list[str]:
    """A jsonb list as asyncpg returns it (text) → a Python list of strings."""
    return list(msgspec.json.decode(value, type=list[str])) if isinstance(value, str) else list(value)
