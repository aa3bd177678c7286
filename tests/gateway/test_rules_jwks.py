"""Rules whose JWT keys are a key set file, through a real gateway in front of a real site.

The site answers as a provider-backed app does: a sign-in that sets the ID token (ES256,
Supabase's asymmetric keys, a JWKS) in a cookie, an API call carrying a Firebase ID token
(RS256, Google's map of key IDs to certificates) in ``Authorization``, and a checkout whose
conversion rule checks a claim of the token (RS256, Auth0's JWKS). The key files are
replaced while the gateway runs, as the operator's cron does (written aside, renamed over):
a new key works without a restart, a key taken out stops working, a broken file leaves the
keys before in use, and says so in ``/metrics`` (with one worker and with two) for an alert.
``gateway check`` names the key of a key set it cannot use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from addons.jwks import FollowsKeyFiles, RuleKeys
from tests.conftest import ENV, TOKEN, GatewayFactory, RunningGateway, make_settings
from tests.gatewayproc import GatewayProcess
from tests.jwts import certificate, jwk, jwks, token

ROOT = Path(__file__).resolve().parents[2]
SUPABASE = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
GOOGLE = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]
AUTH0 = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def google(*kids: str) -> bytes:
    """Google's x509 document for Firebase: kid → certificate, ``g0`` and ``g1`` known."""
    return json.dumps({kid: certificate(GOOGLE[int(kid[1])]) for kid in kids}).encode()


class Site:
    """Answers as the app does; what a token says is the client's business, not the site's."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/auth/v1/token", self.sign_in)
        self.app.router.add_get("/api/me", self.me)
        self.app.router.add_post("/checkout", self.checkout)
        self.app.router.add_get("/{tail:.*}", self.page)

    async def sign_in(self, request: web.Request) -> web.Response:
        resp = web.Response(status=303, headers={"Location": "/app"})
        resp.set_cookie("sb-access", (await request.post())["issued"], httponly=True)
        return resp

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def checkout(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=303, headers={"Location": "/thank-you"})

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>shop</html>", content_type="text/html")


RULES = """
[[identity.rules]]
name = "supabase"
path = "/auth/v1/token"
status = [303]
user_id = {{ jwt_cookie = "sb-access", algorithm = "ES256", key = "{dir}/supabase.json" }}

[[identity.rules]]
name = "firebase"
method = "GET"
path = "/api/me"
status = [200]
user_id = {{ jwt_authorization = true, algorithm = "RS256", key = "{dir}/firebase.json" }}

[[conversions]]
name = "pro-upgrade"
path = "/checkout"
status = [303]
when = [
{{ jwt_authorization = true, claim = "plan", equals = "pro", algorithm = "RS256", key = "{dir}/auth0.json" }}
]
"""


def write(path: Path, data: bytes) -> None:
    """As the README's cron line does: written aside, then renamed over the file the rule names."""
    aside = path.with_name(path.name + ".tmp")
    aside.write_bytes(data)
    os.replace(aside, path)


GRACE = "[proxy]\nshutdown_grace = 0.1\n"
"""``proxy.shutdown_grace`` needs a restart (since 2026-12-05): the gateway starts with it."""


@pytest.fixture
async def gw(
    start_gateway: GatewayFactory, upstream_server: Any, tmp_path: Path
) -> AsyncIterator[RunningGateway]:
    keys = tmp_path / "keys"
    await asyncio.to_thread(keys.mkdir)
    await asyncio.to_thread(write, keys / "supabase.json", jwks(jwk(SUPABASE[0], "s0", alg="ES256")))
    await asyncio.to_thread(write, keys / "firebase.json", google("g0"))
    await asyncio.to_thread(write, keys / "auth0.json", jwks(jwk(AUTH0[0], "a0", alg="RS256")))
    # A short grace: a reload's old chain (and its key-file watchers) stops that soon after.
    yield await start_gateway(await upstream_server(Site().app), RULES.format(dir=keys) + GRACE)


async def counts(gw: RunningGateway) -> dict[str, float]:
    """``/metrics``' bindings, conversions and extraction failures, by their labels."""
    async with gw.session.get(gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        text = await r.text()
    prefixes = ("gateway_bindings_total{", "gateway_extraction_failures_total{", "gateway_conversions_total{")
    found = {}
    for line in text.splitlines():
        if line.startswith(prefixes):
            name, _, value = line.rpartition(" ")
            found[name.removeprefix("gateway_")] = float(value)
    return found


SERIAL = iter(range(10**6))


async def sign_in(gw: RunningGateway, key: Any, kid: str | None) -> str:
    """A new visitor signs in with an ES256 token; the metric that moved (bound or why not)."""
    before = await counts(gw)
    issued = token({"sub": f"sb-user-{next(SERIAL)}"}, key, "ES256", kid)
    async with gw.session.post(
        gw.url + "/auth/v1/token", data={"issued": issued}, allow_redirects=False
    ) as r:
        assert r.status == 303
    return moved(before, await counts(gw))


async def call_api(gw: RunningGateway, key: Any, kid: str | None) -> str:
    before = await counts(gw)
    bearer = token({"sub": f"fb-uid-{next(SERIAL)}"}, key, "RS256", kid)
    async with gw.session.get(gw.url + "/api/me", headers={"Authorization": f"Bearer {bearer}"}) as r:
        assert r.status == 200
    return moved(before, await counts(gw))


async def check_out(gw: RunningGateway, key: Any, kid: str | None) -> str:
    before = await counts(gw)
    bearer = token({"sub": f"auth0|{next(SERIAL)}", "plan": "pro"}, key, "RS256", kid)
    async with gw.session.post(
        gw.url + "/checkout", data=b"", headers={"Authorization": f"Bearer {bearer}"}, allow_redirects=False
    ) as r:
        assert r.status == 303
    return moved(before, await counts(gw))


def moved(before: dict[str, float], after: dict[str, float]) -> str:
    changed = [name for name, value in after.items() if value != before.get(name, 0)]
    assert len(changed) == 1, changed
    return changed[0]


async def until(attempt: Any, expected: str, timeout: float = 15) -> None:
    """Try again until the gateway has looked at the replaced file (every few seconds)."""
    deadline = time.monotonic() + timeout
    while (got := await attempt()) != expected:
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.2)


async def test_a_rotated_jwks_is_used_without_a_restart(gw: RunningGateway, tmp_path: Path) -> None:
    """Supabase's asymmetric keys: a new key is published next to the current one, signs
    from then on, and the old one is taken out of the set later."""
    signed_in = 'bindings_total{rule="supabase"}'
    unknown = 'extraction_failures_total{reason="jwt_unknown_kid",rule="supabase"}'
    old, new = SUPABASE
    assert await sign_in(gw, old, "s0") == signed_in
    assert await sign_in(gw, new, "s1") == unknown
    assert await sign_in(gw, new, None) == 'extraction_failures_total{reason="jwt_signature",rule="supabase"}'
    both = jwks(jwk(old, "s0", alg="ES256"), jwk(new, "s1", alg="ES256"))
    await asyncio.to_thread(write, tmp_path / "keys" / "supabase.json", both)
    await until(lambda: sign_in(gw, new, "s1"), signed_in)
    assert await sign_in(gw, old, "s0") == signed_in
    # With two keys a token must say which one signed it.
    assert await sign_in(gw, new, None) == unknown
    await asyncio.to_thread(write, tmp_path / "keys" / "supabase.json", jwks(jwk(new, "s1")))
    await until(lambda: sign_in(gw, old, "s0"), unknown)
    assert await sign_in(gw, new, "s1") == signed_in
    assert await sign_in(gw, new, None) == signed_in  # a set of one key: no kid needed
    async with aiosqlite.connect(gw.gateway.settings.store_path) as db:
        rules = await db.execute_fetchall("SELECT DISTINCT rule FROM identities")
    assert list(rules) == [("supabase",)]


async def test_google_s_rotated_certificates_and_a_broken_download(
    gw: RunningGateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Firebase: Google's x509 list gains a key; a download that failed half-way (the cron
    line without ``-f``, or a disk that filled up) keeps the keys read before, logged once."""
    called = 'bindings_total{rule="firebase"}'
    unknown = 'extraction_failures_total{reason="jwt_unknown_kid",rule="firebase"}'
    path = tmp_path / "keys" / "firebase.json"
    assert await call_api(gw, GOOGLE[1], "g1") == unknown
    await asyncio.to_thread(write, path, google("g0", "g1"))
    await until(lambda: call_api(gw, GOOGLE[1], "g1"), called)
    caplog.set_level(logging.WARNING, "gateway.jwks")
    await asyncio.to_thread(write, path, google("g0", "g1")[:100])
    deadline = time.monotonic() + 15
    while not caplog.records:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    for _ in range(3):
        assert await call_api(gw, GOOGLE[0], "g0") == called
        assert await call_api(gw, GOOGLE[1], "g1") == called
        await asyncio.sleep(1)
    [logged] = [r.getMessage() for r in caplog.records]
    assert logged.startswith(
        f"identity.rules[1].user_id.key (rule 'firebase'): {path}: a key set must be JSON:"
    )
    assert logged.endswith("; still verifying with the keys read before (kid g0, g1)")


async def test_a_conversion_s_condition_follows_its_key_set_too(gw: RunningGateway, tmp_path: Path) -> None:
    """Auth0 (signing key rotated from the dashboard): a conversion rule's ``when`` reads a
    claim of the token, verified with the tenant's JWKS."""
    converted = 'conversions_total{rule="pro-upgrade"}'
    unknown = 'extraction_failures_total{reason="when_jwt_unknown_kid",rule="pro-upgrade"}'
    assert await check_out(gw, AUTH0[0], "a0") == converted
    assert await check_out(gw, AUTH0[1], "a1") == unknown
    rotated = jwks(jwk(AUTH0[0], "a0", alg="RS256"), jwk(AUTH0[1], "a1", alg="RS256"))
    await asyncio.to_thread(write, tmp_path / "keys" / "auth0.json", rotated)
    await until(lambda: check_out(gw, AUTH0[1], "a1"), converted)


UNUSABLE = "gateway_rule_key_file_unusable"
LABEL = re.compile(r'(\w+)="([^"]*)"')


def unusable(exposition: str) -> dict[tuple[str, ...], float]:
    """``gateway_rule_key_file_unusable``'s series, by their labels (sorted ``name=value``)."""
    found = {}
    for line in exposition.splitlines():
        if line.startswith(UNUSABLE + "{"):
            labels, _, value = line.rpartition(" ")
            found[tuple(sorted(f"{k}={v}" for k, v in LABEL.findall(labels)))] = float(value)
    return found


async def metrics_text(session: Any, admin_url: str) -> str:
    async with session.get(admin_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
        return await r.text()  # type: ignore[no-any-return]


async def until_unusable(read: Any, expected: dict[tuple[str, ...], float], timeout: float = 15) -> None:
    """Read ``/metrics`` again until the gateway has looked at the replaced file."""
    deadline = time.monotonic() + timeout
    while (got := unusable(await read())) != expected:
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.2)


def followers(gw: RunningGateway, path: Path) -> list[RuleKeys]:
    """The running chain's followers of the key file ``path``."""
    assert gw.gateway.slot.host is not None
    return [
        keys
        for _, addon in gw.gateway.slot.host.pipeline.addons
        if isinstance(addon, FollowsKeyFiles)
        for keys in addon.key_files
        if keys.path == path
    ]


async def looked_again(keys: RuleKeys, timeout: float = 30) -> None:
    """Until ``keys`` has looked at its file twice more: the second look began after this was
    called, so the file as it is now has been seen."""
    enough, deadline = keys.looks + 2, time.monotonic() + timeout
    while keys.looks < enough:
        assert time.monotonic() < deadline, "the key file was not looked at again"
        await asyncio.sleep(0.05)


SUPABASE_KEY = ("key=identity.rules[0].user_id.key", "rule=supabase")
FIREBASE_KEY = ("key=identity.rules[1].user_id.key", "rule=firebase")
AUTH0_KEY = ("key=conversions[0].when[0].key", "rule=pro-upgrade")


async def test_an_unusable_key_file_is_said_in_metrics_until_it_is_good_again(
    gw: RunningGateway, tmp_path: Path
) -> None:
    """A key file that cannot be used keeps the keys read before, logged once: a log line no
    alert reads. ``gateway_rule_key_file_unusable`` is 1 for its rule's key while the file last
    looked at cannot be used (broken, gone), 0 once it is good again (as it was, or new keys),
    and 0 for every file from the start."""
    path = tmp_path / "keys" / "firebase.json"
    called = 'bindings_total{rule="firebase"}'

    def read() -> Any:
        return metrics_text(gw.session, gw.admin_url)

    good = {SUPABASE_KEY: 0.0, FIREBASE_KEY: 0.0, AUTH0_KEY: 0.0}
    assert unusable(await read()) == good
    await asyncio.to_thread(write, path, google("g0")[:100])  # a download cut short
    await until_unusable(read, {**good, FIREBASE_KEY: 1.0})
    assert await call_api(gw, GOOGLE[0], "g0") == called  # the keys read before still verify
    [follower] = followers(gw, path)
    await looked_again(follower)  # looked at again, unchanged: still said
    assert unusable(await read()) == {**good, FIREBASE_KEY: 1.0}
    await asyncio.to_thread(write, path, google("g0"))  # as it was
    await until_unusable(read, good)
    await asyncio.to_thread(path.unlink)  # gone
    await until_unusable(read, {**good, FIREBASE_KEY: 1.0})
    await asyncio.to_thread(write, path, google("g0", "g1"))  # new keys
    await until_unusable(read, good)
    assert await call_api(gw, GOOGLE[1], "g1") == called


async def test_a_reload_that_drops_a_rule_leaves_no_alert_behind(gw: RunningGateway, tmp_path: Path) -> None:
    """The rule whose file is broken taken out by a reload: nothing looks at the file any more,
    and its series goes, not 1 until a restart (until 2026-12-07 it stayed, at 0)."""
    path = tmp_path / "keys" / "firebase.json"

    def read() -> Any:
        return metrics_text(gw.session, gw.admin_url)

    await asyncio.to_thread(write, path, b"<html>502 Bad Gateway</html>")
    await until_unusable(read, {SUPABASE_KEY: 0.0, FIREBASE_KEY: 1.0, AUTH0_KEY: 0.0})
    [old] = followers(gw, path)
    rules = RULES.format(dir=tmp_path / "keys")
    start, end = rules.index('[[identity.rules]]\nname = "firebase"'), rules.index("[[conversions]]")
    without = rules[:start] + rules[end:] + GRACE
    settings = await asyncio.to_thread(make_settings, tmp_path, without)
    assert await gw.gateway.reload(settings) == []
    assert unusable(await read()) == {SUPABASE_KEY: 0.0, AUTH0_KEY: 0.0}
    async with asyncio.timeout(
        30
    ):  # past the old chain's shutdown_grace: what its stop set is not said either
        while old.following:
            await asyncio.sleep(0.05)
    assert unusable(await read()) == {SUPABASE_KEY: 0.0, AUTH0_KEY: 0.0}


async def test_two_workers_say_an_unusable_key_file_once(tmp_path: Path, upstream_server: Any) -> None:
    """With ``proxy.workers = 2`` each worker looks at the file; worker 0's ``/metrics`` says
    one series per key, 1 while any worker finds the file unusable (not one per process)."""
    keys = tmp_path / "keys"
    await asyncio.to_thread(keys.mkdir)
    path = keys / "auth0.json"
    await asyncio.to_thread(write, path, jwks(jwk(AUTH0[0], "a0", alg="RS256")))
    origin = await upstream_server(Site().app)
    cfg = tmp_path / "gateway.toml"
    await asyncio.to_thread(
        cfg.write_text,
        f'[proxy]\nlisten = "127.0.0.1:0"\nupstream = "{origin}"\nworkers = 2\n'
        '[admin]\nlisten = "127.0.0.1:0"\n[storage]\npath = "gw.db"\nnode = "test"\n'
        '[[conversions]]\nname = "pro-upgrade"\npath = "/checkout"\nstatus = [303]\n'
        f'when = [{{ jwt_authorization = true, claim = "plan", equals = "pro", algorithm = "RS256",'
        f' key = "{path}" }}]\n',
    )
    gw = await GatewayProcess.start(cfg)
    try:
        await gw.wait_for(
            lambda: len({r.get("worker") for r in gw.logs() if r["msg"] == "listening"}) >= 2, gw.stderr
        )
        async with aiohttp.ClientSession() as session:

            def read() -> Any:
                return metrics_text(session, gw.admin)

            await until_unusable(read, {AUTH0_KEY: 0.0})
            await asyncio.to_thread(write, path, b'{"keys": [{"kty": "RSA"')
            await until_unusable(read, {AUTH0_KEY: 1.0})
            await asyncio.to_thread(write, path, jwks(jwk(AUTH0[1], "a1", alg="RS256")))
            await until_unusable(read, {AUTH0_KEY: 0.0})
        assert await gw.stop() == 0
    finally:
        await gw.kill()


def gateway_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV},
        cwd=ROOT,
        timeout=30,
    )


CHECKED = """
[storage]
path = "gateway.db"

[[identity.rules]]
name = "login"
path = "/login"
status = [303]
user_id = {{ jwt_cookie = "id", algorithm = "{alg}", key = "keys.json" }}
"""


@pytest.mark.parametrize(
    ("alg", "content", "problem"),
    [
        ("RS256", None, "identity.rules[0].user_id.key: cannot read keys.json: No such file or directory"),
        # Read as the running gateway reads it again: a huge file is read no further than it takes.
        ("RS256", "folder", "identity.rules[0].user_id.key: cannot read keys.json: Is a directory"),
        ("RS256", b"{" + b" " * 4_000_000, "user_id.key: larger than 1048576 bytes: not a key"),
        ("RS256", b'{"keys": [{"kty": "RSA"', "identity.rules[0].user_id.key: a key set must be JSON: "),
        (
            "RS256",
            b'{"keys": [{"kty": "oct", "kid": "hs", "k": "c2VjcmV0"}]}',
            "identity.rules[0].user_id.key: kid 'hs' is a shared secret (\"oct\"), never read from a file:"
            ' give it as "env:NAME"',
        ),
        (
            "ES256",
            jwks(jwk(AUTH0[0], "a0", alg="RS256"), jwk(SUPABASE[0], "s0", use="enc")),
            "identity.rules[0].user_id.key: the key set holds no key for ES256: left out kid 'a0'"
            " (alg 'RS256'), kid 's0' (use 'enc')",
        ),
        ("ES256", google("g0"), "identity.rules[0].user_id.key: the key set holds no key for ES256"),
        ("RS256", b'{"iss": "https://tenant.auth0.com/"}', "identity.rules[0].user_id.key: neither a JWKS"),
        ("RS256", jwks(jwk(AUTH0[0], "a0")), None),
        ("RS256", google("g0", "g1"), None),
        ("ES256", jwks(jwk(SUPABASE[0], "s0"), jwk(AUTH0[0], "a0")), None),
    ],
)
def test_gateway_check_names_the_key_of_a_key_set_it_cannot_use(
    tmp_path: Path, alg: str, content: bytes | str | None, problem: str | None
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CHECKED.format(alg=alg))
    if content == "folder":
        (tmp_path / "keys.json").mkdir()
    elif isinstance(content, bytes):
        (tmp_path / "keys.json").write_bytes(content)
    done = gateway_check(config)
    assert "Traceback" not in done.stderr
    if problem is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 2
        assert problem in done.stderr, done.stderr
