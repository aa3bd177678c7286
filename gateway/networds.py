"""Why no connection was made to a host, as the operator reads it.

Shared by ``gateway doctor`` (the upstream, a sink's destination), the proxy's log
(``gateway.upstream.described``) and ``storage/sinks.py`` (a sink's failed delivery):
aiohttp's own words (``Cannot connect to host 127.0.0.1:8000 ssl:default [Connect call
failed …]``) speak of TLS to a plain ``http://`` host and never say "refused", and
``create_connection``'s name no address. Reads and owns nothing; imports aiohttp only.
"""

from __future__ import annotations

import socket
import ssl

import aiohttp


def no_connection(err: aiohttp.ClientConnectorError) -> str:
    """Why no connection was made: ``connection refused: nothing listens on 127.0.0.1:8000``,
    ``shop.internal cannot be resolved (Name or service not known)``. A TLS failure keeps
    aiohttp's words (the doctor tells the upstream's apart before it gets here, and a sink
    says it with ``tls_failure``)."""
    if isinstance(err, aiohttp.ClientSSLError):
        return f"{type(err).__name__}: {err}"
    return not_connected(err.host, err.port, err.os_error)


def tls_failure(err: aiohttp.ClientSSLError, key: str) -> str:
    """Why TLS with a destination failed, as ``gateway doctor`` says it, with what to do about
    ``key`` (``sinks[0].url``): a plain-HTTP server asked in https://, a certificate no CA the
    gateway trusts signed (aiohttp's words, ``… ssl:default [[SSL: WRONG_VERSION_NUMBER] …
    (_ssl.c:1006)]``, until 2026-12-07)."""
    where = f"[{err.host}]:{err.port}" if ":" in err.host else f"{err.host}:{err.port}"
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        cert = err.certificate_error
        why = getattr(cert, "verify_message", "") or getattr(cert, "reason", "") or str(cert)
        return (
            f"the TLS certificate of {where} is not trusted: {why}; give the destination a"
            " certificate a public CA signed, or point SSL_CERT_FILE in the gateway's environment"
            f" at the CA that signed it (check {key})"
        )
    reason = getattr(err.os_error, "reason", None)
    if reason == "WRONG_VERSION_NUMBER":
        return (
            f"{where} does not answer in TLS: it likely speaks plain HTTP there; write {key}"
            " with http://, or name its TLS port"
        )
    return f"TLS with {where} failed: {reason or err.os_error}; check {key}"


def not_connected(host: str, port: int | None, cause: BaseException) -> str:
    """``no_connection`` for a connection opened without aiohttp (the proxy's lean client, the
    doctor's to a sink): ``create_connection``'s own words name no address."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where}"
    if isinstance(cause, socket.gaierror):
        return f"{host} cannot be resolved ({cause.strerror})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS with {where} failed: {cause.reason or cause}"
    return f"cannot connect to {where}: {getattr(cause, 'strerror', None) or cause}"


def unreachable(err: BaseException) -> str:
    """``no_connection`` for a connection not made; any other failure in its own words."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return no_connection(err)
    return str(err) or type(err).__name__
