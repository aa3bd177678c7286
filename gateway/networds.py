"""Why no connection was made to a host, as the operator reads it.

Shared by ``gateway doctor`` (the upstream, a sink's destination) and ``storage/sinks.py`` (a
sink's failed delivery): aiohttp's own words (``Cannot connect to host 127.0.0.1:8000
ssl:default [Connect call failed …]``) speak of TLS to a plain ``http://`` host and never say
"refused". Reads and owns nothing; imports aiohttp only.
"""

from __future__ import annotations

import socket

import aiohttp


def no_connection(err: aiohttp.ClientConnectorError) -> str:
    """Why no connection was made: ``connection refused: nothing listens on 127.0.0.1:8000``,
    ``shop.internal cannot be resolved (Name or service not known)``. A TLS failure keeps
    aiohttp's words (the doctor tells the upstream's apart before it gets here)."""
    if isinstance(err, aiohttp.ClientSSLError):
        return f"{type(err).__name__}: {err}"
    return not_connected(err.host, err.port, err.os_error)


def not_connected(host: str, port: int | None, cause: OSError) -> str:
    """``no_connection`` for a connection opened without aiohttp (the doctor's to a sink)."""
    where = f"{host}:{port}"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where}"
    if isinstance(cause, socket.gaierror):
        return f"{host} cannot be resolved ({cause.strerror})"
    return f"cannot connect to {where}: {cause.strerror or cause}"


def unreachable(err: BaseException) -> str:
    """``no_connection`` for a connection not made; any other failure in its own words."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return no_connection(err)
    return str(err) or type(err).__name__
