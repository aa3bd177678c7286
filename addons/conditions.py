"""A rule's ``when``: its conditions compiled once, and which exchange (or which operations of a
GraphQL batch) they hold for.

Owns ``Condition`` (a source whose value must be present, equal a text or match a regex, or
be absent), ``conditions_hold`` and ``holding_operations``; the values are read by
``addons/extract.py`` and tested by ``addons/values.py``'s ``meets``. No state.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from addons.extract import Extractor
from addons.jwks import RuleKeys
from addons.values import NO_VALUE, ExtractError, meets
from gateway.pipeline import Exchange
from gateway.ruleconfig import Condition as ConditionOptions


class Condition:
    """One entry of a rule's ``when``: its value must be present (not JSON ``null``), and equal
    ``equals`` or match ``matches`` when the rule says so."""

    def __init__(
        self,
        condition: ConditionOptions,
        keys: RuleKeys | None = None,
        max_body: int | None = None,
        site: str = "",
    ) -> None:
        self.read = Extractor(condition, keys, max_body, site)
        self.equals = condition.equals
        self.matches = re.compile(condition.matches) if condition.matches is not None else None
        self.absent = condition.absent

    def __call__(self, ex: Exchange, operation: int | None = None) -> bool:
        """Whether it holds (for one ``operation`` of a batch: ``Extractor``); ExtractError when
        the value cannot be read at all (a body not read, not JSON, a JWT that fails): the rule
        does not fire, and that is counted."""
        try:
            value = self.read(ex, operation)
        except ExtractError as err:
            if err.reason in NO_VALUE:
                return self.absent
            raise
        return not self.absent and meets(value, self.equals, self.matches)


def conditions_hold(conditions: Sequence[Condition], ex: Exchange, operation: int | None = None) -> bool:
    """Whether every condition of a rule's ``when`` holds (ExtractError: one could not be read)."""
    return all(condition(ex, operation) for condition in conditions)


def holding_operations(conditions: Sequence[Condition], ex: Exchange) -> list[int | None]:
    """What a rule's ``when`` picks: ``[None]`` (the whole exchange) when it holds, ``[]`` when
    not; for a JSON array (a GraphQL batch, which fails a pointer into one operation with
    ``json_array``), each operation it holds for, in order. ExtractError (its reason prefixed
    ``when_``): a condition could not be read (for a batch: for any of its operations)."""
    try:
        return [None] if not conditions or conditions_hold(conditions, ex) else []
    except ExtractError as err:
        if err.reason != "json_array":
            raise ExtractError("when_" + err.reason) from None
    try:
        return [op for op in range(operations(ex)) if conditions_hold(conditions, ex, op)]
    except ExtractError as err:
        raise ExtractError("when_" + err.reason) from None


def operations(ex: Exchange) -> int:
    """How many operations a batch holds: the request's JSON array's length, else the answer's."""
    for body in (ex.request_body, ex.response_body):
        if body is not None:
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                continue
            if isinstance(document, list):
                return len(document)
    return 0
