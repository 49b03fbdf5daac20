"""Customers (end users): the admin use-cases, shared by the management API and the admin UI.

Fields arrive as the wire carries them, as a mapping holding only the fields the caller sent (presence matters on
update: a field sent as null is applied, a field left out is untouched).

Invariants:
- Every read or write starts by waiting for the spend recorder (`Services.settle_pending`): the stored spend is then
  exact, and a customer created by traffic exists in the store (so `create` refuses it as a duplicate).
- Spend shown is the live counter when this instance has one (it includes charges not yet written), else the stored
  spend.
- Ids, searches and other text are checked with `ids.checked_text` here too (the API checks them first, the admin UI
  relies on this): a value a store cannot hold is a 400, never a database error.
- Nothing here reads or counts every customer (issue 15): lists page by key, totals are estimated unless asked for,
  and whether a budget is shared is a count that stops at 2. The catalog holds only active customers, so it is never
  asked about customers in general.
- A customer's budget fields (max_budget, tpm_limit, …) live on a budget row. A customer without a row of its own
  gets a private one; a row shared with other customers (a pricing tier, or the default budget) is never changed
  from here: the customer gets a private copy with the change, the tier stays as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from haimaker.errors import BadRequestError, DuplicateError, NotFoundError, UnprocessableError
from haimaker.ids import MAX_TEXT_CHARS, checked_text
from haimaker.money import Nanos
from haimaker.services.budgets import BUDGET_FIELDS, usd_amount
from haimaker.storage.records import Budget, Customer

if TYPE_CHECKING:
    from haimaker.services.container import Services

# Budget fields /customer/update accepts (CONTRACT §5).
UPDATE_BUDGET_FIELDS: Final = (
    "max_budget",
    "soft_budget",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "budget_duration",
)
_NULLABLE_FIELDS: Final = ("alias", "allowed_model_region", "default_model")
# Pages of a list: enough for any real listing, and OFFSET (page * size) stays far from the stores' 64-bit limit.
MAX_PAGE: Final = 1_000_000
# Rows a numbered page may skip. Deeper customers are reached by key (`after`, the `link: rel="next"` of every
# page), which costs the same at any depth, where OFFSET reads every row it skips.
MAX_OFFSET: Final = 10_000
# Matches counted exactly when no exact total is asked for: a bounded index range scan (well under a millisecond).
COUNTED_UP_TO: Final = 1_000


@dataclass(frozen=True, slots=True)
class CustomerView:
    """A customer as admins see it: the stored row, the budget in force (its own row, else the default budget, else
    None; `budget_is_default` says which), live spend."""

    customer: Customer
    budget: Budget | None
    spend: Nanos
    budget_is_default: bool = False


@dataclass(frozen=True, slots=True)
class CustomerPage:
    """One page of customers in id order, with the keys of its neighbours (None: there is no such page)."""

    views: list[CustomerView]
    next_after: str | None
    prev_before: str | None


@dataclass(frozen=True, slots=True)
class CustomerCount:
    """A number of customers, `exact`, an `estimate` (the store's, of all customers), or `more_than` a bound (a
    search with many matches, or a store without an estimate yet)."""

    value: int
    accuracy: Literal["exact", "estimate", "more_than"] = "exact"


def not_found(user_id: str, param: str) -> NotFoundError:
    return NotFoundError(f"End User Id={user_id} does not exist in db", param=param)


class CustomerService:
    """Create, read, update, delete, block and unblock customers; keeps catalog and counters in step."""

    def __init__(self, services: Services) -> None:
        self._services = services

    # -- reads ---------------------------------------------------------------------------------------------------

    async def info(self, user_id: str, *, param: str = "end_user_id") -> CustomerView:
        """One customer.

        Raises:
            NotFoundError: no such customer (`param` names the request field that carried the id).
        """
        checked_text(user_id, param=param)
        await self._services.settle_pending()
        customer = await self._services.customers_repo.get(user_id)
        if customer is None:
            raise not_found(user_id, param)
        return (await self._views([customer]))[0]

    async def list_page(
        self,
        page_size: int,
        *,
        search: str | None = None,
        after: str | None = None,
        before: str | None = None,
        page: int | None = None,
    ) -> CustomerPage:
        """One page of customers in id order whose id starts with `search`: the first, the one after the id `after`,
        the one before the id `before`, or the numbered `page` (within the first `MAX_OFFSET` rows).

        Each is a range scan of the primary-key index, so any depth costs the same, except a numbered page, which
        reads the rows it skips (hence its bound). A `before` page with fewer rows than `page_size` before it is the
        first page.

        Raises:
            BadRequestError: a page past `MAX_OFFSET` rows or `MAX_PAGE`, more than one of page/after/before, or
                text the store cannot take.
        """
        if sum(value is not None for value in (page, after, before)) > 1:
            raise BadRequestError("Give at most one of page, after and before.", param="after")
        if page is not None and not 1 <= page <= MAX_PAGE:
            raise BadRequestError(f"page must be from 1 to {MAX_PAGE}.", param="page")
        offset = (page - 1) * page_size if page is not None else 0
        if offset > MAX_OFFSET:
            raise BadRequestError(
                f"page {page} starts past the first {MAX_OFFSET:,} customers: page by key instead, following "
                'the link: rel="next" header of each page (after=<last user_id>).',
                param="page",
            )
        for name, value in (("search", search), ("after", after), ("before", before)):
            if value:
                checked_text(value, param=name, max_chars=MAX_TEXT_CHARS)
        await self._services.settle_pending()
        repo = self._services.customers_repo
        # One row more than the page tells whether another page follows, without a count.
        rows = await repo.list_page(page_size + 1, after=after, before=before, prefix=search or None, offset=offset)
        if before is not None:
            has_previous, rows = len(rows) > page_size, rows[-page_size:]
            if not has_previous and len(rows) < page_size:
                return await self.list_page(page_size, search=search)
            has_next = True  # `before` itself, unless deleted meanwhile (the next page is then empty)
        else:
            has_next, rows = len(rows) > page_size, rows[:page_size]
            has_previous = after is not None or offset > 0
        return CustomerPage(
            views=await self._views(rows),
            next_after=rows[-1].user_id if rows and has_next else None,
            prev_before=rows[0].user_id if rows and has_previous else None,
        )

    async def count(self, search: str | None = None, *, exact: bool = False) -> CustomerCount:
        """The number of customers whose id starts with `search` (all when None).

        Exact when asked for (its cost grows with the matches) or when there are at most `COUNTED_UP_TO`; else,
        without a search, the store's estimate (`CustomerRepository.estimated_count`), with one, "more than
        `COUNTED_UP_TO`".
        """
        if search:
            checked_text(search, param="search", max_chars=MAX_TEXT_CHARS)
        await self._services.settle_pending()
        repo = self._services.customers_repo
        if exact:
            return CustomerCount(await repo.count(search or None))
        counted = await repo.count(search or None, up_to=COUNTED_UP_TO + 1)
        if counted <= COUNTED_UP_TO:
            return CustomerCount(counted)
        estimate = None if search else await repo.estimated_count()
        if estimate is None or estimate <= COUNTED_UP_TO:  # PostgreSQL before its first ANALYZE
            return CustomerCount(COUNTED_UP_TO, "more_than")
        return CustomerCount(estimate, "estimate")

    # -- writes --------------------------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any]) -> CustomerView:
        """Create a customer; any budget field gives it a private budget row, `spend` sets its starting spend.

        Raises:
            UnprocessableError: budget fields together with budget_id, or an unknown default_model.
            BadRequestError: an invalid budget field or spend.
            DuplicateError: the customer exists (traffic-created ones included).
            NotFoundError: budget_id names no budget.
        """
        user_id: str = checked_text(fields["user_id"], param="user_id")
        budget_fields = {name: fields[name] for name in BUDGET_FIELDS if fields.get(name) is not None}
        budget_id = fields.get("budget_id")
        if budget_fields and budget_id is not None:
            raise _both_budget_and_fields(budget_fields)
        self._check_default_model(fields.get("default_model"))
        spend = usd_amount("spend", fields["spend"]) if fields.get("spend") is not None else 0
        changes = self._services.budgets.changes(budget_fields)

        await self._services.settle_pending()
        if await self._services.customers_repo.get(user_id) is not None:
            raise _duplicate(user_id)
        private = await self._services.budgets.create_private(None, changes) if budget_fields else None
        customer = Customer(
            user_id=user_id,
            alias=fields.get("alias"),
            spend=spend,
            blocked=bool(fields.get("blocked") or False),
            allowed_model_region=fields.get("allowed_model_region"),
            default_model=fields.get("default_model"),
            models=tuple(fields.get("models") or ()),
            budget_id=private.budget_id if private is not None else budget_id,
        )
        try:
            created = await self._services.customers_repo.create(customer)
        except Exception:
            if private is not None:  # nobody else can be linked to it yet
                await self._services.budgets_repo.delete(private.budget_id)
                self._services.budget_changed(private.budget_id, None)
            raise
        self._services.customer_changed(user_id, created)
        self._services.spend_changed(created)
        return (await self._views([created]))[0]

    async def update(self, fields: Mapping[str, Any]) -> CustomerView:
        """Apply the fields present in `fields` to `fields["user_id"]`.

        `budget_id: null` unlinks (the customer falls back to the default budget). Budget fields change the
        customer's own budget row in place when nobody else uses it, else a private copy is made.

        Raises:
            NotFoundError: no such customer (param user_id), or budget_id names no budget.
            UnprocessableError: budget fields together with budget_id, or an unknown default_model.
            BadRequestError: an invalid budget field.
        """
        user_id: str = checked_text(fields["user_id"], param="user_id")
        changes: dict[str, Any] = {name: fields[name] for name in _NULLABLE_FIELDS if name in fields}
        for name in ("blocked", "models"):
            if fields.get(name) is not None:
                changes[name] = tuple(fields[name]) if name == "models" else bool(fields[name])
        self._check_default_model(changes.get("default_model"))
        budget_fields = {name: fields[name] for name in UPDATE_BUDGET_FIELDS if name in fields}
        if "budget_id" in fields:
            if budget_fields:
                raise _both_budget_and_fields(budget_fields)
            changes["budget_id"] = fields["budget_id"]
        budget_changes = self._services.budgets.changes(budget_fields)

        await self._services.settle_pending()
        current = await self._services.customers_repo.get(user_id)
        if current is None:
            raise not_found(user_id, "user_id")
        private = None
        if budget_changes:
            own = await self._own_budget(current)
            if own is not None and not await self._is_shared(own.budget_id):
                await self._services.budgets.apply(own.budget_id, budget_changes)
            else:
                base = own if own is not None else self._services.catalog.effective_budget(None)
                private = await self._services.budgets.create_private(base, budget_changes)
                changes["budget_id"] = private.budget_id
        updated = await self._services.customers_repo.update(user_id, changes)
        if updated is None:  # deleted meanwhile
            if private is not None:
                await self._services.budgets_repo.delete(private.budget_id)
                self._services.budget_changed(private.budget_id, None)
            raise not_found(user_id, "user_id")
        self._services.customer_changed(user_id, updated)
        return (await self._views([updated]))[0]

    async def delete(self, user_ids: Iterable[str]) -> list[str]:
        """Delete customers, all or none; returns the ids deleted. Their spend logs and budgets stay.

        Raises:
            NotFoundError: some ids do not exist (nothing is deleted).
        """
        wanted = _checked_ids(user_ids)
        await self._services.settle_pending()
        await self._services.customers_repo.delete_many(wanted)
        for user_id in wanted:
            self._services.customer_changed(user_id, None)
        return wanted

    async def block(self, user_ids: Iterable[str]) -> list[CustomerView]:
        """Block customers, creating those that do not exist yet."""
        wanted = _checked_ids(user_ids)
        await self._services.settle_pending()
        customers = await self._services.customers_repo.set_blocked(wanted, True)
        for customer in customers:
            self._services.customer_changed(customer.user_id, customer)
        return await self._views(customers)

    async def unblock(self, user_ids: Iterable[str]) -> list[CustomerView]:
        """Clear the blocked flag.

        Raises:
            NotFoundError: some ids do not exist (nothing is changed).
        """
        wanted = _checked_ids(user_ids)
        await self._services.settle_pending()
        found = await self._services.customers_repo.get_many(wanted)
        missing = [user_id for user_id in wanted if user_id not in found]
        if missing:
            raise NotFoundError(f"End User Id(s)={', '.join(missing)} do not exist in db", param="user_ids")
        customers = await self._services.customers_repo.set_blocked(wanted, False)
        for customer in customers:
            self._services.customer_changed(customer.user_id, customer)
        return await self._views(customers)

    # -- helpers -------------------------------------------------------------------------------------------------

    def check(self, fields: Mapping[str, Any]) -> None:
        """Validate the fields `create` and `update` check one by one, writing nothing (the admin UI checks a form).

        Raises:
            UnprocessableError: an unknown default_model.
            BadRequestError: an invalid budget field.
        """
        self._check_default_model(fields.get("default_model"))
        self._services.budgets.changes(fields)

    def _check_default_model(self, model: str | None) -> None:
        if model is None:
            return
        names = self._services.router.model_names
        if not names:
            raise UnprocessableError("No models configured on proxy", param="default_model")
        if model not in names:
            listed = "{" + ", ".join(repr(name) for name in sorted(names)) + "}"
            raise UnprocessableError(
                "Default Model not on proxy. Configure via /model/new or config.yaml. "
                f"Default_model={model}, proxy_model_names={listed}",
                param="default_model",
            )

    async def _is_shared(self, budget_id: str) -> bool:
        """The default budget, or a budget linked to another customer too: counted up to 2, whatever the tier size."""
        if budget_id == self._services.catalog.default_budget_id:
            return True
        return await self._services.customers_repo.count_on_budget(budget_id, up_to=2) > 1

    async def _own_budget(self, customer: Customer) -> Budget | None:
        if customer.budget_id is None:
            return None
        return await self._services.budgets_repo.get(customer.budget_id)

    async def _views(self, customers: list[Customer]) -> list[CustomerView]:
        budget_ids = {c.budget_id for c in customers if c.budget_id is not None}
        default_id = self._services.catalog.default_budget_id
        if default_id is not None:
            budget_ids.add(default_id)
        budgets = {b.budget_id: b for b in await self._services.budgets_repo.get_many(budget_ids)} if budget_ids else {}
        default = budgets.get(default_id) if default_id is not None else None
        views = []
        for c in customers:
            own = budgets.get(c.budget_id) if c.budget_id is not None else None
            # The budget admission applies (`Catalog.effective_budget`): its own, else the default.
            budget = own if own is not None else default
            is_default = budget is not None and budget.budget_id == default_id
            views.append(CustomerView(c, budget, await self._services.live_spend(c), is_default))
        return views


def _checked_ids(user_ids: Iterable[str]) -> list[str]:
    return [checked_text(user_id, param="user_ids") for user_id in dict.fromkeys(user_ids)]


def _both_budget_and_fields(budget_fields: Mapping[str, Any]) -> UnprocessableError:
    if "max_budget" in budget_fields:
        return UnprocessableError("Set either 'max_budget' or 'budget_id', not both.", param="max_budget")
    names = ", ".join(f"'{name}'" for name in budget_fields)
    return UnprocessableError(
        f"Set either budget limits ({names}) or 'budget_id', not both: limits make a private budget, "
        "budget_id links an existing one.",
        param=next(iter(budget_fields)),
    )


def _duplicate(user_id: str) -> DuplicateError:
    return DuplicateError(
        f"Customer already exists, passed user_id={user_id}. Please pass a new user_id.", param="user_id"
    )
