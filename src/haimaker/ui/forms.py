"""From submitted HTML forms to the service layer's wire-level fields, and from its errors back to the form.

Forms send strings. They are handed to the services as the management API hands its JSON: the same field names, an
empty input meaning "not given" on create and "clear it" (JSON null) on edit. Every validation rule and message
stays in the services; this module only routes each problem (a `ProxyError`, or every invalid field of an
`InvalidForm`) to the field named by its `param`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Final

from haimaker.errors import ProxyError
from haimaker.ui.validation import InvalidForm

RESET_CHOICES: Final = (("", "Never"), ("24h", "Daily (24h)"), ("7d", "Weekly (7d)"), ("30d", "Monthly (30d)"))
CUSTOM_RESET: Final = "custom"
BUDGET_FORM_FIELDS: Final = ("max_budget", "soft_budget", "tpm_limit", "rpm_limit")
CUSTOMER_LIMIT_FIELDS: Final = ("max_budget", "tpm_limit", "rpm_limit", "budget_duration")


def given(form: Mapping[str, str], names: Iterable[str], *, empty_is_null: bool) -> dict[str, str | None]:
    """The named fields as wire values: empty inputs left out, or sent as null when `empty_is_null` (edit forms)."""
    fields: dict[str, str | None] = {}
    for name in names:
        if name not in form:
            continue
        value = form[name]
        if value:
            fields[name] = value
        elif empty_is_null:
            fields[name] = None
    return fields


def chosen_duration(form: Mapping[str, str]) -> str | None:
    """The reset period of the budget form: a preset, or the custom text when "Custom" is chosen."""
    choice = form.get("budget_duration", "")
    if choice == CUSTOM_RESET:
        return form.get("budget_duration_custom", "")
    return choice or None


def duration_form_values(duration: str | None) -> dict[str, str]:
    """How a stored `budget_duration` shows in the budget form: a preset when it is one, else Custom + its text."""
    if not duration:
        return {"budget_duration": ""}
    if duration in {value for value, _ in RESET_CHOICES}:
        return {"budget_duration": duration}
    return {"budget_duration": CUSTOM_RESET, "budget_duration_custom": duration}


def errors_for(
    error: ProxyError | InvalidForm, fields: Collection[str], aliases: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Place each problem next to the field its `param` names (through `aliases`), else at the top of the form."""
    problems = error.problems if isinstance(error, InvalidForm) else {error.param or "": error.message}
    errors: dict[str, str] = {}
    for param, message in problems.items():
        name = (aliases or {}).get(param, param)
        if name not in fields:
            # Nested params such as `model_max_budget.gpt-4o.max_budget` belong to their top-level field.
            name = name.split(".", 1)[0]
        errors.setdefault(name if name in fields else "", message)
    return errors
