"""Form fields through the management API's own request models and the services' own field rules, every field at once.

The API validates a body with a pydantic model (`api/schemas.py`), turns a failure into a 422 `UnprocessableError`
(`api/errors.py::validation_error`, `param` = the first invalid field), and hands the services `set_fields(body)`,
whose rules stop at the first bad field too. A form shows every invalid field at once instead: `checked_fields` keeps
each pydantic error (with the API's message for it), then runs the services' field rules (`check`, which writes
nothing) again and again, each time setting aside the field just refused, until the rest pass. The messages are the
API's own; the rules stay in one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, TypeAdapter, ValidationError

from haimaker.api.errors import validation_error
from haimaker.api.schemas import (
    BudgetNewRequest,
    GenerateKeyRequest,
    NewCustomerRequest,
    UpdateCustomerRequest,
    set_fields,
)
from haimaker.errors import ProxyError

# The services' rules for a form's fields (sync, like `BudgetService.changes`, or async): it raises a `ProxyError`
# naming the first bad field (`param`) and writes nothing.
FieldCheck = Callable[[dict[str, Any]], object]


class InvalidForm(Exception):
    """Every invalid field of a submitted form: `problems` maps each `param` (as the API names it) to its message."""

    status_code: Final = 400

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("invalid fields: " + ", ".join(problems))
        self.problems = problems


async def checked_fields(
    model: type[BaseModel], fields: Mapping[str, Any], check: FieldCheck | None = None
) -> dict[str, Any]:
    """The fields as the API would pass them to the services, once every one passed `model` and `check`.

    Raises:
        InvalidForm: every invalid field, each with the message the API gives for it.
    """
    problems: dict[str, str] = {}
    body: BaseModel | None = None
    try:
        body = model.model_validate(dict(fields))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            refused = validation_error(RequestValidationError([error]))
            problems.setdefault(refused.param or "", refused.message)
    if check is not None:
        # The services see the values as the model reads them (`-5.0`, not "-5"), so their messages are the API's.
        await _check_each(
            check, set_fields(body) if body is not None else _read_each(model, fields, problems), problems
        )
    if problems or body is None:
        raise InvalidForm(problems)
    return set_fields(body)


def _read_each(model: type[BaseModel], fields: Mapping[str, Any], problems: Mapping[str, str]) -> dict[str, Any]:
    """The fields without a problem, each read as `model` reads it (the model as a whole refused some other)."""
    known = {_top_level(param) for param in problems}
    read: dict[str, Any] = {}
    for name, value in fields.items():
        info = model.model_fields.get(name)
        if info is None or name in known:
            continue
        annotated: Any = Annotated[info.annotation, info]  # the field's type with its constraints
        try:
            read[name] = TypeAdapter(annotated).validate_python(value)
        except ValidationError:  # the model as a whole accepted it; if it ever does not, its own error stands
            continue
    return read


async def _check_each(check: FieldCheck, fields: Mapping[str, Any], problems: dict[str, str]) -> None:
    """Add the fields `check` refuses to `problems`, one at a time (it stops at the first), skipping known ones."""
    known = {_top_level(param) for param in problems}
    rest = {name: value for name, value in fields.items() if name not in known}
    for _ in range(len(rest) + 1):
        try:
            checked = check(rest)
            if inspect.isawaitable(checked):
                await checked
        except ProxyError as error:
            name = _top_level(error.param or "")
            if name not in rest:
                return  # not about one field (e.g. two fields together): the write reports it
            problems.setdefault(error.param or name, error.message)
            del rest[name]
        else:
            return


def _top_level(param: str) -> str:
    # Nested params such as `model_max_budget.gpt-4o.max_budget` belong to their top-level field.
    return param.split(".", 1)[0]


async def budget_fields(fields: Mapping[str, Any], check: FieldCheck) -> dict[str, Any]:
    """A budget form, as `POST /budget/new` and `POST /budget/update` read their body."""
    return await checked_fields(BudgetNewRequest, fields, check)


async def new_customer_fields(fields: Mapping[str, Any], check: FieldCheck) -> dict[str, Any]:
    """A create-customer form, as `POST /customer/new` reads its body."""
    return await checked_fields(NewCustomerRequest, fields, check)


async def customer_update_fields(fields: Mapping[str, Any], check: FieldCheck) -> dict[str, Any]:
    """An edit-customer form, as `POST /customer/update` reads its body."""
    return await checked_fields(UpdateCustomerRequest, fields, check)


async def new_key_fields(fields: Mapping[str, Any], check: FieldCheck) -> dict[str, Any]:
    """A create-key form, as `POST /key/generate` reads its body."""
    return await checked_fields(GenerateKeyRequest, fields, check)
