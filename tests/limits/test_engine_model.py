"""The budget engine against a reference model: random admits, settles, releases, clock moves across rate windows
and budget periods, the reset job, and admin changes of budgets, on the memory store and on Redis.

The model (`CustomerModel`, `Flight`) keeps the requests in flight as a list and derives every count from it (in
flight, shrunk reservations, the window's tokens), where the stores keep running counters: a counter that drifts
(a release in a later window, a settle after a reset, a limit changed mid-flight) shows up as a disagreement. Its
rules are CONTRACT §2/§3 and the engine's docstrings:

- admission checks, in order: parallel requests, rpm, tpm (the fixed 60 s window opened by the first request after
  the last one ended), then the budget: exhausted when `spend + reserved >= max_budget`; default mode reserves
  `min(estimate, remaining)`, but a request that does not fit waits while another such (shrunk) request is in
  flight; fail-closed admits only a whole estimate that fits;
- the estimate is the counted prompt plus the engine's margin (5 % + 8 tokens) at the input price, plus the output
  bound (max_tokens, else the default) times `n` at the output price;
- a settle charges the upstream's usage, whatever was reserved; a release charges nothing;
- a period reset is applied at request time when due (following the tier's `budget_reset_at` when the customer
  changes tier or duration), and by the reset job for the tier's customers.

Checked at every admission: the model's exact decision (admitted, or refused for the same reason), the reservation
(cost, tokens, shrunk or not, parallel slot) and its rate headers; requests in flight <= max_parallel_requests, the
window's admissions <= rpm_limit, `spend + reserved <= max_budget`, and fail-closed reserving the whole estimate.
At every settle: the charge and the spend it reports; at every release (and a second one): spend unchanged.
After every step (`check_counters`): spend equals the charges settled since the last reset, to the nano-dollar
(in Redis and in this instance's view of it); request-time resets reported to the durable sink exactly as the model
made them; at most one shrunk reservation in flight (none in fail-closed mode); and the overshoot bound.

The bound is the engine's promise made exact: every admission leaves `spend + reserved <= max_budget` (the one in
force at that admission), so from the latest admission `k` on, `spend + reserved <= max_budget_k + sum of
(charge - reserved)+ of the requests settled since` (since the last reset, if later). Those requests were in flight
at `k`, so at most one of them is a shrunk one, which gives:

    default mode:  spend <= max_budget_k + beyond_estimates + (one request: the shrunk one's charge, up to its estimate)
    fail-closed:   spend <= max_budget_k + beyond_estimates

`beyond_estimates` is what upstreams charged beyond a request's estimate (usage over its max_tokens, a prompt over
our count plus margin, requests admitted without limits): no reservation can foresee it, so no mode promises it.
When every usage is within its estimate it is 0: over by at most one request, and never over in fail-closed mode.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from haimaker.accounting.pricing import Usage
from haimaker.clock import FakeClock
from haimaker.errors import BudgetExceededError, RateLimitError
from haimaker.limits.engine import BudgetEngine, Ticket
from haimaker.money import Nanos
from haimaker.periods import next_reset_function
from haimaker.state.catalog import Catalog
from haimaker.state.counters import WINDOW_S, SpendReset
from haimaker.storage.records import Budget, Customer
from tests.limits.engine_model_setup import (
    CUSTOMERS,
    DEFAULT_MAX_OUTPUT,
    GOLD,
    GROUP,
    HOUSE,
    MODEL,
    PRICE,
    START,
    Admitted,
    Backend,
    CustomerModel,
    Flight,
    MemoryBackend,
    RecordedResets,
    RedisBackend,
    Refused,
    charge_of,
)

T = TypeVar("T")

# -- strategies

# A request's estimate is ~2,000 to ~15,000 nano-dollars: budgets of a few requests run out within an example.
money = st.one_of(st.none(), st.sampled_from([0, 1, 2_000, 5_000, 10_000, 20_000, 50_000]), st.integers(0, 60_000))
budget_fields = st.fixed_dictionaries(
    {},
    optional={
        "max_budget": money,
        "soft_budget": money,
        "rpm_limit": st.one_of(st.none(), st.integers(1, 6)),
        "tpm_limit": st.one_of(st.none(), st.sampled_from([1, 2, 500, 3_000, 20_000])),
        "max_parallel_requests": st.one_of(st.none(), st.integers(1, 3)),
        "budget_duration": st.one_of(st.none(), st.sampled_from(["30s", "1h", "1d"])),
    },
)


class EngineMachine(RuleBasedStateMachine):
    """One example: a fresh engine and store, two customers, a fake clock."""

    flights = Bundle("flights")

    def __init__(self, backend: Backend, *, fail_closed: bool) -> None:
        super().__init__()
        self.backend = backend
        self.fail_closed = fail_closed
        self.clock = FakeClock(START)
        self.next_reset = next_reset_function("UTC", "00:00")
        self.resets = RecordedResets()
        self.expected_resets: list[SpendReset] = []
        # A loop of the example's own, run from these synchronous rules (the test runs outside pytest-asyncio's).
        self.loop = asyncio.new_event_loop()
        self.catalog = Catalog(default_budget_id=HOUSE)
        self.store = self.run(backend.open(self.clock, self.next_reset, self.resets, self.durable_spend, fail_closed))
        self.engine = BudgetEngine(
            self.catalog,
            self.store,
            self.clock,
            fail_closed=fail_closed,
            reservation_enabled=True,
            block_unpriced=False,
            default_max_output_tokens=DEFAULT_MAX_OUTPUT,
        )
        self.budgets: dict[str, Budget] = {}
        self.alice_budget: str | None = GOLD
        self.bob_known = False
        self.model = {customer_id: CustomerModel() for customer_id in CUSTOMERS}
        self.in_flight: list[Flight] = []
        self.seq = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def on_loop(self, call: Callable[[], T]) -> T:
        """A call that never awaits, made on the running loop as the app makes it (Redis updates become tasks)."""

        async def inside() -> T:
            return call()

        return self.run(inside())

    def teardown(self) -> None:
        try:
            self.run(self.backend.close())
        finally:
            leftover = asyncio.all_tasks(self.loop)
            for task in leftover:
                task.cancel()
            if leftover:
                self.run(asyncio.wait(leftover))
            self.run(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def durable_spend(self, customer_id: str) -> tuple[Nanos, datetime | None]:
        """What the durable store holds for a customer (the recorder written up): read when Redis seeds it."""
        customer = self.model[customer_id]
        return customer.spend, customer.durable_reset_at

    # -- admin writes, as `Services.changed` applies them to the hot state

    def budget_row(self, budget_id: str, fields: dict[str, Any]) -> Budget:
        """A budget after `fields`, as `BudgetService.changes` derives them: a duration set without a reset instant
        gets the next one from now, a duration cleared clears it."""
        changes = dict(fields)
        if "budget_duration" in changes:
            duration = changes["budget_duration"]
            changes["budget_reset_at"] = None if duration is None else self.next_reset(duration, self.clock.now())
        return replace(self.budgets.get(budget_id) or Budget(budget_id=budget_id), **changes)

    def put_budget(self, budget: Budget) -> None:
        self.budgets[budget.budget_id] = budget
        self.catalog.put_budget(budget)

    @initialize(
        gold=budget_fields,
        house=budget_fields,
        alice_on_gold=st.booleans(),
        alice_spend=st.sampled_from([0, 0, 5_000, 50_000]),
    )
    def start(self, gold: dict[str, Any], house: dict[str, Any], alice_on_gold: bool, alice_spend: Nanos) -> None:
        self.put_budget(self.budget_row(GOLD, gold))
        self.put_budget(self.budget_row(HOUSE, house))
        self.alice_budget = GOLD if alice_on_gold else None
        self.catalog.put_customer(Customer(user_id="alice", budget_id=self.alice_budget, spend=alice_spend))
        if alice_spend:
            # Spend from before this process started (the app seeds it at startup).
            self.run(self.backend.seed("alice", alice_spend))
            self.model["alice"].spend = alice_spend
            self.model["alice"].charges.append(alice_spend)

    @rule(budget_id=st.sampled_from([GOLD, HOUSE]), fields=budget_fields)
    def change_budget(self, budget_id: str, fields: dict[str, Any]) -> None:
        self.put_budget(self.budget_row(budget_id, fields))

    @rule(on_gold=st.booleans())
    def relink_alice(self, on_gold: bool) -> None:
        """`/customer/update` with `budget_id` gold, or null (alice falls back to the default budget)."""
        self.alice_budget = GOLD if on_gold else None
        self.catalog.put_customer(replace(self.catalog.customers["alice"], budget_id=self.alice_budget))

    # -- time

    @rule(
        customer_id=st.sampled_from(CUSTOMERS),
        step=st.sampled_from([1, 15, 29, 30, 59, 60, 61, 600, 3_599, 3_600, 86_400, "window end", "period end"]),
    )
    def advance(self, customer_id: str, step: int | str) -> None:
        """Seconds on, or exactly onto the end of the customer's rate window or budget period (each ends *at* that
        instant)."""
        customer = self.model[customer_id]
        now = self.clock.time()
        target: float | None = now + step if isinstance(step, int) else None
        if step == "window end":
            target = customer.window_start + WINDOW_S
        elif step == "period end" and customer.period_end is not None:
            target = customer.period_end.timestamp()
        if target is not None and target > now:
            self.clock.advance(target - now)

    @rule(budget_id=st.sampled_from([GOLD, HOUSE]))
    def reset_job(self, budget_id: str) -> None:
        """One round of `ResetJob.tick` for a tier, as it acts on the hot state (the durable side is the recorder's)."""
        budget = self.budgets[budget_id]
        now = self.clock.now()
        if budget.budget_duration is None or (budget.budget_reset_at is not None and budget.budget_reset_at > now):
            return
        next_at = self.next_reset(budget.budget_duration, now)
        # The job reads the tier's due customers from the store; here every customer of the tier is passed, as the
        # counters must leave alone those whose period is current.
        customer_ids = self.customers_of(budget_id)
        self.on_loop(lambda: self.engine.store.reset_due(now, customer_ids, next_at))
        self.put_budget(replace(budget, budget_reset_at=next_at))
        self.run(self.backend.settled())
        for customer_id in customer_ids:
            customer = self.model[customer_id]
            if customer.period_end is None or customer.period_end <= now:
                customer.reset(next_at)

    def customers_of(self, budget_id: str) -> list[str]:
        """The customers the catalog knows whose effective budget is `budget_id`."""
        known = ["alice", "bob"] if self.bob_known else ["alice"]
        return [c for c in known if self.budget_id_of(c) == budget_id]

    def budget_id_of(self, customer_id: str) -> str:
        return self.alice_budget or HOUSE if customer_id == "alice" else HOUSE

    def budget_of(self, customer_id: str) -> Budget:
        return self.budgets[self.budget_id_of(customer_id)]

    # -- requests

    @rule(
        target=flights,
        customer_id=st.sampled_from(CUSTOMERS),
        prompt_tokens=st.integers(0, 3_000),
        max_output_tokens=st.one_of(st.none(), st.integers(1, 600)),
        n=st.integers(1, 3),
    )
    def admit(
        self, customer_id: str, prompt_tokens: int, max_output_tokens: int | None, n: int
    ) -> MultipleResults[Flight]:
        flight = self.admit_one(customer_id, prompt_tokens, max_output_tokens, n)
        return multiple() if flight is None else multiple(flight)

    @rule(
        target=flights,
        customer_id=st.sampled_from(CUSTOMERS),
        prompt_tokens=st.integers(0, 3_000),
        max_output_tokens=st.one_of(st.none(), st.integers(1, 600)),
        n=st.integers(1, 3),
        burst=st.integers(2, 4),
    )
    def admit_burst(
        self, customer_id: str, prompt_tokens: int, max_output_tokens: int | None, n: int, burst: int
    ) -> MultipleResults[Flight]:
        """`burst` identical requests at once: admitted one after the other, each seeing those before it."""
        admitted = (self.admit_one(customer_id, prompt_tokens, max_output_tokens, n) for _ in range(burst))
        return multiple(*(flight for flight in admitted if flight is not None))

    def admit_one(self, customer_id: str, prompt_tokens: int, max_output_tokens: int | None, n: int) -> Flight | None:
        # The engine first: a first admission in Redis seeds the customer from the durable store as it is now.
        outcome: Ticket | BudgetExceededError | RateLimitError
        try:
            outcome = self.run(
                self.engine.admit(
                    customer_id, MODEL, GROUP, prompt_tokens=prompt_tokens, max_output_tokens=max_output_tokens, n=n
                )
            )
        except (BudgetExceededError, RateLimitError) as exc:
            outcome = exc
        self.run(self.backend.settled())
        expected = self.model_admit(customer_id, prompt_tokens, max_output_tokens, n)

        if isinstance(expected, Refused):
            if expected.reason == "budget":
                assert isinstance(outcome, BudgetExceededError), (expected, outcome)
                assert outcome.status_code == 400
            else:
                assert isinstance(outcome, RateLimitError), (expected, outcome)
                assert outcome.headers["rate_limit_type"] == expected.reason
            return None
        assert isinstance(outcome, Ticket), (expected, outcome)
        reservation = outcome.reservation
        if not expected.in_store:
            assert reservation is None
        else:
            assert reservation is not None
            got = (reservation.cost, reservation.tokens, reservation.partial, reservation.holds_parallel_slot)
            assert got == (expected.cost, expected.tokens, expected.partial, expected.holds_slot)
            assert reservation.rate_headers == expected.rate_headers
        if customer_id == "bob":
            self.bob_known = True
        customer = self.model[customer_id]
        self.seq += 1
        flight = Flight(
            customer_id=customer_id,
            seq=self.seq,
            ticket=outcome,
            prompt_tokens=prompt_tokens,
            output_tokens=max_output_tokens or DEFAULT_MAX_OUTPUT,
            n=n,
            estimate=expected.estimate,
            cost=expected.cost,
            tokens=expected.tokens,
            in_store=expected.in_store,
            window_start=customer.window_start,
            holds_slot=expected.holds_slot,
            partial=expected.partial,
        )
        self.in_flight.append(flight)
        if flight.in_store:
            self.check_admission(flight)
        return flight

    def model_admit(
        self, customer_id: str, prompt_tokens: int, max_output_tokens: int | None, n: int
    ) -> Admitted | Refused:
        """The model's decision, with what admission changes even when it refuses (a due reset, a new window)."""
        budget = self.budget_of(customer_id)
        prompt = prompt_tokens + prompt_tokens // 20 + 8  # the engine's margin: 5 % and 8 tokens
        output = max_output_tokens or DEFAULT_MAX_OUTPUT
        tokens = prompt + output * n
        limited = any(
            value is not None
            for value in (
                budget.max_budget,
                budget.soft_budget,
                budget.rpm_limit,
                budget.tpm_limit,
                budget.max_parallel_requests,
                budget.budget_duration,
            )
        )
        if not limited:
            return Admitted(0, 0, False, False, in_store=False, estimate=0, rate_headers=())
        customer = self.model[customer_id]
        if budget.budget_duration is not None:
            self.follow_period(customer_id, budget)
        now = self.clock.time()
        if now - customer.window_start >= WINDOW_S:
            customer.window_start, customer.window_requests, customer.window_settled_tokens = now, 0, 0

        mine = [f for f in self.in_flight if f.customer_id == customer_id and f.in_store]
        window_tokens = customer.window_settled_tokens + sum(
            f.tokens for f in mine if f.window_start == customer.window_start
        )
        parallel = budget.max_parallel_requests
        if parallel is not None and sum(f.holds_slot for f in mine) >= parallel:
            return Refused("parallel_requests")
        if budget.rpm_limit is not None and customer.window_requests >= budget.rpm_limit:
            return Refused("requests")
        if budget.tpm_limit is not None and window_tokens >= budget.tpm_limit:
            return Refused("tokens")
        estimate = 0
        cost, partial = 0, False
        if budget.max_budget is not None:
            estimate = charge_of(prompt, output, n)
            remaining = budget.max_budget - customer.spend - sum(f.cost for f in mine)
            fits = estimate <= remaining
            shrunk_in_flight = any(f.partial for f in mine)
            if remaining <= 0 or (not fits and (self.fail_closed or shrunk_in_flight)):
                return Refused("budget")
            cost, partial = min(estimate, remaining), not fits
        if budget.tpm_limit is not None:
            tokens = min(tokens, budget.tpm_limit - window_tokens)
        customer.window_requests += 1
        headers: list[tuple[str, str]] = []
        if budget.rpm_limit is not None:
            headers.append(("x-ratelimit-end_user-limit-requests", str(budget.rpm_limit)))
            remaining_requests = budget.rpm_limit - customer.window_requests
            headers.append(("x-ratelimit-end_user-remaining-requests", str(remaining_requests)))
        if budget.tpm_limit is not None:
            headers.append(("x-ratelimit-end_user-limit-tokens", str(budget.tpm_limit)))
            remaining_tokens = budget.tpm_limit - window_tokens - tokens
            headers.append(("x-ratelimit-end_user-remaining-tokens", str(remaining_tokens)))
        customer.has_anchor = True
        customer.anchor_budget = budget.max_budget
        customer.beyond_estimates = customer.over_reservations = customer.shrunk_share = customer.shrunk_settled = 0
        return Admitted(cost, tokens, partial, parallel is not None, True, estimate, tuple(headers))

    def follow_period(self, customer_id: str, budget: Budget) -> None:
        """A due reset at request time; a customer new to the tier (or duration) follows the tier's reset instant."""
        assert budget.budget_duration is not None
        customer = self.model[customer_id]
        key = (budget.budget_id, budget.budget_duration)
        if customer.period_key != key:
            customer.period_key = key
            tier = budget.budget_reset_at
            if customer.period_end is None or (tier is not None and customer.period_end > tier):
                customer.period_end = tier
        now = self.clock.now()
        if customer.period_end is None:
            customer.period_end = self.next_reset(budget.budget_duration, now)
        elif now >= customer.period_end:
            customer.reset(self.next_reset(budget.budget_duration, now))
            assert customer.period_end is not None
            self.expected_resets.append(SpendReset(customer_id, customer.period_end))

    def check_admission(self, flight: Flight) -> None:
        """What an admission itself promises, on the limits in force when it was made."""
        budget = self.budget_of(flight.customer_id)
        customer = self.model[flight.customer_id]
        mine = [f for f in self.in_flight if f.customer_id == flight.customer_id and f.in_store]
        if budget.max_parallel_requests is not None:
            assert sum(f.holds_slot for f in mine) <= budget.max_parallel_requests
        if budget.rpm_limit is not None:
            assert customer.window_requests <= budget.rpm_limit
        if budget.max_budget is not None:
            assert customer.spend + sum(f.cost for f in mine) <= budget.max_budget
            if self.fail_closed:
                assert flight.cost == flight.estimate, "fail-closed reserves the whole estimate"

    @rule(flight=consumes(flights), data=st.data())
    def settle(self, flight: Flight, data: st.DataObject) -> None:
        """The upstream answered: its usage is charged, within the request's bounds or beyond them."""
        counted = flight.prompt_tokens + flight.prompt_tokens // 20 + 8
        bound = flight.output_tokens * flight.n
        if data.draw(st.sampled_from([False, False, False, True]), label="beyond the request's bounds"):
            prompt = data.draw(st.integers(counted, 2 * counted + 100), label="prompt_tokens")
            completion = data.draw(st.integers(bound, 3 * bound), label="completion_tokens")
        else:
            prompt = data.draw(st.integers(0, counted), label="prompt_tokens")
            completion = data.draw(st.integers(0, bound), label="completion_tokens")
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion)
        settlement = self.on_loop(lambda: self.engine.settle(flight.ticket, PRICE, usage))
        self.run(self.backend.settled())

        charge = charge_of(prompt, completion)
        customer = self.model[flight.customer_id]
        self.in_flight.remove(flight)
        if flight.in_store and flight.window_start == customer.window_start:
            customer.window_settled_tokens += usage.total_tokens
        customer.spend += charge
        customer.charges.append(charge)
        customer.over_reservations += max(0, charge - flight.cost)
        customer.beyond_estimates += max(0, charge - flight.estimate)
        if flight.partial:
            customer.shrunk_settled += 1
            customer.shrunk_share = max(customer.shrunk_share, min(charge, flight.estimate))

        assert settlement.cost == charge
        assert settlement.spend == customer.spend
        assert flight.ticket.limits is not None
        soft = flight.ticket.limits.soft_budget
        assert settlement.over_soft_budget == (soft is not None and customer.spend >= soft)
        if data.draw(st.booleans(), label="released again"):
            self.release_again(flight)

    @rule(flight=consumes(flights), again=st.booleans())
    def release(self, flight: Flight, again: bool) -> None:
        """The upstream failed: everything reserved goes back, nothing is charged."""
        before = self.run(self.backend.spend(flight.customer_id))
        self.on_loop(lambda: self.engine.release(flight.ticket))
        self.run(self.backend.settled())
        assert self.run(self.backend.spend(flight.customer_id)) == before
        self.in_flight.remove(flight)
        if again:
            self.release_again(flight)

    def release_again(self, flight: Flight) -> None:
        """A `finally` releasing a request already settled or released: nothing moves (the spend here, the other
        counters at the next admissions)."""
        before = self.run(self.backend.spend(flight.customer_id))
        self.on_loop(lambda: self.engine.release(flight.ticket))
        self.run(self.backend.settled())
        assert self.run(self.backend.spend(flight.customer_id)) == before

    # -- invariants

    @invariant()
    def check_counters(self) -> None:
        assert self.resets.resets == self.expected_resets
        for customer_id, customer in self.model.items():
            assert customer.spend == sum(customer.charges)
            spend = self.run(self.backend.spend(customer_id))
            assert (spend or 0) == customer.spend, (customer_id, spend, customer.spend)

            mine = [f for f in self.in_flight if f.customer_id == customer_id and f.in_store]
            assert sum(f.partial for f in mine) <= (0 if self.fail_closed else 1)
            if customer.has_anchor and customer.anchor_budget is not None:
                committed = customer.spend + sum(f.cost for f in mine)
                assert committed <= customer.anchor_budget + customer.over_reservations
                assert customer.shrunk_settled <= (0 if self.fail_closed else 1)
                one_request = 0 if self.fail_closed else customer.shrunk_share
                assert spend is not None
                assert spend <= customer.anchor_budget + customer.beyond_estimates + one_request, (
                    f"{customer_id} spent {spend} against a budget of {customer.anchor_budget}: "
                    f"{customer.beyond_estimates} beyond estimates, one request {one_request}"
                )


def run_model(backend: Backend, fail_closed: bool, *, examples: int, steps: int) -> None:
    started = time.monotonic()
    run_state_machine_as_test(
        # "anything which returns an instance when called with no arguments" (its docstring; typed as a class)
        lambda: EngineMachine(backend_for_example(backend), fail_closed=fail_closed),  # type: ignore[arg-type]
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
            # The explain phase traces every line (slow before Python 3.12) and adds nothing to a state machine's
            # printed steps.
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        ),
    )
    print(f"{examples} examples x <= {steps} steps in {time.monotonic() - started:.1f} s")


def backend_for_example(template: Backend) -> Backend:
    """A fresh store per example (a Redis one under a key prefix of its own, inside the test's)."""
    if isinstance(template, RedisBackend):
        return RedisBackend(template.url, f"{template.prefix}:{uuid.uuid4().hex[:8]}")
    return MemoryBackend()


MODES = pytest.mark.parametrize("fail_closed", [False, True], ids=["default-mode", "fail-closed"])
# A pass takes seconds; a failure is shrunk to its shortest steps for up to 300 s (hypothesis' own cap), which the
# default 120 s would cut short into a confusing "flaky" report.
SHRINK_TIME = pytest.mark.timeout(420)


@SHRINK_TIME
@MODES
def test_memory_engine_agrees_with_the_model_and_never_overspends(fail_closed: bool) -> None:
    run_model(MemoryBackend(), fail_closed, examples=300, steps=50)


@pytest.mark.redis
@SHRINK_TIME
@MODES
def test_redis_engine_agrees_with_the_model_and_never_overspends(
    redis_url: str,
    redis_prefix: str,
    fail_closed: bool,
) -> None:
    run_model(RedisBackend(redis_url, redis_prefix), fail_closed, examples=150, steps=50)


# -- regressions found by the model


async def _settle_after_a_refusal_across_the_boundary(backend: Backend) -> tuple[Nanos, bool]:
    """A customer over its soft budget has a request in flight when its period ends; the next request is refused
    (parallel limit) by the admission that applied the reset; then the request in flight settles."""
    clock = FakeClock(START)
    next_reset = next_reset_function("UTC", "00:00")

    async def nothing_stored(customer_id: str) -> tuple[Nanos, datetime | None]:
        return 0, None

    store = await backend.open(clock, next_reset, RecordedResets(), nothing_stored, False)
    try:
        catalog = Catalog()
        tier = Budget(
            budget_id="tier",
            max_budget=100_000,
            soft_budget=5_000,
            max_parallel_requests=1,
            budget_duration="1h",
            budget_reset_at=next_reset("1h", clock.now()),
        )
        catalog.put_budget(tier)
        catalog.put_customer(Customer(user_id="alice", budget_id="tier"))
        engine = BudgetEngine(
            catalog,
            store,
            clock,
            fail_closed=False,
            reservation_enabled=True,
            block_unpriced=False,
            default_max_output_tokens=DEFAULT_MAX_OUTPUT,
        )

        async def admit() -> Ticket:
            return await engine.admit("alice", MODEL, GROUP, prompt_tokens=10, max_output_tokens=100, n=1)

        first = engine.settle(await admit(), PRICE, Usage(prompt_tokens=10, completion_tokens=1_000))
        await backend.settled()
        assert first.over_soft_budget  # 7,512 nano-dollars against a soft budget of 5,000
        in_flight = await admit()
        clock.set(tier.budget_reset_at or START)
        with pytest.raises(RateLimitError):
            await admit()
        await backend.settled()
        last = engine.settle(in_flight, PRICE, Usage(prompt_tokens=10, completion_tokens=10))
        await backend.settled()
        assert await backend.spend("alice") == last.cost
        return last.spend, last.over_soft_budget
    finally:
        await backend.close()


async def test_settle_after_a_refused_admission_reset_the_period_reports_the_new_periods_spend() -> None:
    assert await _settle_after_a_refusal_across_the_boundary(MemoryBackend()) == (88, False)


@pytest.mark.redis
async def test_settle_after_a_refused_admission_reset_the_period_reports_the_new_periods_spend_on_redis(
    redis_url: str,
    redis_prefix: str,
) -> None:
    # Redis applied the reset; this instance's view of the spend (what settle reports, and the soft-budget header
    # and alerts use) stayed in the old period: (7,600, True) before the fix.
    assert await _settle_after_a_refusal_across_the_boundary(RedisBackend(redis_url, redis_prefix)) == (88, False)
