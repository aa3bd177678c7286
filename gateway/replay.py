"""``gateway replay-bad``: re-validate kept bad events with the current config; ingest those that pass.

Reads ``bad_events`` not yet replayed (optionally of one sender), maps each with
its sender's current ``[[sources]]`` mapping — as of the time it was received —
and, unless ``--dry-run``, writes what it means through a ``LocalStore`` (the
same receipts as live ingestion, so a replay never counts anything twice) and
then marks the bad event ``replayed``. Truncated bodies and events of senders no
longer configured are reported and left alone. Each line of its output names the bad event's
sender and event key; its first says the file's mapping is used (a running gateway keeps the
``[[sources]]`` it started with until restarted, which is not known here).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite

from gateway.badbody import body_key, unseal
from gateway.config import ConfigError, Settings, load_settings
from gateway.events import Event, iso
from gateway.ids import Uuid7, id_floor
from gateway.inbound import ERASED_SINCE
from gateway.keys import Keys
from gateway.mapping import EVENT_KEY_FALLBACKS, Invalid, Limits, Mapped, map_event
from gateway.metrics import Metrics
from gateway.notices import warn_of_secret
from gateway.placeholders import placeholder
from gateway.signing import ReceiptKeys
from gateway.sources import MISSING, SourceMap, compile_source, decode_delivery, resolve, split_batch
from storage.erased import Erased
from storage.local import LocalStore, connect, store_hint
from storage.migrate import SchemaTooNew, refuse_newer
from storage.readonly import open_read_only

NOT_UTF8 = ("body: not valid JSON (Invalid UTF-8", "body: not UTF-8")
"""The reasons of a body that was not UTF-8 (``sources.decode_delivery``)."""


@dataclass
class ReplayReport:
    replayed: list[str] = field(default_factory=list)
    still_bad: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    outcomes: dict[str, list[str]] = field(default_factory=dict)
    """Per replayed bad event, what became of each of its events: ``recorded``, ``already
    recorded`` (its key or order was in the store: a retry the gateway took after the fix),
    ``ignored: <reason>`` (nothing to record), or under ``--dry-run`` ``would record``."""
    about: dict[str, str] = field(default_factory=dict)
    """Per bad event, whose it is: ``sender billing, event evt_1`` (its key, when it has one)."""


async def replay_bad(
    settings: Settings,
    *,
    sender: str | None = None,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    config: str = "",
) -> ReplayReport:
    """Replay the bad events of ``sender`` (or all); see the module docstring. ``config``: the
    file the settings were read from, which the output names."""
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    wh = settings.options.webhooks
    ids = Uuid7()
    limits = Limits(
        keys=keys,
        node=settings.node,
        ids=ids,
        max_age=timedelta(days=wh.max_event_age_days),
        tolerance=timedelta(seconds=wh.tolerance_seconds),
        max_len=settings.options.campaign.max_value_length,
        channels=settings.channels,
    )
    sources = {s.name: compile_source(s) for s in settings.options.sources}
    report = ReplayReport()
    key = body_key(settings.secret)
    keyed = ReceiptKeys(settings.secret)  # the receipts' keys, as the endpoints store them
    # A dry run reads through a connection that cannot write the store (until 2026-12-07 a
    # writable one, as did its read of the erasures).
    db = await (open_read_only(settings.store_path) if dry_run else connect(settings.store_path))
    try:
        # As `gateway run`: a store a newer gateway migrated is refused (until 2026-12-07 it was
        # read, and written into); one an older gateway left is said as before, by what it lacks.
        await refuse_newer(db)
        sql = "SELECT id, ts, node, sender, body, truncated, reason FROM bad_events WHERE replayed IS NULL"
        args: list[str] = []
        if sender is not None:
            sql, args = sql + " AND sender = ?", [sender]
        async with db.execute(sql + " ORDER BY id", args) as cur:
            pending = list(await cur.fetchall())
        # An event about a user erased after its time stays out, as the endpoints keep a retry
        # of it out (until 2026-12-05 a replay recorded it, and the erasure came undone).
        erased = Erased()
        if pending:
            erased = await asyncio.to_thread(Erased.read, settings.store_path, only_read=dry_run)
        groups: list[list[Event]] = []
        spans: list[tuple[str, int, list[Mapped]]] = []  # a bad event, its first group, its events
        for bad_id, ts, node, name, body, truncated, reason in pending:
            src = sources.get(name)
            report.about[bad_id] = f"sender {name}"
            if src is None:
                report.skipped.append((bad_id, f"sender {name!r} is not in [[sources]] any more"))
                continue
            if truncated:
                report.skipped.append((bad_id, "the body was truncated when kept (webhooks.bad_body_limit)"))
                continue
            body = unseal(key, body)
            if body is None:
                report.skipped.append((bad_id, "the body was sealed under another identity.secret"))
                continue
            if "\ufffd" in body and (unseal(key, reason) or "").startswith(NOT_UTF8):
                # Kept before 2026-12-05 with U+FFFD for each byte that was not UTF-8: valid
                # JSON, but not what the sender sent (a Latin-1 "M\xfcller" read "M\ufffdller").
                report.skipped.append((bad_id, "the body was not UTF-8, and was kept without its bytes"))
                continue
            received = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)
            try:
                doc = decode_delivery(body.encode())
            except ValueError as err:
                report.still_bad.append((bad_id, str(err)))
                continue
            placed = await _place_in_delivery(db, bad_id, ts, node, name)
            try:
                # One event of a delivery (it has its place) is read as the endpoint read it, one
                # event: an array there, or an object with a batch, is refused again, not split
                # and recorded. A whole body kept (one that did not decode) is split as sent.
                events = [doc] if placed is not None else split_batch(src, doc)
                mapped = [
                    map_event(src, e, received, limits, placed or f"replay:{bad_id}#{i}")
                    for i, e in enumerate(events)
                ]
            except Invalid as err:
                report.still_bad.append((bad_id, "; ".join(err.errors)))
                report.about[bad_id] += _keys_shown([k] if (k := own_key(src, doc) or placed) else [])
                continue
            report.about[bad_id] += _keys_shown([m.key for m in mapped])
            ms = int(received.timestamp() * 1000)
            mapped = [
                dataclasses.replace(m, rows=[], ignored=ERASED_SINCE)
                if any(erased.late(row) for row in m.rows)
                else m
                for m in mapped
            ]
            spans.append((bad_id, len(groups), mapped))
            for m in mapped:
                # Its aliases too: a key an older version stored for the event still matches.
                groups.append(m.group(functools.partial(ids, ms), iso(received), settings.node, name, keyed))
            report.replayed.append(bad_id)
        written = [True] * len(groups)
        if report.replayed and not dry_run:
            store = LocalStore(settings.store_path, settings.options.storage, Metrics())
            await store.open()
            try:
                written = await store.submit_groups(groups)
            finally:
                await store.close()
            now = iso(datetime.now(UTC))
            await db.executemany(
                "UPDATE bad_events SET replayed = ? WHERE id = ?", [(now, i) for i in report.replayed]
            )
    finally:
        await db.close()
    for bad_id, first, mapped in spans:
        # Replayed is not recorded: the event may be ignored now, or in the store already.
        report.outcomes[bad_id] = [
            f"ignored: {m.ignored}"
            if not m.rows
            else "would record"
            if dry_run
            else "recorded"
            if written[first + k]
            else "already recorded"
            for k, m in enumerate(mapped)
        ]
    verb = "would replay" if dry_run else "replayed"
    if pending:
        # Whether a running gateway maps as the file now does is not known here: a reload leaves
        # its [[sources]] as they were at its start ("needs a restart"), so say which is used.
        say(
            f"mapping: the [[sources]] of {config or 'the config'} as the file has them now (a"
            " running gateway maps with those it started with until it is restarted; a reload does"
            " not change them)"
        )
    for bad_id in report.replayed:
        say(f"{bad_id} ({report.about[bad_id]}): {verb}: {', '.join(report.outcomes[bad_id])}")
    for bad_id, reason in report.still_bad:
        say(f"{bad_id} ({report.about[bad_id]}): still bad: {reason}")
    for bad_id, reason in report.skipped:
        say(f"{bad_id} ({report.about[bad_id]}): skipped: {reason}")
    replayed, still_bad, skipped = len(report.replayed), len(report.still_bad), len(report.skipped)
    summary = f"{verb} {replayed:,}, still bad {still_bad:,}, skipped {skipped:,}"
    if replayed:
        told = [o.partition(":")[0] for outcomes in report.outcomes.values() for o in outcomes]
        kinds = ("would record", "ignored") if dry_run else ("recorded", "already recorded", "ignored")
        summary += f"; their events: {', '.join(f'{told.count(k):,} {k}' for k in kinds)}"
    say(summary)
    return report


def own_key(src: SourceMap, doc: Any) -> str | None:
    """The key a kept event gives itself (its ``event_id``, else ``messageId``…, as
    ``map_event`` looks for it), to name a bad event that is still bad; None when it has none.
    A placeholder (``undefined``, ``null``…) is no key, as ``map_event`` reads it: the event is
    named as one without (until 2026-12-07 ``event undefined``, every such event alike)."""
    if not isinstance(doc, dict):
        return None
    pointers = [src.pointers.get("event_id"), *(tuple(p[1:].split("/")) for p in EVENT_KEY_FALLBACKS)]
    for tokens in pointers:
        value = resolve(doc, tokens) if tokens else MISSING
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            if placeholder(str(value)):
                continue
            return str(value)
    return None


def _keys_shown(keys: list[str]) -> str:
    """``, event evt_1``; ``, events a, b, c and 2 more``; each cut to 80 characters."""
    if not keys:
        return ""
    shown = [k if len(k) <= 80 else k[:79] + "…" for k in keys[:3]]
    more = f" and {len(keys) - 3:,} more" if len(keys) > 3 else ""
    return f", event{'s' * (len(keys) > 1)} {', '.join(shown)}{more}"


async def _place_in_delivery(
    db: aiosqlite.Connection, bad_id: str, ts: str, node: str, sender: str
) -> str | None:
    """``<delivery ID>#<index>``, the key the endpoint gave a kept event of a delivery (an
    event with no key of its own is keyed so): its ``bad`` receipt, written with it (the same
    sender, node and time, the ID minted next). None when there is none (a body that was not
    JSON). Keyed so, the replay refuses what the endpoint refused (a ``webhook-id`` too long to
    key an event: until 2026-12-05 the replay keyed it ``replay:<bad id>#0`` and recorded it),
    and records once what the sender's retry records."""
    # Both IDs were minted for the delivery's millisecond: the primary key's range of it is read
    # (``+sender`` keeps SQLite off the (sender, kind, key) index, whose range is every bad
    # receipt of the sender: a replay of thousands of bad events read it once each).
    ms = int(bad_id.replace("-", "")[:12], 16)
    sql = (
        "SELECT key FROM receipts WHERE id > ? AND id < ? AND +sender = ? AND kind = 'bad' AND ts = ?"
        " AND node = ? ORDER BY id LIMIT 1"
    )
    async with db.execute(sql, (bad_id, id_floor(ms + 1), sender, ts, node)) as cur:
        row = await cur.fetchone()
    return None if row is None else str(row[0])


def cmd_replay_bad(args: argparse.Namespace) -> int:
    from gateway.cli import _fail_config

    try:
        settings = load_settings(args.config, offline=True, central=False)  # this node's store only
    except ConfigError as err:
        return _fail_config(args.config, err)
    warn_of_secret(settings)
    if args.sender is not None and args.sender not in {s.name for s in settings.options.sources}:
        print(f"gateway: no [[sources]] named {args.sender!r} in {args.config}", file=sys.stderr)
        return 2
    path = settings.store_path
    problem = settings.store_problem()  # else SQLite would create an empty one, find nothing in it
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    try:
        asyncio.run(replay_bad(settings, sender=args.sender, dry_run=args.dry_run, config=args.config))
    except (SchemaTooNew, sqlite3.DatabaseError) as err:
        # A store an older gateway left lacks tables too: that is said first (older_hint).
        hint = store_hint(err, path) or (
            " (not a gateway store? `gateway run` creates its tables)" if "no such table" in str(err) else ""
        )
        print(f"gateway: cannot read the store {path}: {err}{hint}", file=sys.stderr)
        return 1
    return 0
