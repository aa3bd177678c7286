"""Identity rules: a login or signup seen in traffic binds the visitor to the site's user.

Configured by ``[[identity.rules]]``. A request matching a rule has the bodies
its source reads captured (up to the rule's ``max_body``); when the response's
status is one the rule calls success and its ``when`` conditions hold, the user
ID is read, validated (printable, at most ``MAX_USER_ID`` characters; lower-cased
when the rule says ``lowercase``) and a ``Binding`` of the visitor key to the
user key is emitted. Many visitors per user; nothing unbinds. The store keeps
one binding per pair and counts it (``gateway_bindings_total``) once stored; a pair whose
binding the store refused (``not_stored``) is bound again at its next sign-in. The
user key is left on the exchange so ``conversions`` can credit the user at once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from addons.conditions import Condition, holding_operations
from addons.extract import Extractor, site_host, source_keys
from addons.jwks import FollowsKeyFiles, RuleKeys
from addons.rules import FailureLines, RuleIndex, compile_match
from addons.values import ExtractError, user_id
from gateway.events import Binding, Event, iso
from gateway.ids import Uuid7
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.pipeline import Context, Exchange

RECENT = 4096
"""Visitor-user pairs remembered, so a rule firing on every request does not ask the store to
bind again each time. Only a saving: the store itself keeps one binding per pair, whichever
process (another worker, the gateway before a restart) bound it first."""


class RecentPairs:
    """The visitor-user pairs bound lately (at most ``size``, least recently fired first out)."""

    def __init__(self, size: int = RECENT) -> None:
        self.size = size
        self.pairs: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, pair: tuple[str, str]) -> bool:
        """Whether ``pair`` is to be bound now: not among the recent ones (it is, from now on)."""
        if pair in self.pairs:
            self.pairs.move_to_end(pair)
            return False
        self.pairs[pair] = None
        if len(self.pairs) > self.size:
            self.pairs.popitem(last=False)
        return True

    def drop(self, pair: tuple[str, str]) -> None:
        """Forget one pair (its binding was not stored): it is bound again when seen again."""
        self.pairs.pop(pair, None)

    def forget(self, user_keys: Collection[str]) -> None:
        """Drop the pairs of these users (erased: their bindings are gone from the store)."""
        if any(user in user_keys for _, user in self.pairs):
            self.pairs = OrderedDict((p, None) for p in self.pairs if p[1] not in user_keys)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    user_id: Extractor
    lowercase: bool
    when: tuple[Condition, ...]


class Stitching(FollowsKeyFiles):
    def configure(self, ctx: Context) -> None:
        rules = ctx.settings.options.identity.rules
        self.keys: Keys = ctx.keys
        self.metrics: Metrics = ctx.metrics
        self.node = ctx.settings.node
        self.new_id = Uuid7()
        self.key_files: list[RuleKeys] = []
        """The rules' JWT keys: those read from a file follow it while the chain runs."""
        self.recent = RecentPairs()
        """Pairs not bound again; ``gateway import``'s worker processes keep none (each binds at
        every fire) and the importer applies the same rule to their bindings, in file order."""
        compiled = []
        settings = ctx.settings
        site = site_host(settings)
        for i, rule in enumerate(rules):
            at = f"identity.rules[{i}]"
            extractor = Extractor(
                rule.user_id,
                source_keys(settings, f"{at}.user_id", rule.user_id, rule.name),
                rule.max_body,
                site,
            )
            when = tuple(
                Condition(c, source_keys(settings, f"{at}.when[{k}]", c, rule.name), rule.max_body, site)
                for k, c in enumerate(rule.when)
            )
            reads = [extractor, *(c.read for c in when)]
            self.key_files += [e.keys for e in reads if e.keys is not None]
            match = compile_match(rule, reads)
            compiled.append((rule.method, match, _Rule(rule.name, extractor, rule.lowercase, when)))
        self.index = RuleIndex(compiled)
        self.said = FailureLines("identity", ctx.live)
        self.enabled = bool(compiled)  # no rules: left out of the chain, costs requests nothing

    def request(self, ex: Exchange) -> None:
        self.index.request(ex)

    def _matched(self, rule: _Rule, status: int) -> None:
        self.metrics.rule_matched.labels("identity", rule.name, str(status)).inc()

    def response(self, ex: Exchange) -> None:
        for rule in self.index.fired(ex, self._matched):
            try:
                # Not this rule's request (another GraphQL operation): [], not counted.
                picked = holding_operations(rule.when, ex)
            except ExtractError as err:
                self._failed(ex, rule, err.reason, "its when")
                continue
            for operation in picked:  # a batch's operations the rule's when holds for
                try:
                    uid = user_id(rule.user_id(ex, operation))
                    if rule.lowercase:
                        uid = user_id(uid.lower())
                except ExtractError as err:
                    self._failed(ex, rule, err.reason, "its user ID")
                    continue
                self._bind(ex, rule.name, self.keys.user_key(uid))

    def _failed(self, ex: Exchange, rule: _Rule, reason: str, what: str) -> None:
        self.metrics.extraction_failures.labels(rule.name, reason).inc()
        self.said(ex, rule.name, reason, what, "nothing bound")

    def erased(self, user_keys: Collection[str]) -> None:
        """An erasure deleted these users' bindings: their next sign-in binds again."""
        self.recent.forget(user_keys)

    def not_stored(self, events: Sequence[Event]) -> None:
        """The store refused these events (fail open): a pair whose binding was among them is
        bound at its next sign-in. Until 2026-12-06 it stayed remembered as bound, and the
        visitor's touchpoints never joined the user while the process ran."""
        for event in events:
            if isinstance(event, Binding) and event.origin == "rule":
                self.recent.drop((event.visitor_key, event.user_key))

    def _bind(self, ex: Exchange, rule: str, user_key: str) -> None:
        assert ex.visitor is not None  # fired() only returns rules for an exchange with a visitor
        ex.user_key = user_key
        pair = (ex.visitor.key, user_key)
        if not self.recent.first(pair):
            return
        ts = ex.request.ts
        ex.events.append(
            Binding(
                id=self.new_id(int(ts.timestamp() * 1000)),
                ts=iso(ts),
                node=self.node,
                visitor_key=pair[0],
                user_key=user_key,
                rule=rule,
                origin="rule",
                consent=ex.visitor.consent,
            )
        )
