"""The config file's schema: LiteLLM's `config.yaml` keys, validated with pydantic.

Known keys are typed and validated (a bad value stops startup with its YAML path). Keys we do not
implement are kept as pydantic extras rather than refused, because LiteLLM configs carry many of them:
`config/typos.py` names them so startup can warn once (or refuse a typo) instead of dropping them silently.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from haimaker.config.usage_export import UsageExportSinks
from haimaker.errors import BadRequestError
from haimaker.periods import parse_age, validate_duration

_VERIFY_FLAGS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off"})
# The largest amount of money a config may declare: what the store holds as nano-dollars (as POST /budget/new).
MAX_CONFIG_USD = Decimal(1_000_000_000)


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _existing_bundle(value: bool | str | None) -> bool | str | None:
    """An `ssl_verify` value: a flag (a bool, or "True"/"False" as LiteLLM's env-style values are written), or the
    path of a CA bundle, which must exist."""
    is_flag = isinstance(value, str) and value.strip().lower() in _VERIFY_FLAGS
    if isinstance(value, str) and not is_flag and not os.path.exists(value):
        raise ValueError(f"CA bundle {value!r} does not exist")
    return value


class LiteLLMParams(_Section):
    """How to reach one deployment (`model_list[].litellm_params`)."""

    model: str = Field(description="`provider/name`, e.g. `openai/gpt-4o`, `azure/my-deployment`, `mock/echo`")
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    timeout: float | None = Field(default=None, gt=0, description="Seconds before the upstream call times out")
    stream_timeout: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=0, description="Requests per minute this deployment takes (per instance)")
    tpm: int | None = Field(default=None, ge=0, description="Tokens per minute this deployment takes (per instance)")
    weight: float | None = Field(default=None, ge=0, description="`simple-shuffle`: this deployment's share of picks")
    region_name: str | None = None
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    cache_read_input_token_cost: float | None = Field(default=None, ge=0)
    cache_creation_input_token_cost: float | None = Field(default=None, ge=0)
    vertex_project: str | None = Field(
        default=None, description="`vertex_ai/`: the Google Cloud project (else the credentials' project_id)"
    )
    vertex_location: str | None = Field(
        default=None,
        description="`vertex_ai/`: the region (`global` too); default us-central1",
        examples=["europe-west4"],
    )
    vertex_credentials: str | dict[str, Any] | None = Field(
        default=None,
        description="`vertex_ai/`: a service-account JSON file's path, or its JSON (a string or a mapping); "
        "unset: Application Default Credentials",
    )
    aws_region_name: str | None = Field(default=None, description="`bedrock/`: the AWS region (else the environment's)")
    aws_access_key_id: str | None = Field(default=None, description="`bedrock/`: else the standard AWS credentials")
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    aws_profile_name: str | None = Field(default=None, description="`bedrock/`: a profile of ~/.aws/config")
    aws_bedrock_runtime_endpoint: str | None = Field(default=None, description="`bedrock/`: another endpoint")
    drop_params: bool | None = Field(
        default=None, description="Drop OpenAI fields the provider has no place for instead of a 400 naming them"
    )
    extra_headers: dict[str, str] | None = Field(default=None, description="Headers added to every upstream call")
    use_chat_completions_api: bool | None = Field(
        default=None, description="`openai/`, `azure/`: translate /v1/responses to chat instead of forwarding it"
    )
    responses_api_version: str | None = Field(default=None, description="`azure/`: api-version of /openai/responses")
    mock_response: str | None = Field(default=None, description="`mock/` provider: the reply text")
    mock_latency_ms: float | None = Field(default=None, ge=0, description="`mock/` provider: delay before answering")
    ssl_verify: bool | str | None = Field(
        default=None,
        description="TLS verification of this upstream, as in LiteLLM: true (the system's CAs, or env SSL_CERT_FILE), "
        "false (none), or the path of a CA bundle (PEM file or hashed directory) that replaces the system's CAs; "
        "unset: env SSL_VERIFY, else litellm_settings.ssl_verify, else true",
        examples=["/etc/haimaker/internal-ca.pem", False],
    )

    _bundle_exists = field_validator("ssl_verify")(_existing_bundle)

    @field_validator("model")
    @classmethod
    def _has_provider(cls, value: str) -> str:
        if "/" not in value or not value.split("/", 1)[1]:
            raise ValueError("must be `provider/model`, e.g. `openai/gpt-4o-mini`")
        return value


class ModelInfo(_Section):
    id: str | None = None
    base_model: str | None = None
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    max_input_tokens: int | None = Field(
        default=None, gt=0, description="The context window: a longer prompt goes to `context_window_fallbacks`"
    )
    mode: str | None = None


class ModelEntry(_Section):
    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: ModelInfo = Field(default_factory=ModelInfo)


class UserHeaderMapping(_Section):
    header_name: str
    litellm_user_role: str


class GeneralSettings(_Section):
    master_key: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    redis_key_prefix: str = Field(
        default="haimaker",
        min_length=1,
        pattern=r"^[^\s{}]+$",
        description="Prefix of every Redis key and channel of this deployment (several may share one Redis)",
    )
    proxy_batch_write_at: float = Field(default=0.1, gt=0, description="Seconds between grouped spend writes (max)")
    enforce_user_param: bool = False
    user_header_name: str | None = None
    user_header_mappings: list[UserHeaderMapping] = Field(default_factory=list)
    disable_budget_reservation: bool = False
    fail_closed_budget_enforcement: bool = False
    always_include_stream_usage: bool | None = None
    disable_reset_budget: bool = False
    proxy_budget_rescheduler_min_time: float = Field(default=597, gt=0)
    proxy_budget_rescheduler_max_time: float = Field(default=605, gt=0)
    alerting: list[str] = Field(default_factory=list)
    allow_unauthenticated: bool = False
    default_max_output_tokens: int = Field(default=4096, gt=0)
    dangerously_permit_weak_or_unset_master_key: bool = False
    access_log: bool = Field(
        default=False,
        description="One log line per HTTP request (method, path without its query, status, milliseconds, customer id, "
        "key alias or abbreviated key); also on with --detailed_debug or env DETAILED_DEBUG=true",
    )
    background_health_checks: bool = False
    auth_failure_limit: int = Field(
        default=20,
        ge=0,
        description="Wrong keys (API or UI sign-in) one client address may present within `auth_failure_window_s` "
        "before it is refused with 429 for a while, the right key included (0: never throttle)",
    )
    auth_failure_window_s: float = Field(
        default=60, gt=0, description="Window of `auth_failure_limit`, and the first block's length (doubles after)"
    )
    auth_max_block_s: float = Field(default=900, gt=0, description="Longest block of a throttled client address")
    auth_trusted_proxies: list[str] = Field(
        default_factory=list,
        description="IP addresses of reverse proxies whose X-Forwarded-For names the client for the key throttle "
        "(default none: the socket peer is the client)",
        examples=[["10.0.0.5"]],
    )
    client_header_timeout_s: float = Field(
        default=10,
        gt=0,
        description="Seconds a client has to send a request's headers, from its first byte (or from connecting); "
        "past it the connection is closed (slowloris)",
    )
    client_body_timeout_s: float = Field(
        default=60,
        gt=0,
        description="Seconds a client has to send a request's whole body once its headers arrived; past it the "
        "answer is 408 and the connection is closed (a body dripped byte by byte)",
    )
    spend_journal: bool = Field(
        default=True,
        description="Journal every charge to a local file before its response is sent, replayed into the store at "
        "the next start after a crash (docs/durability.md); false keeps pending charges in memory only",
    )
    spend_journal_dir: str | None = Field(
        default=None,
        description="Directory of the spend journal (default: `haimaker-journal` beside the config file); "
        "processes serving the same store may share it",
        examples=["/var/lib/haimaker/journal"],
    )
    spend_journal_fsync: Literal["never", "group"] = Field(
        default="never",
        description="`never`: the journal survives a crash of the process (kill -9, OOM kill); `group`: it is also "
        "fsynced every write interval (proxy_batch_write_at, at most 100 ms) in a worker thread, so a machine crash "
        "loses at most the charges of that last interval (docs/durability.md)",
    )
    spend_queue_max: int = Field(
        default=50_000,
        ge=100,
        description="Charges held in memory for the store writer; past it (the store down or slow) they wait in the "
        "journal only (ignored without a journal: memory is then their only copy)",
    )
    customer_cache_max: int = Field(
        default=100_000,
        ge=10,
        description="Customers held in memory (the working set of active customers; the store may hold millions). "
        "Past it, idle customers whose charges are written are evicted and read back on their next request. A soft "
        "bound: customers with requests in flight or charges not yet written stay",
    )
    max_upstream_response_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest non-streaming upstream answer (bytes); past it the call is a 502 and the upstream "
        "connection is closed. The default holds the largest real answer (an embeddings batch at OpenAI's limits, "
        "2,048 x 3,072 floats, ~120 MiB as JSON)",
    )
    max_upstream_event_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest single SSE event of an upstream stream (bytes); past it the stream ends with an error "
        "event and is charged for what it produced. The default is many times a whole 128k-token answer in one "
        "event, and holds a base64 image",
    )
    max_upstream_connections_per_origin: int = Field(
        default=200,
        ge=1,
        description="Connections (busy or idle) one process keeps open to one upstream origin (scheme, host, port); "
        "a request that finds them all busy waits for one, within its timeout, else answers 504",
    )
    maximum_spend_logs_retention_period: str | None = Field(
        default=None,
        description="Spend logs (the per-request rows of /spend/logs) older than this are deleted in the background, "
        "in batches; an integer counts days, a month 30 days. The daily rollups, which every other report reads, are "
        "kept. Unset: logs are kept forever",
        examples=["30d", "6mo"],
    )
    usage_export: UsageExportSinks = Field(
        default_factory=list,
        description="Sinks that receive every charged request exactly once (Stripe meter events, Lago, OpenMeter, a "
        "signed webhook), from an outbox written with each charge (config/usage_export.py; README, Usage export)",
    )
    maximum_spend_logs_retention_interval: str = Field(
        default="1d",
        description="How often the spend-log deletion runs (one instance at a time); the first run is a minute after "
        "start-up",
        examples=["1d", "6h"],
    )

    @field_validator("maximum_spend_logs_retention_period", mode="before")
    @classmethod
    def _days_if_integer(cls, value: object) -> object:
        # LiteLLM reads an integer retention as days.
        return f"{value}d" if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("maximum_spend_logs_retention_period", "maximum_spend_logs_retention_interval")
    @classmethod
    def _age(cls, value: str | None) -> str | None:
        if value is not None:
            parse_age(value)
        return value


class DefaultEndUserBudget(BaseModel):
    """`litellm_settings.default_end_user_budget` (haimaker's): the budget `max_end_user_budget_id` names, declared in
    the config so that the proxy creates it at start-up when the store has no budget with that id."""

    model_config = ConfigDict(extra="forbid")

    max_budget: Decimal | None = Field(
        default=None, ge=0, le=MAX_CONFIG_USD, description="USD a customer may spend per period", examples=[10]
    )
    soft_budget: Decimal | None = Field(
        default=None, ge=0, le=MAX_CONFIG_USD, description="USD past which alerts fire and responses say so"
    )
    rpm_limit: int | None = Field(default=None, ge=0, lt=2**63, description="Requests per minute per customer")
    tpm_limit: int | None = Field(default=None, ge=0, lt=2**63, description="Tokens per minute per customer")
    max_parallel_requests: int | None = Field(default=None, ge=0, lt=2**63)
    budget_duration: str | None = Field(
        default=None, description="The spend reset period, as on POST /budget/new", examples=["30d", "1mo", "24h"]
    )

    @field_validator("max_budget", "soft_budget")
    @classmethod
    def _finite(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not value.is_finite():
            raise ValueError("must be a finite number")
        return value

    @field_validator("budget_duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        try:
            return validate_duration(value)
        except BadRequestError as exc:
            raise ValueError(exc.message) from None


# LiteLLM's exception classes a `retry_policy` (`<name>Retries`) or `allowed_fails_policy` (`<name>AllowedFails`) names.
POLICY_ERROR_CLASSES = (
    "BadRequestError",
    "AuthenticationError",
    "TimeoutError",
    "RateLimitError",
    "ContentPolicyViolationError",
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
    "NotFoundError",
)
# `{"gpt-4o": ["claude-3-5", "gpt-4o-mini"]}` entries, LiteLLM's shape (`"*"` names every group without its own).
FallbackList = list[dict[str, list[str]]]
RoutingStrategy = Literal[
    "simple-shuffle", "least-busy", "usage-based-routing", "usage-based-routing-v2", "latency-based-routing"
]


class FallbackSettings(_Section):
    """The fallback keys LiteLLM reads from both `router_settings` and `litellm_settings` (the router's win)."""

    fallbacks: FallbackList | None = Field(
        default=None,
        description="Model groups to try, in order, once a group's retries are spent",
        examples=[[{"gpt-4o": ["claude-3-5", "gpt-4o-mini"]}]],
    )
    context_window_fallbacks: FallbackList | None = Field(
        default=None, description="Model groups to try when the prompt does not fit the group's context window"
    )
    default_fallbacks: list[str] | None = Field(
        default=None, description="Fallbacks of every group without its own entry in `fallbacks`"
    )
    allowed_fails: int | None = Field(
        default=None, ge=0, description="Failures of a deployment within a minute before it cools down"
    )
    cooldown_time: float | None = Field(default=None, ge=0, description="Seconds a failing deployment is skipped")


class LiteLLMSettings(FallbackSettings):
    max_end_user_budget_id: str | None = None
    default_end_user_budget: DefaultEndUserBudget | None = Field(
        default=None,
        description="haimaker's: the budget `max_end_user_budget_id` names, created at start-up when the store has "
        "none with that id (a stored one is never overwritten by it; change that with POST /budget/update)",
        examples=[{"max_budget": 10, "budget_duration": "30d", "rpm_limit": 60}],
    )
    disable_end_user_cost_tracking: bool = False
    budget_exceeded_status_code: int = Field(default=400, ge=400, le=499)
    timezone: str = "UTC"
    budget_reset_time: str = Field(default="00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    num_retries: int | None = Field(default=None, ge=0)
    request_timeout: float | None = Field(default=None, gt=0)
    block_requests_for_models_without_pricing: bool = False
    drop_params: bool | None = None
    set_verbose: bool | None = None
    ssl_verify: bool | str | None = Field(
        default=None,
        description="TLS verification of every upstream without its own `litellm_params.ssl_verify`, as in LiteLLM: "
        "true, false or the path of a CA bundle; env SSL_VERIFY wins over it (LiteLLM's order); unset: true",
        examples=["/etc/haimaker/internal-ca.pem", False],
    )

    _bundle_exists = field_validator("ssl_verify")(_existing_bundle)


class RouterSettings(FallbackSettings):
    num_retries: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    routing_strategy: RoutingStrategy | None = Field(
        default=None, description="Unset: round-robin, or weighted `simple-shuffle` when deployments set weight/rpm/tpm"
    )
    routing_strategy_args: dict[str, float] = Field(
        default_factory=dict,
        description="`latency-based-routing`: `ttl` (seconds a latency sample counts) and `lowest_latency_buffer`",
        examples=[{"ttl": 60, "lowest_latency_buffer": 0.5}],
    )
    allowed_fails_policy: dict[str, int] | None = Field(
        default=None,
        description="Allowed failures per minute by error class, LiteLLM's names",
        examples=[{"RateLimitErrorAllowedFails": 10, "InternalServerErrorAllowedFails": 2}],
    )
    retry_policy: dict[str, int] | None = Field(
        default=None,
        description="Retries by error class, LiteLLM's names (they replace `num_retries` for that error)",
        examples=[{"RateLimitErrorRetries": 3, "AuthenticationErrorRetries": 0}],
    )
    disable_cooldowns: bool = False
    retry_after: float = Field(default=0, ge=0, description="The least seconds to wait before retrying one deployment")
    max_fallbacks: int = Field(default=5, ge=0, description="The most fallback groups one request tries")
    redis_host: str | None = None
    redis_port: int | None = None
    redis_password: str | None = None
    enable_pre_call_checks: bool | None = None

    @field_validator("retry_policy", "allowed_fails_policy")
    @classmethod
    def _known_error_classes(cls, value: dict[str, int] | None, info: ValidationInfo) -> dict[str, int] | None:
        suffix = "Retries" if info.field_name == "retry_policy" else "AllowedFails"
        known = {f"{name}{suffix}" for name in POLICY_ERROR_CLASSES}
        if info.field_name == "retry_policy":
            known.add("DefaultRetries")
        for name, count in (value or {}).items():
            if name not in known:
                raise ValueError(f"unknown key {name!r} (use one of {', '.join(sorted(known))})")
            if count < 0:
                raise ValueError(f"{name} must be >= 0")
        return value


class Config(_Section):
    """The whole config file."""

    model_list: list[ModelEntry] = Field(default_factory=list)
    general_settings: GeneralSettings = Field(default_factory=GeneralSettings)
    litellm_settings: LiteLLMSettings = Field(default_factory=LiteLLMSettings)
    router_settings: RouterSettings = Field(default_factory=RouterSettings)
    environment_variables: dict[str, str] = Field(default_factory=dict)
