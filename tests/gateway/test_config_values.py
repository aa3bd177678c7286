"""The shared value checks: host names, cookie names, regular expressions, TOML keys."""

from __future__ import annotations

import pytest

from gateway.config_values import cookie_name_problem, host_problem, regex_problem, toml_key


@pytest.mark.parametrize(
    ("value", "ip", "expected"),
    [
        ("example.com", False, None),
        ("Shop.Example.com", False, None),
        ("kagi", False, None),
        ("_dmarc.example.com", False, None),
        ("127.0.0.1", True, None),
        ("::1", True, None),
        ("::1", False, "got '::1'"),
        ("", False, "got ''"),
        ("http://example.com/", False, "got 'http://example.com/' (write \"example.com\")"),
        ("example.com:8443", False, "(write \"example.com\")"),
        ("https://Shop.example.com:443/", True, "(write \"shop.example.com\")"),
        ("[::1]", True, "(write \"::1\")"),
        ("bad host/x", False, "got 'bad host/x'"),
        ("bücher.de", False, "(write it as \"xn--bcher-kva.de\")"),
        ("-example.com", False, "got '-example.com'"),
        ("a..b", False, "got 'a..b'"),
        ("a" * 64 + ".com", False, "got 'aaaa"),
    ],
)  # fmt: skip
def test_host_problem(value: str, ip: bool, expected: str | None) -> None:
    found = host_problem(value, ip=ip)
    assert found is None if expected is None else (found is not None and expected in found), found


@pytest.mark.parametrize(
    ("name", "ok"),
    [("gw_vid", True), ("__Host-vid", True), ("a.b~c", True), ("c c", False), ("a;b", False),
     ("a=b", False), ('"q"', False), ("", False), ("café", False)],
)  # fmt: skip
def test_cookie_name_problem(name: str, ok: bool) -> None:
    assert (cookie_name_problem(name) is None) == ok


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/login/?", None),
        ("(x", "not a valid regular expression (missing ), unterminated subpattern at position 0): '(x'"),
        ("a{4294967296}", "not a valid regular expression (a repeat count is too large): 'a{4294967296}'"),
        ("(" * 1000 + ")" * 1000, "not a valid regular expression (nested too deeply): '" + "(" * 60 + "'…"),
    ],
)
def test_regex_problem(pattern: str, expected: str | None) -> None:
    assert regex_problem(pattern) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [("awareness", "awareness"), ("cr_ana-1", "cr_ana-1"), ("kagi.com", '"kagi.com"'), ("", '""'),
     ("a b", '"a b"'), ('say "hi"', '"say \\"hi\\""')],
)  # fmt: skip
def test_toml_key(key: str, expected: str) -> None:
    assert toml_key(key) == expected
