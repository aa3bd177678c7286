"""``gateway rules try SESSION.har``: the configured identity and conversion rules tried on a
recorded browser session, offline, and what they made of each request printed (a table, or
one JSON document). Reads the config and the HAR (``gateway.har``; ``-``: standard input,
read to its end), runs ``gateway.rulestry``
on the requests to the site recorded (``--host``, else the host of the page the recording starts
on: a HAR holds the page's calls to other sites, which the gateway never sees), the others
counted as skipped; writes nothing but its output. Exit 0 when every entry was read, 1 when
the file (or an entry of it) could not be, 2 for a config problem, no rule to try, a
``--host`` that is no host name or ``-`` on a terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
from collections import Counter
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from addons.campaign import hostname
from gateway.config import ConfigError, load_settings
from gateway.har import Entry, EntryError, HarError, NotHttp, Recording, printable
from gateway.rulestry import Outcome, Trier

EXIT_CONFIG = 2


def add_parser(sub: Any, default_config: str) -> None:
    rules = sub.add_parser("rules", help="identity and conversion rules: try them on a recorded session")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    try_ = rules_sub.add_parser(
        "try",
        help="run the rules on a HAR file (a browser's network panel, saved with content), offline",
    )
    try_.add_argument(
        "har", metavar="SESSION.har", help="the HAR file (gzip'd too: session.har.gz); - reads standard input"
    )
    try_.add_argument("-c", "--config", default=default_config, help="config file (default: %(default)s)")
    try_.add_argument("--all", action="store_true", help="list every entry, not only those a rule matched")
    try_.add_argument("--format", choices=("table", "json"), default="table", help="output (default: table)")
    try_.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="run the rules only on the requests to this host (a port too, when given); repeatable"
        " (default: the host of the page the recording starts on)",
    )
    try_.set_defaults(func=cmd_rules_try)


def cmd_rules_try(args: argparse.Namespace) -> int:
    from gateway.cli import _fail_config

    try:
        # Nothing is stored or served: no secret is needed (made up when unset), but a JWT
        # source's key is read as the gateway reads it.
        settings = load_settings(args.config, dev=True, offline=True, files_only=True, admin_public=True)
    except ConfigError as err:
        return _fail_config(args.config, err)
    opts = settings.options
    if not opts.identity.rules and not opts.conversions:
        print(
            f"gateway: {args.config}: no [[identity.rules]] and no [[conversions]]: no rule to try",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    wanted = []
    for name in args.host or ():
        host = _host_option(name)
        if host is None:
            print(
                f"gateway: --host {name!r}: not a host name (shop.example, or shop.example:8443)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        wanted.append(host)
    try:
        recording = Recording(args.har, _stdin() if args.har == "-" else None)
    except HarError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return 1
    except _Terminal:
        print(
            "gateway: -: standard input is a terminal; pipe a HAR in, as in"
            " gateway rules try - < session.har (or zcat session.har.gz | gateway rules try -)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    order = recording.in_time_order()
    if wanted:
        hosts = Hosts(tuple(dict.fromkeys(wanted)), "option")
    else:  # the page's calls to other sites (analytics, payment, CDNs) never reach the gateway
        first = recording.first_page(order)
        hosts = Hosts(
            (first[0].lower(),) if first else (),
            "none" if first is None else ("page" if first[1] else "request"),
        )
    trier = Trier(settings)
    tried: list[Tried] = []
    elsewhere: list[Tried] = []
    problems: list[tuple[int, str]] = []
    credentials = False
    skipped = 0
    # In the order they were sent, as the gateway sees them; each entry read, tried and let go.
    for number in order:
        try:
            entry = recording.entry(number)
        except NotHttp:
            skipped += 1
            continue
        except EntryError as err:
            problems.append((number, str(err)))
            continue
        if not hosts.runs(entry.host):
            hosts.others[entry.host.lower()] += 1
            if args.all:
                elsewhere.append(Tried.of(entry, [], other_host=True))
            continue
        hosts.seen.update(w for w in hosts.names if hosts.matches(w, entry.host))
        credentials = credentials or any(
            name in entry.request_headers or name in entry.response_headers for name in _CREDENTIALS
        )
        tried.append(Tried.of(entry, trier.run(entry)))
    ran = len({t.host.lower() for t in tried})
    tried = sorted(tried + elsewhere, key=lambda t: t.number)
    problems.sort()
    summary = _summary(trier, tried, problems, credentials, skipped, hosts)
    if args.format == "json":
        shown = [_entry_json(t) for t in tried if t.outcomes or args.all]
        unreadable = [{"entry": number, "error": problem} for number, problem in problems]
        document = {"file": args.har, "entries": shown, "unreadable": unreadable, "summary": summary}
        print(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        said = [(t.number, _entry_table(t, ran)) for t in tried if t.outcomes or args.all]
        said += [(number, f"{problem} (not tried)") for number, problem in problems]
        for _, text in sorted(said, key=lambda said: said[0]):
            print(text)
        print(_summary_line(summary))
        print(_hosts_line(summary))
        for note in summary["notes"]:
            print(f"note: {note}")
    return 1 if problems else 0


class _Terminal(Exception):
    """``-`` names standard input, and it is a terminal: reading would wait for typing."""


def _stdin() -> bytes:
    """Standard input read to its end (``-``), waiting where a parent left it non-blocking;
    HarError when it cannot be read (closed), _Terminal when it is a terminal."""
    try:
        if os.isatty(0):
            raise _Terminal
        chunks = []
        while chunk := _read_some(0):
            chunks.append(chunk)
    except OSError as err:
        raise HarError(f"cannot read -: {err.strerror or err}") from None
    return b"".join(chunks)


def _read_some(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1 << 20)
        except BlockingIOError:  # O_NONBLOCK: wait for the next bytes, as on a blocking pipe
            select.select([fd], [], [])


_CREDENTIALS = ("cookie", "set-cookie", "authorization")
"""Headers Chrome's sanitized export leaves out."""


def _host_option(name: str) -> str | None:
    """A ``--host`` value, lower-cased (a URL's host taken from it); None when it is no host."""
    name = name.strip().lower()
    if "://" in name:
        try:
            name = urlsplit(name).netloc.rpartition("@")[2]
        except ValueError:
            return None
    if not name or any(c in name for c in "/?#@ \t"):
        return None
    return name


def _has_port(host: str) -> bool:
    return host.rpartition("]")[2].count(":") == 1 if host.startswith("[") else ":" in host


@dataclass(slots=True)
class Hosts:
    """The hosts whose requests the rules run on, and why those; the others' counts."""

    names: tuple[str, ...]
    chosen: str
    """``option`` (``--host``), ``page`` (the page the recording starts on), ``request`` (the
    first request's: the file does not mark page loads) or ``none`` (no http(s) request)."""
    others: Counter[str] = dataclass_field(default_factory=Counter)
    seen: set[str] = dataclass_field(default_factory=set)
    """The names some request went to (a ``--host`` mistyped goes to none)."""

    @staticmethod
    def matches(name: str, host: str) -> bool:
        """A name without a port matches the host on any port, as a rule's ``host`` does."""
        host = host.lower()
        return host == name or (not _has_port(name) and hostname(host) == hostname(name))

    def runs(self, host: str) -> bool:
        return any(self.matches(name, host) for name in self.names)


@dataclass(slots=True)
class Tried:
    """What is said of an entry once tried (its headers and bodies let go)."""

    number: int
    method: str
    host: str
    path: str
    query: str
    status: int
    ts: datetime
    cached: str
    outcomes: list[Outcome]
    other_host: bool = False
    """Not tried: its host is none the rules run on (``--host``)."""

    @classmethod
    def of(cls, entry: Entry, outcomes: list[Outcome], other_host: bool = False) -> Tried:
        return cls(
            entry.number,
            entry.method,
            entry.host,
            entry.path,
            entry.query,
            entry.status,
            entry.ts,
            entry.cached,
            outcomes,
            other_host,
        )


def _said(outcome: Outcome) -> list[str]:
    head = f"  {outcome.kind} {outcome.rule}: "
    if not outcome.fired:
        return [head + "not fired: " + outcome.reason]
    lines = []
    for fire in outcome.fired:
        if outcome.kind == "identity":
            values = f"user ID {fire['user_id']}"
            if "duplicate_of" in fire:
                values += f" (bound at entry {fire['duplicate_of']} already: the store records it once)"
        else:
            said = [f"{name} {fire[key]}" for key, name in _CONVERSION if fire[key] is not None]
            values = ", ".join(said) or "no value, currency or order ID"
            if "duplicate_of" in fire:
                values += f" (a duplicate of entry {fire['duplicate_of']}'s: the store records it once)"
        lines.append(head + "fired, " + values)
    if outcome.counted:
        lines.append(f"    counted: {', '.join(outcome.counted)}")
    return lines


_CONVERSION = (("value", "value"), ("currency", "currency"), ("order_id", "order ID"))


def _entry_table(entry: Tried, hosts: int) -> str:
    """``hosts``: how many the file's requests went to; with more than one, each entry says its
    own (a rule without ``host`` matches any, and a HAR holds other sites' requests too)."""
    host = f"  ({printable(entry.host)})" if hosts > 1 or entry.other_host else ""
    # The query too (cut): a rule's when often tests it (?action=register, ?code= or ?error=).
    query = f"?{entry.query}" if entry.query else ""
    query = query if len(query) <= 60 else query[:59] + "…"
    target = printable(entry.path + query)
    lines = [f"entry {entry.number}  {entry.method} {target}  {entry.status}{host}"]
    if entry.other_host:
        return lines[0] + "  other host, skipped"
    if not entry.outcomes:  # one line each: in --all's listing, the entries rules matched stand out
        return lines[0] + "  no rule matched"
    for outcome in entry.outcomes:
        lines += _said(outcome)
    return "\n".join(lines)


def _entry_json(entry: Tried) -> dict[str, Any]:
    return {
        "entry": entry.number,
        "method": entry.method,
        "host": entry.host,
        "path": entry.path,
        "query": entry.query,
        "status": entry.status,
        "started": entry.ts.isoformat(),
        "from_cache": entry.cached or None,
        "skipped": "other_host" if entry.other_host else None,
        "rules": [
            {
                "kind": o.kind,
                "rule": o.rule,
                "fired": o.fired,
                "reason": o.reason or None,
                "counted": o.counted,
            }
            for o in entry.outcomes
        ],
    }


def _summary(
    trier: Trier,
    tried: list[Tried],
    problems: list[tuple[int, str]],
    credentials: bool,
    skipped: int,
    hosts: Hosts,
) -> dict[str, Any]:
    rules: dict[tuple[str, str], dict[str, Any]] = {
        (rule.kind, rule.name): {"kind": rule.kind, "rule": rule.name, "matched": 0, "fired": 0}
        for rule in trier.rules
    }
    for t in tried:
        for o in t.outcomes:
            counts = rules[(o.kind, o.rule)]
            counts["matched"] += 1
            counts["fired"] += len(o.fired)
    notes = [
        f"--host {printable(name)}: no request of the file went to it"
        for name in hosts.names
        if hosts.chosen == "option" and name not in hosts.seen
    ]
    other_host = hosts.others.total()
    entries = len(tried) - sum(t.other_host for t in tried) + other_host + len(problems) + skipped
    reading = [f"{rule.kind} {rule.name}" for rule in trier.rules if rule.credentials]
    if not entries:  # nothing to say of how it was exported: of what it holds, nothing
        notes.append(
            "the HAR holds no requests (its log.entries is empty): save it once the session's"
            " requests are listed in the Network panel (tick Preserve log: a sign-in redirects)"
        )
    elif reading and not credentials and any(not t.other_host for t in tried):
        notes.append(
            f"{', '.join(reading)} read a cookie or the Authorization header, and no entry holds one:"
            " a HAR exported sanitized (Chrome's default) leaves them out; export it with sensitive data"
        )
    return {
        "entries": entries,
        "unreadable": len(problems),
        "not_http": skipped,
        "hosts": list(hosts.names),
        "hosts_chosen": hosts.chosen,
        "other_host": other_host,
        "other_hosts": dict(hosts.others.most_common()),
        "matched": sum(1 for t in tried if t.outcomes),
        "rules": list(rules.values()),
        "matched_nothing": [f"{r['kind']} {r['rule']}" for r in rules.values() if not r["matched"]],
        "notes": notes,
    }


def _summary_line(summary: dict[str, Any]) -> str:
    unreadable = f" ({summary['unreadable']:,} could not be)" if summary["unreadable"] else ""
    if summary["not_http"]:  # WebSocket, data: and extension entries: the gateway runs no rule on them
        unreadable += f" ({summary['not_http']:,} not HTTP, skipped)"
    if summary["other_host"]:
        unreadable += f" ({summary['other_host']:,} to other hosts, skipped)"
    fired = ", ".join(
        f"{r['kind']} {r['rule']} {r['fired']:,} (of {r['matched']:,} matched)"
        for r in summary["rules"]
        if r["matched"]
    )
    entries = summary["entries"]
    line = f"{entries:,} {'entry' if entries == 1 else 'entries'} read{unreadable}"
    line += f", {summary['matched']:,} matched a rule"
    line += f"; fired: {fired}" if fired else ""
    if summary["matched_nothing"]:
        line += f"; matched nothing: {', '.join(summary['matched_nothing'])}"
    return line


_CHOSEN = {
    "option": "as --host says",
    "page": "the page the recording starts on; --host NAME to choose",
    "request": "the first request's, as no page load is marked in the file; --host NAME to choose",
}


def _hosts_line(summary: dict[str, Any]) -> str:
    """Which hosts the rules ran on, and the others' requests skipped, busiest first."""
    if summary["hosts_chosen"] == "none":
        return "hosts: none, as no entry is an http(s) request"
    ran = ", ".join(printable(name) for name in summary["hosts"])
    line = f"hosts: run on {ran} ({_CHOSEN[summary['hosts_chosen']]})"
    others = list(summary["other_hosts"].items())
    if not others:
        return line + "; no request to another host"
    listed = ", ".join(f"{printable(name)} {count:,}" for name, count in others[:5])
    more = f" and {len(others) - 5:,} more" if len(others) > 5 else ""
    count = summary["other_host"]
    return (
        line + f"; {count:,} {'request' if count == 1 else 'requests'} to other hosts skipped: {listed}{more}"
    )
