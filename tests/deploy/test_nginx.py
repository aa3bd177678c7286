"""``deploy/nginx.conf``: ``nginx -t`` on it placed as README says, in a main config shaped as
Debian's (``include conf.d/*.conf`` inside ``http``), its certificate swapped for a self-signed
one; and what it forwards read against what the gateway believes of a trusted proxy (README:
``proxy.trusted_proxies``). Without nginx installed the first is skipped (``apt-get install
nginx-light`` gives it; in CI, where ``.ci/run`` installs it, it fails instead)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.ports import free_port
from gateway.forwarding import CLIENT_CLAIMS
from tests.conftest import self_signed
from tests.deploy.deployfiles import DEPLOY, ROOT, missing_tool, readme_deployment

CONF = DEPLOY / "nginx.conf"
MAIN = """\
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{}}
http {{
    access_log off;
    include {prefix}/conf.d/*.conf;
}}
"""
"""Debian's /etc/nginx/nginx.conf in what matters here: the site files included in ``http``."""


def placed() -> str:
    """Where README installs the file: the target of its ``install … deploy/nginx.conf`` line."""
    lines = readme_deployment().splitlines()
    (line,) = [line for line in lines if "install" in line and "deploy/nginx.conf /" in line]
    words = shlex.split(line, comments=True)
    return words[words.index("deploy/nginx.conf") + 1]


def test_readme_places_it_where_nginx_reads_site_files() -> None:
    """The file holds ``upstream``, ``map`` and ``server`` blocks: it belongs inside ``http``,
    where Debian's and nginx.org's packages include ``/etc/nginx/conf.d/*.conf``."""
    assert re.fullmatch(r"/etc/nginx/conf\.d/[\w-]+\.conf", placed()), placed()


def nginx_binary() -> str | None:
    """nginx, on PATH or where Debian puts it (off a user's PATH)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def test_nginx_accepts_the_file(tmp_path: Path) -> None:
    nginx = nginx_binary()
    if nginx is None:
        missing_tool("nginx is not installed: `nginx -t` not run (apt-get install nginx-light)")
    crt, pem = self_signed(tmp_path)
    text = CONF.read_text(encoding="utf-8")
    swapped = re.sub(r"(ssl_certificate\s+)\S+;", f"\\g<1>{crt};", text)
    swapped = re.sub(r"(ssl_certificate_key\s+)\S+;", f"\\g<1>{pem};", swapped)
    assert swapped.count(str(tmp_path)) == 2
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / Path(placed()).name).write_text(swapped)
    main = tmp_path / "nginx.conf"
    main.write_text(MAIN.format(prefix=tmp_path))
    done = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # nginx 1.25.1+ prefers `http2 on;`, which the nginx of Debian 12 (1.22) and Ubuntu 24.04
    # (1.24) refuse; the `listen … http2` they take is only warned of there.
    warned = [w for w in re.findall(r"\[warn\] (.*)", done.stderr) if "http2" not in w]
    assert warned == [] and "[emerg]" not in done.stderr, done.stderr


def directives(block: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in block.splitlines():
        line = line.split("#")[0].strip().rstrip(";")
        if line:
            name, _, value = line.partition(" ")
            found.setdefault(name, []).append(" ".join(value.split()))
    return found


def test_it_forwards_what_the_gateway_believes_of_a_trusted_proxy() -> None:
    """nginx appends the client to X-Forwarded-For and says the scheme and host the visitor
    used, over HTTP/1.1 to the gateway's public listener (the annotated config's, README's
    127.0.0.1:8080), which it reaches from an address in the ``proxy.trusted_proxies`` README
    says to set — so the gateway believes it, and no one else."""
    text = CONF.read_text(encoding="utf-8")
    location = re.search(r"location / \{(.*?)\n    \}", text, re.DOTALL)
    assert location
    said = directives(location.group(1))
    headers = dict(v.split(" ", 1) for v in said["proxy_set_header"])
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-Host"] == "$host"
    assert headers["Host"] == "$host"  # proxy.preserve_host: the visitor's Host goes on
    assert said["proxy_http_version"] == ["1.1"]
    assert said["proxy_pass"] == ["http://tracking_gateway"]
    upstream = re.search(r"upstream tracking_gateway \{(.*?)\}", text, re.DOTALL)
    assert upstream
    (server,) = directives(upstream.group(1))["server"]
    example = tomllib.loads((ROOT / "gateway.toml").read_text(encoding="utf-8"))
    assert server == example["proxy"]["listen"] == "127.0.0.1:8080"
    trusted = re.search(r"`proxy\.trusted_proxies = (\[.*?\])`", readme_deployment())
    assert trusted
    networks = [ipaddress.ip_network(n) for n in tomllib.loads(f"t = {trusted.group(1)}")["t"]]
    peer = ipaddress.ip_address(server.rpartition(":")[0])  # nginx reaches loopback from loopback
    assert any(peer in n for n in networks)
    assert f"trusted_proxies = {trusted.group(1)}" in text


def on_loopback(text: str, plain: int, tls: int, gateway: int, crt: Path, pem: Path) -> str:
    """The file with its listeners on loopback ports, its gateway the test's and its certificate
    a self-signed one: nothing else changed."""
    swaps = [
        (r"\n\s*listen \[::\]:\d+[^;]*;", ""),
        (r"listen 80;", f"listen 127.0.0.1:{plain};"),
        (r"listen 443 ", f"listen 127.0.0.1:{tls} "),
        (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{gateway};"),
        (r"(ssl_certificate\s+)\S+;", f"\\g<1>{crt};"),
        (r"(ssl_certificate_key\s+)\S+;", f"\\g<1>{pem};"),
    ]
    for pattern, replacement in swaps:
        text, count = re.subn(pattern, replacement, text)
        assert count, pattern
    return text


@contextlib.asynccontextmanager
async def nginx_front(tmp_path: Path, gateway: int) -> AsyncIterator[tuple[int, int]]:
    """The file run by nginx (its ports moved to loopback ones, ``on_loopback``) in front of the
    gateway's public port ``gateway``: its plain and TLS ports, once the TLS one takes
    connections. Skipped where nginx is not installed."""
    nginx = await asyncio.to_thread(nginx_binary)
    if nginx is None:
        missing_tool("nginx is not installed: not run in front of the gateway (apt-get install nginx-light)")
    plain, tls = free_port(), free_port()
    crt, pem = await asyncio.to_thread(self_signed, tmp_path)
    text = await asyncio.to_thread(CONF.read_text, encoding="utf-8")
    site = on_loopback(text, plain, tls, gateway, crt, pem)
    await asyncio.to_thread((tmp_path / "conf.d").mkdir)
    await asyncio.to_thread((tmp_path / "conf.d" / "gateway.conf").write_text, site)
    main = tmp_path / "nginx.conf"
    await asyncio.to_thread(main.write_text, MAIN.format(prefix=tmp_path))
    proc = await asyncio.create_subprocess_exec(
        nginx, "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log"),
        "-g", "daemon off; master_process off;",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while True:
                assert proc.returncode is None, await proc.stderr.read() if proc.stderr else ""
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", tls)
                    writer.close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        yield plain, tls
    finally:
        # nginx that ended by itself (a port taken, a directive refused) is gone: terminating it
        # raised ProcessLookupError, which took the place of the assertion carrying its stderr.
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def _headers(request: web.Request) -> web.Response:
    wanted = ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")
    return web.json_response({name: request.headers.get(name) for name in wanted})


async def test_through_nginx_the_gateway_believes_the_visitors_scheme_and_host(
    tmp_path: Path, start_gateway: Any, upstream_server: Any
) -> None:
    """The file run (its ports moved to loopback ones) in front of a gateway with README's
    ``proxy.trusted_proxies``: a visitor on https from 127.0.0.2 gets the visitor cookie
    ``Secure`` (the gateway believed nginx's X-Forwarded-Proto), the site the visitor's host and
    scheme and an X-Forwarded-For ending in the visitor then nginx — the visitor's own
    X-Forwarded-For claim kept to its left, where the gateway does not read the client. On
    plain http nginx redirects to https."""
    trusted = re.search(r"`proxy\.trusted_proxies = (\[.*?\])`", await asyncio.to_thread(readme_deployment))
    assert trusted
    app = web.Application()
    app.router.add_get("/{tail:.*}", _headers)
    gw = await start_gateway(await upstream_server(app), f"[proxy]\ntrusted_proxies = {trusted.group(1)}\n")
    async with nginx_front(tmp_path, gw.proxy.port) as (plain, tls):
        connector = aiohttp.TCPConnector(ssl=False, local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            claim = {"Host": "www.example.com", "X-Forwarded-For": "198.51.100.7"}
            url = f"https://127.0.0.1:{tls}/landing?utm_source=news"
            async with session.get(url, headers=claim, allow_redirects=False) as resp:
                assert resp.status == 200, await resp.text()
                seen = await resp.json()
                cookies = resp.headers.getall("Set-Cookie", [])
            async with session.get(
                f"http://127.0.0.1:{plain}/x?y=1", headers={"Host": "www.example.com"}, allow_redirects=False
            ) as resp:
                assert (resp.status, resp.headers["Location"]) == (301, "https://www.example.com/x?y=1")
    assert seen == {
        "Host": "www.example.com",
        "X-Forwarded-For": "198.51.100.7, 127.0.0.2, 127.0.0.1",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "www.example.com",
    }
    (visitor,) = [c for c in cookies if c.startswith("gw_vid=")]
    assert "Secure" in [part.strip() for part in visitor.split(";")], visitor


async def _all_headers(request: web.Request) -> web.Response:
    return web.json_response({name.lower(): value for name, value in request.headers.items()})


# The X-Forwarded-* family beyond the three nginx writes, as frameworks read them behind a proxy
# they trust (Rack's -Ssl and -Scheme, Spring's and Symfony's -Prefix and -Port, Traefik's -Uri).
FAMILY = ("x-forwarded-port", "x-forwarded-prefix", "x-forwarded-ssl", "x-forwarded-scheme",
          "x-forwarded-server", "x-forwarded-protocol", "x-forwarded-uri")  # fmt: skip


async def test_through_nginx_a_visitor_s_claims_about_themselves_never_reach_the_site(
    tmp_path: Path, start_gateway: Any, upstream_server: Any
) -> None:
    """nginx is a trusted proxy, whose other client claims (``Forwarded``, ``X-Real-IP``,
    ``CF-Connecting-IP``, ``X-Original-URL``, ``X-Forwarded-Prefix``…) the gateway passes on to
    the site; nginx writes none of them, so the file clears the visitor's own, which the site
    would read as nginx's: every claim the gateway drops from a peer it does not trust (the list
    in ``gateway.forwarding``) and the rest of the ``X-Forwarded-*`` family. Until 2026-12-07
    they went through nginx and the gateway to the site as the visitor wrote them."""
    trusted = re.search(r"`proxy\.trusted_proxies = (\[.*?\])`", await asyncio.to_thread(readme_deployment))
    assert trusted
    app = web.Application()
    app.router.add_get("/{tail:.*}", _all_headers)
    gw = await start_gateway(await upstream_server(app), f"[proxy]\ntrusted_proxies = {trusted.group(1)}\n")
    said = {"forwarded": "for=198.51.100.7", "x-original-url": "/admin", "x-rewrite-url": "/admin"}
    claims = {name: said.get(name, "198.51.100.7") for name in sorted(CLIENT_CLAIMS | set(FAMILY))}
    async with (
        nginx_front(tmp_path, gw.proxy.port) as (_, tls),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
        session.get(f"https://127.0.0.1:{tls}/page", headers={"Host": "www.example.com", **claims}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        seen = await resp.json()
    assert {name: seen[name] for name in claims if name in seen} == {}
    assert seen["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"  # the visitor, then nginx
