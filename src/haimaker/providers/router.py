"""Model groups: which deployments serve a public model name, load balancing, and retries.

Several `model_list` entries with one `model_name` form a group; requests rotate over it, and a
failed attempt (connection error, timeout, 429, 5xx) moves to the next deployment, up to
`num_retries` retries. Nothing is retried once a byte has reached the client.

Region routing: a call given a `region` (the customer's `allowed_model_region`) only ever reaches the group's
deployments whose `litellm_params.region_name` equals it, exactly as LiteLLM's `is_region_allowed` compares them
(case-sensitive; a deployment without `region_name` is in no region). Rotation, retries and failover stay inside that
subgroup; when it is empty the call is a 400 before any upstream is tried. LiteLLM applies the rule only with
`router_settings.enable_pre_call_checks`; we apply it always, since a customer pinned to a region must never be
served outside it because a flag was left unset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from haimaker.accounting.pricing import ModelPrice, PriceTable, price_from_overrides
from haimaker.config.schema import Config
from haimaker.errors import BadRequestError, UnknownModelError, UpstreamError
from haimaker.providers.base import Deployment, Provider, Route, UpstreamResponse
from haimaker.providers.tls import parse_verify

logger = logging.getLogger("haimaker.router")

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_NUM_RETRIES = 2


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
                params=params.model_dump(exclude_none=True),
            )
        )
    return deployments


def _stable_id(index: int, *parts: str | None) -> str:
    # Deterministic across restarts and instances, so x-litellm-model-id and spend logs line up.
    digest = hashlib.sha256("|".join([str(index), *(p or "" for p in parts)]).encode()).hexdigest()
    return digest[:16]


class Router:
    """Chooses a deployment for each attempt and retries failed ones."""

    def __init__(self, deployments: list[Deployment], providers: Mapping[str, Provider], *, num_retries: int) -> None:
        self._groups: dict[str, list[Deployment]] = {}
        for deployment in deployments:
            self._groups.setdefault(deployment.model_name, []).append(deployment)
        self._providers = providers
        self._num_retries = num_retries
        self._cursor: dict[str, int] = dict.fromkeys(self._groups, 0)
        # Region subgroups, built on first use. Only non-empty ones are kept, so the keys are bounded by the regions
        # the config names, whatever regions customers carry.
        self._regional: dict[tuple[str, str], list[Deployment]] = {}
        self._regional_cursor: dict[tuple[str, str], int] = {}

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
        self._regional_cursor[(model_name, region)] = 0
        return subgroup

    async def open(
        self,
        model_name: str,
        route: Route,
        body: dict[str, Any],
        stream: bool,
        *,
        region: str | None = None,
        on_failed_attempt: Callable[[Deployment, UpstreamError], None] | None = None,
    ) -> tuple[Deployment, UpstreamResponse]:
        """Open the call on one deployment of the group, moving on to the next after a retryable failure.

        With `region`, only the group's deployments in that region are tried (`regional_group`).
        """
        if region is None:
            group = self.group(model_name)
            start = self._cursor[model_name]
            self._cursor[model_name] = (start + 1) % len(group)
        else:
            group = self.regional_group(model_name, region)
            start = self._regional_cursor[(model_name, region)]
            self._regional_cursor[(model_name, region)] = (start + 1) % len(group)
        attempts = 1 + self._num_retries
        last_error: UpstreamError | None = None
        for attempt in range(attempts):
            deployment = group[(start + attempt) % len(group)]
            try:
                response = await self._providers[deployment.provider].open(deployment, route, body, stream)
            except UpstreamError as exc:
                last_error = exc
                if on_failed_attempt is not None:
                    on_failed_attempt(deployment, exc)
                retrying = exc.is_retryable and attempt < attempts - 1
                # The message was sanitised by the provider adapter, so operators can see why a call
                # failed without the upstream key it may have echoed.
                logger.info(
                    "attempt %d on deployment %s failed (%s: %s)%s",
                    attempt + 1,
                    deployment.model_id,
                    exc.status_code,
                    exc.message,
                    "; retrying" if retrying else "",
                )
                if not retrying:
                    raise
                continue
            return deployment, response
        assert last_error is not None  # the loop either returns or raises
        raise last_error
