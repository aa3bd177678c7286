"""``gateway doctor``'s lines for each ``[[sinks]]`` entry: its rows waiting, its destination.

Reads the store's sink cursors (``storage.cursors.waiting_rows``, read only: a few seeks, not a
scan) and opens one connection to each sink's destination, closed at once: no request is sent,
so a destination never receives a made-up event. Writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import ssl

from yarl import URL

from gateway.config import Settings
from gateway.doctor import LATE_INTERVALS, LATE_SECONDS, Check, late_rows
from gateway.networds import not_connected
from gateway.options import SinkOptions

SINK_TABLES = ("touchpoints", "identities")
"""What a sink reads (``storage.sinks``), in its order."""


def sink_waiting(settings: Settings, index: int, sink: SinkOptions) -> Check | None:
    """The rows the sink has not sent yet, per table, and for how long, as ``check_unsynced``
    says the central sync's: a warning when a table's rows waited longer than ``LATE_SECONDS``
    (or ``LATE_INTERVALS`` times its ``interval_seconds``, or twice its ``backoff_max_seconds``).
    None when the store is not there yet."""
    from storage.cursors import waiting_rows

    try:
        waiting = waiting_rows(settings.store_path, f"sink:{sink.name}", SINK_TABLES)
    except (sqlite3.Error, ValueError):  # check_store says what is wrong with the file
        return None
    if waiting is None:
        return None
    if not waiting:
        return Check("ok", f"sink {sink.name}: no rows wait to be sent")
    limit = max(LATE_SECONDS, LATE_INTERVALS * sink.interval_seconds, 2 * sink.backoff_max_seconds)
    fix = (
        f"see why in the gateway's log (`sink {sink.name} failed`) or its /metrics"
        f' (gateway_sync_errors_total{{reader="sink:{sink.name}"}}); check sinks[{index}].url and'
        f" sinks[{index}].secret; the rows are kept until sent"
    )
    return late_rows(waiting, limit, f"sink {sink.name}", "", "sent", "the sink", fix)


async def sink_destination(settings: Settings, index: int, sink: SinkOptions, timeout: float) -> Check | None:
    """Whether the sink's destination takes a connection (TLS included, for ``https``) within
    ``timeout``: opened and closed, nothing sent. None when its URL is not known (its variable
    not set: the config check says so)."""
    url = URL(settings.sink_urls.get(sink.name, ""))
    host, port = url.host, url.port
    if not host or port is None:
        return None
    key, where = f"sinks[{index}].url", f"{host}:{port}"
    fix = f"start the destination or correct {key}; its rows wait in the store meanwhile"
    tls = await asyncio.to_thread(ssl.create_default_context) if url.scheme == "https" else None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None
            )
    except TimeoutError:
        return Check(
            "FAIL",
            f"sink {sink.name}: no connection to its destination {where} within {timeout:g} s"
            " (--timeout): a host that is down, or a firewall dropping packets",
            fix,
        )
    except ssl.SSLCertVerificationError as err:
        return Check(
            "FAIL",
            f"sink {sink.name}: the TLS certificate of its destination {where} is not trusted:"
            f" {err.verify_message or err.reason}",
            "give the destination a certificate a public CA signed, or point SSL_CERT_FILE in the"
            " gateway's environment at the CA that signed it",
        )
    except ssl.SSLError as err:
        if err.reason == "WRONG_VERSION_NUMBER":
            return Check(
                "FAIL",
                f"sink {sink.name}: its destination {where} does not answer in TLS",
                f"it likely speaks plain HTTP there: write {key} with http://, or name its TLS port",
            )
        return Check("FAIL", f"sink {sink.name}: TLS with its destination {where} failed: {err.reason}", fix)
    except OSError as err:
        return Check(
            "FAIL", f"sink {sink.name}: destination unreachable: {not_connected(host, port, err)}", fix
        )
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return Check("ok", f"sink {sink.name}: its destination {where} takes a connection (nothing sent)")


async def check_sinks(settings: Settings, timeout: float) -> list[Check]:
    """Per sink: its rows waiting, and whether its destination takes a connection."""
    checks = []
    for index, sink in enumerate(settings.options.sinks):
        waiting = await asyncio.to_thread(sink_waiting, settings, index, sink)
        reached = await sink_destination(settings, index, sink, timeout)
        checks += [c for c in (waiting, reached) if c is not None]
    return checks
