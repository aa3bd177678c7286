"""Our cached Set-Cookie rendering says exactly what http.cookies says, attribute for attribute."""

from __future__ import annotations

import http.cookies

import pytest

from gateway.pipeline import Cookie
from gateway.proxy import set_cookie_header


@pytest.mark.parametrize(
    "cookie",
    [
        Cookie("gw_vid", "v1.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB", 34128000),
        Cookie("gw_vid", "v1.x.y", 60, domain="example.com", secure=True, samesite="None"),
        Cookie("gw_vid", "v", 1, path="/shop", httponly=False, samesite="Strict"),
    ],
)
def test_matches_the_standard_library(cookie: Cookie) -> None:
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    jar[cookie.name] = cookie.value
    morsel = jar[cookie.name]
    morsel.update({"max-age": str(cookie.max_age), "path": cookie.path, "samesite": cookie.samesite})
    if cookie.domain:
        morsel["domain"] = cookie.domain
    morsel["secure"] = cookie.secure
    morsel["httponly"] = cookie.httponly
    assert set_cookie_header(cookie) == morsel.OutputString()


@pytest.mark.parametrize("value", ["a b", "a;b", '"q"', "é"])
def test_values_that_need_quoting_are_left_to_the_library(value: str) -> None:
    assert set_cookie_header(Cookie("c", value, 1)) is None
