"""The README's "Guarantees" section names the tests that hold each promise: every name must
exist, so a renamed or deleted test cannot leave a promise claimed but unguarded. And what a
new user copies from the README holds mechanically: the admin endpoint table is the router (and
the OpenAPI document covers it), the defaults the reference summarises are the code's, each
number's stated range is the one `gateway check` enforces, what a reload keeps is said to need a
restart, the shell examples' command lines parse, links resolve. (Options' literal defaults,
the metrics table and the command reference are checked beside their code:
tests/gateway/test_config.py, test_metrics.py, test_cli.py.)"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def guarantees_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Guarantees\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_named_test_exists() -> None:
    named = NAMED.findall(guarantees_section())
    assert len(named) >= 40, "the section lost its test names"
    missing = [
        f"{file}::{name}"
        for file, name in named
        if not (ROOT / file).is_file() or name not in defined_tests(ROOT / file)
    ]
    assert missing == []


def test_the_check_notices_a_missing_name() -> None:
    assert "test_no_such_test" not in defined_tests(ROOT / "tests" / "test_readme_guarantees.py")
    assert NAMED.findall("`tests/a.py::test_b`") == [("tests/a.py", "test_b")]


# The Admin API reference's endpoint table against the admin listener's router: every route the
# gateway serves is listed, and every endpoint listed is served (with the method written).
ENDPOINT_CELL = re.compile(r"^\| (`(?:GET|POST|PUT|DELETE) .*?) \| ", re.MULTILINE)


def readme_endpoints(text: str) -> set[tuple[str, str]]:
    """(method, path) of each endpoint the table's first column names; a path's parameters as
    ``{}``. A cell may list several: `GET /`, `/dashboard`; `POST /login` (a path without a
    method takes the one before it); `/static/…` is a parameter too."""
    start = text.index("\n## Admin API reference\n")
    section = text[start : text.index("\n### ", start)]
    found: set[tuple[str, str]] = set()
    for cell in ENDPOINT_CELL.findall(section):
        method = ""
        for item in re.findall(r"`([^`]+)`", cell):
            words = item.split()
            if len(words) == 2:
                method, path = words
            else:
                (path,) = words
            found.add((method, re.sub(r"\{[^}]*\}|…", "{}", path)))
    return found


def served_endpoints(tmp_path: Path) -> set[tuple[str, str]]:
    from gateway.server import create_gateway
    from tests.conftest import make_settings

    gateway = create_gateway(make_settings(tmp_path), "http://127.0.0.1:9")  # nothing is opened
    return {
        (route.method, re.sub(r"\{[^}]*\}", "{}", route.resource.canonical))
        for route in gateway.admin_app.router.routes()
        if route.resource is not None and route.method != "HEAD"  # aiohttp adds HEAD to each GET
    }


def test_admin_api_reference_lists_every_route(tmp_path: Path) -> None:
    listed = readme_endpoints((ROOT / "README.md").read_text(encoding="utf-8"))
    served = served_endpoints(tmp_path)
    assert len(served) > 25
    assert {"unlisted": served - listed, "not served": listed - served} == {
        "unlisted": set(),
        "not served": set(),
    }


def test_the_endpoint_check_reads_every_form_of_a_cell() -> None:
    table = (
        "\n## Admin API reference\n\n| endpoint | auth | answers |\n|---|---|---|\n"
        "| `GET /a/{id}` | yes | x |\n| `GET /`, `/b`; `POST /c`; `GET /static/…` | no | y |\n\n### Next\n"
    )
    assert readme_endpoints(table) == {
        ("GET", "/a/{}"),
        ("GET", "/"),
        ("GET", "/b"),
        ("POST", "/c"),
        ("GET", "/static/{}"),
    }


def test_doctor_example_shows_the_current_schema() -> None:
    """The `gateway doctor` checklist in the README shows the store at the schema this
    gateway migrates to, `(current)`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"writable, schema (\d+) \(current\)", text)
    latest = max(
        int(p.name[:4]) for p in (ROOT / "storage" / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql")
    )
    assert shown and {int(n) for n in shown} == {latest}


def reference_rows(text: str, section: str) -> dict[str, str]:
    """`section.key` → its default cell, from the Configuration reference's tables."""
    start = text.index("\n## Configuration reference\n")
    reference = text[start : text.index("\n## ", start + 1)]
    rows = re.findall(rf"^\| `{section}\.(\w+)` \| (.+?) \| ", reference, re.MULTILINE)
    return dict(rows)


def test_entry_tables_defaults_are_the_options_defaults() -> None:
    """The `[[sources]]` and `[[sinks]]` tables give each key's default as the entry's type has
    it, and `(required)` for exactly the keys without one (tests/gateway/test_config.py checks
    the plain tables' literal defaults; these are entries, with no default instance)."""
    import tomllib

    import msgspec

    from gateway.options import SinkOptions, SourceOptions

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for section, struct in (("sources", SourceOptions), ("sinks", SinkOptions)):
        rows = reference_rows(text, section)
        fields = msgspec.structs.fields(struct)
        assert set(rows) == {field.name for field in fields}, section
        for field in fields:
            cell = rows[field.name]
            assert (cell == "(required)") == field.required, f"{section}.{field.name}"
            if cell.startswith("`") and cell.endswith("`") and cell.count("`") == 2:
                default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
                value = tomllib.loads("v = " + cell.strip("`"))["v"]
                assert value == msgspec.json.decode(msgspec.json.encode(default)), f"{section}.{field.name}"


def test_summarised_defaults_are_the_options_defaults() -> None:
    """The defaults the reference summarises (a list's ends and length, the weights table)."""
    from gateway.options import Options

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    options = Options()
    crawlers = options.bots.good_crawlers
    assert reference_rows(text, "bots")["good_crawlers"].startswith(
        f"{crawlers[0]} … {crawlers[-1]} ({len(crawlers)} substrings"
    )
    assert f"({len(options.bots.datacenter_asns)} ASNs)" in reference_rows(text, "bots")["datacenter_asns"]
    clicks = options.campaign.click_ids
    assert reference_rows(text, "campaign")["click_ids"] == f"{clicks[0]} … {clicks[-1]}"
    tiers = "; ".join(
        f"{tier}: " + ", ".join(f"`{p}`" for p in patterns)
        for tier, patterns in options.attribution.tier_patterns.items()
    )
    assert reference_rows(text, "attribution")["tier_patterns"] == tiers
    start = text.index("\n### Signals and weights\n")
    table = text[start : text.index("\n### ", start + 1)]
    weights = {
        name: int(weight) for name, weight in re.findall(r"^\| `(\w+)` \| (\d+) \| ", table, re.MULTILINE)
    }
    assert weights == {
        name: getattr(options.bots.weights, name) for name in options.bots.weights.__struct_fields__
    }


def readme_command_lines(text: str) -> list[str]:
    """The `gateway …` command lines of the README's ```sh blocks, as a user would paste them:
    continuation lines joined, comments and a leading pipe stage (`zcat … |`) left out. A usage
    synopsis (`[-c FILE]`) is not a command line."""
    lines = []
    for block in re.findall(r"^```(?:sh|console)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line.removeprefix("$ ")).strip()
            line = line.rsplit("| ", 1)[-1]
            if re.match(r"(\S*/)?gateway ", line) and "[" not in line:
                lines.append(line)
    return lines


def test_readme_command_lines_parse() -> None:
    """Every `gateway …` line of the README's shell examples is a command line the CLI takes:
    the command exists, each option exists and has its value (`gateway --help` would say)."""
    import contextlib
    import io
    import shlex

    from gateway.cli import build_parser

    lines = readme_command_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(lines) >= 15
    refused = {}
    for line in lines:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                build_parser().parse_args(shlex.split(line)[1:])
        except SystemExit as exit_:
            if exit_.code:
                refused[line] = stderr.getvalue().strip()
    assert refused == {}


def test_the_command_line_check_notices_a_wrong_option() -> None:
    block = "```sh\nzcat a.gz | gateway import - --format combined  # x\ngateway nope --x\n```\n"
    assert readme_command_lines(block) == ["gateway import - --format combined", "gateway nope --x"]


def test_central_section_names_every_synced_table() -> None:
    """The first paragraph of "Central store and sync" names every table the sync delivers
    (`gateway sync --once` prints one line per table), and no table it does not."""
    from storage.sync import COUNTS, SYNC_TABLES

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Central store and sync\n")
    paragraph = text[start : text.index("\n\n", start + len("\n## Central store and sync\n") + 1)]
    named = set(re.findall(r"`([a-z_]+)`", paragraph)) - {"central.url"}
    assert named == {*SYNC_TABLES, COUNTS}


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown text's headings (code blocks left out)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", prose, re.MULTILINE)
    }


def test_readme_links_resolve() -> None:
    """Every `[…](#anchor)`, `[…](path)` and `[…](path.md#anchor)` of the README leads somewhere:
    a renamed heading or a moved file would leave the reader at the top of the page, or at a 404."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else ROOT / "README.md"
        if not file.exists() or (anchor and anchor not in heading_anchors(file.read_text(encoding="utf-8"))):
            broken.append(target)
    assert broken == []


def test_heading_anchors_as_github_writes_them() -> None:
    text = "## Privacy: what is stored\n```\n# not a heading\n```\n#### `gateway doctor`\n"
    assert heading_anchors(text) == {"privacy-what-is-stored", "gateway-doctor"}


def test_every_test_named_elsewhere_exists() -> None:
    """Outside "Guarantees" too, a test the README names as holding a promise (Workers names
    one) exists, and so does every test file it names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [
        f"{file}::{name}"
        for file, name in NAMED.findall(text)
        if not (ROOT / file).is_file() or name not in defined_tests(ROOT / file)
    ]
    missing += [file for file in re.findall(r"`(tests/[\w/]+\.py)`", text) if not (ROOT / file).is_file()]
    assert missing == []


def test_openapi_document_describes_every_api_route(tmp_path: Path) -> None:
    """The OpenAPI document the README points to (`GET /api/openapi.json`) has an operation for
    every route of the admin listener but the dashboard's pages and files (the tab's icon
    among them), and none besides."""
    from gateway.openapi import openapi_document

    pages = {"/", "/dashboard", "/login", "/logout", "/static/{}", "/favicon.ico"}
    served = {(method, path) for method, path in served_endpoints(tmp_path) if path not in pages}
    documented = {
        (method.upper(), re.sub(r"\{[^}]*\}", "{}", path))
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert {"undocumented": served - documented, "not served": documented - served} == {
        "undocumented": set(),
        "not served": set(),
    }


def test_touchpoint_example_is_the_documented_object() -> None:
    """The Admin API reference's touchpoint object has exactly the fields of the OpenAPI
    document's `Touchpoint`, each of the type that schema gives it."""
    import json

    from jsonschema import Draft202012Validator

    from gateway.openapi import openapi_document

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("A touchpoint object:\n\n```json\n") + len("A touchpoint object:\n\n```json\n")
    example = json.loads(text[start : text.index("```", start)])
    schemas = openapi_document()["components"]["schemas"]
    touchpoint = json.loads(json.dumps(schemas["Touchpoint"]).replace("#/components/schemas/", "#/$defs/"))
    assert set(example) == set(touchpoint["properties"])
    Draft202012Validator({**touchpoint, "$defs": schemas}).validate(example)


def test_report_parameters_table_is_what_the_endpoints_take() -> None:
    """The "Report endpoints" table names every query parameter the attribution, timeseries,
    paths and payouts endpoints take, and none they refuse (an unknown parameter is a 400)."""
    from gateway.reportapi import PARAMS

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Report endpoints\n")
    table = text[start : text.index("\n\n", text.index("| parameter |", start))]
    listed = {
        name
        for cell in re.findall(r"^\| (`.*?) \| ", table, re.MULTILINE)
        for name in re.findall(r"`(\w+)`", cell)
    }
    taken = set().union(*(PARAMS[report] for report in ("attribution", "timeseries", "paths", "payouts")))
    assert listed == taken


def test_the_contents_line_lists_every_section() -> None:
    """The README's first screen names each of its sections, in order: a section added or renamed
    without it would be found only by scrolling 6,000 lines."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    sections = re.findall(r"^## (.+)$", prose, flags=re.MULTILINE)
    contents = next(line for line in text.splitlines() if line.startswith("**Contents:** "))
    assert re.findall(r"\[([^\]]+)\]\(#", contents) == sections


# What a README TOML block may still lack when copied alone: the secret or key file it names.
ENVIRONMENT_ONLY = re.compile(
    r"environment variable \w+ is not set|cannot read .*: No such file or directory"
)


def readme_toml_blocks(text: str) -> dict[int, str]:
    """Each ```toml block of a Markdown text, by the line its fence opens on."""
    return {
        text.count("\n", 0, match.start()) + 1: match.group(1)
        for match in re.finditer(r"^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    }


def toml_problems(block: str, tmp_path: Path) -> list[str]:
    """What `gateway check --dev` says of a block pasted as a whole config, but for an
    environment variable or key file the operator provides."""
    from gateway.config import ConfigError, load_settings

    try:
        load_settings(tmp_path / "gateway.toml", text=block, environ={}, dev=True)
    except ConfigError as error:
        return [p for p in error.problems if not ENVIRONMENT_ONLY.search(p)]
    return []


def test_every_readme_toml_block_loads(tmp_path: Path) -> None:
    """Every ```toml block of the README is a config the gateway takes, as the operator pastes
    it: no key renamed or removed since, no value out of range, no rule that no longer parses."""
    blocks = readme_toml_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 25
    refused = {
        line: problems for line, block in blocks.items() if (problems := toml_problems(block, tmp_path))
    }
    assert refused == {}


def test_the_toml_check_notices_a_wrong_key(tmp_path: Path) -> None:
    text = (
        '```toml\n[proxy]\nupstrem = "http://127.0.0.1:8000"\n```\n'
        '```toml\n[identity]\nsecret = "env:X"\n```\n'
    )
    blocks = readme_toml_blocks(text)
    assert list(blocks) == [1, 5]
    assert toml_problems(blocks[1], tmp_path) != []
    assert toml_problems(blocks[5], tmp_path) == []


def test_dashboard_summary_parts_are_the_documented_ones() -> None:
    """The Admin API reference says what each `part` of `/api/dashboard/summary` answers
    (`counts` (`conversion_names`, …)): the names the OpenAPI document requires of it, each one.
    (It left `not_credited` out of `counts` until 2026-12-06.)"""
    from gateway.openapi import openapi_document

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `GET /api/dashboard/summary` |"))
    parts = row[row.index("`part=counts|daily|models`") :]
    listed = {
        part: re.findall(r"`(\w+)`", names)
        for part, names in re.findall(r"`(counts|daily|models)` \(((?:`\w+`(?:, )?)+)\)", parts)
    }
    operation = openapi_document()["paths"]["/api/dashboard/summary"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    documented = {
        part: choice["required"]
        for part, choice in zip(("counts", "daily", "models"), schema["anyOf"], strict=True)
    }
    assert listed == documented


# The least each command needs to reach its config (the first required argument of each).
MINIMAL_ARGS = {
    "run": [],
    "check": [],
    "import": ["access.log", "--format", "combined"],
    "replay-bad": [],
    "send-test-event": [],
    "reclassify": [],
    "sync": ["--once"],
    "mirror": ["--once"],
    "sink send": ["--user", "u1"],
    "report": [],
    "purge": [],
    "erase": ["u1"],
    "rules try": ["session.har"],
}


def _commands_with_config(parser: argparse.ArgumentParser) -> set[str]:
    """Every command (``sink send``, ``rules try``: a subcommand by its path) taking ``-c``."""
    found = set()

    def walk(node: argparse.ArgumentParser, path: list[str]) -> None:
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*path, name])
            elif "-c" in action.option_strings and path:
                found.add(" ".join(path))

    walk(parser, [])
    return found


def test_every_command_says_how_to_get_a_missing_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Command-line reference: "A config file not there is followed by how to get one", for
    every command that takes -c (`gateway init` writes it; `gateway doctor` says it in its own
    checklist). `gateway report` printed the error alone until 2026-12-07."""
    import contextlib
    import io

    from gateway.cli import build_parser, main

    assert _commands_with_config(build_parser()) - {"init", "doctor"} == set(MINIMAL_ARGS)
    monkeypatch.chdir(tmp_path)
    config = str(tmp_path / "nowhere" / "gateway.toml")
    hint = (
        f"gateway: no config file at {config}: write a starter one with `gateway init -c {config}`,"
        " or name yours with -c FILE\n"
    )
    silent = {}
    for command, args in MINIMAL_ARGS.items():
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main([*command.split(), *args, "-c", config])
        if (code, stderr.getvalue()[-len(hint) :]) != (2, hint):
            silent[command] = (code, stderr.getvalue())
    assert silent == {}


# The range of a number as the Configuration reference's rows state it: `1..720`, `0 or
# 64..1048576`, `` `0`: never; otherwise 1..3600 ``, `more than 0, at most 3600`, `0 < s ≤ 3600`,
# `0 or more`, `review_threshold..100`, `at least one second (`0.0000116`), at most 36500`.
STATED_RANGE = re.compile(
    r"(?P<zero>0 or |`0`: \w+; otherwise )?(?P<lo>\d+(?:\.\d+)?)\.\.(?P<hi>\d+(?:\.\d+)?)"
    r"|more than 0, at most (?P<most>\d+)|0 < s ≤ (?P<le>\d+)|(?P<least>\d+) or more"
    r"|review_threshold\.\.(?P<rhi>\d+)|at least [^(]*\(`(?P<alo>[\d.]+)`\), at most (?P<ahi>\d+)"
)
# A bound another key shares (`first + last ≤ 1`, `backoff_min ≤ backoff_max`): that key is set
# out of the way while this one's is tried.
RANGE_COMPANIONS = {
    "attribution.position_last": "position_first = 0.0",
    "central.backoff_min_seconds": "backoff_max_seconds = 86400.0",
    "central.backoff_max_seconds": "backoff_min_seconds = 0.001",
}


def refused(section: str, key: str, value: float, tmp_path: Path) -> bool:
    """Whether a config of ``section.key = value`` alone is refused by a problem naming the key."""
    from gateway.config import ConfigError, load_settings
    from tests.conftest import ENV

    companion = RANGE_COMPANIONS.get(f"{section}.{key}", "")
    text = f"[{section}]\n{key} = {value!r}\n{companion}\n"
    try:
        load_settings(tmp_path / "gateway.toml", text=text, environ=ENV)
    except ConfigError as error:
        return any(problem.startswith(f"{section}.{key}:") for problem in error.problems)
    return False


def range_holds(section: str, key: str, kind: type, stated: re.Match[str], tmp_path: Path) -> bool:
    """The stated range is the one the config's checks enforce: its ends are taken, and what is
    just past them (1, or 0.5 of a float) refused, naming the key."""
    from gateway.options import Options

    past: float = 1 if kind is int else 0.5
    g = stated.groupdict()
    if g["most"] or g["le"]:
        most = kind(g["most"] or g["le"])
        taken, refused_ = [most, kind(1) if kind is int else 0.001], [0, most + past]
    elif g["least"]:
        taken, refused_ = [kind(g["least"]), 10**12], [kind(g["least"]) - past]
    elif g["rhi"]:
        low = getattr(Options(), section).review_threshold
        taken, refused_ = [low, kind(g["rhi"])], [low - past, kind(g["rhi"]) + past]
    elif g["alo"]:
        taken, refused_ = [float(g["alo"]), kind(g["ahi"])], [float(g["alo"]) / 2, kind(g["ahi"]) + past]
    else:
        low, high = kind(float(g["lo"])), kind(float(g["hi"]))
        taken, refused_ = [low, high], [high + past]
        if g["zero"]:  # 0, or low..high
            taken.append(kind(0))
            refused_ += [-past] + ([low - past] if low - past > 0 else [])
        else:  # and 0 too, when below: `64..1048576` is not `0 or 64..1048576`
            refused_ += [low - past] + ([0] if low > past else [])
    return all(not refused(section, key, v, tmp_path) for v in taken) and all(
        refused(section, key, v, tmp_path) for v in refused_
    )


def numeric_rows(text: str) -> dict[tuple[str, str], tuple[type, str]]:
    """(section, key) → (its type, its meaning cell) for each number of a plain table."""
    from gateway.options import SECTIONS, Options

    start = text.index("\n## Configuration reference\n")
    reference = text[start : text.index("\n## ", start + 1)]
    found = {}
    for section, key, meaning in re.findall(
        r"^\| `(\w+)\.(\w+)` \| .+? \| (.*) \|$", reference, re.MULTILINE
    ):
        value = getattr(getattr(Options(), section), key) if section in SECTIONS else None
        if type(value) in (int, float):
            found[(section, key)] = (type(value), meaning)
    return found


def test_every_number_states_the_range_its_check_enforces(tmp_path: Path) -> None:
    """Each number of the Configuration reference's tables says what it may be, and that is what
    `gateway check` takes: until 2026-12-07 `proxy.workers` (0..256), `proxy.upstream_connections`,
    `proxy.max_header_size`, `proxy.max_websocket_message`, `webhooks.max_body` and
    `webhooks.bad_body_limit` refused values their rows gave no bound for."""
    rows = numeric_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(rows) > 45
    wrong = {
        f"{section}.{key}": [m.group(0) for m in STATED_RANGE.finditer(meaning)]
        for (section, key), (kind, meaning) in rows.items()
        if not any(range_holds(section, key, kind, m, tmp_path) for m in STATED_RANGE.finditer(meaning))
    }
    assert wrong == {}


def test_the_range_check_notices_a_wrong_or_missing_bound(tmp_path: Path) -> None:
    def holds(section: str, key: str, kind: type, cell: str) -> bool:
        return any(range_holds(section, key, kind, m, tmp_path) for m in STATED_RANGE.finditer(cell))

    assert holds("proxy", "workers", int, "processes, 0..256; `0`: one per core")
    assert not holds("proxy", "workers", int, "processes, 0..255")
    assert not holds("proxy", "workers", int, "processes, 1..256")
    assert not holds("proxy", "workers", int, "processes; `0`: one per core")
    assert holds("proxy", "connect_timeout", float, "more than 0, at most 3600")
    assert not holds("proxy", "connect_timeout", float, "more than 0, at most 600")
    assert holds("admin", "report_worker_memory_mb", int, "`0` never; 0 or 64..1048576")
    assert not holds("admin", "report_worker_memory_mb", int, "64..1048576")
    assert holds("proxy", "worker_hang_seconds", float, "`0`: never; otherwise 1..3600")
    assert holds("bots", "block_threshold", int, "(review_threshold..100)")
    assert holds("attribution", "position_last", float, "(0..1; first + last ≤ 1)")


def reference_parts(text: str) -> dict[str, str]:
    """Each table's part of the Configuration reference (`proxy`, `sources`…), heading to heading."""
    start = text.index("\n## Configuration reference\n")
    reference = text[start : text.index("\n## ", start + 1)]
    return dict(re.findall(r"^### `\[\[?(\w+)\]\]?`\n(.*?)(?=^### |\Z)", reference, re.MULTILINE | re.DOTALL))


def restart_unsaid(text: str) -> list[str]:
    """The keys a reload keeps (gateway/reload.py's ``RESTART_KEYS``) whose row, or whose table's
    words above its rows, does not say so; a key a reload applies in such a table (`admin.hosts`)
    whose row does not say that; and a row saying "needs a restart" of a key a reload applies."""
    from gateway.reload import LIVE_IN_RESTART_TABLES, RESTART_KEYS

    wrong = []
    for section, part in reference_parts(text).items():
        intro = part.split("\n| key |", 1)[0]
        rows = dict(re.findall(rf"^\| `{section}\.(\w+)` \| .+? \| (.*) \|$", part, re.MULTILINE))
        for key, meaning in rows.items():
            kept = section in RESTART_KEYS or f"{section}.{key}" in RESTART_KEYS
            if key in LIVE_IN_RESTART_TABLES.get(section, ()):
                if "reload applies" not in meaning:
                    wrong.append(f"{section}.{key}: applied by a reload, unsaid")
            elif kept and "restart" not in meaning and "restart" not in intro:
                wrong.append(f"{section}.{key}: needs a restart, unsaid")
            elif not kept and "needs a restart" in meaning:
                wrong.append(f"{section}.{key}: said to need a restart, which a reload applies")
        if section in RESTART_KEYS and not rows and "needs a restart" not in intro:  # [[creators]]
            wrong.append(f"{section}: needs a restart, unsaid")
    return wrong


def test_the_reference_says_what_needs_a_restart() -> None:
    """What a reload keeps, logging `reload: proxy.connect_timeout needs a restart; the running value
    is kept`, the Configuration reference says: until 2026-12-07 the [proxy] table said it of
    `proxy.upstream` and eight others, but not of `proxy.connect_timeout`, `read_timeout`,
    `upstream_connections` or `max_header_size`, nor of `[admin]`, `[storage]`, `[central]`,
    `[[sources]]`, `[[sinks]]`, `[[creators]]` or `log.format`: only the Signals section listed them."""
    assert restart_unsaid((ROOT / "README.md").read_text(encoding="utf-8")) == []


def test_the_restart_check_notices_an_unsaid_restart() -> None:
    head = "\n## Configuration reference\n\n"
    table = "\n\n| key | default | meaning |\n|---|---|---|\n"
    tail = "\n\n## Next\n"
    assert restart_unsaid(f'{head}### `[proxy]`{table}| `proxy.upstream` | `""` | the site |{tail}') == [
        "proxy.upstream: needs a restart, unsaid"
    ]
    assert (
        restart_unsaid(
            f'{head}### `[proxy]`{table}| `proxy.upstream` | `""` | the site; needs a restart |{tail}'
        )
        == []
    )
    assert restart_unsaid(
        f'{head}### `[proxy]`{table}| `proxy.strip` | `"forward"` | how; needs a restart |{tail}'
    ) == ["proxy.strip: said to need a restart, which a reload applies"]
    admin = f"{head}### `[admin]`\n\nAny key but hosts needs a restart.{table}"
    admin += f"| `admin.hosts` | `[]` | names |{tail}"
    assert restart_unsaid(admin) == ["admin.hosts: applied by a reload, unsaid"]
    assert restart_unsaid(f"{head}### `[[creators]]`\n\nThe registry.{tail}") == [
        "creators: needs a restart, unsaid"
    ]


def test_the_rules_given_twice_example_is_what_check_says_of_the_starter_config() -> None:
    """The Rule keys section quotes what `gateway check` says when the starter config's first
    `[[identity.rules]]` example is uncommented where it stands, its `rules = []` left in: the
    line numbers are those of the file `gateway init` writes (until 2026-12-08 the README said
    `line 457 … delete line 81`, lines of no such file)."""
    from gateway.config import ConfigError, load_settings

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    quoted = re.search(
        r"``(line \d+: identity\.rules is given twice; delete line \d+ \(`rules = \[\]`\) [^`]*)``", readme
    )
    assert quoted, "the Rule keys section no longer quotes the message"
    lines = (ROOT / "gateway.toml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [[identity.rules]]"))
    end = next(i for i in range(start, len(lines)) if lines[i] == "#")
    edited = lines[:start] + [re.sub(r"^# ?", "", line, count=1) for line in lines[start:end]] + lines[end:]
    with pytest.raises(ConfigError) as raised:
        load_settings(None, text="\n".join(edited), environ={}, dev=True)
    assert len(raised.value.problems) == 1
    said = raised.value.problems[0]
    assert said.endswith(": " + quoted.group(1)), (said, quoted.group(1))
