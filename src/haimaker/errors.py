"""The one exception tree of haimaker. Every error a client can see is one of these.

    ProxyError                       500 internal_error
    ├── AuthenticationError          401 auth_error
    │   └── InvalidKeyError              a key was presented and is wrong (counted by the key throttle)
    ├── PermissionDeniedError        403 (type per cause)
    │   ├── CustomerBlockedError         customer_blocked
    │   └── ModelAccessDeniedError       customer_model_access_denied
    ├── BadRequestError              400 invalid_request_error
    │   ├── UnknownModelError            model not configured
    │   └── DuplicateError               bad_request (an id that already exists)
    ├── NotFoundError                404 not_found
    ├── PayloadTooLargeError         413 invalid_request_error (an LLM request body over the limit)
    ├── UnprocessableError           422 invalid_request_error (bodies and queries that fail validation)
    ├── BudgetExceededError          400 budget_exceeded (status configurable)
    ├── RequestTimeoutError          408 timeout (the client sent its body too slowly)
    ├── RateLimitError               429 rate_limit_error (retry-after + rate-limit headers)
    ├── ServiceUnavailableError      503 (e.g. fail-closed enforcement without its store)
    └── UpstreamError                the provider failed
        ├── UpstreamStatusError          upstream 4xx, passed on with a sanitised message
        ├── BadGatewayError              502 upstream 5xx / unreadable answer / connection failure
        └── GatewayTimeoutError          504 upstream timeout

Domain code raises these; only `api/errors.py` turns them into the OpenAI envelope
`{"error": {"message", "type", "param", "code"}}`. `code` is the status as a string, as LiteLLM does.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProxyError(Exception):
    """Root of every error haimaker reports to a client."""

    status_code: int = 500
    error_type: str = "internal_error"
    is_retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if error_type is not None:
            self.error_type = error_type
        if status_code is not None:
            self.status_code = status_code
        self.code = code if code is not None else str(self.status_code)
        self.headers: dict[str, str] = dict(headers or {})

    def envelope(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error body."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class AuthenticationError(ProxyError):
    status_code = 401
    error_type = "auth_error"


class InvalidKeyError(AuthenticationError):
    """A key was presented and matches none: a guess, as far as the failed-key throttle is concerned."""


class PermissionDeniedError(ProxyError):
    status_code = 403
    error_type = "permission_denied"


class CustomerBlockedError(PermissionDeniedError):
    error_type = "customer_blocked"


class ModelAccessDeniedError(PermissionDeniedError):
    error_type = "customer_model_access_denied"


class BadRequestError(ProxyError):
    status_code = 400
    error_type = "invalid_request_error"


class UnknownModelError(BadRequestError):
    pass


class DuplicateError(BadRequestError):
    error_type = "bad_request"


class NotFoundError(ProxyError):
    status_code = 404
    error_type = "not_found"


class PayloadTooLargeError(ProxyError):
    status_code = 413
    error_type = "invalid_request_error"


class UnprocessableError(ProxyError):
    status_code = 422
    error_type = "invalid_request_error"


class BudgetExceededError(ProxyError):
    status_code = 400
    error_type = "budget_exceeded"


class RequestTimeoutError(ProxyError):
    status_code = 408
    error_type = "timeout"


class RateLimitError(ProxyError):
    status_code = 429
    error_type = "rate_limit_error"
    is_retryable = True


class ServiceUnavailableError(ProxyError):
    status_code = 503
    error_type = "service_unavailable"
    is_retryable = True


class UpstreamError(ProxyError):
    status_code = 502
    error_type = "api_error"


class UpstreamStatusError(UpstreamError):
    """An upstream 4xx: its status is passed on, its message only after sanitising."""

    error_type = "invalid_request_error"


class BadGatewayError(UpstreamError):
    status_code = 502
    error_type = "api_error"
    is_retryable = True


class GatewayTimeoutError(UpstreamError):
    status_code = 504
    error_type = "timeout"
    is_retryable = True
