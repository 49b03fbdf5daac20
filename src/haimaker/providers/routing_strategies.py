"""Which deployment of a group takes the next call, and the per-deployment load the choice reads.

`DeploymentLoad` keeps, per deployment and per instance: requests and tokens in the current minute (for
`litellm_params.rpm` / `tpm`), calls in flight (`least-busy`) and recent latencies (`latency-based-routing`).

Strategies (`router_settings.routing_strategy`), as LiteLLM's `router_strategy/`:

- unset: round-robin over the group, or `simple-shuffle` when a deployment sets `weight`, `rpm` or `tpm`;
- `simple-shuffle`: random, weighted by `weight`, else by `rpm`, else by `tpm` (a deployment without one weighs 0),
  else uniform;
- `least-busy`: the fewest calls in flight (ties at random);
- `latency-based-routing`: the lowest mean latency of the last 10 calls within `ttl`; a deployment without samples
  first; with `lowest_latency_buffer` b, at random among those within (1 + b) x the lowest;
- `usage-based-routing` (and `-v2`): the fewest tokens this minute.

Invariants: a pick never returns a deployment outside the candidates it is given; nothing here awaits.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from haimaker.providers.base import Deployment

MAX_LATENCY_SAMPLES: Final = 10  # LiteLLM's lowest-latency `max_latency_list_size`


@dataclass(slots=True)
class _Load:
    minute: int = -1
    requests: int = 0
    tokens: int = 0
    in_flight: int = 0
    latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=MAX_LATENCY_SAMPLES))


class DeploymentLoad:
    """Per-deployment counters of this instance (a minute bucket, calls in flight, latency samples)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._loads: dict[str, _Load] = {}

    def _load(self, model_id: str) -> _Load:
        load = self._loads.get(model_id)
        if load is None:
            load = self._loads[model_id] = _Load()
        minute = int(self._monotonic() // 60)
        if load.minute != minute:
            load.minute, load.requests, load.tokens = minute, 0, 0
        return load

    def has_capacity(self, deployment: Deployment) -> bool:
        """Under its `rpm` and `tpm` for the current minute (no limit: always)."""
        rpm, tpm = deployment.params.get("rpm"), deployment.params.get("tpm")
        if rpm is None and tpm is None:
            return True
        load = self._load(deployment.model_id)
        return (rpm is None or load.requests < rpm) and (tpm is None or load.tokens < tpm)

    def start(self, model_id: str) -> None:
        """A call was sent to the deployment: one request this minute, one more in flight."""
        load = self._load(model_id)
        load.requests += 1
        load.in_flight += 1

    def finish(self, model_id: str) -> None:
        load = self._loads.get(model_id)
        if load is not None and load.in_flight > 0:
            load.in_flight -= 1

    def add_tokens(self, model_id: str, tokens: int) -> None:
        self._load(model_id).tokens += tokens

    def add_latency(self, model_id: str, seconds: float) -> None:
        self._load(model_id).latencies.append((self._monotonic(), seconds))

    def in_flight(self, model_id: str) -> int:
        load = self._loads.get(model_id)
        return load.in_flight if load is not None else 0

    def tokens(self, model_id: str) -> int:
        return self._load(model_id).tokens

    def mean_latency(self, model_id: str, ttl_s: float) -> float | None:
        load = self._loads.get(model_id)
        if load is None:
            return None
        oldest = self._monotonic() - ttl_s
        recent = [seconds for at, seconds in load.latencies if at >= oldest]
        return sum(recent) / len(recent) if recent else None


@dataclass(frozen=True, slots=True)
class Strategy:
    """A routing strategy with its arguments; `pick` chooses among candidates."""

    name: str | None
    load: DeploymentLoad
    rng: random.Random
    latency_ttl_s: float = 3600.0
    lowest_latency_buffer: float = 0.0

    def pick(self, candidates: Sequence[Deployment]) -> Deployment:
        """One of `candidates` (non-empty, in round-robin order: the group rotated to this call's turn)."""
        if len(candidates) == 1:
            return candidates[0]
        name = self.name
        if name == "least-busy":
            return self._least(candidates, lambda d: float(self.load.in_flight(d.model_id)))
        if name == "latency-based-routing":
            return self._fastest(candidates)
        if name in ("usage-based-routing", "usage-based-routing-v2"):
            return self._least(candidates, lambda d: float(self.load.tokens(d.model_id)))
        if name == "simple-shuffle" or _weights(candidates) is not None:
            return self._shuffle(candidates)
        return candidates[0]

    def _least(self, candidates: Sequence[Deployment], measure: Callable[[Deployment], float]) -> Deployment:
        values = [measure(d) for d in candidates]
        lowest = min(values)
        return self.rng.choice([d for d, value in zip(candidates, values, strict=True) if value == lowest])

    def _fastest(self, candidates: Sequence[Deployment]) -> Deployment:
        latencies = [self.load.mean_latency(d.model_id, self.latency_ttl_s) for d in candidates]
        unmeasured = [d for d, latency in zip(candidates, latencies, strict=True) if latency is None]
        if unmeasured:
            return self.rng.choice(unmeasured)  # measure every deployment before comparing them
        measured = [latency for latency in latencies if latency is not None]
        ceiling = min(measured) * (1 + self.lowest_latency_buffer)
        return self.rng.choice(
            [d for d, latency in zip(candidates, latencies, strict=True) if latency is not None and latency <= ceiling]
        )

    def _shuffle(self, candidates: Sequence[Deployment]) -> Deployment:
        weights = _weights(candidates)
        if weights is None or sum(weights) <= 0:
            return self.rng.choice(list(candidates))
        return self.rng.choices(list(candidates), weights=weights)[0]


def _weights(candidates: Sequence[Deployment]) -> list[float] | None:
    """`weight`, else `rpm`, else `tpm` of each candidate (missing: 0), from the first key any of them sets."""
    for key in ("weight", "rpm", "tpm"):
        if any(d.params.get(key) is not None for d in candidates):
            return [float(d.params.get(key) or 0) for d in candidates]
    return None
