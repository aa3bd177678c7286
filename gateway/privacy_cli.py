"""``gateway purge`` (retention, ``privacy.retention_days``), ``gateway erase USER_ID`` (the
erasure ``DELETE /api/users/{id}`` does) and ``gateway erase --visitor ID`` (``DELETE
/api/visitors/{id}``'s), each with ``--dry-run``."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import ConfigError, Settings, load_settings
from gateway.keys import operator_user_id

if TYPE_CHECKING:
    from gateway.events import Erasure
    from gateway.usernames import NamedUser


def _settings(args: argparse.Namespace, central: bool = True) -> Settings | int:
    """The config of ``purge`` (which purges the central store too: ``central``) or ``erase``
    (``central=False``: it erases in this node's store, which the sync carries to the central
    one, so ``central.url``'s variable need not be set: until 2026-12-07 it had to be)."""
    from gateway.cli import _fail_config
    from gateway.notices import warn_of_secret

    try:
        settings = load_settings(args.config, offline=True, central=central)
    except ConfigError as err:
        return _fail_config(args.config, err)
    warn_of_secret(settings)
    problem = settings.store_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return settings


def cmd_purge(args: argparse.Namespace) -> int:
    from storage.local import store_hint
    from storage.migrate import SchemaTooNew
    from storage.retention import PurgeFailed, central_failure, cutoff, purge

    settings = _settings(args)
    if isinstance(settings, int):
        return settings
    days = settings.options.privacy.retention_days
    if days <= 0:
        print("purge: privacy.retention_days is 0 (keep forever): nothing to purge")
        return 0
    now = datetime.now(UTC)
    failed: PurgeFailed | None = None
    try:
        done = asyncio.run(purge(settings, now, dry_run=args.dry_run))
    except PurgeFailed as err:  # the stores before it are purged all the same: said below
        failed, done = err, err.done
    verb = "would delete" if args.dry_run else "deleted"
    if done or failed is None:
        print(f"purge: rows older than {days} days (before {cutoff(now, days).isoformat()})")
    for store, counts in done.items():
        for table, rows in counts.items():
            print(f"  {store} {table}: {verb} {rows:,}")
    if failed is not None:
        cause = failed.__cause__
        # The node's store fails first; past it, the mirror (the central store's are not SQLite's)
        path = settings.store_path if "local" not in done else (settings.mirror_path or settings.store_path)
        key = "storage.path" if path == settings.store_path else "central.mirror_path"
        why = f"{cause}{store_hint(cause, path, key)}"
        if (central := central_failure(failed, settings.options.central.url)) is not None:
            why = central  # PostgreSQL or the network, in the sync's words: host and port named
        elif not isinstance(cause, SchemaTooNew | sqlite3.Error):
            why = f"{type(cause).__name__}: {cause}"
        if args.dry_run:
            kept = "; a dry run: nothing deleted"
        elif done:
            kept = f"; the rows listed above ({', '.join(done)}) are deleted all the same"
        else:
            kept = "; nothing deleted"
        print(f"gateway: purge failed on {failed.store}: {why}{kept}", file=sys.stderr)
        return 1
    if args.dry_run:
        print("(dry run: nothing deleted)")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    from gateway.badbody import body_key
    from gateway.events import iso
    from gateway.ids import Uuid7
    from gateway.keys import Keys
    from gateway.usernames import erasure_note, erasure_reach, named_user, user_recorded
    from storage.erasure import erase_user, kept_bad_events
    from storage.local import store_hint
    from storage.migrate import SchemaTooNew
    from storage.queries import StoreUnavailable

    if (args.user_id is None) == (args.visitor is None):
        print("gateway: erase takes a USER_ID or --visitor ID, one of them", file=sys.stderr)
        return 2
    if args.visitor is not None:
        return _erase_visitor(args)
    user_id, problem = operator_user_id(args.user_id)
    if problem is not None:
        print(f"gateway: USER_ID: {problem}", file=sys.stderr)
        return 2
    settings = _settings(args, central=False)
    if isinstance(settings, int):
        return settings
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    now = datetime.now(UTC)

    unlooked: list[str] = []  # where a text of a key's shape was not looked for, and why

    async def known(user_keys: list[str]) -> bool | None:
        # Where the erasure acts: this store, and the central store (and the mirror) it reaches
        # through the sync; until 2026-12-08 this store alone, so the key of a user another node
        # recorded was read as a raw ID no one has, and that user was not erased.
        recorded = await user_recorded(settings, user_keys)
        if recorded.unlooked is not None:
            unlooked.append(recorded.unlooked)
        return recorded.known or None

    async def erase() -> tuple[NamedUser, Erasure, str | None, int]:
        # Read as the lookup reads it (GET /api/users/{id}): a key some user has, else the raw ID.
        named, _ = await named_user(user_id, keys, settings.lowercases_user_ids, known)
        key, *also = named.keys
        before = await _erased_at(settings.store_path, named.keys)
        erasure = await erase_user(
            settings.store_path,
            key,
            named.user_id,
            body_key=body_key(settings.secret),
            event_id=Uuid7()(int(now.timestamp() * 1000)),
            ts=iso(now),
            node=settings.node,
            dry_run=args.dry_run,
            also=also,
            keys=keys,
        )
        return named, erasure, before, await kept_bad_events(settings.store_path)

    try:
        named, erasure, erased, kept = asyncio.run(erase())
    except (SchemaTooNew, sqlite3.DatabaseError) as err:
        hint = store_hint(err, settings.store_path)
        print(
            f"gateway: erase failed on the store {settings.store_path}: {err}{hint}",
            file=sys.stderr,
        )
        return 1
    except StoreUnavailable as err:  # the central store, asked how to read a text of a key's shape
        print(
            "gateway: USER_ID has a user_key's shape and no user has it as a user_key in this store;"
            f" whether a user another node recorded has it cannot be told: {err}: nothing erased"
            " (read as a raw user ID, it might not be the user meant); try again once it can be read",
            file=sys.stderr,
        )
        return 1
    if named.key_shaped:  # a user_key or a raw ID: which it was taken for
        print(f"erase: read as {'a user_key' if named.read_as == 'user_key' else 'a raw user ID'}")
    verb = "would erase" if args.dry_run else "erased"
    n = len(erasure.visitors)
    print(f"erase: {verb} {n:,} visitor{'' if n == 1 else 's'}")
    for table, rows in erasure.counts.items():
        print(f"  {table}: {rows:,}")
    if args.dry_run:  # what the erasure would leave: those it would delete are kept yet
        kept -= erasure.counts.get("bad_events", 0)
    note = erasure_note(named, erasure, kept, api=False)
    if note is not None:
        print(f"  {note}")
    nothing = not erasure.visitors and not any(erasure.counts.values())
    if nothing and named.read_as == "user_id" and unlooked:
        print(
            f"  only this store was looked in for a user of this user_key ({unlooked[0]}): set it to"
            " erase a user another node recorded by their user_key"
        )
    if nothing:
        # Not an error (erasing twice is harmless, and the user may have rows elsewhere: the
        # central store, another node), but a mistyped ID must not pass for a done erasure.
        # The ID is not echoed: the output may be kept (a cron mail, a log).
        # Erased before (here, or through another node): the ID is right, and the time says so.
        why = _UNKNOWN_USER if erased is None else f"it was erased on {erased}"
        print(f"  nothing of this user {'is' if args.dry_run else 'was'} in this store: {why}")
        if not args.dry_run:
            print(
                "  the erasure is recorded all the same: rows about this user dated before now are"
                " refused from here on (an older log imported, a late signed event)"
            )
    if args.dry_run:
        print("(dry run: nothing deleted)")
    else:
        for line in erasure_reach(settings, user_key=named.keys[0], keys=keys):
            print(line)
    return 0


def _erase_visitor(args: argparse.Namespace) -> int:
    """``gateway erase --visitor ID``: ``DELETE /api/visitors/{id}``'s erasure."""
    from gateway.badbody import body_key
    from gateway.events import iso
    from gateway.ids import Uuid7
    from gateway.keys import Keys, named_visitor_id, unlike_a_visitor, visitor_id_refused
    from gateway.usernames import VisitorRecorded, erasure_reach, visitor_recorded
    from storage.erasure import erase_visitor
    from storage.local import store_hint
    from storage.migrate import SchemaTooNew
    from storage.queries import StoreUnavailable

    given = args.visitor.strip()  # as every intake trims a visitor ID
    if named_visitor_id(given) is None:  # what a visitor_key (32 hex digits) is too
        print(f"gateway: --visitor: {visitor_id_refused(args.visitor)}", file=sys.stderr)
        return 2
    settings = _settings(args, central=False)
    if isinstance(settings, int):
        return settings
    keys = Keys.from_master(settings.secret, settings.options.identity.user_id_storage)
    visitor_keys = keys.named_visitor_keys(given)
    now = datetime.now(UTC)

    # A page's address or cookies not of ours, pasted: every count 0 and "nothing of this
    # visitor was in this store", exit 0, an erasure recorded (until 2026-12-07). Refused in the
    # lookup's words, unless something is recorded under it (a sender's ID may be any text).
    unlike = unlike_a_visitor(given, settings.options.identity.cookie_name)

    async def erase() -> tuple[Erasure, int, str | None] | VisitorRecorded:
        # Where the erasure acts: this store, and the central store (and the mirror) it reaches
        # through the sync; until 2026-12-08 this store alone, so a visitor another node's sender
        # named by such a text was refused here.
        if (
            unlike is not None
            and not (recorded := await visitor_recorded(settings, visitor_keys, keys)).known
        ):
            return recorded
        before = await _erased_at(settings.store_path, visitor_keys)
        erasure, bound = await erase_visitor(
            settings.store_path,
            visitor_keys,
            body_key=body_key(settings.secret),
            keys=keys,
            event_id=Uuid7()(int(now.timestamp() * 1000)),
            ts=iso(now),
            node=settings.node,
            dry_run=args.dry_run,
        )
        return erasure, bound, before

    try:
        done = asyncio.run(erase())
    except (SchemaTooNew, sqlite3.DatabaseError) as err:  # as a user's erasure says it
        hint = store_hint(err, settings.store_path)
        print(f"gateway: erase failed on the store {settings.store_path}: {err}{hint}", file=sys.stderr)
        return 1
    except StoreUnavailable as err:  # the central store, looked in for a text pasted by mistake
        print(
            f"gateway: --visitor: {unlike}; nothing is recorded under it in this store, and {err}:"
            " nothing erased; try again once it can be read",
            file=sys.stderr,
        )
        return 1
    if isinstance(done, VisitorRecorded):
        if done.unlooked is None:
            print(f"gateway: --visitor: {unlike}; no visitor has it as their ID", file=sys.stderr)
        else:
            print(
                f"gateway: --visitor: {unlike}; no visitor has it as their ID in this store"
                f" ({done.unlooked}: set it to erase a visitor another node recorded under this text)",
                file=sys.stderr,
            )
        return 2
    erasure, bound, erased = done
    print(f"erase: {'would erase' if args.dry_run else 'erased'} the visitor")
    for table, rows in erasure.counts.items():
        print(f"  {table}: {rows:,}")
    if not any(erasure.counts.values()):
        why = _UNKNOWN_VISITOR if erased is None else f"it was erased on {erased}"
        print(f"  nothing of this visitor {'is' if args.dry_run else 'was'} in this store: {why}")
    if bound:
        print(
            f"  bound to {bound:,} user{'' if bound == 1 else 's'}: {'that' if bound == 1 else 'each'}"
            " binding stays (it is the user's): erase the user (gateway erase USER_ID) to take it,"
            " and every device of theirs"
        )
    if args.dry_run:
        print("(dry run: nothing deleted)")
    else:
        for line in erasure_reach(settings, "visitor", visitor_keys=erasure.visitors):
            print(line)
    return 0


async def _erased_at(path: Path, keys: Sequence[str]) -> str | None:
    """When the store last recorded an erasure of ``keys`` (``storage.erased.erased_at``), before
    this one; None on a store too old to say (the erasure migrates nothing: it refuses a newer
    one, and an older one is told apart by its missing table)."""
    from storage.erased import erased_at
    from storage.readonly import open_read_only

    db = await open_read_only(path)
    try:
        return await erased_at(db, keys)
    except sqlite3.OperationalError:
        return None
    finally:
        await db.close()


_UNKNOWN_USER = (
    "check the ID is the one the site sends (its case, its form: an e-mail address or the"
    " account number), or that it was erased already"
)


_UNKNOWN_VISITOR = (
    "check the ID is the visitor's (the gw_vid cookie's whole value, or the visitor_key), or that"
    " it was erased already"
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_config: str) -> None:
    purge = sub.add_parser("purge", help="delete events older than privacy.retention_days")
    purge.add_argument("-c", "--config", default=default_config, help="config file (default: %(default)s)")
    purge.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    purge.set_defaults(func=cmd_purge)
    erase = sub.add_parser(
        "erase",
        help="erase one user everywhere (as DELETE /api/users/{id}), or one visitor (--visitor,"
        " as DELETE /api/visitors/{id})",
    )
    erase.add_argument(
        "user_id",
        metavar="USER_ID",
        nargs="?",
        help="the site's raw user ID, or a user_key as a journey shows it (read as a key first,"
        " when a user has it)",
    )
    erase.add_argument(
        "--visitor",
        metavar="ID",
        help="erase this visitor instead: the gw_vid cookie's value, the raw visitor ID or the visitor_key",
    )
    erase.add_argument("-c", "--config", default=default_config, help="config file (default: %(default)s)")
    erase.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    erase.set_defaults(func=cmd_erase)
