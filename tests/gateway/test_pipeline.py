"""The pipeline: hooks run in order, a failing hook is logged, counted and skipped."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.events import iso
from gateway.metrics import Metrics
from gateway.pipeline import Exchange, Pipeline, Reply, RequestView, split_query, split_target, with_query
from tests.addons.conftest import exchange


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def request(self, ex: Exchange) -> None:
        self.log.append(f"{self.name}.request")

    async def response(self, ex: Exchange) -> None:
        self.log.append(f"{self.name}.response")


class Broken:
    def request(self, ex: Exchange) -> None:
        raise ValueError("boom")

    def erased(self, user_keys: object) -> None:
        raise ValueError("boom")


class Replier:
    def request(self, ex: Exchange) -> None:
        ex.reply = Reply(403)


async def test_hooks_run_in_order_sync_and_async() -> None:
    log: list[str] = []
    pipeline = Pipeline([("a", Recorder("a", log)), ("b", Recorder("b", log))], Metrics())
    ex = exchange()
    await pipeline.request(ex)
    await pipeline.response(ex)
    assert log == ["a.request", "b.request", "a.response", "b.response"]


async def test_failing_hook_is_logged_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    metrics = Metrics()
    pipeline = Pipeline([("broken", Broken()), ("after", Recorder("after", log))], metrics)
    with caplog.at_level(logging.ERROR):
        await pipeline.request(exchange())
    assert log == ["after.request"]
    assert "addon broken failed in request" in caplog.text
    labels = {"addon": "broken", "hook": "request"}
    assert metrics.registry.get_sample_value("gateway_addon_errors_total", labels) == 1


class BrokenResponse:
    def response(self, ex: Exchange) -> None:
        raise ValueError("boom")


class SyncRecorder:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def request(self, ex: Exchange) -> None:
        self.log.append("request")

    def response(self, ex: Exchange) -> None:
        self.log.append("response")


async def test_a_failing_hook_of_a_synchronous_response_chain_is_counted_under_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A chain of synchronous hooks runs in place (no coroutine): a failure in it is still
    logged and counted under its own hook's name, and the next addon's hook still runs."""
    log: list[str] = []
    metrics = Metrics()
    pipeline = Pipeline([("broken", BrokenResponse()), ("after", SyncRecorder(log))], metrics)
    ex = exchange()
    with caplog.at_level(logging.ERROR):
        await pipeline.request(ex)
        await pipeline.response(ex)
    assert log == ["request", "response"]
    assert "addon broken failed in response" in caplog.text
    sample = metrics.registry.get_sample_value
    assert sample("gateway_addon_errors_total", {"addon": "broken", "hook": "response"}) == 1
    assert sample("gateway_addon_errors_total", {"addon": "broken", "hook": "request"}) is None


def test_a_failing_erased_hook_is_logged_counted_and_the_others_still_forget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An addon that fails to forget an erased user may keep them in memory: logged, and counted
    as any failing hook is (it was logged only), the next addon told all the same."""
    told: list[object] = []

    class Forgets:
        def erased(self, user_keys: object) -> None:
            told.append(user_keys)

    metrics = Metrics()
    pipeline = Pipeline([("broken", Broken()), ("after", Forgets())], metrics)
    with caplog.at_level(logging.ERROR):
        pipeline.erased({"u1"})
    assert told == [{"u1"}]
    assert "addon broken failed in erased: it may still remember the erased users" in caplog.text
    labels = {"addon": "broken", "hook": "erased"}
    assert metrics.registry.get_sample_value("gateway_addon_errors_total", labels) == 1


async def test_every_request_hook_runs_after_a_reply() -> None:
    log: list[str] = []
    pipeline = Pipeline([("block", Replier()), ("after", Recorder("after", log))], Metrics())
    ex = exchange()
    await pipeline.request(ex)
    assert ex.reply is not None and log == ["after.request"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("a=1&&b", [("a=1", "a", "1"), ("", "", ""), ("b", "b", "")]),
        ("q=a+b%2B", [("q=a+b%2B", "q", "a b+")]),
        ("k=%FF", [("k=%FF", "k", "\udcff")]),  # undecodable bytes stay visible to validation
        ("=v", [("=v", "", "v")]),
    ],
)
def test_split_query(raw: str, expected: list[tuple[str, str, str]]) -> None:
    assert split_query(raw) == expected


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("/p", ("/p", "", "")),
        ("/p?", ("/p", "", "")),
        ("/p?a=1&b", ("/p", "a=1&b", "")),
        ("/p??a", ("/p", "?a", "")),
        # a "#" ends the query: what follows it is no query's, kept as sent
        ("/p?a=1&utm_source=x#f&b=2", ("/p", "a=1&utm_source=x", "#f&b=2")),
        ("/p?#utm_source=x", ("/p", "", "#utm_source=x")),
        ("/p#x", ("/p#x", "", "")),
        ("/p#x?utm_source=y", ("/p#x", "", "?utm_source=y")),  # a "?" in the fragment: no query
        ("http://t/p?a#b?c", ("http://t/p", "a", "#b?c")),  # a Referer is split alike
    ],
)
def test_split_target(target: str, parts: tuple[str, str, str]) -> None:
    assert split_target(target) == parts
    path, query, rest = parts
    assert with_query(path, query, rest) in (target, target.replace("?", "", 1))  # a bare "?" aside
    assert with_query("/p", "", "#f") == "/p#f"


@pytest.mark.parametrize(
    ("headers", "method", "document"),
    [
        ({"sec-fetch-dest": "document"}, "GET", True),
        ({"sec-fetch-dest": "image", "accept": "text/html"}, "GET", False),
        ({"accept": "text/html,*/*"}, "GET", True),
        ({"accept": "*/*"}, "GET", False),
        ({"sec-fetch-dest": "document"}, "POST", False),
    ],
)
def test_is_document(headers: dict[str, str], method: str, document: bool) -> None:
    assert exchange(headers=headers, method=method).request.is_document is document


def test_default_rule_addons_leave_the_chain_without_rules() -> None:
    """An addon configured with nothing to do (no rules, no database) costs requests nothing:
    ``build_pipeline`` leaves it out."""
    from gateway.pipeline import build_pipeline
    from tests.addons.conftest import context

    ctx = context()
    assert {"stitching", "conversions", "geo"} <= set(ctx.settings.options.proxy.addons)
    pipeline = build_pipeline(ctx.settings, Metrics(), ctx.keys)
    assert [name for name, _ in pipeline.addons] == ["identity", "campaign", "bots"]
    hooked = {name for hook in ("request", "response") for name, _, _ in pipeline._hooks[hook]}
    assert hooked == {"identity", "campaign", "bots"}


@pytest.mark.parametrize(
    "ts",
    [
        datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(2026, 12, 6, 7, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_views_unix_time_is_its_timestamp_and_iso_reads_it_alike(ts: datetime) -> None:
    """The hooks read ``RequestView.unix`` (worked out once) where they called
    ``ts.timestamp()``; the event IDs' milliseconds and the text of ``ts`` stay the same."""
    view = RequestView("GET", "https", "example.com", "/", "", {}, "203.0.113.1", ts=ts)
    assert view.unix == ts.timestamp()
    assert view.unix == view.unix  # the second read is the kept value
    assert iso(ts, view.unix) == iso(ts)


def test_a_view_made_without_a_time_is_stamped_now_in_utc() -> None:
    """A host that passes no ``ts`` (the proxy) gets the time the view was made, aware, in UTC:
    the hooks' event IDs and stored timestamps are read from it."""
    before = datetime.now(UTC)
    first = RequestView("GET", "https", "example.com", "/", "", {}, "203.0.113.1")
    second = RequestView("GET", "https", "example.com", "/", "", {}, "203.0.113.1")
    after = datetime.now(UTC)
    assert before <= first.ts <= second.ts <= after
    assert first.ts.tzinfo is UTC and first.ts is not second.ts
