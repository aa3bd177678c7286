"""The supervisor: with ``proxy.workers`` > 1, ``gateway run`` starts N worker processes.

Owns the worker processes and nothing of the application: it imports no
aiohttp, opens no store and serves no request, so nothing a request does can
take it down. It reserves the public port (a bound, ``SO_REUSEPORT`` socket that
never listens, one on each address ``proxy.listen`` resolves to, so port 0 becomes one concrete
port every worker shares) and the
admin port, starts ``gateway run --worker I`` for each worker — worker 0 first,
the others once its admin listener accepts — (each binds the public port with
``SO_REUSEPORT``; the kernel spreads connections), restarts a
worker that exits unexpectedly or whose event loop stops beating (``gateway/heartbeat.py``:
killed, then restarted alike), forwards SIGTERM/SIGINT (graceful stop), orders
a reload on SIGHUP (``RELOAD_ORDER``: a worker passes a SIGHUP of its own on to it), and
clears a worker's live gauges from the metrics files when it exits (its counters stay:
``/metrics`` adds up every worker's). It draws each day's cookieless salt and writes it
to every worker (``gateway/daysalt.py``), so every worker keys a cookieless visitor alike,
a restarted one too. It creates the memory where every worker counts bot velocity
(``gateway/sharedcounts.py``), so a burst spread over them is counted once. Worker 0 alone
runs the admin listener and the background tasks: they need one owner, and
worker 0 is restarted like any other. The supervisor listens on the admin port itself and hands
that socket to each worker 0, so a request made while worker 0 restarts waits for the next one
instead of being refused: on each address ``admin.listen`` resolves to (``localhost``: often
both ``127.0.0.1`` and ``::1``), as worker 0 listened when it bound it itself.

A worker that fails again and again at start (a port taken, a store it cannot
open, exit 2 for a config problem) makes the supervisor stop them all and exit
non-zero rather than loop for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from gateway import sharedcounts
from gateway.childsignals import (
    RELOAD_ORDER,
    RELOAD_ORDER_ENV,
    RELOAD_SIGNALS,
    STOP_SIGNALS,
    blocked,
    heard,
)
from gateway.daysalt import SALT_FD_ENV, DaySalt
from gateway.heartbeat import HEARTBEAT_ENV, Listener, interval
from gateway.metrics import MULTIPROCESS_ENV, count_worker_restart
from gateway.options import parse_listen, unresolvable
from gateway.sdnotify import WORKER_NOTIFY_ENV, Notifier, received, worker_channel
from gateway.sharedcounts import SHARED_COUNTS_FD_ENV

log = logging.getLogger("gateway.supervisor")

QUICK_EXIT = 2.0
"""A worker that exits within this many seconds of its start did not come up."""
RELOAD_GATHER = 0.2
"""Seconds a SIGHUP's reload waits for the SIGHUPs that come with it: one sent to the process
group reaches every worker too, and each passes it back (``gateway/server.py``); they make one
reload, which reads the file after the last of them came."""
MAX_QUICK_EXITS = 5
"""Quick exits in a row (of one worker) after which the supervisor gives up."""
ADMIN_FD_ENV = "GATEWAY_WORKER_ADMIN_FD"
"""Set by the supervisor for worker 0: the admin sockets it listens on (their file descriptors,
comma-separated: one for each address of ``admin.listen``), which the supervisor holds open
between worker 0's restarts, so a request then waits instead of being refused."""
EXIT_CONFIG = 2
HUNG = "was killed for hanging"
AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]
EXIT_START = 3
PORT_DRAWS = 10
"""How often a port 0 (of ``proxy.listen`` or ``admin.listen``) is drawn anew when the port drawn
on its first address is taken on another."""


def reserve(listen: str, key: str = "") -> tuple[list[socket.socket], str]:
    """Bind (never listen on) every address ``listen`` (of the config key ``key``) resolves to, as
    each worker then listens on every one (``localhost``: ``127.0.0.1`` and ``::1`` alike; until
    2026-12-05 the first alone was reserved and checked): the sockets, and the concrete
    ``HOST:PORT`` they hold."""
    return reserve_on(_resolved(listen, key), listen, key)


def reserve_on(infos: Sequence[AddrInfo], listen: str, key: str = "") -> tuple[list[socket.socket], str]:
    """Bind each of ``infos`` (``socket.getaddrinfo``'s answer for ``listen``) with
    ``SO_REUSEPORT``, never listening, all on one port (``_one_port``: a port 0 drawn again if
    another address has it taken), so every worker finds it free on each. Refused where a process
    listens already, on any of them (``_not_listened_on``). IPv6 sockets take IPv6 alone, as a
    worker's listener does."""

    def reserved(family: int, kind: int, proto: int, address: tuple[Any, ...]) -> socket.socket:
        if address[1]:
            _not_listened_on(family, kind, proto, address)
        return _bound(family, kind, proto, address, reuse_port=True)

    return _one_port(infos, listen, key, reserved)


def _one_port(
    infos: Sequence[AddrInfo],
    listen: str,
    key: str,
    bind: Callable[[int, int, int, tuple[Any, ...]], socket.socket],
) -> tuple[list[socket.socket], str]:
    """``bind`` each of ``infos`` (once each), all on one port: a port 0 becomes the first's
    concrete one, drawn again (up to ``PORT_DRAWS`` times) if another address has it taken. The
    sockets, and the concrete ``HOST:PORT`` they hold; an ``OSError`` names ``listen`` and
    ``key``, every socket closed."""
    host, port = parse_listen(listen)
    named = f" ({key})" if key else ""
    unique = list(dict.fromkeys((i[0], i[1], i[2], i[4]) for i in infos))
    for draw in range(1, PORT_DRAWS + 1):
        socks: list[socket.socket] = []
        try:
            for family, kind, proto, address in unique:
                wanted = socks[0].getsockname()[1] if socks else port
                socks.append(bind(family, kind, proto, (address[0], wanted, *address[2:])))
        except OSError as err:
            for sock in socks:
                sock.close()
            if not port and socks and err.errno == errno.EADDRINUSE and draw < PORT_DRAWS:
                continue  # the port drawn on the first address is taken on another: draw again
            raise OSError(err.errno, f"cannot listen on {listen}{named}: {err.strerror}") from err
        break
    shown = f"[{host}]" if ":" in host else host
    return socks, f"{shown}:{socks[0].getsockname()[1]}"


def _bound(family: int, kind: int, proto: int, address: tuple[Any, ...], reuse_port: bool) -> socket.socket:
    """A socket bound to ``address`` (closed if it cannot be); an IPv6 one takes IPv6 alone."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _resolved(listen: str, key: str) -> Sequence[AddrInfo]:
    host, port = parse_listen(listen)
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:  # as one process says it (this said "cannot start: Name or …")
        named = f" ({key})" if key else ""
        raise OSError(err.errno, f"cannot listen on {listen}{named}: {unresolvable(host, err)}") from err


def listen_every(listen: str, key: str = "") -> tuple[list[socket.socket], str]:
    """Listen on every address ``listen`` (of the config key ``key``) resolves to, as worker 0's
    own listener did (``localhost``: ``127.0.0.1`` and ``::1`` alike; until 2026-12-05 the
    supervisor listened on the first alone, and a client trying the other was refused): the
    sockets, and the concrete ``HOST:PORT`` the first holds."""
    return listen_on(_resolved(listen, key), listen, key)


def listen_on(infos: Sequence[AddrInfo], listen: str, key: str = "") -> tuple[list[socket.socket], str]:
    """Listen on each of ``infos`` (``socket.getaddrinfo``'s answer for ``listen``), all on one
    port (``_one_port``: a port 0 becomes the first's concrete one, drawn again if another address
    has it taken, as ``reserve_on`` draws it; until 2026-12-05 such a start failed): the worker is
    told one ``HOST:PORT``. IPv6 sockets take IPv6 alone, as asyncio's (worker 0's own
    listener's) did."""

    def listening(family: int, kind: int, proto: int, address: tuple[Any, ...]) -> socket.socket:
        sock = _bound(family, kind, proto, address, reuse_port=False)
        try:
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    return _one_port(infos, listen, key, listening)


def _not_listened_on(family: int, kind: int, proto: int, address: tuple[object, ...]) -> None:
    """Raise ``OSError`` if a process listens on ``address`` already. ``SO_REUSEPORT`` would
    let the reservation (and then every worker) share the port with any process of the same
    user that set it too — another gateway's workers: the kernel would spread the visitors over
    both gateways and their two stores, and neither would say so (until 2026-12-05). A socket
    without it, bound the same way, is refused while anyone listens there."""
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        if family == socket.AF_INET6:  # ``[::]`` is no conflict with ``0.0.0.0``, as reserved
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
    finally:
        probe.close()


class Supervisor:
    """Keeps ``count`` workers running until told to stop; ``argv(i)`` is worker i's command."""

    def __init__(
        self,
        count: int,
        argv: Callable[[int], list[str]],
        env: dict[str, str],
        grace: float,
        first_ready: tuple[str, int] | None = None,
        reloaded: Callable[[], dict[str, str]] | None = None,
        max_tracked: int = 0,
        hang: float = 0.0,
        admin: tuple[int, ...] = (),
        notifier: Notifier | None = None,
    ) -> None:
        self.count = count
        self.argv = argv
        self.env = {**env, RELOAD_ORDER_ENV: RELOAD_ORDER.name}
        self.grace = grace
        self.first_ready = first_ready
        """An address worker 0 listens on (the admin listener): the others start once it accepts,
        so whoever reaches the public port finds the admin API up too."""
        self.reloaded = reloaded
        """Called on SIGHUP before the workers are told to reload: environment for the workers
        started from then on (the reload they should run; empty when the new config is refused)."""
        self.reload_due: asyncio.TimerHandle | None = None
        """The reload asked for by a SIGHUP, about to start (``RELOAD_GATHER``)."""
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()
        self.failed = False
        self.salt = DaySalt()
        """The cookieless salt of the day, which every worker keys with."""
        self.salt_pipes: dict[int, int] = {}
        """Worker index → the pipe it reads each day's salt from (its write end)."""
        self.counts = sharedcounts.create(max_tracked) if max_tracked else None
        """The velocity counts every worker shares (``gateway.sharedcounts``): a memory file for
        ``bots.max_tracked`` keys, the same for each worker started, kept until the end."""
        self.hang = hang
        """``proxy.worker_hang_seconds``: a worker whose event loop has not beaten for this long
        is killed and restarted (0: never)."""
        self.listeners: dict[int, Listener] = {}
        """Worker index → the pipe its event loop beats on (``gateway/heartbeat.py``)."""
        self.hung: set[int] = set()
        """Workers killed for their silence, not yet restarted."""
        self.admin = admin
        """The listening admin sockets (their file descriptors, this object's to close) handed to
        each worker 0; none: worker 0 binds ``admin.listen`` itself."""
        self.notifier = notifier
        """systemd (``NOTIFY_SOCKET``), told ``READY=1`` once every worker listens, ``RELOADING=1``
        and ``READY=1`` around a reload once every worker has reloaded, ``STOPPING=1``; None: not
        run by systemd as ``Type=notify``, and the workers report nothing."""
        self.channels: dict[int, socket.socket] = {}
        """Worker index → the supervisor's end of the socket pair it reports on (with a notifier)."""
        self.ready: set[int] = set()
        """Workers that said ``READY=1`` since their start."""
        self.mid_reload: set[int] = set()
        """Workers that said ``RELOADING=1`` and not yet ``READY=1``."""
        self.announced = False
        """Whether systemd was told ``READY=1`` (every worker listening, once)."""
        self.reloading: set[int] | None = None
        """The workers a reload told to systemd waits for (None: no such reload)."""
        self.told_reload = False
        """systemd was told ``RELOADING=1`` for the reload about to start (``reload_due``)."""

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        heard(RELOAD_SIGNALS)  # held since the process began (``gateway/__main__.py``)
        days = asyncio.create_task(self._next_days(), name="next-days")
        watch = asyncio.create_task(self._watch(), name="watch") if self.hang else None
        keepers = [asyncio.create_task(self._keep(0), name="worker-0")]
        await self._first_up()
        if not self.stopping.is_set():
            keepers += [asyncio.create_task(self._keep(i), name=f"worker-{i}") for i in range(1, self.count)]
        await self.stopping.wait()
        if self.notifier is not None:
            self.notifier.stopping()
        self._close_admin()  # new admin connections refused once worker 0 stops taking them
        # Those still running: one that failed (the reason for this stop) or is between restarts
        # is not stopped (until 2026-12-05 every worker ever started was counted).
        running = sum(proc.returncode is None for proc in self.procs.values())
        log.info("stopping %d worker(s) (grace %.0f s)", running, self.grace)
        self._forward(signal.SIGTERM)
        done, pending = await asyncio.wait(keepers, timeout=self.grace + 5)
        for index, proc in self.procs.items():
            if proc.returncode is None:
                log.error("worker %d did not stop within the grace period; killing it", index)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        codes = [task.result() for task in done] + list(await asyncio.gather(*pending))
        _ignore_stop_signals(loop)  # every worker has exited: what is left cannot be stopped better
        days.cancel()
        if watch is not None:
            watch.cancel()
        for index in list(self.salt_pipes):
            self._close_salt_pipe(index)
        for listener in self.listeners.values():
            listener.close()
        for index in list(self.channels):
            self._close_channel(index)
        self._close_admin()
        if self.counts is not None:
            os.close(self.counts)
        return 1 if self.failed or any(codes) else 0

    async def _next_days(self) -> None:
        """At each UTC midnight, a new salt for the new day, written to every worker; the old
        one is dropped."""
        while True:
            now = datetime.now(UTC)
            midnight = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
            await asyncio.sleep((midnight - now).total_seconds() + 0.01)
            self.new_day()

    def new_day(self) -> None:
        """If the UTC day changed: draw its salt and write it to every worker."""
        if self.salt.day == datetime.now(UTC).date():
            return
        record = self.salt.record()
        for index, fd in list(self.salt_pipes.items()):
            try:
                os.write(fd, record)  # 40 bytes, non-blocking: whole, or the pipe is full or gone
            except OSError as err:
                log.error("worker %d did not take the new day's salt (%s)", index, err)

    async def _watch(self) -> None:
        """Kill a worker whose event loop has not beaten for ``hang`` seconds: it holds its share
        of the public port, and visitors the kernel hands it wait for nothing. Its keeper
        (``_keep``) restarts it as it restarts a crashed one. Not once stopping: a worker that does
        not stop within the grace is killed then anyway."""
        loop = asyncio.get_running_loop()
        tick = interval(self.hang)
        last = loop.time()
        while not self.stopping.is_set():
            await asyncio.sleep(tick)
            now = loop.time()
            held = now - last > self.hang  # this process itself did not run meanwhile
            last = now
            for index, listener in list(self.listeners.items()):
                proc = self.procs.get(index)
                if self.stopping.is_set():
                    return
                if proc is None or proc.returncode is not None or index in self.hung:
                    continue
                listener.hear(now)
                if held:
                    listener.forgive(now)
                    continue
                if (why := listener.silent(now, self.hang)) is None:
                    continue
                log.error(
                    "worker %d (pid %d) is hung: %s (proxy.worker_hang_seconds = %g); killing it",
                    index,
                    proc.pid,
                    why,
                    self.hang,
                )
                self.hung.add(index)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _close_salt_pipe(self, index: int) -> None:
        fd = self.salt_pipes.pop(index, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close_admin(self) -> None:
        for fd in self.admin:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.admin = ()

    def _close_channel(self, index: int) -> None:
        sock = self.channels.pop(index, None)
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _reported(self, index: int) -> None:
        """What worker ``index`` said on its channel (``READY=1`` listening or reloaded,
        ``RELOADING=1``), and what systemd is told of it."""
        sock = self.channels.get(index)
        if sock is None:
            return
        for field in received(sock):
            if field == "RELOADING=1":
                self.mid_reload.add(index)
            elif field == "READY=1":
                self.ready.add(index)
                if index in self.mid_reload and self.reloading is not None:
                    self.reloading.discard(index)
                self.mid_reload.discard(index)
        self._tell()

    def _gone(self, index: int) -> None:
        """Worker ``index`` exited: what it said is void, and a reload waits for it no more (its
        successor starts on the reloaded config)."""
        if self.notifier is None:
            return
        self._close_channel(index)
        self.ready.discard(index)
        self.mid_reload.discard(index)
        if self.reloading is not None:
            self.reloading.discard(index)
        self._tell()

    def _tell(self) -> None:
        """systemd's ``READY=1``: once every worker listens, and once every worker a reload
        ordered has reloaded (applied or refused). Never once stopping."""
        if self.notifier is None or self.stopping.is_set():
            return
        if not self.announced:
            if self.ready >= set(range(self.count)):
                self.announced = True
                self.notifier.ready(f"serving: {self.count} workers")
        elif self.reloading is not None and not self.reloading and not self.told_reload:
            self.reloading = None
            self.notifier.ready(f"serving: {self.count} workers, reloaded")

    def _close_listener(self, index: int) -> None:
        listener = self.listeners.pop(index, None)
        if listener is not None:
            listener.close()

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        """Start worker ``index``, the day's salt already in the pipe it reads each day's from."""
        read_end, write_end = os.pipe()
        heard, beats = os.pipe() if self.hang else (-1, -1)
        channel = worker_channel() if self.notifier is not None else None
        written = self.salt.record()
        try:
            os.write(write_end, written)  # 40 bytes: within any pipe's buffer
            if channel is not None:
                self._close_channel(index)  # a predecessor's: what it said is void
                self.ready.discard(index)
            os.set_blocking(write_end, False)
            env, fds = {**self.env, SALT_FD_ENV: str(read_end)}, [read_end]
            if self.counts is not None:
                env[SHARED_COUNTS_FD_ENV] = str(self.counts)
                fds.append(self.counts)
            if beats >= 0:
                env[HEARTBEAT_ENV] = f"{beats}:{interval(self.hang)}"
                fds.append(beats)
            if index == 0 and self.admin:
                env[ADMIN_FD_ENV] = ",".join(map(str, self.admin))
                fds += self.admin
            if channel is not None:
                env[WORKER_NOTIFY_ENV] = str(channel[1].fileno())
                fds.append(channel[1].fileno())
            with blocked(RELOAD_SIGNALS):  # held by the worker from its start, until it reloads on it
                proc = await asyncio.create_subprocess_exec(*self.argv(index), env=env, pass_fds=fds)
        except BaseException:
            os.close(write_end)
            if heard >= 0:
                os.close(heard)
            if channel is not None:
                channel[0].close()
            raise
        finally:
            os.close(read_end)
            if beats >= 0:
                os.close(beats)
            if channel is not None:
                channel[1].close()
        self._close_salt_pipe(index)  # a predecessor's
        self.salt_pipes[index] = write_end
        if heard >= 0:
            self._close_listener(index)
            self.listeners[index] = Listener(heard, asyncio.get_running_loop().time())
        if channel is not None:
            self.channels[index] = channel[0]
            asyncio.get_running_loop().add_reader(channel[0].fileno(), self._reported, index)
        if (now := self.salt.record()) != written:  # midnight passed while it started
            with contextlib.suppress(OSError):
                os.write(write_end, now)
        return proc

    async def _first_up(self) -> None:
        """Wait until worker 0 answers on ``first_ready`` (or the supervisor is stopping): a
        request answered, as the admin socket this process holds takes connections before
        worker 0 does."""
        if self.first_ready is None:
            return
        while not self.stopping.is_set():
            if await self._answers(*self.first_ready):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.05)

    async def _answers(self, host: str, port: int) -> bool:
        """Whether the admin listener answers a health check (before the supervisor stops)."""
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return False
        try:
            writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
            while not self.stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    return bool(await asyncio.wait_for(reader.read(1), 0.2))
            return False
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _hangup(self) -> None:
        """A SIGHUP: systemd is told ``RELOADING=1`` first, before the gathering (it holds
        ``systemctl reload`` open only if that comes before ``ExecReload``'s ``kill`` exits; until
        2026-12-08 it came once ``RELOAD_GATHER`` was over, and the reload was done as far as
        systemd knew before the workers had begun it). Each SIGHUP is told, one within a reload
        under way too (``Type=notify-reload``'s SIGHUP is answered by a ``RELOADING=1`` of a
        later ``MONOTONIC_USEC``): ``READY=1`` comes once the last reload is done (``_tell``)."""
        if self.notifier is not None and self.announced and not self.stopping.is_set():
            self.notifier.reloading()  # not while starting: READY=1 is to come
            self.told_reload = True
        if self.reload_due is None:
            self.reload_due = asyncio.get_running_loop().call_later(RELOAD_GATHER, self._reload)

    def _reload(self) -> None:
        self.reload_due = None
        if self.stopping.is_set():  # a worker stopping may have dropped its handler: the order kills
            return
        if self.reloaded is not None:
            try:
                self.env = {**self.env, **self.reloaded()}
            except Exception:  # the supervisor outlives anything a config file does
                log.exception("reading the config for later worker starts failed")
        if self.told_reload:
            self.told_reload = False
            self.reloading = {index for index, proc in self.procs.items() if proc.returncode is None}
        # A worker under an earlier reload reloads again: a READY=1 of it still on its way is the
        # earlier one's, not taken for this one, which it begins with a RELOADING=1 of its own.
        self.mid_reload.clear()
        self._forward(RELOAD_ORDER)
        self._tell()  # no worker running to wait for

    def _forward(self, sig: signal.Signals) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _keep(self, index: int) -> int:
        """Run worker ``index``, restarting it until the supervisor stops; its last exit code."""
        quick = 0
        loop = asyncio.get_running_loop()
        while True:
            if self.stopping.is_set():
                return 0
            started = loop.time()
            proc = await self._spawn(index)
            self.procs[index] = proc
            if self.stopping.is_set():  # the stop was forwarded while this one was being started
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
            self._gone(index)
            self._close_salt_pipe(index)
            self._close_listener(index)
            how = HUNG if index in self.hung else ended(code)
            self.hung.discard(index)
            if metrics := self.env.get(MULTIPROCESS_ENV):
                mark_process_dead(proc.pid, metrics)  # its queue and lag are no longer live
            if self.stopping.is_set():
                return 0 if code in (0, -signal.SIGTERM) else code
            quick = quick + 1 if loop.time() - started < QUICK_EXIT else 0
            if code in (EXIT_CONFIG, EXIT_START) or quick >= MAX_QUICK_EXITS:
                log.critical("worker %d cannot run (%s); stopping the gateway", index, ended(code))
                self.failed = True
                self.stopping.set()
                return code
            log.error("worker %d %s; starting it again", index, how)
            if metrics:  # on worker 0's /metrics: a crash loop alerts, not only the log
                reason = "hung" if how == HUNG else "killed" if code < 0 else "exited"
                count_worker_restart(metrics, reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(0.1 * 2**quick, 5.0))
            if self.stopping.is_set():  # told to stop while it was down: nothing to restart
                return 0


def _ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Ignore SIGTERM and SIGINT from now on. The loop's handlers, once removed (as the loop's
    end removes them), give SIGTERM back its default action and SIGINT Python's
    KeyboardInterrupt: one more (Ctrl-C pressed twice, a deploy script that signals again) while
    the supervisor closed its files, removed its private folder or exited ended it by the
    signal (exit -15 for a clean stop, the folder sometimes left) until 2026-12-06. Held
    meanwhile, so none comes between the two."""
    with blocked(STOP_SIGNALS):
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)  # one held meanwhile is dropped as it is let through


def ended(code: int) -> str:
    """How a worker ended, in an operator's words: ``killed by SIGKILL`` (the OOM killer,
    ``kill -9``) where the log said ``exited (code -9)`` until 2026-12-05."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


def worker_count(configured: int) -> int:
    """``proxy.workers``: 0 means one per core this process may run on."""
    if configured:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_supervisor(
    count: int,
    argv: Callable[[int], list[str]],
    env: dict[str, str],
    grace: float,
    first_ready: tuple[str, int] | None = None,
    reloaded: Callable[[], dict[str, str]] | None = None,
    max_tracked: int = 0,
    hang: float = 0.0,
    admin: tuple[int, ...] = (),
    notifier: Notifier | None = None,
) -> int:
    supervisor = Supervisor(
        count, argv, env, grace, first_ready, reloaded, max_tracked, hang, admin, notifier
    )
    return asyncio.run(supervisor.run())


def python_argv() -> list[str]:
    """How to start this same gateway again: the interpreter and ``-m gateway``."""
    return [sys.executable, "-m", "gateway"]
