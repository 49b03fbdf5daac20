"""One proxied LLM request, top to bottom, framework-free.

    authenticate → parse (one orjson pass) → resolve customer → admit (limits engine, memory or one
    Redis script) → route and forward (retries before the first byte) → relay JSON or SSE, tapping usage
    → settle (price, replace the reservation, queue the durable charge)

Every path after admission either settles or releases exactly once: a failed upstream call is never
charged, a stream cut after tokens were produced is charged for what was produced.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import orjson

from haimaker.accounting.pricing import Usage, UsageError, check_billable, cost_nanos, usage_from_openai
from haimaker.accounting.recorder import NEW_CUSTOMER_BUDGET_FIELD, SpendRecorder
from haimaker.accounting.refusals import Refusal, RefusalLog, error_metadata
from haimaker.accounting.tokens import DEFAULT_INLINE_LIMIT_CHARS, TokenCounter
from haimaker.clock import Clock
from haimaker.errors import (
    AuthenticationError,
    BadGatewayError,
    PermissionDeniedError,
    ProxyError,
    UpstreamError,
)
from haimaker.identity import Attribution, Authenticator, Caller, CustomerIdResolver
from haimaker.limits.engine import BudgetEngine, GroupPrice, Ticket, group_price, key_allows_model
from haimaker.metrics import Metrics
from haimaker.money import nanos_to_usd
from haimaker.providers.base import Deployment, Route, UpstreamResponse
from haimaker.providers.redaction import Redactor
from haimaker.providers.router import RouteAttempts, Router
from haimaker.providers.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    SSETap,
    choice_texts,
    error_event,
    response_output_texts,
)
from haimaker.request_body import max_output_tokens, parse_body, positive_int_or, responses_prompt, without_proxy_fields
from haimaker.storage.records import SpendLog, VirtualKey

logger = logging.getLogger("haimaker.pipeline")

Headers = list[tuple[str, str]]


@dataclass(slots=True)
class JsonResult:
    status: int
    body: bytes
    headers: Headers


@dataclass(slots=True)
class StreamResult:
    headers: Headers
    chunks: AsyncIterator[bytes]
    # True once the relayed stream has carried `data: [DONE]` and the upstream response has ended: the rest of the
    # relay then finishes without waiting, and nothing the client should see follows.
    done: Callable[[], bool] = lambda: False


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    enforce_user_param: bool = False
    track_customers: bool = True
    always_include_stream_usage: bool | None = None
    max_sse_event_bytes: int = DEFAULT_MAX_EVENT_BYTES


@dataclass(slots=True)
class _Call:
    """What one request carries through the pipeline."""

    route: Route
    body: dict[str, Any]
    model: str
    stream: bool
    call_id: str
    started: float
    started_at: datetime
    customer_id: str | None
    key_hash: str = ""
    call_type: str = ""
    ticket: Ticket | None = None
    prompt_tokens: int | None = None
    upstream_started: float = 0.0
    upstream_s: float = 0.0
    extra_headers: Headers = field(default_factory=list)
    # Kept past a release: a failed first call still creates the customer on its key's `end_user_budget_id`.
    new_customer_budget_id: str | None = None


class Pipeline:
    def __init__(
        self,
        *,
        auth: Authenticator,
        customers: CustomerIdResolver,
        router: Router,
        engine: BudgetEngine,
        tokens: TokenCounter,
        recorder: SpendRecorder,
        refusals: RefusalLog,
        metrics: Metrics,
        options: PipelineOptions,
        clock: Clock,
        redactor: Redactor | None = None,
    ) -> None:
        self._auth = auth
        # Bound once: the spend log's times cost one call, as `datetime.now(UTC)` did, and follow a test's clock.
        self._now = clock.now
        self._redactor = redactor or Redactor()
        self._customers = customers
        self._router = router
        self._engine = engine
        self._tokens = tokens
        self._recorder = recorder
        self._refusals = refusals
        self._metrics = metrics
        self._options = options
        self._group_prices: dict[str, GroupPrice] = {}
        for name in router.model_names:
            group = router.group(name)
            self._group_prices[name] = group_price([d.price for d in group], [d.max_output_tokens for d in group])

    async def run(
        self,
        route: Route,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        path_model: str | None = None,
        path: str | None = None,
        call_type: str | None = None,
        attribution: Attribution | None = None,
    ) -> JsonResult | StreamResult:
        """Serve one request; raise a `ProxyError` for anything the client must be told (and count it).

        `path_model` is the model named by an Azure-style URL (`/openai/deployments/<model>/...`); `path` is the
        request's path (a key's `allowed_routes` name paths); `call_type` is the spend log's for a request that came
        through another API (`api/dialects.py`), the route's otherwise; `attribution`, when given, is told the
        caller and the customer as soon as they are known (the access log's, refused requests included).
        """
        started = time.perf_counter()
        try:
            caller = await self._auth.check_llm(headers, path or f"/{route.value}")
            if attribution is not None:
                attribution.caller = caller
            body = parse_body(route, raw, path_model)
        except ProxyError as exc:
            self.observe_error(route, None, exc.status_code, started)
            raise
        model = body["model"]
        try:
            return await self._serve(route, body, model, headers, started, caller, call_type, attribution)
        except ProxyError as exc:
            # Counted under the requested model (bounded: unknown names become "other"), so that the
            # error rate of each configured model can be read from the metrics.
            self.observe_error(route, model, exc.status_code, started)
            raise

    async def _serve(
        self,
        route: Route,
        body: dict[str, Any],
        model: str,
        headers: Mapping[str, str],
        started: float,
        caller: Caller,
        call_type: str | None = None,
        attribution: Attribution | None = None,
    ) -> JsonResult | StreamResult:
        customer_id = self._customers.resolve(headers, body)
        bound = caller.customer_id
        if bound is not None:
            # Trusted identity: the key names its customer; a request that names another is refused, never re-billed.
            if customer_id is not None and customer_id != bound:
                raise PermissionDeniedError(
                    f"This key is bound to one customer and the request names another ({customer_id!r}); omit the "
                    "customer id or send the key's own.",
                    error_type="customer_mismatch",
                    param="user",
                )
            customer_id = bound
        if attribution is not None:
            attribution.customer_id = customer_id
        if customer_id is None and self._options.enforce_user_param:
            raise AuthenticationError("Authentication Error, 'user' param not passed in. 'enforce_user_param'=True")
        self._router.group(model)  # unknown model: 400 before anything else is spent
        customer = await self._engine.catalog.lookup(customer_id) if customer_id is not None else None
        region = customer.allowed_model_region if customer is not None else None
        key = caller.key
        call = _Call(
            route=route,
            body=body,
            model=model,
            stream=body.get("stream") is True and route is not Route.EMBEDDINGS,
            call_id=str(uuid.uuid4()),
            started=started,
            started_at=self._now(),
            customer_id=customer_id,
            key_hash=caller.token,
            call_type=call_type or route.call_type,
        )
        try:  # admission: a refusal of a named customer shows in its latest requests (`_note_refusal`)
            # A customer's allowed_model_region keeps its call on deployments of that region (providers/router.py); a
            # model with none there is a 400 before admission, so the refused request costs no rate-limit slot.
            if customer is not None and region is not None and not customer.blocked:  # blocked: admission's 403 first
                self._router.regional_group(model, region)
            if key is not None and not key_allows_model(key, model):
                raise PermissionDeniedError(
                    f"The requested model '{model}' is not available for this API key, or the model name is invalid. "
                    "Check the models available to you and try again.",
                    error_type="key_model_access_denied",
                    param="model",
                )
            if customer_id is not None or key is not None:
                await self._admit(call, customer_id, key)
        except ProxyError as exc:
            self._note_refusal(call, exc)
            raise
        upstream_body = self._upstream_body(call)
        call.upstream_started = time.perf_counter()
        attempts = RouteAttempts()

        def may_use(name: str) -> bool:
            # A fallback group must be one this key and this customer may use, as the requested one was.
            return (key is None or key_allows_model(key, name)) and (
                customer is None or not customer.models or name in customer.models
            )

        async def count_prompt() -> int:
            if call.prompt_tokens is None:
                call.prompt_tokens = await self._count_prompt(call)
            return call.prompt_tokens

        try:
            deployment, response = await self._router.open(
                model,
                route,
                upstream_body,
                call.stream,
                region=region,
                on_failed_attempt=self._count_failure,
                attempts=attempts,
                allows_model=may_use,
                prompt_tokens=count_prompt,
            )
        except BaseException:
            self._release(call)
            raise
        call.extra_headers = attempts.headers()
        call.upstream_s = time.perf_counter() - call.upstream_started
        self._metrics.observe_upstream(model, deployment.provider, call.upstream_s)
        if call.stream:
            return self._stream(call, deployment, response)
        return await self._whole(call, deployment, response)

    async def _admit(self, call: _Call, customer_id: str | None, key: VirtualKey | None) -> None:
        group = self._group_prices[call.model]
        new_budget = key.end_user_budget_id if key is not None else None
        if (customer_id is not None and self._engine.needs_prompt_count(customer_id, new_budget)) or (
            key is not None and self._engine.needs_key_prompt_count(key, call.model)
        ):
            call.prompt_tokens = await self._count_prompt(call)
        call.ticket = await self._engine.admit(
            customer_id,
            call.model,
            group,
            prompt_tokens=call.prompt_tokens or 0,
            max_output_tokens=max_output_tokens(call.body),
            n=positive_int_or(call.body.get("n"), 1),
            key=key,
        )
        call.new_customer_budget_id = call.ticket.new_customer_budget_id

    async def _count_prompt(self, call: _Call) -> int:
        body, model = call.body, call.model
        if call.route is Route.CHAT:
            return await self._tokens.count_chat_prompt_async(body.get("messages"), model, tools=body.get("tools"))
        if call.route is Route.COMPLETIONS:
            return await self._tokens.count_completion_prompt_async(body.get("prompt"), model)
        if call.route is Route.RESPONSES:
            return await self._tokens.count_chat_prompt_async(responses_prompt(body), model, tools=body.get("tools"))
        return await self._tokens.count_embedding_input_async(body.get("input"), model)

    def _upstream_body(self, call: _Call) -> dict[str, Any]:
        """The body the provider gets: the client's without `PROXY_ONLY_FIELDS`, asking for stream usage.

        The client's body is never mutated (the spend log and identity read it); it is copied only when a field has
        to go or be added.
        """
        body = without_proxy_fields(call.body)
        if not call.stream or call.route is Route.RESPONSES:
            # A Responses stream always ends with its usage (`response.completed`); it has no `stream_options`.
            return body
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return body
        if self._options.always_include_stream_usage is False:
            return body
        # Ask for usage so the call can be priced; the extra chunk is stripped before the client sees it.
        return {
            **body,
            "stream_options": {**(options if isinstance(options, dict) else {}), "include_usage": True},
        }

    def _client_wants_usage(self, call: _Call) -> bool:
        options = call.body.get("stream_options")
        return (isinstance(options, dict) and options.get("include_usage") is True) or (
            self._options.always_include_stream_usage is True
        )

    async def _whole(self, call: _Call, deployment: Deployment, response: UpstreamResponse) -> JsonResult:
        try:
            data = await response.read()
        except BaseException:
            self._release(call)
            raise
        call.upstream_s = time.perf_counter() - call.upstream_started
        try:
            answer = _answer_of(data)
            usage = _usage_of(answer)
            if usage is None:
                # No usage reported: the text the client gets is counted, never charged as zero output tokens.
                text = _answer_text(answer)
                if len(text) > DEFAULT_INLINE_LIMIT_CHARS:
                    usage = await asyncio.to_thread(self._count_usage, call, deployment, text)
                else:
                    usage = self._count_usage(call, deployment, text)
            check_billable(deployment.price, usage)
        except UsageError as exc:
            self._reject(call, deployment, BadGatewayError(f"Upstream reported an impossible usage ({exc})."))
        except UpstreamError as exc:
            self._reject(call, deployment, exc)
        headers = self._settle(call, deployment, usage)
        return JsonResult(200, data, headers)

    def _reject(self, call: _Call, deployment: Deployment, error: UpstreamError) -> NoReturn:
        """An answer that cannot be passed on or priced: released, logged and recorded as a failure, then raised."""
        self._release(call)
        self._count_failure(deployment, error)
        self._record_failure(call, deployment, error)
        logger.warning("upstream %s sent an unusable answer: %s", deployment.model_id, error.message)
        raise error

    def _tap(self, call: _Call, deployment: Deployment) -> SSETap:
        """The stream's tap: our secrets scrubbed, events capped, usage bounded at this deployment's price."""
        price = deployment.price
        return SSETap(
            keep_usage_chunk=self._client_wants_usage(call),
            responses=call.route is Route.RESPONSES,
            redactor=self._redactor,
            max_event_bytes=self._options.max_sse_event_bytes,
            check_usage=None if price is None else lambda usage: check_billable(price, usage),
        )

    def _stream(self, call: _Call, deployment: Deployment, response: UpstreamResponse) -> StreamResult:
        headers = self._common_headers(call, deployment)
        if call.ticket is not None:
            headers.extend(call.ticket.rate_headers())
        tap = self._tap(call, deployment)
        self._observe(call, 200)
        return StreamResult(
            headers, self._relay(call, deployment, response, tap), done=lambda: tap.finished and response.at_end()
        )

    async def _relay(
        self, call: _Call, deployment: Deployment, response: UpstreamResponse, tap: SSETap
    ) -> AsyncIterator[bytes]:
        failed: ProxyError | None = None
        settled = False
        try:
            try:
                async for piece in response.iter_chunks():
                    out = tap.feed(piece)
                    if tap.finished and not settled:
                        # `out` carries [DONE]: charge (journal) before the client can see the stream end, so that an
                        # acknowledged stream survives a crash of this process.
                        settled = True
                        self._settle_stream(call, deployment, tap, None)
                    if out:
                        yield out
                rest = tap.flush()
                if rest:
                    yield rest
                if not tap.finished and not tap.saw_error and not tap.saw_finish_reason:
                    raise UpstreamError("Upstream closed the stream before it was complete.")
            except UpstreamError as exc:
                failed = exc
                logger.warning("upstream %s failed mid-stream: %s", deployment.model_id, exc.message)
                yield error_event(exc.message, exc.error_type, exc.code)
        finally:
            # Runs on completion, upstream failure and client disconnect (GeneratorExit) alike; never awaits.
            response.close()
            if not settled:
                self._settle_stream(call, deployment, tap, failed)

    def _settle_stream(self, call: _Call, deployment: Deployment, tap: SSETap, failed: ProxyError | None) -> None:
        # The tap refused an impossible usage (the client got an error event): then the delivered text is counted.
        usage = tap.parsed_usage
        if usage is None:
            text = tap.produced_text()
            if not text:
                # Nothing was produced: an upstream failure or an early hang-up costs nothing.
                self._release(call)
                if failed is not None:
                    self._record_failure(call, deployment, failed)
                return
            usage = self._count_usage(call, deployment, text)
            try:
                check_billable(deployment.price, usage)
            except UsageError as exc:  # only a nonsense price gets here: charge nothing rather than nonsense
                error = BadGatewayError(f"Unbillable stream ({exc}).")
                logger.warning("stream of %s not charged: %s", deployment.model_id, error.message)
                self._release(call)
                self._record_failure(call, deployment, error)
                return
        self._settle(call, deployment, usage)

    def _count_usage(self, call: _Call, deployment: Deployment, completion_text: str) -> Usage:
        prompt = call.prompt_tokens
        if prompt is None:
            # The same prompt as admission's `_count_prompt`, counted synchronously (this runs in a `finally`).
            if call.route is Route.CHAT:
                prompt = self._tokens.count_chat_prompt(
                    call.body.get("messages"), call.model, tools=call.body.get("tools")
                )
            elif call.route is Route.COMPLETIONS:
                prompt = self._tokens.count_completion_prompt(call.body.get("prompt"), call.model)
            elif call.route is Route.RESPONSES:
                prompt = self._tokens.count_chat_prompt(
                    responses_prompt(call.body), call.model, tools=call.body.get("tools")
                )
            else:
                prompt = self._tokens.count_embedding_input(call.body.get("input"), call.model)
        completion = self._tokens.count_text(completion_text, deployment.upstream_model) if completion_text else 0
        return Usage(prompt_tokens=prompt, completion_tokens=completion)

    def _settle(self, call: _Call, deployment: Deployment, usage: Usage) -> Headers:
        """Charge the call and build its response headers (never awaits)."""
        # The deployment's own tpm and usage-based routing count what it served.
        self._router.record_usage(deployment, usage.total_tokens)
        headers = self._common_headers(call, deployment)
        cost = 0
        if call.ticket is not None:
            # With end-user cost tracking off, the key is still charged; the customer's reservation is given back.
            settlement = self._engine.settle(
                call.ticket, deployment.price, usage, charge_customer=self._options.track_customers
            )
            cost = settlement.cost
            headers.extend(call.ticket.rate_headers(None if call.stream else usage.total_tokens))
            if settlement.over_soft_budget:
                headers.append(("x-litellm-soft-budget-exceeded", "true"))
        else:
            self._release(call)
            cost = cost_nanos(deployment.price, usage) if deployment.price is not None else 0
        now = self._now()
        self._recorder.record(
            SpendLog(
                request_id=call.call_id,
                end_user=call.customer_id if (call.customer_id and self._options.track_customers) else "",
                model=deployment.upstream_model,
                model_id=deployment.model_id,
                model_group=deployment.model_name,
                custom_llm_provider=deployment.provider,
                call_type=call.call_type,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                spend=cost,
                start_time=call.started_at,
                end_time=now,
                cache_read_input_tokens=usage.cache_read_tokens,
                cache_creation_input_tokens=usage.cache_creation_tokens,
                api_key=call.key_hash,
                metadata=_log_metadata(call),
            )
        )
        model_label = self._metrics.model_label(call.model)
        self._metrics.tokens.labels(model_label, "prompt").inc(usage.prompt_tokens)
        self._metrics.tokens.labels(model_label, "completion").inc(usage.completion_tokens)
        if not call.stream:
            headers.append(("x-litellm-response-cost", repr(nanos_to_usd(cost))))
            self._observe(call, 200)
        return headers

    def _common_headers(self, call: _Call, deployment: Deployment) -> Headers:
        total_s = time.perf_counter() - call.started
        overhead_ms = max(0.0, (total_s - call.upstream_s) * 1000)
        headers = [
            ("x-litellm-call-id", call.call_id),
            ("x-litellm-model-id", deployment.model_id),
            # The group that answered: the requested one, or the fallback group the router reached.
            ("x-litellm-model-group", deployment.model_name),
            ("x-litellm-response-duration-ms", f"{total_s * 1000:.3f}"),
            ("x-litellm-overhead-duration-ms", f"{overhead_ms:.3f}"),
            *call.extra_headers,
        ]
        if deployment.region_name:
            headers.append(("x-litellm-model-region", deployment.region_name))
        return headers

    def _observe(self, call: _Call, status: int) -> None:
        total_s = time.perf_counter() - call.started
        self._metrics.observe_request(
            call.route.value, call.model, status, total_s, max(0.0, total_s - call.upstream_s)
        )

    def observe_error(self, route: Route, model: str | None, status: int, started: float) -> None:
        # No overhead sample for errors: most never reach an upstream.
        self._metrics.observe_request(route.value, model, status, time.perf_counter() - started, -1.0)

    def _release(self, call: _Call) -> None:
        if call.ticket is not None:
            self._engine.release(call.ticket)
            call.ticket = None

    def _record_failure(self, call: _Call, deployment: Deployment, error: ProxyError) -> None:
        self._recorder.record(
            SpendLog(
                request_id=call.call_id,
                end_user=call.customer_id or "",
                model=deployment.upstream_model,
                model_id=deployment.model_id,
                model_group=deployment.model_name,
                custom_llm_provider=deployment.provider,
                call_type=call.call_type,
                prompt_tokens=0,
                completion_tokens=0,
                total_tokens=0,
                spend=0,
                start_time=call.started_at,
                end_time=self._now(),
                status="failure",
                api_key=call.key_hash,
                metadata={**_log_metadata(call), **error_metadata(error, error.message[:200])},
            )
        )

    def _note_refusal(self, call: _Call, error: ProxyError) -> None:
        """A request naming a customer, refused at admission, goes to the customer's latest requests (a bounded
        number of rows, never awaiting: `accounting/refusals.py`)."""
        if call.customer_id is not None and self._options.track_customers:
            self._refusals.note(Refusal(call.customer_id, call.model, call.call_type, call.key_hash, error))

    def _count_failure(self, deployment: Deployment, error: UpstreamError) -> None:
        self._metrics.upstream_failures.labels(
            self._metrics.model_label(deployment.model_name), deployment.provider, str(error.status_code)
        ).inc()


def _log_metadata(call: _Call) -> dict[str, Any]:
    """What the spend log's metadata carries: the budget of a customer first seen through a key (the recorder creates
    the customer on it)."""
    budget_id = call.new_customer_budget_id
    return {} if budget_id is None else {NEW_CUSTOMER_BUDGET_FIELD: budget_id}


def _answer_of(data: bytes) -> dict[str, Any]:
    """A non-streaming upstream answer: a JSON object, or a 502 (never relayed as a 200, never charged)."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadGatewayError("Upstream returned an unreadable answer (not JSON).") from None
    if not isinstance(answer, dict):
        raise BadGatewayError("Upstream returned an unreadable answer (not a JSON object).")
    return answer


def _usage_of(answer: dict[str, Any]) -> Usage | None:
    """The answer's usage, None if it reports none; `UsageError` when it reports one no model can have."""
    return usage_from_openai(answer.get("usage"))


def _answer_text(answer: dict[str, Any]) -> str:
    """The text an answer delivers: every choice's message (chat) or text (completions), a Responses answer's
    output; "" for embeddings."""
    if answer.get("object") == "response":
        return "".join(response_output_texts(answer))
    return "".join(choice_texts(answer, "message"))
