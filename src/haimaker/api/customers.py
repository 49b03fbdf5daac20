"""`/customer/*` (and the `/end_user/*` aliases): thin handlers over `services.customers`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
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
from haimaker.services.customers import MAX_OFFSET, CustomerCount

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


@_route("GET", "/list", 400, 422)
async def list_customers(
    request: Request,
    services: ServicesDep,
    page: Annotated[
        Page | None, Query(description=f"Numbered page, within the first {MAX_OFFSET:,} customers; deeper, use after")
    ] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    search: Annotated[Text | None, Query(description="Prefix of the customer id, case-sensitive")] = None,
    after: Annotated[Id | None, Query(description='The customers after this id (the link: rel="next" header)')] = None,
    include_total: Annotated[bool, Query(description="Count the matches exactly (x-total-count)")] = False,
) -> Response:
    """A page of customers ordered by id, as a bare array (LiteLLM's shape).

    Paging: while more customers follow, the `link` header carries `rel="next"`: this query with
    `after=<last user_id>`, which costs the same at any depth. `page` still works within the first `MAX_OFFSET`
    customers (OFFSET reads the rows it skips). Totals: `x-total-count` is exact, sent with `include_total=true`
    or when few match (`COUNTED_UP_TO`); else, without a search, `x-total-estimate` is the store's estimate of all
    customers (absent while it has none, and for a search: ask `include_total`). No call counts every customer
    unless asked to.

    `search` is an id prefix, served by the primary-key index; LiteLLM's is a case-insensitive substring of the id
    or alias, which reads every customer.
    """
    result = await services.customers.list_page(page_size, search=search, after=after, page=page)
    total = await services.customers.count(search, exact=include_total)
    headers = _total_headers(total)
    if result.next_after is not None:
        query = {name: value for name, value in request.query_params.items() if name not in ("page", "after")}
        query["after"] = result.next_after
        headers["link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return json_response([customer_row(view) for view in result.views], headers=headers)


def _total_headers(total: CustomerCount) -> dict[str, str]:
    if total.accuracy == "more_than":
        return {}
    return {"x-total-count" if total.accuracy == "exact" else "x-total-estimate": str(total.value)}


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
