"""Conversion rules: a checkout, signup or lead seen in traffic becomes a ``Conversion``.

Configured by ``[[conversions]]``. When a matching request's response has a
success status and the rule's ``when`` conditions hold, the value (fixed, or
read and multiplied by ``value_scale``), currency (fixed or read) and order ID
are read and validated — a value that is not a finite number ≥ 0, or a
currency that is not three letters, is left out and counted, and the
conversion is still recorded. The conversion carries the visitor key, and the
user key when ``stitching`` bound a user in the same exchange (otherwise reads
join through the identities table). Deduplication is the store's UNIQUE
``dedup_key``: ``order:<order id>`` when an order ID is known (so a billing
webhook for the same order counts once too; ``order/<scope>:<order id>`` under the
rule's ``order_scope``, ``events.order_key``), else
``window:<rule>:<visitor key>:<n>`` where ``n`` numbers the rule's
``dedup_window``-second windows since the Unix epoch. The store counts the conversion
(``gateway_conversions_total``, or ``gateway_conversions_duplicate_total`` when the key was
taken) once it has committed: only it knows which of a retried checkout's two went in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from addons.amounts import money
from addons.conditions import Condition, holding_operations
from addons.extract import Extractor, site_host, source_keys
from addons.jwks import FollowsKeyFiles, RuleKeys
from addons.rules import FailureLines, RuleIndex, compile_match
from addons.values import MAX_TEXT, ExtractError, as_text
from gateway.events import Conversion, iso, order_key
from gateway.ids import Uuid7
from gateway.metrics import Metrics
from gateway.pipeline import Context, Exchange
from gateway.placeholders import placeholder
from gateway.ruleconfig import Source

_CURRENCY = re.compile(r"[A-Z]{3}")
_SAID = {
    "value": ("its value", "the conversion is recorded without it"),
    "currency": ("its currency", "the conversion is recorded without it"),
    "order_id": ("its order ID", "the conversion is recorded without it, deduplicated by window"),
    "when": ("its when", "nothing recorded"),
}
"""What a failure's log line says was not read, and what the rule did then, by the field its
reason starts with (``when_…``: a condition that could not be read)."""


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    value: float | Extractor | None
    value_scale: float
    decimal_separator: str
    currency: str | Extractor | None
    order_id: Extractor | None
    window: int
    when: tuple[Condition, ...]
    order_scope: str = ""


class Conversions(FollowsKeyFiles):
    def configure(self, ctx: Context) -> None:
        self.metrics: Metrics = ctx.metrics
        self.node = ctx.settings.node
        self.new_id = Uuid7()
        settings = ctx.settings
        self.key_files: list[RuleKeys] = []
        """The rules' JWT keys: those read from a file follow it while the chain runs."""
        compiled = []
        site = site_host(settings)
        for i, rule in enumerate(settings.options.conversions):

            def source(
                name: str, value: Source, i: int = i, rule_name: str = rule.name, cap: int = rule.max_body
            ) -> Extractor:
                at = f"conversions[{i}].{name}"
                return Extractor(value, source_keys(settings, at, value, rule_name), cap, site)

            value = source("value", rule.value) if isinstance(rule.value, Source) else rule.value
            currency = (
                source("currency", rule.currency) if isinstance(rule.currency, Source) else rule.currency
            )
            order_id = source("order_id", rule.order_id) if rule.order_id is not None else None
            when = tuple(
                Condition(
                    c, source_keys(settings, f"conversions[{i}].when[{k}]", c, rule.name), rule.max_body, site
                )
                for k, c in enumerate(rule.when)
            )
            reads = [e for e in (value, currency, order_id) if isinstance(e, Extractor)]
            reads += [c.read for c in when]
            self.key_files += [e.keys for e in reads if e.keys is not None]
            compiled.append(
                (
                    rule.method,
                    compile_match(rule, reads),
                    _Rule(
                        rule.name,
                        value,
                        rule.value_scale,
                        rule.decimal_separator,
                        currency,
                        order_id,
                        rule.dedup_window,
                        when,
                        rule.order_scope,
                    ),
                )
            )
        self.index = RuleIndex(compiled)
        self.said = FailureLines("conversion", ctx.live)
        self.enabled = bool(compiled)  # no rules: left out of the chain, costs requests nothing

    def request(self, ex: Exchange) -> None:
        self.index.request(ex)

    def _matched(self, rule: _Rule, status: int) -> None:
        self.metrics.rule_matched.labels("conversion", rule.name, str(status)).inc()

    def response(self, ex: Exchange) -> None:
        for rule in self.index.fired(ex, self._matched):
            try:
                # Not this rule's request (another GraphQL operation): [], not counted.
                picked = holding_operations(rule.when, ex)
            except ExtractError as err:
                self._failed(ex, rule, err.reason)
                continue
            for operation in picked:  # a batch's operations the rule's when holds for
                self._record(ex, rule, operation)

    def _read(
        self, ex: Exchange, rule: _Rule, field: str, source: Extractor, operation: int | None
    ) -> object:
        try:
            return source(ex, operation)
        except ExtractError as err:
            self._failed(ex, rule, f"{field}_{err.reason}")
            return None

    def _text(
        self, ex: Exchange, rule: _Rule, field: str, source: Extractor, operation: int | None
    ) -> str | None:
        """A text field's value (a string, or a whole number as written); one read that has no
        text (a fraction, an object, a list, a boolean) is counted ``<field>_invalid``: until
        2026-12-05 it was dropped uncounted, and an order ID so lost deduplicated by window."""
        raw = self._read(ex, rule, field, source, operation)
        text = as_text(raw)
        if raw is not None and text is None:
            self._failed(ex, rule, f"{field}_invalid")
        return text

    def _failed(self, ex: Exchange, rule: _Rule, reason: str) -> None:
        self.metrics.extraction_failures.labels(rule.name, reason).inc()
        field = next((f for f in _SAID if reason.startswith(f + "_")), "when")
        what, outcome = _SAID[field]
        self.said(ex, rule.name, reason, what, outcome)

    def _record(self, ex: Exchange, rule: _Rule, operation: int | None) -> None:
        assert ex.visitor is not None  # fired() only returns rules for an exchange with a visitor
        value: float | None = None
        if isinstance(rule.value, Extractor):
            raw = self._read(ex, rule, "value", rule.value, operation)
            if raw is not None and (value := money(raw, rule.value_scale, rule.decimal_separator)) is None:
                self._failed(ex, rule, "value_invalid")
        else:
            value = rule.value
        currency: str | None = None
        if isinstance(rule.currency, Extractor):
            text = self._text(ex, rule, "currency", rule.currency, operation)
            if text is not None:
                currency = text.strip().upper()
                if not _CURRENCY.fullmatch(currency):
                    currency = None
                    self._failed(ex, rule, "currency_invalid")
        else:
            currency = rule.currency
        order_id: str | None = None
        if rule.order_id is not None:
            order_id = self._text(ex, rule, "order_id", rule.order_id, operation)
            if order_id is not None:
                order_id = order_id.strip()
                if not order_id or len(order_id) > MAX_TEXT or not order_id.isprintable():
                    order_id = None
                    self._failed(ex, rule, "order_id_invalid")
                elif placeholder(order_id):  # every order after the first would be its duplicate
                    order_id = None
                    self._failed(ex, rule, "order_id_placeholder")
        ts = ex.request.ts
        visitor_key = ex.visitor.key
        if order_id is not None:
            dedup_key = order_key(order_id, rule.order_scope)
        else:
            dedup_key = f"window:{rule.name}:{visitor_key}:{int(ts.timestamp()) // rule.window}"
        ex.events.append(
            Conversion(
                id=self.new_id(int(ts.timestamp() * 1000)),
                ts=iso(ts),
                node=self.node,
                name=rule.name,
                dedup_key=dedup_key,
                visitor_key=visitor_key,
                user_key=ex.user_key,
                value=value,
                currency=currency,
                order_id=order_id,
                origin="rule",
                rule=rule.name,
            )
        )
