"""Differential: the site sees the visitor's request target byte for byte, less the tracking pairs.

A seeded generator writes a few thousand request targets mixing tracking pairs and the site's
own in every odd form the README names (``+``, ``%20``, empty pieces, a bare ``?``, names
without ``=``, repeated names, any letter case, percent-encoded names, ``;``, very long
queries). Each goes over a raw socket to a real gateway on 127.0.0.1 in front of a real origin
that records the target it received; that target (under ``proxy.strip = "redirect"``, the 302's
``Location`` for a GET or HEAD) must equal ``expected``, the README's rule written out here
again, apart from the gateway's code: split at the first ``?``, then on ``&`` only; a piece goes
when its name, percent- and ``+``-decoded, in any case of its ASCII letters, is a tracked name
or a campaign prefix with something after it; the rest is joined back with one ``&`` each; a
query left with nothing but ``&`` goes with its ``?``; a target that loses nothing goes exactly
as sent.
"""

from __future__ import annotations

import random
from urllib.parse import unquote_plus

import pytest
from aiohttp import web

from tests.gateway.test_malformed import RawResponse, raw_request

SEED = 20261206
EXAMPLES = 1500  # per mode; the same targets every run
PREFIXES = ("c_", "utm_")  # campaign.prefixes' default
FIELDS = ("source", "medium", "campaign", "term", "content")
CLICK_IDS = ("gclid", "gbraid", "wbraid", "dclid", "fbclid", "msclkid", "ttclid", "li_fat_id", "twclid",
             "yclid", "sccid", "epik", "rdt_cid", "qclid", "irclickid", "mc_cid")  # fmt: skip
TRACKED = {p + f for p in PREFIXES for f in FIELDS} | set(CLICK_IDS) | {"creator_id", "sub_id"}

# Names on the wire: tracking ones in odd spellings, the site's own (some only look alike).
NAMES = [
    "utm_source", "UTM_SOURCE", "Utm_Medium", "c_campaign", "C_TERM", "utm_content", "utm_id",
    "utm_source_platform", "c_ref", "utm_nooverride", "c_nooverride", "gclid", "GCLID", "ScCid",
    "fbclid", "msclkid", "li_fat_id", "mc_cid", "creator_id", "sub_id", "utm%5Fsource",
    "%75tm_source", "UTM%5fmedium", "%63_campaign", "utm_", "c_", "utm_source+x", "utm+source",
    "%67clid", "gcl%69d", "utm%5Fsource%5F", "utm_%ff",
    "q", "page", "ref", "via", "source", "_gl", "_ga", "mc_eid", "_hsenc", "gad_source", "gclsrc",
    "srsltid", "igshid", "si", "aff_id", "utm", "utmsource", "utm-source", "c", "cc_x",
    "xutm_source", "utm%255Fsource", "utm%5source", "%ff", "%", "+utm_source", "%20utm_source",
    "gclid2", "_gclid", "gclid%00", "utm_source;x", "a;utm_source", "?utm_source", "utm_source?",
    "", "a+b", "%E2%84%AA", "%C5%BFrc", "mscl%E2%84%AAid", "MSCL%E2%84%AAID", "irclic%E2%84%AAid",
    "UTM_%E2%84%AA", "%C4%B0", "C_", "UTM_", "utm%5F", "c%5f", "utm_%C4%B0",
]  # fmt: skip
VALUES = [
    "", "x", "Black+Friday", "Black%20Friday", "a%26b%3Dc", "%ff", "%", "%g", "=", "a=b", "x;utm_source=y",
    "?", "x?y", "%2B", "/", "+", "%20x%20", "%00", "%0d%0a", "news", "NEWS", "1", "0", "false",
    "Cj0KCQ-abc_123", "%C3%A9t%C3%A9", "x/y:z@w", "!$'()*,",
]  # fmt: skip
PATHS = ["/", "/p", "/a%2Fb;c", "/p%3Futm_source=x", "//evil.example/", "/\\evil", "/shoes/", "/%7Eu/x.php"]


ASCII_LOWER = {ord(c): ord(c) + 32 for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def tracked(name: str) -> bool:
    """The README's "Campaign capture": a name matches after percent-decoding, in any case of
    its ASCII letters (no other letter is another's case: the Kelvin sign is no ``k``); the
    prefixes' other suffixes are tracked pairs too, a prefix alone (``utm_``) is not."""
    key = unquote_plus(name, errors="surrogateescape").translate(ASCII_LOWER)
    return key in TRACKED or (key.startswith(PREFIXES) and key not in PREFIXES)


def clean_query(query: str) -> str | None:
    """``query`` less its tracking pieces, or None when it has none (it then goes as sent)."""
    pieces = query.split("&")
    kept = [piece for piece in pieces if not tracked(piece.partition("=")[0])]
    if len(kept) == len(pieces):
        return None
    return "&".join(kept) if any(kept) else ""


def origin_form(target: str) -> str:
    """An absolute-form target (``http://t/p?q``) goes as its path and query, ``/`` for no path
    (README, "How a request flows"); its fragment is neither."""
    if not target.startswith("http://t"):
        return target
    rest = target[len("http://t") :].partition("#")[0]
    return rest if rest.startswith("/") else "/" + rest


def expected(target: str, *, fragment: bool = True) -> str:
    """The target the site should receive for ``target`` (strip = "forward"). A ``#`` ends the
    query (RFC 3986 §3.4): what follows it, which no browser sends, is no query's and goes as
    sent; a ``?`` after it starts no query. ``fragment=False``: the clean URL without it."""
    target = origin_form(target)
    path, mark, rest = target.partition("?")
    if not mark or "#" in path:
        return target
    query, hash_mark, tail = rest.partition("#")
    clean = clean_query(query)
    if clean is None:
        return target
    return path + ("?" + clean if clean else "") + (hash_mark + tail if fragment else "")


def expected_location(target: str) -> str | None:
    """Under strip = "redirect": the 302's ``Location`` for a GET, or None when nothing is
    stripped (the request goes upstream as sent). A path starting ``//`` or ``/\\`` gets ``/.``
    before it, the same path on this host. A fragment sent in the target is not in it (a
    browser keeps its own across a redirect that names none, RFC 9110 §10.2.2)."""
    if expected(target) == origin_form(target):
        return None
    clean = expected(target, fragment=False)
    if clean[1:2] in ("/", "\\"):
        clean = "/." + clean
    return clean


def piece(rng: random.Random) -> str:
    form = rng.random()
    name = rng.choice(NAMES)
    if form < 0.08:
        return ""
    if form < 0.18:
        return name  # no "="
    if form < 0.22:
        return "=" + rng.choice(VALUES)
    value = rng.choice(VALUES)
    if rng.random() < 0.05:
        value = rng.choice("abc%20+") * rng.randint(150, 1200)
    return f"{name}={value}"


def target(rng: random.Random) -> str:
    path = rng.choice(PATHS)
    shape = rng.random()
    if shape < 0.04:
        return path
    if shape < 0.08:
        return path + "?"
    pieces = [piece(rng) for _ in range(rng.randint(1, 12))]
    if rng.random() < 0.1:  # a name given twice
        pieces.insert(rng.randint(0, len(pieces)), rng.choice(pieces))
    query = "&".join(pieces)
    if rng.random() < 0.1:
        query = rng.choice(["&", "&&", "?", "&?"]) + query
    if rng.random() < 0.1:
        query += rng.choice(["&", "&&", "&="])
    if rng.random() < 0.05:  # a fragment, which no browser sends but a client may
        query += "#" + "&".join(piece(rng) for _ in range(rng.randint(0, 3)))
    if rng.random() < 0.02:
        path += "#x"
    if rng.random() < 0.05:  # absolute-form, as a proxy-minded client sends it
        path = "http://t" + ("" if path == "/" and rng.random() < 0.5 else path)
    return (path + "?" + query)[:7000]  # under proxy.max_header_size (8190)


def targets() -> list[str]:
    rng = random.Random(SEED)
    return [target(rng) for _ in range(EXAMPLES)]


def test_the_reference_follows_the_readme_examples() -> None:
    """The README's own examples, so the reference is the spec and not a copy of the code."""
    assert expected("/p?a=1&&utm_source=x") == "/p?a=1&"
    assert expected("/p?utm_source=x") == "/p"
    assert expected("/p?utm_source=x&&") == "/p"
    assert expected("/p?a=1;utm_source=x") == "/p?a=1;utm_source=x"
    assert expected("/p?utm_source=x;b=2") == "/p"
    assert expected("/p?UTM_SOURCE=x&utm%5Fsource=y&q=1") == "/p?q=1"
    assert expected("/p?utm_=x&c_=1&utm_source=y") == "/p?utm_=x&c_=1"
    assert expected("/p?mscl%E2%84%AAid=x&msclkid=y&MSCLKID=z") == "/p?mscl%E2%84%AAid=x"
    assert expected("/p?_gl=1&_ga=2&mc_eid=3&gad_source=1&srsltid=4&si=5&ref=6&source=7") == (
        "/p?_gl=1&_ga=2&mc_eid=3&gad_source=1&srsltid=4&si=5&ref=6&source=7"
    )
    assert expected("/p?") == "/p?"
    assert expected_location("//evil.example/?utm_source=x") == "/.//evil.example/"
    assert expected("/p?a=1&utm_source=x#f&utm_medium=y") == "/p?a=1#f&utm_medium=y"
    assert expected("/p?utm_source=x#f") == "/p#f"
    assert expected("/p#f?utm_source=x") == "/p#f?utm_source=x"
    assert expected_location("/p?utm_source=x#f") == "/p"
    assert expected("http://t?a=1&gclid=x#f") == "/?a=1"
    assert expected("http://t/p?a=1#f") == "/p?a=1"
    assert sum(expected(t) != t for t in targets()) > EXAMPLES // 2  # most examples lose pairs
    assert sum(expected(t) == t and "?" in t for t in targets()) > EXAMPLES // 20  # some lose none


async def origin(upstream_server, received: list[tuple[str, str, str | None]]) -> str:
    """A real origin recording (method, raw target, Referer) of each request it gets."""

    async def handler(request: web.Request) -> web.Response:
        received.append((request.method, request.raw_path, request.headers.get("Referer")))
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await upstream_server(app)


async def send(port: int, method: str, target: str, referer: str | None = None) -> RawResponse:
    head = f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAccept: text/html\r\n"
    if referer is not None:
        head += f"Referer: {referer}\r\n"
    if method in ("POST", "PUT"):
        head += "Content-Length: 0\r\n"
    return await raw_request(port, (head + "\r\n").encode("ascii"), head=method == "HEAD")


@pytest.mark.parametrize("mode", ["forward", "redirect"])
async def test_the_site_gets_the_target_less_the_tracking_pairs(
    start_gateway, upstream_server, mode: str
) -> None:
    received: list[tuple[str, str, str | None]] = []
    gw = await start_gateway(await origin(upstream_server, received), f'[proxy]\nstrip = "{mode}"\n')
    rng = random.Random(SEED + 1)
    mismatches: list[str] = []
    for sent in targets():
        method = rng.choice(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"])
        # A same-site Referer carrying the same query: cleaned by the same rule (forward only).
        same_site = mode == "forward" and sent.startswith("/") and rng.random() < 0.3
        referer = "http://t" + sent if same_site else None
        received.clear()
        resp = await send(gw.proxy.port, method, sent, referer)
        location = expected_location(sent) if mode == "redirect" and method in ("GET", "HEAD") else None
        if location is not None:
            got = (resp.status, resp.headers.get("Location"), len(received))
            if got != (302, location, 0):
                mismatches.append(f"{method} {sent!r}: 302 to {location!r} expected, got {got!r}")
            continue
        if resp.status != 200 or len(received) != 1:
            mismatches.append(f"{method} {sent!r}: status {resp.status}, {len(received)} upstream")
            continue
        want = expected(sent)
        if received[0][1] != want:
            mismatches.append(f"{method} {sent!r}: site got {received[0][1]!r}, expected {want!r}")
        if referer is not None and received[0][2] != "http://t" + want:
            mismatches.append(
                f"Referer {referer!r}: site got {received[0][2]!r}, expected {'http://t' + want!r}"
            )
    shown = "\n".join(m if len(m) < 600 else m[:600] + "…" for m in mismatches[:15])
    assert not mismatches, f"{len(mismatches)} mismatches, first ones:\n{shown}"
