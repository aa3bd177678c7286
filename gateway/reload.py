"""What a SIGHUP reload may change live, and what needs a restart.

Reads two ``Settings`` (running and freshly loaded); owns the list of keys a
running process cannot take over (listen addresses, the store, secrets, the
upstream session's limits, the worker count, the admin side but its ``hosts``, log format, the user-ID
storage mode, the retention period) and
builds the settings a reload actually applies: the new rules and thresholds
with every restart-only value kept as it runs.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import Any

import msgspec

from gateway.config import Settings
from gateway.options import Options

RESTART_KEYS = (
    "proxy.listen",
    "proxy.upstream",
    "proxy.workers",
    "proxy.upstream_connections",
    "proxy.connect_timeout",
    "proxy.read_timeout",
    "proxy.max_header_size",
    "proxy.access_log",
    "proxy.shutdown_grace",
    "proxy.drain_seconds",
    "proxy.keepalive_timeout",
    "proxy.header_timeout",
    "proxy.worker_hang_seconds",
    "identity.user_id_storage",
    "storage",
    "admin",
    "creators",
    "log.format",
    "central",
    "sinks",
    "sources",
    "privacy.retention_days",
)
"""Keys (or whole tables) a running process keeps until restarted: they are baked into listeners,
the upstream session, the store, the admin app or the logging set-up; how long SIGTERM waits
(the listeners' and the supervisor's, set at start), how long a connection may idle or take to
send a request head (the listeners', set at start) and how long a worker may hang (the
supervisor's); the user-ID keys (made
once, shared by the pipeline, the admin API and the sinks) and the daily purge (started, or
not, with the gateway) too."""


LIVE_IN_RESTART_TABLES = {"admin": ("hosts",)}
"""Keys of a restart-only table that a reload applies all the same: ``admin.hosts`` is read
per request from the running settings (``gateway/admin.py``'s ``known_host``)."""


def _get(data: dict[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    value = data.get(section)
    if name:
        return value.get(name) if isinstance(value, dict) else value
    if isinstance(value, dict) and section in LIVE_IN_RESTART_TABLES:
        return {k: v for k, v in value.items() if k not in LIVE_IN_RESTART_TABLES[section]}
    return value


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The keys whose new value differs but cannot apply until a restart."""
    before, after = msgspec.to_builtins(old.options), msgspec.to_builtins(new.options)
    keys = [key for key in RESTART_KEYS if _get(before, key) != _get(after, key)]
    if not hmac.compare_digest(old.secret, new.secret):
        keys.append("identity.secret")
    if not hmac.compare_digest(old.admin_token.encode(), new.admin_token.encode()):
        keys.append("admin.token")
    return keys


def live_settings(old: Settings, new: Settings) -> Settings:
    """``new`` with every restart-only value (and the resolved secrets) taken from ``old``."""
    before, after = msgspec.to_builtins(old.options), msgspec.to_builtins(new.options)
    for key in RESTART_KEYS:
        section, _, name = key.partition(".")
        if name:
            after[section][name] = before[section][name]
        elif section in LIVE_IN_RESTART_TABLES:
            live = {k: after[section][k] for k in LIVE_IN_RESTART_TABLES[section]}
            after[section] = {**before[section], **live}
        else:
            after[section] = before[section]
    options = msgspec.convert(after, Options)
    # What was resolved from the restart-only tables goes with them: the senders' secrets are
    # looked up by the running senders' names (a renamed one was a KeyError), the sinks' and the
    # central store's are those of the tasks already running.
    return dataclasses.replace(
        new,
        options=options,
        secret=old.secret,
        admin_token=old.admin_token,
        base_dir=old.base_dir,
        node=old.node,
        source_secrets=old.source_secrets,
        sink_secrets=old.sink_secrets,
        sink_urls=old.sink_urls,
        central_url=old.central_url,
    )
