"""Wrong admin tokens, counted per client address: the dashboard's login form and the admin
API's ``Authorization: Bearer`` share one count. After ``admin.max_failed_logins`` wrong tokens
within ``admin.failed_login_seconds`` of the first, that address is refused (before its token is
even read, the right one included) for ``admin.failed_login_seconds``.

Reads the client's address as the proxy does (``forwarding.visitor_ip``: the peer, or behind a
proxy in ``proxy.trusted_proxies`` the one its X-Forwarded-For, or ``Forwarded``, names), an
IPv6 address as its /64 (``addons.signals.network_of``: one host picks addresses in it freely).
Owns the table of counts, in memory and per process: keyed by a keyed BLAKE2b digest of that
address under a key drawn at start-up (no raw address is kept), at most ``MAX_TRACKED``
addresses (the least recently failed go first), each forgotten ``failed_login_seconds`` after
its last failure or lockout. Logs one line when a lockout starts, naming the address by that
digest only.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from addons.signals import network_of
from gateway.forwarding import IPNetwork, visitor_ip

log = logging.getLogger("gateway.admin")

MAX_TRACKED = 10_000
"""Most client addresses counted at once (about 2 MB); past it, the least recently failed go."""


@dataclass(slots=True)
class _Count:
    since: float
    """When the first failure of the current count was."""
    failures: int
    last: float
    """The last failure, or the start of the lockout: the table is ordered by it."""
    until: float = 0.0
    """Refused until then (0: not locked out)."""


class FailedLogins:
    def __init__(
        self,
        limit: int,
        window: float,
        trusted: Sequence[IPNetwork] = (),
        on_lockout: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        forwarded: bool = False,
    ) -> None:
        self.limit = limit
        self.window = window
        self.trusted = trusted
        self.forwarded = forwarded  # proxy.trusted_header = "forwarded": their Forwarded, not X-Forwarded-For
        self.on_lockout = on_lockout
        self.clock = clock
        self._key = secrets.token_bytes(32)  # per process: a digest means nothing elsewhere
        self._counts: OrderedDict[bytes, _Count] = OrderedDict()

    def client(self, request: web.Request) -> bytes:
        """The request's client, as this table keys it."""
        headers = request.headers
        said = visitor_ip(request.remote, lambda name: headers.getall(name, ()), self.trusted, self.forwarded)
        address = network_of(said)
        return hashlib.blake2b(address.encode(), key=self._key, digest_size=16).digest()

    def locked(self, client: bytes) -> int:
        """Whole seconds ``client`` is still refused for (``Retry-After``); 0: not refused."""
        count = self._counts.get(client)
        left = count.until - self.clock() if count is not None else 0.0
        return max(1, math.ceil(left)) if left > 0 else 0

    def failed(self, client: bytes) -> int:
        """Count a wrong token from ``client``; the seconds it is now refused for when this one
        started a lockout, else 0."""
        now = self.clock()
        self._forget(now)
        count = self._counts.get(client)
        if count is None or now - count.since >= self.window:
            count = self._counts[client] = _Count(since=now, failures=0, last=now)
        count.failures += 1
        count.last = now
        self._counts.move_to_end(client)
        while len(self._counts) > MAX_TRACKED:
            self._counts.popitem(last=False)
        if count.failures < self.limit:
            return 0
        count.until = now + self.window
        count.since, count.failures = now + self.window, 0  # counted afresh once it ends
        self.on_lockout()
        log.warning(
            "admin listener: %d wrong admin tokens within %g s from one client (%s); its logins"
            " and bearer requests are refused for %g s (admin.max_failed_logins, admin.failed_login_seconds)",
            self.limit,
            self.window,
            client.hex()[:12],
            self.window,
        )
        return self.locked(client)

    def _forget(self, now: float) -> None:
        """Drop the counts whose last failure and lockout are over (oldest first: in order)."""
        while self._counts:
            first = next(iter(self._counts.values()))
            if max(first.last + self.window, first.until) > now:
                break
            self._counts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._counts)


LOGINS_KEY = web.AppKey("failed_logins", FailedLogins)
