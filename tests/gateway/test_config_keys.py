"""Every key of the option structs (the schema in code, ``gateway.options``), one at a time,
given each kind of wrong value an operator writes: the config error names that key in full
(``identity.rules[0].user_id.claim``, ``attribution.lookback_days.awareness``), never only
its table, and nothing but a ``ConfigError`` comes out of the loader.

Deterministic and bounded: the keys are walked from the structs (some 400), each with the
same ten values, through the loader in-process (a few seconds); a sample goes through the
real ``gateway check`` process.
"""

from __future__ import annotations

import asyncio
import copy
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from gateway.config import RELOAD_HINT, ConfigError, Settings, load_settings
from gateway.options import ARRAY_SECTIONS, SECTIONS
from gateway.server import _reload
from tests.conftest import ENV, GatewayFactory

ROOT = Path(__file__).resolve().parents[2]
ENVIRON = {**ENV, "S": "s" * 40}

MINIMAL: dict[str, dict[str, Any]] = {
    "SourceOptions": {"name": "shop", "secrets": ["env:S"]},
    "ConversionRule": {"name": "buy", "path": "/thanks", "status": [200]},
    "IdentityRule": {"name": "login", "path": "/login", "status": [200], "user_id": {"form": "email"}},
    "CreatorOptions": {"id": "c1"},
    "SinkOptions": {"name": "a", "kind": "webhook", "url": "https://h.example", "secret": "env:S"},
    "ChannelRule": {"channel": "partners", "source": "partner"},
    "ConsentCookie": {"name": "consent", "yes": ["1"]},
    "HmacOptions": {"header": "X-Signature"},
    "EventCondition": {"type": "conversion", "pointer": "/id"},
    "Condition": {"form": "plan"},
    "Source": {"form": "total"},
}
"""The least an entry of each struct with required fields needs to decode (the walk below
then sets one key of it at a time)."""

BAD: list[tuple[str, Any]] = [
    ("a string", "ten"),
    ("a number", 7),
    ("an array", ["x"]),
    ("a table", {"x": 1}),
    ("a boolean", True),
    ("a float", 0.5),
    ("a negative number", -1),
    ("an empty string", ""),
    ("a very long string", "z" * 5000),
    ("a string with a NUL", "a\x00b"),
]


def _structs(hint: Any) -> list[type[msgspec.Struct]]:
    return [
        a for a in (hint, *typing.get_args(hint)) if isinstance(a, type) and issubclass(a, msgspec.Struct)
    ]


def _minimal(struct: type[msgspec.Struct]) -> dict[str, Any]:
    return copy.deepcopy(MINIMAL.get(struct.__name__, {}))


Place = tuple[str | int, ...]


def _walk(struct: type[msgspec.Struct], at: Place) -> Iterator[tuple[Place, Any, dict[Place, Any]]]:
    """Every key below ``struct``: where it is, its type, and the entries (arrays of tables,
    map entries) that must exist on the way for it to be read."""
    hints = typing.get_type_hints(struct)
    for field in msgspec.structs.fields(struct):
        hint = hints[field.name]
        place = (*at, field.encode_name)
        yield place, hint, {}
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is tuple and args and _structs(args[0]):  # an array of tables: its first entry
            inner = _structs(args[0])[0]
            for key, kind, needs in _walk(inner, (*place, 0)):
                yield key, kind, {(*place, 0): _minimal(inner), **needs}
        elif origin is dict:  # a map: one entry of the operator's naming
            value = args[1]
            yield (*place, "mine"), value, {}
            for inner in _structs(value)[:1]:
                for key, kind, needs in _walk(inner, (*place, "mine")):
                    yield key, kind, {(*place, "mine"): _minimal(inner), **needs}
        elif _structs(hint):  # a table in a table (or one of a value's forms, ``value = {…}``)
            inner = _structs(hint)[0]
            for key, kind, needs in _walk(inner, place):
                yield key, kind, {place: _minimal(inner), **needs}


def _schema() -> list[tuple[Place, Any, dict[Place, Any]]]:
    keys: list[tuple[Place, Any, dict[Place, Any]]] = []
    for name, struct in SECTIONS.items():
        keys.append(((name,), struct, {}))  # ``proxy = 7``
        keys += [(p, k, {(name,): {}, **n}) for p, k, n in _walk(struct, (name,))]
    for name, struct in ARRAY_SECTIONS.items():
        keys.append(((name,), tuple[struct, ...], {}))  # type: ignore[valid-type]
        keys.append(((name, 0), struct, {}))  # ``sources = [7]``
        keys += [(p, k, {(name, 0): _minimal(struct), **n}) for p, k, n in _walk(struct, (name, 0))]
    for place, _, needs in keys:
        if place[:3] == ("sources", 0, "hmac") and len(place) > 3:  # read under this signature only
            needs[("sources", 0)] = {**needs[("sources", 0)], "signature": "hmac"}
        if place[:3] == ("attribution", "lookback_days", "mine"):  # the only tier, so the default
            needs[("attribution",)] = {
                "default_tier": "mine",
                "tier_patterns": {},
                "lookback_days": {"mine": 30},
            }
    return keys


SCHEMA = _schema()


def dotted(place: Place) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else ("." if i else "") + p for i, p in enumerate(place))


def _config(place: Place, needs: dict[Place, Any], value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for where, entry in sorted(needs.items(), key=lambda item: len(item[0])):
        _put(data, where, copy.deepcopy(entry))
    _put(data, place, value)
    return data


def _put(data: Any, place: Place, value: Any) -> None:
    for i, part in enumerate(place[:-1]):
        following = place[i + 1]
        if isinstance(part, int):
            while len(data) <= part:
                data.append({})
            data = data[part]
        else:
            data = data.setdefault(part, [] if isinstance(following, int) else {})
    last = place[-1]
    if isinstance(last, int):
        while len(data) <= last:
            data.append({})
        data[last] = value
    else:
        data[last] = value


def _wrong_type(hint: Any, value: Any) -> bool:
    """Whether ``value`` is not of the key's type at all (a table or array where a number goes)."""
    try:
        msgspec.convert(value, hint, strict=True)
    except msgspec.ValidationError:
        return True
    return False


def _names(problem: str, key: str) -> bool:
    """Whether a problem line is about ``key`` (or a key inside it), or about the table holding
    it and names it there (``…user_id: set exactly one of form, query… (got form, query)``:
    two keys that exclude each other)."""
    said, _, message = problem.partition(": ")
    if re.search(rf"(?<![\w.\[]){re.escape(key)}(?![\w\[])", message):
        return True  # a problem of another key, about this one (``default_tier: … lookback_days``)
    if said == key or said.startswith((key + ".", key + "[")):
        return True
    parent, _, name = key.rpartition(".")
    return said == parent and re.search(rf"\b{re.escape(name)}\b", message) is not None


def _load(data: dict[str, Any], folder: Path) -> list[str]:
    text = _toml(data)
    try:
        load_settings(folder / "gateway.toml", text=text, environ=ENVIRON)
    except ConfigError as err:
        return err.problems
    return []


def _toml(data: dict[str, Any]) -> str:
    """``data`` as TOML: each top-level value inline (``proxy = {…}``, ``sources = [{…}]``)."""
    return "".join(f"{k} = {_value(v)}\n" for k, v in data.items())


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    return repr(value)


def test_the_walk_reaches_every_kind_of_key() -> None:
    """The walk itself: a key of each depth the schema has (else the test below tests little)."""
    keys = {dotted(place) for place, _, _ in SCHEMA}
    for expected in (
        "proxy",
        "sources",
        "sources[0]",
        "proxy.workers",
        "privacy.consent_cookie.yes",
        "identity.rules[0].user_id.claim",
        "identity.rules[0].when[0].equals",
        "conversions[0].value",
        "sources[0].secrets",
        "attribution.lookback_days.mine",
        "payouts.tiers.mine.cpa",
        "sinks[0].batch_size",
    ):
        assert expected in keys
    assert len(keys) > 300


@pytest.mark.parametrize(("what", "bad"), BAD, ids=[what for what, _ in BAD])
def test_every_key_given_a_wrong_value_names_itself(tmp_path: Path, what: str, bad: Any) -> None:
    """For each key: a value of the wrong type is a problem naming that key in full; a value of
    the right type but no use (empty, negative, huge, with a NUL) is accepted or named alike.
    Nothing else may come out of the loader (a traceback)."""
    unnamed, silent = [], []
    for place, hint, needs in SCHEMA:
        key = dotted(place)
        problems = _load(_config(place, needs, bad), tmp_path)
        if _wrong_type(hint, bad) and not problems:
            silent.append(key)
        elif problems and not any(_names(p, key) for p in problems):
            unnamed.append(f"{key} = {_value(bad)[:40]}: {problems}")
    assert not silent, f"{what} taken without a word by: {silent}"
    assert not unnamed, "\n".join(unnamed)


def test_the_entries_the_walk_adds_are_valid(tmp_path: Path) -> None:
    """Each key's surroundings alone load: every problem below is the wrong value's."""
    for needs in {repr(n): n for _, _, n in SCHEMA}.values():
        data: dict[str, Any] = {}
        for where, entry in sorted(needs.items(), key=lambda item: len(item[0])):
            _put(data, where, copy.deepcopy(entry))
        assert _load(data, tmp_path) == [], data


def _first_of_each_table() -> list[tuple[str, dict[str, Any]]]:
    """One key of each table and array of tables, with a wrong type (a table where a value
    goes, an array where a table goes): the sample the processes below are given."""
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for place, hint, needs in SCHEMA:
        table = str(place[0])
        if table not in seen and len(place) == (2 if table in SECTIONS else 3):
            bad = {"x": 1} if _wrong_type(hint, {"x": 1}) else ["x"]
            seen[table] = (dotted(place), _config(place, needs, bad))
    return list(seen.values())


SAMPLE = _first_of_each_table()


def test_the_sample_has_a_key_of_every_table() -> None:
    assert {key.partition(".")[0].partition("[")[0] for key, _ in SAMPLE} == {*SECTIONS, *ARRAY_SECTIONS}


@pytest.mark.parametrize(("key", "data"), SAMPLE, ids=[key for key, _ in SAMPLE])
def test_gateway_check_names_the_key_and_shows_no_traceback(
    tmp_path: Path, key: str, data: dict[str, Any]
) -> None:
    (tmp_path / "gateway.toml").write_text(_toml(data))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", "gateway.toml"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **ENVIRON},
        cwd=tmp_path,
        timeout=60,
    )
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 2, done.stderr
    assert any(_names(line.strip(), key) for line in done.stderr.splitlines()), done.stderr


RELOADS = [
    *((key, _toml(data)) for key, data in SAMPLE),
    ("proxy.listn", "[proxy]\nlistn = '127.0.0.1:1'\n"),
    ("config", "[proxy]\nstrip = 'redirect'\n[bots\n"),
    ("config", "[proxy]\nstrip = 'redirect'\n[bots]\n[proxy]\n"),
]


async def test_a_reload_with_a_bad_config_keeps_the_running_one_and_names_the_key(
    tmp_path: Path, start_gateway: GatewayFactory, upstream_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The SIGHUP path (``gateway.server._reload`` with the ``reread`` of ``gateway run``): each
    bad config is refused with a log line per problem, its ``key`` field the full key (or, for
    text that is not TOML, the file and its line), and the running settings stay as they were."""
    gw = await start_gateway(await upstream_server(web.Application()), "[bots]\nreview_threshold = 40\n")
    running = gw.gateway.settings
    cfg = tmp_path / "gateway.toml"

    async def reread() -> Settings:
        return await asyncio.to_thread(load_settings, cfg, environ=ENVIRON, missing_hint=RELOAD_HINT)

    caplog.set_level("INFO", logger="gateway")
    for key, text in RELOADS:
        caplog.clear()
        await asyncio.to_thread(cfg.write_text, text)
        await _reload(gw.gateway, reread)
        said = [r for r in caplog.records if r.name.startswith("gateway")]
        assert said, text
        assert all(r.getMessage().startswith("reload refused, the running config is kept: ") for r in said), [
            r.getMessage() for r in said
        ]
        keys = [getattr(r, "key", None) for r in said]
        if key == "config":  # not TOML: no key to name, the file and its line instead
            assert keys == [str(cfg)] and f"{cfg}: " in said[0].getMessage(), said[0].getMessage()
            assert " line " in said[0].getMessage()
        else:
            assert any(k and _names(f"{k}: ", key) for k in keys), [r.getMessage() for r in said]
        assert gw.gateway.settings is running
    assert gw.gateway.settings.options.bots.review_threshold == 40
