"""`create_app(settings)`: the ASGI application, and the lifespan that opens and closes everything.

The LLM routes are dispatched before FastAPI sees the request (raw ASGI, `api/llm.py`); everything
else (management API, health, metrics, UI) is a FastAPI app. Startup (`open_state`): the store's identity
checked, migrations, journaled charges of a crashed run replayed, the catalog loaded into memory, counters
seeded, the spend recorder and background jobs started. Each resource pushes its closer on one
`AsyncExitStack` as it opens, so a start-up that fails part-way closes what it opened. Shutdown unwinds
that stack: stop the jobs, drain the recorder (every pending charge written or journaled), close Redis,
the alerter and the upstream transport, dispose of the database engine, uninstall the log redaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.accounting.dead_letters import DEAD_LETTER_FILENAME, DeadLetterBox
from haimaker.accounting.journal import DEFAULT_DIRNAME, SpendJournal, replay_dead, store_key
from haimaker.accounting.pricing import PriceTable
from haimaker.accounting.recorder import SpendRecorder
from haimaker.accounting.refusals import RefusalLog
from haimaker.accounting.store_sink import StoreSink
from haimaker.accounting.tokens import TokenCounter, encoding_name_for
from haimaker.api.access_log import ATTRIBUTION_KEY, logged
from haimaker.api.deps import state_of
from haimaker.api.dialects import DIALECT_PATHS, Dialect, build_dialects
from haimaker.api.errors import install_error_handlers
from haimaker.api.llm import LLM_ROUTES, LLMEndpoint, Receive, Scope, Send, azure_route, headers_of, send_error
from haimaker.app_state import AppState
from haimaker.clock import Clock, SystemClock
from haimaker.config.loader import ConfigError, Settings
from haimaker.errors import InvalidKeyError, ProxyError, ServiceUnavailableError
from haimaker.identity import Authenticator, CustomerIdResolver
from haimaker.limits.auth_throttle import AuthThrottle
from haimaker.limits.default_budget import ensure_default_budget
from haimaker.limits.engine import BudgetEngine
from haimaker.metrics import Metrics
from haimaker.periods import next_reset_function
from haimaker.pipeline import Pipeline, PipelineOptions
from haimaker.preflight import describe_failure
from haimaker.process_tuning import freeze_startup_heap, limit_malloc_arenas, start_heap_trims
from haimaker.providers.base import Route
from haimaker.providers.http import HttpTransport
from haimaker.providers.redaction import RedactingLogRecords, Redactor
from haimaker.providers.registry import build_providers
from haimaker.providers.router import Router, build_deployments
from haimaker.providers.tls import TrustStore
from haimaker.services.container import Services
from haimaker.services.resets import ResetJob
from haimaker.services.retention import retention_job
from haimaker.startup import ready_line, stopped_line
from haimaker.state.catalog import Catalog
from haimaker.state.counters import CounterStore
from haimaker.state.keys import KeyCatalog, key_subject
from haimaker.state.locks import JobLock, PostgresJobLock
from haimaker.state.memory import MemoryCounterStore
from haimaker.state.ui_sessions import LiveSessions
from haimaker.state.working_set import WorkingSet
from haimaker.storage.dead_letters_repo import DeadLetterRepository
from haimaker.storage.engine import create_engine, normalize_database_url, session_factory, upgrade
from haimaker.storage.records import Customer
from haimaker.storage.store_health import StoreMonitor
from haimaker.storage.store_identity import STORE_ID_FILENAME, StoreIdentityError, remember_store, verify_store

logger = logging.getLogger("haimaker")


class HaimakerApp:
    """The top-level ASGI app: LLM routes straight to the pipeline, the rest to FastAPI."""

    def __init__(self, api: FastAPI, *, access_log: bool = False) -> None:
        self.api = api
        self._access_log = access_log  # `api/access_log.py`: off, it costs this one attribute read per request
        self._llm: LLMEndpoint | None = None
        self._dialects: dict[str, Dialect] = {}  # built with the LLM endpoint, from the running app's router
        self._store_gate: StoreMonitor | None = None  # set in fail-closed mode: a lost store refuses LLM calls

    @property
    def state(self) -> AppState:
        """The running app's state (`api/deps.py::get_state` for the FastAPI routes: the same 503 before start-up)."""
        return state_of(self.api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._access_log and scope["type"] == "http" and ATTRIBUTION_KEY not in scope:
            await logged(self, scope, receive, send)  # back here, the scope now carrying the request's attribution
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            route = LLM_ROUTES.get(path)
            path_model = None
            if route is None and path.startswith("/openai/deployments/"):
                found = azure_route(path)
                if found is not None:
                    route, path_model = found
            is_dialect = route is None and path in DIALECT_PATHS
            if is_dialect:
                route = Route.CHAT  # the metrics label until the dialect has translated the request
            if route is not None:
                llm = self._llm
                if llm is None:
                    try:
                        state = self.state
                    except ProxyError as exc:
                        await send_error(send, exc)
                        return
                    self._dialects = build_dialects(state.router)
                    llm = self._llm = LLMEndpoint(state.pipeline, state.auth_throttle)
                    if state.settings.config.general_settings.fail_closed_budget_enforcement:
                        self._store_gate = state.store_monitor
                dialect = self._dialects[path] if is_dialect else None
                if self._store_gate is not None and self._store_gate.is_lost:
                    # Fail-closed: no charge could be recorded durably, so nothing is served (an attribute read).
                    await send_error(send, _STORE_LOST, dialect)
                    return
                await llm(scope, receive, send, route, path_model, dialect)
                return
        if scope["type"] == "http" and scope["path"].startswith(_ADMIN_PREFIXES):
            # Authenticate management calls before FastAPI parses their body: a caller without the key gets
            # 401/403, never a 422 that would tell it about our validation (the route dependency stays as well).
            # While the caller's address is throttled for wrong keys, even the right key is refused (429).
            try:
                state = self.state
            except ProxyError as exc:
                await send_error(send, exc)
                return
            throttle = state.auth_throttle
            address = throttle.address_of(scope)
            try:
                refusal = throttle.refusal(address)
                if refusal is not None:
                    raise refusal
                await state.auth.check_admin(headers_of(scope), scope["method"], scope["path"])
            except ProxyError as exc:
                if isinstance(exc, InvalidKeyError):
                    throttle.record_failure(address)
                await send_error(send, exc)
                return
        if scope["type"] == "lifespan":
            await _serve_lifespan(self.api, scope, receive, send)
            return
        await self.api(scope, receive, send)


async def _serve_lifespan(api: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
    """Starlette reports a failed start-up to the server with its traceback as the message, then raises it again
    for the server to print a second time. The lifespan has already said what failed in one line
    (`preflight.describe_failure`), so the server is told only that start-up failed."""
    failed = False

    async def send_plainly(message: MutableMapping[str, Any]) -> None:
        nonlocal failed
        if message["type"] == "lifespan.startup.failed":
            failed = True
            message = {"type": "lifespan.startup.failed", "message": ""}
        await send(message)

    try:
        await api(scope, receive, send_plainly)
    except Exception:
        if not failed:
            raise


_ADMIN_PREFIXES = ("/customer/", "/end_user/", "/budget/", "/spend/", "/global/", "/key/", "/billing/")
_STORE_LOST = ServiceUnavailableError(
    "The spend store is unavailable (see /health/readiness); requests are refused while "
    "general_settings.fail_closed_budget_enforcement is on.",
    error_type="store_unavailable",
)


def create_app(settings: Settings, *, clock: Clock | None = None, serving: bool = False) -> HaimakerApp:
    """Build the application for a loaded config. Nothing starts until the ASGI lifespan runs.

    `serving` marks the one app of a `haimaker` server process (or worker): the allocator and the garbage collector
    are tuned for a long-running server (`process_tuning`), which a test process that builds many apps must not do.
    """
    if serving:
        limit_malloc_arenas()  # before the lifespan starts the database driver's threads
    for warning in settings.warnings:
        logger.warning(warning)

    @asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        # Every resource pushes its closer as it opens: a start-up that fails part-way closes what it opened, and
        # shutdown closes in reverse (jobs stop, the recorder drains, then pools and the database close).
        async with AsyncExitStack() as stack:
            try:
                state = api.state.haimaker = await open_state(settings, clock or SystemClock(), stack)
            except Exception as exc:
                # One line for the operator; the traceback only with --detailed_debug (`_serve_lifespan`).
                logger.error("start-up failed: %s", describe_failure(exc, settings))
                logger.debug("start-up failure", exc_info=True)
                raise
            if serving:
                freeze_startup_heap()
                stack.callback(start_heap_trims(asyncio.get_running_loop()))
            logger.info("%s", ready_line(state))
            yield
        logger.info("%s", stopped_line(state.recorder.written))

    api = FastAPI(title="haimaker", version="0.1.0", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    install_error_handlers(api)
    _include_routers(api)
    return HaimakerApp(api, access_log=settings.access_log)


def _include_routers(api: FastAPI) -> None:
    from haimaker.api import health
    from haimaker.api.management import include_management_routes
    from haimaker.ui.routes import include_ui_routes

    api.include_router(health.router)
    include_ui_routes(api)
    include_management_routes(api)


async def open_state(settings: Settings, clock: Clock, stack: AsyncExitStack) -> AppState:
    """Open everything the proxy runs on, each closer pushed on `stack` as its resource opens.

    Closing `stack` (LIFO) stops the background jobs, drains the spend recorder (every pending charge written or
    journaled), closes the Redis cluster, the alerter and the upstream transport, disposes of the database engine,
    and last uninstalls the log redaction (what is logged while closing is still scrubbed).

    Raises:
        ConfigError: the store is not the one this proxy used before, or the journal directory is unusable.
    """
    config = settings.config
    general, litellm = config.general_settings, config.litellm_settings
    # Every configured secret, by value: scrubbed from upstream errors, bodies, stream events, log lines and metrics.
    redactor = Redactor.from_settings(settings)
    stack.callback(RedactingLogRecords(redactor).uninstall)

    db_url = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
    store_memory = settings.config_dir / STORE_ID_FILENAME
    try:
        # Never a silent new database: a deleted, replaced or emptied store is refused before migrating it.
        await verify_store(db_url, store_memory)
        await upgrade(db_url)
        store_id = await remember_store(db_url, store_memory)
    except StoreIdentityError as exc:
        raise ConfigError([f"database_url: {exc}"]) from None
    db = create_engine(db_url)
    stack.push_async_callback(db.dispose)
    sessions = session_factory(db)
    # With a usage export sink, each charge batch also fills the export outbox (storage/outbox_repo.py).
    sink = StoreSink(sessions, clock, export_usage=bool(general.usage_export))
    store_monitor = StoreMonitor(db, db_url, store_id)
    dead_letter_rows = DeadLetterRepository(sessions, clock=clock)
    journal_dir, journal_store = _journal_place(settings, db_url)
    if journal_dir is not None:
        # Charges acknowledged by processes that died before writing them: into the store before the counters are
        # seeded from it and before serving (docs/durability.md).
        try:
            dead_letters = DeadLetterBox(dead_letter_rows, settings.config_dir / DEAD_LETTER_FILENAME)
            await replay_dead(journal_dir, journal_store, sink, dead_letters=dead_letters)
        except OSError as exc:
            if general.spend_journal_dir:
                raise ConfigError([f"general_settings.spend_journal_dir: cannot use {journal_dir}: {exc}"]) from None
            # The default place (beside the config) may be read-only, e.g. a mounted config: serve, but say loudly
            # that a crash now loses the charges of the last write group.
            logger.error(
                "spend journal off: %s is not usable (%s); set general_settings.spend_journal_dir", journal_dir, exc
            )
            journal_dir = None

    prices = PriceTable.bundled()
    deployments = build_deployments(config, prices)
    tokens = TokenCounter()
    # Only the vocabularies the configured models use (each costs 40-70 MB); others load on first use.
    needed = {encoding_name_for(d.upstream_model) for d in deployments} or {"cl100k_base"}
    load_tokens = asyncio.create_task(asyncio.to_thread(tokens.load, sorted(needed)), name="haimaker-load-tokens")
    stack.push_async_callback(_stop_task, load_tokens)  # a no-op once loaded
    unpriced = sorted({d.model_name for d in deployments if d.price is None})
    if unpriced:
        logger.warning("models without pricing (they cost 0): %s", ", ".join(unpriced))

    transport = HttpTransport(
        redactor,
        max_response_bytes=general.max_upstream_response_bytes,
        max_connections_per_origin=general.max_upstream_connections_per_origin,
        tls=TrustStore(setting=litellm.ssl_verify),
    )
    stack.push_async_callback(_logged, transport.aclose)
    providers = build_providers(transport, tokens)
    router = Router.from_config(config, deployments, providers)  # retries, fallbacks, cooldowns, strategy

    # Budgets whole; customers on demand (the working set: a store may hold millions, start-up reads none).
    catalog = Catalog(default_budget_id=litellm.max_end_user_budget_id)
    catalog.load_budgets(await sink.budgets.list_all())
    key_catalog = KeyCatalog()
    key_catalog.load(await sink.keys.list_all())
    # A missing default budget is created from the config's declaration, else the proxy starts and refuses (503) the
    # customers that would ride it until POST /budget/new creates it (limits/default_budget.py).
    await ensure_default_budget(
        litellm, sink.budgets, catalog, clock.now(), next_reset_function(litellm.timezone, litellm.budget_reset_time)
    )

    journal = None
    if journal_dir is not None:
        journal = await asyncio.to_thread(
            SpendJournal.open, journal_dir, journal_store, fsync=general.spend_journal_fsync
        )
    recorder = SpendRecorder(
        sink,
        max_delay_s=min(general.proxy_batch_write_at, 0.1),
        journal=journal,
        max_queued=general.spend_queue_max,
        dead_letters=DeadLetterBox(dead_letter_rows, settings.config_dir / DEAD_LETTER_FILENAME),
        is_store_lost=lambda: store_monitor.is_lost,
    )
    # Should start-up fail before the recorder runs, closing it closes the journal.
    stack.push_async_callback(recorder.aclose)
    next_reset = next_reset_function(litellm.timezone, litellm.budget_reset_time)
    cluster = None
    store: CounterStore
    if settings.redis_url:
        # Several instances: counters in Redis, admin writes announced to the others (docs/multi-instance.md).
        from haimaker.state.cluster import open_cluster

        cluster = await open_cluster(
            settings.redis_url,
            general.redis_key_prefix,
            clock=clock,
            next_reset=next_reset,
            resets=recorder,
            flush=recorder.flush,
            source=sink,
            catalog=catalog,
            key_catalog=key_catalog,
            db=db,
            budget_status_code=litellm.budget_exceeded_status_code,
            fail_closed=general.fail_closed_budget_enforcement,
        )
        stack.push_async_callback(_logged, cluster.aclose)
        store = cluster.store
    else:
        store = MemoryCounterStore(clock, next_reset, recorder, budget_status_code=litellm.budget_exceeded_status_code)
    for key in key_catalog.keys.values():
        store.adopt(key_subject(key.token), key.spend, key.budget_reset_at)
    counters = store  # bound for the closure below (mypy does not narrow `store` inside a lambda)

    def adopt_stored(customer: Customer) -> None:
        counters.adopt(customer.user_id, customer.spend, customer.spend_reset_at)

    catalog.attach_store(sink.customers.get_many, adopt_stored)
    working_set = WorkingSet(
        catalog,
        store,
        max_customers=general.customer_cache_max,
        queued=lambda: recorder.queued,
        written=lambda: recorder.written,
    )
    _start_task(stack, working_set.run(), "haimaker-working-set")

    from haimaker.alerts import Alerter

    alerter = Alerter.from_settings(settings, clock)
    stack.push_async_callback(_logged, alerter.aclose)
    engine = BudgetEngine(
        catalog,
        store,
        clock,
        fail_closed=general.fail_closed_budget_enforcement,
        reservation_enabled=not general.disable_budget_reservation,
        block_unpriced=litellm.block_requests_for_models_without_pricing,
        default_max_output_tokens=general.default_max_output_tokens,
        alerter=alerter,
    )
    metrics = Metrics(router.model_names, redactor=redactor)
    metrics.cached_customers.set_function(lambda: len(catalog.customers))
    metrics.evicted_customers.set_function(lambda: working_set.evicted)
    auth_throttle = AuthThrottle(
        clock,
        max_failures=general.auth_failure_limit,
        window_s=general.auth_failure_window_s,
        max_block_s=general.auth_max_block_s,
        trusted_proxies=general.auth_trusted_proxies,
    )
    auth = Authenticator(
        settings.master_key,
        keys=key_catalog,
        clock=clock,
        lookup=sink.keys.get,
        allow_unauthenticated=general.allow_unauthenticated,
    )
    mapped = [m.header_name for m in general.user_header_mappings if m.litellm_user_role == "customer"]
    refusals = RefusalLog(recorder, clock, redactor)
    pipeline = Pipeline(
        auth=auth,
        customers=CustomerIdResolver(general.user_header_name, mapped),
        router=router,
        engine=engine,
        tokens=tokens,
        recorder=recorder,
        refusals=refusals,
        metrics=metrics,
        options=PipelineOptions(
            enforce_user_param=general.enforce_user_param,
            track_customers=not litellm.disable_end_user_cost_tracking,
            always_include_stream_usage=general.always_include_stream_usage,
            max_sse_event_bytes=general.max_upstream_event_bytes,
        ),
        clock=clock,
        redactor=redactor,
    )
    services = Services(
        customers_repo=sink.customers,
        budgets_repo=sink.budgets,
        spend_repo=sink.spend,
        keys_repo=sink.keys,
        key_catalog=key_catalog,
        catalog=catalog,
        counters=store,
        recorder=recorder,
        clock=clock,
        router=router,
        next_reset=next_reset,
        announcer=cluster,
        shared_spend=cluster.store.current_spend if cluster is not None else None,
        store_status=lambda: store_monitor.status,
    )
    reset_job = None
    if not general.disable_reset_budget:
        reset_job = ResetJob(
            catalog=catalog,
            key_catalog=key_catalog,
            counters=store,
            budgets=sink.budgets,
            customers=sink.customers,
            keys=sink.keys,
            recorder=recorder,
            clock=clock,
            next_reset=next_reset,
            interval_s=_reset_interval(settings),
            announcer=cluster,
            alerter=alerter,
            lock=cluster.lock if cluster is not None else None,
        )
    await load_tokens
    recorder.start()
    # Pushed again now that it runs, after the cluster, alerter and transport: it drains (every pending charge
    # written or journaled) before they close; the closer pushed above is then a no-op. The jobs, pushed last,
    # stop before it drains.
    stack.push_async_callback(recorder.aclose)
    # Stopped before the recorder drains: it hands the refusals it still counts to the recorder as it stops.
    _start_task(stack, refusals.run(), "haimaker-refusal-log")
    _start_task(stack, store_monitor.run(), "haimaker-store-monitor")
    if reset_job is not None:
        _start_task(stack, reset_job.run(), "haimaker-reset-job")
    retention = retention_job(
        general, sessions=sessions, db=db, clock=clock, lock=cluster.lock if cluster is not None else None
    )
    if retention is not None:
        _start_task(stack, retention.run(), "haimaker-spend-log-retention")
    usage_exporter = None
    if general.usage_export:
        from haimaker.billing.exporter import UsageExporter
        from haimaker.storage.outbox_repo import OutboxRepository

        usage_exporter = UsageExporter(
            general.usage_export, OutboxRepository(sessions, clock=clock), lock=_export_lock(cluster, db), clock=clock
        )
        stack.push_async_callback(usage_exporter.aclose)  # after its loops stop (pushed below, unwound first)
        _start_task(stack, usage_exporter.run(), "haimaker-usage-export")
    alerter.start()
    return AppState(
        settings=settings,
        clock=clock,
        auth=auth,
        db=db,
        tokens=tokens,
        recorder=recorder,
        engine=engine,
        router=router,
        pipeline=pipeline,
        metrics=metrics,
        started_at=time.time(),
        auth_throttle=auth_throttle,
        sink=sink,
        services=services,
        store_monitor=store_monitor,
        dead_letters=dead_letter_rows,
        ui_sessions=LiveSessions(clock, cluster.client if cluster is not None else None, general.redis_key_prefix),
        cluster=cluster,
        redis_url=settings.redis_url,
        reset_job=reset_job,
        usage_exporter=usage_exporter,
    )


def _export_lock(cluster: Any, db: AsyncEngine) -> JobLock | None:
    """One exporter per sink across instances: the cluster's job lock, else PostgreSQL's (processes sharing one
    database without Redis); a lone SQLite proxy needs none."""
    if cluster is not None:
        lock: JobLock = cluster.lock
        return lock
    return PostgresJobLock(db) if db.dialect.name == "postgresql" else None


def _start_task(stack: AsyncExitStack, job: Coroutine[Any, Any, None], name: str) -> None:
    stack.push_async_callback(_stop_task, asyncio.create_task(job, name=name))


async def _stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait for it to end (a job's own failure is logged, not raised: shutdown goes on)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        logger.exception("background task %s failed", task.get_name())


async def _logged(close: Callable[[], Awaitable[None]]) -> None:
    """Run one closer; its failure is logged, and the closers after it still run."""
    try:
        await close()
    except Exception:
        logger.exception("error while closing")


def _journal_place(settings: Settings, db_url: str) -> tuple[Path | None, str]:
    """The spend journal's directory (None: disabled) and the name of the store in its file names."""
    general = settings.config.general_settings
    if not general.spend_journal:
        return None, ""
    directory = Path(general.spend_journal_dir) if general.spend_journal_dir else None
    if directory is None:
        directory = settings.config_dir / DEFAULT_DIRNAME
    elif not directory.is_absolute():
        directory = settings.config_dir / directory
    return directory, store_key(make_url(db_url).render_as_string(hide_password=True))


async def verify_configured_store(settings: Settings) -> None:
    """Refuse a deleted, replaced or emptied store before serving (the CLI calls this first, so the refusal is one
    clear message and exit code 2 rather than a failed lifespan's traceback; the lifespan checks again).

    Raises:
        ConfigError: the configured store is not the one this proxy used before.
    """
    try:
        db_url = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
        await verify_store(db_url, settings.config_dir / STORE_ID_FILENAME)
    except StoreIdentityError as exc:
        raise ConfigError([f"database_url: {exc}"]) from None
    except Exception:
        # Not an identity problem (e.g. the store is unreachable): the lifespan reports it as before.
        logger.debug("store pre-check skipped", exc_info=True)


def _reset_interval(settings: Settings) -> float:
    # Request-time resets make the job matter only for idle customers; a minute is plenty and cheap.
    return min(60.0, settings.config.general_settings.proxy_budget_rescheduler_min_time)


def app_from_env() -> Any:
    """Factory for `uvicorn --factory` workers and granian's: the config path comes from HAIMAKER_CONFIG, the log
    level from DETAILED_DEBUG (a worker process starts without the CLI's logging)."""
    import os

    from haimaker.config.loader import load_config
    from haimaker.logs import configure_logging, is_detailed_debug

    configure_logging(debug=is_detailed_debug(os.environ))
    return create_app(load_config(os.environ.get("HAIMAKER_CONFIG") or None), serving=True)
