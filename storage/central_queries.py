"""Reads of the central store for the admin API (``admin.source = "central"``): all nodes' rows.

The same methods and the same answers as ``storage.queries.Reader`` (touchpoint
listings, visitor and user journeys), so the admin API and its OpenAPI
document do not change with the source; timestamps come back as the same ISO
text, ids as the same UUID text. Bad events are per node and stay local: that
method reads the local store. Owns a small asyncpg pool opened lazily, so a
gateway starts while PostgreSQL is away; a read then fails with
``StoreUnavailable`` (the API answers 503).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from gateway.events import iso
from gateway.ids import id_floor
from storage import central
from storage.queries import (
    CONVERSION_FILTERS,
    MAX_USER_VISITORS,
    TOUCHPOINT_FILTERS,
    ConversionQuery,
    Reader,
    StoreUnavailable,
    TouchpointQuery,
    _unix_ms,
    filters,
)

_decode = msgspec.json.Decoder(dict[str, str])


def local_form(value: Any) -> Any:
    """A central value in the local store's text form: a timestamp as the ISO text the local
    store writes (``gateway.events.iso``), a UUID as its text; others as they are. Here and for
    the reporting mirror (``storage.mirror``), which copies central rows into a local store."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _plain(record: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the local reader gives it: ISO timestamps, UUIDs as text, raw_params decoded;
    a touchpoint of ``effective_touchpoints`` with its effective verdict, score and reasons in
    place of the stored ones, and without the daily IP hash; without the central ``ingested``
    (the transaction that inserted it, for the mirror)."""
    item: dict[str, Any] = {}
    for key, value in record.items():
        if key == "ingested":
            continue
        if key == "raw_params" and isinstance(value, str):
            value = _decode.decode(value)
        item[key] = local_form(value)
    if "effective_verdict" in item:
        item["verdict"] = item.pop("effective_verdict")
        item["bot_score"] = item.pop("effective_score")
        item["reasons"] = central.asyncpg_json_list(item.pop("effective_reasons"))
        for hidden in ("ip_hash", "verdict_analyst", "verdict_note"):
            item.pop(hidden, None)
    return item


class CentralReader(Reader):
    """A ``Reader`` whose journeys and listings come from the central store; its local
    connection serves what stays per node (bad events)."""

    def __init__(self, path: Path, dsn: str, timeout: float, key: str = "central.url") -> None:
        super().__init__(path)
        self.dsn = dsn
        self.timeout = timeout
        self.key = key
        """The setting a failure names, as the sync's log does (``central.url_key``)."""
        self._pool: asyncpg.Pool | None = None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await super().close()

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        try:
            if self._pool is None:
                # Its connections made as the sync's are, their failures in the same words.
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=0,
                    max_size=4,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                    connect=central.pool_connect,
                )
            rows = await self._pool.fetch(sql, *args, timeout=self.timeout)
        except central.PG_ERRORS as err:
            # A pool connects as it fetches: what answers at central.url's port may be no
            # PostgreSQL at all (``not_postgres``), whose refusal asyncpg's words blame on TLS.
            not_postgres = await self._not_postgres(err)
            said = central.explain(not_postgres or err, self.key, via_connect=False)
            raise StoreUnavailable(f"the central store is unavailable ({said})") from err
        return [_plain(row) for row in rows]

    async def _not_postgres(self, err: BaseException) -> central.NotPostgres | None:
        """``err`` of a fetch as ``central.NotPostgres`` when what answers at the DSN's port is not
        PostgreSQL. An answer to the TLS request that is neither yes nor no comes only while
        connecting; a connection closed can be one closed during the start-up (not PostgreSQL)
        or an established one lost mid-read (PostgreSQL away), which the pool does not tell
        apart: one connection of the reader's own, made to tell, does."""
        found = central.not_postgres(err, self.dsn)
        if found is None or not found.closed:
            if found is not None:
                found.__cause__ = err
            return found
        try:
            probe = await central.connect(self.dsn, self.timeout)
        except central.NotPostgres as refused:
            return refused
        except Exception:  # the fetch's own error says what went wrong: this only told
            return None
        await probe.close()
        return None

    async def touchpoints(self, q: TouchpointQuery) -> tuple[list[dict[str, Any]], str | None]:
        equals = {
            **filters("touchpoint", q.equals, TOUCHPOINT_FILTERS),
            **({"effective_verdict": q.verdict} if q.verdict else {}),
        }
        return await self._listing(
            "effective_touchpoints", q.since, q.until, equals, q.cursor, q.limit, q.newest_first
        )

    async def conversions(self, q: ConversionQuery) -> tuple[list[dict[str, Any]], str | None]:
        equals = filters("conversion", q.equals, CONVERSION_FILTERS)
        return await self._listing("conversions", q.since, q.until, equals, q.cursor, q.limit, q.newest_first)

    async def _listing(
        self,
        table: str,
        since: str | None,
        until: str | None,
        equals: Mapping[str, str],
        cursor: str | None,
        limit: int,
        newest_first: bool,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A listing's page of ``table`` (the columns of ``equals`` checked by ``filters``: they
        go into the SQL text), as ``Reader._page`` gives the local store's."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if since:
            where += [f"id >= {arg(id_floor(_unix_ms(since)))}::uuid", f"ts >= {arg(_ts(since))}"]
        if until:
            where += [f"id < {arg(id_floor(_unix_ms(until) + 1))}::uuid", f"ts < {arg(_ts(until))}"]
        where += [f"{column} = {arg(value)}" for column, value in equals.items()]
        if cursor:
            where.append(f"id {'<' if newest_first else '>'} {arg(cursor)}::uuid")
        sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        order = "id DESC" if newest_first else "id"
        rows = await self._fetch(sql + f" ORDER BY {order} LIMIT {arg(limit + 1)}", *args)
        items = rows[:limit]
        return items, items[-1]["id"] if len(rows) > limit else None

    async def recorded_elsewhere(self, touchpoint_id: str) -> str | None:
        """The node a touchpoint of the central store came from (listed, but perhaps not in
        this node's store): an analyst's override must be made there, see ``set_verdict``."""
        rows = await self._fetch("SELECT node FROM touchpoints WHERE id = $1::uuid", touchpoint_id)
        return str(rows[0]["node"]) if rows else None

    async def erased_at(self, keys: Sequence[str]) -> str | None:
        """As ``Reader.erased_at``, by the central ``erased_keys`` (every node's erasures) and
        this node's own records (an erasure made here and not synced yet)."""
        rows = await self._fetch(
            "SELECT max(erased_at) AS at FROM erased_keys WHERE key = ANY($1::text[])", list(keys)
        )
        times = [t for t in (rows[0]["at"] if rows else None, await super().erased_at(keys)) if t]
        return max(times) if times else None

    async def visitor_known(self, keys: Sequence[str]) -> bool:
        """Whether the central store holds anything of the visitor ``keys`` name, from any
        node: a touchpoint, a conversion, a binding, or an erasure of it (``erased_keys``).
        What an erasure made on this node reaches through the sync, so what decides whether a
        text pasted by mistake is refused (``gateway.usernames.visitor_recorded``). A central
        store no sync has made the tables of yet holds nothing."""
        return await self._holds(
            keys,
            ("touchpoints", "visitor_key"),
            ("conversions", "visitor_key"),
            ("identities", "visitor_key"),
            ("erased_keys", "key"),
        )

    async def user_known(self, keys: Sequence[str]) -> bool:
        """Whether the central store holds anything of the user ``keys`` name, from any node: a
        binding, a conversion, or an erasure of it (``erased_keys``): what decides whether an
        operator's text of a key's shape is read as that key (``gateway.usernames.user_recorded``).
        A central store no sync has made the tables of yet holds nothing."""
        return await self._holds(
            keys, ("identities", "user_key"), ("conversions", "user_key"), ("erased_keys", "key")
        )

    async def _holds(self, keys: Sequence[str], *places: tuple[str, str]) -> bool:
        """Whether any of ``places`` (table, column) holds one of ``keys``; a central store no
        sync has made the tables of yet holds nothing."""
        if not keys:
            return False
        sql = " UNION ALL ".join(
            f"(SELECT 1 FROM {table} WHERE {column} = ANY($1::text[]) LIMIT 1)" for table, column in places
        )
        try:
            return bool(await self._fetch(sql, list(keys)))
        except StoreUnavailable as err:
            if isinstance(err.__cause__, asyncpg.UndefinedTableError):
                return False
            raise

    # -- the row fetches the journeys are assembled from (see ``Reader.visitor``, ``.user``) -

    async def _touches_of(
        self, keys: list[str], limit: int, newest_first: bool = False, of_ms: int | None = None
    ) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else ""
        within, bounds = "", []
        if of_ms is not None:
            within, bounds = " AND id >= $3::uuid AND id < $4::uuid", [id_floor(of_ms), id_floor(of_ms + 1)]
        return await self._fetch(
            f"SELECT * FROM effective_touchpoints WHERE visitor_key = ANY($1::text[]){within} "
            f"ORDER BY id {order} LIMIT $2",
            keys,
            limit,
            *bounds,
        )

    async def _count_touches(self, visitor_key: str) -> int:
        (counted,) = await self._fetch(
            "SELECT count(*) AS n FROM touchpoints WHERE visitor_key = $1", visitor_key
        )
        return int(counted["n"])

    async def _bound_visitors(self, user_keys: list[str]) -> list[dict[str, Any]]:
        return await self._fetch(
            "SELECT visitor_key, min(ts) AS first_bound, count(*) AS bindings, min(user_key) AS user_key"
            " FROM identities WHERE user_key = ANY($1::text[]) GROUP BY visitor_key"
            " ORDER BY first_bound LIMIT $2",
            user_keys,
            MAX_USER_VISITORS + 1,
        )

    async def _conversions_of(
        self,
        user_keys: list[str],
        keys: list[str],
        limit: int,
        newest_first: bool = False,
        of_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else ""
        within, bounds = "", []
        if of_ms is not None:
            within, bounds = " AND id >= $4::uuid AND id < $5::uuid", [id_floor(of_ms), id_floor(of_ms + 1)]
        return await self._fetch(
            "SELECT * FROM conversions WHERE (user_key = ANY($1::text[]) OR visitor_key = ANY($2::text[]))"
            f"{within} ORDER BY id {order} LIMIT $3",
            user_keys,
            keys,
            limit,
            *bounds,
        )


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)
