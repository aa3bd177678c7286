"""The ``gateway`` command: ``run``, ``check``, ``init``, ``doctor``, ``import``, ``replay-bad``,
``send-test-event``, ``reclassify``, ``report``, ``sync --once``, ``mirror --once``, ``sink send``
and ``rules try``.

Config problems are printed one per line, each naming its TOML key, and the
command exits 2; nothing prints a traceback for something the operator can fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec
from yarl import URL

from gateway import __version__, mitmlaunch, report_cli
from gateway.channels import channels_warnings
from gateway.childsignals import RELOAD_ORDER, RELOAD_ORDER_ENV, RELOAD_SIGNALS, STOP_SIGNALS
from gateway.cliargs import SQLITE_MAX, whole_number
from gateway.config import (
    RELOAD_HINT,
    SECRET_KEYS,
    ConfigError,
    Settings,
    load_settings,
    masked,
    read_config,
    refuse_blank,
)
from gateway.config_values import host_problem, is_ip_address
from gateway.daysalt import HandedSalt
from gateway.doctor import cmd_doctor, geo_files, store_failure, timeout_arg
from gateway.heartbeat import Heartbeat
from gateway.logs import command_logging, journal_excepthooks, say_error, set_level, setup_logging
from gateway.notices import config_warnings, secret_warnings, warn_of_secret
from gateway.options import Options, parse_listen
from gateway.privacy_cli import add_commands as add_privacy_commands
from gateway.reload import live_settings, restart_needed
from gateway.replay import cmd_replay_bad
from gateway.rules_cli import add_parser as add_rules_parser
from gateway.sdnotify import Notifier
from gateway.send_test import cmd_send_test_event, creator_arg, currency_arg, url_arg, value_arg
from gateway.sharedcounts import SharedCounts
from gateway.sink_cli import cmd_sink_send
from storage.migrate import SchemaTooNew
from storage.reclassify import Reclassified, reclassify, stored_touchpoints
from storage.roundlock import LONG_WAIT_SECONDS, Holder, RoundTimeout

if TYPE_CHECKING:
    from gateway.channels import Channels
    from gateway.demo import DemoRules
    from gateway.progress import Counting

log = logging.getLogger("gateway")

EXIT_CONFIG = 2
EXIT_START = 3
"""A worker could not start (store, listen address): the supervisor stops rather than retries."""
DEFAULT_CONFIG = "gateway.toml"
STARTER_STORE_LINE = '\npath = "gateway.db"\n'
"""``storage.path`` as the annotated example (``gateway/data/gateway.toml``, a link to the
repository's ``gateway.toml`` that a wheel holds as a file) writes it: the only
uncommented ``path`` line at the start of a line; ``init --store`` replaces it."""


EMPTY_CONFIG = '-c ""'
"""An empty config file name, as given."""


def _fail_config(path: str, err: ConfigError) -> int:
    # ``-c ""`` (a script's ``-c "$CONFIG"`` with it unset) as given: the header named nothing.
    say_error(f"gateway: {path or EMPTY_CONFIG}: {len(err.problems)} problem(s):")
    for problem in err.problems:
        say_error(f"  {problem}")
    # No file at all (a newcomer's `gateway run` in a folder without one): say how to get one,
    # as `gateway doctor` does (until 2026-12-05 "No such file or directory" alone).
    if path and any(": cannot read: " in p for p in err.problems) and not os.path.lexists(path):
        say_error(
            f"gateway: no config file at {path}: write a starter one with `gateway init -c {path}`,"
            " or name yours with -c FILE"
        )
    return EXIT_CONFIG


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else msgspec.json.encode(key).decode()


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped too.
        return msgspec.json.encode(value).decode().replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; keys quoted, since hosts hold dots
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _is_tables(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, dict) for v in value)


def render_toml(data: dict[str, Any]) -> str:
    """Options as TOML: tables, then their arrays of tables (``[[identity.rules]]``), then
    top-level arrays of tables (``[[conversions]]``). None (unset) values are left out."""
    lines: list[str] = []
    arrays: list[tuple[str, dict[str, Any]]] = []
    for section, values in data.items():
        if isinstance(values, list | tuple):
            arrays += [(section, entry) for entry in values]
            continue
        lines.append(f"[{section}]")
        nested = []
        for key, value in values.items():
            if _is_tables(value):
                nested += [(f"{section}.{key}", entry) for entry in value]
            elif value is not None:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
        for name, entry in nested:
            lines.append(f"[[{name}]]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
            lines.append("")
    for name, entry in arrays:
        lines.append(f"[[{name}]]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entry.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, dev=args.dev, admin_public=args.admin_public)
    except ConfigError as err:
        return _fail_config(args.config, err)
    if folder := settings.store_folder():  # run would fail to open it (until 2026-12-05 check said OK)
        return _fail_config(args.config, ConfigError([f"storage.path: {settings.store_path} is {folder}"]))
    # A GeoIP database named but missing is not an error (geo turns itself off): said, though.
    warnings = [f"{check.what} ({check.fix})" for check in geo_files(settings) if check.status != "ok"]
    warnings += config_warnings(settings.options) + secret_warnings(settings)
    ok = f"# {args.config}: OK (store: {settings.store_path}, node: {settings.node})"
    if args.quiet:
        # deploy/gateway.service runs this before each start and reload, whose own log lines
        # say the same warnings: printed here too, each was in the journal twice (until
        # 2026-12-06). Counted instead, with where to read them.
        if warnings:
            ok += (
                f"; {len(warnings)} warning{'s' if len(warnings) > 1 else ''} not shown (--quiet):"
                " the gateway logs them as it starts, `gateway check` without --quiet prints them"
            )
        print(ok)
        return 0
    print(ok)
    for warning in warnings:
        print(f"gateway: warning: {warning}", file=sys.stderr)
    print(render_toml(masked(settings.options)), end="")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    if not args.config:  # Path("") is "." (until 2026-12-07: ". is a folder")
        print("gateway: -c/--config: empty; name the file to write (e.g. -c gateway.toml)", file=sys.stderr)
        return 1
    path = Path(args.config)
    try:
        is_dir, exists, has_folder = path.is_dir(), path.exists(), path.parent.is_dir()
    except OSError as err:  # a name too long (is_dir raises ENAMETOOLONG), a folder not searchable
        print(f"gateway: cannot write {path}: {err.strerror}", file=sys.stderr)
        return 1
    if is_dir:
        print(
            f"gateway: {path} is a folder; name the file to write, like {path / DEFAULT_CONFIG}",
            file=sys.stderr,
        )
        return 1
    if exists and not args.force:
        print(f"gateway: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    # The annotated example, every key with its default and what it does (until 2026-12-05 the
    # keys alone). Its "gateway.db" is beside the config: under /etc/gateway, read-only to
    # deploy/gateway.service, hence --store; a relative one is taken from here, as any argument.
    text = resources.files("gateway").joinpath("data/gateway.toml").read_text(encoding="utf-8")
    store = (path.parent / "gateway.db").absolute()
    if args.store is not None:
        store = Path(args.store).absolute()
        try:
            str(store).encode("utf-8")
        except UnicodeEncodeError:  # a byte of another encoding: no TOML file can hold it
            print(
                f"gateway: --store: {store} is not UTF-8, which a TOML config cannot hold;"
                " name a path in UTF-8",
                file=sys.stderr,
            )
            return 1
        if store.is_dir():
            print(
                f"gateway: --store: {store} is a folder; name the store's file, like {store / 'gateway.db'}",
                file=sys.stderr,
            )
            return 1
        text = text.replace(STARTER_STORE_LINE, f"\npath = {_toml_value(str(store))}\n", 1)
    # The README's production step writes to /etc/gateway/, which may not exist yet.
    folder = path.parent
    if not has_folder:
        try:
            folder.mkdir(parents=True)
        except OSError as err:
            why = "a file is in the way" if isinstance(err, FileExistsError) else err.strerror
            print(f"gateway: cannot create the folder {folder}: {why}", file=sys.stderr)
            return 1
        print(f"created {folder}")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"gateway: cannot write {path}: {err.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    print(f"Its store: {store} (storage.path; `--store PATH` names another)")
    # The README's production steps went from init to run without naming the site: followed as
    # written, the gateway served its built-in demo shop to the public (until 2026-12-05).
    print(
        'Set proxy.upstream in it to your site, an origin like "http://127.0.0.1:8000"'
        " (left empty, the gateway serves a built-in demo site)."
    )
    print("Set the secrets (32+ characters each) before `gateway run`, for example:")
    for key in SECRET_KEYS:
        section, name = key.split(".")
        env = getattr(getattr(Options(), section), name).removeprefix("env:")
        print(f"  export {env}=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\"")
    print(f"Then: gateway check -c {path} && gateway run -c {path}")
    return 0


def _announce(
    settings: Settings,
    proxy_addr: str,
    admin_addr: str,
    demo: str | None,
    demo_rules: DemoRules | None = None,
) -> None:
    if settings.generated:
        bar = "!" * 72
        print(bar, file=sys.stderr)
        print(
            "!! DEV MODE: ephemeral secrets generated for " + ", ".join(settings.generated),
            file=sys.stderr,
        )
        print(
            "!! Visitor cookies will not verify after a restart. Never use --dev in production.",
            file=sys.stderr,
        )
        print(bar, file=sys.stderr)
    print(f"gateway: proxy on http://{proxy_addr}/ -> {demo or settings.options.proxy.upstream}")
    if demo:
        print(f"gateway: no proxy.upstream configured: serving the built-in demo origin at {demo}")
    reads = "" if settings.mirror_path is None else f"; reports read the mirror {settings.mirror_path}"
    print(f"gateway: admin API on http://{admin_addr}/ (store: {settings.store_path}{reads})")
    for line in demo_rules.lines(proxy_addr, admin_addr) if demo_rules is not None else ():
        print(line)
    print("Try:")
    print(f"  curl -i 'http://{proxy_addr}/?utm_source=newsletter&utm_medium=email&utm_campaign=launch'")
    # Double quotes: pasted into a shell, the variable expands (in single quotes curl sent "$NAME").
    generated = bool(settings.generated and any("admin.token" in g for g in settings.generated))
    variable = "$" + settings.options.admin.token.removeprefix("env:")
    token = settings.admin_token if generated else variable
    # Newest first: past a page (100) of touchpoints, oldest first hid the landing just made.
    # The URL quoted: zsh takes an unquoted ? for a pattern ("no matches found").
    print(f"  curl -H \"Authorization: Bearer {token}\" 'http://{admin_addr}/api/touchpoints?order=newest'")
    # The login form asks for the token: given here, not left to be picked out of the curl line.
    login = f"the admin token {token}" if generated else f"the admin token in {variable}"
    print(f"  open http://{admin_addr}/ in a browser: the dashboard (sign in with {login})")
    sys.stdout.flush()


GENERATED_ENV = "GATEWAY_WORKER_GENERATED"
"""Set by the supervisor for its workers: which secrets ``--dev`` generated (their values are in
the workers' environment), so worker 0 can say so."""


STARTED_CONFIG_ENV = "GATEWAY_WORKER_CONFIG"
"""Set by the supervisor for its workers: a file holding the config text the gateway started
with. A file, not the text: one environment variable holds at most 128 KiB on Linux, and a
config with a long ``[[creators]]`` list can be larger (no worker would start)."""
SUPERVISOR_ENV = "GATEWAY_WORKER_SUPERVISOR"
"""Set by the supervisor for its workers: its process ID, the parent a worker stops without."""
RELOADED_CONFIG_ENV = "GATEWAY_WORKER_RELOADED_CONFIG"
"""Set by the supervisor for the workers it starts after a SIGHUP: a file holding the config
text of the last reload it found valid (``_worker_settings``)."""
SIGHUP_SNAPSHOT = "sighup.json"
"""Beside the started config (``STARTED_CONFIG_ENV``): what the supervisor read on the last
SIGHUP, before forwarding it, ``{"text": …}`` or ``{"problems": […]}`` when the file could not
be read. The running workers reload from it, not from the file: read by each worker apart,
a file written in between (a second quick edit, a write that is not atomic) left workers on
different configs after one reload."""


class _Sighup(msgspec.Struct, omit_defaults=True):
    text: str | None = None
    problems: list[str] = []


def write_sighup_snapshot(folder: Path, text: str | None, problems: list[str]) -> None:
    """Keep what the supervisor read on a SIGHUP for its workers' reloads (whole, by a rename).
    One that cannot be written (a full disk) is removed rather than left stale: the workers then
    read the file themselves, not the reload before."""
    written = folder / (SIGHUP_SNAPSHOT + ".new")
    try:
        written.write_bytes(msgspec.json.encode(_Sighup(text, problems)))
        written.replace(folder / SIGHUP_SNAPSHOT)
    except OSError:
        (folder / SIGHUP_SNAPSHOT).unlink(missing_ok=True)
        raise


def sighup_snapshot() -> str | None:
    """A supervised worker's reload: the config text its supervisor read on this SIGHUP, or
    ConfigError with why it could not be read; None when no supervisor kept one (one process,
    a supervisor of an older version): the worker reads the file itself."""
    started = os.environ.get(STARTED_CONFIG_ENV)
    if started is None:
        return None
    try:
        raw = (Path(started).parent / SIGHUP_SNAPSHOT).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _copy_gone(err) from err
    kept = msgspec.json.decode(raw, type=_Sighup)
    if kept.text is None:
        raise ConfigError(kept.problems)
    return kept.text


async def _run(
    settings: Settings,
    args: argparse.Namespace,
    handed: HandedSalt | None = None,
    shared_counts: SharedCounts | None = None,
    started: tuple[str, str] | None = None,
    beat: Heartbeat | None = None,
    admin_socks: Sequence[socket.socket] = (),
    notifier: Notifier | None = None,
) -> None:
    """Serve ``settings``; ``started``: a worker's listen addresses as configured (``_overridden``);
    ``beat``: a worker's heartbeat, which its supervisor kills it without (``gateway/heartbeat.py``);
    ``admin_socks``: worker 0's admin sockets, which its supervisor listens on (``_handed_admin``)."""
    from aiohttp import web

    from gateway.demo import create_demo_app, with_demo_rules
    from gateway.protocol_errors import Runner
    from gateway.server import serve

    upstream = settings.options.proxy.upstream
    demo_runner = None
    demo_rules = None
    if not upstream:
        # The gateway's listener, not aiohttp's: it reads what the proxy forwards as sent (a
        # raw UTF-8 target) and answers what it refuses without a traceback in the log.
        demo_runner = Runner(create_demo_app(), public=True, access_log=None)
        await demo_runner.setup()
        site = web.TCPSite(demo_runner, "127.0.0.1", 0)
        await site.start()
        port = demo_runner.addresses[0][1]
        upstream = f"http://127.0.0.1:{port}"
        # The demo shop's sign-up is a conversion, so that the demo shows the whole loop (until
        # 2026-12-06 rules = [] left it invisible): while this origin is served, whatever a
        # reload's file says of proxy.upstream, which needs a restart.
        demo_rules = with_demo_rules(settings)
        settings = demo_rules.settings
    primary = args.worker in (None, 0)

    async def reread() -> Settings:
        def load() -> Settings:
            text = sighup_snapshot() if args.worker is not None else None
            return load_settings(
                args.config,
                text=text,
                dev=args.dev,
                admin_public=args.admin_public,
                missing_hint=RELOAD_HINT,
                reload=True,
            )

        new = _overridden(await asyncio.to_thread(load), args, started)
        return new if demo_rules is None else with_demo_rules(new).settings

    def ready(proxy: str, admin: str) -> None:
        if primary:
            _announce(settings, proxy, admin, upstream if demo_runner else None, demo_rules)

    stop = asyncio.Event()
    orphaned = supervisor = None
    if args.worker is not None:
        orphaned = asyncio.create_task(_watch_parent(stop, _supervisor_pid()))
        if os.environ.get(RELOAD_ORDER_ENV) == RELOAD_ORDER.name:  # it orders reloads so
            supervisor = _supervisor_pid()
    if handed is not None:
        handed.follow(asyncio.get_running_loop())  # each new day's salt, from the supervisor
    if beat is not None:
        beat.start(asyncio.get_running_loop())
    try:
        await serve(
            settings,
            upstream,
            on_ready=ready,
            stop=stop,
            admin=primary,
            reuse_port=args.worker is not None,
            reread=reread,
            salt=handed.salt if handed is not None else None,
            shared_counts=shared_counts,
            supervisor=supervisor,
            admin_socks=admin_socks,
            notifier=notifier,
        )
    finally:
        if handed is not None:
            handed.close(asyncio.get_running_loop())
        if beat is not None:
            beat.close()
        if orphaned is not None:
            orphaned.cancel()
        if demo_runner is not None:
            await demo_runner.cleanup()


def _handed_admin() -> list[socket.socket]:
    """Worker 0's admin sockets (one for each address of ``admin.listen``), bound and listened on
    by its supervisor, which keeps them open between worker 0's restarts; none when the
    supervisor handed none."""
    from gateway.supervisor import ADMIN_FD_ENV

    fds = os.environ.pop(ADMIN_FD_ENV, "")  # not passed on to this worker's own children
    socks = [socket.socket(fileno=int(fd)) for fd in fds.split(",") if fd]
    for sock in socks:
        sock.set_inheritable(False)
    return socks


def _from_supervisor() -> bool:
    """Whether a supervisor started this process: it puts ``GATEWAY_WORKER_SUPERVISOR`` in its
    workers' environment, and ``GATEWAY_WORKER_GENERATED`` (even empty), as every version with
    workers has (a worker restarted by one not yet upgraded has only that one)."""
    return SUPERVISOR_ENV in os.environ or GENERATED_ENV in os.environ


def _supervisor_pid() -> int:
    """The supervisor that started this worker: named by it, not taken from ``os.getppid()`` once
    the worker is up, since a supervisor killed while the worker still started has left it a child
    of init (or of a subreaper) already, and a parent read then would never change."""
    named = os.environ.get(SUPERVISOR_ENV, "")
    return int(named) if named.isdigit() else os.getppid()


async def _watch_parent(stop: asyncio.Event, supervisor: int) -> None:
    """A worker whose supervisor died (even by SIGKILL) stops gracefully instead of living on."""
    while os.getppid() == supervisor:
        await asyncio.sleep(1.0)
    log.error("the supervisor is gone; stopping this worker")
    stop.set()


def _overridden(
    settings: Settings, args: argparse.Namespace, started: tuple[str, str] | None = None
) -> Settings:
    """A worker listens where the supervisor reserved (a configured port 0 became one port).

    On a reload, ``started`` is the ``proxy.listen`` and ``admin.listen`` the worker started
    from as configured: an address the file no longer says is left as the file now says, so
    that the reload names it as needing a restart (until 2026-12-04 a worker replaced it with
    the reserved one too, and a changed address was kept without a word)."""
    if args.worker is None:
        return settings
    opts = settings.options
    proxy_was, admin_was = started or (opts.proxy.listen, opts.admin.listen)
    proxy_listen = args.listen if args.listen and opts.proxy.listen == proxy_was else opts.proxy.listen
    admin_listen = (
        args.admin_listen if args.admin_listen and opts.admin.listen == admin_was else opts.admin.listen
    )
    proxy = msgspec.structs.replace(opts.proxy, listen=proxy_listen)
    admin = msgspec.structs.replace(opts.admin, listen=admin_listen)
    return dataclasses.replace(settings, options=msgspec.structs.replace(opts, proxy=proxy, admin=admin))


def _export_generated(settings: Settings) -> None:
    """Put ``--dev``'s generated secrets in this process's environment, so a reload and every
    worker resolve the same ones."""
    values = {"identity.secret": settings.secret.decode(), "admin.token": settings.admin_token}
    for i, source in enumerate(settings.options.sources):
        for j, secret in enumerate(settings.source_secrets.get(source.name, ())):
            values[f"sources[{i}].secrets[{j}]"] = secret.decode("utf-8", "surrogateescape")
    for entry in settings.generated:
        match = re.fullmatch(r"(.+) \((\w+)\)", entry)
        if match and match.group(1) in values:
            os.environ[match.group(2)] = values[match.group(1)]


def _supervise(
    args: argparse.Namespace, settings: Settings, count: int, text: str, notifier: Notifier | None = None
) -> int:
    from gateway.metrics import MULTIPROCESS_ENV
    from gateway.supervisor import listen_every, python_argv, reserve, run_supervisor

    public: list[socket.socket] = []
    try:
        # Every address each resolves to, as each worker listens on every one. Worker 0 serves on
        # the admin sockets; held here too, they take connections while worker 0 restarts.
        public, proxy_addr = reserve(settings.options.proxy.listen, key="proxy.listen")
        admins, admin_addr = listen_every(settings.options.admin.listen, key="admin.listen")
    except OSError as err:
        for sock in public:
            sock.close()
        say_error(f"gateway: cannot start: {err.strerror or err}")
        return 1

    def argv(index: int) -> list[str]:
        extra = ["--dev"] if args.dev else []
        if args.admin_public:
            extra.append("--admin-public")
        # Always: a worker that cannot read its config says so in the format its siblings write
        # (``log.format`` needs a restart, so the one the gateway started with holds).
        extra += ["--log-format", args.log_format or settings.options.log.format]
        return [
            *python_argv(),
            "run",
            "-c",
            args.config,
            "--worker",
            str(index),
            "--listen",
            proxy_addr,
            "--admin-listen",
            admin_addr,
            *extra,
        ]

    # The configs the workers run and their metrics files, kept where only this user reads them,
    # gone at exit.
    snapshots = Path(tempfile.mkdtemp(prefix="gateway-config-"))
    started = snapshots / "started.toml"
    started.write_text(text, encoding="utf-8")
    metrics = snapshots / "metrics"
    metrics.mkdir()
    env = {
        **os.environ,
        GENERATED_ENV: "\n".join(settings.generated),
        SUPERVISOR_ENV: str(os.getpid()),
        STARTED_CONFIG_ENV: str(started),
        MULTIPROCESS_ENV: str(metrics),
    }

    def reloaded() -> dict[str, str]:
        """On SIGHUP, before the workers reload: a valid file becomes what a worker started
        from now on runs too, and its ``log.level`` the supervisor's own (as each worker takes
        it); an invalid one changes nothing (each worker logs its problems)."""
        try:
            new = read_config(args.config)
            refuse_blank(new, args.config)  # each worker says so, and keeps its config
        except ConfigError as err:
            write_sighup_snapshot(snapshots, None, err.problems)
            return {}
        write_sighup_snapshot(snapshots, new, [])  # what every running worker reloads, alike
        try:
            level = _load_run(args, new).options.log.level
        except ConfigError:
            return {}
        set_level(level)
        kept = snapshots / "reloaded.toml"
        written = snapshots / "reloaded.toml.new"
        written.write_text(new, encoding="utf-8")
        written.replace(kept)  # whole or not at all for a worker starting meanwhile
        return {RELOADED_CONFIG_ENV: str(kept)}

    log.info("starting %d workers on %s", count, proxy_addr)
    try:
        first = parse_listen(admin_addr)
        probe = (
            "127.0.0.1" if first[0] in ("0.0.0.0", "") else "::1" if first[0] == "::" else first[0],
            first[1],
        )
        # The supervisor's patience with a stopping worker: its drain, then its grace.
        proxy = settings.options.proxy
        grace, tracked = proxy.drain_seconds + proxy.shutdown_grace, settings.options.bots.max_tracked
        hang = settings.options.proxy.worker_hang_seconds
        handed = tuple(sock.detach() for sock in admins)
        return run_supervisor(count, argv, env, grace, probe, reloaded, tracked, hang, handed, notifier)
    finally:
        for sock in public:
            sock.close()
        for sock in admins:
            sock.close()  # if not handed over
        shutil.rmtree(snapshots, ignore_errors=True)


async def _prepare_store(settings: Settings) -> None:
    from storage.local import connect
    from storage.migrate import migrate

    await asyncio.to_thread(settings.store_path.parent.mkdir, parents=True, exist_ok=True)
    db = await connect(settings.store_path)
    try:
        await migrate(db, announce=True)
    finally:
        await db.close()


def _full_and_there(store: Path) -> bool:
    """The store exists and its disk is full: opened later, the site served meanwhile."""
    from storage.access import full_disk

    return store.is_file() and full_disk(store) is not None


def _load_run(args: argparse.Namespace, text: str | None = None) -> Settings:
    return load_settings(args.config, text=text, dev=args.dev, admin_public=args.admin_public)


def _worker_settings(args: argparse.Namespace) -> tuple[Settings, list[str], list[str]]:
    """A worker runs the config its siblings run, not whatever the file now says: the text the
    gateway started with and, on top of it as a reload applies it, the last reload the
    supervisor found valid (a worker restarted after a crash would otherwise stop the whole
    gateway over a file broken since, or serve another upstream than its siblings). Also, for
    the log: the problems of a reload that no longer loads (a file it names is gone), and the
    keys that reload changed which this worker keeps as started, as its siblings do (the
    listen addresses: it binds where they listen)."""
    started = _snapshot(STARTED_CONFIG_ENV)
    if started is None:  # not started by a supervisor of this version
        return _load_run(args), [], []
    settings = _load_run(args, started)
    reloaded = _snapshot(RELOADED_CONFIG_ENV)
    if reloaded is None:
        return settings, [], []
    try:
        new = _load_run(args, reloaded)
    except ConfigError as err:
        return settings, err.problems, []
    return live_settings(settings, new), [], restart_needed(settings, new)


def _snapshot(variable: str) -> str | None:
    """The config text the supervisor kept in the file ``variable`` names, if any."""
    path = os.environ.get(variable)
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:  # its folder removed under a running gateway
        raise _copy_gone(err) from err


def _copy_gone(err: OSError) -> ConfigError:
    return ConfigError([f"the supervisor's copy of the config is gone ({err}); restart the gateway"])


def cmd_run(args: argparse.Namespace) -> int:
    text = None
    problems: list[str] = []
    pending: list[str] = []
    started: tuple[str, str] | None = None
    try:
        if args.worker is None:
            text = read_config(args.config)
            settings = _load_run(args, text)
        else:
            settings, problems, pending = _worker_settings(args)
    except ConfigError as err:
        if args.worker is None:
            return _fail_config(args.config, err)
        # Its log is not set up (no config to take it from): its supervisor named the format.
        setup_logging("info", args.log_format or "json", worker=args.worker)
        _worker_failed(*(f"{args.config}: {problem}" for problem in err.problems))
        return EXIT_CONFIG
    opts = settings.options
    setup_logging(opts.log.level, args.log_format or opts.log.format, worker=args.worker)
    for problem in problems:
        log.error("the last reload no longer loads; this worker runs the config it started with: %s", problem)
    for key in pending:  # said at the reload by the workers then running; said again by this one
        log.warning(
            "reload: %s needs a restart; this worker runs the value its siblings run", key, extra={"key": key}
        )
    _export_generated(settings)
    # systemd's socket (or a worker's channel to its supervisor), out of the environment before
    # any process is started: none of them (workers, report workers) tells systemd anything.
    notifier = Notifier.from_environ()
    if args.worker is None:
        from gateway.supervisor import worker_count

        for warning in config_warnings(opts) + secret_warnings(settings):  # once, at the start
            log.warning("%s", warning)

        count = worker_count(opts.proxy.workers)
        # Once, here: a store that cannot open fails now, not in N restarting workers, and said
        # the same with one process or several (one said "cannot start: File exists").
        try:
            asyncio.run(_prepare_store(settings))
        except (SchemaTooNew, sqlite3.DatabaseError, OSError) as err:
            # But a store there on a full disk: its worker serves the site, and says so (fail open).
            if not (isinstance(err, sqlite3.Error) and _full_and_there(settings.store_path)):
                say_error(store_failure(settings, err))
                return 1
        if count > 1:
            assert text is not None
            return _supervise(args, settings, count, text, notifier)
    else:
        started = (opts.proxy.listen, opts.admin.listen)
        generated = os.environ.get(GENERATED_ENV, "")
        settings = dataclasses.replace(
            _overridden(settings, args), generated=tuple(filter(None, generated.split("\n")))
        )
    handed = HandedSalt.from_environ()  # a worker's: the salt its siblings use (None: its own)
    shared_counts = SharedCounts.from_environ()  # and the velocity counts they share
    beat = Heartbeat.from_environ()  # and the pipe its supervisor hears its event loop on
    admin_socks = _handed_admin() if args.worker == 0 else []
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    # A worker that fails before serving says so with its own exit code: the supervisor then
    # gives up at once instead of restarting it.
    failed = 1 if args.worker is None else EXIT_START
    try:
        runner(_run(settings, args, handed, shared_counts, started, beat, admin_socks, notifier))
    except ConfigError as err:  # found at start-up, e.g. a GeoIP database that cannot be read
        if args.worker is None:
            return _fail_config(args.config, err)
        _worker_failed(*(f"{args.config}: {problem}" for problem in err.problems))
        return EXIT_CONFIG
    except (SchemaTooNew, sqlite3.DatabaseError) as err:
        _start_failed(args, store_failure(settings, err))
        return failed
    except OSError as err:
        _start_failed(args, f"gateway: cannot start: {err.strerror or err}")
        return failed
    except KeyboardInterrupt:
        pass
    return 0


def _start_failed(args: argparse.Namespace, reason: str) -> None:
    """Why ``gateway run`` could not start: on stderr, or in a worker as its log's line."""
    if args.worker is None:
        say_error(reason)
    else:
        _worker_failed(reason)


def _worker_failed(*reasons: str) -> None:
    """Why a worker could not start, as a line of the log it writes (its ``worker`` field, or its
    ``[worker N]`` prefix): until 2026-12-05 plain text amid the JSON lines, and only the
    supervisor's next line said which worker it was."""
    for reason in reasons:
        log.critical("%s", reason.removeprefix("gateway: "))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: the same clean stop (exit 143)."""


class _Terminate:
    """The SIGTERM handler: the same stop as Ctrl-C's, noted (``heard``) for the exit status,
    once: a second SIGTERM changes nothing (``timeout`` sends two, to the command and then to
    its process group). Inside ``asyncio.run`` it goes through asyncio's own Ctrl-C handler,
    which cancels the running task — its store is rolled back and closed in its loop — and
    raises KeyboardInterrupt once that is done. (A KeyboardInterrupt raised into the loop,
    then another into its clean-up, left an aiosqlite call answering a closed loop:
    ``RuntimeError: Event loop is closed`` tracebacks, ``Task was destroyed but it is
    pending!``, or a process that never ended.) Elsewhere it raises ``_Terminated`` at once."""

    def __init__(self) -> None:
        self.heard = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.heard:
            return
        self.heard = True
        ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(ctrl_c) and ctrl_c is not signal.default_int_handler:  # asyncio.run's
            ctrl_c(signal.SIGINT, frame)
        else:
            raise _Terminated


def cmd_reclassify(args: argparse.Namespace) -> int:
    """Reclassify this node's store, then the reporting mirror when there is one (what every
    report reads then): one after the other, each summed up on its own lines."""
    # No secret is needed to classify: missing ones are generated and never used.
    try:
        settings = load_settings(args.config, dev=True, files_only=True)
    except ConfigError as err:
        return _fail_config(args.config, err)
    for warning in channels_warnings(settings.options):  # why a rule changes nothing
        print(f"gateway: warning: {warning}", file=sys.stderr)
    mirror = settings.mirror_path
    if args.store == "mirror" and mirror is None:
        print(_no_mirror(args.config, settings, "--store mirror: "), file=sys.stderr)
        return EXIT_CONFIG
    stores = _reclassify_stores(settings, args.store, args.config)
    if not stores:
        return 1
    # The site's host, when known: which Internal touchpoints are the site's own (the store keeps
    # no site host). The local store's only: the mirror's rows come from every node's site.
    from addons.campaign import host_of, hostname  # as the gateway reads a Host, public_origin

    origin = settings.options.proxy.public_origin
    site = hostname(args.host).rstrip(".") if args.host else (host_of(origin) if origin else None)
    from storage.local import store_hint

    shown = Shown(args)  # tqdm loaded now, before a stop is heard its own way
    # SIGTERM (systemd, `timeout`, a deploy script) stops it as Ctrl-C does, saying how far it got.
    terminate = _Terminate()
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        for at, (name, path) in enumerate(stores):
            # With a mirror, each line names its store; without, the lines stay as they were.
            said = "reclassify" if mirror is None else f"reclassify ({name} {path})"
            # A million channels took 45 s: a bar on a terminal, a line now and then off one.
            names = (said, "reclassify" if mirror is None else f"reclassify {name}")
            after = "" if at + 1 == len(stores) else f" (the {stores[-1][0]} {stores[-1][1]}: not started)"
            done = Reclassified()
            try:
                asyncio.run(
                    _reclassify(
                        path,
                        settings.channels,
                        args.batch_size,
                        args.dry_run,
                        shown,
                        names,
                        done,
                        site if name == "local" else None,
                    )
                )
            except (SchemaTooNew, sqlite3.DatabaseError) as err:
                key = "central.mirror_path" if name == "mirror" else "storage.path"
                print(
                    f"gateway: cannot reclassify the store {path}: {err}{store_hint(err, path, key)}{after}",
                    file=sys.stderr,
                )
                return 1
            except KeyboardInterrupt as stop:
                # Each batch commits on its own: what was done is kept, and a second run goes on.
                written = "nothing written" if args.dry_run else f"{done.changed:,} changed and kept"
                again = " (--store mirror: the mirror alone)" if at else after
                print(
                    f"{said}: interrupted after {done.seen:,} touchpoints ({written});"
                    f" run it again to finish{again}",
                    file=sys.stderr,
                )
                return 143 if isinstance(stop, _Terminated) or terminate.heard else 130
            note = " (dry run: nothing written)" if args.dry_run else ""
            print(f"{said}: {done.seen:,} touchpoints, {done.changed:,} changed{note}", flush=True)
            for (old, new), count in sorted(done.moves.items(), key=lambda m: (-m[1], str(m[0]))):
                print(f"  {old or '(none)'} -> {new}: {count:,}", flush=True)
    finally:
        # Stopping on one: the second (timeout's) must not end the process by the signal
        # before it exits with its 143.
        signal.signal(signal.SIGTERM, signal.SIG_IGN if terminate.heard else previous)
    return 0


def _reclassify_stores(settings: Settings, which: str, config: str) -> list[tuple[str, Path]]:
    """The stores ``--store`` names that exist, in the order they are reclassified: this node's
    (``local``), then the reporting mirror (``mirror``, when ``central.mirror_path`` is set).
    One asked for alone and missing, or none there, is said on stderr (then: nothing to do);
    one of the two missing under ``both`` is said and skipped."""
    mirror = settings.mirror_path
    local = settings.store_path
    stores: list[tuple[str, Path]] = []
    if which != "mirror":
        if local.is_file():
            stores.append(("local", local))
        elif which == "local" or mirror is None or not mirror.exists() or local.is_dir():
            print(settings.store_problem() or settings.no_store(), file=sys.stderr)
            return []
        else:
            print(f"reclassify (local {local}): no store there (storage.path): skipped", file=sys.stderr)
    if which != "local" and mirror is not None:
        if mirror.exists():
            stores.append(("mirror", mirror))
        else:
            made = f"`gateway mirror --once -c {config}` (or the reporting gateway) makes it"
            if which == "mirror":
                print(
                    f"gateway: no reporting mirror at {mirror} (central.mirror_path): {made}", file=sys.stderr
                )
                return []
            print(
                f"reclassify (mirror {mirror}): no mirror there yet (central.mirror_path): skipped; {made}",
                file=sys.stderr,
            )
    return stores


async def _reclassify(
    path: Path,
    channels: Channels,
    batch_size: int,
    dry_run: bool,
    shown: Shown,
    names: tuple[str, str],
    done: Reclassified,
    site: str | None = None,
) -> Reclassified:
    """One store (a node's or the reporting mirror: the same schema), its progress ``shown``
    under ``names`` (the lines', the bar's).
    Beside a live gateway writing to it (its landings, or its mirror rounds inserting every
    node's new rows): short transactions, the busy timeout of ``storage.local.connect``."""
    from storage.local import connect
    from storage.migrate import migrate, refuse_newer
    from storage.readonly import open_read_only

    db = await (open_read_only(path) if dry_run else connect(path))  # a dry run cannot write
    count = None
    try:
        # An older store gains the channel column first; a dry run of a store a newer gateway
        # migrated is refused as the real one is (until 2026-12-07 it read it on).
        await (refuse_newer(db) if dry_run else migrate(db))
        if shown.wanted:
            count = shown.counting(*names, await stored_touchpoints(db), "touchpoints")
        return await reclassify(
            db,
            channels,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=None if count is None else count.update,
            done=done,
            site=site,
        )
    finally:
        if count is not None:
            count.close()
        await db.close()


def _batch_size(text: str) -> int:
    if (number := whole_number(text, 1, 100_000)) is None:
        raise argparse.ArgumentTypeError(f"must be a whole number 1..100000, got {text!r}")
    return number


def _site_host(text: str) -> str:
    """``--host``: the ``Host`` a visitor's browser sent, ``www.example.com`` or ``[::1]:8443``.
    A URL is refused (it would never equal a referrer's host: every same-site page load would
    become a referral), naming the host it holds."""
    if text.startswith("["):  # an IPv6 address: [::1] or [::1]:8443
        host, close, rest = text[1:].partition("]")
        has_port, port = rest.startswith(":"), rest[1:]
        good = bool(close) and (has_port or not rest) and ":" in host
    else:
        host, colon, port = text.partition(":")  # a second ":" leaves a port that is not a number
        has_port, good = bool(colon), True
    good = good and host_problem(host, ip=True) is None
    # A name ending in a number is no host a browser sends: it reads one as an IPv4 address, and
    # refuses it when it is not one (WHATWG URL), so it would never equal a referrer's host.
    last = host.rstrip(".").rpartition(".")[2]
    if good and last.isascii() and last.isdigit() and not is_ip_address(host):
        good = False
    if good and (not has_port or whole_number(port, 1, 65535) is not None):
        return text
    hint = ""
    if "://" in text:
        with contextlib.suppress(ValueError):
            url = URL(text)
            if url.host:
                hint = f" (write {url.raw_authority.rpartition('@')[2]})"
    raise argparse.ArgumentTypeError(
        "must be the site's host as browsers send it, like www.example.com (or www.example.com:8443), "
        f"without scheme or path, got {text!r}{hint}"
    )


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``--trusted-proxy``: an IP address or CIDR block, as ``proxy.trusted_proxies`` takes them."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address or CIDR block: {text!r}") from None


def _run_number(text: str) -> int:
    if (number := whole_number(text, 1, SQLITE_MAX)) is None:
        raise argparse.ArgumentTypeError(f"an import run's number, as --list shows it (1, 2…), got {text!r}")
    return number


def _workers(text: str) -> int:
    if (number := whole_number(text, 1, 256)) is None:
        raise argparse.ArgumentTypeError(f"must be a whole number 1..256 (processes), got {text!r}")
    return number


PROGRESS_EVERY = 10.0
"""Seconds between the long commands' progress lines off a terminal (``--progress-every``):
``import``, ``reclassify``, ``sync --once``, ``mirror --once``."""


class Shown:
    """How a long command (``reclassify``, ``sync --once``, ``mirror --once``) shows its
    progress: on a terminal, a bar; off one, a plain line every ``--progress-every`` seconds,
    ``gateway NAME: …``; neither with ``--no-progress``, nor with stderr closed (``2>&-``).
    Made before the command's event loop runs: tqdm is loaded here."""

    def __init__(self, args: argparse.Namespace) -> None:
        from gateway import progress  # tqdm: the commands' only, loaded off the event loop

        self.every: float = args.progress_every
        self.wanted = not args.no_progress and sys.stderr is not None
        self._progress = progress

    def counting(
        self, name: str, bar: str, total: int | None, unit: str, done: str = "done"
    ) -> Counting | None:
        """A count of ``unit`` (of ``total``, when known; ``done``: the word for those got
        through without one, ``stored``), its lines ``gateway NAME: …``, its bar named ``bar``;
        None when not wanted."""
        quiet = not self.wanted
        return self._progress.counting(name, bar, total, unit, every=self.every, quiet=quiet, done=done)


def _progress_options(parser: argparse.ArgumentParser, batch: str) -> None:
    """``--no-progress`` and ``--progress-every`` of a long command (``import``, ``reclassify``,
    ``sync --once``, ``mirror --once``); ``batch``: when 0 says, ``every batch read``."""
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, nor the progress lines off a terminal"
    )
    parser.add_argument(
        "--progress-every",
        type=_progress_seconds,
        default=PROGRESS_EVERY,
        metavar="SECONDS",
        help="when stderr is not a terminal (cron, systemd, 2>log), a plain progress line every SECONDS "
        f"(default {PROGRESS_EVERY:g}; 0: after {batch}); on a terminal, the bar",
    )


def _progress_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86_400:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number of seconds 0..86400, got {text!r}")
    return seconds


def cmd_import(args: argparse.Namespace) -> int:
    # The readers and the progress bar: this command only.
    from gateway.importcmd import check_command_line, import_command
    from gateway.importrun import UsageError

    try:  # a command-line mistake is said before the config is read, as an option given twice is
        check_command_line(args)
    except UsageError as err:
        print(f"gateway import: {err}", file=sys.stderr)
        return 2
    try:
        # An import listens on nothing: where the admin API would listen is not its concern (the
        # production config, whose public admin.listen `run --admin-public` allows, imports too).
        # Nor does it connect to the central store: its rows go there with the gateway's sync.
        settings = load_settings(args.config, admin_public=True, offline=True, central=False)
    except ConfigError as err:
        return _fail_config(args.config, err)
    warn_of_secret(settings)
    code = import_command(settings, args)
    for sig in STOP_SIGNALS:  # the import is over: a stop now would only change its exit status
        signal.signal(sig, signal.SIG_IGN)
    return code


def cmd_sync(args: argparse.Namespace) -> int:
    """One complete sync round to the central store (for cron); rows delivered per table."""
    try:
        settings = load_settings(args.config, offline=True)
    except ConfigError as err:
        return _fail_config(args.config, err)
    if not settings.central_url:
        print(f"gateway: {args.config}: central.url is not set: there is no central store", file=sys.stderr)
        return EXIT_CONFIG
    if problem := settings.store_problem():  # a mistyped path made an empty store (until 2026-12-05)
        print(problem, file=sys.stderr)
        return 1
    from gateway.keys import key_check
    from gateway.metrics import Metrics
    from storage.sync import Sync

    sync = Sync(
        settings.store_path,
        settings.central_url,
        settings.options.central,
        Metrics(),
        node=settings.node,
        key_check=key_check(settings.secret),
        secret=settings.secret,
    )
    # A first round over a large store takes a while (30k-100k rows/s): on a terminal, a bar
    # over the rows to deliver; off one, a line now and then.
    shown = Shown(args)
    counts: list[Counting] = []

    def progress(total: int) -> Callable[[int], object]:
        count = shown.counting("sync", "sync", total, "rows")
        assert count is not None  # asked for only when wanted
        counts.append(count)
        return count.update

    failure = None
    try:
        once = sync.once(
            progress if shown.wanted else None, waiting=_waiting("sync", "store"), wait=args.wait
        )
        delivered = asyncio.run(once)
    except Exception as err:  # no traceback
        failure = _round_failure(err, "sync", "store", sync.key)
    finally:
        for count in counts:  # before any message: it goes on a line of its own
            count.close()
    if failure is not None:
        _say_failure(f"gateway: sync failed: {failure}")
        return 1
    return _rows_per_table(delivered)


def _waiting(kind: str, of: str) -> Callable[[Holder], None]:
    """What ``sync --once`` and ``mirror --once`` say, once, when another process's round of the
    same file runs (the gateway's task): they wait for it to end (``storage.roundlock``). As
    their progress lines: nowhere with stderr closed (``2>&-``), and one that cannot be written
    (its reader gone) goes nowhere, the command waiting still (it ended with exit status 120)."""
    from gateway import progress  # loaded already (``Shown``), off the event loop

    def waiting(holder: Holder) -> None:
        progress.say(f"gateway: waiting for the running {kind} round of this {of} ({holder}) to end…")

    return waiting


def _say_failure(line: str) -> None:
    """Why ``sync --once`` or ``mirror --once`` failed, on stderr as their waiting line is: one
    that cannot be written (its reader gone: ``2>&1 | head``) goes nowhere, and the command
    ends with its exit status 1 (a ``--wait 0`` that gave up ended with 120 instead, as if the
    output were the trouble); nothing with stderr closed (``2>&-``), where a print went to
    standard output among the rows."""
    from gateway import progress  # loaded already (``Shown``), off the event loop

    progress.say(line)


def _round_failure(err: Exception, kind: str, of: str, key: str, *told: type[Exception]) -> str:
    """Why ``sync --once`` or ``mirror --once`` (``kind``, of the ``of``) failed, as the operator
    fixes it: the round still running that it gave up waiting for; a store or central schema it
    cannot use (and the ``told`` refusals), in their own words; PostgreSQL away or refusing, with
    what to check in ``key`` (``central.url (NAME)``); anything else by its type and text."""
    from storage import central  # asyncpg: the postgres extra, imported by then

    if isinstance(err, RoundTimeout):
        return (
            f"the running {kind} round of this {of} ({err.holder}) did not end within {err.seconds:g} s"
            " (--wait); it goes on, and does what this round would have done: run this again later,"
            " or wait longer with --wait SECONDS"
        )
    if isinstance(err, (SchemaTooNew, central.ForeignSchema, sqlite3.DatabaseError, *told)):
        return str(err)
    if isinstance(err, central.PG_ERRORS):
        reader = "mirror" if kind == "mirror" else "central"
        return f"{central.failed_what(err)}: {central.explain(err, key, reader=reader)}"
    return f"{type(err).__name__}: {err}"


def _wait_arg(text: str) -> float:
    """``--wait``: seconds, 0 or more (0: do not wait for a round running)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):  # nan, inf and negatives fail this
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text!r}")
    return seconds


WAIT_HELP = (
    "seconds to wait for a round of the same file running in another process (the gateway's) to"
    " end before giving up with exit status 1; 0: do not wait (default: %(default)g)"
)


def _rows_per_table(rows: Mapping[str, int]) -> int:
    """A round's rows per table and their total, on standard output (``sync``, ``mirror``); 0."""
    for table, count in rows.items():
        print(f"{table}: {count:,} rows")
    print(f"total: {sum(rows.values()):,} rows")
    return 0


def _no_mirror(config: str, settings: Settings, option: str = "") -> str:
    """Why a command asked for the reporting mirror has none: ``central.mirror_path`` not set,
    and ``central.url`` named too only when it is not set either ("(and central.url) is not set"
    said it was not on a node whose central.url is set)."""
    also = "" if settings.central_url else " (and needs central.url, which is not set either)"
    return f"gateway: {config}: {option}central.mirror_path is not set{also}: there is no reporting mirror"


def cmd_mirror(args: argparse.Namespace) -> int:
    """One complete round of the reporting mirror (a first fill, or cron); rows stored per table."""
    try:
        settings = load_settings(args.config, offline=True)
    except ConfigError as err:
        return _fail_config(args.config, err)
    if settings.mirror_path is None:
        print(_no_mirror(args.config, settings), file=sys.stderr)
        return EXIT_CONFIG
    from gateway.metrics import Metrics
    from storage.mirror import Mirror

    mirror = Mirror(settings.mirror_path, settings.central_url, settings.options.central, Metrics())
    # A first fill copies every node's rows (72 s for 1.25M): on a terminal, a bar of the rows
    # so far; off one, a line now and then (no total: how many PostgreSQL holds is not counted).
    count = Shown(args).counting("mirror", "mirror", None, "rows", done="stored")
    failure = None
    try:
        shown = None if count is None else lambda table, rows: count.update(rows)
        stored = asyncio.run(mirror.once(shown, waiting=_waiting("mirror", "mirror"), wait=args.wait))
    except Exception as err:  # no traceback
        failure = _round_failure(err, "mirror", "mirror", mirror.key)
    finally:
        if count is not None:  # before any message: it goes on a line of its own
            count.close()
    if failure is not None:
        _say_failure(f"gateway: mirror failed: {failure} (the mirror keeps what it had)")
        return 1
    return _rows_per_table(stored)


CONFIG_HELP = "config file (default: %(default)s)"
ADMIN_PUBLIC_HELP = "let admin.listen be a public address (as admin.allow_public = true does)"


class _StoreOnce(argparse._StoreAction):
    """An option's value, refused (exit 2, naming it) when the option is given twice: argparse
    keeps the last, so ``sink send --user a --user b`` would send b's calls alone, ``erase -c
    prod.toml … -c test.toml`` erase in the test store, and ``report --model linear --model
    all`` drop one, as the report endpoints refuse ``model=linear&model=all``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string is not None:
            given: dict[str, Any] = namespace.__dict__.setdefault("_options_given", {})
            if self.dest in given:
                name = "/".join(self.option_strings)
                parser.error(
                    f"{name}: given twice ({given[self.dest]!r}, then {values!r}); give each option once"
                )
            given[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """Every command's parser (subcommands inherit the class): an option taking a value may be
    given once and in full, and a wrong command line is told in one line naming what is wrong."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # An option cut short (``--dry`` for ``--dry-run``) is an unknown one: taken for the
        # option it begins, it would change meaning, or stop working, once an option beginning
        # the same is added.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)
        self._given: list[str] | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, keeping the words this parser was given (a sub-command's parser is
        given those after its name) for ``error`` to read again."""
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        """One line, exit 2: ``gateway report: error: argument --model: invalid choice: …; see
        `gateway report --help```. argparse put its whole usage block first (ten lines for
        ``report``), the line that names the mistake last, under it."""
        wrong = re.search(r"invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if wrong is not None and message.startswith("argument COMMAND:"):
            self._option_before_command(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)))
        if wrong is not None:  # `gateway reprot`, `--model lineer`: the choice it is a slip for
            meant = _meant(wrong.group(1), re.findall(r"'([^']*)'", wrong.group(2)))
            if meant is not None:
                message = message.replace(" (choose from ", f" (did you mean {meant}? choose from ", 1)
        missing = re.fullmatch(r"the following arguments are required: (.*)", message)
        if missing is not None:
            message = self._unknown_before_missing(missing.group(1).split(", ")) or message
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")

    def _option_before_command(self, value: str, commands: list[str]) -> None:
        """Exit 2 saying so when the COMMAND argparse refused is the value of an option written
        before it (``gateway -c gw.toml sync``, as ``git -C DIR`` is written; ``gateway sink -c
        gw.toml send``): it was told ``invalid choice: 'gw.toml'``, the option unsaid (until
        2026-12-07). Returns otherwise."""
        words = self._given or []
        at = next(
            (i for i in range(1, len(words)) if words[i] == value and words[i - 1].startswith("-")), None
        )
        if at is None:
            return
        option = f"{words[at - 1]} {value}"
        command = next((word for word in words[at + 1 :] if word in commands), None)
        where = (
            f"{self.prog} {command} {option} …"
            if command is not None
            else f"{self.prog} COMMAND {option} …; COMMAND: {', '.join(commands)}"
        )
        self.exit(
            2,
            f"{self.prog}: error: {option}: an option goes after the command it is for ({where});"
            f" see `{self.prog} --help`\n",
        )

    def _unknown_before_missing(self, missing: list[str]) -> str | None:
        """``unrecognized arguments: --usr x (did you mean --user?)`` for ``sink send --usr x``:
        argparse checks the required options before the unknown ones, so the typo was told as
        ``the following arguments are required: --user``. What is still missing, meant by no
        unknown option, follows. None when no option given is unknown."""
        if self._given is None:
            return None
        required = [action for action in self._actions if action.required]
        for action in required:  # the words read again, for argparse's own list of unknown ones
            action.required = False
        try:
            _, unknown = super().parse_known_args(self._given, None)
        finally:
            for action in required:
                action.required = True
        if not any(word.startswith("-") for word in unknown):
            return None
        meant = _meant_list(self, unknown)
        still = [name for name in missing if not set(name.split("/")) & set(meant)]
        said = f"unrecognized arguments: {' '.join(unknown)}{_meant_options(self, unknown)}"
        return said + (f"; the following arguments are required: {', '.join(still)}" if still else "")

    def _print_message(self, message: str, file: Any = None) -> None:  # a SupportsWrite[str]
        """As argparse's, which drops every OSError of the write (``--help`` with its output
        closed), but for a reader gone away (``gateway --help | head -1``): ``main`` ends
        quietly with ``EXIT_PIPE`` on it, as every command does."""
        if not message:
            return
        file = file or sys.stderr
        try:
            file.write(message)
            file.flush()  # a reader gone shows here, not at exit as Python's complaint
        except BrokenPipeError:
            raise
        except (AttributeError, OSError):
            pass


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(prog="gateway", description="First-party tracking gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run the proxy and the admin API")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    run.add_argument(
        "--dev", action="store_true", help="generate ephemeral secrets for missing env variables"
    )
    run.add_argument("--admin-public", action="store_true", help=ADMIN_PUBLIC_HELP)
    run.add_argument("--log-format", choices=("json", "text"), help="override log.format")
    # Set by the supervisor for the processes it starts; not for operators.
    run.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    run.add_argument("--listen", help=argparse.SUPPRESS)
    run.add_argument("--admin-listen", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    doctor = sub.add_parser(
        "doctor",
        help="check config, secrets, store, GeoIP files, senders, admin address, workers, upstream,"
        " PostgreSQL, the reporting mirror, sinks",
    )
    doctor.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    doctor.add_argument(
        "--timeout",
        type=timeout_arg,
        default=3.0,
        help="seconds per network check, more than 0, at most 600 (default: %(default)s)",
    )
    doctor.set_defaults(func=cmd_doctor)
    check = sub.add_parser("check", help="validate a config and print the resolved settings")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    check.add_argument("--dev", action="store_true", help="accept missing secrets as --dev would")
    check.add_argument("--admin-public", action="store_true", help=ADMIN_PUBLIC_HELP)
    check.add_argument(
        "--quiet",
        action="store_true",
        help="print the one OK line, not the resolved settings (a unit's ExecStartPre: the journal)",
    )
    check.set_defaults(func=cmd_check)
    init = sub.add_parser("init", help="write a starter config")
    init.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument(
        "--store",
        metavar="PATH",
        help="storage.path, the SQLite store (default: gateway.db beside the config);"
        " under deploy/gateway.service, /var/lib/gateway/gateway.db",
    )
    init.set_defaults(func=cmd_init)
    imp = sub.add_parser(
        "import", help="replay access logs, flow dumps or Segment archives through the pipeline, offline"
    )
    imp.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="history files, a request log's read oldest first (gzip, bzip2 and xz are recognised by their"
        " bytes); - reads standard input",
    )
    imp.add_argument(
        "--format",
        choices=("combined", "json-lines", "mitm", "segment"),
        help="file format (required to import)",
    )
    imp.add_argument(
        "--list", action="store_true", help="list the store's import runs (number, time, files, rows added)"
    )
    imp.add_argument(
        "--undo",
        type=_run_number,
        metavar="RUN",
        help="remove the rows import run RUN added (see --list; with --dry-run, only count them)",
    )
    imp.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    imp.add_argument("--dry-run", action="store_true", help="replay and count; write nothing")
    imp.add_argument(
        "--host",
        type=_site_host,
        help="the site's host name for lines that do not record one (default: proxy.public_origin)",
    )
    imp.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=POINTER",
        help="json-lines: where a field is, e.g. --field time=/@timestamp (repeatable)",
    )
    imp.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        type=_network,
        metavar="IP_OR_CIDR",
        help="a load balancer the log was written behind: a line from it takes its client address "
        "from the logged X-Forwarded-For (repeatable; added to proxy.trusted_proxies)",
    )
    _progress_options(imp, "every batch read")
    imp.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="processes parsing and replaying log lines, 1..256 (default 1: bot velocity and behaviour are "
        "judged over the whole log, in order, as one live process judges them; more are faster, "
        "but each judges only the chunks it replays)",
    )
    # A stop held while the command loaded is heard by the import itself (``until_stopped``).
    imp.set_defaults(func=cmd_import, hears_stop_signals=True)
    replay = sub.add_parser("replay-bad", help="re-validate kept bad events and ingest those that now pass")
    replay.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    replay.add_argument("--sender", help="only this [[sources]] sender's bad events")
    replay.add_argument("--dry-run", action="store_true", help="report what would pass; change nothing")
    replay.set_defaults(func=cmd_replay_bad)
    send = sub.add_parser("send-test-event", help="sign and send a test conversion to /_gw/events")
    send.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    send.add_argument(
        "--creator", type=creator_arg, default="cr_test1", help="creator ID credited (default: %(default)s)"
    )
    send.add_argument("--value", type=value_arg, default=50.0, help="conversion value (default: %(default)s)")
    send.add_argument(
        "--currency", type=currency_arg, default="USD", help="three letters (default: %(default)s)"
    )
    send.add_argument(
        "--url", type=url_arg, help="endpoint (default: the config's proxy.listen + reserved_prefix + events)"
    )
    send.add_argument("--sender", help="[[sources]] name (default: the first standard-format one)")
    send.set_defaults(func=cmd_send_test_event)
    recl = sub.add_parser(
        "reclassify", help="recompute the channel of stored touchpoints after a rule change"
    )
    recl.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    recl.add_argument("--dry-run", action="store_true", help="count the changes, write nothing")
    recl.add_argument(
        "--batch-size",
        type=_batch_size,
        default=1000,
        help="touchpoints per transaction, 1..100000 (default: %(default)s)",
    )
    recl.add_argument(
        "--store",
        choices=("local", "mirror", "both"),
        default="both",
        help="this node's store, the reporting mirror (central.mirror_path), or both, in that order"
        " (default: both; the local store alone where no mirror is set)",
    )
    _progress_options(recl, "every batch")
    recl.add_argument(
        "--host",
        type=_site_host,
        help="the site's host: an Internal touchpoint from another site is classified again"
        " (default: proxy.public_origin; without either, every Internal one stays so)",
    )
    recl.set_defaults(func=cmd_reclassify)
    sync = sub.add_parser("sync", help="copy the local event log to the central store ([central])")
    sync.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    sync.add_argument("--once", action="store_true", required=True, help="one round, then exit (for cron)")
    _progress_options(sync, "every batch delivered")
    sync.add_argument("--wait", type=_wait_arg, default=LONG_WAIT_SECONDS, metavar="SECONDS", help=WAIT_HELP)
    sync.set_defaults(func=cmd_sync)
    mirror = sub.add_parser(
        "mirror",
        help="copy every node's rows of the central store into the reporting mirror (central.mirror_path)",
    )
    mirror.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    mirror.add_argument("--once", action="store_true", required=True, help="one round, then exit (for cron)")
    _progress_options(mirror, "every batch stored")
    mirror.add_argument(
        "--wait", type=_wait_arg, default=LONG_WAIT_SECONDS, metavar="SECONDS", help=WAIT_HELP
    )
    mirror.set_defaults(func=cmd_mirror)
    sink = sub.add_parser("sink", help="sinks ([[sinks]]): re-send one user's calls")
    sink_sub = sink.add_subparsers(dest="sink_command", metavar="COMMAND", required=True)
    send_user = sink_sub.add_parser("send", help="re-send one user's identify and track calls now")
    send_user.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    send_user.add_argument(
        "--user",
        required=True,
        help="the site's raw user ID, or a user_key as a journey or a sink's userId shows it (read as"
        " a key first, when a user has it)",
    )
    send_user.add_argument("--sink", help="only this sink (default: every [[sinks]] entry)")
    send_user.set_defaults(func=cmd_sink_send)
    report_cli.add_parser(sub, DEFAULT_CONFIG)
    # For `gateway --help` and the README's checks: ``main`` hands its arguments to mitmdump before
    # parsing. None is an option here (no argument holds a NUL): `--mode …` is mitmdump's, --help too.
    mitm = sub.add_parser(
        mitmlaunch.COMMAND,
        add_help=False,
        prefix_chars="\0",
        help="mitmdump with the gateway's addon, SIGHUP held until the addon reloads on it (see README)",
    )
    mitm.add_argument("arguments", nargs=argparse.REMAINDER, help="mitmdump's own arguments")
    add_privacy_commands(sub, DEFAULT_CONFIG)
    add_rules_parser(sub, DEFAULT_CONFIG)
    _describe(parser)
    return parser


EXAMPLES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("run",): (
        "gateway run -c /etc/gateway/gateway.toml",
        "gateway run --dev --log-format text   # try it: ephemeral secrets",
    ),
    ("doctor",): (
        "gateway doctor -c /etc/gateway/gateway.toml",
        "gateway doctor --timeout 10   # a slow PostgreSQL",
    ),
    ("check",): (
        "gateway check -c /etc/gateway/gateway.toml",
        "gateway check -c /etc/gateway/gateway.toml --quiet   # one line, for a unit's ExecStartPre",
    ),
    ("init",): ("gateway init -c /etc/gateway/gateway.toml --store /var/lib/gateway/gateway.db",),
    ("import",): (
        "gateway import /var/log/nginx/access.log* --format combined --host www.example.com",
        "gateway import events.jsonl.gz --format json-lines --field time=/@timestamp --dry-run",
        "gateway import --list",
        "gateway import --undo 2 --dry-run   # what run 2 added, per table",
    ),
    ("replay-bad",): ("gateway replay-bad --dry-run", "gateway replay-bad --sender billing"),
    ("send-test-event",): ("gateway send-test-event --creator cr_test1 --value 49.90 --currency EUR",),
    ("reclassify",): ("gateway reclassify --dry-run   # count the changes first", "gateway reclassify"),
    ("sync",): ("gateway sync --once -c /etc/gateway/gateway.toml --wait 60",),
    ("mirror",): ("gateway mirror --once -c /etc/gateway/gateway.toml",),
    ("sink", "send"): ("gateway sink send --user 42", "gateway sink send --user 42 --sink segment"),
    ("report",): (
        "gateway report --model all --since 2026-11-01 --until 2026-12-01",
        "gateway report --payouts --format csv > payouts.csv",
        "gateway report --fraud --since 2026-11-01",
    ),
    ("purge",): ("gateway purge --dry-run", "gateway purge"),
    ("erase",): (
        "gateway erase alice@example.com --dry-run   # what would go, per table",
        "gateway erase alice@example.com",
        "gateway erase --visitor 0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    ),
    ("rules", "try"): (
        "gateway rules try session.har",
        "gateway rules try session.har.gz --all --format json",
    ),
}
"""The command lines each command's --help ends with (``-c`` is ``gateway.toml`` where left out)."""


def _describe(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> None:
    """Each command's --help starts with what it does, as ``gateway --help`` lists it, and ends
    with its examples (until 2026-12-07 it listed the options alone)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        said = {choice.dest: choice.help for choice in action._choices_actions}
        for name, command in action.choices.items():
            if name == mitmlaunch.COMMAND:  # its --help is mitmdump's own
                continue
            command.description = command.description or said.get(name)
            examples = EXAMPLES.get((*words, name))
            if examples:
                command.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
                command.formatter_class = _ExamplesFormatter
            _describe(command, (*words, name))


class _ExamplesFormatter(argparse.HelpFormatter):
    """Wraps the description as argparse does, but keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


EXIT_PIPE = 128 + 13
"""The reader of stdout went away (``gateway check | head -1``): the status of a command
SIGPIPE ends, as ``cat`` would exit, so ``set -o pipefail`` sees the same."""


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the command ``args`` ran (``gateway sink send``'s, not ``gateway``'s)."""
    while True:
        found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, found[0].dest, None) if found else None
        if not found or chosen not in found[0].choices:
            return parser
        parser = found[0].choices[chosen]


def _meant(given: str, known: Sequence[str]) -> str | None:
    """The one of ``known`` that ``given`` is a slip of the keyboard for, if one is close."""
    import difflib

    found = difflib.get_close_matches(given, known, n=1, cutoff=0.6)
    return found[0] if found else None


def _meant_options(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    """`` (did you mean --model?)`` of ``--modle``: each option ``unknown`` holds that is close
    to one of the command's (until 2026-12-07 the operator looked it up in --help)."""
    meant = _meant_list(parser, unknown)
    return f" (did you mean {', '.join(meant)}?)" if meant else ""


def _meant_list(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> list[str]:
    """The command's options the words of ``unknown`` are slips for, each once."""
    known = [
        o
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        for o in a.option_strings
        if o.startswith("--")
    ]
    # Compared without the dashes every option has: with them, --bogus was close to --host.
    bare = [option[2:] for option in known]
    meant = [
        f"--{found}"
        for word in unknown
        if word.startswith("--") and (found := _meant(word.partition("=")[0][2:], bare)) is not None
    ]
    return list(dict.fromkeys(meant))


def main(argv: list[str] | None = None) -> int:
    journal_excepthooks()  # a crash's traceback, in the journal, is an error's (<3>), not info
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == [mitmlaunch.COMMAND]:  # every argument after it is mitmdump's, not ours
        return mitmlaunch.exec_mitmdump(given[1:])
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except BrokenPipeError:  # ``--help``'s reader gone (``_Parser._print_message``)
        _stdout_to_devnull()
        return EXIT_PIPE
    if unknown:  # named by the command whose --help lists its options, not by `gateway --help`
        command = _command_parser(parser, args)
        command.error(f"unrecognized arguments: {' '.join(unknown)}{_meant_options(command, unknown)}")
    if args.func is cmd_run and args.worker is None:
        # The supervisor's own options for its workers: hidden, and an operator's
        # ``--listen 0.0.0.0:80`` was taken and ignored without a word.
        for flag, given, key in (
            ("--listen", args.listen, "proxy.listen"),
            ("--admin-listen", args.admin_listen, "admin.listen"),
        ):
            if given is not None:
                parser.exit(
                    2,
                    f"gateway run: error: {flag} is not an option (the gateway gives it to its own worker"
                    f" processes); set {key} in the config ({args.config}); see `gateway run --help`\n",
                )
    if args.func is cmd_run and args.worker is not None and not _from_supervisor():
        # Typed by an operator, it started one lone worker: no supervisor to restart it or pass
        # on a reload, and the admin API (worker 0's, on sockets the supervisor hands) nowhere.
        parser.exit(
            2,
            "gateway run: error: --worker is not an option (it is internal: the gateway gives it to"
            " the worker processes it starts itself); run `gateway run -c FILE`, with proxy.workers"
            f" in the config ({args.config}) for several processes; see `gateway run --help`\n",
        )
    if not getattr(args, "hears_stop_signals", False):
        # Held while the command loaded (``gateway/__main__.py``): one that came meanwhile has its
        # usual effect now, before the command begins.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if args.func is not cmd_run:  # `run` hears SIGHUP once it reloads on it (server, supervisor)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, RELOAD_SIGNALS)
    command_logging()
    try:
        code = int(args.func(args))
        # A pipe's reader gone shows here, not as Python's complaint at exit. No stdout at all
        # (started with it closed, ``>&-``): Python's print writes nowhere, and so does this.
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        # Not an error to report: the reader has what it wanted. What is still buffered goes
        # nowhere, or Python's flush at exit would print a second traceback.
        _stdout_to_devnull()
        return EXIT_PIPE
    except OSError as err:
        if err.filename is not None or err.errno not in (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT):
            raise
        # The output could not be written (``> file`` on a full disk); nothing of ours names a file.
        print(f"gateway: cannot write the output: {err.strerror}", file=sys.stderr)
        _stdout_to_devnull()
        return 1
    return code


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    raise SystemExit(main())
