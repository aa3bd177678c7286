"""``gateway rules try SESSION.har``: the configured identity and conversion rules tried on a
recorded browser session, offline, and what they made of each request printed (a table, or
one JSON document). Reads the config and the HAR (``gateway.har``), runs ``gateway.rulestry``;
writes nothing but its output. Exit 0 when every entry was read, 1 when the file (or an entry
of it) could not be, 2 for a config problem or no rule to try.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, load_settings
from gateway.har import Entry, EntryError, HarError, NotHttp, Recording, printable
from gateway.rulestry import Outcome, Trier

EXIT_CONFIG = 2


def add_parser(sub: Any, default_config: str) -> None:
    rules = sub.add_parser("rules", help="identity and conversion rules: try them on a recorded session")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    try_ = rules_sub.add_parser(
        "try",
        help="run the rules on a HAR file (a browser's network panel, saved with content), offline",
    )
    try_.add_argument("har", metavar="SESSION.har", help="the HAR file")
    try_.add_argument("-c", "--config", default=default_config, help="config file (default: %(default)s)")
    try_.add_argument("--all", action="store_true", help="list every entry, not only those a rule matched")
    try_.add_argument("--format", choices=("table", "json"), default="table", help="output (default: table)")
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
    try:
        recording = Recording(Path(args.har))
    except HarError as err:
        print(f"gateway: {err}", file=sys.stderr)
        return 1
    trier = Trier(settings)
    tried: list[Tried] = []
    problems: list[tuple[int, str]] = []
    credentials = False
    skipped = 0
    # In the order they were sent, as the gateway sees them; each entry read, tried and let go.
    for number in recording.in_time_order():
        try:
            entry = recording.entry(number)
        except NotHttp:
            skipped += 1
            continue
        except EntryError as err:
            problems.append((number, str(err)))
            continue
        credentials = credentials or any(
            name in entry.request_headers or name in entry.response_headers for name in _CREDENTIALS
        )
        tried.append(Tried.of(entry, trier.run(entry)))
    tried.sort(key=lambda t: t.number)
    problems.sort()
    summary = _summary(trier, tried, problems, credentials, skipped)
    if args.format == "json":
        shown = [_entry_json(t) for t in tried if t.outcomes or args.all]
        unreadable = [{"entry": number, "error": problem} for number, problem in problems]
        document = {"file": args.har, "entries": shown, "unreadable": unreadable, "summary": summary}
        print(json.dumps(document, ensure_ascii=False, indent=1))
    else:
        hosts = len({t.host for t in tried})
        said = [(t.number, _entry_table(t, hosts)) for t in tried if t.outcomes or args.all]
        said += [(number, f"{problem} (not tried)") for number, problem in problems]
        for _, text in sorted(said, key=lambda said: said[0]):
            print(text)
        print(_summary_line(summary))
        for note in summary["notes"]:
            print(f"note: {note}")
    return 1 if problems else 0


_CREDENTIALS = ("cookie", "set-cookie", "authorization")
"""Headers Chrome's sanitized export leaves out."""


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

    @classmethod
    def of(cls, entry: Entry, outcomes: list[Outcome]) -> Tried:
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
    host = f"  ({printable(entry.host)})" if hosts > 1 else ""
    # The query too (cut): a rule's when often tests it (?action=register, ?code= or ?error=).
    query = f"?{entry.query}" if entry.query else ""
    query = query if len(query) <= 60 else query[:59] + "…"
    target = printable(entry.path + query)
    lines = [f"entry {entry.number}  {entry.method} {target}  {entry.status}{host}"]
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
    trier: Trier, tried: list[Tried], problems: list[tuple[int, str]], credentials: bool, skipped: int
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
    notes = []
    reading = [f"{rule.kind} {rule.name}" for rule in trier.rules if rule.credentials]
    if reading and not credentials:
        notes.append(
            f"{', '.join(reading)} read a cookie or the Authorization header, and no entry holds one:"
            " a HAR exported sanitized (Chrome's default) leaves them out; export it with sensitive data"
        )
    return {
        "entries": len(tried) + len(problems) + skipped,
        "unreadable": len(problems),
        "not_http": skipped,
        "matched": sum(1 for t in tried if t.outcomes),
        "rules": list(rules.values()),
        "matched_nothing": [f"{r['kind']} {r['rule']}" for r in rules.values() if not r["matched"]],
        "notes": notes,
    }


def _summary_line(summary: dict[str, Any]) -> str:
    unreadable = f" ({summary['unreadable']:,} could not be)" if summary["unreadable"] else ""
    if summary["not_http"]:  # WebSocket, data: and extension entries: the gateway runs no rule on them
        unreadable += f" ({summary['not_http']:,} not HTTP, skipped)"
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
