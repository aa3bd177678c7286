"""Configuration: the TOML file read, decoded into the option structs, checked and resolved.

Reads one TOML file and decodes each table into its struct (``gateway.options``), turning
msgspec's errors into problems that name the TOML key; runs the start-up checks
(``gateway.config_checks``) and checks the files the config names; resolves secrets
(``"env:NAME"``) and returns ``Settings``, or raises ``ConfigError`` listing every
problem, each naming its key, e.g. ``proxy.connect_timeout: must be more than 0 and at most
3600 seconds, got -1.0``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import ipaddress
import os
import re
import secrets
import socket
import stat
import tomllib
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

import msgspec
from yarl import URL

from gateway.attribution import report_zone
from gateway.channels import Channels
from gateway.config_checks import (
    admin_exposure,
    has_credentials,
    http_url,
    segment_base,
    segment_credentials,
    validate,
    with_scheme,
)
from gateway.config_values import (
    PADDED,
    TYPE_WORDS,
    dsn_problem,
    in_the_file,
    not_utf8,
    padded,
    readable,
    special_file,
    toml_key,
    unknown_name,
    unset,
)
from gateway.options import ARRAY_SECTIONS, SECTIONS, ChannelsOptions, Options, SourceOptions
from gateway.rulekeys import resolve_rule_keys, rule_sources


class ConfigError(Exception):
    """One or more configuration problems, each naming its TOML key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [readable(p) for p in problems]
        super().__init__("\n".join(self.problems))


SECRET_KEYS = ("identity.secret", "admin.token")
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Settings:
    """Options plus what was derived from them once: secrets, paths, parsed addresses, channel rules."""

    options: Options
    base_dir: Path
    secret: bytes
    admin_token: str
    generated: tuple[str, ...] = ()
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    node: str = ""
    source_secrets: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    """``[[sources]]`` name → its resolved secrets (HMAC keys), in the order configured."""
    rule_keys: Mapping[str, bytes] = field(default_factory=dict)
    """JWT verification keys of rules, by the TOML key of their source (``identity.rules[0].user_id``):
    the HMAC secret, or a public key's PEM."""
    channels: Channels = field(default_factory=lambda: Channels(ChannelsOptions()))
    """The channel classifier, built from ``[channels]`` and the shipped referrer table."""
    central_url: str = ""
    """The resolved ``central.url`` DSN; empty: no central store."""
    sink_secrets: Mapping[str, bytes] = field(default_factory=dict)
    """``[[sinks]]`` name → its resolved write key or signing secret."""
    sink_urls: Mapping[str, str] = field(default_factory=dict)
    """``[[sinks]]`` name → its URL: as written, or read from the environment (``env:NAME``).
    A command that serves nothing lacks a sink whose variable is not set (as ``sink_secrets``)."""
    report_zone: tzinfo = UTC
    """``attribution.timezone``, loaded once (its file read here, not in a request handler)."""

    @property
    def store_path(self) -> Path:
        path = Path(self.options.storage.path)
        return path if path.is_absolute() else self.base_dir / path

    @property
    def mirror_path(self) -> Path | None:
        """``central.mirror_path`` (``storage.mirror``); None: no mirror."""
        name = self.options.central.mirror_path
        # The URL as configured, not as resolved: a command that reads files only may leave its
        # variable unset (``load_settings(files_only=True)``) and still reads the mirror.
        return resolve_path(self.base_dir, name) if name and self.options.central.url else None

    @property
    def report_path(self) -> Path:
        """The store the reports read: the reporting mirror when there is one, else this node's."""
        return self.mirror_path or self.store_path

    def no_store(self) -> str:
        """What a command that reads the store says when there is none: where it looked, by
        which key, and what to do."""
        return (
            f"gateway: no store at {self.store_path} (storage.path): the gateway creates it when it"
            " first runs; point storage.path at the store the gateway writes"
        )

    def store_problem(self) -> str | None:
        """What a command that reads this node's store says when the file cannot be one: none
        there (``no_store``), or a folder in its place (SQLite said ``unable to open database
        file``); None when there is a file to open."""
        path = self.store_path
        if folder := self.store_folder():
            return f"gateway: the store {path} (storage.path) is {folder}"
        return None if path.exists() else self.no_store()

    def store_folder(self) -> str | None:
        """What to say when ``storage.path`` names a folder (the store cannot be created there),
        from "a folder, not a file; …"; None otherwise."""
        path = self.store_path
        if not path.is_dir():
            return None
        return (
            "a folder, not a file; point storage.path at the store the gateway writes,"
            f" like {path / 'gateway.db'}"
        )

    @property
    def lowercases_user_ids(self) -> bool:
        """Whether an identity rule lower-cases the user IDs it reads (``lowercase``): an
        erasure then looks for the lower-cased ID's rows too."""
        return any(rule.lowercase for rule in self.options.identity.rules)


def _msgspec_problem(
    section: str, err: msgspec.ValidationError, struct: type | None = None, data: Any = None
) -> str:
    """msgspec's "Expected `float`, got `str` - at `$.lookback_days[...]`" →
    "section.lookback_days.awareness: expected a number, got "x"": the map key msgspec hides
    is found again in ``data`` (the table as read), and so is the value shown."""
    struct = struct or SECTIONS[section]
    message, where = _message_at(err)
    parts = _map_keys(where, str(err), struct, data) if "[...]" in where and data is not None else None
    key = section + (_shown_path(parts) if parts is not None else where)
    unknown = re.match(r"Object contains unknown field `(.*)`", message)
    if unknown:
        owner = _struct_at(struct, where)
        names = owner.__struct_fields__ if owner is not None else ()
        name = toml_key(unknown.group(1))  # quoted as written: "" or "a b"
        elsewhere = _key_elsewhere(section, struct, where, unknown.group(1))
        return f"{key}.{name}: {unknown_name('key', unknown.group(1), names, elsewhere)}"
    enum = re.match(r"Invalid enum value (.+)", message)
    if enum:
        path, _, name = where.rpartition(".")
        owner = _struct_at(struct, path)
        allowed = _literal_values(owner, name) if owner is not None else "?"
        return f"{key}: expected one of {allowed}, got {enum.group(1)}"
    expected = re.fullmatch(r"Expected `(.+)`, got `(.+)`", message)
    if expected:
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in expected.group(1).split(" | ") if t != "null")
        found = _value_at(data, parts if parts is not None else _path_parts(where))
        got = _TYPE_WORDS.get(expected.group(2), expected.group(2)) if found is _MISSING else _shown(found)
        if isinstance(found, dict) and _tables_array(struct, where):  # [identity.rules]
            header = "[[" + re.sub(r"\[\d+\]", "", key) + "]]"
            return f"{key}: must be an array of tables ({header}), got a table; write {header} for each entry"
        hint = _number_hint(key, wanted, found) if isinstance(found, str) else ""
        if wanted == "an array" and isinstance(found, str | int | float):  # status = 201
            hint = f"; write it in brackets: [{_item_shown(struct, where, found)}]"
        if key.endswith(".equals") and wanted == "a string" and isinstance(found, bool | int):
            # A when's equals = true, or 42: the README says a JSON true or 42 is compared as written.
            hint = (
                f'; write it in quotes: equals = "{_shown(found)}" (the value read is compared'
                " as text, a JSON true or 42 as written)"
            )
        return f"{key}: expected {wanted}, got {got}{hint}"
    message = message.replace("`", "")
    return f"{key}: {message[:1].lower()}{message[1:]}"


def _message_at(err: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `float`, got `str` - at `$.lookback_days[...]`" → its message and
    where (``.lookback_days[...]``; "" for the table itself)."""
    message, sep, where = str(err).rpartition(" - at `")
    if not sep:
        return str(err), ""
    return message, where.rstrip("`").removeprefix("$")


def _missing_problems(
    section: str, err: msgspec.ValidationError, struct: type, data: Any
) -> list[str] | None:
    """A msgspec "Object missing required field" → one problem per required key the table lacks,
    each named as every other problem names its key (``sinks[0].name: required, not set in this
    [[sinks]] entry``; until 2026-12-08 ``sinks[0]: missing name (required)``, the key not in the
    place every other problem has it); None for another error."""
    message, where = _message_at(err)
    if not re.match(r"Object missing required field `(.+)`", message) or "[...]" in where:
        return None
    owner = _struct_at(struct, where)
    given = _value_at(data, _path_parts(where))
    fields = msgspec.structs.fields(owner) if owner is not None else ()
    absent = [f.name for f in fields if f.required and not (isinstance(given, dict) and f.name in given)]
    if not absent:
        return None
    key = section + where
    if key.endswith("]"):  # an entry of an array of tables: [[sinks]], [[identity.rules]]
        place = "this [[" + re.sub(r"\[\d+\]", "", key) + "]] entry"
    elif "[" not in key:
        place = f"[{key}]"
    else:  # a table inside an array's entry
        place = key
    # Every one at once: msgspec names only the first.
    return [f"{key}.{toml_key(name)}: required, not set in {place}" for name in absent]


def _tables_array(struct: type, where: str) -> bool:
    """Whether the key at ``where`` (``.rules``) below ``struct`` is an array of tables."""
    path, _, name = where.rpartition(".")
    owner = _struct_at(struct, path)
    hint = typing.get_type_hints(owner).get(name) if owner is not None else None
    args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
    return bool(args) and isinstance(args[0], type) and issubclass(args[0], msgspec.Struct)


def _tables_with(name: str, besides: str = "") -> list[str]:
    """The top-level tables that have a key ``name`` (``[proxy]``, ``[[sinks]]``), but
    ``besides``."""
    found = [f"[{t}]" for t, struct in SECTIONS.items() if name in struct.__struct_fields__]
    found += [f"[[{t}]]" for t, struct in ARRAY_SECTIONS.items() if name in struct.__struct_fields__]
    return [t for t in found if t.strip("[]") != besides]


def _listed(items: list[str]) -> str:
    return " and ".join([", ".join(items[:-1]), items[-1]] if len(items) > 1 else items)


def _key_elsewhere(section: str, struct: type, where: str, name: str) -> str:
    """What an unknown key ``name`` of the table at ``where`` (below ``section``) is instead:
    a key of a table it is written in (``[bots]``'s ``review_threshold`` below a
    ``[bots.weights]`` header, where TOML makes it that table's), or of another table
    (``upstream`` in ``[identity]``); "" when it is no key of any."""
    top = section.partition("[")[0]
    parts = _path_parts(where)
    names = [p for p in parts if isinstance(p, str)]
    for k in range(len(parts) - 1, -1, -1):  # the tables around it, the nearest first
        if not isinstance(parts[k], str):
            continue  # parts[:k] is an array, not a table
        outer = _struct_at(struct, "".join(f".{p}" for p in parts[:k] if isinstance(p, str)))
        if outer is None or name not in outer.__struct_fields__:
            continue
        around = ".".join([top, *(p for p in parts[:k] if isinstance(p, str))])
        in_array = section != top if k == 0 else isinstance(parts[k - 1], int)
        below = ".".join([top, *names])
        if isinstance(parts[-1], int):
            header, whose = f"[[{below}]]", "that entry's"
        else:
            header, whose = f"[{below}]", f"{below}'s"
        return (
            f"{name} is a key of {f'[[{around}]]' if in_array else f'[{around}]'}, not of {below}:"
            f" a key written below a {header} header is {whose}, up to the next header"
        )
    tables = _tables_with(name, besides=top)
    return f"{name} is a key of {_listed(tables)}" if tables else ""


_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60}
_SECONDS |= {"mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600}
_SECONDS |= {"hours": 3600, "d": 86400, "day": 86400, "days": 86400}
_SIZES = ("max_body", "max_request_body", "max_websocket_message", "max_header_size", "bad_body_limit")


def _key_unit(key: str) -> tuple[str, float | None]:
    """The unit a number of ``key`` is in, by its name (``connect_timeout``: seconds;
    ``lookback_days.awareness``: days), and that unit in seconds (None: not a time), or ("", None)."""
    for name in reversed(re.sub(r"\[\d+\]", "", key).split(".")[1:]):
        if name.endswith(("_seconds", "_timeout")) or name in ("shutdown_grace", "dedup_window"):
            return "seconds", 1
        for suffix, unit, seconds in (("_ms", "milliseconds", 0.001), ("_days", "days", 86400)):
            if name.endswith(suffix):
                return unit, seconds
        if name.endswith("_hours"):
            return "hours", 3600
        if name.endswith("_mb"):
            return "megabytes", None
        if name.endswith("_bytes") or name in _SIZES:
            return "bytes", None
    return "", None


def _number_hint(key: str, wanted: str, found: str) -> str:
    """How to write a number given as text: ``"30"`` without quotes, ``"30s"`` or ``"1h"`` as
    the number of the key's own unit, which is never written (``1800`` for ``"30m"`` where
    seconds go); "" for text that is no number."""
    number = _NUMBER.fullmatch(found)
    if "number" not in wanted or number is None:
        return ""
    if not number.group(2):
        return f"; write it without quotes: {number.group(1)}"
    unit, seconds = _key_unit(key)
    written = _SECONDS.get(number.group(2).lower())
    if not unit or (seconds is None) != (written is None):
        return ""  # no unit of the key's name, or a size where a time goes ("30s" in bytes)
    said = f"; write the number of {unit} alone, without quotes or a unit"
    if seconds is None or written is None:
        return said  # a size: "1MB" is 1000000 or 1048576 bytes, each in use
    value = float(number.group(1)) * written / seconds
    if "whole" in wanted and not value.is_integer():
        return said
    return f"{said}: {int(value) if value.is_integer() else round(value, 6)}"


_TYPE_WORDS = {**TYPE_WORDS, "object": "a table"}
"""msgspec's type names, as an operator writing TOML knows them."""
_MISSING = object()
_PATH_PART = re.compile(r"\.([A-Za-z0-9_]+)|\[([0-9]+|\.\.\.)\]")


def _path_parts(where: str) -> list[str | int]:
    """``.creators[...].tier`` → ["creators", "...", "tier"]; ``[2]`` → 2."""
    return [name or (int(index) if index.isdigit() else index) for name, index in _PATH_PART.findall(where)]


def _map_keys(where: str, error: str, struct: type, data: Any) -> list[str | int] | None:
    """The path with each ``[...]`` (a map key msgspec does not name) replaced by the key: the
    map is cut down to one entry at a time, and the first entry that alone gives the same error
    is the one (msgspec reports the first failure, in the order the file lists them)."""
    parts = _path_parts(where)
    trial = copy.deepcopy(data)
    for i, part in enumerate(parts):
        if part != "...":
            continue
        table = _value_at(trial, parts[:i])
        if not isinstance(table, dict):
            return None
        entries = list(table.items())
        for name, value in entries:
            table.clear()
            table[name] = value
            try:
                msgspec.convert(trial, struct)
            except msgspec.ValidationError as err:
                if str(err) == error:
                    parts[i] = name
                    break
        else:
            return None
    return parts


def _value_at(data: Any, parts: list[str | int]) -> Any:
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _shown_path(parts: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{toml_key(p)}" for p in parts)


def _shown(value: Any) -> str:
    """A value as the TOML file spells it (short): a string quoted, a table or array named."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value if len(value) <= 60 else value[:60] + "…").decode()
    return str(value)


def _struct_at(struct: type, path: str) -> type[msgspec.Struct] | None:
    """The struct type at ``.rules[0].match`` below ``struct`` (None when it is not a struct)."""
    current: Any = struct
    for part in re.findall(r"\.([A-Za-z0-9_]+)", path):
        hint = typing.get_type_hints(current).get(part) if isinstance(current, type) else None
        if hint is None:
            return None
        args = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        current = args[0] if args else hint
    return current if isinstance(current, type) and issubclass(current, msgspec.Struct) else None


def _item_shown(struct: type, where: str, found: str | int | float) -> str:
    """``found`` as an item of the array at ``where`` is written: a whole number given as text
    (``status = "302"``) without its quotes where the items are whole numbers."""
    path, _, name = where.rpartition(".")
    owner = _struct_at(struct, path)
    hint = typing.get_type_hints(owner).get(name) if owner is not None else None
    if isinstance(found, str) and typing.get_args(hint)[:1] == (int,) and found.strip().isdigit():
        return found.strip()
    return _shown(found)


def _literal_values(struct: type, name: str) -> str:
    """The values a field takes, as an operator writes them: ``"a", "b"``, and ``a number``
    for a field that also takes one (``value_scale``: a number or ``"minor"``)."""
    hint = typing.get_type_hints(struct).get(name)
    if hint is None:
        return "?"
    words = []
    for arg in typing.get_args(hint):
        if typing.get_origin(arg) is typing.Literal:
            words += [f'"{v}"' for v in typing.get_args(arg)]
        elif isinstance(arg, type):
            words.append(_TYPE_WORDS.get(arg.__name__, arg.__name__))
        else:
            words.append(f'"{arg}"')
    return ", ".join(words)


def decode_options(data: Mapping[str, Any]) -> tuple[Options, list[str]]:
    """Decode each table on its own, and each with every problem it has, so one run reports
    them all, not just the first."""
    problems: list[str] = []
    tables: dict[str, Any] = {}
    for name, value in data.items():
        if name in ARRAY_SECTIONS:
            tables[name] = _decode_array(name, value, problems)
            continue
        struct = SECTIONS.get(name)
        if struct is None:
            allowed = [*SECTIONS, *(f"[[{a}]]" for a in ARRAY_SECTIONS)]
            tables_of = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
            if isinstance(value, dict) or tables_of:  # [name] or [[name]]
                problems.append(f"{toml_key(name)}: {unknown_name('table', name, allowed)}")
            elif owners := _tables_with(name):  # above every header: TOML's top level
                header = f"the {owners[0]} header" if len(owners) == 1 else "the header of the one meant"
                problems.append(
                    f"{toml_key(name)}: a key of {_listed(owners)}, written above every table header,"
                    f" where no key goes; write it below {header}"
                )
            else:
                problems.append(
                    f"{toml_key(name)}: unknown key, written above every table header, where no key goes"
                    f" (tables: {', '.join(allowed)})"
                )
            continue
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a table ([{name}]), got {_shown(value)}")
            continue
        decoded = _convert(name, value, struct, problems)
        if decoded is not None:
            tables[name] = decoded
    return Options(**tables), problems


def _convert(key: str, value: dict[str, Any], struct: type[Any], problems: list[str]) -> Any:
    """``value`` decoded as ``struct``, or None with every problem of it added to ``problems``.
    msgspec stops at the first: the key it names is left out and the rest decoded again, until
    nothing else is wrong (a required key left out that way is not one more problem)."""
    trial, failed = copy.deepcopy(value), False
    dropped: set[Keys] = set()
    removed: dict[Keys, list[int]] = {}
    """Items taken out of arrays (by their index in the file), so later ones are named by theirs."""
    while True:
        try:
            decoded = msgspec.convert(trial, struct)
        except msgspec.ValidationError as err:
            culprit, missing = _culprit(str(err))
            found = _missing_problems(key, err, struct, trial) or [_msgspec_problem(key, err, struct, trial)]
            if removed:  # named as in the file, past the array items taken out before
                at = culprit if culprit is not None else missing[:-1] if missing is not None else ()
                shown = _as_in_file(at, removed)
                found = [
                    problem.replace(key + _shown_path(list(at)), key + _shown_path(list(shown)), 1)
                    for problem in found
                ]
                culprit = shown if culprit is not None else None
                missing = _as_in_file(missing, removed) if missing is not None else None
            if missing in dropped:
                return None
            problems += found
            failed = True
            if culprit is None or not _drop(trial, _as_in_trial(culprit, removed), removed, culprit):
                return None
            dropped.add(culprit)
        else:
            return None if failed else decoded


Keys = tuple[str | int, ...]
"""Where a value is in a table as read: names, and indexes of arrays."""


def _culprit(error: str) -> tuple[Keys | None, Keys | None]:
    """Where the value a msgspec error is about is (`$.rules[0].path` → rules, 0, path; an
    unknown key's own place; a map's entry, which msgspec does not name, is the whole map),
    or None; and where the required field it says is missing would be."""
    message, sep, where = error.rpartition(" - at `")
    if not sep:
        message, where = error, "$`"
    keys: list[str | int] = []
    for part in _path_parts(where.rstrip("`").removeprefix("$")):
        if part == "...":
            return (tuple(keys) or None), None
        keys.append(part)
    if unknown := re.match(r"Object contains unknown field `(.*)`", message):
        return (*keys, unknown.group(1)), None
    if missing := re.match(r"Object missing required field `(.+)`", message):
        return None, (*keys, missing.group(1))
    return (tuple(keys) or None), None


def _drop(table: dict[str, Any], keys: Keys, removed: dict[Keys, list[int]], in_file: Keys) -> bool:
    """Delete the value at ``keys`` (an array's item too: ``removed`` notes its index in the file,
    ``in_file``'s last, under the array's own place in the file); False when it is not there."""
    *inner, last = keys
    value: Any = table
    for key in inner:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(value, dict) and last in value:
        del value[last]
        return True
    if isinstance(value, list) and isinstance(last, int) and 0 <= last < len(value):
        del value[last]
        index = in_file[-1]
        assert isinstance(index, int)
        removed.setdefault(in_file[:-1], []).append(index)
        return True
    return False


def _as_in_file(keys: Keys, removed: dict[Keys, list[int]]) -> Keys:
    """``keys`` as read from the table left after ``removed`` was taken out → as in the file."""
    shown: list[str | int] = []
    for part in keys:
        if isinstance(part, int):
            for gone in sorted(removed.get(tuple(shown), ())):
                if gone <= part:
                    part += 1
        shown.append(part)
    return tuple(shown)


def _as_in_trial(keys: Keys, removed: dict[Keys, list[int]]) -> Keys:
    """``keys`` as in the file → as in the table left after ``removed`` was taken out."""
    at: list[str | int] = []
    for i, part in enumerate(keys):
        if isinstance(part, int):
            part -= sum(1 for gone in removed.get(keys[:i], ()) if gone < part)
        at.append(part)
    return tuple(at)


def _decode_array(name: str, value: Any, problems: list[str]) -> tuple[msgspec.Struct, ...]:
    """``[[name]]`` entries, each decoded on its own; errors read ``name[2].key: ...``."""
    if not isinstance(value, list):
        problems.append(f"{name}: must be an array of tables ([[{name}]]), got {_shown(value)}")
        return ()
    struct = ARRAY_SECTIONS[name]
    decoded = []
    failed = False
    for i, entry in enumerate(value):
        key = f"{name}[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{key}: must be a table, got {_shown(entry)}")
            failed = True
            continue
        if name == "sources":  # a default no field takes is said first, not its value's type
            from gateway.sources import without_undefaultable

            entry, said = without_undefaultable(entry, key)
            problems += said
        rule = _convert(key, dict(entry), struct, problems)
        if rule is None:
            failed = True
        else:
            decoded.append(rule)
    # Checks after decoding name entries by index: with one missing, the others' would be wrong.
    return () if failed else tuple(decoded)


def _env_path(key: str, written: str, path: Path) -> str | None:
    """Why a store's path written ``"env:NAME"`` (as the secrets and URLs beside it are) is
    refused: a path is read as written, so the store would be a file of that name in the working
    folder, whatever the variable says. A file so named that is there already (a gateway ran on
    it) is left in use: refusing it would stop that gateway at its next start."""
    if written[:4].lower() != "env:":
        return None
    try:
        if path.exists():
            return None
    except OSError:  # said by the checks of the path itself
        return None
    shown = msgspec.json.encode(written).decode()
    example = "mirror.db" if key == "central.mirror_path" else "gateway.db"
    return (
        f"{key}: {shown} is read as a file of that name, not from the environment (only secrets and"
        f' URLs read env:NAME); write the path itself, as {key} = "/var/lib/gateway/{example}"'
    )


def check_files(options: Options, base_dir: Path, said: Collection[str] = ()) -> list[str]:
    """Files the config names that exist but cannot be used, or whose path the system refuses to
    look at: each a problem naming its key. ``said``: keys (``storage.path``) and tables
    (``storage``) with a problem already, whose files are not looked at (a table that did not
    decode holds its defaults, not the file's values).

    A missing GeoIP database is not a problem (the geo addon warns and turns itself off);
    a corrupt or unreadable one is, so ``gateway check`` catches it before ``run``.
    """
    import maxminddb

    def unsaid(*keys: str) -> bool:
        return not any(k in said or k.partition(".")[0] in said for k in keys)

    p: list[str] = []
    store = resolve_path(base_dir, options.storage.path)
    for key, written in (
        ("storage.path", options.storage.path),
        ("central.mirror_path", options.central.mirror_path),
    ):
        if unsaid(key) and (bad := _env_path(key, written, resolve_path(base_dir, written))):
            p.append(bad)
            said = {*said, key}
    if unsaid("storage.path"):
        try:
            store.exists()  # every command that reads the store asks this first
        except OSError as err:  # a name too long, a folder on the way that cannot be searched
            p.append(f"storage.path: cannot use {store}: {err.strerror}{_unsearchable(store)}")
        if what := special_file(store):  # a folder is said by run and doctor, with what to do
            p.append(f"storage.path: {store} is {what}, not a file; point storage.path at the SQLite file")
    if options.central.mirror_path and unsaid("storage.path", "central.mirror_path"):
        p += _check_mirror(store, resolve_path(base_dir, options.central.mirror_path))
    for key, name, kind in (
        ("geo.country_db", options.geo.country_db, ""),
        ("geo.asn_db", options.geo.asn_db, "ASN"),
    ):
        path = resolve_path(base_dir, name) if name and unsaid(key) else None
        try:
            if path is None or not path.exists():
                continue
        except OSError as err:  # a name too long, a folder on the way not searchable
            p.append(f"{key}: cannot read {path}: {err.strerror}{_unsearchable(path) if path else ''}")
            continue
        if what := ("a folder" if path.is_dir() else special_file(path)):
            p.append(f"{key}: {path} is {what}, not a file; name the .mmdb file")
            continue
        try:
            with maxminddb.open_database(str(path)) as reader:
                found = reader.metadata().database_type
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
            p.append(f"{key}: cannot read {path} as a MaxMind database: {err}")
            continue
        if kind and kind not in found.upper():
            p.append(f"{key}: {path} is a {found!r} database, not an {kind} one")
        elif not kind and "ASN" in found.upper():  # the two keys swapped: it holds no country
            p.append(
                f"{key}: {path} is a {found!r} database, not a Country or City one"
                " (an ASN database goes in geo.asn_db)"
            )
    return p


def _unsearchable(path: Path) -> str:
    """For a path refused as ``Permission denied``: the first folder on the way this process may
    not enter (search), its uid, and what to do; "" when there is none to name (the refusal
    was another). Said only where a folder is the cause: a root process enters any folder."""
    for folder in reversed(path.parents):
        try:
            if not folder.is_dir():  # not there (its parent could be entered): not the cause
                return ""
            if not os.access(folder, os.X_OK):
                return (
                    f" ({folder} may not be entered by uid {os.geteuid()}: let the gateway's user"
                    " search it, or run the command as that user)"
                )
        except OSError:
            return ""
    return ""


def _check_mirror(store: Path, mirror: Path) -> list[str]:
    """``central.mirror_path``: a file of its own, not the node's store (each round would insert
    the node's rows into itself, and an erasure's rows of other nodes deleted from it)."""
    key = "central.mirror_path"
    try:
        same = mirror.resolve() == store.resolve() or (
            mirror.exists() and store.exists() and mirror.samefile(store)
        )
    except ValueError:  # a NUL in the name: path_problem says so
        return []
    except OSError as err:
        return [f"{key}: cannot use {mirror}: {err.strerror}{_unsearchable(mirror)}"]
    if same:
        return [f"{key}: {mirror} is the node's own store (storage.path); give the mirror a file of its own"]
    if what := ("a folder" if mirror.is_dir() else special_file(mirror)):
        return [f"{key}: {mirror} is {what}, not a file; name the mirror's SQLite file"]
    return []


def resolve_path(base_dir: Path, name: str) -> Path:
    """A path from the config: absolute as given, else relative to the config file's folder."""
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


DEV_HINT = " (or run with --dev)"
"""What a command that can run with ``--dev`` adds to a missing secret's problem."""
OFFLINE_HINT = " (the gateway's own value: what is stored is keyed by it)"
"""The same for a command that has no ``--dev`` (``load_settings(offline=True)``)."""
RELOAD_HINT = " (a running gateway reads its environment at start only: restart it with the variable set)"
"""The same at a reload (SIGHUP), which cannot see a variable set since (until 2026-12-05 it
said ``(or run with --dev)``)."""


def resolve_secret(
    key: str,
    value: str,
    environ: Mapping[str, str],
    dev: bool,
    problems: list[str],
    generated: list[str],
    hint: str = DEV_HINT,
) -> str:
    """``env:NAME`` → the variable's value. Missing: an error (with ``hint``: what else to do), or
    in dev mode an ephemeral value."""
    if not value.startswith("env:"):
        said = in_the_file(value)
        tail = " and set NAME in the environment" if said.endswith('"env:NAME"') else ""
        problems.append(f"{key}: {said}{tail}")
        return ""
    name = value[4:]
    resolved = environ.get(name, "")
    if bad := not_utf8(name, resolved):
        problems.append(f"{key}: {bad}")
        return ""
    if not resolved:
        if dev:
            generated.append(f"{key} ({name})")
            return secrets.token_urlsafe(32)
        problems.append(f"{key}: {unset(name, environ)}{hint}")
        return ""
    if len(resolved) < MIN_SECRET_LENGTH:
        problems.append(f"{key}: {name} must be at least {MIN_SECRET_LENGTH} characters long")
    return resolved


MIN_SENDER_SECRET_BYTES = 24
"""Shortest sender secret accepted (the Standard Webhooks minimum)."""


def sender_secret_bytes(value: str, signature: str = "standard") -> bytes:
    """A sender secret as the HMAC key: ``whsec_<base64>`` decoded (Standard Webhooks), else the
    text itself; Stripe's (``signature = "stripe"``) is its whole text, ``whsec_`` included.
    ValueError when a Standard Webhooks whsec_ part is not base64."""
    if value.startswith("whsec_") and signature == "standard":
        return base64.b64decode(value[6:], validate=True)
    return value.encode()


def resolve_sender_secret(
    key: str,
    value: str,
    environ: Mapping[str, str],
    dev: bool,
    problems: list[str],
    generated: list[str],
    signature: str = "standard",
    hint: str = DEV_HINT,
    whose: str = "the sender's secret",
) -> bytes:
    """One ``[[sources]]`` secret: ``env:NAME`` → its HMAC key bytes (at least 24 of them).
    ``whose``: what the secret is, as a problem says it (a sink's is its own signing secret)."""
    if not value.startswith("env:"):
        problems.append(f"{key}: {in_the_file(value)}")
        return b""
    name = value[4:]
    if bad := not_utf8(name, environ.get(name, "")):
        problems.append(f"{key}: {bad}")
        return b""
    # resolve_secret's own length rule (32 characters) is for our secrets; a sender's is checked below.
    text = resolve_secret(key, value, environ, dev, [], generated)
    if not text:
        problems.append(f"{key}: {unset(name, environ)}{hint}")
        return b""
    if padded(text):
        # No signature made with the secret as the sender holds it would verify (and a whsec_
        # one was read as "not base64").
        problems.append(f"{key}: the value of {name} {PADDED}; {whose} has none")
        return b""
    try:
        raw = sender_secret_bytes(text, signature)
    except (ValueError, binascii.Error):
        problems.append(f"{key}: {name} starts with whsec_ but the rest is not base64")
        return b""
    if len(raw) < MIN_SENDER_SECRET_BYTES:
        problems.append(f"{key}: {name} must hold at least {MIN_SENDER_SECRET_BYTES} bytes")
    return raw


def verified_alike(source: SourceOptions) -> list[str]:
    """How the gateway tells ``source``'s deliveries from another's: the schemes whose signature
    (or login, or write key) it verifies. Two sources one secret verifies alike under one of
    them cannot be told apart."""
    if source.format == "segment":
        return ["the Segment write key"]
    signed = source.signed_body()
    ways = [
        f'signature = "{source.signature}" in {signed.header}'
        if signed is not None
        else f'signature = "{source.signature}"'
    ]
    return [*ways, "legacy_hex"] if source.legacy_hex else ways


def shared_sender_secrets(
    sources: Sequence[SourceOptions], resolved: Sequence[Sequence[tuple[int, bytes]]]
) -> list[str]:
    """A secret of two ``[[sources]]`` verified alike (see ``verified_alike``): a delivery signed
    with it is the first one's, so the second never receives an event (until 2026-12-05 that
    was silent: its events were recorded as the first's, under the first's mapping)."""
    first: dict[tuple[str, bytes], tuple[int, int]] = {}
    problems = []
    for i, (source, keys) in enumerate(zip(sources, resolved, strict=True)):
        for j, raw in keys:
            for way in verified_alike(source) if raw else ():
                at = first.setdefault((way.lower(), raw), (i, j))
                if at[0] != i:
                    problems.append(
                        f"sources[{i}].secrets[{j}]: the same secret as sources[{at[0]}].secrets[{at[1]}]"
                        f" ({sources[at[0]].name!r}), both verified as {way}: every delivery it signs"
                        f" is read as {sources[at[0]].name}'s, none as {source.name}'s; give each"
                        " sender its own secret"
                    )
                    break
    return problems + shared_basic_passwords(sources, resolved)


def shared_basic_passwords(
    sources: Sequence[SourceOptions], resolved: Sequence[Sequence[tuple[int, bytes]]]
) -> list[str]:
    """Two ``signature = "basic"`` secrets of two senders that accept one login: a password
    alone (no colon) takes any user name, so ``pw`` accepts ``user:pw`` as surely as ``user:pw``
    does, and that login is the first's. Identical secrets are ``shared_sender_secrets``'s."""
    alone: dict[bytes, tuple[int, int]] = {}  # a password with no user name → where first given
    logins: list[tuple[int, int, bytes]] = []  # user:password → its password
    for i, (source, keys) in enumerate(zip(sources, resolved, strict=True)):
        if source.format != "standard" or source.signature != "basic":
            continue
        for j, raw in keys:
            if not raw:
                continue
            _, colon, password = raw.partition(b":")
            if colon:
                logins.append((i, j, password))
            else:
                alone.setdefault(raw, (i, j))
    problems = []
    for i, j, password in logins:
        at = alone.get(password)
        if at is not None and at[0] != i:
            # Told at the later entry, as a shared secret is.
            (fi, fj), (li, lj) = sorted([at, (i, j)])
            problems.append(
                f"sources[{li}].secrets[{lj}]: accepts the same HTTP Basic login as"
                f" sources[{fi}].secrets[{fj}] ({sources[fi].name!r}), both verified as"
                ' signature = "basic": one is a password alone, which takes any user name, and'
                " the other that password under a user name, so the login both accept is read as"
                f" {sources[fi].name}'s, never as {sources[li].name}'s; give each sender"
                " its own password"
            )
    return problems


def config_folder(path: str | Path | None) -> Path:
    """The folder relative paths in the config are taken from: the config file's, with its
    symbolic links followed (the working directory for a config given as text alone).
    ConfigError, naming the file, when it cannot be found: a loop of symbolic links (which
    ``Path.resolve`` raises as RuntimeError, not OSError), or a working directory removed
    under the command."""
    try:
        return Path.cwd() if path is None else Path(path).resolve().parent
    except OSError as err:
        raise ConfigError([f"{path or '.'}: cannot find its folder: {err.strerror or err}"]) from err
    except RuntimeError as err:  # "Symlink loop from …" (Python 3.11, 3.12)
        raise ConfigError([f"{path}: cannot find its folder: a loop of symbolic links"]) from err


MAX_CONFIG_BYTES = 1 << 20
"""The most a config file is read (the starter config, comments and all, is 27 KiB). Past it
the file is not taken for a config (``-c`` naming a log, a dump, a pipe whose writer never
stops), rather than read until the memory runs out."""

_NOT_FILES = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}
"""What ``-c`` may name that is no config file, and is refused before it is opened (a device
reads for ever: ``/dev/zero``, a terminal; a socket cannot be opened). A named pipe is read
(``-c <(…)`` hands the config through one), within ``MAX_CONFIG_BYTES``."""


def read_config(path: str | Path) -> str:
    """The config file's text; ConfigError when it cannot be read, is not a file (a device), is
    larger than ``MAX_CONFIG_BYTES`` or is not UTF-8 (TOML's only encoding), saying where the
    first foreign byte is so the operator can find it. Until 2026-12-07 ``-c /dev/zero`` was
    read until the memory ran out."""
    if not str(path):  # ``-c ""``: Path("") is the working directory, "Is a directory"
        raise ConfigError(["-c/--config: empty; name the config file (e.g. -c gateway.toml)"])
    file = Path(path)
    try:
        kind = _NOT_FILES.get(stat.S_IFMT(file.stat().st_mode))
        if kind == "a folder":  # until 2026-12-07 "cannot read: Is a directory", and no more
            named = file / "gateway.toml"
            raise ConfigError([f"{file}: a folder, not a file; name the config file in it (e.g. -c {named})"])
        if kind is not None:
            raise ConfigError([f"{file}: {kind}, not a file; name the config file (e.g. -c gateway.toml)"])
        with file.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
            size = os.fstat(stream.fileno())
    except OSError as err:
        raise ConfigError([f"{file}: cannot read: {err.strerror}"]) from err
    if len(raw) > MAX_CONFIG_BYTES:
        held = f"{size.st_size:,} bytes, " if stat.S_ISREG(size.st_mode) else ""
        raise ConfigError(
            [
                f"{file}: {held}more than a config file may hold (1 MiB, {MAX_CONFIG_BYTES:,} bytes):"
                " is it the config file?"
            ]
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        raise ConfigError(
            [
                f"{file}: not UTF-8 (byte 0x{raw[err.start]:02x} at line {line}, column {column}); "
                "TOML files are UTF-8: save it as UTF-8"
            ]
        ) from err


def blank_config(text: str) -> bool:
    """Whether ``text`` holds no TOML at all: empty, or whitespace and comments only (a leading
    byte-order mark too). Valid TOML, every key at its default; at a reload, a file caught
    between an editor's truncation and its write, or a deploy's two steps (``refuse_blank``)."""
    lines = text.removeprefix("\ufeff").splitlines()
    return all(not line.strip() or line.lstrip().startswith("#") for line in lines)


def refuse_blank(text: str, name: str) -> None:
    """ConfigError for a reload's ``blank_config`` file: it would drop every rule to its default
    (until 2026-12-07 it did, and the gateway silently stopped noticing sign-ups). A start takes
    one (the demo's defaults): what it runs is announced, as no reload's change is."""
    if blank_config(text):
        raise ConfigError(
            [
                f"{name}: the file is empty (nothing but whitespace or comments), so nothing changed;"
                " a reload never reads it as every default (an editor or a deploy may be half-way"
                " through writing it): reload again once the config is written"
            ]
        )


def parse_config(text: str, name: str) -> dict[str, Any]:
    """TOML text → tables. A leading byte-order mark is dropped: editors on Windows write one,
    and it is not part of the configuration. ConfigError for text that is not TOML (naming
    the line), or holds what no check could print (``out_of_reach``)."""
    text = text.removeprefix("\ufeff")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        said = given_twice(str(err), text, name) or f"{name}: not valid TOML: {toml_error(str(err), text)}"
        raise ConfigError([said]) from err
    except RecursionError as err:  # tomllib parses nesting by recursion, and says no line
        line = _deepest_line(text)
        raise ConfigError(
            [
                f"{name}: line {line}: nested too deeply (arrays, inline tables or dotted keys);"
                " a config needs a few levels"
            ]
        ) from err
    except ValueError as err:  # Python's limit on the digits of a whole number (4300): not a TOMLDecodeError
        found = re.search(r"[0-9A-Fa-f_]{4000,}", text)
        where = f"line {text.count(chr(10), 0, found.start()) + 1}: " if found else ""
        raise ConfigError([f"{name}: {where}a number of thousands of digits; no setting takes one"]) from err
    if unusable := out_of_reach(data):
        raise ConfigError(unusable)
    return data


MAX_DEPTH = 16
"""Deepest nesting of tables and arrays a config may have (the deepest setting,
``identity.rules[0].user_id.when[0].equals``, is six levels down): the decoding and its error
messages recurse, and a value nested hundreds deep would end in a RecursionError."""
MAX_DIGITS = 4000
"""Most digits of a whole number: Python refuses to print one of more than 4300, and every
range check prints the value it refuses."""


def out_of_reach(data: dict[str, Any]) -> list[str]:
    """Values no check can print: nested deeper than ``MAX_DEPTH``, or whole numbers of more
    than ``MAX_DIGITS`` digits, each named by its key. Walked without recursion."""
    problems: list[str] = []
    stack: list[tuple[str, Any, int]] = [(toml_key(k), v, 1) for k, v in reversed(data.items())]
    while stack:
        key, value, depth = stack.pop()
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_DIGITS * 3:
            problems.append(f"{key}: a number of thousands of digits; no setting takes one")
        elif isinstance(value, dict | list) and depth > MAX_DEPTH:
            problems.append(f"{key}: nested more than {MAX_DEPTH} levels deep; no setting is")
        elif isinstance(value, dict):
            stack += [(f"{key}.{toml_key(k)}", v, depth + 1) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            stack += [(f"{key}[{i}]", v, depth + 1) for i, v in reversed(list(enumerate(value)))]
    return problems


_AT_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_PLAIN = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]+)?(?:[eE][-+]?[0-9_]+)?|inf|nan)|true|false")
_BOOLEANS = {"True", "False", "TRUE", "FALSE", "yes", "no", "Yes", "No", "on", "off"}


def toml_error(message: str, text: str) -> str:
    """tomllib's message with the line it is about and what the usual cause is: "at end of
    document" said no line (a string left open), and "Invalid value" did not say that a text
    value is quoted (``node = myhost``, ``listen = 127.0.0.1:8080``)."""
    lines = text.splitlines()
    if "(at end of document)" in message:
        number, what = _left_open(text)
        return message.replace("(at end of document)", f"(at line {number}: {what})")
    found = _AT_LINE.search(message)
    if found is None or int(found.group(1)) > len(lines):
        return message
    if message.startswith(("Illegal character '\\n'", "Found invalid character '\\n'")):
        # The line's end inside a one-line string: its closing quote was left out.
        return f"Unterminated string (at line {found.group(1)}: {_OPENED['string']})"
    key, sep, value = lines[int(found.group(1)) - 1].partition("=")
    value = value.split(" #")[0].strip()
    if message.startswith("Unescaped '\\'"):
        return f"{message}; write a backslash as \\\\, or the whole value in single quotes ('C:\\path')"
    invalid = message.startswith(("Invalid value", "Expected newline or end of document after a statement"))
    if not (invalid and sep and value) or value[0] in "\"'[{" or _PLAIN.fullmatch(value):
        return message
    if value.startswith("="):  # ``workers = = 2``, ``workers == 2``: not a text value to quote
        return f"{message}; one = too many: {key.strip()} = {value.lstrip('= ')}"
    if value in _BOOLEANS:
        return f"{message}; true and false are written in lower case, without quotes"
    if re.fullmatch(r"[-+]?[0-9]*[.,][0-9]+", value):  # .5, 1,5
        fixed = value.replace(",", ".").replace("+.", "+0.").replace("-.", "-0.")
        fixed = "0" + fixed if fixed.startswith(".") else fixed
        return f"{message}; a number is written with a point and a digit before it: {key.strip()} = {fixed}"
    return f'{message}; a text value is written in quotes: {key.strip()} = "{value}"'


_OPENED = {
    "string": "a string left open",
    "array": "an array left open, no ] closes it",
    "header": "a table header left open, no ] closes it",
    "table": "an inline table left open, no } closes it",
}


def _left_open(text: str) -> tuple[int, str]:
    """The line of what the text leaves open at its end, and what it is: a string, an array, a
    table header, an inline table (the outermost one); else its last line, a value missing
    (``workers =``). tomllib says only "at end of document" for each."""
    opened: list[tuple[str, int]] = []  # brackets still open: what, and the line it opened on
    quote, line, i, start = "", 1, 0, 1  # quote: the string being read ('"', "'", '"""', "'''")
    at_line_start = True
    cut = 0  # the line of the first one-line string left open by its line's end: a '…' one,
    # whose closing ' tomllib looks for down to the end of the file
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote[0] == '"':
                line += text[i + 1 : i + 2] == "\n"
                i += 2
                continue
            if char == "\n":
                line, at_line_start = line + 1, True
                if len(quote) == 1:  # a one-line string ends with its line: left open there
                    cut = cut or start
                    quote = ""
                i += 1
                continue
            elif text.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
        elif char == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, i) else char
            start = line
            i += len(quote)
            at_line_start = False
            continue
        elif char in "[{":
            kind = "table" if char == "{" else "header" if at_line_start and not opened else "array"
            opened.append((kind, line))
        elif char in "]}" and opened:
            opened.pop()
        elif char == "\n":
            line += 1
            at_line_start = True
            i += 1
            continue
        if not char.isspace():
            at_line_start = False
        i += 1
    if cut or quote:  # a cut one first: tomllib read on past it, to the end of the file
        return cut or start, _OPENED["string"]
    if opened:
        kind, number = opened[0]
        return number, _OPENED[kind]
    return max(1, len(text.splitlines())), "the file ends where a value was expected"


def _deepest_line(text: str) -> int:
    """The line most likely to nest too deeply: the one with the most ``[``, ``{`` or ``.``."""
    lines = text.splitlines() or [""]
    depth = [max(line.count("["), line.count("{"), line.count(".")) for line in lines]
    return depth.index(max(depth)) + 1


_DECLARED = re.compile(
    r"Cannot (?:mutate immutable namespace|declare) \(([^)]*)\)(?: twice)? \(at line (\d+),"
)
_OVERWRITTEN = re.compile(r"Cannot overwrite a value \(at line (\d+),")
_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?")


def given_twice(message: str, text: str, name: str) -> str | None:
    """tomllib's "Cannot mutate immutable namespace ('identity', 'rules') (at line 135, …)" →
    the key given twice and what to do; None for other TOML errors. The usual cause: the
    example config's ``rules = []`` left in when ``[[identity.rules]]`` tables are added."""
    lines = text.splitlines()
    table, tables = "", []  # the table each line is in
    for line in lines:
        if header := _HEADER.fullmatch(line):
            table = header.group(2)
        tables.append(table)
    if declared := _DECLARED.search(message):
        number = int(declared.group(2))
        key = ".".join(p.strip().strip("'\"") for p in declared.group(1).split(",") if p.strip())
    elif overwritten := _OVERWRITTEN.search(message):
        number = int(overwritten.group(1))
        line = lines[number - 1] if number <= len(lines) else ""
        own = _HEADER.fullmatch(line)  # [proxy], then [[proxy]]
        within = tables[number - 1] if number <= len(lines) else ""
        key = own.group(2) if own else ".".join(filter(None, [within, line.partition("=")[0].strip()]))
    else:
        return None
    opener = lines[number - 1].partition("#")[0].strip() if number <= len(lines) else ""
    if declared and opener.startswith("[") and not opener.endswith("]"):
        # ``[proxy`` after a [proxy] table: tomllib finds the name taken before it looks for the
        # bracket, and said so (until 2026-12-05 "proxy is given twice; keep one").
        closing = "]]" if opener.startswith("[[") else "]"
        what = f"the table header `{opener[:40]}`"
        return f"{name}: not valid TOML: line {number}: {what} has no closing `{closing}`"
    said = f"{name}: line {number}: {_indexed(key, lines[: number - 1])} is given twice"
    header = _HEADER.fullmatch(lines[number - 1]) if declared and number <= len(lines) else None
    if header is None:
        return f"{said}; keep one"
    arrays = [
        i for i in range(number - 1) if (h := _HEADER.fullmatch(lines[i])) and h.groups() == ("[[", key)
    ]
    if header.group(1) == "[" and arrays:  # [sources] after [[sources]]: merging is not the fix
        at = arrays[0]
        return f"{said}: line {at + 1} made it an array of tables; write [[{key}]] for each entry"
    parent, _, last = key.rpartition(".")
    value = re.compile(rf"\s*{re.escape(last)}\s*=")
    earlier = [i for i in range(number - 1) if tables[i] == parent and value.match(lines[i])]
    if not earlier:
        return f"{said}; merge the two [{key}] tables"
    kind = f"[[{key}]] tables" if header.group(1) == "[[" else f"a [{key}] table"
    at = earlier[-1]
    return f"{said}; delete line {at + 1} (`{lines[at].strip()[:40]}`) to write it as {kind}"


def _indexed(key: str, before: list[str]) -> str:
    """``sinks.name`` → ``sinks[1].name`` when two ``[[sinks]]`` tables come in the lines
    ``before`` it, as the other problems name an entry; an inner array of tables is counted
    within its entry."""
    shown, done, start = "", 0, 0
    for i, char in enumerate(key):
        if char != ".":
            continue
        entries = [j for j in range(start, len(before)) if _is_array(before[j], key[:i])]
        shown += key[done:i] + (f"[{len(entries) - 1}]" if entries else "")
        start, done = (entries[-1] + 1 if entries else start), i
    return shown + key[done:]


def _is_array(line: str, name: str) -> bool:
    header = _HEADER.fullmatch(line)
    return header is not None and header.groups() == ("[[", name)


def load_settings(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    dev: bool = False,
    text: str | None = None,
    admin_public: bool = False,
    offline: bool = False,
    missing_hint: str | None = None,
    files_only: bool = False,
    admin_api: bool = True,
    reload: bool = False,
    central: bool = True,
) -> Settings:
    """Read, decode, validate and resolve a config; raise ConfigError listing every problem.
    ``admin_public`` (``--admin-public``) lets the admin API listen on a public address.
    ``offline``: a command that serves nothing (import, sync, purge…): it needs no admin token
    nor any ``[[sources]]`` or ``[[sinks]]`` secret that is not set (``sink_secrets`` then lacks
    that sink), and a missing secret's problem does not suggest ``--dev``, which such a command
    lacks. ``missing_hint``: what a missing secret's problem adds instead (``RELOAD_HINT``; ``""``
    for the doctor, whose fix says it). ``files_only``: a command that reads the store files and
    connects to nothing (``report``, ``reclassify``; with ``dev``, which makes up the secrets): an
    ``"env:NAME"`` ``central.url`` or sink URL or secret whose variable is not set is no problem,
    as it is never read (``central_url`` then stays empty; ``mirror_path`` is still the mirror).
    ``admin_api=False``: a host with no admin API (the mitmproxy host) needs no admin token, as
    ``offline`` (until 2026-12-05 mitmdump would not start without one it never read).
    ``reload``: a running gateway's reload, which refuses an empty file (``refuse_blank``).
    ``central=False``: a command that never connects to the central store (``sink send``,
    ``import``, ``replay-bad``, ``erase``; ``Settings.options.central.url`` says whether one is
    configured): an ``"env:NAME"`` ``central.url`` whose variable is not set is no problem, as
    ``files_only`` (until 2026-12-07 each asked for the database's password)."""
    environ = os.environ if environ is None else environ
    if text is None:
        if path is None:
            raise ConfigError(["no config file given"])
        text = read_config(path)
    if reload:
        refuse_blank(text, str(path or "config"))
    # Relative paths are the file's, also for its text read before (a supervisor's workers).
    base_dir = config_folder(path)
    data = parse_config(text, str(path or "config"))
    options, problems = decode_options(data)
    # A table with a problem was left at its defaults: its files are not the ones written.
    unread = {re.split(r"[.\[]", p.partition(":")[0], maxsplit=1)[0] for p in problems}
    problems += validate(options)
    if not admin_public:
        problems += admin_exposure(options)
    # Every file problem in the same run as the others (until 2026-12-05 none was said until
    # every other problem was fixed): only a key already said to be wrong is not looked at.
    problems += check_files(options, base_dir, unread | {p.partition(":")[0] for p in problems})
    generated: list[str] = []
    hint = missing_hint if missing_hint is not None else OFFLINE_HINT if offline else DEV_HINT
    secret = resolve_secret(
        "identity.secret", options.identity.secret, environ, dev, problems, generated, hint
    )
    token_unset = not environ.get(options.admin.token.removeprefix("env:"))
    if (offline or not admin_api) and options.admin.token.startswith("env:") and token_unset:
        token = ""  # never read: no admin API listens
    else:
        token_hint = DEV_HINT if missing_hint is None else missing_hint
        token = resolve_secret(
            "admin.token", options.admin.token, environ, dev, problems, generated, token_hint
        )
        if not offline and admin_api and padded(token):  # every login was "Wrong admin token"
            problems.append(
                f"admin.token: the value of {options.admin.token.removeprefix('env:')} {PADDED};"
                " no login or Authorization header can send it"
            )
    if secret and token and hmac.compare_digest(secret.encode(), token.encode()):
        # One secret for two purposes: whoever holds the admin token (every operator, a script's
        # environment) could compute any visitor's hashes and sign cookies.
        problems.append(
            f"admin.token: the same value as identity.secret ({_env_names(options)}); the admin"
            " token would let its holder compute visitor hashes: give each its own secret"
        )
    sender_hint = missing_hint if missing_hint is not None else "" if offline else DEV_HINT

    def unused(value: str) -> bool:
        """A command that serves nothing verifies no sender's signature and sends to no sink
        (``sink send`` checks its own): an import run where those secrets are not set (another
        box, a cron job) needs none of them. One that is set, or written in the file, is checked."""
        return (offline or files_only) and value.startswith("env:") and not environ.get(value[4:])

    resolved = [
        [
            (
                j,
                resolve_sender_secret(
                    f"sources[{i}].secrets[{j}]",
                    value,
                    environ,
                    dev,
                    problems,
                    generated,
                    source.signature,
                    sender_hint,
                ),
            )
            for j, value in enumerate(source.secrets)
            if not unused(value)
        ]
        for i, source in enumerate(options.sources)
    ]
    problems += shared_sender_secrets(options.sources, resolved)
    source_secrets = {
        source.name: tuple(raw for _, raw in keys)
        for source, keys in zip(options.sources, resolved, strict=True)
    }
    sources = rule_sources(options.identity.rules, options.conversions)
    rule_keys = resolve_rule_keys(sources, environ, base_dir, problems)
    central_url = ""
    if options.central.url.startswith("env:"):
        name = options.central.url[4:]
        central_url = environ.get(name, "")
        if bad := not_utf8(name, central_url):
            problems.append(f"central.url: {bad}")
        elif not central_url and (files_only or not central):
            pass  # never connected to: the mirror's file is all such a command reads
        elif not central_url:
            problems.append(f"central.url: {unset(name, environ)}")
        elif bad := dsn_problem(central_url):
            problems.append(f"central.url: the value of {name}: {bad}")
    sink_secrets: dict[str, bytes] = {}
    for i, sink in enumerate(options.sinks):
        key = f"sinks[{i}].secret"
        if unused(sink.secret):
            continue
        if sink.kind == "webhook":
            sink_secrets[sink.name] = resolve_sender_secret(
                key,
                sink.secret,
                environ,
                dev,
                problems,
                generated,
                hint=sender_hint,
                whose="a signing secret",
            )
        else:
            name = sink.secret.removeprefix("env:")
            value = resolve_secret(key, sink.secret, environ, dev, [], generated)
            if not sink.secret.startswith("env:"):
                problems.append(f"{key}: {in_the_file(sink.secret)}")
            elif bad := not_utf8(name, environ.get(name, "")):
                problems.append(f"{key}: {bad}")
            elif not value:
                problems.append(f"{key}: {unset(sink.secret[4:], environ)}{sender_hint}")
            elif padded(value) or " " in value:  # 401 for every batch
                problems.append(
                    f"{key}: the value of {sink.secret[4:]} holds white space or control characters"
                    " (a newline from the file it was read from?); a write key has none"
                )
            sink_secrets[sink.name] = value.encode()
    # No --dev hint: dev mode makes up secrets, not a destination.
    sink_urls = resolve_sink_urls(options, environ, problems, missing_hint or "", unused)
    if problems:
        raise ConfigError(problems)
    trusted = tuple(ipaddress.ip_network(n, strict=False) for n in options.proxy.trusted_proxies)
    return Settings(
        options=options,
        base_dir=base_dir,
        secret=secret.encode(),
        admin_token=token,
        generated=tuple(generated),
        trusted_networks=trusted,
        node=options.storage.node or socket.gethostname(),
        source_secrets=source_secrets,
        rule_keys=rule_keys,
        channels=Channels(options.channels),
        central_url=central_url,
        sink_secrets=sink_secrets,
        sink_urls=sink_urls,
        report_zone=report_zone(options.attribution.timezone),
    )


def _env_names(options: Options) -> str:
    """Where identity.secret and admin.token were read from, for a problem about both."""
    names = [value[4:] for value in (options.identity.secret, options.admin.token)]
    return f"both read from {names[0]}" if names[0] == names[1] else f"{names[0]} and {names[1]} are equal"


def resolve_sink_urls(
    options: Options,
    environ: Mapping[str, str],
    problems: list[str],
    hint: str,
    unused: Callable[[str], bool],
) -> dict[str, str]:
    """``[[sinks]]`` name → its URL: as written, or for ``env:NAME`` the variable's value (a URL
    with credentials, ``user:password@`` or a token in its query, is a secret). A variable not
    set, empty, or not an http(s) URL is a problem naming ``sinks[i].url`` and the variable, never
    its value; ``unused`` ones (a command that sends nothing) are left out."""
    urls: dict[str, str] = {}
    for i, sink in enumerate(options.sinks):
        if not sink.url.startswith("env:"):
            urls[sink.name] = sink.url
            continue
        if unused(sink.url):
            continue
        key, name = f"sinks[{i}].url", sink.url[4:]
        value = environ.get(name, "")
        if bad := not_utf8(name, value):
            problems.append(f"{key}: {bad}")
        elif not value:
            problems.append(f"{key}: {unset(name, environ)}{hint}")
        elif padded(value):
            problems.append(f"{key}: the value of {name} {PADDED}; a URL has none")
        elif not http_url(value):
            # Never the value, nor the URL made of it: the suggestion is said, not written out.
            fix = "; set it with https:// before its value" if with_scheme(sink.kind, value) else ""
            problems.append(
                f"{key}: the value of {name} must be an http(s) URL (not shown: it may hold a secret){fix}"
            )
        elif sink.kind == "segment" and has_credentials(value):
            problems.append(f"{key}: the value of {name}: {segment_credentials(f'sinks[{i}]')}")
        elif sink.kind == "segment" and (wrong := segment_base(value)):
            problems.append(f"{key}: the value of {name}: {wrong}")
        else:
            urls[sink.name] = value
    return urls


def masked(options: Options) -> dict[str, Any]:
    """The resolved options as plain data, for ``gateway check``; secrets show only their source.

    A table shows every value; an entry of an array of tables (a rule, a sender, a sink, a
    creator) only what differs from its defaults, value sources and conditions included: with
    every default key, each ``[[sources]]`` took ten lines and a rule's ``user_id`` listed the
    seven kinds it does not read, burying what was written. Read back, it is the same config.
    """
    data: dict[str, Any] = msgspec.to_builtins(options)
    for key in SECRET_KEYS:
        section, name = key.split(".")
        value = data[section][name]
        data[section][name] = value if value.startswith("env:") else "***"
    for table in msgspec.structs.fields(options):
        value = getattr(options, table.name)
        if _is_entries(value):
            data[table.encode_name] = _differs(value)
        elif isinstance(value, msgspec.Struct):
            for inner in msgspec.structs.fields(value):
                if _is_entries(entries := getattr(value, inner.name)):
                    data[table.encode_name][inner.encode_name] = _differs(entries)
    for sink in data.get("sinks", ()):
        if "url" in sink:
            sink["url"] = _password_hidden(sink["url"])
    return data


def _password_hidden(url: str) -> str:
    """A sink's URL with the password of its ``user:password@`` (which aiohttp sends as HTTP
    Basic) shown as ``***``: ``gateway check``'s output goes to terminals and CI logs (until
    2026-12-05 it showed the password)."""
    try:
        parsed = URL(url)
        if parsed.password is None:
            return url
        return str(parsed.with_password("***"))
    except ValueError:
        return url


def _is_entries(value: object) -> bool:
    return isinstance(value, tuple) and bool(value) and all(isinstance(v, msgspec.Struct) for v in value)


def _differs(value: Any) -> Any:
    """``value`` as plain data, each struct in it with only the fields not at their default."""
    if isinstance(value, msgspec.Struct):
        out = {}
        for f in msgspec.structs.fields(value):
            default = f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default
            item = getattr(value, f.name)
            if f.required or item != default:
                out[f.encode_name] = _differs(item)
        return out
    if isinstance(value, list | tuple):
        return [_differs(v) for v in value]
    if isinstance(value, dict):
        return {k: _differs(v) for k, v in value.items()}
    return msgspec.to_builtins(value)
