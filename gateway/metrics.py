"""Prometheus metrics: one registry per app (no globals), the counters every part reports to,
and their exposition, summed over every worker process when the supervisor runs several."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from storage.backoff import Failures

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by the supervisor for its workers (before they import prometheus_client, which reads it
then): each worker writes its values to its own files there, and worker 0's ``/metrics`` adds
them up, a worker that exited or was restarted included."""

WORKER_RESTARTS = "gateway_worker_restarts"
WORKER_RESTARTS_HELP = (
    "Workers the supervisor started again, by why the one before ended: killed (by a signal:"
    " kill -9, the OOM killer, a segfault), exited (with a status, on its own), hung (killed for"
    " proxy.worker_hang_seconds). Alert on increase(gateway_worker_restarts_total[15m]) > 2: a"
    " worker in a crash loop, its siblings serving, is no outage yet but loses each time what it"
    " held (its connections, its lately bound pairs). Absent until the first restart, and with"
    " one process (proxy.workers = 1: no supervisor) always"
)


def count_worker_restart(folder: str, reason: str) -> None:
    """``gateway_worker_restarts_total{reason}`` one up, counted by the supervisor (which
    serves no ``/metrics``) in a counter file of its own in ``folder``, the workers' metrics
    folder, where worker 0's ``/metrics`` reads it with theirs. prometheus-client's own
    ``Counter`` cannot write there from this process: it picks its file store once, when
    imported, from ``MULTIPROCESS_ENV``, which is the workers' environment, not the
    supervisor's."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    key = mmap_key(WORKER_RESTARTS, WORKER_RESTARTS + "_total", ["reason"], [reason], WORKER_RESTARTS_HELP)
    counts = MmapedDict(os.path.join(folder, f"counter_{os.getpid()}.db"))
    try:
        value, _ = counts.read_value(key)
        counts.write_value(key, value + 1, time.time())
    finally:
        counts.close()


Kept = Callable[["LiveRules", dict[str, str]], bool]
"""Whether the rules configured still have a series (by its labels)."""


class Metrics:
    def __init__(self) -> None:
        self.readers_failing: dict[str, Failures] = {}
        """The readers of the log (``central``, ``mirror``, ``sink:<name>``) failing now, each
        from its first failure in a row to its next success: ``/healthz`` says them."""
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV) or None
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Requests on the public listener, by outcome",
            ["outcome"],
            registry=r,
        )
        self.touchpoints = Counter("gateway_touchpoints", "Touchpoints recorded", registry=r)
        self.landings_folded = Counter(
            "gateway_landings_folded",
            "Landings that repeated the visitor's recent one (campaign.repeat_seconds): no touchpoint",
            registry=r,
        )
        self.bindings = Counter(
            "gateway_bindings", "Visitors bound to a user by an identity rule", ["rule"], registry=r
        )
        # Counted by the store once committed: a retried checkout is one conversion and one duplicate.
        self.conversions = Counter(
            "gateway_conversions", "Conversions recorded by a conversion rule", ["rule"], registry=r
        )
        self.conversion_duplicates = Counter(
            "gateway_conversions_duplicate",
            "Conversions a rule fired that the store already had (the same order ID, or the same "
            "visitor in the rule's dedup window), not recorded again",
            ["rule"],
            registry=r,
        )
        self.rule_matched = Counter(
            "gateway_rule_matched",
            "Requests a rule matched (method, host, path) by the status the site answered, whether it"
            " fired or not: a rule with no series matches nothing; one whose statuses here are not"
            " in its status never fires; by kind (identity, conversion), rule and status",
            ["kind", "rule", "status"],
            registry=r,
        )
        self.extraction_failures = Counter(
            "gateway_extraction_failures",
            "Rule values that could not be read or were invalid (the rule still ran), by rule and reason",
            ["rule", "reason"],
            registry=r,
        )
        self.rule_key_file_unusable = Gauge(
            "gateway_rule_key_file_unusable",
            "1 while a rule's JWT key file, as last looked at, cannot be read or holds no usable key"
            " (the keys read before still verify), 0 when it is good; by rule and TOML key",
            ["rule", "key"],
            registry=r,
            multiprocess_mode="livemax",  # every worker looks at the file: 1 when any finds it unusable
        )
        self.cookies_rejected = Counter(
            "gateway_cookies_rejected",
            "Visitor cookies rejected (forged, edited, malformed)",
            registry=r,
        )
        self.params_dropped = Counter(
            "gateway_params_dropped",
            "Tracking values dropped by validation",
            ["reason"],
            registry=r,
        )
        self.connections_timed_out = Counter(
            "gateway_connections_timed_out",
            "Client connections closed for a timeout, by listener (proxy, admin) and reason: "
            "keepalive_timeout (idle: closed without an answer), header_timeout (a request head "
            "not whole in time: answered 408)",
            ["listener", "reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures, by kind", ["kind"], registry=r
        )
        self.addon_errors = Counter(
            "gateway_addon_errors",
            "Addon hooks that raised (skipped, page served)",
            ["addon", "hook"],
            registry=r,
        )
        self.events_unconfirmed = Counter(
            "gateway_events_unconfirmed",
            "Commits not confirmed within storage.max_wait_ms, each once: timeout, store_error",
            ["reason"],
            registry=r,
        )
        self.events_not_stored = Counter(
            "gateway_events_not_stored",
            "Commits the store refused (within storage.max_wait_ms or after): their events are lost",
            registry=r,
        )
        self.store_errors = Counter("gateway_store_errors", "Failed store commits", registry=r)
        self.erased_late = Counter(
            "gateway_erased_late_rows",
            "Rows the store left out as late: a user's or visitor's, dated at or before their"
            " erasure, that came after it (a request in flight when it was made), by table;"
            " verdict_changes: those whose touchpoint the store does not have (erased, purged"
            " or never stored)",
            ["table"],
            registry=r,
        )
        self.purged_rows = Counter(
            "gateway_purged_rows",
            "Rows deleted by retention (privacy.retention_days), by table (central ones: central:TABLE)",
            ["table"],
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "gateway_store_commit_seconds",
            "Time to commit one batch",
            # Up to twice the busy timeout (5 s) a commit may wait on another connection's lock:
            # until 2026-12-07 the top bucket was 1 s, and a p99 read every slower commit as 1 s.
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.store_batch_rows = Histogram(
            "gateway_store_batch_rows",
            "Events per commit",
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024, 4096, 10_000),  # up to storage.batch_size's most
            registry=r,
        )
        self.store_checkpoints = Counter(
            "gateway_store_checkpoints",
            "Background WAL checkpoints, by outcome: done, busy (another process's was running), failed",
            ["outcome"],
            registry=r,
        )
        self.store_queue = Gauge(
            "gateway_store_queue", "Events waiting for the writer", registry=r, multiprocess_mode="livesum"
        )
        # Signed server-side events: received == the sum of the outcomes, per sender.
        self.inbound_received = Counter(
            "gateway_inbound_received",
            "Signed events received (a refused request counts as one), by sender",
            ["sender"],
            registry=r,
        )
        self.inbound_events = Counter(
            "gateway_inbound_events",
            "Signed events by outcome: accepted, ignored (acknowledged, nothing recorded), duplicate, "
            "bad (kept in bad_events), rejected",
            ["sender", "outcome"],
            registry=r,
        )
        self.inbound_unmatched = Counter(
            "gateway_inbound_unmatched_fields",
            "Accepted signed events recorded without a field whose configured pointer "
            "([[sources]] fields) found nothing in them, by sender and field",
            ["sender", "field"],
            registry=r,
        )
        self.inbound_left_out = Counter(
            "gateway_inbound_left_out",
            "Values of signed events not taken, by sender, field and reason: placeholder (an ID, a"
            " creator, sub or click ID or a campaign field of undefined, null, None, nil, NaN or"
            " [object Object]) or email (an email address in a campaign field); the event is"
            " recorded without them",
            ["sender", "field", "reason"],
            registry=r,
        )
        self.bot_verdicts = Counter(
            "gateway_bot_verdicts", "Landings scored by the bots addon, by verdict", ["verdict"], registry=r
        )
        self.bot_rescores = Counter(
            "gateway_bot_rescores", "Earlier touchpoints re-scored by a late signal", registry=r
        )
        self.bot_signals = Counter(
            "gateway_bot_signals",
            "Landings scored by the bots addon on which a signal weighed, by signal",
            ["signal"],
            registry=r,
        )
        self.bot_refusals = Counter(
            "gateway_bot_refusals",
            "Requests the bots addon answered 403 (bots.on_review/on_block = block), by verdict",
            ["verdict"],
            registry=r,
        )
        self.aggregate_landings = Counter(
            "gateway_aggregate_landings",
            "Landings of visitors who opted out (Sec-GPC, DNT), by the verdict bot scoring gave them;"
            " only allow ones are added to daily_counts",
            ["verdict"],
            registry=r,
        )
        # Central sync and sinks: durable readers of the local event log.
        self.sync_lag_rows = Gauge(
            "gateway_sync_lag_rows",
            "Rows not yet delivered, by reader and table",
            ["reader", "table"],
            registry=r,
            multiprocess_mode="livemostrecent",  # worker 0 alone runs the readers
        )
        self.sync_lag_seconds = Gauge(
            "gateway_sync_lag_seconds",
            "Seconds the oldest row not yet delivered has waited since it was written locally"
            " (not its event's age; 0 when caught up), by reader and table;"
            " reader mirror: seconds since the table's last completed round while rows wait",
            ["reader", "table"],
            registry=r,
            multiprocess_mode="livemostrecent",  # worker 0 alone runs the readers
        )
        self.sync_rows = Counter(
            "gateway_sync_rows", "Rows delivered, by reader and table", ["reader", "table"], registry=r
        )
        self.sync_erased = Counter(
            "gateway_sync_erased_rows",
            "Rows of this node's store deleted by the central sync because the central store"
            " erased their key (an erasure made through any node), by table",
            ["table"],
            registry=r,
        )
        self.sync_errors = Counter(
            "gateway_sync_errors",
            "Failed delivery attempts (retried with backoff), by reader",
            ["reader"],
            registry=r,
        )
        self.sync_last_success = Gauge(
            "gateway_sync_last_success_timestamp_seconds",
            "When a round last completed, by reader (Unix time)",
            ["reader"],
            registry=r,
            multiprocess_mode="livemostrecent",  # worker 0 alone runs the readers
        )
        self.sync_node_shared = Gauge(
            "gateway_sync_node_shared",
            "Other gateways (store instances) that synced under this storage.node within the "
            "hour, by reader (0: this one alone; more: give each its own storage.node)",
            ["reader"],
            registry=r,
            multiprocess_mode="livemostrecent",  # worker 0 alone runs the readers
        )
        self.sync_other_secrets = Gauge(
            "gateway_sync_other_secrets",
            "Nodes that synced to the central store within the hour under another "
            "identity.secret than this gateway's, by reader (0: every node shares it)",
            ["reader"],
            registry=r,
            multiprocess_mode="livemostrecent",  # worker 0 alone runs the readers
        )
        self.sink_messages = Counter(
            "gateway_sink_messages",
            "Sink messages by outcome: sent (accepted by the destination), too_large (skipped), "
            "refused (the destination refused the message itself; skipped)",
            ["sink", "outcome"],
            registry=r,
        )
        self.reports_shared = Counter(
            "gateway_reports_shared",
            "Reports asked for while an identical one was queued or being computed, which waited "
            "for its answer instead of computing it again",
            registry=r,
        )
        self.admin_lockouts = Counter(
            "gateway_admin_lockouts",
            "Client addresses refused by the admin listener for sending too many wrong admin tokens "
            "(admin.max_failed_logins within admin.failed_login_seconds)",
            registry=r,
        )

        self.live_rules: LiveRules | None = None
        """The rules the chain runs, as last reloaded (``keep_rules``); None until a reload:
        every series is of a configured rule then."""
        self.per_rule: dict[str, tuple[Counter | Gauge, Kept]] = {
            next(iter(metric.describe())).name: (metric, kept)
            for metric, kept in (
                (self.rule_matched, _matched),
                (self.bindings, _identity),
                (self.conversions, _conversion),
                (self.conversion_duplicates, _conversion),
                (self.extraction_failures, _either),
                (self.rule_key_file_unusable, _key_file),
            )
        }
        """The families labelled by a rule (by name), each with whether the rules ``live`` still
        have a series' rule."""

    def keep_rules(self, live: LiveRules) -> None:
        """At a reload, ``live`` the rules now configured: every series of the others (removed,
        renamed; a key file no longer read) goes, or a dashboard kept showing a dead rule, its
        count frozen, and an alert on ``gateway_rule_key_file_unusable`` kept its label, until a
        restart. Under a supervisor they are in the workers' files, which prometheus-client
        cannot remove from (it warns and removes nothing): ``exposition`` leaves them out, as it
        does in one process a count that came after (a conversion committed late)."""
        self.live_rules = live
        if self.multiprocess_dir is not None:
            return
        for metric, kept in self.per_rule.values():
            gone = {
                tuple(sample.labels.values())  # in the metric's label order, as remove takes them
                for family in metric.collect()
                for sample in family.samples
                if not kept(live, sample.labels)
            }
            for values in gone:
                metric.remove(*values)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or, under a supervisor, of every worker summed
        (read from their files: call it off the event loop)."""
        if self.multiprocess_dir is None and self.live_rules is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        collected: Collector = (
            self.registry
            if self.multiprocess_dir is None
            else MultiProcessCollector(None, self.multiprocess_dir)
        )
        if self.live_rules is not None:
            live = self.live_rules
            collected = _LiveRulesOnly(
                collected, {name: partial(kept, live) for name, (_, kept) in self.per_rule.items()}
            )
        merged.register(collected)
        return generate_latest(merged)


@dataclass(frozen=True)
class LiveRules:
    """The rules a reload left configured: ``kinds``, ``(kind, rule)`` of each identity and
    conversion rule; ``key_files``, ``(rule, TOML key)`` of each JWT key read from a file."""

    kinds: frozenset[tuple[str, str]]
    key_files: frozenset[tuple[str, str]]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(rule for _, rule in self.kinds)


def _matched(live: LiveRules, labels: dict[str, str]) -> bool:
    return (labels["kind"], labels["rule"]) in live.kinds


def _identity(live: LiveRules, labels: dict[str, str]) -> bool:
    return ("identity", labels["rule"]) in live.kinds


def _conversion(live: LiveRules, labels: dict[str, str]) -> bool:
    return ("conversion", labels["rule"]) in live.kinds


def _either(live: LiveRules, labels: dict[str, str]) -> bool:
    """Extraction failures are by rule alone, of either kind."""
    return labels["rule"] in live.names


def _key_file(live: LiveRules, labels: dict[str, str]) -> bool:
    return (labels["rule"], labels["key"]) in live.key_files


class _LiveRulesOnly(Collector):
    """The metrics without the series of rules a reload removed (``Metrics.keep_rules``)."""

    def __init__(self, collected: Collector, kept: dict[str, Callable[[dict[str, str]], bool]]) -> None:
        self.collected, self.kept = collected, kept

    def collect(self) -> Iterator[Metric]:
        for family in self.collected.collect():
            kept = self.kept.get(family.name)
            if kept is not None:
                family.samples = [s for s in family.samples if kept(s.labels)]
            yield family
