"""systemd's readiness protocol (sd_notify(3)): ``READY=1`` once the gateway listens,
``RELOADING=1`` and ``READY=1`` around a SIGHUP's reload, ``STOPPING=1`` at the stop.

Reads ``$NOTIFY_SOCKET`` (set by systemd for a ``Type=notify`` unit: a datagram socket's path,
or an abstract one's name after ``@``) and removes it from the environment, so no process the
gateway starts (a worker, a report worker) tells systemd anything: with several workers the
supervisor alone speaks to it (the unit's ``NotifyAccess=main``), once each of its workers has
told it, over a socket pair of its own (``WORKER_NOTIFY_ENV``), that it listens or has
reloaded. Without the variable nothing is sent. A message that cannot be sent (the socket gone)
never stops the gateway: the first such failure is logged as a warning saying what systemd
does next (under ``Type=notify``, a ``READY=1`` it never gets ends the gateway at the unit's
``TimeoutStartSec``), the rest not.

Imports nothing heavy: the supervisor uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

NOTIFY_ENV = "NOTIFY_SOCKET"
"""Set by systemd for a ``Type=notify`` service: where its readiness messages go."""
WORKER_NOTIFY_ENV = "GATEWAY_WORKER_NOTIFY_FD"
"""Set by a supervisor that tells systemd: the worker's end of a datagram socket pair (its file
descriptor) on which it says ``READY=1`` (listening, a reload done) and ``RELOADING=1``."""

log = logging.getLogger("gateway.sdnotify")


class Notifier:
    """Sends sd_notify messages to systemd (``address``) or to a supervisor (a connected socket
    pair, ``address`` None)."""

    def __init__(self, sock: socket.socket, address: str | bytes | None, named: str) -> None:
        self.sock = sock
        self.address = address
        self.named = named
        """Where the messages go, for the log: ``NOTIFY_SOCKET=…`` or ``the supervisor``."""
        self._failed = False
        sock.setblocking(False)  # never the event loop's wait: a full queue is a message lost

    @classmethod
    def from_environ(cls) -> Notifier | None:
        """A worker's channel to its supervisor, or systemd's socket, or None; both variables
        are removed from the environment, so this process's children do not notify."""
        fd = os.environ.pop(WORKER_NOTIFY_ENV, "")
        named = os.environ.pop(NOTIFY_ENV, "")
        if fd:
            sock = socket.socket(fileno=int(fd))
            sock.set_inheritable(False)
            return cls(sock, None, "the supervisor")
        if not named:
            return None
        if named.startswith("@"):
            address: str | bytes = b"\0" + named[1:].encode()
        elif named.startswith("/"):
            address = named
        else:  # sd_notify(3) too takes nothing else (a vsock address is for virtual machines)
            log.warning(
                "NOTIFY_SOCKET=%s is no unix socket path (nor @name): systemd is not told the gateway's"
                " readiness; %s",
                named,
                _what_follows("READY=1"),
            )
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return cls(sock, address, f"{NOTIFY_ENV}={named}")

    def send(self, *fields: str) -> None:
        """One message of ``KEY=value`` fields; a failure is logged once, and never raised."""
        data = "\n".join(fields).encode()
        try:
            if self.address is None:
                self.sock.send(data)
            else:
                self.sock.sendto(data, self.address)
        except OSError as err:
            if not self._failed:
                self._failed = True
                # A warning (until 2026-12-08 info): a READY=1 systemd never gets ends the gateway.
                log.warning(
                    "could not tell %s %s (%s): %s; the gateway runs on, and says no more of it",
                    self.named,
                    fields[0],
                    err.strerror or err,
                    _what_follows(fields[0], systemd=self.address is not None),
                )

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """``RELOADING=1`` with the time it began, as systemd asks (``MONOTONIC_USEC``)."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _what_follows(field: str, systemd: bool = True) -> str:
    """What systemd does when it is not told ``field`` (by this process, ``systemd``, or by the
    supervisor, which waits for it from this worker), in the operator's words."""
    if field == "READY=1":
        said = (
            "under a unit of Type=notify systemd takes the gateway's start (or reload) as not done,"
            " and stops the gateway once TimeoutStartSec runs out"
        )
        if systemd:
            return f"{said}; check that NOTIFY_SOCKET names systemd's socket, or run the unit as Type=simple"
        return f"the supervisor does not tell systemd either: {said}"
    if field == "RELOADING=1":
        return "systemd is not told of this reload: `systemctl reload` may return before it is done"
    return "systemd is not told that the gateway stops"


def worker_channel() -> tuple[socket.socket, socket.socket]:
    """A supervisor's end and a worker's end (inheritable) of the pair it reports on."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    theirs.set_inheritable(True)
    return ours, theirs


def received(sock: socket.socket) -> list[str]:
    """Every field of every message waiting on a supervisor's end (``READY=1``, …)."""
    fields: list[str] = []
    while True:
        try:
            data = sock.recv(4096)
        except OSError:  # nothing more waiting (BlockingIOError), or the worker's end gone
            return fields
        fields += data.decode(errors="replace").split("\n")
