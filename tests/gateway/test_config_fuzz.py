"""An operator's mistakes, fuzzed: every key of every README config (and ``gateway.toml``) given
a wrong type, an out-of-range or huge number, nan or inf, an empty or unprintable string, an
unknown key beside it; configs that nest or count too far for Python; files and environment
variables that cannot be read. Through the real loader and, for the command line, the real
``gateway`` process: a config error naming its key (exit 2), never a traceback.

Bounded: hypothesis draws a fixed, derandomized sample of the mutations (the whole space, some
20,000 configs, was run once by hand with the same assertions), and the command-line cases
are a table of a few dozen runs of a command that stops at its config.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_settings
from tests.conftest import ENV

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = [
    *re.findall(r"^```toml\n(.*?)^```", (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL),
    (ROOT / "gateway.toml").read_text(),
]
NAMED = set(re.findall(r'"env:(\w+)"', "".join(BLOCKS)))
# Each its own value: an admin.token equal to identity.secret is refused (since 2026-12-05).
ENVIRON = {**ENV, **{name: f"{name}_{'e' * 32}" for name in NAMED}, "EMPTY": "", "NEWLINE": "n" * 40 + "\n"}
BAD: list[Any] = [
    "", " ", "x", "\x00", "\x1b[31m", ["\x1b[31m"], {"\x1b[31m": 1}, "env:", "env:NOT_SET", "env:EMPTY",
    "env:NEWLINE", "a" * 3000, "é",
    0, -1, 1, 2**64, -(2**63) - 1, 2**200, 1e308, -0.0, math.nan, math.inf, -math.inf, 0.5, True,
    [], [1, "a"], ["x"], [{}], [[[]]], {}, {"zz_unknown": 1}, "(", "a{4294967296}", "http://", "1e400",
]  # fmt: skip


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _value(value: Any) -> str:
    """``value`` in TOML; every table inline, so any mutation writes back as one document."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


def _dump(data: dict[str, Any]) -> str:
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in data.items())


def _places(data: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key and array item below the top (tables and arrays themselves included)."""
    found = [path] if path else []
    if isinstance(data, dict):
        for k, v in data.items():
            found += _places(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _places(v, (*path, i))
    return found


BASES = [tomllib.loads(block) for block in BLOCKS]
PLACES = [(i, place) for i, base in enumerate(BASES) for place in _places(base)]


def _mutated(index: int, place: tuple[str | int, ...], bad: Any, beside: bool) -> tuple[dict[str, Any], str]:
    """The config with the mistake made, and the top-level key (the table) it is in."""
    data = copy.deepcopy(BASES[index])
    parent: Any = data
    for part in place[:-1]:
        parent = parent[part]
    if beside and isinstance(parent, dict):  # an unknown key at this level, the value kept
        parent["zz_unknown"] = bad
        return data, str((*place[:-1], "zz_unknown")[0])
    parent[place[-1]] = bad
    return data, str(place[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The configs' folder, with the PEM keys the README's JWT examples name."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "keys").mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for named in sorted(set(re.findall(r'key = "(keys/[^"]+\.pem)"', "".join(BLOCKS)))):
        (folder / named).write_bytes(pem)
    return folder


@settings(
    max_examples=400, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(st.sampled_from(PLACES), st.sampled_from(BAD), st.booleans())
def test_every_key_given_a_wrong_value_is_a_config_error_naming_its_table(
    folder: Path, where: tuple[int, tuple[str | int, ...]], bad: Any, beside: bool
) -> None:
    index, place = where
    data, table = _mutated(index, place, bad, beside)
    text = _dump(data)
    try:
        load_settings(folder / "gateway.toml", text=text, environ=ENVIRON)
    except ConfigError as err:
        top = _key(table)
        assert err.problems
        for problem in err.problems:  # each names a key of the table the mistake is in
            assert problem.startswith(top), (text, problem)
            assert problem.isprintable(), problem  # "\x1b[31m" shown, not sent to the terminal


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[proxy]\naddons = " + "[" * 3000 + "]" * 3000 + "\n", "line 2: nested too deeply"),
        ("[proxy]\nx = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "line 2: nested too deeply"),
        (
            "[proxy]\n" + ".".join(["a"] * 3000) + " = 1\n",
            "proxy.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nested more",
        ),
        ("[proxy]\nworkers = " + "9" * 5000 + "\n", "line 2: a number of thousands of digits"),
        ("[proxy]\nworkers = 0x" + "f" * 5000 + "\n", "proxy.workers: a number of thousands of digits"),
        ('[proxy]\n"" = 1\n', 'proxy."": unknown key (allowed: listen,'),
        ('[proxy]\n"a b" = 1\nc = 2\n', 'proxy."a b": unknown key'),
        ('[""]\n', '"": unknown table'),
    ],
)
def test_text_python_cannot_decode_or_print_is_a_config_error(toml: str, expected: str) -> None:
    """tomllib parses nesting by recursion (RecursionError) and Python refuses to read or print
    a whole number of more than 4300 digits (ValueError): both were tracebacks; an empty key
    was "proxy: object contains unknown field " and named nothing."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ=ENV)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_an_unknown_key_named_empty_does_not_hide_the_next_one() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, text='[proxy]\n"" = 1\nbogus = 2\n', environ=ENV)
    assert [p.partition(":")[0] for p in info.value.problems] == ['proxy.""', "proxy.bogus"]


NOT_UTF8 = "s" * 40 + "\udcff"  # what Python makes of an environment variable holding byte 0xff


@pytest.mark.parametrize(
    ("toml", "variable", "key"),
    [
        ("", "GATEWAY_SECRET", "identity.secret"),
        ("", "GATEWAY_ADMIN_TOKEN", "admin.token"),
        ('[central]\nurl = "env:PG"\n', "PG", "central.url"),
        ('[[sources]]\nname = "shop"\nsecrets = ["env:S"]\n', "S", "sources[0].secrets[0]"),
        ('[[sinks]]\nname = "a"\nkind = "segment"\nurl = "https://api.segment.io"\nsecret = "env:S"\n', "S",
         "sinks[0].secret"),
        ('[[sinks]]\nname = "a"\nkind = "webhook"\nurl = "https://h.example"\nsecret = "env:S"\n', "S",
         "sinks[0].secret"),
        ('[[identity.rules]]\nname = "r"\npath = "/x"\nstatus = [200]\n'
         'user_id = {jwt_cookie = "t", claim = "sub", algorithm = "HS256", key = "env:S"}\n', "S",
         "identity.rules[0].user_id.key"),
    ],
)  # fmt: skip
def test_a_variable_that_is_not_utf8_is_named_by_its_key(toml: str, variable: str, key: str) -> None:
    """Until 2026-12-04: ``UnicodeEncodeError: 'utf-8' codec can't encode character '\\udcff'``."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ={**ENV, variable: NOT_UTF8})
    expected = (
        f"{key}: the value of {variable} is not UTF-8 (byte 0xff at character 41); set it as UTF-8 text"
    )
    assert expected in info.value.problems
    assert not any(NOT_UTF8[:40] in p for p in info.value.problems)  # the secret is never said


def test_an_admin_token_with_a_newline_is_refused() -> None:
    """No Authorization header carries a trailing newline: every request was a 401 and every
    dashboard login "Wrong admin token", with nothing saying why."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text="", environ={**ENV, "GATEWAY_ADMIN_TOKEN": "t" * 40 + "\n"})
    assert any(
        p.startswith("admin.token: the value of GATEWAY_ADMIN_TOKEN starts or ends")
        for p in info.value.problems
    )
    # A command that serves nothing never sends the token: it is not checked there.
    load_settings(None, text="", environ={**ENV, "GATEWAY_ADMIN_TOKEN": "t" * 40 + "\n"}, offline=True)


@pytest.mark.parametrize(
    "toml",
    [
        '[[sources]]\nname = "shop"\nsecrets = ["env:S"]\n',
        '[[sources]]\nname = "shop"\nsecrets = ["env:S"]\nsignature = "stripe"\n',
        '[[sinks]]\nname = "a"\nkind = "webhook"\nurl = "https://h.example"\nsecret = "env:S"\n',
    ],
)
@pytest.mark.parametrize(
    "value", ["whsec_" + "QUJD" * 8 + "\n", "x" * 30 + "\n", " " + "x" * 30, "x" * 15 + "\t" + "x" * 15]
)
def test_a_signing_secret_with_a_newline_is_refused(toml: str, value: str) -> None:
    """A secret read from a file with its newline: no signature verified, and a whsec_ one was
    said to be "not base64"."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ={**ENV, "S": value})
    assert any(
        "the value of S starts or ends with white space or holds control" in p for p in info.value.problems
    )


def gateway(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **ENV, "S": "x" * 30, **env},
        cwd=tmp_path,
        timeout=60,
    )


COMMANDS = [
    ["check"], ["doctor", "--timeout", "0.1"], ["report"], ["reclassify"], ["sync", "--once"],
    ["purge", "--dry-run"], ["erase", "u1", "--dry-run"], ["replay-bad"], ["sink", "send", "--user", "u"],
    ["send-test-event", "--url", "http://127.0.0.1:9/"],
    ["import", "-", "--format", "json-lines", "--dry-run"], ["run"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_names_a_config_behind_a_loop_of_symbolic_links(
    tmp_path: Path, command: list[str]
) -> None:
    """Until 2026-12-04 every command but send-test-event: ``RuntimeError: Symlink loop``."""
    (tmp_path / "gateway.toml").symlink_to(tmp_path / "gateway.toml")
    done = gateway(tmp_path, *command, "-c", "gateway.toml")
    assert "Traceback" not in done.stderr, done.stderr
    assert "gateway.toml: cannot read: Too many levels of symbolic links" in done.stdout + done.stderr
    assert done.returncode == (1 if command[0] == "doctor" else 2)  # doctor: 1 on any failed check


@pytest.mark.parametrize(
    "command",
    [*COMMANDS, ["mirror", "--once"], ["rules", "try", "-"], ["init"]],
    ids=lambda c: " ".join(c[:2]) if c[0] in ("sink", "rules") else c[0],
)
def test_every_command_names_an_empty_config_as_given(tmp_path: Path, command: list[str]) -> None:
    """``-c ""`` (a variable unset in a script's ``-c "$CONFIG"``): the problem and the lines
    about it name it as given. Until 2026-12-07 the header named nothing (``gateway: : 1
    problem(s):``), doctor's fix said ``gateway check -c  lists every problem``, and ``init``
    said ``. is a folder``."""
    done = gateway(tmp_path, *command, "-c", "")
    said = done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "-c/--config: empty; name the" in said, said
    assert "gateway: : " not in said and "-c  " not in said and ". is a folder" not in said, said
    if command[0] == "doctor":
        assert done.returncode == 1 and "fix: name the config file the gateway runs with (-c FILE)" in said
    elif command[0] == "init":
        assert done.returncode == 1 and not list(tmp_path.iterdir()), said  # nothing written
    else:
        assert done.returncode == 2 and done.stderr.startswith('gateway: -c "": 1 problem(s):\n'), said


@pytest.mark.parametrize(
    ("text", "args", "env", "expected"),
    [
        ("", ["check", "-c", ""], {}, "-c/--config: empty; name the config file"),
        ("", ["check"], {"GATEWAY_SECRET": NOT_UTF8}, "identity.secret: the value of GATEWAY_SECRET is not"),
        ("", ["erase", "u1"], {"GATEWAY_SECRET": NOT_UTF8}, "identity.secret: the value of GATEWAY_SECRET"),
        ("[proxy]\nworkers = 0x" + "f" * 5000 + "\n", ["check"], {}, "proxy.workers: a number of thousands"),
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", ["check"], {}, "gateway.toml: line 1: nested too deeply"),
        ("a = " + "[" * 3000 + "]" * 3000 + "\n", ["send-test-event"], {}, "gateway.toml: line 1: nested"),
        ('[[sources]]\nname = "shop"\nsecrets = ["env:S"]\n', ["send-test-event", "--url", "http://127.0.0.1:9/"],
         {"S": "whsec_!!!"}, "sources[0].secrets[0]: S starts with whsec_ but the rest is not base64"),
        ('[[sources]]\nname = "shop"\nsecrets = ["env:S"]\n', ["send-test-event", "--url", "http://127.0.0.1:9/"],
         {"S": NOT_UTF8}, "sources[0].secrets[0]: the value of S is not UTF-8"),
    ],
)  # fmt: skip
def test_commands_name_what_they_cannot_read(
    tmp_path: Path, text: str, args: list[str], env: dict[str, str], expected: str
) -> None:
    """Each of these was a traceback (or, for ``-c ""``, ``.: cannot read: Is a directory``)."""
    (tmp_path / "gateway.toml").write_text(text)
    done = gateway(tmp_path, *args, **env)
    assert "Traceback" not in done.stderr, done.stderr
    assert expected in done.stderr, done.stderr
    assert done.returncode == 2


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[storage]\npath = "pipe"\n', "storage.path: {pipe} is a named pipe, not a file; point"),
        ('[geo]\ncountry_db = "pipe"\n', "geo.country_db: {pipe} is a named pipe, not a file; name the"),
        ('[geo]\nasn_db = "."\n', "geo.asn_db: {dot} is a folder, not a file; name the .mmdb file"),
        ('[[identity.rules]]\nname = "r"\npath = "/x"\nstatus = [200]\n'
         'user_id = {jwt_cookie = "t", claim = "sub", algorithm = "RS256", key = "pipe"}\n',
         "identity.rules[0].user_id.key: pipe is a named pipe, not a file; name the PEM or key set file"),
    ],
)  # fmt: skip
def test_a_named_pipe_where_a_file_belongs_is_a_config_error(
    tmp_path: Path, toml: str, expected: str
) -> None:
    """Opening a named pipe waits for a writer: ``gateway check`` and ``run`` hung on one named
    as a GeoIP database or a PEM key, and ``doctor`` on one named as the store."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "gateway.toml", text=toml, environ=ENV)
    expected = expected.format(pipe=pipe, dot=tmp_path / ".")
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_doctor_says_the_store_is_a_named_pipe_and_stops(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "gw.db")
    (tmp_path / "gateway.toml").write_text('[storage]\npath = "gw.db"\n')
    done = gateway(tmp_path, "doctor", "--timeout", "0.1")  # hung in sqlite3.connect until 2026-12-04
    assert f"storage.path: {tmp_path / 'gw.db'} is a named pipe, not a file" in done.stdout
    assert done.returncode == 1


def test_a_value_of_megabytes_is_named_in_one_short_line() -> None:
    """A file pasted into a value (or as a key) was repeated whole in its problem line."""
    pasted = "Z" * 2_000_000
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=f'[proxy]\nlisten = "{pasted}"\n[storage]\n{pasted} = 1\n', environ=ENV)
    listen, unknown = sorted(info.value.problems)
    assert (
        listen.startswith('proxy.listen: expected "HOST:PORT", got ') and "…(2,000,000 characters)'" in listen
    )
    assert unknown.startswith("storage.ZZZZ") and "…(2,000,008 characters): unknown key (allowed:" in unknown
    assert all(len(p) < 400 for p in info.value.problems)


@pytest.mark.parametrize(
    "toml",
    [
        '[attribution]\nlookback_days = {"\\u001b[31mX" = 1.0}\n',
        '[[identity.rules]]\nname = "r"\npath = "/x"\nstatus = [200]\n'
        'user_id = {jwt_cookie = "t", claim = "sub", algorithm = "RS256", key = "\\u001b[31mX.pem"}\n',
    ],
)
def test_a_control_character_in_a_problem_line_is_escaped(toml: str) -> None:
    """A tier name and a PEM file's path were written raw: an escape sequence recoloured the
    terminal that ran ``gateway check``."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ=ENV)
    assert any("\\x1b[31mX" in p for p in info.value.problems), info.value.problems
    assert all(p.isprintable() for p in info.value.problems)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[proxy]\nlisten = "127.0.0.1:8080', "Unterminated string (at line 2: a string left open)"),
        ("[proxy]\nlisten = '127.0.0.1:8080", "(at line 2: a string left open)"),
        ('[proxy]\nlisten = """a\nb = 1\n', "(at line 2: a string left open)"),
        # A string left open on a line of its own, as an editor leaves it (a newline after it):
        # until 2026-12-07 "Illegal character '\n' (at line 2, column 25)" of a "…" string, and
        # "the file ends where a value was expected" at the last line of a '…' one.
        ('[proxy]\nlisten = "127.0.0.1:8080\n', "(at line 2: a string left open)"),
        ('[proxy]\nlisten = "127.0.0.1:8080\nworkers = 1\n', "(at line 2: a string left open)"),
        ("[proxy]\nlisten = '127.0.0.1:8080\n", "(at line 2: a string left open)"),
        ("[proxy]\nlisten = '127.0.0.1:8080\nworkers = 1\n", "(at line 2: a string left open)"),
        ("[proxy]\nlisten = '127.0.0.1:8080\nnode = 'a'\n", "(at line 2: a string left open)"),
        # Each of these said "a string left open" too, at the last line, where none was.
        (
            '[proxy]\naddons = ["identity",\n  "campaign",\n',
            "(at line 2: an array left open, no ] closes it)",
        ),
        ('[proxy]\naddons = ["a]",  # ]\n  "b",\n', "(at line 2: an array left open, no ] closes it)"),
        ("[proxy]\nworkers =", "(at line 2: the file ends where a value was expected)"),
        ("[log]\nlevel = 'info'\n[proxy", "(at line 3: a table header left open, no ] closes it)"),
        ("[privacy]\nconsent_cookie = {name = 'c'", "(at line 2: an inline table left open, no } closes it)"),
        (
            "[proxy]\nlisten = 127.0.0.1:8080\n",
            'a text value is written in quotes: listen = "127.0.0.1:8080"',
        ),
        ("[storage]\nnode = web-1  # the first\n", 'a text value is written in quotes: node = "web-1"'),
        ("[proxy]\naccess_log = True\n", "true and false are written in lower case, without quotes"),
        # Said "a text value is written in quotes: workers = "= 2"" until 2026-12-06.
        ("[proxy]\nworkers = = 2\n", "one = too many: workers = 2"),
        ("[proxy]\nworkers == 2\n", "one = too many: workers = 2"),
        (
            "[proxy]\nconnect_timeout = 1,5\n",
            "written with a point and a digit before it: connect_timeout = 1.5",
        ),
        (
            "[proxy]\nconnect_timeout = .5\n",
            "written with a point and a digit before it: connect_timeout = 0.5",
        ),
        (
            '[geo]\ncountry_db = "C:\\geo.mmdb"\n',
            "write a backslash as \\\\, or the whole value in single quotes",
        ),
    ],
)
def test_invalid_toml_gives_the_line_and_the_usual_cause(toml: str, expected: str) -> None:
    """A string left open at the end said "(at end of document)", no line (and then an array,
    a table header or an inline table left open was said to be a string); an unquoted text
    value said "Invalid value" or "Expected newline or end of document after a statement"."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=toml, environ=ENV)
    (problem,) = info.value.problems
    assert problem.startswith("config: not valid TOML: ") and expected in problem, problem


def test_a_long_path_is_shown_whole() -> None:
    """Only what no real value is as long as is cut: a path of 300 characters is named whole."""
    path = "/" + "y" * 300 + "/gw.db"
    with pytest.raises(ConfigError) as info:
        load_settings(None, text=f'[storage]\npath = "{path}"\n', environ=ENV)
    assert info.value.problems == [f"storage.path: cannot use {path}: File name too long"]


@pytest.mark.parametrize(
    ("proxy", "admin", "refused"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080", True),
        ("0.0.0.0:8080", "127.0.0.1:8080", True),
        ("[::]:8080", "10.0.0.5:8080", True),
        ("127.0.0.1:8080", "localhost:8080", True),
        ("127.0.0.1:8080", "127.0.0.1:9090", False),
        ("127.0.0.1:8080", "10.0.0.5:8080", False),  # two interfaces: two sockets
        ("127.0.0.1:0", "127.0.0.1:0", False),  # each a free port
    ],
)
def test_the_admin_api_on_the_proxys_address_is_a_config_error(proxy: str, admin: str, refused: bool) -> None:
    """Found only by ``gateway run``, as "cannot listen on … (admin.listen): Address already in
    use", when the one holding it was the gateway's own proxy."""
    toml = f'[proxy]\nlisten = "{proxy}"\n[admin]\nlisten = "{admin}"\n'
    try:
        load_settings(None, text=toml, environ=ENV, admin_public=True)
        found: list[str] = []
    except ConfigError as err:
        found = err.problems
    said = f"admin.listen: {admin!r} is the address of proxy.listen ({proxy!r}); the admin API needs a port"
    assert any(p.startswith(said) for p in found) == refused, found


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[storage]\npath = "env:GATEWAY_DB"\n', "storage.path"),
        ('[storage]\npath = "ENV:GATEWAY_DB"\n', "storage.path"),
        ('[central]\nurl = "env:CENTRAL"\nmirror_path = "env:GATEWAY_DB"\n', "central.mirror_path"),
    ],
)
def test_a_store_path_written_as_an_environment_variable_is_a_config_error(
    tmp_path: Path, toml: str, key: str
) -> None:
    """Secrets and URLs read ``"env:NAME"``; a file path does not. ``storage.path =
    "env:GATEWAY_DB"``, written as the secrets beside it are, made a store in the working folder
    named ``env:GATEWAY_DB``, whatever the variable said, and ``gateway check`` passed it: the
    events went to a file nobody backed up. Now a config error naming the key, the variable and
    what to write; a file so named that is there already (a gateway that ran so) is still used."""
    (tmp_path / "gateway.toml").write_text(toml)
    done = gateway(tmp_path, "check", GATEWAY_DB="/var/lib/gateway/gateway.db", CENTRAL="postgresql://u@h/db")
    written = re.search(r'"(env:GATEWAY_DB|ENV:GATEWAY_DB)"', toml)[1]  # type: ignore[index]
    assert (
        f'{key}: "{written}" is read as a file of that name, not from the environment (only secrets'
        " and URLs read env:NAME); write the path itself"
    ) in done.stderr, done.stderr
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "gateway.toml"]
    # A file of that name is there: a gateway ran on it, and goes on doing so.
    (tmp_path / written).touch()
    done = gateway(tmp_path, "check", GATEWAY_DB="/var/lib/gateway/gateway.db", CENTRAL="postgresql://u@h/db")
    assert "is read as a file of that name" not in done.stderr, done.stderr
