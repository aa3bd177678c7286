"""Helpers for addon unit tests: a configured addon and a plain Exchange, no server."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from typing import Any

from gateway.config import load_settings
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.pipeline import Context, Exchange, RequestView
from tests.conftest import ENV

FIXED_TS = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def context(toml: str = "") -> Context:
    settings = load_settings(None, text=textwrap.dedent(toml), environ=ENV)
    return Context(
        settings=settings,
        keys=Keys.from_master(settings.secret, settings.options.identity.user_id_storage),
        metrics=Metrics(),
    )


def configured(addon_cls: type, toml: str = "", ctx: Context | None = None) -> Any:
    addon = addon_cls()
    addon.configure(ctx or context(toml))
    return addon


def exchange(
    target: str = "/",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    host: str = "shop.example",
    scheme: str = "https",
) -> Exchange:
    path, _, query = target.partition("?")
    return Exchange(
        RequestView(
            method=method,
            scheme=scheme,
            host=host,
            path=path,
            query=query,
            headers={
                **{k.lower(): v for k, v in (headers or {}).items()},
                **({"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}),
            },
            client_ip="203.0.113.7",
            ts=FIXED_TS,
        )
    )


def metric(ctx: Context, name: str, labels: dict[str, str] | None = None) -> float:
    value = ctx.metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0
