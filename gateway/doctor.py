"""``gateway doctor``: a checklist of what stands between this config and a working gateway.

Reads the config (each signed-event sender's endpoint and scheme listed), the environment,
the store file, the GeoIP files, whether several workers hand a stopped one's waiting
connections on (``net.ipv4.tcp_migrate_req``), the reporting mirror's file when ``central.mirror_path`` names
one (filled yet, its last round), the round locks of the sync and the mirror (one held for
long: a process stopped in its round), this node's rows the sync has not delivered yet (rows
waiting long: a sync failing or not running), each sink's rows not sent yet
(``gateway/doctor_sinks.py``), and asks
the network (the upstream with one HEAD request; PostgreSQL when ``[central]``
names one, whether another gateway syncs there under this ``storage.node``, the central
rows the mirror has not yet, and whether it is another central store than the mirror holds
(its next round then starts it again from nothing); a connection to each sink's destination,
opened and closed with nothing sent), each with a short timeout. Writes nothing. Prints one line per
check — ``ok``, ``warn`` or ``FAIL`` with what to fix — and exits 1 when any
check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import sqlite3
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gateway.channels import channels_warnings
from gateway.config import ConfigError, Settings, load_settings, resolve_path
from gateway.config_checks import is_private_host
from gateway.events import iso
from gateway.forwarding import public_origin
from gateway.notices import secret_warnings
from gateway.options import SourceOptions, parse_listen
from gateway.sources import webhooks_warnings

if TYPE_CHECKING:
    from storage.cursors import Waiting

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True)
class Check:
    status: Status
    what: str
    fix: str = ""

    def line(self) -> str:
        text = f"[{self.status:>4}] {self.what}"
        return f"{text}\n         fix: {self.fix}" if self.fix else text


def _is_secret_problem(problem: str) -> bool:
    key = problem.partition(":")[0]
    return (
        key in ("identity.secret", "admin.token") or ".secrets[" in key or "environment variable" in problem
    )


def _secret_fix(key: str) -> str:
    """What to set for a secret's problem: the 32 characters are the gateway's own secrets' rule
    (until 2026-12-05 said of every one: a sender's secret, which the platform gives, needs 24
    bytes; a sink's write key, a rule's JWT key or ``central.url`` no such length)."""
    if key in ("identity.secret", "admin.token"):
        return "set the variable in the gateway's environment (32+ characters)"
    if ".secrets[" in key:
        return "set the variable in the gateway's environment to the sender's secret as the platform gives it"
    return "set the variable in the gateway's environment"


def _config_fix(path: str, problem: str) -> str:
    """What to do about one config problem, naming the file in use (until 2026-12-05 ``-c FILE``,
    and "correct this key" for a file that could not be read at all)."""
    if _is_secret_problem(problem):
        return _secret_fix(problem.partition(":")[0])
    if not path:  # -c "": no file to check (until 2026-12-07 "gateway check -c  lists…")
        return "name the config file the gateway runs with (-c FILE)"
    if not problem.startswith(f"{path}: "):
        return f"correct this key (gateway check -c {path} lists every problem)"
    if problem.endswith(": cannot read: Permission denied"):
        # The file is there: ``gateway init`` would refuse it, and ``--force`` would replace it.
        return (
            f"let the user who runs this (uid {os.geteuid()}) read {path}, or run it as the gateway's"
            " user (see Operations: gateway doctor)"
        )
    if problem.startswith(f"{path}: a ") and ", not a file; name the config file" in problem:
        # A folder or a device: ``gateway init -c`` would refuse it too.
        return "name the config file the gateway runs with (-c FILE)"
    if ": cannot read: " in problem:
        return (
            f"name the config file the gateway runs with (-c), or write a starter one: gateway init -c {path}"
        )
    return f"correct the file (gateway check -c {path} lists every problem)"


def check_config(path: str) -> tuple[Settings | None, list[Check]]:
    """The config (and its secrets); settings usable by the other checks, if it decodes at all."""
    try:
        # The admin address gets its own check below: here it must not stop the others.
        settings = load_settings(path, admin_public=True, missing_hint="")  # no --dev here: the fix says
        padded = [Check("warn", warning) for warning in secret_warnings(settings)]
        return settings, [
            Check("ok", f"config {path} is valid"),
            *(padded or [Check("ok", "secrets are set")]),
        ]
    except ConfigError as err:
        problems = err.problems
    checks = [Check("FAIL", f"config: {p}", _config_fix(path, p)) for p in problems]
    if all(_is_secret_problem(p) for p in problems):
        checks.insert(0, Check("ok", f"config {path} is valid apart from its secrets"))
    try:
        return load_settings(path, dev=True, admin_public=True), checks  # the rest can still be checked
    except ConfigError:
        return None, checks


def check_store(settings: Settings) -> Check:
    return _check_file(settings.store_path, "store", "storage.path")


def store_failure(settings: Settings, err: BaseException) -> str:
    """Why ``gateway run`` (or the mitmproxy host) cannot open the store, as ``gateway doctor``
    says it when it can tell (a folder, a file in the way, a folder it may not write), else
    SQLite's own words."""
    found = check_store(settings)
    if found.status == "FAIL":
        return (
            f"gateway: cannot open the store (storage.path): {found.what.removeprefix('store ')}; {found.fix}"
        )
    return f"gateway: cannot open the store (storage.path): {settings.store_path}: {err}"


def _own_names() -> tuple[str, str]:
    """This process's user and group by name (their numbers where unnamed), for a command to
    give root: the doctor checks with the rights of the user it runs as."""
    import grp
    import pwd

    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    try:
        group = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        group = str(os.getegid())
    return user, group


def _check_file(path: Path, what: str, key: str) -> Check:
    """A local store file (the node's own ``store``, or the reporting ``mirror``): there or
    creatable, writable, and of a schema this gateway reads; ``key`` names the setting to fix."""
    from storage.access import full_disk, not_writable, read_only_mount, unreadable, unwritable
    from storage.local import read_only
    from storage.migrate import migrations

    newest = migrations()[-1][0]
    if path.is_dir():
        return Check(
            "FAIL", f"{what} {path} is a folder", f"point {key} at a file, like {path / 'gateway.db'}"
        )
    full = full_disk(path)
    if full is not None:  # before opening it: SQLite then says "disk I/O error", "not a database"
        return Check(
            "FAIL",
            f"{what} {path}: its disk is full ({full}); nothing can be recorded there (a running"
            " gateway serves the site and counts the loss)",
            f"free space on {full.rpartition(' on ')[2]}: the store needs at least 1 MiB, and grows with"
            " the events (see privacy.retention_days)",
        )
    if not path.exists():
        folder = next((p for p in path.parents if p.exists()), Path("/"))
        if not folder.is_dir():
            return Check(
                "FAIL", f"{what} {path}: cannot create it, {folder} is a file", f"point {key} elsewhere"
            )
        if os.access(folder, os.W_OK | os.X_OK):
            return Check("ok", f"{what} {path} will be created (folder writable)")
        if read_only_mount(folder) is not None:  # no user may write there: no chown makes it
            why, fix = not_writable(folder, "")
            return Check("FAIL", f"{what} {path}: cannot create it, {why}", fix)
        if folder != path.parent:  # the store's own folder to make, not the one above to hand over
            user, group = _own_names()
            return Check(
                "FAIL",
                f"{what} {path}: cannot create it, its folder {path.parent} is not there and {folder}"
                " is not writable",
                f"make {path.parent} for the user the gateway runs as (as root: install -d -o {user}"
                f" -g {group} {path.parent}), or point {key} elsewhere",
            )
        return Check(
            "FAIL",
            f"{what} {path}: cannot create it, {folder} is not writable",
            f"let the user the gateway runs as write to {folder} (chown it), or point {key} elsewhere",
        )
    blocked, lacks = unreadable(path), "readable"
    if blocked is None:  # each of them: SQLite opens a store whose -wal or -shm it may not write read-only
        blocked, lacks = unwritable(path), "writable"
    if blocked is not None:
        why, fix = (
            f"{blocked} is not {lacks} to uid {os.geteuid()}",
            (
                f"let the user the gateway runs as write to {path}, to its -wal and -shm files and to"
                f" {path.parent} (SQLite writes its -wal and -shm files beside it)"
            ),
        )
        if lacks == "writable":
            why, fix = not_writable(blocked, fix)
        return Check("FAIL", f"{what} {path} is not {lacks}: {why}", fix)
    try:
        with contextlib.closing(read_only(path)) as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as err:
        return Check("FAIL", f"{what} {path} is not a SQLite database: {err}", f"point {key} elsewhere")
    if version > newest:
        return Check(
            "FAIL",
            f"{what} {path} has schema {version}, newer than this gateway ({newest}): a newer gateway"
            " migrated it, and migrations are not undone",
            f"run that version (or a newer one), or restore the {what}'s backup from before that upgrade"
            " to run this one",
        )
    if version < newest:
        return Check("ok", f"{what} {path} writable, schema {version} (migrated to {newest} at start)")
    return Check("ok", f"{what} {path} writable, schema {version} (current)")


def check_geo(settings: Settings) -> list[Check]:
    if not any((settings.options.geo.country_db, settings.options.geo.asn_db)):
        return [Check("warn", "geo: no databases configured, country/ASN lookups are off")]
    return geo_files(settings)


def geo_files(settings: Settings) -> list[Check]:
    """Each GeoIP file named: readable (ok), or missing or unreadable (a warning: `gateway check`
    says these too)."""
    geo = settings.options.geo
    named = [(k, v) for k, v in (("geo.country_db", geo.country_db), ("geo.asn_db", geo.asn_db)) if v]
    checks = []
    for key, name in named:
        path = resolve_path(settings.base_dir, name)
        # A warning, as `gateway check` and the start say it: the gateway runs, geo lookups off
        # (the container's config names both files, to be downloaded when wanted).
        if not path.exists():
            checks.append(
                Check(
                    "warn",
                    f"{key}: {path} does not exist: geo lookups will be off",
                    "download it or clear the key",
                )
            )
        elif not os.access(path, os.R_OK):
            checks.append(
                Check(
                    "warn", f"{key}: {path} is not readable: geo lookups will be off", "fix the permissions"
                )
            )
        else:
            checks.append(Check("ok", f"{key}: {path} readable"))  # its contents: the config check
    return checks


def _scheme(source: SourceOptions) -> str:
    """What a sender's deliveries must carry, as its platform's documentation names it."""
    if source.format == "segment":
        return "HTTP Basic, the write key as user name"
    if (stamped := source.stamped_scheme()) is not None:
        t, joined = stamped.time_field, stamped.joiner.decode()
        return f"{stamped.header}: {t}=…{stamped.separator}{stamped.hash_field}=<hex HMAC of {t}{joined}body>"
    if (signed := source.signed_body()) is not None:
        return f"{signed.header}: {signed.prefix}<{signed.encoding} HMAC of the body>"
    if source.signature == "basic":
        return "HTTP Basic, its login"
    return "Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature"


def _conditions(source: SourceOptions) -> list[str]:
    """``sources.when`` in a line: each type and what its events need to be recorded."""
    needs: dict[str, list[str]] = {}
    for cond in source.when:
        if cond.absent:
            need = f"no {cond.pointer}"
        elif cond.equals is not None:
            need = f"{cond.pointer} = {cond.equals!r}"
        elif cond.matches is not None:
            need = f"{cond.pointer} matching {cond.matches!r}"
        else:
            need = f"{cond.pointer} present"
        needs.setdefault(cond.type, []).append(need)
    return [f"{kind} only with {' and '.join(each)}" for kind, each in needs.items()]


def check_senders(settings: Settings) -> list[Check]:
    """One line per ``[[sources]]`` entry: where it posts and what it must sign with, to wire the
    platform against; a warning for a platform sender whose events have no key of their own,
    and for what ``[webhooks]`` allows but does not do (``sources.webhooks_warnings``)."""
    opts = settings.options
    origin = public_origin(opts.proxy.public_origin)  # as the hosts use it: the scheme lower-cased
    checks = []
    for i, source in enumerate(opts.sources):
        path = f"{opts.proxy.reserved_prefix}{'segment' if source.format == 'segment' else 'events'}"
        n = len(source.secrets)
        what = f"sender {source.name}: POST {origin}{path}, {_scheme(source)} ({n} secret{'s' * (n != 1)})"
        if source.when:
            what += "; records " + "; ".join(_conditions(source))
        if source.platform_layout and not source.fields.get("event_id"):
            checks.append(
                Check(
                    "warn",
                    f"{what}; sources[{i}].fields.event_id is not mapped",
                    "map the platform's own event ID (Stripe's /id, Paddle's /event_id): without it a"
                    " re-sent event is known only by its body or delivery ID, and recorded again when"
                    " either changed",
                )
            )
        else:
            checks.append(Check("ok", what))
    checks += [Check("warn", warning) for warning in webhooks_warnings(opts.webhooks)]
    return checks


def check_admin(settings: Settings) -> Check:
    listen = settings.options.admin.listen
    host, _ = parse_listen(listen)
    if is_private_host(host):  # what the config check accepts without admin.allow_public
        return Check("ok", f"admin listener {listen} is private")
    if settings.options.admin.allow_public:  # said to be meant (a container's own network)
        return Check(
            "warn",
            f"admin listener {listen} is reachable from outside this host or container "
            "(admin.allow_public = true)",
            "make sure only a private network reaches it (a container: publish it on 127.0.0.1 only)",
        )
    return Check(
        "FAIL",
        f"admin listener {listen} is reachable from outside",
        "bind admin.listen to 127.0.0.1 or a private address; put a TLS proxy with access control in front",
    )


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def check_workers(settings: Settings) -> list[Check]:
    """With several workers on one ``SO_REUSEPORT`` port each has its own queue of connections
    not accepted yet; when one stops (a crash, killed for hanging) Linux resets those unless
    ``net.ipv4.tcp_migrate_req`` hands them to a sibling (Linux 5.14 on)."""
    from gateway.supervisor import worker_count

    count = worker_count(settings.options.proxy.workers)
    if count < 2 or not sys.platform.startswith("linux"):
        return []
    what = f"proxy.workers: {count} workers share the public port"
    fix = (
        "sysctl -w net.ipv4.tcp_migrate_req=1, and keep it in /etc/sysctl.d/ "
        "(a container: --sysctl net.ipv4.tcp_migrate_req=1)"
    )
    try:
        value = MIGRATE_REQ.read_text().strip()
    except FileNotFoundError:
        return [
            Check(
                "warn",
                f"{what}; this kernel ({os.uname().release}) cannot hand a stopped worker's waiting "
                "connections to another (net.ipv4.tcp_migrate_req came in Linux 5.14): a worker that "
                "crashes or is killed for hanging resets them",
                "upgrade the kernel, or run proxy.workers = 1 behind a load balancer that retries",
            )
        ]
    except OSError as err:
        return [Check("warn", f"{what}; cannot read {MIGRATE_REQ}: {err.strerror}", fix)]
    if value != "0":
        return [
            Check("ok", f"{what}; a stopped worker's waiting connections go to another (tcp_migrate_req)")
        ]
    return [
        Check(
            "warn",
            f"{what}; a worker that crashes or is killed for hanging resets the visitors' connections "
            "waiting for it (net.ipv4.tcp_migrate_req = 0)",
            fix,
        )
    ]


async def check_upstream(settings: Settings, timeout: float) -> Check:
    import aiohttp

    from gateway.networds import unreachable

    upstream = settings.options.proxy.upstream
    if not upstream:
        return Check(
            "warn",
            "proxy.upstream is empty: the built-in demo origin is served",
            'set proxy.upstream to your site, an origin like "http://127.0.0.1:8000"',
        )
    connected = False

    async def on_connected(*_: object) -> None:
        nonlocal connected
        connected = True

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connected)
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False, trace_configs=[trace]
            ) as session,
            session.head(upstream + "/", allow_redirects=False) as resp,
        ):
            status = resp.status
    except TimeoutError:
        if connected:  # the site is there: "unreachable" and "start the site" sent the operator astray
            return Check(
                "FAIL",
                f"upstream {upstream} took the connection but did not answer HEAD / "
                f"within {timeout:g} s (--timeout)",
                "the site runs but is stuck or too slow: look at its log and load, "
                "or give it longer with --timeout",
            )
        return Check(
            "FAIL",
            f"upstream {upstream} unreachable: no connection within {timeout:g} s "
            "(a host that is down, or a firewall dropping packets)",
            "start the site or correct proxy.upstream",
        )
    except aiohttp.ClientConnectorCertificateError as err:
        cert = err.certificate_error
        why = getattr(cert, "verify_message", "") or getattr(cert, "reason", "") or str(cert)
        return Check(
            "FAIL",
            f"upstream {upstream}: the TLS certificate of {err.host}:{err.port} is not trusted: {why}",
            "give the site a certificate a public CA signed, or point SSL_CERT_FILE in the "
            "gateway's environment at the CA that signed it",
        )
    except aiohttp.ClientConnectorSSLError as err:
        if getattr(err.os_error, "reason", None) == "WRONG_VERSION_NUMBER":
            return Check(
                "FAIL",
                f"upstream {upstream}: {err.host}:{err.port} does not answer in TLS",
                "it likely speaks plain HTTP there: write proxy.upstream with http://, or name its TLS port",
            )
        return Check(
            "FAIL",
            f"upstream {upstream}: TLS with {err.host}:{err.port} failed: "
            f"{getattr(err.os_error, 'reason', None) or err.os_error}",
            "check the site's TLS setup, or correct proxy.upstream",
        )
    except (aiohttp.ClientError, OSError) as err:
        return Check(
            "FAIL",
            f"upstream {upstream} unreachable: {unreachable(err)}",
            "start the site or correct proxy.upstream",
        )
    return Check("ok", f"upstream {upstream} answers (HEAD / -> {status})")


async def check_central(settings: Settings, timeout: float) -> Check | None:
    """PostgreSQL, when the config has a ``[central]`` table naming one."""
    central: Any = getattr(settings.options, "central", None)
    url = getattr(central, "url", "") if central is not None else ""
    if not url:
        return None
    dsn = _dsn(settings)
    if not dsn:
        return Check("FAIL", f"central.url: {url} is not set", "set the variable to a postgresql:// DSN")
    try:
        import asyncpg
    except ImportError:
        return Check("FAIL", "central: asyncpg is not installed", "pip install 'tracking-gateway[postgres]'")
    try:
        conn = await _connect(dsn, timeout)
        try:
            await conn.fetchval("SELECT 1")
            key = f"central.url ({url[4:]})" if url.startswith("env:") else "central.url"
            if await conn.fetchval("SELECT current_schema()") is None:
                return await _no_schema(conn, key)
            kinds, current, newest = await _central_versions(conn)
            schema = _central_schema(kinds, current, newest)
            shared = None
            if schema.status != "FAIL":
                migrating_to = newest if 0 <= current < newest else None
                schema = await _central_rights(conn, key, migrating_to) or schema
            if schema.status != "FAIL":  # a role refused its tables is refused these reads too
                shared = await _node_shared(settings, conn) or await _other_secrets(settings, conn)
        finally:
            await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError) as err:
        from storage.central import SilentPeer, UnknownHost, explain  # asyncpg is there: imported above

        key = f"central.url ({url[4:]})" if url.startswith("env:") else "central.url"
        # A password, database or right refused is the server's answer, not a server away.
        if isinstance(err, asyncpg.PostgresError):
            return Check("FAIL", f"central PostgreSQL refused: {explain(err, key)}", refused_fix(err, key))
        # Most often the server is down, not the URL wrong: say both.
        fix = "start PostgreSQL there, or correct the host and port in central.url"
        if isinstance(err, SilentPeer):  # something is there: not started, but not answering
            fix = (
                "check that PostgreSQL runs there and answers (its log; psql), or correct the host"
                " and port in central.url; a slow network: give it longer with --timeout"
            )
        elif isinstance(err, UnknownHost):  # no server to start: a name this machine cannot look up
            fix = "correct the host in central.url, or have this machine's DNS (/etc/resolv.conf) resolve it"
        return Check("FAIL", f"central PostgreSQL unreachable: {explain(err, key)}", fix)
    except (ValueError, OverflowError, asyncpg.InterfaceError) as err:  # a DSN asyncpg cannot read
        return Check(
            "FAIL",
            f"central.url: not a PostgreSQL DSN asyncpg can read ({type(err).__name__})",
            "postgresql://user:password@host:5432/database",
        )
    if schema.status == "FAIL" or shared is None:
        return schema
    return shared


async def _no_schema(conn: Any, key: str) -> Check:
    """A ``?search_path=`` whose schemas PostgreSQL skips: none exists (a typo, ``CREATE
    SCHEMA`` not run), or the user lacks USAGE on it (PostgreSQL skips those too). Every table
    the sync would make or read has nowhere to be."""
    search_path = str(await conn.fetchval("SHOW search_path"))
    names = [n.strip() for n in search_path.split(",") if n.strip() and n.strip() != '"$user"']
    existing = await conn.fetch(
        "SELECT quote_ident(nspname) AS name FROM pg_namespace WHERE nspname = ANY($1::text[])"
        " ORDER BY array_position($1::text[], nspname::text)",
        [n.strip('"') for n in names],
    )
    if existing:
        name = existing[0]["name"]
        user = await conn.fetchval("SELECT quote_ident(current_user)")
        return Check(
            "FAIL",
            f"central PostgreSQL reachable, but the user in {key} may not use the schema {name}"
            f" of its search_path ({search_path}); every sync round fails",
            f"GRANT USAGE ON SCHEMA {name} TO {user}",
        )
    return Check(
        "FAIL",
        f"central PostgreSQL reachable, but no schema of the search_path in {key} exists"
        f" ({search_path}); every sync round fails",
        f"CREATE SCHEMA {names[0] if names else '<name>'} (as the role that owns the tables),"
        " or correct ?search_path= in central.url",
    )


def refused_fix(err: Exception, key: str) -> str:
    """What fixes the central store's refusal ``err`` of the DSN in ``key`` (``central.url
    (NAME)``): a user or database to create or correct, a password to correct or set; else to
    check the URL."""
    import asyncpg

    text = str(err)
    named = re.search(r'(?:user|role|database) "(.*)"', text)  # to its last quote
    name = _identifier(named.group(1)) if named else "<name>"
    if isinstance(err, asyncpg.InvalidPasswordError):
        return (
            f"correct the user name or password in {key}, or set that user's password on the"
            f" server (ALTER ROLE {name} PASSWORD '…')"
        )
    if isinstance(err, asyncpg.InvalidCatalogNameError):
        return (
            f"create the database on the server (CREATE DATABASE {name} OWNER <user>), or correct"
            f" its name in {key}"
        )
    if isinstance(err, asyncpg.InvalidAuthorizationSpecificationError) and text.startswith("role "):
        return (
            f"create the user on the server (CREATE ROLE {name} LOGIN PASSWORD '…'), or correct the"
            f" user name in {key}"
        )
    return "check central.url"


def _identifier(name: str) -> str:
    """``name`` as SQL writes it: bare when it is a plain lower-case one, else double-quoted."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


async def _central_versions(conn: Any) -> tuple[dict[str, str], int, int]:
    """The central ``schema_version`` table's columns (none: no tables yet), the version it is
    at (0 without it) and this gateway's newest PostgreSQL migration."""
    from storage.central import central_columns
    from storage.migrate import migrations

    available = await asyncio.to_thread(migrations, "pg_migrations")
    newest = available[-1][0] if available else 0
    kinds = await central_columns(conn, "schema_version")
    current = 0
    if kinds.get("version") == "integer":
        if not await conn.fetchval("SELECT has_table_privilege('schema_version', 'SELECT')"):
            return kinds, -1, newest  # not readable by this role: the rights check says so
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    return kinds, current, newest


def _central_schema(kinds: dict[str, str], current: int, newest: int) -> Check:
    """The central store's schema version against this gateway's newest PostgreSQL migration, as
    the local store's is checked: a store another, newer gateway migrated stops this one's sync
    every round (``SchemaTooNew``), which the gateway only logs while it serves on; and a
    ``schema_version`` table of another application's stops it too (``ForeignSchema``)."""
    if not kinds:
        return Check("ok", f"central PostgreSQL reachable, no tables yet (made at start, schema {newest})")
    if kinds.get("version") != "integer" or "name" not in kinds:
        return Check(
            "FAIL",
            "central PostgreSQL reachable, but its schema_version table is not the gateway's"
            " (another application's migrations?)",
            "give the gateway a database of its own, or a schema of its own (CREATE SCHEMA gateway,"
            " and ?search_path=gateway at the end of central.url)",
        )
    if current < 0:
        return Check("ok", "central PostgreSQL reachable, its schema version not readable by this role")
    if current > newest:
        return Check(
            "FAIL",
            f"central PostgreSQL has schema {current}, newer than this gateway ({newest}):"
            " a newer gateway migrated it, and this one's sync stops every round",
            "upgrade this gateway; its events wait in its store meanwhile",
        )
    if current < newest:
        return Check("ok", f"central PostgreSQL reachable, schema {current} (migrated to {newest} at start)")
    return Check("ok", f"central PostgreSQL reachable, schema {current} (current)")


SYNC_RIGHTS = ("SELECT", "INSERT", "UPDATE", "DELETE")
"""What a node's sync does to each central table (a binding's erasure deletes, a daily count or
a node's check-in is an upsert)."""


READ_TABLES = ("schema_version", "central_identity")
"""What every sync round reads and never writes: the version it is at, the store's identity (to
tell a database made anew from the one the node's cursors belong to)."""


async def _central_rights(conn: Any, key: str, migrating_to: int | None) -> Check | None:
    """A FAIL when the user in ``central.url`` lacks a right every sync round needs: the four
    ``SYNC_RIGHTS`` on each central table there is, SELECT on the ``READ_TABLES``, TEMPORARY on
    the database (the staging tables), and, while tables are missing or a migration is due,
    CREATE on the schema; a warning when only ``central_identity`` is unread (the sync goes on
    without its check). None when it has them all. Every round of such a sync fails
    (``permission denied``) while the gateway serves on, which the checklist called reachable
    and passed until 2026-12-05."""
    from storage.sync import COUNTS, SYNC_TABLES

    tables = [*SYNC_TABLES, COUNTS, "erased_keys", "node_instances"]
    rows = await conn.fetch(
        "SELECT t, array_agg(r ORDER BY n) AS missing FROM unnest($1::text[]) AS t,"
        " unnest($2::text[]) WITH ORDINALITY AS p(r, n)"
        " WHERE to_regclass(quote_ident(t)) IS NOT NULL"
        " AND NOT has_table_privilege(to_regclass(quote_ident(t)), r)"
        " GROUP BY t",
        tables,
        list(SYNC_RIGHTS),
    )
    lacking: dict[tuple[str, ...], list[str]] = {}
    for row in sorted(rows, key=lambda r: tables.index(r["t"])):
        lacking.setdefault(tuple(row["missing"]), []).append(row["t"])
    said = [f"{', '.join(rights)} on {', '.join(names)}" for rights, names in lacking.items()]
    fixes = []
    # Quoted where SQL needs it (a role named gw-node): the GRANTs below are to be run as written.
    user, database, schema = await conn.fetchrow(
        "SELECT quote_ident(current_user), quote_ident(current_database()), quote_ident(current_schema())"
    )
    unread = [
        table
        for table in READ_TABLES
        if not await conn.fetchval(
            "SELECT to_regclass($1) IS NULL OR has_table_privilege(to_regclass($1), 'SELECT')", table
        )
    ]
    if unread:
        said.insert(0, f"SELECT on {', '.join(unread)}")
        if not lacking:
            fixes.append(f"GRANT SELECT ON {', '.join(unread)} TO {user}")
    if lacking:
        fixes.append(f"GRANT {', '.join(SYNC_RIGHTS)} ON ALL TABLES IN SCHEMA {schema} TO {user}")
    if not await conn.fetchval("SELECT has_database_privilege(current_database(), 'TEMPORARY')"):
        said.append("TEMPORARY on the database (the sync's staging tables)")
        fixes.append(f"GRANT TEMPORARY ON DATABASE {database} TO {user}")
    creates = await conn.fetchval("SELECT has_schema_privilege(current_schema(), 'CREATE')")
    if migrating_to is not None and not creates:
        said.append(f"CREATE on the schema {schema} (to make or migrate the tables to {migrating_to})")
        fixes.append(
            f"run the gateway once as the tables' owner, or GRANT CREATE ON SCHEMA {schema} TO {user}"
        )
    if said == ["SELECT on central_identity"]:
        # The sync goes on without it (``Sync.check_central``): only a refill is not noticed.
        return Check(
            "warn",
            f"central PostgreSQL reachable, but the user in {key} may not read central_identity on"
            f" {database}: the sync goes on, but a central store dropped and made again is not told"
            " apart, nor refilled",
            fixes[0],
        )
    if not said:
        return None
    return Check(
        "FAIL",
        f"central PostgreSQL reachable, but the user in {key} lacks rights the sync needs on"
        f" {database}: {'; '.join(said)}; every sync round fails",
        "; ".join(fixes),
    )


def _instance(path: Path) -> str | None:
    """The store's instance identity (``storage.local.store_instance``), read only; None when
    the store or its identity is not there yet."""
    from storage.local import read_only

    if not path.is_file():
        return None
    try:
        with contextlib.closing(read_only(path)) as db:
            row = db.execute("SELECT value FROM store_identity WHERE name = 'instance'").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


async def _node_shared(settings: Settings, conn: Any) -> Check | None:
    """A warning when another store instance synced under this ``storage.node`` within the
    hour (as the sync logs it); None when none did, or nothing tells yet."""
    from storage.central import SHARED_NODE_SECONDS

    node, path = getattr(settings, "node", None), getattr(settings, "store_path", None)
    if node is None or path is None or not await conn.fetchval("SELECT to_regclass('node_instances')"):
        return None
    instance = await asyncio.to_thread(_instance, path)
    row = await conn.fetchrow(
        "SELECT instance, last_synced FROM node_instances WHERE node = $1 AND instance <> $2"
        " AND last_synced > now() - make_interval(secs => $3) ORDER BY last_synced DESC LIMIT 1",
        node,
        instance or "",
        float(SHARED_NODE_SECONDS),
    )
    if row is None:
        return None
    return Check(
        "warn",
        f"central PostgreSQL reachable, but another gateway synced under storage.node {node!r}"
        f" within the hour (store instance {row['instance'][:8]}, last at {iso(row['last_synced'])})",
        "give each gateway its own storage.node; if this store replaced a lost one, this clears"
        " an hour after the old one's last sync",
    )


async def _other_secrets(settings: Settings, conn: Any) -> Check | None:
    """A warning when another node synced within the hour under another ``identity.secret``
    (as the sync logs it); None when none did, or nothing tells yet."""
    from gateway.keys import key_check
    from storage.central import other_secrets

    secret = getattr(settings, "secret", None)
    known = await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns"
        " WHERE table_name = 'node_instances' AND column_name = 'key_check'"
        " AND table_schema = ANY (current_schemas(false))"
    )
    if not secret or not known:
        return None
    others = await other_secrets(conn, key_check(secret))
    if not others:
        return None
    names = ", ".join(repr(node) for node, _ in others[:5]) + (" …" if len(others) > 5 else "")
    return Check(
        "warn",
        f"central PostgreSQL reachable, but {len(others)} node(s) synced within the hour under"
        f" another identity.secret than this one: {names} (last at {iso(others[0][1])})",
        "give every gateway in front of one site the same identity.secret: each refuses the"
        " others' visitor cookies and keys a user apart, so an erasure through one misses the"
        " others' rows",
    )


def _refill(config: str) -> str:
    return f"stop the gateway, delete the file and run `gateway mirror --once -c {config}` to make it again"


async def check_mirror(
    settings: Settings, timeout: float, *, reachable: bool = True, config: str = "gateway.toml"
) -> list[Check]:
    """The reporting mirror, when ``central.mirror_path`` names one: its file (as the store's),
    whether a round ever filled it, when it last completed one (``mirror_horizons.updated``:
    the earliest table's), and, when PostgreSQL answers, the central rows not mirrored yet (as
    the mirror's lag metric counts them; not when ``reachable`` is false: the central check
    failed) — or, when it is another central store than the mirror holds (another identity,
    or its horizon below the mirror's), a warning that the next round starts the mirror again
    from nothing (the rows counted against another store's horizons would say nothing). Opens
    nothing for writing: a file not there stays so, a store found another is not recorded."""
    path: Path | None = getattr(settings, "mirror_path", None)
    if path is None:
        return []
    file = await asyncio.to_thread(_check_file, path, "mirror", "central.mirror_path")
    if file.status == "FAIL":
        return [file]
    try:
        from storage.central import url_key  # asyncpg: the postgres extra
        from storage.mirror import read_horizons
    except ImportError:
        return [file]  # check_central says to install it
    try:
        horizons = await asyncio.to_thread(read_horizons, path)
    except sqlite3.Error as err:
        return [file, Check("FAIL", f"mirror {path} cannot be read: {err}", _refill(config))]
    if not horizons:
        return [
            file,
            Check(
                "warn",
                f"mirror {path} was never filled: the reports read it, and show no node's rows until"
                " a mirror round completes",
                f"run `gateway mirror --once -c {config}` (or start the gateway)",
            ),
        ]
    last = min(updated for _, updated in horizons.values())
    marks = {table: h for table, (h, _) in horizons.items()}
    found = await _central_view(settings, timeout, marks) if reachable else None
    key = url_key(str(getattr(getattr(settings.options, "central", None), "url", "")))
    if found is not None and (restart := await _restart(path, found, max(marks.values()), key)):
        return [file, _restarting(path, last, restart, key, config)]
    lag = None if found is None else found.lag
    if lag is None:
        return [
            file,
            Check(
                "ok",
                f"mirror {path} last completed a round at {last}"
                " (rows not mirrored yet: unknown, the central PostgreSQL check failed)",
            ),
        ]
    waiting = ", ".join(f"{table} {rows}" for table, rows in lag.items() if rows)
    return [
        file,
        Check(
            "ok",
            f"mirror {path} last completed a round at {last};"
            f" {sum(lag.values())} central rows not mirrored yet" + (f" ({waiting})" if waiting else ""),
        ),
    ]


@dataclass(frozen=True)
class _Central:
    """What the mirror's check reads of the central store, on one connection."""

    lag: dict[str, int]
    """Central rows not in the mirror yet, per table (``storage.mirror.unmirrored``)."""
    identity: str | None
    """Its ``central_identity``; None when there is none or the role may not read it (then
    ``check_central`` warns, giving the GRANT)."""
    horizon: int
    """``pg_snapshot_xmin`` of now (``storage.mirror_identity.central_state``)."""


async def _connect(dsn: str, timeout: float) -> Any:
    """asyncpg's connection to ``dsn``, its failures in the sync's words (``storage.central.said_so``):
    a peer that is not PostgreSQL as such, not as a TLS refusal or a server's refusal; a host
    not resolved, a Unix socket nothing listens at, named."""
    import asyncpg

    from storage.central import said_so

    # In the sync's words: a start-up not answered, a host not resolved, a socket not there.
    return await said_so(asyncpg.connect(dsn, timeout=timeout), dsn, timeout, "--timeout")


async def _central_view(settings: Settings, timeout: float, horizons: dict[str, int]) -> _Central | None:
    """The central rows not in the mirror yet per table, the store's identity and horizon; None
    when PostgreSQL does not answer (``check_central`` says why)."""
    import asyncpg

    from storage.central_identity import central_identity
    from storage.mirror import unmirrored
    from storage.mirror_identity import central_state

    dsn = _dsn(settings)
    if not dsn:
        return None
    try:
        conn = await _connect(dsn, timeout)
        try:
            try:
                identity = await central_identity(conn)
            except asyncpg.InsufficientPrivilegeError:
                identity = None  # the round then goes by the horizon alone, as here
            horizon, _ = await central_state(conn)
            return _Central(await unmirrored(conn, horizons), identity, horizon)
        finally:
            await conn.close()
    except (OSError, TimeoutError, ValueError, OverflowError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None


async def _restart(path: Path, found: _Central, ahead: int, key: str) -> str | None:
    """Why the mirror's next round starts it again from nothing (another central store than
    the one it records, or the store's horizon below the mirror's ``ahead``), as that round
    will log it (``storage.mirror_identity.restart_reason``, ``key`` naming the URL); None when
    it will not. Reads the file only: the round records the identity, not the doctor."""
    from storage.mirror_identity import read_recorded, restart_reason

    try:
        was = await asyncio.to_thread(read_recorded, path)
    except sqlite3.Error:
        was = None  # the horizons were read: only the identity's table is amiss
    return restart_reason(found.identity, was, found.horizon, ahead, key)


def _restarting(path: Path, last: str, why: str, key: str, config: str) -> Check:
    """The warning for a mirror whose next round starts it again (``why``): what that round
    does, and that only a wrong ``key`` (``central.url``) is to be fixed before it."""
    return Check(
        "warn",
        f"mirror {path} (last completed a round at {last}): {why}: its next round starts it again"
        " from nothing — every mirrored row deleted, and this store read whole, erasures first;"
        " the reports show only what is mirrored until then",
        f"nothing to do if {key} names the central store the reports are to read now; if not,"
        f" correct it before the mirror's next round (the gateway's, or"
        f" `gateway mirror --once -c {config}`)",
    )


def _dsn(settings: Settings) -> str:
    """``central.url``'s DSN, read from the environment for ``env:NAME``; "" when none."""
    central: Any = getattr(settings.options, "central", None)
    url = getattr(central, "url", "") if central is not None else ""
    return os.environ.get(url[4:], "") if url.startswith("env:") else str(url)


async def _network(settings: Settings, timeout: float, config: str) -> list[Check]:
    from gateway.doctor_sinks import check_sinks

    central = await check_central(settings, timeout)
    reachable = central is not None and central.status != "FAIL"
    mirror = await check_mirror(settings, timeout, reachable=reachable, config=config)
    sinks = await check_sinks(settings, timeout)
    return [await check_upstream(settings, timeout), *([central] if central else []), *mirror, *sinks]


MAX_TIMEOUT = 600.0


def timeout_arg(text: str) -> float:
    """``--timeout``: seconds per network check, more than 0 and at most ``MAX_TIMEOUT``."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT:  # nan, inf and negatives fail this too
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds more than 0 and at most {MAX_TIMEOUT:g}, got {text!r}"
        )
    return seconds


LONG_ROUND_INTERVALS = 3
"""A round lock held longer than this many ``central.interval_seconds`` (and a minute) is
warned about: a process stopped in its round (Ctrl-Z) holds every round of the gateway back."""


def check_round_locks(settings: Settings) -> list[Check]:
    """A warning for each round lock (``storage.roundlock``) of the central sync (with
    ``central.url``) and the mirror (with ``central.mirror_path``) held for long, naming its
    holder; nothing for a lock free, or held by a round running for less."""
    from storage.roundlock import held, lock_path

    central: Any = getattr(settings.options, "central", None)
    if central is None or not getattr(central, "url", ""):
        return []
    long = max(60.0, LONG_ROUND_INTERVALS * float(central.interval_seconds))
    mirror: Path | None = getattr(settings, "mirror_path", None)
    checks = []
    for target, kind in ((settings.store_path, "sync"), *([(mirror, "mirror")] if mirror else [])):
        found = held(target, kind)
        if found is None or found[1] < long:
            continue
        holder, seconds = found
        checks.append(
            Check(
                "warn",
                f"{kind} round lock {lock_path(target, kind)} held for {seconds:.0f} s by {holder}:"
                f" no other {kind} round runs meanwhile",
                f"a long round (a first fill) only takes time; a process stopped in it (Ctrl-Z,"
                f" kill -STOP) holds it until it goes on (fg, kill -CONT {holder.pid}) or ends"
                f" (kill {holder.pid})",
            )
        )
    return checks


LATE_SECONDS = 300.0
"""Rows waiting longer than this (or ``LATE_INTERVALS`` sync intervals, or two of the longest
retry delays, when longer) are warned about: the sync has not delivered them for that long."""
LATE_INTERVALS = 10


def _took(seconds: float) -> str:
    """A span as an operator reads it: ``45 s``, ``12 min``, ``26 h``, ``3 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def check_unsynced(settings: Settings, config: str = "gateway.toml") -> list[Check]:
    """With ``central.url``: this node's rows the central sync has not delivered yet, per table
    (``storage.cursors.waiting_rows``: seeks, not a scan of the tables) and the oldest's age. A
    warning when a table's rows have waited longer than ``LATE_SECONDS`` (or ``LATE_INTERVALS``
    times ``central.interval_seconds``, or twice ``central.backoff_max_seconds``): rows waited as long
    as both the oldest's time and the cursor's last move say, so a backfill of old rows being
    delivered is not taken for a sync that stopped. Nothing when the store is not there yet."""
    central: Any = getattr(settings.options, "central", None)
    if central is None or not getattr(central, "url", ""):
        return []
    try:
        from storage.sync import READER, SYNC_TABLES  # asyncpg: the postgres extra
    except ImportError:
        return []  # check_central says to install it
    from storage.cursors import waiting_rows

    try:
        waiting = waiting_rows(settings.store_path, READER, SYNC_TABLES)
    except (sqlite3.Error, ValueError):  # check_store says what is wrong with the file
        return []
    if waiting is None:
        return []
    if not waiting:
        return [Check("ok", "central sync: none of this node's rows wait to be delivered")]
    limit = max(
        LATE_SECONDS,
        LATE_INTERVALS * float(central.interval_seconds),
        2 * float(central.backoff_max_seconds),
    )
    fix = (
        f"see why in the gateway's log (`central sync failed`, `still failing`), or run"
        f" `gateway sync --once -c {config}`, which says it; the rows are kept until delivered"
    )
    return [late_rows(waiting, limit, "central sync", " of this node", "delivered", "the sync", fix)]


def late_rows(
    waiting: Mapping[str, Waiting], limit: float, reader: str, of: str, verb: str, who: str, fix: str
) -> Check:
    """``reader``'s rows waiting (``storage.cursors.waiting_rows``: none empty), in all and per
    table: ok, for how long at most, or a warning with ``fix`` when a table's have waited longer
    than ``limit`` seconds: ``who`` is failing or not running. Rows waited as long as both the
    oldest's time and the cursor's last move say (the rows waiting came after it moved: a
    backfill's old times say nothing of the wait). The central sync's (``check_unsynced``) and
    each sink's (``gateway.doctor_sinks``)."""
    now = datetime.now(UTC)
    waited = {
        table: max((now - max(w.oldest, w.moved or w.oldest)).total_seconds(), 0.0)
        for table, w in waiting.items()
    }
    total = sum(w.rows for w in waiting.values())
    about = "" if all(w.exact for w in waiting.values()) else "about "
    each = ", ".join(f"{table} {w.rows:,}" for table, w in waiting.items())
    what = f"{reader}: {about}{total:,} rows{of} wait to be {verb} ({each})"
    longest = max(waited, key=waited.__getitem__)
    took = _took(waited[longest])
    if waited[longest] <= limit:
        return Check("ok", f"{what}, for {took} at most")
    late = waiting[longest]
    last = f"last {verb} at {iso(late.moved)}" if late.moved else f"none ever {verb}"
    return Check(
        "warn",
        f"{what}; {longest} rows have waited {took} (the oldest recorded at {iso(late.oldest)},"
        f" {last}), over {_took(limit)}: {who} is failing or not running",
        fix,
    )


def run_checks(path: str, timeout: float = 3.0) -> list[Check]:
    settings, checks = check_config(path)
    if settings is None:
        return checks
    checks += [check_store(settings), *check_geo(settings), *check_senders(settings), check_admin(settings)]
    checks += [Check("warn", warning) for warning in channels_warnings(settings.options)]
    checks += check_workers(settings)
    checks += check_round_locks(settings)
    checks += check_unsynced(settings, path)
    checks += asyncio.run(_network(settings, timeout, path))
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.config, args.timeout)
    for check in checks:
        print(check.line())
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{failed} problem(s) to fix" if failed else "all checks passed")
    return 1 if failed else 0
