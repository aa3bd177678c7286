"""What a page's code writes where it has no value (``String(undefined)``, ``null`` or ``None`` put
in a template, an object made text): no ID at all. Read as a user ID it would bind every visitor it
came for to one user; as an order or event ID, make every later order or event a duplicate of the
first; as a creator ID, make a creator "undefined", credited and paid; as a click ID, make every
visitor so tagged one ad click (reused, a bot's sign); as a campaign, a campaign "undefined" in the
reports. The identity and conversion rules (``addons.values``, ``addons.conversions``), the signed
events (``gateway.mapping``) and the landings' tracking values (``addons.campaign``) read it
alike. Imports nothing of the gateway."""

from __future__ import annotations

PLACEHOLDERS = frozenset({"undefined", "null", "none", "nil", "nan", "[object object]"})
"""The words, case-folded: counted where left out (``placeholder_user_id``,
``order_id_placeholder`` for the rules; ``gateway_inbound_left_out_total{reason="placeholder"}``
for the signed events; ``gateway_params_dropped_total{reason="placeholder"}`` for the landings)."""


LONGEST = max(map(len, PLACEHOLDERS))
"""The longest word's length (15, ``[object object]``). ``casefold`` never makes a text shorter
(each character folds to one or more), so a trimmed text longer than this is none of them: the
test a hot path (``addons.campaign``, on every value of every landing) makes before folding."""


def placeholder(text: str) -> bool:
    """Whether ``text``, trimmed here (until 2026-12-07 by each caller, or not), is one of the
    ``PLACEHOLDERS``, in any case. Trimmed for the test alone: a caller that takes a value that is
    no placeholder keeps it as it was (a signed event's key with spaces around it stays its key)."""
    text = text.strip()
    return len(text) <= LONGEST and text.casefold() in PLACEHOLDERS
