"""`/customer/*` (and the `/end_user/*` aliases): thin handlers over `services.customers`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from fastapi.responses import Response

from haimaker.api.deps import ServicesDep
from haimaker.api.responses import json_response
from haimaker.api.schemas import (
    BlockUsers,
    DeleteCustomerRequest,
    Id,
    NewCustomerRequest,
    Page,
    Text,
    UpdateCustomerRequest,
    error_responses,
    set_fields,
)
from haimaker.api.wire import customer_row

router = APIRouter(tags=["Customer Management"])

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _route(method: str, path: str, *errors: int) -> Callable[[_Handler], _Handler]:
    """Register a handler on `/customer<path>` and on its hidden alias `/end_user<path>`; `errors` are the statuses
    it answers beyond the common ones (OpenAPI)."""

    def register(handler: _Handler) -> _Handler:
        responses = error_responses(*errors)
        router.add_api_route(f"/customer{path}", handler, methods=[method], responses=responses)
        router.add_api_route(
            f"/end_user{path}", handler, methods=[method], responses=responses, include_in_schema=False
        )
        return handler

    return register


@_route("POST", "/new", 400, 404, 422)
async def new_customer(body: NewCustomerRequest, services: ServicesDep) -> Response:
    """Create a customer; budget fields give it a private budget, `budget_id` links a pricing tier."""
    return json_response(customer_row(await services.customers.create(set_fields(body))))


@_route("GET", "/info", 404, 422)
async def customer_info(end_user_id: Annotated[Id, Query()], services: ServicesDep) -> Response:
    """One customer, its own budget and its spend (charges not yet written included)."""
    return json_response(customer_row(await services.customers.info(end_user_id)))


@_route("POST", "/update", 400, 404, 422)
async def update_customer(body: UpdateCustomerRequest, services: ServicesDep) -> Response:
    """Change the fields sent; budget fields never change a tier shared with other customers."""
    return json_response(customer_row(await services.customers.update(set_fields(body))))


@_route("POST", "/delete", 400, 404, 422)
async def delete_customers(body: DeleteCustomerRequest, services: ServicesDep) -> Response:
    """Delete customers, all or none; their spend logs and budgets stay."""
    deleted = await services.customers.delete(body.user_ids)
    return json_response(
        {"deleted_customers": len(deleted), "message": f"Successfully deleted customers with ids: {deleted}"}
    )


@_route("GET", "/list", 422)
async def list_customers(
    services: ServicesDep,
    page: Annotated[Page, Query()] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    search: Annotated[Text | None, Query(description="Substring of the id or alias, any case")] = None,
) -> Response:
    """A page of customers ordered by id, as a bare array."""
    views = await services.customers.list_page(page, page_size, search)
    return json_response([customer_row(view) for view in views])


@_route("POST", "/block", 400, 422)
async def block_customers(body: BlockUsers, services: ServicesDep) -> Response:
    """Refuse every LLM request of these customers (403); unknown ids are created blocked."""
    views = await services.customers.block(body.user_ids)
    return json_response({"blocked_users": [customer_row(view) for view in views]})


@_route("POST", "/unblock", 400, 404, 422)
async def unblock_customers(body: BlockUsers, services: ServicesDep) -> Response:
    """Clear the blocked flag."""
    views = await services.customers.unblock(body.user_ids)
    return json_response({"unblocked_users": [customer_row(view) for view in views]})
