"""What the configured rules make of a recorded session: the engine of ``gateway rules try``.

Owns ``Trier``: the config's ``stitching`` and ``conversions`` addons, configured as the
gateway configures them (the same rule code, ``addons/rules.py`` and its siblings, the same JWT keys), run
on each HAR entry (``gateway.har``) as the proxy runs them on a request: the request hooks say
which bodies the matching rules read and up to what size, the entry's bodies are handed over
within that size, then the response hooks run. What they did is read back from what they
leave: the bindings and conversions they append to the exchange, and the extraction failures
they count (each addon reports to a ``Metrics`` of its own). Why a matching rule did not
fire is then told as the gateway would count it, and where it counts nothing (a status not in
``status``, a ``when`` condition that did not hold), which. User IDs are read back through
``plain`` user keys. A request the gateway would keep no visitor for (``Sec-GPC: 1``, asked
of the ``identity`` addon itself) or that never left the browser (answered from its cache)
fires nothing, and is said so. Nothing is stored, sent or fetched.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from addons.conditions import Condition
from addons.conversions import Conversions
from addons.extract import Extractor
from addons.identity import Identity, opts_out
from addons.rules import RuleIndex
from addons.stitching import RecentPairs, Stitching
from addons.values import ExtractError, compared_text
from gateway.codings import streamed_type
from gateway.config import Settings
from gateway.events import Binding, Conversion
from gateway.har import Entry, printable
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.pipeline import Context, Exchange, RequestView, ResponseView, Visitor
from gateway.ruleconfig import COOKIE_KINDS, KEPT_HEADER_REFUSED, ConversionRule, IdentityRule

KINDS = {"stitching": "identity", "conversions": "conversion"}
"""The addons that run rules, and what their rules are called."""
CREDENTIAL_SOURCES = frozenset({"cookie", "set_cookie", "jwt_cookie", "jwt_authorization"})
"""Sources that read what Chrome's default HAR export ("sanitized") leaves out: the
``Cookie``, ``Set-Cookie`` and ``Authorization`` headers."""
_NOT_IN_HAR = "{} body not in the HAR: the rule reads the body; export with content"
_REDIRECT_BODY = (
    "response body not in the HAR: browsers save no redirect's body (a {}), whatever the export;"
    " only a running gateway shows whether the rule fires"
)
_STREAMED = (
    "the answer is {}, sent piece by piece for the visitor to see at once: the gateway reads no"
    " such answer for a rule, and passes it on as it comes"
)
_CUT = (
    "the HAR holds {:,} bytes of the {:,}-byte response body: Firefox saves 1 MB of each"
    " (raise devtools.netmonitor.responseBodyLimit in about:config, or record in Chrome)"
)
_GPC = (
    "the browser sent Sec-GPC: 1 (Global Privacy Control: Brave and DuckDuckGo by default, Firefox"
    " when set): the gateway keeps no visitor for it (privacy.honor_gpc) and fires no rule; record"
    " the session in a browser that does not send it"
)
_DNT = "the browser sent DNT: 1: the gateway keeps no visitor for it (privacy.honor_dnt) and fires no rule"
_MISSING = {
    "form": "no value (missing): the form has no field {}",
    "request_json": "no value (missing): the request's JSON has nothing at {}",
    "response_json": "no value (missing): the answer's JSON has nothing at {}",
    "header": "no value (missing): the answer has no {} header",
    "request_header": "no value (missing): the request has no {} header",
    "query": "no value (missing): the query has no {}",
    "location_query": "no value (missing): the Location's query has no {}",
    "set_cookie": "no value (missing): the answer sets no cookie {} (or deletes it)",
    "cookie": "no value (missing): the answer sets no cookie {} and the request sends none",
    "jwt_cookie": "no value (missing): no cookie {} set or sent, or its token has no such claim",
}
"""What a ``when`` source found missing, said where it looked (``missing``: no such value)."""
_CACHED = (
    "answered from the browser's {} cache: the request never reached the site, and the gateway"
    " would not see it (reload without cache, or tick Disable cache, to record it)"
)


@dataclass(slots=True)
class Outcome:
    """What one rule that matched an entry's request made of it."""

    kind: str
    rule: str
    fired: list[dict[str, Any]] = field(default_factory=list)
    """One item per time it fired (a GraphQL batch: per operation): the values read."""
    reason: str = ""
    """Why it did not fire (empty when it did)."""
    counted: list[str] = field(default_factory=list)
    """The reasons ``gateway_extraction_failures_total`` would count for it."""


@dataclass(slots=True)
class _Rule:
    kind: str
    name: str
    index: RuleIndex
    """This rule alone: whether it matches, and fires on a status, is the gateway's own test."""
    statuses: list[int]
    when: tuple[Condition, ...]
    metrics: Metrics
    credentials: bool
    """It reads a cookie or the ``Authorization`` header (``CREDENTIAL_SOURCES``)."""


class Trier:
    def __init__(self, settings: Settings) -> None:
        self.keys = Keys.from_master(settings.secret, "plain")  # a bound user's key is their ID
        self.addons: list[tuple[Stitching | Conversions, Metrics]] = []
        self.rules: list[_Rule] = []
        self.seen: dict[str, int] = {}
        """Conversions' deduplication keys → the entry that first recorded one."""
        self.bound: dict[str, int] = {}
        """User keys → the entry that first bound the recording's visitor to one."""
        self.identity: Identity | None = None
        """Whether the gateway keeps a visitor for a request (none: no rule fires), as it decides."""
        self.privacy = settings.options.privacy
        if "identity" in settings.options.proxy.addons:
            self.identity = Identity()
            self.identity.configure(Context(settings=settings, keys=self.keys, metrics=Metrics()))
        for name in settings.options.proxy.addons:
            if name not in KINDS:
                continue
            addon: Stitching | Conversions = Stitching() if name == "stitching" else Conversions()
            metrics = Metrics()
            addon.configure(Context(settings=settings, keys=self.keys, metrics=metrics))
            if isinstance(addon, Stitching):
                addon.recent = RecentPairs(0)  # every fire said, not only a pair's first
            self.addons.append((addon, metrics))
            configured: Sequence[IdentityRule | ConversionRule] = (
                settings.options.identity.rules if name == "stitching" else settings.options.conversions
            )
            order = {rule.name: i for i, rule in reversed(list(enumerate(configured)))}
            found = [
                (method, match, rule)
                for method, pairs in addon.index.by_method.items()
                for match, rule in pairs
            ]
            for method, match, rule in sorted(found, key=lambda found: order.get(found[2].name, 0)):
                single = RuleIndex([(method, match, rule)])
                fields = (getattr(rule, f, None) for f in ("user_id", "value", "currency", "order_id"))
                reads = [e for e in fields if isinstance(e, Extractor)] + [c.read for c in rule.when]
                credentials = any(e.kind in CREDENTIAL_SOURCES for e in reads)
                self.rules.append(
                    _Rule(
                        KINDS[name], rule.name, single, sorted(match.status), rule.when, metrics, credentials
                    )
                )

    def exchange(self, entry: Entry) -> Exchange:
        request = RequestView(
            entry.method,
            entry.scheme,
            entry.host,
            entry.path,
            entry.query,
            entry.request_headers,
            "",
            entry.ts,
        )
        return Exchange(request, visitor=Visitor("har", False, self.keys.visitor_key))

    def _opted_out(self, entry: Entry) -> str:
        """Why the gateway keeps no visitor for the request, and so fires no rule on it: the
        browser asked not to be tracked (``Sec-GPC: 1``, honoured by default); "" when it does."""
        if self.identity is None:
            return ""
        probe = Exchange(self.exchange(entry).request)
        self.identity.request(probe)
        if not probe.aggregate_only:
            return ""
        gpc = self.privacy.honor_gpc and opts_out(entry.request_headers, "sec-gpc")
        return _GPC if gpc else _DNT

    def matching(self, entry: Entry) -> list[tuple[_Rule, Exchange]]:
        """The rules whose method, host and path match the entry's request, each with what it
        asked of the host (``want_*_body``) on an exchange of its own."""
        found = []
        for rule in self.rules:
            probe = self.exchange(entry)
            rule.index.request(probe)
            if probe.watched:
                found.append((rule, probe))
        return found

    def run(self, entry: Entry) -> list[Outcome]:
        """The outcome of each rule that matched the entry, in config order (none matched: []).
        Entries are run in the order they were sent, as the gateway sees them: a conversion's
        duplicate is the later one. One answered from the browser's cache fires nothing."""
        matched = self.matching(entry)
        if not matched:
            return []
        said = _CACHED.format(entry.cached) if entry.cached else self._opted_out(entry)
        if said:
            return [Outcome(rule.kind, rule.name, reason=said) for rule, _ in matched]
        ex = self.exchange(entry)
        failed: dict[int, str] = {}
        for addon, metrics in self.addons:
            _call(addon.request, ex, metrics, failed)
        # As the host reads them: within the largest max_body the matching rules asked for.
        if ex.want_request_body and entry.request_body is not None:
            ex.request_body = entry.request_body if len(entry.request_body) <= ex.want_request_body else None
        streamed = streamed_type(entry.response_headers.get("content-type"))  # never read live
        if (
            ex.want_response_body
            and entry.response_body is not None
            and not entry.response_cut
            and not streamed
        ):
            fits = len(entry.response_body) <= ex.want_response_body
            ex.response_body = entry.response_body if fits else None
        ex.response = ResponseView(entry.status, entry.response_headers)
        before = {id(metrics): _failures(metrics) for _, metrics in self.addons}
        for addon, metrics in self.addons:
            _call(addon.response, ex, metrics, failed)
        counted = {id(metrics): _failures(metrics) - before[id(metrics)] for _, metrics in self.addons}
        outcomes = [self._outcome(entry, ex, probe, rule, counted) for rule, probe in matched]
        for (rule, _), outcome in zip(matched, outcomes, strict=True):
            if id(rule.metrics) in failed and not outcome.fired:
                outcome.reason = failed[id(rule.metrics)]
        return outcomes

    def _outcome(
        self,
        entry: Entry,
        ex: Exchange,
        probe: Exchange,
        rule: _Rule,
        counted: dict[int, Counter[tuple[str, str]]],
    ) -> Outcome:
        out = Outcome(rule.kind, rule.name)
        assert ex.response is not None
        if not rule.index.fired(ex):
            status = ex.response.status
            out.reason = f"status {status} not in status {rule.statuses}"
            if status == 0:  # how browsers write a request that got no answer
                out.reason += " (0: no answer; the request failed or was blocked)"
            return out
        mine = counted[id(rule.metrics)]
        reasons = [reason for (name, reason), n in mine.items() if name == rule.name for _ in range(n)]
        out.counted = [_explained(r, entry, probe) for r in reasons]
        for event in ex.events:
            if isinstance(event, Binding) and rule.kind == "identity" and event.rule == rule.name:
                bound: dict[str, Any] = {"user_id": self.keys.recover_user_id(event.user_key)}
                # One browser, one visitor: the gateway binds a visitor to a user once.
                first = self.bound.setdefault(event.user_key, entry.number)
                if first != entry.number:
                    bound["duplicate_of"] = first
                out.fired.append(bound)
            elif isinstance(event, Conversion) and rule.kind == "conversion" and event.rule == rule.name:
                fire: dict[str, Any] = {
                    "value": event.value,
                    "currency": event.currency,
                    "order_id": event.order_id,
                }
                first = self.seen.setdefault(event.dedup_key, entry.number)
                if first != entry.number:
                    fire["duplicate_of"] = first
                out.fired.append(fire)
        if not out.fired:
            out.reason = "; ".join(out.counted) if out.counted else _unheld(rule.when, ex)
        return out


def _call(hook: Callable[[Exchange], None], ex: Exchange, metrics: Metrics, failed: dict[int, str]) -> None:
    """A hook run as the pipeline runs it, a failure kept to say instead of a traceback (live it
    is logged and counted in ``gateway_addon_errors_total``, and the page still served)."""
    try:
        hook(ex)
    except Exception as err:
        failed[id(metrics)] = f"the addon failed ({type(err).__name__}: {err}): a bug, please report it"


def _failures(metrics: Metrics) -> Counter[tuple[str, str]]:
    counts = Counter[tuple[str, str]]()
    for family in metrics.extraction_failures.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[(sample.labels["rule"], sample.labels["reason"])] += int(sample.value)
    return counts


def _explained(reason: str, entry: Entry, probe: Exchange) -> str:
    """A counted reason, and for a body not read, why: not in the HAR, or over ``max_body``."""
    if not reason.endswith("body_not_read"):
        return reason
    # ``cap``: the rule's own max_body (``probe``: this rule alone), not the largest of those that
    # matched: a body the host read for another rule is not read by this one.
    for which, cap, recorded in (
        ("response", probe.want_response_body, entry.response_body),
        ("request", probe.want_request_body, entry.request_body),
    ):
        if not cap:
            continue
        content_type = entry.response_headers.get("content-type", "")
        if which == "response" and streamed_type(content_type):
            return f"{reason}: {_STREAMED.format(content_type.partition(';')[0].strip())}"
        size = entry.response_size if which == "response" else None
        if (recorded is None or entry.response_cut) and size is not None and size > cap:
            return f"{reason}: the {which} body is {size:,} bytes, over max_body ({cap:,})"
        if which == "response" and entry.response_cut:
            assert recorded is not None
            return f"{reason}: {_CUT.format(len(recorded), size)}"
        if recorded is None and which == "response" and 300 <= entry.status < 400:
            return f"{reason}: {_REDIRECT_BODY.format(entry.status)}"
        if recorded is None:
            return f"{reason}: {_NOT_IN_HAR.format(which)}"
        if len(recorded) > cap:
            return f"{reason}: the {which} body is {len(recorded):,} bytes, over max_body ({cap:,})"
    return reason


def _unheld(conditions: tuple[Condition, ...], ex: Exchange) -> str:
    """Which ``when`` condition did not hold, and what it read instead."""
    for i, condition in enumerate(conditions):
        try:
            if condition(ex):
                continue
        except ExtractError as err:
            if err.reason == "json_array":
                return "when: held for no operation of the JSON batch"
            return f"when[{i}] ({_described(condition)}) could not be read: {err.reason}"
        return f"when[{i}] ({_described(condition)}) did not hold: {_read(condition, ex)}"
    return "when did not hold"


def _described(condition: Condition) -> str:
    read = condition.read
    said = (
        read.kind
        if not read.name or read.kind == "jwt_authorization"
        else f"{read.kind} {json.dumps(read.name)}"
    )
    if read.kind.startswith("jwt_"):
        said += f" claim {json.dumps(read.claim)}"
    if read.capture is not None:
        said += f" capture {json.dumps(read.capture.pattern)}"
    if condition.absent:
        return said + " absent"
    if condition.equals is not None:
        return said + f" equals {json.dumps(condition.equals)}"
    if condition.matches is not None:
        return said + f" matches {json.dumps(condition.matches.pattern)}"
    return said


def _withheld(read: Extractor) -> str:
    """Why a ``when``'s value is not printed ("": it is): a cookie's whole value may be a session
    credential, and a request header named like a credential (``X-Api-Key``) may carry one. What
    ``rules try`` prints is the operator's to paste into a ticket, as the HAR itself is not."""
    if read.kind in COOKIE_KINDS and read.capture is None:
        return "a cookie's whole value may be a session credential"
    if read.kind == "request_header" and KEPT_HEADER_REFUSED.search(read.name):
        return "the header may carry a credential"
    return ""


def _read(condition: Condition, ex: Exchange) -> str:
    try:
        value = condition.read(ex)
    except ExtractError as err:
        if err.reason == "missing" and condition.read.kind in _MISSING:
            return _MISSING[condition.read.kind].format(json.dumps(condition.read.name))
        if err.reason != "capture_no_match":
            return f"no value ({err.reason})"
        if condition.read.kind in CREDENTIAL_SOURCES or _withheld(condition.read):
            return "the capture found nothing"  # in a session cookie, a token or a key: not printed
        # What the capture searched (the URL a checkout redirected to instead), as the operator
        # needs it to correct the pattern.
        return "the capture found nothing in " + _shown(condition.read._read(ex))
    if withheld := _withheld(condition.read):
        return f"its value is not printed ({withheld})"
    said = "its value is " + _shown(value)
    if compared_text(value) is None and (condition.equals is not None or condition.matches is not None):
        # 49.9 under matches = "[0-9.]+" reads as a match: say why it is none.
        kind = "fraction" if isinstance(value, float) else "list" if isinstance(value, list) else "object"
        said += f", a JSON {kind}: equals and matches compare only a string, a whole number or true/false"
    return said


def _shown(value: Any) -> str:
    text = compared_text(value)
    shown = (
        json.dumps(text, ensure_ascii=False) if text is not None else json.dumps(value, ensure_ascii=False)
    )
    return printable(shown if len(shown) <= 80 else shown[:79] + "…")
