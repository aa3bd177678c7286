"""``readable_accept_encoding``: what the site is offered on a path a rule reads the answer of."""

from __future__ import annotations

import pytest

from gateway.codings import readable_accept_encoding


@pytest.mark.parametrize(
    ("offered", "sent"),
    [
        # Browsers: brotli and zstd left out, the rest as written.
        ("gzip, deflate, br, zstd", "gzip, deflate"),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", "gzip;q=0.8"),
        ("BR, GZip", "GZip"),
        # Nothing to change.
        ("gzip, deflate", None),
        ("identity", None),
        ("gzip;q=0.5,  identity;q=0.1", None),
        # Only codings no rule reads: identity, named, or implied (no header would accept any).
        ("br", "identity"),
        ("br, zstd, *", "identity"),
        ("identity;q=0.5, br", "identity;q=0.5"),
        ("gzip;q=0, br", "identity"),
        # A refusal stays a refusal; a refused identity with nothing readable: left as it came.
        ("br, gzip, *;q=0", "gzip, *;q=0"),
        ("br, identity;q=0", None),
        ("br, *;q=0", None),
        ("br, gzip;q=0, identity;q=0", None),
        # Weights written wrong count as accepted; empty items are skipped.
        ("br;q=2, gzip;q=x", "gzip;q=x"),
        (" , br ,", "identity"),
    ],
)
def test_only_codings_a_rule_can_read_are_offered(offered: str, sent: str | None) -> None:
    assert readable_accept_encoding(offered) == sent
