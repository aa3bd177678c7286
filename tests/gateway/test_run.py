"""`gateway run --dev` with no upstream: the demo origin behind the gateway, as `make run` starts it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp.http_parser import SINGLETON_HEADERS

from gateway.pages import error_page
from tests.gateway.test_malformed import assert_named_when_sent_twice, raw_request
from tests.gatewayproc import GatewayProcess


async def test_dev_run_serves_demo_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        '[proxy]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n',
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "--dev", "-c", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines = []
        async with asyncio.timeout(20):
            while not any("admin API on" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, "gateway exited before it was ready"
                lines.append(line)
            while not any("the dashboard" in line for line in lines):
                lines.append((await proc.stdout.readline()).decode())
        text = "".join(lines)
        proxy = re.search(r"proxy on (http://[\d.:]+)/", text).group(1)  # type: ignore[union-attr]
        admin = re.search(r"admin API on (http://[\d.:]+)/", text).group(1)  # type: ignore[union-attr]
        token = re.search(r'Bearer (\S+)"', text).group(1)  # type: ignore[union-attr]
        assert "demo origin" in text
        # The dashboard's login asks for the token: the line that sends the operator there gives
        # it (it was only inside the curl line's header, to be picked out of it).
        assert f"open {admin}/ in a browser: the dashboard (sign in with the admin token {token})" in text
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{proxy}/?utm_source=newsletter&utm_medium=email") as resp:
                assert resp.status == 200 and "Demo shop" in await resp.text()
                assert "gw_vid" in resp.cookies
            async with session.get(
                f"{admin}/api/touchpoints", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                items = (await resp.json())["items"]
        assert [t["source"] for t in items] == ["newsletter"]
        # What aiohttp's HTTP parser refuses: the neutral page on the proxy, a JSON reason on
        # the admin API; neither logs a traceback (checked below).
        too_long = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
        page = await raw_request(int(proxy.rsplit(":", 1)[1]), too_long)
        named = error_page(431, header="X-Big", limit=8190)
        assert (page.status, page.body) == (431, named.body) and "Server" not in page.headers
        answer = await raw_request(int(admin.rsplit(":", 1)[1]), b"G(T / HTTP/1.1\r\n\r\n")
        assert json.loads(answer.body)["error"] == "the request method is not an HTTP method"
        # Raw UTF-8 in a target, which the gateway forwards as sent: the demo origin reads it as
        # the gateway does (its own aiohttp listener refused it, a traceback in the log).
        echoed = await raw_request(
            int(proxy.rsplit(":", 1)[1]), "GET /echo?q=né&utm_source=x HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        )
        assert echoed.status == 200 and "GET /echo?q=né" in echoed.body.decode(), echoed
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
        stderr = (await proc.stderr.read()).decode()
        assert "DEV MODE" in stderr and "Traceback" not in stderr
        assert await asyncio.to_thread((tmp_path / "gw.db").exists)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_printed_curl_lines_work_pasted_into_a_shell(tmp_path: Path) -> None:
    """What `gateway run` prints to try is run by `sh` as an operator would paste it: the admin
    line names the token's own variable (admin.token = "env:NAME"), and the shell expands it."""
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        '[proxy]\nlisten = "127.0.0.1:0"\nworkers = 1\n[admin]\nlisten = "127.0.0.1:0"\n'
        'token = "env:SITE_ADMIN_TOKEN"\n[storage]\npath = "gw.db"\n',
    )
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_SECRET": "s" * 40, "SITE_ADMIN_TOKEN": "t" * 40}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "-c", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        async with asyncio.timeout(20):
            while not any("api/touchpoints" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, "gateway exited before it was ready"
                lines.append(line)
            while not any("the dashboard" in line for line in lines):
                lines.append((await proc.stdout.readline()).decode())
        curls = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(curls) == 2 and "$SITE_ADMIN_TOKEN" in curls[1], curls
        # A token from the environment is not printed: the line names the variable holding it.
        assert "the dashboard (sign in with the admin token in $SITE_ADMIN_TOKEN)" in "".join(lines)
        answers = []
        # A landing before the printed one: the admin line lists newest first (past a page of
        # touchpoints, oldest first hid the one just made).
        for command in [curls[0].replace("newsletter", "earlier"), *curls]:
            shell = await asyncio.create_subprocess_exec(
                "sh", "-c", command.replace("curl -i", "curl -s").replace("curl -H", "curl -s -H"),
                stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            answers.append((await shell.communicate())[0].decode())
        assert "Demo shop" in answers[1]
        items = json.loads(answers[2])["items"]
        assert [t["source"] for t in items] == ["newsletter", "earlier"]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_with_aiohttp_s_python_parser_a_header_sent_twice_is_named_spelt_properly(
    tmp_path: Path,
) -> None:
    """Without aiohttp's C extensions (``AIOHTTP_NO_EXTENSIONS``, or a platform without a wheel)
    its Python parser names a header sent twice as the client spelt it (``MAX-FORWARDS``): the
    400 names each of ``SINGLETON_HEADERS`` as RFC 9110 spells it all the same."""
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        '[proxy]\nlisten = "127.0.0.1:0"\n[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\n',
    )
    gw = await GatewayProcess.start(cfg, "--dev", env={"AIOHTTP_NO_EXTENSIONS": "1"})
    try:
        proxy, admin = (int(url.rsplit(":", 1)[1]) for url in (gw.proxy, gw.admin))
        for name in sorted(SINGLETON_HEADERS):
            await assert_named_when_sent_twice(proxy, admin, name)
    finally:
        await gw.stop()
