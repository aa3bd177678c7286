"""Structured logs: one JSON object per line, and a full run's log output holds no secret,
no raw client IP and no raw user ID."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.logs import JsonFormatter, Throttled, setup_logging
from tests.conftest import ENV, SECRET, TOKEN, GatewayFactory
from tests.gatewayproc import CHECKOUT, GatewayProcess, failures_said

CLIENT_IP = "203.0.113.77"
USER_EMAIL = "jane.raw.user@example.com"
WRONG_TOKEN = "w" * 40
CLICK_ID = "click-id-from-the-query-0042"


def test_json_line_has_the_standard_fields_and_extras() -> None:
    record = logging.LogRecord("gateway.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    record.key = "bots.review_threshold"
    line = json.loads(JsonFormatter(worker=1).format(record))
    assert line["level"] == "warning" and line["logger"] == "gateway.x" and line["msg"] == "hello there"
    assert line["key"] == "bots.review_threshold" and line["worker"] == 1
    assert line["ts"].endswith("+00:00") and "T" in line["ts"]


def test_setup_logging_level_and_formats() -> None:
    out = io.StringIO()
    try:
        setup_logging("warning", "json", stream=out)
        logging.getLogger("gateway.t").info("dropped")
        logging.getLogger("gateway.t").warning("kept", extra={"n": 3})
        setup_logging("info", "text", stream=out)
        logging.getLogger("gateway.t").info("plain")
    finally:
        setup_logging("warning", "text")
    first, second = out.getvalue().splitlines()
    assert json.loads(first)["msg"] == "kept" and json.loads(first)["n"] == 3
    assert second.endswith("INFO gateway.t: plain")


def test_a_text_line_keeps_the_event_s_own_fields() -> None:
    """``log.format = "text"`` (``make run``'s) dropped every field a line carries besides its
    message: `listening` named no address, `stopped` no count of unconfirmed responses, `config
    reloaded` not the keys that need a restart. They now follow the message as ``key=value``."""
    out = io.StringIO()
    try:
        setup_logging("info", "text", worker=1, stream=out)
        logging.getLogger("gateway").info(
            "listening", extra={"proxy": "127.0.0.1:8080", "admin": None, "background": ["erasures"]}
        )
        logging.getLogger("gateway").info("stopped", extra={"unconfirmed": 3})
        logging.getLogger("gateway").info("plain")
    finally:
        setup_logging("warning", "text")
    listening, stopped, plain = out.getvalue().splitlines()
    assert listening.endswith(
        'INFO gateway: [worker 1] listening proxy=127.0.0.1:8080 admin=null background=["erasures"]'
    ), listening
    assert stopped.endswith("INFO gateway: [worker 1] stopped unconfirmed=3"), stopped
    assert plain.endswith("INFO gateway: [worker 1] plain"), plain


def _logged_to(path: Path, fmt: str) -> list[str]:
    """The lines ``setup_logging`` writes to the file ``path`` (a stream with a file behind it,
    as stderr is) at each level, a traceback included."""
    with path.open("w", encoding="utf-8") as out:
        try:
            setup_logging("debug", fmt, stream=out)
            own = logging.getLogger("gateway.t")
            own.debug("a debug line")
            own.info("an info line")
            own.warning("a warning line")
            own.error("an error line")
            try:
                raise ValueError("boom")
            except ValueError:
                own.critical("a critical line", exc_info=True)
        finally:
            setup_logging("warning", "text")
    return path.read_text(encoding="utf-8").splitlines()


def _stream_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_lines_to_the_journal_start_with_their_syslog_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Under systemd, stderr is the journal (``JOURNAL_STREAM`` names its device and inode):
    each line starts with its priority, ``<3>`` for an error, so ``journalctl -p err`` finds
    the errors (every line was info until 2026-12-07); a traceback's lines each have it too."""
    log = tmp_path / "stderr.log"
    log.touch()
    monkeypatch.setenv("JOURNAL_STREAM", _stream_of(log))
    lines = _logged_to(log, fmt)
    heads = [line for line in lines if "gateway.t" in line]
    assert [line[:3] for line in heads] == ["<7>", "<6>", "<4>", "<3>", "<2>"], lines
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert any("ValueError" in line for line in lines)
    if fmt == "json":
        assert [json.loads(line[3:])["level"] for line in lines] == [
            "debug",
            "info",
            "warning",
            "error",
            "critical",
        ]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_lines_elsewhere_have_no_priority_even_under_systemd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """``JOURNAL_STREAM`` inherited, stderr elsewhere (a file, a pipe: ``gateway run 2>file``
    from a unit's shell, a test's capture): plain lines. Not set at all: plain lines."""
    other = tmp_path / "journal"
    other.touch()
    log = tmp_path / "stderr.log"
    monkeypatch.setenv("JOURNAL_STREAM", _stream_of(other))
    assert not [line for line in _logged_to(log, fmt) if line.startswith("<")]
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not [line for line in _logged_to(log, fmt) if line.startswith("<")]
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not [line for line in _logged_to(log, fmt) if line.startswith("<")]


@pytest.mark.parametrize("broken", ["config", "store"])
def test_why_the_gateway_cannot_start_is_an_error_in_the_journal(tmp_path: Path, broken: str) -> None:
    """What ``gateway run`` prints before its log is set up — a config it refuses, a store it
    cannot open — is at the error priority in the journal (``journalctl -p err`` shows why a
    ``systemctl start`` failed), and plain elsewhere; ``gateway check`` (the unit's
    ``ExecStartPre``) alike."""
    cfg = tmp_path / "gateway.toml"
    threshold = 120 if broken == "config" else 50
    cfg.write_text(
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:9"\nworkers = 1\n'
        f'[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n'
        f"[bots]\nreview_threshold = {threshold}\n"
    )
    if broken == "store":
        (tmp_path / "gw.db").write_bytes(b"not a database, not at all" * 100)
    commands = [["run"], ["check", "--quiet"]] if broken == "config" else [["run"]]
    for command in commands:
        for journal in (True, False):
            log = tmp_path / "stderr.log"
            log.touch()
            env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **ENV}
            if journal:
                env["JOURNAL_STREAM"] = _stream_of(log)
            with log.open("w") as err:
                done = subprocess.run(
                    [sys.executable, "-m", "gateway", *command, "-c", str(cfg)],
                    stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=120,
                )  # fmt: skip
            lines = log.read_text(encoding="utf-8").splitlines()
            assert done.returncode != 0 and lines, (command, lines)
            said = "review_threshold" if broken == "config" else "storage.path"
            assert any(said in line for line in lines), lines
            if journal:
                assert all(line.startswith("<3>gateway") or line.startswith("<3>  ") for line in lines), lines
            else:
                assert not [line for line in lines if line.startswith("<")], lines


async def test_the_access_log_is_written_under_a_quieter_log_level(
    tmp_path: Path, upstream_server: object
) -> None:
    """``proxy.access_log = true`` with ``log.level = "warning"`` (the gateway's own info lines
    quieted) wrote no access line at all, and said nothing of it."""
    upstream = await upstream_server(web.Application())  # type: ignore[operator]
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\nworkers = 1\naccess_log = true\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n[log]\nlevel = "warning"\n',
    )
    gw = await GatewayProcess.start(cfg)
    try:
        async with aiohttp.ClientSession() as session, session.get(gw.proxy + "/nothing/here") as resp:
            assert resp.status == 404
        line = await gw.wait_log(lambda r: r["logger"] == "gateway.access", timeout=10)
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    assert line["msg"].startswith("GET /nothing/here 404 "), line
    assert not [r for r in gw.logs() if r["level"] == "info" and r["logger"] != "gateway.access"]


async def test_a_full_run_logs_no_secret_ip_or_user_id(tmp_path: Path, upstream_server: object) -> None:
    async def login(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(status=302, headers={"Location": "/account"})

    async def page(request: web.Request) -> web.Response:
        if request.path == "/boom":
            return web.Response(status=500, text="upstream error")
        return web.Response(text="page")

    app = web.Application()
    app.router.add_post("/accounts/login/", login)
    app.router.add_route("*", "/{tail:.*}", page)
    upstream = await upstream_server(app)  # type: ignore[operator]
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "{upstream}"\nworkers = 1\naccess_log = true\n'
        'trusted_proxies = ["127.0.0.1"]\n[admin]\nlisten = "127.0.0.1:0"\n'
        '[storage]\npath = "gw.db"\n[log]\nlevel = "debug"\n'
        # Plain: the user ID itself is in the store's SQL (hashed, it would not show leaking).
        '[identity]\nuser_id_storage = "plain"\n'
        '[[identity.rules]]\nname = "login"\npath = "/accounts/login/"\nstatus = [302]\n'
        'user_id = { form = "username" }\n',
    )
    gw = await GatewayProcess.start(cfg)
    try:
        xff = {"X-Forwarded-For": CLIENT_IP}
        async with aiohttp.ClientSession() as session:
            for path in (f"/?utm_source=news&gclid={CLICK_ID}", "/boom", "/_gw/nothing"):
                async with session.get(gw.proxy + path, headers=xff) as resp:
                    await resp.read()
            async with session.post(
                gw.proxy + "/accounts/login/",
                data={"username": USER_EMAIL, "password": "hunter2-password"},
                headers=xff,
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302
            async with session.post(gw.proxy + "/_gw/events", data=b"{not json", headers=xff) as resp:
                assert resp.status >= 400
            for token, status in ((TOKEN, 200), (WRONG_TOKEN, 401)):
                auth = {"Authorization": f"Bearer {token}"}
                async with session.get(f"{gw.admin}/api/users/{USER_EMAIL}", headers=auth) as resp:
                    assert resp.status == status
                    if status == 200:  # the login bound the visitor: the user ID went through the gateway
                        assert (await resp.json())["ok"] is True
            # A malformed request line is logged by nobody with the peer's address.
            _, writer = await asyncio.open_connection(*gw.proxy.removeprefix("http://").rsplit(":", 1))
            writer.write(b"GARBAGE \x00\r\n\r\n")
            await writer.drain()
            writer.close()
        gw.signal(signal.SIGHUP)
        await gw.wait_log(lambda r: r["msg"].startswith("config reloaded"))
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    lines = [line for line in gw.stderr if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert any(r["logger"] == "gateway.access" for r in records), "the access log was on"
    text = "".join(lines)
    # (127.0.0.1 is both the test client and our own listen address, so the client IP checked is
    # the one a trusted proxy forwarded.)
    for raw in (SECRET, TOKEN, WRONG_TOKEN, CLIENT_IP, USER_EMAIL, CLICK_ID, "hunter2", *ENV.values()):
        assert raw not in text, f"{raw!r} leaked into the logs"
    # `debug` is the gateway's own: aiosqlite's wrote every statement with its parameters.
    assert any(r["level"] == "debug" for r in records), "a debug line of the gateway's own"
    assert {r["logger"] for r in records if r["level"] == "debug"} <= {"gateway"} | {
        r["logger"] for r in records if r["logger"].startswith("gateway.")
    }


async def test_an_upstream_failure_is_logged_in_words_not_a_python_repr(tmp_path: Path) -> None:
    """The upstream's failures were logged as reprs: `UpstreamConnectError(111, '…')`, and for a
    WebSocket `ClientConnectorError(ConnectionKey(host='127.0.0.1', port=…, is_ssl=False, …), …)`
    (its line: ``test_websocket_upgrades_to_a_down_site_are_one_line_and_a_count_the_site_s_return_says``);
    and once per request, as a store failing on every request no longer was."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:{closed}"\nworkers = 1\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n',
    )
    gw = await GatewayProcess.start(cfg)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.proxy + "/some/page") as resp:
                assert resp.status == 502
            for n in range(20):  # a site that is down fails every request: not a line for each
                async with session.get(f"{gw.proxy}/page/{n}") as resp:
                    assert resp.status == 502
        page = await gw.wait_log(lambda r: r["msg"].startswith("upstream connect for GET /some/page: "))
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    refused = f"connection refused: nothing listens on 127.0.0.1:{closed}"
    assert page["msg"] == f"upstream connect for GET /some/page: {refused}", page
    assert "Error(" not in page["msg"] and "ConnectionKey" not in page["msg"], page
    connects = [r["msg"] for r in gw.logs() if r["msg"].startswith("upstream connect for GET /")]
    assert connects == [page["msg"]], connects  # then at most one per 10 s, with the count held back


async def test_an_upstream_timeout_names_the_timeouts_to_raise(
    start_gateway: GatewayFactory, upstream_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The line "upstream timeout for GET /slow: no answer in time" left the operator to guess which
    timeout ran out, and how long it was: the line names both keys with their values."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    site = await upstream_server(app)  # type: ignore[operator]
    gw = await start_gateway(site, "[proxy]\nread_timeout = 0.5\nconnect_timeout = 4\n")
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.proxy"):
            async with gw.session.get(gw.proxy.make_url("/slow?utm_source=x")) as resp:
                assert resp.status == 504
    finally:
        release.set()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("upstream timeout")]
    assert said == [
        "upstream timeout for GET /slow: no answer in time (proxy.connect_timeout = 4 s to connect, "
        "proxy.read_timeout = 0.5 s of the site's silence)"
    ], said


def test_a_throttled_line_says_how_many_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("gateway.test.throttled")
    throttled = Throttled(log, logging.WARNING, interval=0.2)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for n in range(5):
            throttled("failed %d", n)
        time.sleep(0.25)
        throttled("failed %d", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "failed 0",
        "failed 5 (and 4 more like it since the last such line)",
    ]


async def test_an_upstream_failure_s_line_writes_no_email_address_of_the_path(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A site down while a newsletter's personal link was followed logged ``upstream connect
    for GET /unsubscribe/jane@example.com: …``: the address at rest in the log, where no
    erasure reaches it. The segment is written ``(email)``, as the access log and
    ``landing_path`` write it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gw = await start_gateway(f"http://127.0.0.1:{closed}")
    with caplog.at_level(logging.INFO, logger="gateway"):
        async with gw.session.get(gw.url + "/unsubscribe/jane@example.com?utm_source=news") as resp:
            assert resp.status == 502
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("upstream connect for")]
    assert line.startswith("upstream connect for GET /unsubscribe/(email): "), line
    assert "example" not in line


async def _down_site_config(tmp_path: Path) -> tuple[Path, int]:
    """A config whose upstream is a loopback port nothing listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "http://127.0.0.1:{port}"\nworkers = 1\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n',
    )
    return cfg, port


async def test_a_site_back_up_says_how_many_failures_the_lines_held_back(tmp_path: Path) -> None:
    """A site down for 20 requests gave one "upstream connect for …" line, the other 19 held
    back for the next such line 10 s later; the site back before then, nothing said they were
    lost, nor that the outage was over. The site's next answer says both, at info."""
    cfg, port = await _down_site_config(tmp_path)
    gw = await GatewayProcess.start(cfg)
    runner: web.AppRunner | None = None
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(20):
                async with session.get(f"{gw.proxy}/page/{n}") as resp:
                    assert resp.status == 502

            async def up(request: web.Request) -> web.Response:
                return web.Response(text="up")

            app = web.Application()
            app.router.add_get("/{tail:.*}", up)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            async with session.get(f"{gw.proxy}/page/up") as resp:
                assert resp.status == 200 and await resp.text() == "up"
            back = await gw.wait_log(lambda r: r["msg"].startswith("upstream answers again"))
        assert await gw.stop() == 0
    finally:
        await gw.kill()
        if runner is not None:
            await runner.cleanup()
    held = 20 - failures_said(gw.logs(), "upstream connect for GET /page/")
    assert held > 0, gw.stderr  # the test's own premise: lines were held back
    assert back["level"] == "info", back
    assert re.fullmatch(
        rf"upstream answers again, [\d.]+ s after it began to fail; not logged since the last such"
        rf' line: {held} more "upstream connect" lines',
        back["msg"],
    ), back
    assert not any(r["msg"].startswith("stopping while the upstream fails") for r in gw.logs())


async def _page_fails(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as resp:
        assert resp.status == 502


async def _upgrade_fails(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        await session.ws_connect(url)
    assert failed.value.status == 502


@pytest.mark.parametrize(
    ("path", "fails"), [("/page/", _page_fails), ("/live/", _upgrade_fails)], ids=["pages", "websockets"]
)
async def test_a_stop_while_the_site_is_down_says_how_many_failures_the_lines_held_back(
    tmp_path: Path, path: str, fails: Callable[[aiohttp.ClientSession, str], Awaitable[None]]
) -> None:
    """A gateway stopped while its site is down: the throttled lines' next line never comes.
    The stop says the outage is still on, and what they held back, as a warning. The same when
    the site fails only WebSocket upgrades: until 2026-12-08 an upgrade's failure began no
    outage, and the stop said nothing of the lines held back."""
    cfg, _ = await _down_site_config(tmp_path)
    gw = await GatewayProcess.start(cfg)
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(5):
                await fails(session, f"{gw.proxy}{path}{n}")
        assert await gw.stop() == 0
    finally:
        await gw.kill()
    lines = gw.logs()
    held = 5 - failures_said(lines, f"upstream connect for GET {path}")
    assert held > 0, gw.stderr
    [stopping] = [r for r in lines if r["msg"].startswith("stopping while the upstream fails")]
    assert stopping["level"] == "warning", stopping
    assert re.fullmatch(
        rf"stopping while the upstream fails, for [\d.]+ s now; not logged since the last such"
        rf' line: {held} more "upstream connect" lines',
        stopping["msg"],
    ), stopping
    assert lines[-1]["msg"] == "stopped"


async def test_a_site_back_again_within_10_s_of_its_last_back_line_is_not_said_failing_at_the_stop(
    tmp_path: Path,
) -> None:
    """A second short outage: its "upstream answers again" line waits 10 s after the first's, so
    the site's answer before then said nothing. The stop then told the operator the site was
    failing (a warning), though it answered, and took the second outage's held-back lines for
    failures still going on. The stop says the site answers again, at info, with those lines."""
    cfg, port = await _down_site_config(tmp_path)
    gw = await GatewayProcess.start(cfg)

    async def up(request: web.Request) -> web.Response:
        return web.Response(text="up")

    app = web.Application()
    app.router.add_get("/{tail:.*}", up)
    try:
        async with aiohttp.ClientSession() as session:
            for outage in range(2):
                for n in range(4):
                    async with session.get(f"{gw.proxy}/down{outage}/{n}") as resp:
                        assert resp.status == 502
                runner = web.AppRunner(app, shutdown_timeout=0)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                try:
                    async with session.get(f"{gw.proxy}/up/{outage}") as resp:
                        assert resp.status == 200 and await resp.text() == "up"
                    if outage == 0:
                        await gw.wait_log(lambda r: r["msg"].startswith("upstream answers again"))
                finally:
                    await runner.cleanup()
            # The site answered last: up again for the stop.
            runner = web.AppRunner(app, shutdown_timeout=0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            assert await gw.stop() == 0
        finally:
            await runner.cleanup()
    finally:
        await gw.kill()
    lines = gw.logs()
    said = failures_said(lines, "upstream connect for GET /down1/")
    held = 4 - said
    assert held > 0, gw.stderr  # the test's own premise: the second outage's lines were held back
    assert not any(r["msg"].startswith("stopping while the upstream fails") for r in lines), gw.stderr
    backs = [r for r in lines if r["msg"].startswith("upstream answers again")]
    assert len(backs) == 2 and all(r["level"] == "info" for r in backs), backs
    assert re.fullmatch(
        rf"upstream answers again, [\d.]+ s after it began to fail; not logged since the last such"
        rf' line: {held} more "upstream connect" lines?',
        backs[-1]["msg"],
    ), backs[-1]


async def test_a_reload_in_an_outage_says_the_site_answers_again_once(tmp_path: Path) -> None:
    """A reload's new proxy took the outage over from the old one, which still finishes its
    requests: each said "upstream answers again" as one of its requests was answered, the old
    one's line a second, empty one. One outage, one line."""
    cfg, port = await _down_site_config(tmp_path)
    gw = await GatewayProcess.start(cfg)
    entered, release = asyncio.Event(), asyncio.Event()

    async def page(request: web.Request) -> web.Response:
        if request.path == "/slow":
            entered.set()
            await release.wait()
        return web.Response(text="up")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, shutdown_timeout=0)
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(4):
                async with session.get(f"{gw.proxy}/down/{n}") as resp:
                    assert resp.status == 502
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()

            async def slow() -> int:
                async with session.get(f"{gw.proxy}/slow") as resp:
                    await resp.read()
                    return resp.status

            in_flight = asyncio.create_task(slow())  # on the proxy the reload retires
            await entered.wait()
            gw.signal(signal.SIGHUP)
            await gw.wait_log(lambda r: r["msg"].startswith("config reloaded"))
            release.set()
            assert await in_flight == 200
            async with session.get(f"{gw.proxy}/fast") as resp:  # on the reload's proxy
                assert resp.status == 200
            await gw.wait_log(lambda r: r["msg"].startswith("upstream answers again"))
            async with session.get(f"{gw.proxy}/ping") as resp:  # the last line's request done
                assert resp.status == 200
        assert await gw.stop() == 0
    finally:
        await gw.kill()
        await runner.cleanup()
    lines = gw.logs()
    held = 4 - failures_said(lines, "upstream connect for GET /down/")
    assert held > 0, gw.stderr  # the test's own premise: lines were held back
    backs = [r["msg"] for r in lines if r["msg"].startswith("upstream answers again")]
    assert len(backs) == 1, backs
    assert backs[0].endswith(f'{held} more "upstream connect" line{"s" if held != 1 else ""}'), backs


async def test_a_websocket_the_site_accepts_again_ends_the_outage(tmp_path: Path) -> None:
    """A site back after an outage whose only traffic is WebSocket (a live dashboard): until
    2026-12-08 only a page's answer ended the outage, so the relays it accepted said nothing,
    the held-back failure lines were never told, and the stop said the site was failing still.
    The site's 101 ends it as a page's answer does."""
    cfg, port = await _down_site_config(tmp_path)

    async def page(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(text="up")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo " + msg.data)
        return ws

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/{tail:.*}", page)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner: web.AppRunner | None = await serve()
    gw = await GatewayProcess.start(cfg)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gw.proxy}/page/first") as resp:
                assert resp.status == 200 and await resp.text() == "up"
            assert runner is not None
            await runner.cleanup()  # the site goes down
            runner = None
            for n in range(20):
                async with session.get(f"{gw.proxy}/page/{n}") as resp:
                    assert resp.status == 502
            runner = await serve()  # and comes back on the same port; only its WebSocket is used
            async with session.ws_connect(f"{gw.proxy}/live") as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "echo hello"
        assert await gw.stop() == 0
    finally:
        await gw.kill()
        if runner is not None:
            await runner.cleanup()
    lines = gw.logs()
    held = 20 - failures_said(lines, "upstream connect for GET /page/")
    assert held > 0, gw.stderr  # the test's own premise: lines were held back
    assert not any(r["msg"].startswith("stopping while the upstream fails") for r in lines), gw.stderr
    [back] = [r for r in lines if r["msg"].startswith("upstream answers again")]
    assert back["level"] == "info", back
    assert re.fullmatch(
        rf"upstream answers again, [\d.]+ s after it began to fail; not logged since the last such"
        rf' line: {held} more "upstream connect" lines',
        back["msg"],
    ), back


async def test_websocket_upgrades_to_a_down_site_are_one_line_and_a_count_the_site_s_return_says(
    tmp_path: Path,
) -> None:
    """A live dashboard retrying its WebSocket against a site that is down: each failed upgrade
    wrote its own "upstream connect for GET /live (WebSocket)" line, and none started the outage,
    so the site's return said nothing of them. They are the outage's, as a page's failures are:
    one line at once, the rest held back and counted by the "answers again" line. The visitor
    still gets the 502 page."""
    cfg, port = await _down_site_config(tmp_path)

    async def page(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str("echo " + msg.data)
        return ws

    gw = await GatewayProcess.start(cfg)
    runner: web.AppRunner | None = None
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(20):
                with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
                    await session.ws_connect(f"{gw.proxy}/live/{n}")
                assert failed.value.status == 502
            upgrade = {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            }
            async with session.get(f"{gw.proxy}/live/20", headers=upgrade) as resp:  # the page it gets
                assert resp.status == 502 and "text/html" in resp.headers["Content-Type"], resp.headers
            app = web.Application()
            app.router.add_get("/{tail:.*}", page)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            async with session.ws_connect(f"{gw.proxy}/live/back") as ws:
                await ws.send_str("hello")
                assert (await ws.receive()).data == "echo hello"
            back = await gw.wait_log(lambda r: r["msg"].startswith("upstream answers again"))
        assert await gw.stop() == 0
    finally:
        await gw.kill()
        if runner is not None:
            await runner.cleanup()
    lines = gw.logs()
    said = [r for r in lines if r["msg"].startswith("upstream connect for GET /live/")]
    # The first line at once, in words (it said aiohttp's "Cannot connect to host 127.0.0.1:…
    # ssl:default [Connect call failed …]" until 2026-12-05), the upgrade named as one.
    refused = f"connection refused: nothing listens on 127.0.0.1:{port}"
    assert said[0]["msg"] == f"upstream connect for GET /live/0 (WebSocket): {refused}", said[0]
    assert said[0]["level"] == "warning", said[0]
    assert "Error(" not in said[0]["msg"] and "ConnectionKey" not in said[0]["msg"]
    held = 21 - failures_said(lines, "upstream connect for GET /live/")
    assert held > 0, gw.stderr  # one line for 21 upgrades, not 21
    assert back["level"] == "info", back
    assert re.fullmatch(
        rf"upstream answers again, [\d.]+ s after it began to fail; not logged since the last such"
        rf' line: {held} more "upstream connect" lines',
        back["msg"],
    ), back
    assert not any(r["msg"].startswith("stopping while the upstream fails") for r in lines), gw.stderr


async def _silent_site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Takes the upgrade and never answers it."""
    await reader.read()


async def _broken_handshake_site(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the upgrade with a 101 whose accept key is not the one the key asks for."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bm90IHRoZSBhY2NlcHQga2V5IGFza2Vk\r\n\r\n"
    )
    await writer.drain()
    await reader.read()


@pytest.mark.parametrize(
    ("site", "status", "kind", "first"),
    [
        pytest.param(
            _silent_site,
            504,
            "timeout",
            "upstream timeout for GET /live/0 (WebSocket): no answer in time (proxy.connect_timeout"
            " = 4 s to connect, proxy.read_timeout = 0.5 s of the site's silence)",
            id="timeout",
        ),
        pytest.param(
            _broken_handshake_site,
            502,
            "protocol",
            "upstream protocol for GET /live/0 (WebSocket): a broken handshake: ",
            id="broken-handshake",
        ),
    ],
)
async def test_a_websocket_upgrade_s_timeout_or_broken_handshake_is_the_outage_s_too(
    start_gateway: GatewayFactory,
    raw_upstream: object,
    caplog: pytest.LogCaptureFixture,
    site: object,
    status: int,
    kind: str,
    first: str,
) -> None:
    """An upgrade the site never answers, or answers with a 101 that is no valid handshake: a
    line for each (the timeout's without the two timeouts it may have been), uncounted in
    ``gateway_upstream_errors_total``, no outage begun. Now as a page's failure: one line of its
    kind, the rest held back and said at the stop, counted, the visitor's answer unchanged."""
    url = await raw_upstream(site)  # type: ignore[operator]
    gw = await start_gateway(url, "[proxy]\nread_timeout = 0.5\nconnect_timeout = 4\n")
    with caplog.at_level(logging.INFO, logger="gateway"):
        for n in range(3):
            with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
                await gw.session.ws_connect(f"{gw.url}/live/{n}")
            assert failed.value.status == status
        gw.gateway.slot.host.at_stop()  # the stop's last word, as a stopping gateway says it
    lines = [r.getMessage() for r in caplog.records]
    said = [line for line in lines if line.startswith(f"upstream {kind} for GET /live/")]
    assert len(said) == 1 and said[0].startswith(first), lines
    [stopping] = [line for line in lines if line.startswith("stopping while the upstream fails")]
    assert stopping.endswith(f'not logged since the last such line: 2 more "upstream {kind}" lines'), stopping
    counted = gw.gateway.metrics.registry.get_sample_value("gateway_upstream_errors_total", {"kind": kind})
    assert counted == 3.0


async def test_a_websocket_upgrade_that_waits_out_a_full_pool_is_said_and_counted_as_an_upgrade(
    start_gateway: GatewayFactory, upstream_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    """``proxy.upstream_connections`` all busy (one, held by a slow page): an upgrade that waits
    ``proxy.connect_timeout`` for one went the page's way, its line without " (WebSocket)" and
    counted in ``gateway_requests_total`` twice, as ``websocket`` and ``upstream_timeout``. Now
    as the upgrade's other failures: its line names it, one outcome (``websocket``), the
    timeout counted in ``gateway_upstream_errors_total``; the visitor still gets the 504."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        asked.set()
        await release.wait()
        return web.Response(text="late")

    async def live(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/live", live)
    site = await upstream_server(app)  # type: ignore[operator]
    gw = await start_gateway(
        site, "[proxy]\nupstream_connections = 1\nconnect_timeout = 0.3\nread_timeout = 30\n"
    )
    registry = gw.gateway.metrics.registry
    with caplog.at_level(logging.INFO, logger="gateway"):
        page = asyncio.ensure_future(gw.session.get(gw.url + "/slow"))  # holds the one connection
        try:
            await asyncio.wait_for(asked.wait(), 10)
            with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
                await gw.session.ws_connect(f"{gw.url}/live")
            assert failed.value.status == 504
        finally:
            release.set()
            async with await page as resp:
                assert resp.status == 200 and await resp.text() == "late"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("upstream ")]
    assert len(lines) == 2, lines
    assert lines[0] == (
        "upstream timeout for GET /live (WebSocket): no answer in time (proxy.connect_timeout = 0.3 s"
        " to connect, proxy.read_timeout = 30 s of the site's silence)"
    ), lines
    # Part of the outage, as the upgrade's other failures: the slow page's answer ends it.
    assert re.fullmatch(r"upstream answers again, [\d.]+ s after it began to fail", lines[1]), lines
    outcomes = {
        outcome: registry.get_sample_value("gateway_requests_total", {"outcome": outcome})
        for outcome in ("websocket", "upstream_timeout")
    }
    assert outcomes["websocket"] == 1.0 and not outcomes["upstream_timeout"], outcomes  # one each
    assert registry.get_sample_value("gateway_upstream_errors_total", {"kind": "timeout"}) == 1.0


def test_a_throttled_line_s_held_back_count_is_taken_by_the_line_that_ends_the_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``take_held``: the lines held back and the events they named, for the outage's end to
    say; the next line (a new outage) goes out at once, carrying none of them."""
    log = logging.getLogger("gateway.test.throttled")
    throttled = Throttled(log, logging.WARNING, interval=60)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for n in range(1, 5):
            throttled("lost %d", n, events=n)
        assert throttled.holding
        assert throttled.take_held() == (3, 2 + 3 + 4)
        assert not throttled.holding and throttled.take_held() == (0, 0)
        throttled("lost %d", 7, events=7)
    assert [r.getMessage() for r in caplog.records] == ["lost 1", "lost 7"]


def test_another_command_s_lines_to_the_journal_start_with_their_syslog_priority(tmp_path: Path) -> None:
    """``gateway import`` (or ``purge``, ``report``… from a timer's unit) logged through
    ``logging.basicConfig``: under systemd its lines reached the journal with no priority, every
    one info to ``journalctl -p``. Each starts with it as ``gateway run``'s do, where stderr is
    the journal; elsewhere the lines are as they were."""
    access = tmp_path / "access.log"
    access.write_text(
        '203.0.113.5 - - [07/Dec/2026:10:00:00 +0000] "GET /?utm_source=x HTTP/1.1" 200 12 "-"'
        ' "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"\n'
    )
    args = ["-m", "gateway", "import", str(access), "--format", "combined", "-c", "gw.toml", "--host", "x"]
    for journal in (True, False):
        returncode, lines = _stderr_of(tmp_path, [*args, "--no-progress"], journal)
        assert returncode == 0, lines
        [geo] = [line for line in lines if "geo lookups are off" in line]  # an info line of its log
        if journal:
            assert re.fullmatch(r"<6>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway\.geo: geo: .*", geo), (
                lines
            )
            assert all(re.match(r"<[2-7]>", line) for line in lines), lines
        else:
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO gateway\.geo: geo: .*", geo), (
                lines
            )


_CRASH = """
import sys, threading
if sys.argv[1] == "cli":  # the gateway's own entry runs a command, then the script crashes
    sys.argv = ["gateway", "check", "--quiet", "-c", sys.argv[2]]
    from gateway.__main__ import main
    assert main() == 0
else:
    from gateway.logs import journal_excepthooks
    journal_excepthooks()
thread = threading.Thread(target=lambda: 1 / 0, name="crasher")
thread.start()
thread.join()
raise RuntimeError("the crash\\nits second line")
"""


def _stderr_of(tmp_path: Path, args: list[str], journal: bool) -> tuple[int, list[str]]:
    """``python args…`` run beside a config ``gw.toml``, its stderr a file that is the journal's
    stream (``JOURNAL_STREAM`` names it) or not: its exit code and stderr's lines."""
    (tmp_path / "gw.toml").write_text('[storage]\npath = "gw.db"\n')
    log = tmp_path / f"stderr-{journal}.log"
    log.touch()
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "PYTHONPATH": CHECKOUT, **ENV}
    if journal:
        env["JOURNAL_STREAM"] = _stream_of(log)
    with log.open("w") as err:
        done = subprocess.run(
            [sys.executable, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=120
        )
    return done.returncode, log.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("entry", ["installer", "cli"])
def test_a_crash_s_traceback_in_the_journal_is_an_error(tmp_path: Path, entry: str) -> None:
    """An exception nothing caught (the main thread's, another thread's) is printed by Python
    itself, not logged: under systemd it reached the journal at info until 2026-12-08, and
    ``journalctl -p err`` missed the crash. Where stderr is the journal each of its lines is an
    error's (``<3>``), installed by the gateway's entry for any command; elsewhere the traceback
    is Python's own, unprefixed."""
    for journal in (True, False):
        returncode, lines = _stderr_of(tmp_path, ["-c", _CRASH, entry, "gw.toml"], journal)
        assert returncode == 1, lines
        plain = [line[3:] if journal else line for line in lines]
        assert "Exception in thread crasher:" in plain, lines
        assert "ZeroDivisionError: division by zero" in plain, lines
        assert plain.count("Traceback (most recent call last):") == 2, lines
        assert plain[-2:] == ["RuntimeError: the crash", "its second line"], lines
        if journal:
            assert all(line.startswith("<3>") for line in lines), lines
        else:
            assert not [line for line in lines if line.startswith("<")], lines


_UNRAISABLE = """
import sys
if sys.argv[1] == "cli":  # the gateway's own entry runs a command, then the script goes on
    sys.argv = ["gateway", "check", "--quiet", "-c", sys.argv[2]]
    from gateway.__main__ import main
    assert main() == 0
else:
    from gateway.logs import journal_excepthooks
    journal_excepthooks()
class Leaky:
    def __del__(self):
        raise RuntimeError("closing failed\\nits second line")
leaky = Leaky()
del leaky
print("went on", file=sys.stderr)
"""


@pytest.mark.parametrize("entry", ["installer", "cli"])
def test_an_exception_ignored_in_the_journal_is_a_warning(tmp_path: Path, entry: str) -> None:
    """An exception Python can only ignore (``__del__``'s, a finalizer's, a generator closed
    late: ``sys.unraisablehook``) is printed by Python itself as ``Exception ignored in: …`` and
    its traceback: under systemd it reached the journal at info until 2026-12-08. Where stderr
    is the journal each of its lines is a warning's (``<4>``: the process went on, as a logged
    warning's); elsewhere the text is Python's own, unprefixed."""
    for journal in (True, False):
        returncode, lines = _stderr_of(tmp_path, ["-c", _UNRAISABLE, entry, "gw.toml"], journal)
        assert returncode == 0, lines
        assert lines[-1] == "went on", lines  # not Python's: said as it was written
        said = [line[3:] if journal else line for line in lines[:-1]]
        assert said[0].startswith("Exception ignored in: <function Leaky.__del__ at "), lines
        assert said[1] == "Traceback (most recent call last):", lines
        assert said[-2:] == ["RuntimeError: closing failed", "its second line"], lines
        if journal:
            assert all(line.startswith("<4>") for line in lines[:-1]), lines
        else:
            assert not [line for line in lines if line.startswith("<")], lines
