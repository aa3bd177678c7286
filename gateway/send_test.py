"""``gateway send-test-event``: sign and send one test conversion, the way a sender would.

Builds the payload in the sender's own layout (its ``fields`` pointers and ``types``
read backwards), signs it per Standard Webhooks with the sender's first secret from
the environment, POSTs it to the gateway and prints the answer. Needs only the
sender's secret, not the gateway's own.
"""

from __future__ import annotations

import argparse
import base64
import decimal
import math
import os
import re
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from yarl import URL

from gateway.attribution import MINOR_UNITS, exponent
from gateway.config import ConfigError, decode_options, parse_config, read_config, resolve_sender_secret
from gateway.config_checks import validate
from gateway.events import MAX_VALUE
from gateway.options import Options, parse_listen
from gateway.signing import body_hmac, stamped_signature, standard_signature
from gateway.sources import Requirement, SourceMap, compile_source, put


def url_arg(text: str) -> str:
    """``--url``: an http(s) URL with a host (and a port that is a port)."""
    try:
        url = URL(text)
        good = url.scheme in ("http", "https") and bool(url.host) and url.port is not None
    except ValueError:  # http://[::1 or a port like :99999
        good = False
    if not good:
        raise argparse.ArgumentTypeError(
            f"must be an http(s) URL like http://127.0.0.1:8080/_gw/events, got {text!r}"
        )
    return text


def value_arg(text: str) -> float:
    """``--value``: a number from 0 to MAX_VALUE, as a conversion's value must be (nan and inf
    would be sent as null)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_VALUE:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_VALUE:.0e}, got {text!r}")
    return value


def creator_arg(text: str) -> str:
    """``--creator``: a creator ID, as the gateway reads one (trimmed, printable, not empty)."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"must be a creator ID like cr_test1, got {text!r}")
    return text.strip()


def currency_arg(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", text):
        raise argparse.ArgumentTypeError(f'must be a 3-letter ISO 4217 code like "EUR", got {text!r}')
    return text.upper()


def test_user(creator: str) -> str:
    """The user a test conversion is made for: ``gateway erase`` of it removes the conversion
    and its touchpoint."""
    return f"test-user-{creator}"


def unscaled(
    value: float, scale: float | str, currency: str, units: Mapping[str, int] = MINOR_UNITS
) -> float | int:
    """``value`` in the sender's unit, so that the gateway's decimal ``value_scale`` gives it
    back: 19.99 at ``0.01`` is 1999 cents (the float quotient is 1998.9999999999998, which
    would be recorded as 19.989999999999998); a whole number is sent as an integer. ``"minor"``:
    in ``currency``'s minor units as ``units`` has them (5000 JPY is 5000, 19.99 EUR 1999)."""
    amount = decimal.Decimal(repr(value))
    raw = (
        amount.scaleb(exponent(currency, units))
        if isinstance(scale, str)
        else amount / decimal.Decimal(repr(scale))
    )
    return int(raw) if raw == raw.to_integral_value() else float(raw)


def test_visitor(creator: str) -> str:
    """The visitor a test conversion is made for when its sender maps no user ID: ``gateway
    erase --visitor`` of it removes the conversion and its touchpoint."""
    return f"test-visitor-{creator}"


def carries(src: SourceMap, name: str) -> bool:
    """Whether ``src``'s events hold our field ``name``: any mapped field in our own layout; in
    a platform's, only those its ``fields`` name (and its type)."""
    return name in src.pointers and (not src.platform or name in src.configured or name == "type")


def recorded_currency(src: SourceMap, currency: str) -> str:
    """The currency a test conversion of ``currency`` is recorded in: a sender whose events
    carry none records its ``defaults.currency``."""
    if not carries(src, "currency") and src.defaults.get("currency"):
        return src.defaults["currency"].upper()
    return currency


AMOUNTS_AS_TEXT = ("shopify", "paddle")
"""Platforms whose events write amounts as JSON strings (a Shopify order's ``"total_price":
"26.40"``, Paddle's ``"total": "2640"``): their test events do too."""
LOWER_CASE_CURRENCY = ("stripe",)
"""Platforms whose events write the currency in lower case (Stripe's ``"currency": "usd"``)."""


def sample_payload(
    src: SourceMap, creator: str, value: float, currency: str, signature: str = "standard"
) -> dict[str, Any]:
    """A conversion by a test user (``test_user``; a test visitor when the sender maps no user
    ID), credited to ``creator``, in the sender's layout: a platform's holds only what its
    ``fields`` map (and its type), written as that platform's own events write them (its
    ``signature`` names the platform). A sender whose events carry no currency records its
    ``defaults.currency``: the value is scaled for that one."""
    currency = recorded_currency(src, currency)
    amount: Any = unscaled(value, src.value_scale, currency, src.minor_units)
    if signature in AMOUNTS_AS_TEXT:
        places = exponent(currency, src.minor_units) if src.value_scale == 1 else 0
        amount = f"{decimal.Decimal(repr(amount)):.{places}f}"
    ours: dict[str, Any] = {
        "type": src.type_value("conversion"),
        "event_id": f"test-{uuid.uuid4()}",
        "order_id": f"test-order-{uuid.uuid4()}",  # a mapped order ID found missing would be reported
        "creator_id": creator,
        "name": "test_conversion",
        "value": amount,
        "currency": currency.lower() if signature in LOWER_CASE_CURRENCY else currency,
        "timestamp": int(time.time()),
    }
    if carries(src, "user_id"):
        ours["user_id"] = test_user(creator)
    else:
        ours["visitor_id"] = test_visitor(creator)
    doc: dict[str, Any] = {}
    for name, value_ in ours.items():
        if carries(src, name):
            put(doc, src.pointers[name], value_)
    for need in src.when.get(ours["type"], ()):
        if not need.absent and (meets := meeting(need)) is not None:
            put(doc, need.tokens, meets)
    return doc


def meeting(need: Requirement) -> Any:
    """A value that meets a ``when`` entry, as the platform would write it (``true`` a JSON
    boolean, ``3`` a number); for ``matches``, the first of its ``|`` alternatives that matches
    as written, else None (the test event is then answered ``ignored``, saying why)."""
    if need.matches is not None:
        for piece in need.matches.pattern.split("|"):
            if need.matches.fullmatch(text := piece.strip("()^$")):
                return text
        return None
    if need.equals is None:
        return "test"
    if need.equals in ("true", "false"):
        return need.equals == "true"
    number = need.equals.isascii() and need.equals.isdigit() and str(int(need.equals)) == need.equals
    return int(need.equals) if number else need.equals


def _options(path: str) -> Options:
    data = parse_config(read_config(path), path)
    options, problems = decode_options(data)
    problems += validate(options)
    if problems:
        raise ConfigError(problems)
    return options


def _finer_than(value: float, currency: str) -> str | None:
    """Why ``value`` is finer than ``currency``'s minor unit (12.5 JPY would be credited as 12
    yen: a test of the sums would not add up), or None."""
    places = exponent(currency)
    if decimal.Decimal(repr(value)).normalize().as_tuple().exponent < -places:  # type: ignore[operator]
        return "has no minor unit: give a whole number" if not places else f"has {places} decimals at most"
    return None


ADD_A_SENDER = """add one, like

    [[sources]]
    name = "test"
    secrets = ["env:TEST_SENDER_SECRET"]

with TEST_SENDER_SECRET set, here and where the gateway runs, to at least 24 bytes\
 (openssl rand -base64 32); then restart the gateway (a reload keeps the [[sources]] it\
 started with) and run this again"""


def _no_sender(options: Options, sender: str | None, config: str) -> str:
    """What to do when no standard-format sender is there to sign as (``sender``: ``--sender``):
    add one, shown in TOML, or give ``--sender`` one of those there are."""
    standard = [s.name for s in options.sources if s.format == "standard"]
    other = [s.name for s in options.sources if s.format != "standard"]
    if not standard:
        whose = ""
        if other:
            formats = sorted({s.format for s in options.sources if s.format != "standard"})
            verb = "is" if len(other) == 1 else "are"
            quoted = ", ".join(f'"{f}"' for f in formats)
            whose = f" ({', '.join(other)} {verb} format = {quoted}, whose calls this does not send)"
        return f"gateway send-test-event: no standard-format [[sources]] in {config}{whose}: {ADD_A_SENDER}"
    if sender in other:
        fmt = next(s.format for s in options.sources if s.name == sender)
        why = f'its format is "{fmt}", whose calls this does not send'
    else:
        why = f"no [[sources]] of that name in {config}"
    return f"gateway send-test-event: --sender {sender}: {why}; give one of: {', '.join(standard)}"


def cmd_send_test_event(args: argparse.Namespace) -> int:
    from gateway.cli import _fail_config

    if (finer := _finer_than(args.value, args.currency)) is not None:
        print(f"gateway send-test-event: --value {args.value:g}: {args.currency} {finer}", file=sys.stderr)
        return 2
    try:
        options = _options(args.config)
    except ConfigError as err:
        return _fail_config(args.config, err)
    candidates = [(i, s) for i, s in enumerate(options.sources) if s.format == "standard"]
    chosen = [(i, s) for i, s in candidates if args.sender in (None, s.name)]
    if not chosen:
        print(_no_sender(options, args.sender, args.config), file=sys.stderr)
        return 2
    index, source = chosen[0]
    problems: list[str] = []  # unset, not UTF-8, a whsec_ that is not base64, too short: as run says
    secret = resolve_sender_secret(
        f"sources[{index}].secrets[0]",
        source.secrets[0],
        os.environ,
        False,
        problems,
        [],
        source.signature,
        "",
    )
    if problems:
        for problem in problems:
            print(f"gateway: {problem}", file=sys.stderr)
        return 2
    url = args.url
    if not url:
        url = f"{_local_url(options.proxy.listen)}{options.proxy.reserved_prefix}events"
    source_map = compile_source(source)
    currency = recorded_currency(source_map, args.currency)
    if (finer := _finer_than(args.value, currency)) is not None:
        print(
            f"gateway send-test-event: --value {args.value:g}: {currency}"
            f" (sources[{index}].defaults.currency, what {source.name} records) {finer}",
            file=sys.stderr,
        )
        return 2
    doc = sample_payload(source_map, args.creator, args.value, args.currency, source.signature)
    signed = source.signed_body()
    type_header = signed.type_header if signed is not None else ""
    topic = doc.pop("type", None) if type_header and "type" in doc else None
    body = msgspec.json.encode(doc)
    msg_id, stamp = f"msg_test_{uuid.uuid4().hex}", str(int(time.time()))
    headers = {"Content-Type": "application/json"}
    stamped = source.stamped_scheme()
    if stamped is not None:  # as Stripe, Paddle and Calendly sign: the time and the body
        headers[stamped.header] = stamped_signature(stamped, secret, stamp, body)
    elif source.signature == "basic":  # the sender's login; a password alone, with any user name
        login = secret if b":" in secret else b"send-test-event:" + secret
        headers["Authorization"] = "Basic " + base64.b64encode(login).decode()
    elif signed is not None:  # the body's HMAC in the sender's own header (Shopify's, "hmac")
        headers[signed.header] = signed.prefix + body_hmac(secret, body, signed.encoding)
    else:
        headers |= {
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": standard_signature(secret, msg_id, stamp, body),
        }
    if signed is not None and signed.delivery_header:
        headers[signed.delivery_header] = msg_id
    if topic is not None:
        headers[type_header] = str(topic)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    print(f"POST {url} as {source.name}: {body.decode()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, answer = resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        status, answer = err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as err:
        print(f"gateway: cannot reach {url}: {getattr(err, 'reason', err)}", file=sys.stderr)
        return 1
    print(f"HTTP {status} {answer}")
    if not 200 <= status < 300:
        return 1
    # Made for the test user, or (a sender mapping no user ID) the test visitor: either is
    # erased, the conversion with the touchpoint its creator ID implied.
    if carries(source_map, "user_id"):
        erase, path = shlex.quote(test_user(args.creator)), "users/" + test_user(args.creator)
    else:
        visitor = test_visitor(args.creator)
        erase, path = "--visitor " + shlex.quote(visitor), "visitors/" + visitor
    print(f"to remove it: gateway erase {erase} -c {shlex.quote(args.config)}")
    if (unset := _unset_secret(options.identity.secret)) is not None:
        print(_erase_through_the_api(unset, path, options.admin.listen))
    return 0


def _unset_secret(value: str) -> str | None:
    """The variable ``identity.secret`` names when it is not set here, else None: `gateway
    erase` cannot key the user without it, as under `make run`, whose `--dev` gateway made its
    secret up."""
    name = value.removeprefix("env:")
    return name if value.startswith("env:") and not os.environ.get(name) else None


def _local_url(listen: str) -> str:
    """The URL a command on this machine reaches a listener of the config at."""
    host, port = parse_listen(listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def _erase_through_the_api(variable: str, path: str, listen: str) -> str:
    """How to erase the test conversion through the running gateway: ``path`` is
    ``users/<user>`` or ``visitors/<visitor>``, its ID percent-encoded here."""
    kind, _, who = path.partition("/")
    url = f"{_local_url(listen)}/api/{kind}/{urllib.parse.quote(who, safe='')}"
    return (
        f"  ({variable} is not set here, and gateway erase needs it; a gateway run with --dev made its"
        f" own up: ask that one instead, curl -X DELETE -H 'Authorization: Bearer <admin token>' {url})"
    )
