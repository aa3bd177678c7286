"""Our cached Set-Cookie rendering (both hosts write it) says exactly what http.cookies says,
attribute for attribute; an empty value stays empty."""

from __future__ import annotations

import http.cookies

import pytest

from gateway.forwarding import set_cookie_line
from gateway.pipeline import Cookie


def library(cookie: Cookie) -> str:
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    jar[cookie.name] = cookie.value
    morsel = jar[cookie.name]
    morsel.update({"max-age": str(cookie.max_age), "path": cookie.path, "samesite": cookie.samesite})
    if cookie.domain:
        morsel["domain"] = cookie.domain
    morsel["secure"] = cookie.secure
    morsel["httponly"] = cookie.httponly
    return morsel.OutputString()


@pytest.mark.parametrize(
    "cookie",
    [
        Cookie("gw_vid", "v1.AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB", 34128000),
        Cookie("gw_vid", "v1.x.y", 60, domain="example.com", secure=True, samesite="None"),
        Cookie("gw_vid", "v", 1, path="/shop", httponly=False, samesite="Strict"),
    ],
)
def test_matches_the_standard_library(cookie: Cookie) -> None:
    assert set_cookie_line(cookie) == library(cookie)


@pytest.mark.parametrize("value", ["a b", "a;b", '"q"', "é"])
def test_values_that_need_quoting_are_quoted_by_the_library(value: str) -> None:
    assert set_cookie_line(Cookie("c", value, 1)) == library(Cookie("c", value, 1))


def test_an_empty_value_is_not_quoted() -> None:
    """The expiry on an opt-out or a withdrawal: ``gw_vid=;`` in both hosts, not the library's
    ``gw_vid="";`` (which the mitmproxy host wrote until 2026-12-07)."""
    assert set_cookie_line(Cookie("gw_vid", "", 0)) == "gw_vid=; HttpOnly; Max-Age=0; Path=/; SameSite=Lax"
