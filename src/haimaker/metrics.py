"""Prometheus metrics on an app-owned registry. Labels have bounded cardinality: route, model
(configured names only), provider, status. Never customer ids or keys."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from haimaker.providers.redaction import Redactor

_STORE_STATES = ("ok", "unreachable", "lost")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, known_models: list[str], *, redactor: Redactor | None = None) -> None:
        self._redactor = redactor or Redactor()
        self.registry = CollectorRegistry(auto_describe=True)
        self._known_models = frozenset(known_models)
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        self._upstream_children: dict[tuple[str, str], Any] = {}
        self.requests = Counter(
            "haimaker_requests",
            "LLM requests by route, model and status",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "haimaker_request_duration_seconds",
            "Total request latency",
            ["route", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "haimaker_overhead_duration_seconds",
            "Time spent in haimaker, upstream excluded",
            ["route"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "haimaker_upstream_duration_seconds",
            "Upstream latency to the response headers",
            ["model", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_failures = Counter(
            "haimaker_upstream_failures",
            "Failed upstream attempts",
            ["model", "provider", "status"],
            registry=self.registry,
        )
        self.tokens = Counter("haimaker_tokens", "Tokens by model and kind", ["model", "kind"], registry=self.registry)
        self.spend_pending = Gauge(
            "haimaker_spend_writes_pending", "Charges queued but not yet durable", registry=self.registry
        )
        self.journal_only = Gauge(
            "haimaker_spend_journal_only",
            "Charges and resets held only in the spend journal (the queue was full while the store refused or lagged)",
            registry=self.registry,
        )
        self.journal_bytes = Gauge(
            "haimaker_spend_journal_bytes", "Bytes of this process's spend journal on disk", registry=self.registry
        )
        self.dead_letters = Gauge(
            "haimaker_spend_dead_letters",
            "Charges and resets that could not be written, by where they were filed (table; file, log)",
            ["where"],
            registry=self.registry,
        )
        self.write_failing = Gauge(
            "haimaker_spend_write_failing_seconds",
            "How long spend writes have been failing (0 while they succeed)",
            registry=self.registry,
        )
        self.cached_customers = Gauge(
            "haimaker_cached_customers",
            "Customers held in memory (the working set; general_settings.customer_cache_max bounds it)",
            registry=self.registry,
        )
        self.evicted_customers = Gauge(
            "haimaker_evicted_customers",
            "Idle customers evicted from memory since start (read back from the store on their next request)",
            registry=self.registry,
        )
        self.store_state = Gauge(
            "haimaker_store_state",
            "1 for the store's current state (ok, unreachable, lost), 0 for the others",
            ["state"],
            registry=self.registry,
        )

    def model_label(self, model: str | None) -> str:
        return model if model in self._known_models else "other"

    def observe_upstream(self, model: str, provider: str, seconds: float) -> None:
        key = (self.model_label(model), provider)
        child = self._upstream_children.get(key)
        if child is None:
            child = self._upstream_children[key] = self.upstream_latency.labels(*key)
        child.observe(seconds)

    def observe_request(self, route: str, model: str | None, status: int, total_s: float, overhead_s: float) -> None:
        """Count one finished request; labelled children are cached (`labels()` costs more than the update)."""
        key = (route, self.model_label(model), status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(key[0], key[1], str(status)),
                self.latency.labels(key[0], key[1]),
                self.overhead.labels(route),
            )
        requests, latency, overhead = children
        requests.inc()
        latency.observe(total_s)
        if overhead_s >= 0:
            overhead.observe(overhead_s)

    def observe_ledger(
        self, *, store_state: str, dead_letters_table: int, dead_letters_file: int, failing_for_s: float
    ) -> None:
        """Set the ledger's gauges (at scrape time, from values already known)."""
        self.dead_letters.labels("table").set(dead_letters_table)
        self.dead_letters.labels("file").set(dead_letters_file)
        self.write_failing.set(failing_for_s)
        for state in _STORE_STATES:
            self.store_state.labels(state).set(1 if state == store_state else 0)

    def render(self) -> bytes:
        # Labels are configured names, never customer ids or keys; a secret pasted into a name is still scrubbed.
        return self._redactor.bytes(generate_latest(self.registry))
