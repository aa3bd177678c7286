"""Sinks: durable readers of the local event log that push attribution to other tools.

Each ``[[sinks]]`` entry reads ``touchpoints`` and ``identities`` after its own
cursors (``storage.cursors``, named ``sink:<name>:<table>``) and sends:

- per touchpoint, ``track("Source Identified")`` with the touchpoint's own
  (historical) timestamp, the visitor key as ``anonymousId`` and the user, when
  the visitor is bound, as ``userId``; a one-day key (``cookieless``, ``ONE_DAY``)
  is never an ``anonymousId``: by ``userId`` alone when one user is bound to it, else
  under ``gw-landing-<event id>``, which links the landing to nothing (``track_message``);
- per identity binding, ``identify(userId)`` with flattened traits
  ``source_first_*`` and ``source_last_*`` (source, medium, campaign, term,
  content, channel when the column exists, creator_id, timestamp) computed over
  all of the user's visitors (never from a ``no_consent`` touchpoint; never for a binding
  made in a ``no_consent`` session, whose one-day key others share; a ``cookieless``
  binding's by ``userId`` alone; none while the user has no landing to send, so no traits);
  and again, with the traits as they are then, when a touchpoint of an already-bound
  visitor comes in, for every user bound to it (``_refreshed``).

Every message has a deterministic ``messageId`` derived from the event id (and,
for identify, from its traits), so a retried batch never counts twice. The
user ID is the raw ID when the store can recover it (``identity.user_id_storage``
``encrypt`` or ``plain``), else the user key. Two transports: the Segment HTTP
batch API (also RudderStack; write key as HTTP Basic user) and a generic
webhook (the same JSON batch, signed as Standard Webhooks like our inbound
events, with a deterministic ``webhook-id``). Batches respect the message
count, the byte limits (Segment: 32 KB a message, 500 KB a batch) and a rate
limit; failures (5xx, 429, 401, network) are retried with backoff and the cursor
only moves once everything read has been accepted. A batch the destination refuses
as such (400, 413, 422: ``REFUSED``) is split in halves until each refused message
is alone; that message is counted (``refused``), logged by its ``messageId`` and
skipped, so one message a destination will never take does not stop the sink —
unless the destination took none of the read's messages: then the sink itself is
the likelier fault, and everything is held for a retry. An erasure stored while a
read's batches go out (they wait for the rate limit, or a destination's
``Retry-After``) stops the sending before the next batch: the read is made again,
without the erased user's rows (``Stale``). Whatever the destination already took from a
read (or refused as such) is not sent again when that read is made again, after a ``Stale``
or a failed batch: the sink remembers its ``messageId``s until the cursor moves past them
(in memory: after a restart they go again, under the same ``messageId``s). A 429's or
503's ``Retry-After`` (seconds or an HTTP-date) holds the next request that long. A failure
names the status and quotes the destination's answer (``destination_words``: its first 200
characters, user IDs out, control characters escaped), and a ``Retry-After`` as it came.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import aiosqlite
import yarl

from gateway.config import Settings
from gateway.har import printable
from gateway.ids import id_floor, id_ms
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.networds import no_connection, tls_failure
from gateway.options import SinkOptions
from gateway.signing import standard_signature
from gateway.usernames import named_user
from storage.backoff import Backoff, Failures, wait_refreshing
from storage.cursors import WriteClock, advance, cursor_at, cursor_name, publish_lag, publish_progress
from storage.erased import erased_at, erasure_mark
from storage.erasure import user_known
from storage.local import connect
from storage.migrate import migrate
from storage.sink_messages import (
    EVENT,
    ONE_DAY,
    REFUSED,
    SinkError,
    SinkRefused,
    batch_body,
    destination_words,
    identify_message,
    message_id,
    pack,
    track_message,
)

__all__ = [
    "EVENT",
    "Resent",
    "Sink",
    "SinkError",
    "SinkRefused",
    "SinkSet",
    "open_log",
    "pack",
    "resend_user_standalone",
]

log = logging.getLogger("gateway.sinks")

READ_ROWS = 500
"""Rows read from one table per step; the cursor moves once all their messages are accepted."""
ANSWER_LIMIT = 64 * 1024
"""Most bytes of a destination's answer read (a failure quotes its first 200 characters): an
endpoint that answers with an endless stream is not read to the end (within the timeout)."""

Current = Callable[[], Awaitable[bool]]
"""Whether what is being sent still stands (no erasure since it was read)."""


class Stale(Exception):
    """An erasure was stored after the rows being sent were read: they are read again."""


class NothingRecorded(Exception):
    """A re-send on demand for a user the store has no identity binding of: nothing to send
    (the admin API's 404; ``gateway sink send`` says so and exits 1)."""


@dataclass(frozen=True)
class Resent:
    """What a re-send on demand sent through one sink."""

    user_key: str
    """The key the user's bindings it sent are kept under: the first of the keys asked for that
    holds one, as the user lookup names the user (under a lower-casing rule, ``Ada@Example.com``
    is sent as ``ada@example.com``'s key; a user key of an earlier ``user_id_storage`` is itself),
    not the first key form of the text as typed, which may hold nothing."""
    sent: int
    """The messages the destination took, each once: those taken before an erasure made the
    re-send read the user again too."""


class Sink:
    """One ``[[sinks]]`` entry: its cursors, its transport and its rate limit."""

    def __init__(
        self, settings: Settings, options: SinkOptions, metrics: Metrics, keys: Keys, sinks: SinkSet
    ) -> None:
        self.settings = settings
        self.options = options
        self.metrics = metrics
        self.keys = keys
        self.secret = settings.sink_secrets[options.name]
        # As written, or read from env:NAME; "" for one a command that sends nothing did not read
        # (`sink send --sink` another one): it never posts.
        self.url = settings.sink_urls.get(options.name, "")
        self._set = sinks
        self._next_send = 0.0
        # Until when (loop time) a destination's Retry-After holds the requests, and what it said:
        # a re-send on demand says so at once rather than wait it out inside the admin request.
        self._held: tuple[float, str] = (0.0, "")
        self._lock = asyncio.Lock()  # one request at a time per sink: the rate limit holds
        # table → (its cursor's position, the messageIds the destination has taken, or refused as
        # such, from the read at that position): a read made again sends only the rest.
        self._settled: dict[str, tuple[int, set[str]]] = {}
        self.clock = WriteClock()  # when the rows waiting were written: gateway_sync_lag_seconds

    @property
    def key(self) -> str:
        """The entry in the config, as its errors name it: ``sinks[0]``."""
        names = [sink.name for sink in self.settings.options.sinks]
        return f"sinks[{names.index(self.options.name)}]" if self.options.name in names else "sinks"

    @property
    def secret_source(self) -> str:
        """Where the secret comes from, as a log line names it: ``sinks[0].secret (SINK_KEY)``."""
        named = self.options.secret
        return f"{self.key}.secret ({named[4:]})" if named.startswith("env:") else f"{self.key}.secret"

    @property
    def reader(self) -> str:
        return f"sink:{self.options.name}"

    def user_id(self, user_key: str) -> str:
        """The raw user ID when the store keeps it recoverable; otherwise the stored key."""
        return self.keys.recover_user_id(user_key) or user_key

    # -- transport ---------------------------------------------------------------------------

    async def post(
        self, encoded: Sequence[bytes], current: Current | None = None, *, hold: bool = True
    ) -> None:
        """Send one batch; SinkError unless the destination accepted it (2xx). Stale, without
        sending, when ``current`` says an erasure came since it was read (checked once the
        rate limit lets it go). Not ``hold`` (a re-send on demand): SinkError at once, sending
        nothing, while a destination's ``Retry-After`` holds the requests."""
        if not hold:
            self._refuse_held()
        async with self._lock:
            loop = asyncio.get_running_loop()
            if not hold:
                self._refuse_held()
            wait = self._next_send - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if current is not None and not await current():
                raise Stale("an erasure came since these rows were read")
            self._next_send = loop.time() + 1 / self.options.rate_per_second
            # Dated and signed as it goes, after the wait: made before it (until 2026-12-06), a
            # batch held by the rate limit or a Retry-After went with a past ``sentAt`` and
            # ``webhook-timestamp``, which a receiver's tolerance refuses once the wait is long.
            url, headers, body = self._request(encoded)
            session = await self._set.session()
            try:
                async with session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.options.timeout_seconds),
                    # Followed, a 301/302/303 became a GET with no body whose 200 counted the
                    # batch as sent; a 307/308 took the batch and the write key elsewhere.
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    try:
                        answer = await _read_answer(resp)
                    except aiohttp.ClientPayloadError as err:  # closed before the body's end
                        raise SinkError(cut_short(url, status, f"{self.key}.url")) from err
                    retry_after = resp.headers.get("Retry-After", "")
                    location = resp.headers.get("Location", "")
            except TimeoutError as err:  # its text is empty: say which limit it was
                raise SinkError(
                    f"no answer within {self.key}.timeout_seconds ({self.options.timeout_seconds:g} s)"
                ) from err
            except aiohttp.ClientSSLError as err:  # plain HTTP asked in https://, a certificate not trusted
                raise SinkError(tls_failure(err, f"{self.key}.url")) from err
            except aiohttp.ClientConnectorError as err:  # no such host, refused
                raise SinkError(f"{no_connection(err)}; check {self.key}.url") from err
            except aiohttp.ClientError as err:
                # aiohttp's words quote the URL (a token in its path or query, until 2026-12-07
                # logged with them) over several lines: the host and port instead, on one.
                raise SinkError(not_http(err, url, f"{self.key}.url")) from err
        told = retry_after_seconds(retry_after) if status in (429, 503) else None
        if told is not None:  # the destination says when: believe it, within the rate limit
            # Later, never sooner than the rate limit lets the next request go: a Retry-After
            # shorter than 1/rate_per_second hastened it (until 2026-12-07).
            asked = asyncio.get_running_loop().time() + min(told, self.options.backoff_max_seconds)
            self._next_send = max(self._next_send, asked)
            given = printable(retry_after.strip()[:100])
            self._held = (asked, f"HTTP {status}, Retry-After: {given}")
        if 200 <= status < 300:
            self.metrics.sink_messages.labels(self.options.name, "sent").inc(len(encoded))
            return
        # Its own words (Segment's JSON error, a proxy's page), as safe to print as to log; after
        # our hint when there is one (until 2026-12-05 a 401's "Invalid write key" went unsaid).
        # Left out of the gist: a request ID or a time in them is no new problem.
        said = destination_words(answer, encoded)
        quoted = f"; it says: {said}" if said else ""
        if status in REFUSED:
            raise SinkRefused(f"HTTP {status}: {said}" if said else f"HTTP {status}", f"HTTP {status}")
        if status in (401, 403):
            hint = f"HTTP {status}: the destination refuses the credentials; check {self.secret_source}"
            raise SinkError(hint + quoted, hint)
        if 300 <= status < 400:
            named = self.options.url
            where = moved_to(
                location,
                url,
                f"{self.key}.url is read from {named[4:]}" if named.startswith("env:") else None,
            )
            source = f"{self.key}.url ({named[4:]})" if named.startswith("env:") else f"{self.key}.url"
            raise SinkError(
                f"HTTP {status}: the destination redirects to {where}, not followed;"
                f" set {source} to where it moved"
            )
        if status in (404, 405, 410):  # a wrong path: Segment's own docs give …/v1/batch as the URL
            wrong = f"HTTP {status}: the destination has no such endpoint; check {self.key}.url"
            if self.options.kind == "segment":
                wrong += ": a segment sink's is the API base (https://api.segment.io),"
                wrong += " to which /v1/batch is appended"
            raise SinkError(wrong + quoted, wrong)
        # A 5xx, a 429, any other answer: the status, what the destination said (until
        # 2026-12-05 the status alone) and the Retry-After it gave, as it gave it.
        problem = [f"HTTP {status}", *([said] if said else [])]
        given = printable(retry_after.strip()[:100])
        if told is not None:  # a re-send on demand reports it: when to try again
            problem.append(f"the destination asks to wait {max(told, 0):.0f} s (Retry-After: {given})")
        elif given and status in (429, 503):
            problem.append(f"Retry-After: {given}, neither seconds nor an HTTP-date: ignored")
        raise SinkError(problem[0] + (": " + "; ".join(problem[1:]) if problem[1:] else ""), problem[0])

    def _refuse_held(self) -> None:
        """SinkError while a destination's ``Retry-After`` holds the requests for longer than one
        request may take (``timeout_seconds``, what a re-send may wait anyway): what it said,
        and how long is left."""
        until, said = self._held
        left = until - asyncio.get_running_loop().time()
        if left > self.options.timeout_seconds:
            raise SinkError(
                f"the destination asked to wait ({said}): {math.ceil(left)} s of it left;"
                " nothing sent: try again then",
                "the destination asked to wait",
            )

    def _request(self, encoded: Sequence[bytes]) -> tuple[str, dict[str, str], bytes]:
        """The URL, headers and body of one batch as it goes now: Segment's HTTP Basic, or a
        webhook's Standard Webhooks signature over this moment's timestamp."""
        body = batch_body(encoded)
        headers = {"Content-Type": "application/json"}
        if self.options.kind == "segment":
            # Segment's scheme: HTTP Basic with the write key as user name and no password.
            headers["Authorization"] = "Basic " + base64.b64encode(self.secret + b":").decode()
            return self.url.rstrip("/") + "/v1/batch", headers, body
        ids = b",".join(message_id(m).encode() for m in encoded)
        msg_id = "gw_" + hashlib.sha256(ids).hexdigest()[:32]  # a retried batch is the same delivery
        timestamp = str(int(time.time()))
        headers |= {
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": standard_signature(self.secret, msg_id, timestamp, body),
        }
        return self.url, headers, body

    async def send(
        self,
        messages: Sequence[dict[str, Any]],
        skip_refused: bool = True,
        current: Current | None = None,
        settled: set[str] | None = None,
    ) -> int:
        """Send every message in batches; how many the destination accepted. A message refused
        on its own (``SinkRefused``) is counted and skipped, provided the destination accepted
        some other message of this call (or of ``settled``): when it refuses every one, the
        fault is more likely the sink's (a URL or a webhook secret the receiver answers 400 to)
        than every message's, so ``SinkError`` holds them all for a retry. Not ``skip_refused``
        (a re-send on demand): any refusal raises, for the operator to see. Any other failure
        raises; ``Stale`` when ``current`` finds an erasure before a batch. ``settled``: the
        ``messageId``s taken (or refused as such) by an earlier try of the same read, left out;
        this call's are added to it as they go (the refused ones once every batch went)."""
        settled = set() if settled is None else settled
        took_before = bool(settled)
        if took_before:
            messages = [m for m in messages if m["messageId"] not in settled]
        batches, skipped = pack(messages, self.options)
        if skipped:
            self.metrics.sink_messages.labels(self.options.name, "too_large").inc(skipped)
        sent, refused = 0, list[tuple[bytes, SinkRefused]]()
        for batch in batches:
            if skip_refused:
                sent += await self._deliver(batch, refused, current, settled)
            else:
                await self.post(batch, current, hold=False)
                settled.update(message_id(m) for m in batch)
                sent += len(batch)
        if refused and not sent and not took_before:
            check = f"check {self.key}.url and {self.secret_source}"
            if len(messages) == 1:  # a quiet site's one new row: the URL and key may be right
                lone = (
                    f"the destination refused the one message there is to send, {message_id(refused[0][0])}"
                )
                waits = (
                    "a message it refuses is skipped once it takes another message beside it, so"
                    f" this one waits for the next row; if it refuses every message, {check}"
                )
                raise SinkError(
                    f"{lone} ({refused[0][1]}); {waits}", f"{lone} ({refused[0][1].gist}); {waits}"
                )
            raise SinkError(
                f"the destination refused every message ({refused[0][1]}); {check}",
                f"the destination refused every message ({refused[0][1].gist}); {check}",
            )
        for message, why in refused:
            refused_id = message_id(message)
            settled.add(refused_id)
            self.metrics.sink_messages.labels(self.options.name, "refused").inc()
            log.warning(
                "sink %s: the destination refused message %s (%s); skipped, not retried",
                self.options.name,
                refused_id,
                why,
            )
        return sent

    async def _deliver(
        self,
        batch: Sequence[bytes],
        refused: list[tuple[bytes, SinkRefused]],
        current: Current | None,
        settled: set[str],
    ) -> int:
        """One batch, how many of its messages were accepted (added to ``settled``); when the
        destination refuses it as such, each half on its own, down to the single messages it
        refuses, which are added to ``refused`` (about 2·log2(size) more requests for each)."""
        try:
            await self.post(batch, current)
        except SinkRefused as why:
            if len(batch) == 1:
                refused.append((batch[0], why))
                return 0
            half = len(batch) // 2
            first = await self._deliver(batch[:half], refused, current, settled)
            return first + await self._deliver(batch[half:], refused, current, settled)
        settled.update(message_id(m) for m in batch)
        return len(batch)

    # -- reading the log ---------------------------------------------------------------------

    async def _users_of(self, db: aiosqlite.Connection, visitors: Sequence[str]) -> dict[str, list[str]]:
        """visitor key → the user keys bound to it, each once, the latest binding's last."""
        found: dict[str, list[str]] = {}
        unique = sorted(set(visitors))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            async with db.execute(
                f"SELECT visitor_key, user_key FROM identities WHERE visitor_key IN ({marks}) ORDER BY rowid",
                chunk,
            ) as cursor:
                for visitor_key, user_key in await cursor.fetchall():
                    users = found.setdefault(visitor_key, [])
                    if user_key in users:
                        users.remove(user_key)
                    users.append(user_key)
        return found

    async def _journey_ends(
        self, db: aiosqlite.Connection, user_key: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The first and the last touchpoint over every visitor bound to the user; a touchpoint
        of the ``no_consent`` population is never sent to a sink, so not as a trait either.
        Each the earliest (latest) in time of the rows of the first (last) id's millisecond: id
        order is time order to the millisecond only (two worker processes count the ids of one
        millisecond up from random starts; until 2026-12-07 the row of the smallest (largest)
        id was taken)."""
        mine = (
            "SELECT * FROM touchpoints WHERE visitor_key IN "
            "(SELECT visitor_key FROM identities WHERE user_key = ?) AND consent != 'no_consent'"
        )
        ends: list[dict[str, Any] | None] = []
        for order in ("ASC", "DESC"):
            async with db.execute(f"{mine} ORDER BY id {order} LIMIT 1", (user_key,)) as cursor:
                row = await cursor.fetchone()
            if row is not None:  # the rows of its millisecond, the end of them in time
                ms = id_ms(row["id"])
                sql = f"{mine} AND id >= ? AND id < ? ORDER BY ts {order}, id {order} LIMIT 1"
                async with db.execute(sql, (user_key, id_floor(ms), id_floor(ms + 1))) as cursor:
                    row = await cursor.fetchone()
            ends.append(dict(row) if row is not None else None)
        return ends[0], ends[1]

    async def _identifies(
        self, db: aiosqlite.Connection, bindings: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """An ``identify`` per binding, except a binding made in a session that did not consent
        (``privacy.consent_cookie``): it names a visitor who did not consent, under a one-day key
        everyone behind the same address and browser shares that day, so a destination would
        merge the profiles of the users who logged in under it. And except one with no traits
        (the user has no landing a sink may send): it would tell the destination nothing, its
        ``anonymousId`` no landing the sink sent; it goes, traits and all, when one comes in
        (``_refreshed``)."""
        messages = []
        for binding in bindings:
            if binding.get("consent") == "no_consent":
                continue
            first, last = await self._journey_ends(db, binding["user_key"])
            if first is None or last is None:
                continue
            messages.append(identify_message(binding, self.user_id(binding["user_key"]), first, last))
        return messages

    async def _tracks(
        self, db: aiosqlite.Connection, touches: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        # A visitor whose consent cookie does not say yes is counted here, never sent to a third
        # party's tool (``privacy.consent_cookie``).
        touches = [t for t in touches if t.get("consent") != "no_consent"]
        users = await self._users_of(db, [t["visitor_key"] for t in touches])
        return [track_message(t, self._landed(t, users.get(t["visitor_key"], []))) for t in touches]

    def _landed(self, touch: dict[str, Any], users: Sequence[str]) -> str | None:
        """The user a track names: the latest bound to a cookie's visitor (the device's user);
        for a one-day key (``ONE_DAY``) only the one user bound to it: bound to several (two
        people behind one NAT with the same browser), whose landing it was is not known, and a
        destination would credit it to the one named."""
        if not users or (touch.get("consent") in ONE_DAY and len(users) > 1):
            return None
        return self.user_id(users[-1])

    async def _refreshed(
        self, db: aiosqlite.Connection, touches: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """An ``identify`` with the traits as they are now for each user who has one of these
        touchpoints and whose binding the sink already sent: that identify's traits were
        computed then, and would never see a touchpoint stored since (a returning visitor's new
        campaign, a sender's touchpoint arriving after its user's binding). A binding the sink
        has not sent yet gets its identify from the identities read, traits and all."""
        touches = [t for t in touches if t.get("consent") != "no_consent"]
        if not touches:
            return []
        sent_up_to, _ = await cursor_at(db, cursor_name(self.reader, "identities"))
        latest: dict[str, dict[str, dict[str, Any]]] = {}  # visitor → user → its latest binding
        unique = sorted({t["visitor_key"] for t in touches})
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            async with db.execute(
                f"SELECT * FROM identities WHERE visitor_key IN ({marks}) AND rowid <= ?"
                " AND consent != 'no_consent' ORDER BY rowid",
                (*chunk, sent_up_to),
            ) as cursor:
                for row in await cursor.fetchall():
                    latest.setdefault(row["visitor_key"], {})[row["user_key"]] = dict(row)
        per_user: dict[str, dict[str, Any]] = {}
        # One identify per user, for the binding of its last touchpoint here; for every user bound
        # to that visitor (a shared device, a one-day key several logged in under): the landing
        # is in each one's traits.
        for touch in touches:
            for user_key, binding in latest.get(touch["visitor_key"], {}).items():
                per_user.pop(user_key, None)
                per_user[user_key] = binding
        return await self._identifies(db, list(per_user.values()))

    async def _rows_after(
        self, db: aiosqlite.Connection, table: str, after: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with db.execute(
            f"SELECT rowid AS _seq, * FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, READ_ROWS)
        ) as cursor:
            rows = [dict(r) for r in await cursor.fetchall()]
        return rows, (rows[-1]["_seq"] if rows else after)

    async def round(self, db: aiosqlite.Connection) -> dict[str, int]:
        """Send everything new; messages sent per table."""
        sent = {"touchpoints": 0, "identities": 0}
        for table in sent:
            name = cursor_name(self.reader, table)
            while True:
                after, version = await cursor_at(db, name)
                mark = await erasure_mark(db)
                rows, last = await self._rows_after(db, table, after)
                if not rows:
                    break

                async def current(mark: int = mark) -> bool:
                    return await erasure_mark(db) == mark

                held = self._settled.get(table)
                settled = held[1] if held is not None and held[0] == after else set()
                self._settled[table] = (after, settled)
                took = len(settled)
                try:
                    if table == "touchpoints":
                        messages = await self._tracks(db, rows) + await self._refreshed(db, rows)
                    else:
                        messages = await self._identifies(db, rows)
                    sent[table] += await self.send(messages, current=current, settled=settled)
                except Stale:  # read again; what the destination took already is not sent again
                    sent[table] += len(settled) - took  # refusals join it only at the end
                    log.info("sink %s: an erasure came while sending; reading again", self.options.name)
                    continue
                if await advance(db, name, after, last, version) is None:
                    continue  # moved meanwhile (a delete clamped it): read again from where it is
                del self._settled[table]
                self.metrics.sync_rows.labels(self.reader, table).inc(len(rows))
                await publish_progress(db, self.metrics, self.reader, table, last, self.clock)
                if len(rows) < READ_ROWS:
                    break
        return sent

    async def publish_lag(self, db: aiosqlite.Connection, *, count: bool = True) -> None:
        """The lag per table in ``/metrics`` (``count=False``: its age alone, between attempts)."""
        await publish_lag(
            db, self.metrics, self.reader, ("touchpoints", "identities"), self.clock, count=count
        )

    async def resend_user(self, db: aiosqlite.Connection, user_keys: Sequence[str]) -> Resent:
        """Send one user's identify and track calls again, now (cursors untouched): under which
        key, and how many the destination took. ``user_keys``: every form the user's bindings may
        be kept under (``Keys.user_keys``: an earlier ``user_id_storage``, the lower-cased ID), as
        the journey lookup and an erasure find them. The messageIds are the ones sent before, so
        nothing counts twice downstream. An erasure stored while its batches wait (the rate
        limit, a batch of the background round in flight) makes it read again, as a round does:
        until 2026-12-07 an erased user's messages, read before the erasure, went out after it.
        What the destination took before is neither sent again nor left out of the count (until
        2026-12-07 it was sent again, and the count was the last read's alone)."""
        settled: set[str] = set()  # the messageIds the destination took, over every read
        while True:
            mark = await erasure_mark(db)
            user_key, messages = await self._user_messages(db, user_keys)

            async def current(mark: int = mark) -> bool:
                return await erasure_mark(db) == mark

            try:
                await self.send(messages, skip_refused=False, current=current, settled=settled)
            except Stale:
                continue
            return Resent(user_key, len(settled))

    async def _user_messages(
        self, db: aiosqlite.Connection, user_keys: Sequence[str]
    ) -> tuple[str, list[dict[str, Any]]]:
        """The key the user's bindings a sink may send are kept under (``Resent.user_key``), and
        their identify and track calls, as ``resend_user`` sends them; NothingRecorded when there
        is nothing to send."""
        marks = ",".join("?" for _ in user_keys)
        async with db.execute(
            f"SELECT * FROM identities WHERE user_key IN ({marks}) ORDER BY rowid", tuple(user_keys)
        ) as cursor:
            bindings = [dict(r) for r in await cursor.fetchall()]
        if not bindings:
            erased = await erased_at(db, user_keys)  # not a mistyped ID: say so
            if erased is not None:
                raise NothingRecorded(f"nothing recorded for this user: erased on {erased}")
            raise NothingRecorded("nothing recorded for this user (no identity binding)")
        held = {b["user_key"] for b in bindings if b["consent"] != "no_consent"}
        if not held:
            raise NothingRecorded(
                "nothing to send for this user: each of their identity bindings was made without"
                " consent (privacy.consent_cookie), and a sink sends none of those"
            )
        async with db.execute(
            "SELECT * FROM touchpoints WHERE visitor_key IN "
            f"(SELECT visitor_key FROM identities WHERE user_key IN ({marks})) ORDER BY id",
            tuple(user_keys),
        ) as cursor:
            touches = [dict(r) for r in await cursor.fetchall()]
        messages = await self._identifies(db, bindings) + await self._tracks(db, touches)
        if not messages:  # no track: no landing to send, so no traits for an identify either
            raise NothingRecorded(
                "nothing to send for this user: no landing of theirs that a sink may send is"
                " recorded (none, or each made without consent: privacy.consent_cookie), and an"
                " identify without source traits would tell the destination nothing"
            )
        return next(key for key in user_keys if key in held), messages

    async def run(self) -> None:
        """Until cancelled: rounds every ``interval_seconds``; failures retried with backoff, a
        problem logged once (``Failures``), the end of an outage too."""
        db = await open_log(self.settings)
        backoff = Backoff(0.5, self.options.backoff_max_seconds)
        failures = Failures(log, f"sink {self.options.name}", self.metrics.readers_failing, self.reader)
        try:
            while True:
                try:
                    await self.round(db)
                    backoff.reset()
                    failures.succeeded()
                    self.metrics.sync_last_success.labels(self.reader).set(time.time())
                    delay = self.options.interval_seconds
                except Exception as err:  # a background task must outlive every failure
                    self.metrics.sync_errors.labels(self.reader).inc()
                    # A Retry-After holds the next request longer than the backoff may: the log
                    # says when it really goes.
                    held = self._next_send - asyncio.get_running_loop().time()
                    delay = max(backoff.next(), held)
                    same = err.gist if isinstance(err, SinkError) else None  # not its words
                    failures.failed(str(err) or type(err).__name__, delay, same=same)
                with contextlib.suppress(Exception):
                    await self.publish_lag(db)
                await wait_refreshing(
                    delay, self.options.interval_seconds, lambda: self.publish_lag(db, count=False)
                )
        finally:
            await db.close()


async def _read_answer(resp: aiohttp.ClientResponse) -> bytes:
    """The answer's body to its end, or its first ``ANSWER_LIMIT`` bytes: one cut short (the
    connection closed before its ``Content-Length``) raises, as a whole read would."""
    answer = bytearray()
    while len(answer) < ANSWER_LIMIT and (chunk := await resp.content.read(ANSWER_LIMIT - len(answer))):
        answer += chunk
    return bytes(answer)


def not_http(err: aiohttp.ClientError, url: str, key: str) -> str:
    """A request to ``url`` (the sink's ``key``) that got no HTTP answer, as the operator fixes
    it: the host and port, never the URL (which may hold a token), on one line."""
    target = yarl.URL(url)
    at = _address(url)
    elsewhere = "another service than an HTTP server listens there"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        # Also what a kept-alive connection the destination closed meanwhile comes to: retried.
        return (
            f"{at} closed the connection without an answer: a kept-alive connection it closed"
            f" meanwhile, or {elsewhere} (a database's port?), or an https:// destination is asked"
            f" in http://; check {key} if it lasts"
        )
    if isinstance(err, aiohttp.ClientResponseError):  # only aiohttp's parser raises it here
        words = printable(" ".join(err.message.split()))[:200]
        return (
            f"the answer from {at} is not HTTP ({words}): {elsewhere}, or an https:// destination"
            f" is asked in http://; check {key}"
        )
    said = " ".join(str(err).replace(str(target), at).replace(url, at).split())
    return f"{type(err).__name__}: {printable(said)[:300]}"


def moved_to(location: str, url: str, secret: str | None) -> str:
    """Where a redirect of a request to ``url`` points, as a line says it. ``secret`` (where a URL
    read from the environment, which may hold a token, comes from): its scheme, host
    and port alone, and whether its path and query are ``url``'s (http:// to https://, the usual
    move, repeated them, token and all: logged whole until 2026-12-07); otherwise the whole
    ``Location``, made safe to print as the answers are."""
    if not location.strip():
        return "nowhere"
    if secret is None:
        return printable(location[:200])
    try:
        target = yarl.URL(url).join(yarl.URL(location.strip()))
        origin = str(target.origin())
    except ValueError:
        return f"a Location that is no URL (not said, as {secret}, a secret)"
    same = target.raw_path_qs == yarl.URL(url).raw_path_qs
    path = "the same path and query" if same else f"another path: not said, as {secret}, a secret"
    return f"{printable(origin[:200])} ({path})"


def cut_short(url: str, status: int, key: str) -> str:
    """An answer to a request to ``url`` (the sink's ``key``) whose body ended before its end (the
    connection closed inside it): the host and port and the status it began with, not aiohttp's
    words (``ClientPayloadError: … <ContentLengthError: 400, …>``, a 400 no one answered, the
    byte count making each try a new problem, until 2026-12-07). Retried as any failure."""
    return (
        f"the answer from {_address(url)} (HTTP {status}) was cut short: the connection closed before"
        " its end (the destination, or a proxy in front of it, restarting or cutting it); the batch"
        f" goes again; check {key} if it lasts"
    )


def _address(url: str) -> str:
    """The host and port of ``url``, as a line names a destination (never its URL, which may hold
    a token): ``127.0.0.1:8000``, ``[::1]:443``."""
    target = yarl.URL(url)
    host = target.host or "?"
    return f"[{host}]:{target.port}" if ":" in host else f"{host}:{target.port}"


def retry_after_seconds(value: str) -> float | None:
    """A ``Retry-After`` value in seconds from now (RFC 9110 §10.2.3: delay-seconds or an
    HTTP-date); None when absent or neither."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a year past C's long
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, source unknown"
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def open_log(settings: Settings) -> aiosqlite.Connection:
    """A connection of its own to the local store (reads, and cursor writes)."""
    db = await connect(settings.store_path)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    db.row_factory = aiosqlite.Row
    return db


class SinkSet:
    """Every configured sink, and the one HTTP client session they share (opened on first use)."""

    def __init__(self, settings: Settings, metrics: Metrics, keys: Keys, only: str | None = None) -> None:
        """``only``: that sink alone (``sink send --sink``, whose settings may lack the other
        sinks' secrets and ``env:`` URLs: building them all failed with a KeyError)."""
        self.settings = settings
        self.sinks = {
            o.name: Sink(settings, o, metrics, keys, self)
            for o in settings.options.sinks
            if only is None or o.name == only
        }
        made_up = {entry.partition(" ")[0] for entry in settings.generated}
        self.made_up = {
            o.name: (i, o.secret.removeprefix("env:"))
            for i, o in enumerate(settings.options.sinks)
            if f"sinks[{i}].secret" in made_up
        }
        """Sinks whose write key ``--dev`` made up (name → index, variable): they send nothing,
        since the destination (a third party, as often as not) would take every visitor's calls
        under a key it drops without a word (Segment answers 200)."""
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def resend_user(self, user_keys: Sequence[str], only: str | None = None) -> dict[str, Resent]:
        """Re-send one user's calls (their bindings under any of ``user_keys``) through every
        sink (or one); what each sent."""
        db = await open_log(self.settings)
        try:
            return {
                name: await sink.resend_user(db, user_keys)
                for name, sink in self.sinks.items()
                if only is None or name == only
            }
        finally:
            await db.close()


async def resend_user_standalone(
    settings: Settings, user_id: str, only: str | None
) -> dict[str, Resent | SinkError]:
    """``gateway sink send --user ID``: outside a running gateway. Per sink, what it sent
    or why its destination did not take them: one that fails does not keep the others from
    being sent to (until 2026-12-05 the first failure ended the command, naming no sink)."""
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    sinks = SinkSet(settings, Metrics(), keys, only)

    async def known(user_keys: list[str]) -> bool | None:
        return await user_known(settings.store_path, user_keys) or None

    # As the admin API's re-send, the lookup and ``gateway erase`` read it: the user_key a sink
    # sends as userId (under "hash") too, not only the raw ID.
    named, _ = await named_user(user_id, keys, settings.lowercases_user_ids, known)
    user_keys = named.keys
    done: dict[str, Resent | SinkError] = {}
    try:
        db = await open_log(settings)  # once for every sink (``sinks`` holds ``only`` alone, if named)
        try:
            for name, sink in sinks.sinks.items():
                try:
                    done[name] = await sink.resend_user(db, user_keys)
                except SinkError as err:
                    done[name] = err
        finally:
            await db.close()
        return done
    finally:
        await sinks.close()
