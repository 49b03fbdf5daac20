"""Form fields through the management API's own request models, so the UI refuses exactly what the API refuses.

The API validates a body with a pydantic model (`api/schemas.py`), turns a failure into a 422 `UnprocessableError`
(`api/errors.py::validation_error`, `param` = the first invalid field), and hands the services `set_fields(body)`. The
UI does the same three steps with the same code; the services then apply every other rule for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from haimaker.api.errors import validation_error
from haimaker.api.schemas import (
    BudgetNewRequest,
    GenerateKeyRequest,
    NewCustomerRequest,
    UpdateCustomerRequest,
    set_fields,
)


def request_fields(model: type[BaseModel], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields as the API would pass them to the services.

    Raises:
        UnprocessableError: 422, with the API's message and `param`, when the model refuses them.
    """
    try:
        body = model.model_validate(dict(fields))
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors(include_url=False))) from None
    return set_fields(body)


def budget_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A budget form, as `POST /budget/new` and `POST /budget/update` read their body."""
    return request_fields(BudgetNewRequest, fields)


def new_customer_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A create-customer form, as `POST /customer/new` reads its body."""
    return request_fields(NewCustomerRequest, fields)


def customer_update_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """An edit-customer form, as `POST /customer/update` reads its body."""
    return request_fields(UpdateCustomerRequest, fields)


def new_key_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A create-key form, as `POST /key/generate` reads its body."""
    return request_fields(GenerateKeyRequest, fields)
