"""Model groups: which deployment serves each call, retries, fallbacks, cooldowns and deployment rpm/tpm.

Several `model_list` entries with one `model_name` form a group. One call, in LiteLLM's order:

1. pick a deployment of the group with the routing strategy (`routing_strategies.py`), skipping those cooling down
   (`cooldowns.py`) or over their `rpm`/`tpm` this minute; none left: a 429 "No deployments available ...";
2. a retryable failure is retried in the group (`retries.py`): on a deployment not yet tried at once, on one already
   tried after a backoff; up to `num_retries` (or the `retry_policy` count);
3. once the group's retries are spent, its `fallbacks` groups are tried in order, each with its own retries (a
   prompt over the context window goes to `context_window_fallbacks` instead); every fallback stays inside the
   customer's region and the models the caller may use.

Nothing is retried once a byte has reached the client: this all happens before `open` returns. The state (cooldowns,
minute counters, latencies, calls in flight) is this instance's own.

Region routing: a call given a `region` (the customer's `allowed_model_region`) only ever reaches the group's
deployments whose `litellm_params.region_name` equals it, exactly as LiteLLM's `is_region_allowed` compares them
(case-sensitive; a deployment without `region_name` is in no region). Rotation, retries and failover stay inside that
subgroup; when it is empty the call is a 400 before any upstream is tried (a fallback group without a deployment in
the region is skipped). LiteLLM applies the rule only with `router_settings.enable_pre_call_checks`; we apply it
always, since a customer pinned to a region must never be served outside it because a flag was left unset.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from haimaker.accounting.pricing import ModelPrice, PriceTable, price_from_overrides
from haimaker.clock import Clock, SystemClock
from haimaker.config.schema import Config, LiteLLMParams
from haimaker.errors import (
    BadRequestError,
    GatewayTimeoutError,
    ProxyError,
    RateLimitError,
    UnknownModelError,
    UpstreamError,
)
from haimaker.providers.base import Deployment, Provider, Route, UpstreamResponse
from haimaker.providers.cooldowns import Cooldowns
from haimaker.providers.retries import (
    is_context_window_error,
    may_fall_back,
    retries_for,
    retry_delay_s,
)
from haimaker.providers.routing_settings import DEFAULT_NUM_RETRIES, RoutingSettings, routing_settings
from haimaker.providers.routing_strategies import DeploymentLoad, Strategy
from haimaker.providers.tls import parse_verify

logger = logging.getLogger("haimaker.router")

DEFAULT_TIMEOUT_S = 600.0
__all__ = ["DEFAULT_NUM_RETRIES", "DEFAULT_TIMEOUT_S", "RouteAttempts", "Router", "build_deployments"]


def build_deployments(config: Config, prices: PriceTable) -> list[Deployment]:
    """Turn `model_list` into deployments, each priced from the table and its own overrides."""
    default_timeout = config.litellm_settings.request_timeout or config.router_settings.timeout or DEFAULT_TIMEOUT_S
    deployments = []
    for index, entry in enumerate(config.model_list):
        params, info = entry.litellm_params, entry.model_info
        provider, upstream_model = params.model.split("/", 1)
        base_price = prices.lookup(info.base_model or upstream_model) or prices.lookup(entry.model_name)
        input_cost = (
            params.input_cost_per_token if params.input_cost_per_token is not None else info.input_cost_per_token
        )
        output_cost = (
            params.output_cost_per_token if params.output_cost_per_token is not None else info.output_cost_per_token
        )
        price: ModelPrice | None = base_price
        if input_cost is not None or output_cost is not None or params.cache_read_input_token_cost is not None:
            price = price_from_overrides(
                input_cost,
                output_cost,
                base_price,
                cache_read_input_token_cost=params.cache_read_input_token_cost,
                cache_creation_input_token_cost=params.cache_creation_input_token_cost,
            )
        if provider == "mock" and price is None:
            price = None  # unpriced unless the config prices it; listed in the startup warning
        model_id = info.id or _stable_id(index, entry.model_name, params.model, params.api_base)
        deployments.append(
            Deployment(
                model_id=model_id,
                model_name=entry.model_name,
                provider=provider,
                upstream_model=upstream_model,
                api_base=params.api_base,
                api_key=params.api_key,
                api_version=params.api_version,
                timeout_s=params.timeout or default_timeout,
                stream_timeout_s=params.stream_timeout,
                max_retries=params.max_retries,
                region_name=params.region_name,
                price=price,
                max_output_tokens=info.max_output_tokens or (price.max_output_tokens if price else None),
                mock_response=params.mock_response,
                mock_latency_ms=params.mock_latency_ms or 0.0,
                ssl_verify=parse_verify(params.ssl_verify),
                params=_provider_params(params, config),
            )
        )
    return deployments


def _provider_params(params: LiteLLMParams, config: Config) -> dict[str, Any]:
    """Every configured `litellm_params` key; `drop_params` defaults to `litellm_settings.drop_params` (LiteLLM's)."""
    values = params.model_dump(exclude_none=True)
    if "drop_params" not in values and config.litellm_settings.drop_params is not None:
        values["drop_params"] = config.litellm_settings.drop_params
    return values


def _stable_id(index: int, *parts: str | None) -> str:
    # Deterministic across restarts and instances, so x-litellm-model-id and spend logs line up.
    digest = hashlib.sha256("|".join([str(index), *(p or "" for p in parts)]).encode()).hexdigest()
    return digest[:16]


@dataclass(slots=True)
class RouteAttempts:
    """What one call took before it was answered (the response headers LiteLLM sends)."""

    retries: int = 0
    fallbacks: int = 0

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("x-litellm-attempted-retries", str(self.retries)),
            ("x-litellm-attempted-fallbacks", str(self.fallbacks)),
        ]


FailedAttempt = Callable[[Deployment, UpstreamError], None]


class Router:
    """Chooses a deployment for each attempt, retries failed ones, falls back to other groups."""

    def __init__(
        self,
        deployments: list[Deployment],
        providers: Mapping[str, Provider],
        *,
        num_retries: int | None = None,
        settings: RoutingSettings | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if settings is None:
            settings = RoutingSettings(num_retries=DEFAULT_NUM_RETRIES if num_retries is None else num_retries)
        self._settings = settings
        self._groups: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            self._groups.setdefault(deployment.model_name, []).append(deployment)
        self._providers = providers
        monotonic = (clock or SystemClock()).monotonic
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._load = DeploymentLoad(monotonic)
        self._cooldowns = Cooldowns(
            monotonic,
            cooldown_time_s=settings.cooldown_time_s,
            allowed_fails=settings.allowed_fails,
            allowed_fails_policy=settings.allowed_fails_policy,
            disabled=settings.disable_cooldowns,
        )
        self._strategy = Strategy(
            settings.routing_strategy,
            self._load,
            self._rng,
            latency_ttl_s=settings.latency_ttl_s,
            lowest_latency_buffer=settings.lowest_latency_buffer,
        )
        self._tracks_in_flight = settings.routing_strategy == "least-busy"
        # Round-robin positions by (group, region). Region subgroups are built on first use and only non-empty ones
        # are kept, so the keys are bounded by the regions the config names, whatever regions customers carry.
        self._cursor: dict[tuple[str, str | None], int] = {}
        self._regional: dict[tuple[str, str], list[Deployment]] = {}

    @classmethod
    def from_config(
        cls,
        config: Config,
        deployments: list[Deployment],
        providers: Mapping[str, Provider],
        *,
        clock: Clock | None = None,
    ) -> Router:
        """The router the config describes (`router_settings`, then `litellm_settings`)."""
        return cls(deployments, providers, settings=routing_settings(config), clock=clock)

    @property
    def model_names(self) -> list[str]:
        return list(self._groups)

    def group(self, model_name: str) -> list[Deployment]:
        """The deployments of a model, or a 400 naming the model and the available ones."""
        group = self._groups.get(model_name)
        if group is None:
            available = ", ".join(sorted(self._groups)) or "none configured"
            raise UnknownModelError(
                f"Invalid model name passed in model={model_name}. Call `/v1/models` to view available models for "
                f"your key. Available models: {available}",
                param="model",
                error_type="invalid_request_error",
            )
        return group

    def regional_group(self, model_name: str, region: str) -> list[Deployment]:
        """The deployments of a model in `region`, or a 400 naming the region and the model group.

        Raises:
            UnknownModelError: no such model.
            BadRequestError: none of its deployments has `region_name` equal to `region`.
        """
        subgroup = self._regional.get((model_name, region))
        if subgroup is not None:
            return subgroup
        group = self.group(model_name)
        subgroup = [deployment for deployment in group if deployment.region_name == region]
        if not subgroup:
            regions = sorted({d.region_name for d in group if d.region_name})
            raise BadRequestError(
                f"No deployment of model group '{model_name}' is in region '{region}', the only region this "
                f"customer's requests may use (allowed_model_region='{region}'). Regions of this model group: "
                f"{', '.join(regions) or 'none set'}.",
                param="model",
            )
        self._regional[(model_name, region)] = subgroup
        return subgroup

    def record_usage(self, deployment: Deployment, total_tokens: int) -> None:
        """Count a settled call's tokens against its deployment's `tpm` for this minute."""
        self._load.add_tokens(deployment.model_id, total_tokens)

    async def open(
        self,
        model_name: str,
        route: Route,
        body: dict[str, Any],
        stream: bool,
        *,
        region: str | None = None,
        on_failed_attempt: FailedAttempt | None = None,
        attempts: RouteAttempts | None = None,
        allows_model: Callable[[str], bool] | None = None,
        prompt_tokens: Callable[[], Awaitable[int]] | None = None,
    ) -> tuple[Deployment, UpstreamResponse]:
        """Open the call on a deployment of the group, else of its fallback groups; the first that answers.

        `attempts` is filled with the retries and fallbacks taken; `allows_model` says which fallback groups the
        caller may use (the requested one was checked before); `prompt_tokens` counts the prompt, asked only when a
        context window must be checked before the call.

        Raises:
            BadRequestError: `region` has no deployment of `model_name`.
            RateLimitError: every deployment of every group tried is cooling down or over its rpm/tpm.
            UpstreamError: the last failure, once retries and fallbacks are spent.
        """
        attempts = attempts if attempts is not None else RouteAttempts()
        call = _Call(route, body, stream, region, on_failed_attempt, attempts, prompt_tokens)
        try:
            return await self._open_group(model_name, call)
        except ProxyError as exc:
            chain = self._fallbacks_after(model_name, exc)
            if not chain:
                raise
            error: ProxyError = exc
        tried = 0
        for fallback in chain:
            if tried >= self._settings.max_fallbacks:
                break
            if (allows_model is not None and not allows_model(fallback)) or not self._serves(fallback, region):
                continue
            tried += 1
            attempts.fallbacks += 1
            logger.info("model group %s failed (%s); falling back to %s", model_name, error.status_code, fallback)
            try:
                return await self._open_group(fallback, call)
            except ProxyError as exc:
                error = exc
        raise error

    def _fallbacks_after(self, model_name: str, error: ProxyError) -> tuple[str, ...]:
        if is_context_window_error(error):
            return self._settings.context_window_fallbacks_of(model_name)
        if may_fall_back(error):
            return self._settings.fallbacks_of(model_name)
        return ()

    def _serves(self, model_name: str, region: str | None) -> bool:
        group = self._groups.get(model_name)
        if group is None:
            return False
        return region is None or any(d.region_name == region for d in group)

    def _members(self, model_name: str, region: str | None) -> list[Deployment]:
        """The group (or its region's part) rotated to this call's round-robin turn."""
        group = self.group(model_name) if region is None else self.regional_group(model_name, region)
        key = (model_name, region)
        turn = self._cursor.get(key, 0) % len(group)
        self._cursor[key] = turn + 1
        return group[turn:] + group[:turn] if turn else list(group)

    async def _open_group(self, model_name: str, call: _Call) -> tuple[Deployment, UpstreamResponse]:
        """One group: pick, and retry within it (LiteLLM's `async_function_with_retries`)."""
        members = self._members(model_name, call.region)
        if call.prompt_tokens is not None and (
            self._settings.pre_call_checks or self._settings.context_window_fallbacks_of(model_name)
        ):
            members = await self._fitting(model_name, members, call)
        settings = self._settings
        tried: set[str] = set()
        retries = 0
        last_error: UpstreamError | None = None
        while True:
            available = [
                d for d in members if not self._cooldowns.is_cooling(d.model_id) and self._load.has_capacity(d)
            ]
            if not available:
                if last_error is not None:
                    raise last_error  # the upstream's failure says more than "no deployments left"
                raise self._no_deployments(model_name, members)
            fresh = [d for d in available if d.model_id not in tried]
            deployment = self._strategy.pick(fresh or available)
            if last_error is not None and deployment.model_id in tried:
                # The same deployment again: give it time (another one would have been tried at once).
                delay = retry_delay_s(retries - 1, last_error, self._rng, min_wait_s=settings.min_retry_wait_s)
                await self._sleep(delay)
            tried.add(deployment.model_id)
            try:
                return await self._attempt(deployment, len(members), call)
            except UpstreamError as exc:
                allowed = retries_for(exc, settings.num_retries, settings.retry_policy)
                if is_context_window_error(exc) and settings.context_window_fallbacks_of(model_name):
                    allowed = 0  # straight to the context-window fallbacks, as LiteLLM does
                retrying = retries < allowed
                # The message was sanitised by the provider adapter, so operators can see why a call
                # failed without the upstream key it may have echoed.
                logger.info(
                    "attempt %d on deployment %s failed (%s: %s)%s",
                    retries + 1,
                    deployment.model_id,
                    exc.status_code,
                    exc.message,
                    "; retrying" if retrying else "",
                )
                if not retrying:
                    raise
                last_error = exc
                retries += 1
                call.attempts.retries += 1

    async def _attempt(
        self, deployment: Deployment, group_size: int, call: _Call
    ) -> tuple[Deployment, UpstreamResponse]:
        model_id = deployment.model_id
        self._load.start(model_id)
        started = self._monotonic()
        try:
            response = await self._providers[deployment.provider].open(deployment, call.route, call.body, call.stream)
        except UpstreamError as exc:
            self._load.finish(model_id)
            if isinstance(exc, GatewayTimeoutError):
                self._load.add_latency(model_id, deployment.timeout_s)  # a timeout ranks it last for latency routing
            if self._cooldowns.record_failure(model_id, exc, group_size=group_size):
                logger.warning("deployment %s cooling down for %gs", model_id, self._settings.cooldown_time_s)
            if call.on_failed_attempt is not None:
                call.on_failed_attempt(deployment, exc)
            raise
        except BaseException:
            self._load.finish(model_id)
            raise
        self._load.add_latency(model_id, self._monotonic() - started)
        self._cooldowns.record_success(model_id)
        if not self._tracks_in_flight:
            self._load.finish(model_id)
            return deployment, response
        return deployment, _InFlight(response, lambda: self._load.finish(model_id))

    async def _fitting(self, model_name: str, members: list[Deployment], call: _Call) -> list[Deployment]:
        """The members whose context window (where known) holds the prompt; a 400 context error when none does."""
        windows = [self._max_input_tokens(d) for d in members]
        if all(window is None for window in windows) or call.prompt_tokens is None:
            return members
        if call.counted_prompt is None:
            call.counted_prompt = await call.prompt_tokens()
        tokens = call.counted_prompt
        fitting = [d for d, window in zip(members, windows, strict=True) if window is None or tokens <= window]
        if fitting:
            return fitting
        largest = max(window for window in windows if window is not None)
        raise BadRequestError(
            f"This model's maximum context length is {largest} tokens. However, your messages resulted in {tokens} "
            f"tokens. Passed model={model_name}.",
            param="messages",
            code="context_length_exceeded",
        )

    def _max_input_tokens(self, deployment: Deployment) -> int | None:
        configured = self._settings.max_input_tokens.get(deployment.model_id)
        if configured is not None:
            return configured
        return deployment.price.max_input_tokens if deployment.price is not None else None

    def _no_deployments(self, model_name: str, members: Sequence[Deployment]) -> RateLimitError:
        """LiteLLM's `RouterRateLimitError`: every deployment is cooling down or over its rpm/tpm."""
        ids = [d.model_id for d in members]
        cooling = self._cooldowns.cooling(ids)
        if len(cooling) == len(ids):
            wait_s = self._cooldowns.remaining_s(cooling)
            reason = " All deployments for selected model are in cooldown."
        else:
            wait_s = 60 - self._monotonic() % 60  # the rpm/tpm minute turns
            reason = " Deployment over user-defined ratelimit."
        seconds = max(1, math.ceil(wait_s))
        return RateLimitError(
            f"No deployments available for selected model, Try again in {seconds} seconds.{reason} Passed "
            f"model={model_name}. pre-call-checks={self._settings.pre_call_checks}, cooldown_list={cooling}",
            headers={"retry-after": str(seconds)},
        )


@dataclass(slots=True)
class _Call:
    """What every attempt of one call shares."""

    route: Route
    body: dict[str, Any]
    stream: bool
    region: str | None
    on_failed_attempt: FailedAttempt | None
    attempts: RouteAttempts
    prompt_tokens: Callable[[], Awaitable[int]] | None
    counted_prompt: int | None = None


class _InFlight:
    """An upstream response that tells the router when it is done (`least-busy` counts calls in flight)."""

    __slots__ = ("_done", "_on_done", "_response", "status")

    def __init__(self, response: UpstreamResponse, on_done: Callable[[], None]) -> None:
        self._response = response
        self._on_done = on_done
        self._done = False
        self.status = response.status

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._on_done()

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        finally:
            self._finish()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.iter_chunks():
                yield chunk
        finally:
            self._finish()

    def at_end(self) -> bool:
        return self._response.at_end()

    def close(self) -> None:
        self._finish()
        self._response.close()
