"""Every ``gateway`` command, as its parser lists them, run as a subprocess with bad input: an
unknown option, a config not there, a config with a wrong key, a bad value for each option that
checks its values, a store that cannot be one. Each must exit non-zero with a line that names
the mistake, and never print a traceback. New commands and options are covered as they appear."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.cli import build_parser
from tests.conftest import ENV

ROOT = Path(__file__).resolve().parents[2]
HIDDEN_FROM_OPERATORS = {"--worker", "--listen", "--admin-listen"}
"""``run``'s options for its own workers: refused as a whole, tested in test_cli.py."""
BAD_VALUES = ("²", "9" * 30)
"""A digit that is not ASCII (``str.isdigit`` takes it, ``int`` does not) and a number past
every bound, SQLite's 64-bit integers included."""


def _leaves(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    found: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _leaves(sub, (*words, name))
    return found or {words: parser}


COMMANDS = _leaves(build_parser())


ONE_OF = {("erase",): ["u1"], ("import",): ["u1", "--format", "combined"]}
"""What a command needs beyond what its parser requires: ``erase`` one of USER_ID and --visitor;
``import`` a FILE and its --format (both said before the config is read since 2026-12-08)."""


def _required(words: tuple[str, ...]) -> list[str]:
    """Arguments that get the command past its parser: each required option and positional."""
    parser = COMMANDS[words]
    argv: list[str] = list(ONE_OF.get(words, []))
    for action in parser._actions:
        if action.option_strings and action.required:
            argv += [action.option_strings[-1]] + ([] if action.nargs == 0 else ["u1"])
        elif not action.option_strings and action.nargs not in ("*", "?", argparse.REMAINDER):
            argv.append("u1")
    return argv


def _reads_config(parser: argparse.ArgumentParser) -> bool:
    return any("--config" in action.option_strings for action in parser._actions)


def _checked_options() -> list[tuple[tuple[str, ...], str]]:
    """Every option whose value is checked by a function of ours (``type=``)."""
    return [
        (words, action.option_strings[-1])
        for words, parser in COMMANDS.items()
        for action in parser._actions
        if action.option_strings
        and callable(action.type)
        and action.type not in (str, int)
        and not HIDDEN_FROM_OPERATORS & set(action.option_strings)
    ]


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **ENV}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def _refused(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 0, done
    # A message, not a silent exit (``doctor`` prints its checklist, the failure in it, on stdout).
    assert done.stderr.strip() or done.stdout.strip(), done


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with a valid config (``gw.toml``) and its store (``gw.db``), which holds rows."""
    from gateway.metrics import Metrics
    from gateway.options import StorageOptions
    from storage.local import LocalStore
    from tests.gateway.test_reports_api import EVENTS

    async def fill() -> None:
        store = LocalStore(tmp_path / "gw.db", StorageOptions(), Metrics())
        await store.open()
        await store.write(EVENTS)
        await store.close()

    asyncio.run(fill())
    (tmp_path / "gw.toml").write_text(
        "[proxy]\nupstream = 'http://127.0.0.1:9'\nlisten = '127.0.0.1:9'\n"
        "[admin]\nlisten = '127.0.0.1:0'\n[storage]\npath = 'gw.db'\n"
    )
    return tmp_path


def test_the_commands_are_found() -> None:
    """The enumeration below sees every command, the nested ones too."""
    assert {("report",), ("import",), ("sink", "send"), ("rules", "try"), ("erase",)} <= set(COMMANDS)


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_an_unknown_option_is_refused(words: tuple[str, ...], tmp_path: Path) -> None:
    done = gateway(*words, *_required(words), "--no-such-option", cwd=tmp_path)
    _refused(done)
    assert "--no-such-option" in done.stderr


@pytest.mark.parametrize("words", [w for w, p in COMMANDS.items() if _reads_config(p)], ids=" ".join)
def test_a_config_not_there_is_named(words: tuple[str, ...], tmp_path: Path) -> None:
    if words == ("init",):  # it writes the file: there, it is refused
        (tmp_path / "there.toml").write_text("")
        done = gateway("init", "-c", "there.toml", cwd=tmp_path)
        _refused(done)
        assert "there.toml exists" in done.stderr
        return
    done = gateway(*words, *_required(words), "-c", "absent.toml", cwd=tmp_path)
    _refused(done)
    assert "absent.toml" in done.stderr + done.stdout


@pytest.mark.parametrize(
    "words", [w for w, p in COMMANDS.items() if _reads_config(p) and w != ("init",)], ids=" ".join
)
def test_a_config_error_names_its_key(words: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[storage]\npath = 'gw.db'\nbatch_rowz = 5\n")
    done = gateway(*words, *_required(words), "-c", "bad.toml", cwd=tmp_path)
    _refused(done)
    assert "storage.batch_rowz" in done.stderr + done.stdout


@pytest.mark.parametrize("value", BAD_VALUES, ids=("superscript", "huge"))
@pytest.mark.parametrize(
    ("words", "option"), _checked_options(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
def test_a_bad_value_is_named_by_its_option(
    words: tuple[str, ...], option: str, value: str, site: Path
) -> None:
    """On a valid config and store, so that a value the parser lets through meets them."""
    done = gateway(*words, *_required(words), option, value, "-c", "gw.toml", cwd=site)
    _refused(done)
    if "error: argument" in done.stderr:  # the parser refused it: by its option
        assert f"error: argument {option}" in done.stderr, done.stderr
    assert "invalid _" not in done.stderr  # argparse naming our function: "invalid _workers value"


@pytest.mark.parametrize("argv", [("import", "--list"), ("import", "--undo", "1")], ids=" ".join)
@pytest.mark.parametrize("store", ["absent.db", "folder"])
def test_import_runs_of_a_store_that_is_not_there_say_so(
    argv: tuple[str, ...], store: str, site: Path
) -> None:
    """``--list`` said "no import run recorded in the store …" of a typo'd storage.path, exit 0,
    and of a folder "disk I/O error"; every other command says there is no store there."""
    (site / "folder").mkdir()
    (site / "other.toml").write_text(f"[storage]\npath = '{store}'\n")
    done = gateway(*argv, "-c", "other.toml", cwd=site)
    _refused(done)
    assert f"{site / store} (storage.path)" in done.stderr, done.stderr
    assert not (site / "absent.db").exists()


@pytest.mark.parametrize("argv", [("--help",), ("report", "--help"), ("sink", "--help")], ids=" ".join)
@pytest.mark.parametrize("unbuffered", [False, True])
def test_help_to_a_reader_that_went_away_ends_quietly(argv: tuple[str, ...], unbuffered: bool) -> None:
    """``gateway --help | head -1``: Python's "Exception ignored … BrokenPipeError" and exit 120
    (unbuffered: exit 0); now as every command's output, quietly with 141."""
    read, write = os.pipe()
    os.close(read)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *argv], stdout=write, stderr=subprocess.PIPE, text=True,
            env=env, cwd=ROOT, timeout=30,
        )  # fmt: skip
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, ""), done


def _feed_for_ever(fifo: Path) -> None:
    """A named pipe's writer that never ends (``yes '#' > fifo``), until its reader goes away."""
    with contextlib.suppress(BrokenPipeError), fifo.open("wb") as pipe:
        while True:
            pipe.write(b"# a comment line, again and again\n" * 1024)


def test_a_config_that_is_not_a_file_or_too_large_is_refused_not_read_for_ever(tmp_path: Path) -> None:
    """``-c /dev/zero`` (a device, or a pipe whose writer never stops) was read until memory ran
    out: the command hung. A device is refused, naming it, and no config is read past 1 MiB:
    one larger is refused with its size (until 2026-12-07 it was read whole)."""
    for command in ("run", "check"):
        done = gateway(command, "-c", "/dev/zero", cwd=tmp_path)
        assert done.returncode == 2, done
        assert (
            "/dev/zero: a character device, not a file; name the config file (e.g. -c gateway.toml)"
            in done.stderr
        ), done.stderr
    large = tmp_path / "large.toml"
    large.write_bytes(b"# a comment line, again and again\n" * 70_000)  # 2.3 MiB
    done = gateway("check", "-c", str(large), cwd=tmp_path)
    assert done.returncode == 2, done
    assert (
        f"{large}: 2,380,000 bytes, more than a config file may hold (1 MiB, 1,048,576 bytes):"
        " is it the config file?" in done.stderr
    ), done.stderr
    fifo = tmp_path / "config.pipe"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=_feed_for_ever, args=(fifo,), daemon=True)
    feeder.start()
    done = gateway("check", "-c", str(fifo), cwd=tmp_path)
    assert done.returncode == 2, done
    assert (
        f"{fifo}: more than a config file may hold (1 MiB, 1,048,576 bytes): is it the config file?"
        in done.stderr
    ), done.stderr
    feeder.join(timeout=30)
    assert "Traceback" not in done.stderr


HELPED = [words for words in COMMANDS if words != ("mitmdump",)]
"""Every command whose --help is ours (``gateway mitmdump --help`` is mitmdump's own)."""


def _said(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from gateway.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    out, err = capsys.readouterr()
    return int(stopped.value.code or 0), out, err


@pytest.mark.parametrize("words", HELPED, ids=" ".join)
def test_a_command_help_says_what_it_does_and_gives_an_example_that_parses(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """``gateway report --help`` listed the options alone: what the command does was said by
    ``gateway --help`` only, and no --help showed a command line to start from."""
    code, out, _ = _said([*words, "--help"], capsys)
    assert code == 0
    # What it does, as ``gateway --help`` (or ``gateway sink --help``) lists it, under the usage.
    parent = build_parser()
    for word in words[:-1]:
        parent = next(a for a in parent._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    listed = next(a for a in parent._actions if isinstance(a, argparse._SubParsersAction))
    what = next(a.help for a in listed._choices_actions if a.dest == words[-1])
    assert what and " ".join(what.split()) in " ".join(out.split()), out
    assert "\nexamples:\n" in out, out
    examples = [
        line.split("#")[0].split(" > ")[0].split()  # a comment, a redirection: the shell's
        for line in out.partition("\nexamples:\n")[2].splitlines()
        if line.strip().startswith("gateway ")
    ]
    assert examples, out
    for example in examples:  # each one a command line the parser takes, of this command
        assert tuple(example[1 : 1 + len(words)]) == words, example
        build_parser().parse_args(example[1:])


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["report", "--modle", "linear"], "--model"),
        (["reclassify", "--dryrun"], "--dry-run"),
        (["import", "--formt", "combined", "x.log"], "--format"),
        (["erase", "--visiter", "abc"], "--visitor"),
        (["doctor", "--timout", "3"], "--timeout"),
        (["check", "--quite"], "--quiet"),
        (["rules", "try", "--hots", "a", "x.har"], "--host"),
        (["run", "--admin-publc"], "--admin-public"),
        (["report", "--since=2026-11-01", "--fruad"], "--fraud"),
        (["sink", "send", "--user", "u1", "--snk", "seg"], "--sink"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_a_misspelt_option_is_told_with_the_one_meant(
    argv: list[str], meant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gateway report --modle linear`` said ``unrecognized arguments: --modle linear`` and
    left the operator to find ``--model`` in ``--help``."""
    code, _, err = _said(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"did you mean {meant}?" in err, err


REQUIRED_OPTIONS = [
    (words, action.option_strings[-1])
    for words, parser in COMMANDS.items()
    for action in parser._actions
    if action.option_strings and action.required
]


def test_the_required_options_are_found() -> None:
    assert {(("sink", "send"), "--user"), (("sync",), "--once")} <= set(REQUIRED_OPTIONS)


@pytest.mark.parametrize(
    ("words", "option"), REQUIRED_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
def test_a_misspelt_required_option_is_told_before_it_is_missing(
    words: tuple[str, ...], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gateway sink send --usr x`` said ``the following arguments are required: --user``:
    argparse checks the required options before the unknown ones, so the typo went unnamed."""
    misspelt = option[:3] + option[4:]  # --user → --uer: no abbreviation of it, as --use would be
    argv = [*words, *_required(words)]
    at = argv.index(option)
    argv[at] = misspelt
    code, _, err = _said(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert f"unrecognized arguments: {misspelt}" in err and f"(did you mean {option}?)" in err, err
    assert "required" not in err, err


def test_an_unknown_option_beside_a_missing_one_names_both(capsys: pytest.CaptureFixture[str]) -> None:
    """The unknown option first, as the command would say once the missing one is given; then
    what is still missing (nothing meant it)."""
    code, _, err = _said(["sink", "send", "--snk", "seg"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        "gateway sink send: error: unrecognized arguments: --snk seg (did you mean --sink?);"
        " the following arguments are required: --user; see `gateway sink send --help`"
    ), err
    code, _, err = _said(["sink", "--bogus"], capsys)  # a missing sub-command: the same
    assert code == 2 and err.startswith(
        "gateway sink: error: unrecognized arguments: --bogus; the following arguments are required: COMMAND"
    ), err


def test_a_misspelt_command_is_told_with_the_one_meant(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _said(["reprot", "--since", "2026-11-01"], capsys)
    assert code == 2
    assert err.count("\n") == 1, err
    assert "invalid choice: 'reprot'" in err and "did you mean report?" in err, err
    code, _, err = _said(["rules", "tyr", "x.har"], capsys)
    assert code == 2 and "did you mean try?" in err, err
    for argv in (["--no-such-option"], ["import", "--bogus"], ["report", "--zzz"]):  # nothing close: no guess
        code, _, err = _said(argv, capsys)
        assert code == 2 and "did you mean" not in err, err


@pytest.mark.parametrize(
    "words", [w for w, p in COMMANDS.items() if _reads_config(p) and w != ("init",)], ids=" ".join
)
def test_a_config_that_is_a_folder_says_to_name_the_file_in_it(
    words: tuple[str, ...], tmp_path: Path
) -> None:
    """``-c /etc/gateway`` said ``/etc/gateway: cannot read: Is a directory``, and ``gateway
    doctor`` told to run ``gateway init -c /etc/gateway``, which refuses a folder."""
    (tmp_path / "conf").mkdir()
    done = gateway(*words, *_required(words), "-c", "conf", cwd=tmp_path)
    _refused(done)
    said = done.stderr + done.stdout
    assert "conf: a folder, not a file; name the config file in it (e.g. -c conf/gateway.toml)" in said, said
    assert "gateway init -c conf" not in said, said


@pytest.mark.parametrize(
    "argv",
    [
        ("report",),
        ("reclassify",),
        ("erase", "u1"),
        ("import", "--list"),
        ("replay-bad",),
        ("import", "--undo", "1"),
        ("import", "--format", "combined", "--host", "www.example.com", "x.log"),
    ],
    ids=" ".join,
)
def test_a_store_that_is_not_sqlite_names_storage_path_and_what_to_do(
    argv: tuple[str, ...], tmp_path: Path
) -> None:
    """A text file at ``storage.path`` (a log, a config, a copy cut short) was told in SQLite's
    words alone (``cannot read the store …: file is not a database``), naming no key."""
    (tmp_path / "gw.db").write_text("this is a log line, not a SQLite database\n" * 200)
    (tmp_path / "gw.toml").write_text("[storage]\npath = 'gw.db'\n")
    (tmp_path / "x.log").write_text(
        '192.0.2.1 - - [06/Dec/2026:10:00:00 +0000] "GET /?utm_source=news HTTP/1.1" 200 5 "-"'
        ' "Mozilla/5.0"\n'
    )
    done = gateway(*argv, "-c", "gw.toml", cwd=tmp_path)
    _refused(done)
    assert done.returncode == 1, done
    assert f"the store {tmp_path / 'gw.db'}" in done.stderr, done.stderr
    assert (
        ": file is not a database (not a SQLite file: point storage.path at the store the gateway"
        " writes)" in done.stderr
    ), done.stderr


PADDED_SECRET_SAID = (
    "identity.secret: the value of GATEWAY_SECRET ends with white space (a newline from the file it was"
    " read from?): it is used as it is, newline and all"
)


@pytest.mark.parametrize(
    "argv",
    [
        ("check",),
        ("doctor",),
        ("erase", "--dry-run", "u1"),
        ("import", "--list"),
        ("replay-bad", "--dry-run"),
    ],
    ids=" ".join,
)
def test_a_master_secret_with_a_trailing_newline_is_warned_of(argv: tuple[str, ...], site: Path) -> None:
    """``GATEWAY_SECRET`` read from an env file keeps its newline (``$(cat file)`` would drop
    it), and every key derives from the value as it is: a ``gateway erase`` run where the
    variable was typed without it computes other keys, finds nothing of the user, and exits 0.
    The secret was taken without a word; the admin token and the senders' are refused so."""
    env = {"PATH": "/usr/bin:/bin", **ENV, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    clean = subprocess.run(
        [sys.executable, "-m", "gateway", *argv, "-c", "gw.toml"],
        capture_output=True, text=True, env=env, cwd=site, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert "the value of GATEWAY_SECRET" not in clean.stdout + clean.stderr, clean
    env["GATEWAY_SECRET"] += "\n"
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *argv, "-c", "gw.toml"],
        capture_output=True, text=True, env=env, cwd=site, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert done.returncode == clean.returncode, done  # a warning: a running gateway keeps its keys
    said = " ".join((done.stdout + done.stderr).split())
    assert PADDED_SECRET_SAID in said, said


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["import", "--dry", "a.log"], "--dry (did you mean --dry-run?)"),
        (["import", "a.log", "--work", "2"], "--work 2 (did you mean --workers?)"),
    ],
)
def test_an_option_cut_short_is_refused_naming_it(argv: list[str], said: str, tmp_path: Path) -> None:
    """``gateway import --dry FILE`` ran as ``--dry-run``, ``--work 2`` as ``--workers 2``:
    argparse takes an option cut short while it begins one alone, and an option added later
    beginning the same would have made it mean another, or nothing. Refused, naming it."""
    (tmp_path / "a.log").write_text("")
    done = gateway(*argv, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done
    assert done.stderr == (
        f"gateway import: error: unrecognized arguments: {said}; see `gateway import --help`\n"
    )


@pytest.mark.parametrize("words", [(), *COMMANDS], ids=lambda words: " ".join(words) or "gateway")
def test_no_option_is_taken_cut_short(words: tuple[str, ...]) -> None:
    """Every command's every long option, one letter short, is an unknown word to its parser,
    not the option it begins (parsed alone: a command taking it would run)."""
    parser = build_parser()
    own = COMMANDS[words] if words else parser
    options = {o for a in own._actions for o in a.option_strings if o.startswith("--")}
    before = [*words, *_required(words)] if words else []
    after = [] if words else ["check"]
    for option in sorted(options - {"--help"}):
        cut = option[:-1]
        if cut in options or len(cut) < 3:
            continue
        _, unknown = parser.parse_known_args([*before, cut, *after])
        assert cut in unknown, (words, option)
