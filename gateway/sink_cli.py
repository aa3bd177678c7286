"""``gateway sink send --user ID``: re-send one user's identify and track calls to the sinks."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys

from gateway.config import ConfigError, load_settings
from gateway.config_values import unset
from gateway.keys import is_plain_key, operator_user_id
from gateway.notices import warn_of_secret


def cmd_sink_send(args: argparse.Namespace) -> int:
    from gateway.cli import EXIT_CONFIG, _fail_config

    args.user, problem = operator_user_id(args.user)
    if problem is not None:
        print(f"gateway: --user: {problem}", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config, offline=True, central=False)  # never connects to it
    except ConfigError as err:
        return _fail_config(args.config, err)
    warn_of_secret(settings)
    names = [sink.name for sink in settings.options.sinks]
    if not names:
        print(f"gateway: {args.config}: no [[sinks]] configured", file=sys.stderr)
        return EXIT_CONFIG
    if args.sink is not None and args.sink not in names:
        print(f"gateway: no sink named {args.sink!r} (configured: {', '.join(names)})", file=sys.stderr)
        return EXIT_CONFIG
    for i, sink in enumerate(settings.options.sinks):  # the ones it sends to need their secret and URL
        if args.sink in (None, sink.name) and sink.name not in settings.sink_secrets:
            why = unset(sink.secret.removeprefix("env:"), os.environ)
            print(f"gateway: {args.config}: sinks[{i}].secret: {why}", file=sys.stderr)
            return EXIT_CONFIG
        if args.sink in (None, sink.name) and sink.name not in settings.sink_urls:  # url = "env:NAME"
            why = unset(sink.url.removeprefix("env:"), os.environ)
            print(f"gateway: {args.config}: sinks[{i}].url: {why}", file=sys.stderr)
            return EXIT_CONFIG
    # A mistyped storage.path made an empty store, and "0 messages sent" looked like a user
    # with nothing to send (until 2026-12-05).
    problem = settings.store_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    from storage.migrate import SchemaTooNew
    from storage.sinks import NothingRecorded, SinkError, resend_user_standalone

    try:
        sent = asyncio.run(resend_user_standalone(settings, args.user, args.sink))
    except NothingRecorded as err:  # a mistyped ID: "0 messages sent", exit 0, until 2026-12-05
        print(f"gateway: {err}; nothing sent", file=sys.stderr)
        return 1
    except (SchemaTooNew, sqlite3.DatabaseError) as err:  # a folder, not a database, a newer one
        print(f"gateway: cannot open the store {settings.store_path}: {err}", file=sys.stderr)
        return 1
    failed = False
    for name, resent in sent.items():
        if isinstance(resent, SinkError):  # the others are still sent to, and said
            print(f"gateway: sink send failed: sink {name}: {resent}", file=sys.stderr)
            failed = True
            continue
        count = resent.sent  # each message once, those taken before an erasure came too
        if not count:  # bindings there are (else NothingRecorded): each message too large
            # As the admin API's 404 says it (until 2026-12-05: "0 messages sent", exit 0).
            print(
                f"gateway: sink {name}: nothing sent: each of this user's messages is over"
                f" sinks[].max_message_bytes",
                file=sys.stderr,
            )
            failed = True
        else:
            # Which bindings went (a lower-cased ID's, an earlier user_id_storage's key), as the
            # admin API's answer names them; until 2026-12-07 the count alone. Never the raw ID:
            # a plain key is the ID itself.
            print(f"{name}: {count:,} message{'' if count == 1 else 's'} sent ({shown_key(resent.user_key)})")
    return 1 if failed else 0


def shown_key(user_key: str) -> str:
    """The user_key a re-send went under, as a line says it: a plain key is the raw user ID."""
    if is_plain_key(user_key):
        return 'user_key not printed: the user ID itself, as identity.user_id_storage = "plain" keeps it'
    return f"user_key {user_key}"
