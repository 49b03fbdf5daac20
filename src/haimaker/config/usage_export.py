"""`general_settings.usage_export`: the sinks the usage exporter (`haimaker.billing`) sends charged requests to.

    general_settings:
      usage_export:
        - name: stripe
          type: stripe
          api_key: os.environ/STRIPE_SECRET_KEY
          event_name: llm_spend          # the meter's event_name
        - name: lago
          type: lago
          api_key: os.environ/LAGO_API_KEY
          event_name: llm_usage          # the billable metric's code

Each sink has its own cursor (a sink's name identifies it in the store: renaming one starts it from the outbox's
oldest row). Secrets take `os.environ/NAME` references like every other key.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SinkType = Literal["stripe", "lago", "openmeter", "webhook"]
UsageValue = Literal["spend_nanos", "total_tokens", "prompt_tokens", "completion_tokens", "requests"]

DEFAULT_API_BASES: dict[str, str] = {
    "stripe": "https://api.stripe.com",
    "lago": "https://api.getlago.com",
    "openmeter": "https://openmeter.cloud",
}


class UsageExportSink(BaseModel):
    """One destination of the usage export."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="Unique; names the sink's cursor"
    )
    type: SinkType = Field(description="Wire format: Stripe meter events, Lago events, OpenMeter CloudEvents, webhook")
    api_base: str | None = Field(
        default=None,
        description="Base URL (stripe: https://api.stripe.com, lago: https://api.getlago.com, openmeter: "
        "https://openmeter.cloud); webhook: the full URL to POST to (required)",
        examples=["https://lago.internal:3000", "https://billing.example.com/hooks/usage"],
    )
    api_key: str | None = Field(
        default=None,
        description="Bearer token (required for stripe and lago; OpenMeter Cloud's token; optional for webhook)",
        examples=["os.environ/STRIPE_SECRET_KEY"],
    )
    signing_secret: str | None = Field(
        default=None,
        description="webhook: the HMAC-SHA256 key of the `X-Haimaker-Signature` header (required)",
        examples=["os.environ/USAGE_WEBHOOK_SECRET"],
    )
    event_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="stripe: the meter's `event_name`; lago: the billable metric's `code`; openmeter: the CloudEvent "
        "`type` its meters match (default `llm_usage`); webhook: the events' `type` (default `llm_usage`)",
    )
    value: UsageValue = Field(
        default="spend_nanos",
        description="stripe: what `payload[value]` counts (spend in nano-dollars, tokens or 1 per request); lago, "
        "openmeter and webhook send every figure and the metric picks one",
    )
    customer_ids: dict[str, str] = Field(
        default_factory=dict,
        description="The billing system's customer (stripe `cus_…`, lago subscription or customer, openmeter "
        "subject) per haimaker customer id; a customer not listed is sent under its own id",
        examples=[{"acme": "cus_NciAYcXfLnqBoz"}],
    )
    customer_field: Literal["external_subscription_id", "external_customer_id"] = Field(
        default="external_subscription_id", description="lago: which field carries the customer"
    )
    source: str = Field(default="haimaker", min_length=1, description="openmeter: the CloudEvents `source`")
    batch_size: int = Field(
        default=100,
        ge=1,
        le=100,
        description="Events per request (lago and openmeter accept up to 100; stripe takes one event per request and "
        "sends a batch's events `concurrency` at a time)",
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="stripe: requests in flight at once")
    timeout_s: float = Field(default=10, gt=0, description="Seconds before one request to the sink times out")
    retry_backoff_s: float = Field(default=1, gt=0, description="First wait after a failed attempt (doubles)")
    max_backoff_s: float = Field(default=60, gt=0, description="Longest wait between attempts")
    poll_interval_s: float = Field(default=1, gt=0, description="Seconds between looks at an empty outbox")

    @model_validator(mode="after")
    def _required_per_type(self) -> UsageExportSink:
        if self.type in ("stripe", "lago") and not self.api_key:
            raise ValueError(f"a {self.type} sink needs api_key")
        if self.type in ("stripe", "lago") and not self.event_name:
            what = "the meter's event_name" if self.type == "stripe" else "the billable metric's code"
            raise ValueError(f"a {self.type} sink needs event_name ({what})")
        if self.type == "webhook" and (not self.api_base or not self.signing_secret):
            raise ValueError("a webhook sink needs api_base (the URL) and signing_secret")
        if self.api_base is not None and not self.api_base.startswith(("http://", "https://")):
            raise ValueError("api_base must be an http:// or https:// URL")
        return self

    @property
    def base_url(self) -> str:
        return (self.api_base or DEFAULT_API_BASES.get(self.type, "")).rstrip("/")

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(secret for secret in (self.api_key, self.signing_secret) if secret)


def _unique_names(sinks: list[UsageExportSink]) -> list[UsageExportSink]:
    names = [sink.name for sink in sinks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"sink names must be unique: {', '.join(duplicates)}")
    return sinks


UsageExportSinks = Annotated[list[UsageExportSink], AfterValidator(_unique_names)]
