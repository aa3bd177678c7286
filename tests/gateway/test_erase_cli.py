"""``gateway erase USER_ID``: the erasure of ``DELETE /api/users/{id}`` from the command line,
with ``--dry-run`` counting what would go."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from gateway.badbody import body_key, seal
from gateway.events import BadEvent, Binding, Conversion, Touchpoint
from gateway.keys import Keys
from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.local import LocalStore
from tests.conftest import ENV, make_settings

ROOT = Path(__file__).resolve().parents[2]
TS = "2026-11-25T12:00:00.000000Z"


async def fill(path: Path, user_key: str) -> None:
    store = LocalStore(path, StorageOptions(), Metrics())
    await store.open()
    await store.write(
        [
            Touchpoint("01", TS, "n", "phone", source="a"),
            Touchpoint("02", TS, "n", "laptop", source="b"),
            Touchpoint("03", TS, "n", "stranger", source="c"),
            Binding("04", TS, "n", "phone", user_key, "login"),
            Binding("05", TS, "n", "laptop", user_key, "login"),
            Conversion("06", TS, "n", "buy", "order:1", None, user_key, 9.0, "EUR"),
        ]
    )
    await store.close()


def gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **ENV, **(env or {})},
        cwd=ROOT,
        timeout=60,
    )


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_erase_command_dry_run_then_for_real(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    user_key = Keys.from_master(settings.secret).user_key("alice@example.com")
    asyncio.run(fill(path, user_key))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\nnode = "cli"\n')

    # Pasted with a space, as intake would trim it: the same user (it used to be none).
    dry = gateway("erase", " alice@example.com ", "--dry-run", "-c", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert "would erase 2 visitors" in dry.stdout and "touchpoints: 2" in dry.stdout
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(3,)]
    assert rows(path, "SELECT count(*) FROM erasures") == [(0,)]

    done = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "erased 2 visitors" in done.stdout
    assert rows(path, "SELECT visitor_key FROM touchpoints") == [("stranger",)]
    assert rows(path, "SELECT count(*) FROM identities") == [(0,)]
    assert rows(path, "SELECT count(*) FROM conversions") == [(0,)]
    assert rows(path, "SELECT user_key, node FROM erasures") == [(user_key, "cli")]  # the sync carries it


def test_erase_command_refuses_a_bad_user_id(tmp_path: Path) -> None:
    done = gateway("erase", "x" * 1000, "-c", str(tmp_path / "none.toml"))
    assert done.returncode == 2 and "USER_ID" in done.stderr and "Traceback" not in done.stderr
    assert "gateway: USER_ID: expected 1..256 printable characters, got 1,000 characters" in done.stderr
    done = gateway("erase", "alice\n@example.com", "-c", str(tmp_path / "none.toml"))
    assert done.returncode == 2 and "got \\n at character 6" in done.stderr
    assert "alice" not in done.stderr  # the ID is never printed


def test_erase_finds_rows_kept_under_an_earlier_storage_mode(tmp_path: Path) -> None:
    """Rows written under ``user_id_storage = "plain"`` (``id:alice@…`` at rest), then the
    config changed to the default: the erasure finds them under their old key too. Before,
    it erased 0 visitors, said it was done, and left the raw ID at rest."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    asyncio.run(fill(path, Keys.from_master(settings.secret, "plain").user_key("alice@example.com")))
    assert rows(path, "SELECT DISTINCT user_key FROM identities") == [("id:alice@example.com",)]
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n')
    done = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "erased 2 visitors" in done.stdout
    assert rows(path, "SELECT visitor_key FROM touchpoints") == [("stranger",)]
    assert rows(path, "SELECT count(*) FROM identities") + rows(path, "SELECT count(*) FROM conversions") == [
        (0,),
        (0,),
    ]
    # The erasure record lists the old key for the central store, which holds those rows too:
    # the ID itself, since under "plain" that is the key (README: what is stored).
    [(also,)] = rows(path, "SELECT also_keys FROM erasures")
    assert "id:alice@example.com" in json.loads(also)


def test_erase_says_where_else_the_rows_are_by_what_is_configured(tmp_path: Path) -> None:
    """It said "the erasure reaches the central store with the next sync, and no sink sends
    these rows" with neither configured, and nothing of the sinks' destinations, which keep what
    they were sent. Then, until 2026-12-05, that other nodes' stores keep the user's rows, which
    their sync rounds have erased since."""
    path = tmp_path / "gw.db"
    asyncio.run(fill(path, "k"))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n')
    alone = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert alone.returncode == 0, alone.stderr
    assert "central" not in alone.stdout and "sink" not in alone.stdout
    cfg.write_text(
        f'[storage]\npath = "{path}"\n[central]\nurl = "env:GW_CENTRAL"\n'
        '[[sinks]]\nname = "segment"\nkind = "segment"\nurl = "https://api.segment.example"\n'
        'secret = "env:GATEWAY_ADMIN_TOKEN"\n'
    )
    both = gateway(
        "erase", "alice@example.com", "-c", str(cfg), env={"GW_CENTRAL": "postgresql://gw@127.0.0.1:9/gw"}
    )
    assert both.returncode == 0, both.stderr
    # Since other nodes apply the central erasures at their sync rounds (2026-12-05), it no
    # longer tells the operator that their stores keep the rows and to erase there too.
    assert "reaches the central store with the next sync, and every other node's store" in both.stdout
    assert "keep their rows" not in both.stdout
    # Nor, since their rounds take their kept bad events too, that those are not erased that way.
    assert "kept bad events (bad_events) that name the user's ID or devices included" in both.stdout
    assert "what the sinks sent before stays at their destinations: delete it there" in both.stdout
    # By the userId a sink sent, which under "hash" is the user's key, not the ID given here.
    assert "by the userId they were sent under, " in both.stdout
    assert 'under identity.user_id_storage = "hash" a sink sends the key' in both.stdout


def test_erase_names_the_store_it_could_not_change(tmp_path: Path) -> None:
    """A store the command cannot use (here not SQLite at all; a read-only one says so the same
    way) is named, so an operator with several configs sees which file it was."""
    path = tmp_path / "not-a-store.db"
    path.write_bytes(b"plain text, not a SQLite database " * 10)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n')
    done = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"gateway: erase failed on the store {path}: file is not a database (not a SQLite file: point"
        " storage.path at the store the gateway writes)"
    )


def test_a_store_a_newer_gateway_migrated_is_not_erased_nor_purged(tmp_path: Path) -> None:
    """``gateway erase`` on a store a newer gateway had migrated (the binary rolled back, the
    old one still installed beside it) deleted from the tables it knew, recorded the erasure and
    said "erased", while the newer schema's own tables could hold the user still; ``purge`` the
    same. ``import`` and ``reclassify`` refused such a store: these do too, naming it."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    asyncio.run(fill(path, Keys.from_master(settings.secret).user_key("alice@example.com")))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 999")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n[privacy]\nretention_days = 1\n')
    newer = "the database is at schema version 999, newer than this gateway knows"
    for args in (("erase", "alice@example.com"), ("erase", "alice@example.com", "--dry-run"), ("purge",)):
        done = gateway(*args, "-c", str(cfg))
        assert done.returncode == 1 and newer in done.stderr and str(path) in done.stderr, (args, done)
        assert "erased" not in done.stdout and "deleted" not in done.stdout
    assert rows(path, "SELECT count(*) FROM erasures") == [(0,)]
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(3,)]


def test_erase_and_purge_behind_another_process_s_write_lock_say_who_may_hold_it(tmp_path: Path) -> None:
    """A sqlite3 shell left in BEGIN IMMEDIATE (or the live gateway's long write) made erase and
    purge fail after 5 s with SQLite's bare "database is locked": nothing said what held it or
    that running the command again once it is released is all there is to do."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    asyncio.run(fill(path, Keys.from_master(settings.secret).user_key("alice@example.com")))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n[privacy]\nretention_days = 1\n')
    hint = (
        "database is locked (another process held the store's write lock past the 5 s busy timeout:"
        " the live gateway in a long write, or a sqlite3 shell left in a transaction); run the"
        " command again once it is released"
    )
    shell = sqlite3.connect(path, isolation_level=None)
    try:
        shell.execute("BEGIN IMMEDIATE")
        erase = gateway("erase", "alice@example.com", "-c", str(cfg))
        purge = gateway("purge", "-c", str(cfg))
    finally:
        shell.close()
    assert (
        erase.returncode == 1 and erase.stderr.strip() == f"gateway: erase failed on the store {path}: {hint}"
    )
    assert (
        purge.returncode == 1
        and f"purge failed on the store {path} (storage.path): {hint}; nothing" in purge.stderr
    )
    assert gateway("erase", "alice@example.com", "-c", str(cfg)).returncode == 0  # released: it goes through


def test_erasing_a_user_the_store_does_not_know_says_so(tmp_path: Path) -> None:
    """A mistyped ID printed 'erased 0 visitors' and zeros, as a finished erasure does, and exit
    0: nothing told the operator that no row was theirs. It is still no error (erasing twice is
    harmless; the user may have rows elsewhere), and the erasure is still recorded."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    asyncio.run(fill(path, Keys.from_master(settings.secret).user_key("alice@example.com")))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n')
    dry = gateway("erase", "Alice@example.com", "--dry-run", "-c", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert "  nothing of this user is in this store: check the ID is the one the site sends" in dry.stdout
    assert "Alice" not in dry.stdout  # the ID is not echoed into what may be kept
    done = gateway("erase", "Alice@example.com", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "  nothing of this user was in this store" in done.stdout
    assert "the erasure is recorded all the same" in done.stdout
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(3,)]
    assert rows(path, "SELECT count(*) FROM erasures") == [(1,)]
    # A user with rows is erased without the note; again, nothing is left of them: the note.
    known = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert "erased 2 visitors" in known.stdout and "nothing of this user" not in known.stdout
    again = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert again.returncode == 0 and "nothing of this user was in this store" in again.stdout
    assert again.stdout.startswith("erase: erased 0 visitors\n"), again.stdout
    # Erased already: said with the time, not "check the ID … or that it was erased already" (the
    # latest erasure before this one: the one of the mistyped ID's is another user's).
    [(first,)] = rows(path, "SELECT ts FROM erasures ORDER BY rowid LIMIT 1 OFFSET 1")
    assert f"nothing of this user was in this store: it was erased on {first}\n" in again.stdout
    assert "check the ID" not in again.stdout
    dry_again = gateway("erase", "alice@example.com", "--dry-run", "-c", str(cfg))
    [(latest,)] = rows(path, "SELECT max(ts) FROM erasures")
    assert f"nothing of this user is in this store: it was erased on {latest}\n" in dry_again.stdout
    # The stranger's device, once bound to bob: one visitor, said so (it said "1 visitors").
    bob = Keys.from_master(settings.secret).user_key("bob")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
            f" VALUES ('07', '{TS}', 'n', 'stranger', '{bob}', 'login', 'rule')"
        )
    one = gateway("erase", "bob", "-c", str(cfg))
    assert one.stdout.startswith("erase: erased 1 visitor\n"), one.stdout


def test_erase_command_removes_a_bad_event_naming_only_the_user_s_device(tmp_path: Path) -> None:
    """As ``DELETE /api/users/{id}`` (tests/gateway/test_users_api.py): a refused event about
    the user's device, by its raw ID, goes with the user."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    keys = Keys.from_master(settings.secret)
    seal_key = body_key(settings.secret)

    async def fill_bad() -> None:
        store = LocalStore(path, StorageOptions(), Metrics())
        await store.open()
        await store.write(
            [
                Binding("01", TS, "n", keys.visitor_key("anon-7f3e"), keys.user_key("alice"), "login"),
                BadEvent("02", TS, "n", "crm", "x", seal(seal_key, '{"anonymousId": "anon-7f3e"}')),
                BadEvent("03", TS, "n", "crm", "x", seal(seal_key, '{"anonymousId": "anon-9"}')),
            ]
        )
        await store.close()

    asyncio.run(fill_bad())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\nnode = "cli"\n')
    done = gateway("erase", "alice", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "bad_events: 1" in done.stdout
    assert rows(path, "SELECT id FROM bad_events") == [("03",)]


def test_erase_visitor_by_the_cookie_value_dry_run_then_for_real(tmp_path: Path) -> None:
    """``gateway erase --visitor``: an anonymous visitor's request, by the value of their gw_vid
    cookie, as ``DELETE /api/visitors/{id}``. Before, the command took a user ID only, and such a
    visitor's rows stayed until retention."""
    from addons.identity import cookie_value

    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    keys = Keys.from_master(settings.secret)
    raw = "A" * 22
    cookie, visitor = cookie_value(keys.cookie_mac, raw), keys.visitor_key(raw)
    seal_key = body_key(settings.secret)

    async def fill_visitor() -> None:
        store = LocalStore(path, StorageOptions(), Metrics())
        await store.open()
        await store.write(
            [
                Touchpoint("01", TS, "n", visitor, source="a"),
                Touchpoint("02", TS, "n", "stranger", source="b"),
                Conversion("03", TS, "n", "signup", "signup:1", visitor, None, None, None),
                BadEvent("04", TS, "n", "crm", "x", seal(seal_key, f'{{"anonymousId": "{raw}"}}')),
                BadEvent("05", TS, "n", "crm", "x", seal(seal_key, '{"anonymousId": "anon-9"}')),
            ]
        )
        await store.close()

    asyncio.run(fill_visitor())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\nnode = "cli"\n')
    dry = gateway("erase", "--visitor", f" {cookie} ", "--dry-run", "-c", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("erase: would erase the visitor\n"), dry.stdout
    assert "touchpoints: 1" in dry.stdout and "bad_events: 1" in dry.stdout
    assert "(dry run: nothing deleted)" in dry.stdout and cookie not in dry.stdout
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(2,)]
    assert rows(path, "SELECT count(*) FROM erasures") == [(0,)]

    done = gateway("erase", "--visitor", cookie, "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("erase: erased the visitor\n"), done.stdout
    assert "conversions: 1" in done.stdout and "bound to" not in done.stdout
    assert rows(path, "SELECT visitor_key FROM touchpoints") == [("stranger",)]
    assert rows(path, "SELECT count(*) FROM conversions") == [(0,)]
    assert rows(path, "SELECT id FROM bad_events") == [("05",)]
    # Recorded as any erasure, for the central store: the visitor's key, as user_key and listed.
    assert rows(path, "SELECT user_key, visitors, node FROM erasures") == [(visitor, f'["{visitor}"]', "cli")]
    again = gateway("erase", "--visitor", raw, "-c", str(cfg))  # the raw ID: the same visitor
    assert again.returncode == 0, again.stderr
    assert "nothing of this visitor was in this store: it was erased on" in again.stdout


def test_erase_visitor_says_the_users_it_is_bound_to_keep_their_binding(tmp_path: Path) -> None:
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    user_key = Keys.from_master(settings.secret).user_key("alice@example.com")
    asyncio.run(fill(path, user_key))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n')
    done = gateway("erase", "--visitor", "phone", "-c", str(cfg))  # "phone" is stored as a key
    assert done.returncode == 0, done.stderr
    assert "nothing of this visitor was in this store: check the ID" in done.stdout  # the raw ID's key
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(3,)]
    visitor_key = "a" * 32
    with sqlite3.connect(path) as db:
        db.execute("UPDATE touchpoints SET visitor_key = ? WHERE visitor_key = 'phone'", (visitor_key,))
        db.execute("UPDATE identities SET visitor_key = ? WHERE visitor_key = 'phone'", (visitor_key,))
    done = gateway("erase", "--visitor", visitor_key.upper(), "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "touchpoints: 1" in done.stdout
    assert "bound to 1 user: that binding stays (it is the user's): erase the user" in done.stdout
    assert rows(path, "SELECT count(*) FROM identities") == [(2,)]


def test_erase_takes_a_user_or_a_visitor(tmp_path: Path) -> None:
    cfg = tmp_path / "none.toml"
    for args in (("erase",), ("erase", "alice", "--visitor", "v")):
        done = gateway(*args, "-c", str(cfg))
        assert (done.returncode, done.stderr) == (
            2,
            "gateway: erase takes a USER_ID or --visitor ID, one of them\n",
        ), args
    cfg.write_text(f'[storage]\npath = "{tmp_path / "gw.db"}"\n')
    done = gateway("erase", "--visitor", "a\tb", "-c", str(cfg))
    assert (done.returncode, done.stderr) == (
        2,
        "gateway: --visitor: expected a visitor_key (32 hex digits), a visitor ID (1..2000 printable"
        " characters) or a cookie value, got \\t at character 2\n",
    )
    done = gateway("erase", "--visitor", "x" * 2001, "-c", str(cfg))  # as the API says it
    assert done.returncode == 2 and done.stderr.endswith(" or a cookie value, got 2,001 characters\n")
    assert not (tmp_path / "gw.db").exists() or rows(tmp_path / "gw.db", "SELECT count(*) FROM erasures") == [
        (0,)
    ]


def test_erase_by_the_user_key_a_lookup_shows(tmp_path: Path) -> None:
    """The operator has the user_key alone (from the dashboard, a journey, the conversions
    download). ``gateway erase KEY`` read it as a raw ID: "nothing of this user was in this
    store", exit 0, the user kept. Read as the lookup reads it now, with --dry-run too; the
    output says how it was read and what of the kept bad events a key could not search."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    keys = Keys.from_master(settings.secret)
    key = keys.user_key("alice@example.com")
    asyncio.run(fill(path, key))
    seal_key = body_key(settings.secret)

    async def fill_bad() -> None:
        store = LocalStore(path, StorageOptions(), Metrics())
        await store.open()
        await store.write(
            [
                BadEvent("07", TS, "n", "crm", "x", seal(seal_key, '{"email": "alice@example.com"}')),
                BadEvent("08", TS, "n", "crm", "x", seal(seal_key, '{"email": "Alice@Example.com"}')),
            ]
        )
        await store.close()

    asyncio.run(fill_bad())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\nnode = "cli"\n')
    dry = gateway("erase", key, "--dry-run", "-c", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("erase: read as a user_key\nerase: would erase 2 visitors\n"), dry.stdout
    assert "  bad_events: 1\n" in dry.stdout and "nothing of this user" not in dry.stdout
    assert "not searched for the raw user ID" in dry.stdout and "1 bad event is kept" in dry.stdout
    assert "gateway erase USER_ID" in dry.stdout
    assert rows(path, "SELECT count(*) FROM erasures") == [(0,)]

    done = gateway("erase", key, "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "erased 2 visitors" in done.stdout, done.stdout
    assert rows(path, "SELECT visitor_key FROM touchpoints") == [("stranger",)]
    assert rows(path, "SELECT count(*) FROM identities") + rows(path, "SELECT count(*) FROM conversions") == [
        (0,),
        (0,),
    ]
    assert rows(path, "SELECT id FROM bad_events") == [("08",)]
    assert rows(path, "SELECT user_key, also_keys FROM erasures") == [(key, "[]")]
    # Again: the key's erasure is recorded, so it is still read as the key, and said erased.
    again = gateway("erase", key, "-c", str(cfg))
    assert again.stdout.startswith("erase: read as a user_key\n"), again.stdout
    assert "nothing of this user was in this store: it was erased on" in again.stdout
    # A key no user has (mistyped): read as a raw ID, as before, and said so.
    typo = gateway("erase", "0" * 32, "-c", str(cfg))
    assert typo.returncode == 0 and typo.stdout.startswith("erase: read as a raw user ID\n"), typo.stdout
    assert "read as a raw user ID: no user has it as a user_key" in typo.stdout


def _older_store(path: Path, user_key: str, version: int = 4) -> None:
    """A store as a gateway of 2026-12-02 left it (schema 4, as ``a065f61``'s in Upgrading): a
    user's two devices, their landings and a stranger's, as an upgrade finds it before the new
    version's first start."""
    from storage.migrate import migrations, statements

    with sqlite3.connect(path, isolation_level=None) as db:
        for number, _, sql in migrations():
            if number <= version:
                for statement in statements(sql):
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        for id_, visitor in (("01", "phone"), ("02", "laptop"), ("03", "stranger")):
            db.execute(
                "INSERT INTO touchpoints (id, ts, node, visitor_key, source, landing_path)"
                " VALUES (?, ?, 'n', ?, 'a', '/')",
                (id_, TS, visitor),
            )
        for id_, visitor in (("04", "phone"), ("05", "laptop")):
            db.execute(
                "INSERT INTO identities (id, ts, node, visitor_key, user_key, rule, origin)"
                " VALUES (?, ?, 'n', ?, ?, 'login', 'rule')",
                (id_, TS, visitor, user_key),
            )


def test_a_store_an_older_gateway_left_is_migrated_then_erased_and_purged(tmp_path: Path) -> None:
    """Between installing a new version and its first start (Upgrading), ``gateway erase`` on
    a store of before schema 10 failed with SQLite's bare ``no such table: sync_cursors``, and
    ``gateway purge`` the same: an erasure request could not be met, and nothing said why or
    what to do. They migrate it first, as ``import`` and ``reclassify`` do; a dry run, which
    writes nothing, its migration included, says the store's version and what migrates it."""
    from storage.migrate import migrations

    newest = migrations()[-1][0]
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    _older_store(path, Keys.from_master(settings.secret).user_key("alice@example.com"))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n[privacy]\nretention_days = 1\n')

    older = (
        f" (the store is at schema version 4, older than this gateway's, {newest}: `gateway run`"
        " migrates it when it starts, and so does a command that writes to it without --dry-run,"
        " such as `gateway erase`; see Upgrading)"
    )
    for args in (
        ("erase", "alice@example.com", "--dry-run"),
        ("erase", "--visitor", "phone", "--dry-run"),
        ("purge", "--dry-run"),
    ):
        done = gateway(*args, "-c", str(cfg))
        assert done.returncode == 1 and older in done.stderr and str(path) in done.stderr, (args, done)
    assert rows(path, "PRAGMA user_version") == [(4,)]

    done = gateway("erase", "alice@example.com", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "erase: erased 2 visitors" in done.stdout
    assert rows(path, "PRAGMA user_version") == [(newest,)]
    assert rows(path, "SELECT visitor_key FROM touchpoints") == [("stranger",)]
    assert rows(path, "SELECT count(*) FROM identities") == [(0,)]
    assert rows(path, "SELECT count(*) FROM erasures") == [(1,)]

    path.unlink()
    _older_store(path, "someone")
    done = gateway("purge", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert rows(path, "PRAGMA user_version") == [(newest,)]
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(0,)]


def test_erase_visitor_refuses_a_pasted_url_or_cookies_not_ours(tmp_path: Path) -> None:
    """``gateway erase --visitor`` of a page's address or cookies none of which is ours printed
    every count 0 and "nothing of this visitor was in this store", exit 0, with an erasure
    recorded: read in a hurry, the person was erased. Refused as the lookup refuses it, exit 2,
    nothing recorded (with --dry-run too); a visitor a sender named by such a text is erased."""
    path = tmp_path / "gw.db"
    settings = make_settings(tmp_path)
    keys = Keys.from_master(settings.secret)
    named = "gw_vid=AbCdEfGhIjKlMnOpQrStUv"

    async def fill_named() -> None:
        store = LocalStore(path, StorageOptions(), Metrics())
        await store.open()
        await store.write(
            [Touchpoint("01", TS, "n", keys.visitor_key("https://shop.example/?a=1"), source="a")]
        )
        await store.close()

    asyncio.run(fill_named())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n')
    for extra in ((), ("--dry-run",)):
        done = gateway("erase", "--visitor", f" {named}", *extra, "-c", str(cfg))
        assert (done.returncode, done.stdout, done.stderr) == (
            2,
            "",
            "gateway: --visitor: expected a visitor_key (32 hex digits), a visitor ID (1..2000"
            " printable characters) or the gw_vid cookie's value (v1.<id>.<tag>: alone, as"
            " gw_vid=v1.… or in a Cookie header), got a gw_vid cookie whose value is not the"
            " gateway's, 'AbCdEfGhIjKlMnOpQrSt…'; no visitor has it as their ID\n",
        ), extra
    done = gateway("erase", "--visitor", "session=s3cr3t; _ga=GA1.2.3", "-c", str(cfg))
    assert done.returncode == 2 and "got cookies session, _ga (values not shown)" in done.stderr
    assert "s3cr3t" not in done.stderr
    assert rows(path, "SELECT count(*) FROM erasures") == [(0,)]
    done = gateway("erase", "--visitor", "https://shop.example/?a=1", "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "touchpoints: 1" in done.stdout
    assert rows(path, "SELECT count(*) FROM touchpoints") == [(0,)]


def test_erase_visitor_of_a_pasted_text_finds_it_in_the_reporting_mirror(tmp_path: Path) -> None:
    """A text refused when pasted by mistake (a page's address), recorded by another node only:
    its rows are in the reporting mirror (``central.mirror_path``, every node's rows), which the
    erasure reaches with the central store's. Refused until 2026-12-08, this node's store alone
    looked in; erased now, also where ``central.url``'s variable is not set (the central store
    then not asked)."""
    settings = make_settings(tmp_path)
    pasted = "https://shop.example/?a=1"
    key = Keys.from_master(settings.secret).visitor_key(pasted)

    async def stores() -> None:
        for name, rows_ in (("gw.db", []), ("mirror.db", [Touchpoint("01", TS, "other", key, source="a")])):
            store = LocalStore(tmp_path / name, StorageOptions(), Metrics())
            await store.open()
            await store.write(rows_)
            await store.close()

    asyncio.run(stores())
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[storage]\npath = "{tmp_path / "gw.db"}"\n'
        f'[central]\nurl = "env:GATEWAY_CENTRAL_URL"\nmirror_path = "{tmp_path / "mirror.db"}"\n'
    )
    done = gateway("erase", "--visitor", pasted, "-c", str(cfg))
    assert done.returncode == 0, done.stderr
    assert rows(tmp_path / "gw.db", "SELECT count(*) FROM erasures") == [(1,)]

    (tmp_path / "mirror.db").unlink()  # nothing anywhere looked in: refused, saying where it did not look
    done = gateway("erase", "--visitor", "https://shop.example/other", "-c", str(cfg))
    assert done.returncode == 2, done.stdout
    assert done.stderr.endswith(
        "no visitor has it as their ID in this store (the central store was not looked in:"
        " GATEWAY_CENTRAL_URL is not set: set it to erase a visitor another node recorded under"
        " this text)\n"
    ), done.stderr


def test_erase_visitor_of_a_pasted_text_with_the_central_store_unreachable_erases_nothing(
    tmp_path: Path,
) -> None:
    """A text refused when pasted by mistake, nothing under it here, and the central store the
    erasure would reach cannot be asked: neither refused as no one's (it may be another node's)
    nor erased blind; exit 1, saying why in the sync's words, nothing recorded."""
    import socket

    with socket.socket() as free:  # a loopback port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    path = tmp_path / "gw.db"
    asyncio.run(fill(path, "k" * 32))
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[storage]\npath = "{path}"\n[central]\nurl = "env:GATEWAY_CENTRAL_URL"\n')
    env = {"GATEWAY_CENTRAL_URL": f"postgresql://gw@127.0.0.1:{port}/tracking"}
    done = gateway("erase", "--visitor", "https://shop.example/?a=1", "-c", str(cfg), env=env)
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert "nothing is recorded under it in this store, and the central store is unavailable (" in done.stderr
    assert "GATEWAY_CENTRAL_URL" in done.stderr and done.stderr.endswith(
        "): nothing erased; try again once it can be read\n"
    ), done.stderr
    assert rows(path, "SELECT count(*) FROM erasures") == [(0,)]
