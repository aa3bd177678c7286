"""GeoIP: country, region and ASN of the client IP from MaxMind-format ``.mmdb`` files.

Configured by ``[geo]`` (``country_db``, ``asn_db``; GeoLite2 or DB-IP layouts).
Opens the databases at start-up (off the event loop); looks up
page loads and landings only, puts the result on ``Exchange.geo`` for later
addons (bots: the datacenter signal) and on the request's touchpoint. The raw
IP is used for the lookup and never stored. No database configured: the addon
leaves the chain (it costs nothing) after one warning; a configured file that
is missing: one warning and off; a corrupt one: a config error naming its key.
The warnings are said once by the gateway (``Context.notices``), not by each worker at
each reload.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import maxminddb

from gateway.config import ConfigError, resolve_path
from gateway.events import Touchpoint
from gateway.pipeline import Context, Exchange, Geo

log = logging.getLogger("gateway.geo")


def normalise_ip(ip: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) as plain IPv4: databases file them
    under the IPv4 tree, so the mapped form finds nothing."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip


def country_of(record: Any) -> tuple[str | None, str | None]:
    """(country ISO code, first subdivision ISO code) from a GeoLite2/DB-IP country or city record."""
    if not isinstance(record, dict):
        return None, None
    country = record.get("country") or record.get("registered_country") or {}
    code = country.get("iso_code") if isinstance(country, dict) else None
    region = None
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions and isinstance(subdivisions[0], dict):
        sub = subdivisions[0].get("iso_code")
        region = f"{code}-{sub}" if code and isinstance(sub, str) else None
    return (code if isinstance(code, str) else None), region


def asn_of(record: Any) -> int | None:
    """The AS number from a GeoLite2-ASN or DB-IP ASN record."""
    if not isinstance(record, dict):
        return None
    number = record.get("autonomous_system_number")
    return number if isinstance(number, int) else None


def _get(reader: maxminddb.Reader, ip: str) -> Any:
    """The record for ``ip``; None when there is none, the address is malformed (a unix socket
    peer), or it is IPv6 and the file IPv4-only."""
    try:
        return reader.get(ip)
    except ValueError:
        return None


def _open(key: str, path: Path) -> maxminddb.Reader | None:
    """The database, or None when the file is missing."""
    if not path.exists():
        return None
    try:
        # MODE_AUTO: the C extension over a memory map (about 1 µs a lookup; the pure-Python
        # reader takes 40). The file's pages stay in the page cache once read.
        return maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
        raise ConfigError([f"{key}: cannot read {path} as a MaxMind database: {err}"]) from err


class GeoIP:
    def configure(self, ctx: Context) -> None:
        opts = ctx.settings.options.geo
        base = ctx.settings.base_dir
        self.paths = {
            key: resolve_path(base, name)
            for key, name in (("geo.country_db", opts.country_db), ("geo.asn_db", opts.asn_db))
            if name
        }
        self.country: maxminddb.Reader | None = None
        self.asn: maxminddb.Reader | None = None
        self.enabled = bool(self.paths)
        self.notices = ctx.notices  # said once by the gateway, not per worker and reload
        if not self.enabled:
            # Info, not a warning: no database named is the starter config's choice, not a fault
            # to act on, and every start of it paged someone (a warning until 2026-12-07). A file
            # named but missing is one (``running``).
            self.notices.warn(
                log,
                "geo: no database configured ([geo] country_db, asn_db): geo lookups are off",
                logging.INFO,
            )

    async def running(self) -> None:
        """Open the databases off the event loop (reading them is file I/O)."""
        missing = []
        for key, path in self.paths.items():
            reader = await asyncio.to_thread(_open, key, path)
            if reader is None:
                missing.append(f"{key} {path}")
            elif key == "geo.country_db":
                self.country = reader
            else:
                self.asn = reader
        if missing:
            off = (
                "geo lookups are off"
                if self.country is None and self.asn is None
                else "lookups from it are off"
            )
            self.notices.warn(log, f"geo: not found: {', '.join(missing)}; {off}")

    def done(self) -> None:
        for reader in (self.country, self.asn):
            if reader is not None:
                reader.close()
        self.country = self.asn = None

    def lookup(self, ip: str) -> Geo | None:
        """Country, region and ASN of ``ip``; None when nothing is known or the IP is malformed."""
        ip = normalise_ip(ip)
        geo = Geo()
        if self.country is not None:
            geo.country, geo.region = country_of(_get(self.country, ip))
        if self.asn is not None:
            geo.asn = asn_of(_get(self.asn, ip))
        return geo if geo.country or geo.asn else None

    def request(self, ex: Exchange) -> None:
        if self.country is None and self.asn is None:
            return
        touchpoint = next((e for e in ex.events if isinstance(e, Touchpoint)), None)
        if touchpoint is None and ex.folded is None and ex.counted is None and not ex.request.is_document:
            return  # an asset or API call: nothing to record, nothing to score on (a reload
            # campaign folded is a landing still: bots may block it, datacenter included)
        geo = self.lookup(ex.request.client_ip) if ex.request.client_ip else None
        if geo is None:
            return
        ex.geo = geo
        if touchpoint is not None:
            touchpoint.country, touchpoint.region, touchpoint.asn = geo.country, geo.region, geo.asn
