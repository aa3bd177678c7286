"""``readable_accept_encoding``: what the site is offered on a path a rule reads the answer of."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gateway.codings import (
    accepts_gzip,
    content_codings,
    decoded_body,
    decoded_layers,
    readable_accept_encoding,
)


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


@pytest.mark.parametrize(
    ("lines", "codings"),
    [
        (["gzip"], ["gzip"]),
        (["gzip", "gzip"], ["gzip", "gzip"]),
        (["deflate, GZIP", " identity "], ["deflate", "gzip"]),
        (["identity", ""], []),
        ([" , gzip ,"], ["gzip"]),
        ([], []),
    ],
)
def test_content_encoding_lines_are_one_list(lines: list[str], codings: list[str]) -> None:
    assert content_codings(lines) == codings


def test_layers_are_undone_last_first_within_the_cap() -> None:
    body = b'{"a": 1}'
    twice = gzip.compress(zlib.compress(body))  # deflate applied, then gzip
    assert decoded_layers(twice, ["deflate", "gzip"], 100) == body
    assert decoded_body(twice, "deflate, gzip", 100) == body  # one line, as a list
    assert decoded_layers(twice, ["gzip", "deflate"], 100) is None  # not in that order
    assert decoded_layers(twice, ["deflate", "br", "gzip"], 100) is None
    assert decoded_layers(body, ["gzip"] * 5, 100) is None  # more than MAX_CODINGS
    assert decoded_layers(twice, ["deflate", "gzip"], 4) is None
    assert decoded_layers(body, [], 4) == body


@pytest.mark.parametrize(
    ("offered", "accepted"),
    [
        ("gzip, deflate, br", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("br, *;q=0.1", True),
        ("gzip;q=0, *", False),  # named and refused: the wildcard does not bring it back
        ("gzip;q=0", False),
        ("*;q=0", False),
        ("br, zstd", False),
        ("identity", False),
        ("", False),
    ],
)
def test_accepts_gzip_reads_the_weights(offered: str, accepted: bool) -> None:
    assert accepts_gzip(offered) is accepted
