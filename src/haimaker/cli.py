"""The `haimaker` command: serve the proxy, check a config, upgrade the database.

haimaker --config config.yaml [--host 0.0.0.0] [--port 4000] [--num_workers 1] [--detailed_debug]
haimaker --version
haimaker config check --config config.yaml
haimaker db upgrade --config config.yaml
haimaker import-litellm --from postgresql://... --config config.yaml [--dry-run]
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from haimaker import __version__
from haimaker.clock import SystemClock
from haimaker.config.loader import ConfigError, Settings, load_config
from haimaker.logs import DEBUG_ENV, configure_logging
from haimaker.startup import plural

# Plain click help, not rich's boxes: rich shortens option names to fit a narrow terminal (`--detailed_deb…`), and
# a name is what a reader copies.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # an unforeseen failure must not print a config's secrets with its frames
    help="haimaker: an OpenAI-compatible LLM gateway.",
)
config_app = typer.Typer(rich_markup_mode=None, help="Inspect a config file.")
db_app = typer.Typer(rich_markup_mode=None, help="Manage the database.")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Path to config.yaml")]


def _load_or_exit(config: Path | None) -> Settings:
    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None


def _check_dependencies_or_exit(settings: Settings) -> None:
    """The store and the journal directory work, else one line and exit code 1 (`preflight.py`)."""
    from haimaker.preflight import StartupError, check_dependencies

    try:
        asyncio.run(check_dependencies(settings))
    except StartupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"haimaker {__version__}")
        raise typer.Exit()


def _port_from_env() -> int:
    raw = os.environ.get("PORT", "4000")
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        typer.echo(f"error: PORT={raw!r} is not a port (1-65535)", err=True)
        raise typer.Exit(code=2)
    return port


def _refuse_a_busy_port(host: str, port: int) -> None:
    """One clear line, before any server starts, when the address is taken (uvicorn and granian would print a
    traceback or a log line among others). A race with another process binding meanwhile is left to the server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            typer.echo(f"error: {host}:{port} {why}; choose another with --port", err=True)
            raise typer.Exit(code=1) from None


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    config: ConfigOption = None,
    host: Annotated[str, typer.Option("--host", help="Interface to bind")] = "0.0.0.0",
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Port, 1-65535 (default 4000, or env PORT)")
    ] = None,
    num_workers: Annotated[
        int, typer.Option("--num_workers", "--num-workers", min=1, help="Worker processes (more than 1 needs Redis)")
    ] = 1,
    detailed_debug: Annotated[
        bool,
        typer.Option(
            "--detailed_debug",
            "--detailed-debug",
            envvar=DEBUG_ENV,
            help="haimaker's debug logs and the access log (one line per request); never the database's or httpx's",
        ),
    ] = False,
    server: Annotated[str, typer.Option("--server", help="HTTP server: uvicorn or granian")] = "uvicorn",
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    """Run the proxy."""
    if ctx.invoked_subcommand is not None:
        return
    if detailed_debug:
        os.environ[DEBUG_ENV] = "true"  # read by `load_config` here and in every worker process this starts
    configure_logging(debug=detailed_debug)
    settings = _load_or_exit(config)
    if not settings.config.model_list:
        # Never an empty proxy on 0.0.0.0 with a database file created in whatever directory this ran in.
        where = f"{config} has no model_list" if config is not None else "no --config given"
        typer.echo(
            f"error: nothing to serve: {where}. haimaker needs a config with at least one model, e.g.\n"
            "  model_list:\n"
            "    - model_name: gpt-4o-mini\n"
            "      litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}\n"
            "then: haimaker --config config.yaml (see the README)",
            err=True,
        )
        raise typer.Exit(code=2)
    port = port if port is not None else _port_from_env()
    _refuse_a_busy_port(host, port)
    from haimaker.app import verify_configured_store
    from haimaker.server import run_server

    # Before any server starts: a store or journal directory that cannot work is one line under every server.
    _check_dependencies_or_exit(settings)
    try:
        asyncio.run(verify_configured_store(settings))
        run_server(settings, config, host=host, port=port, workers=num_workers, server=server)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate a config file and print every problem with its YAML path."""
    settings = _load_or_exit(config)
    for warning in settings.warnings:
        typer.echo(f"warning: {warning}")
    deployments = len(settings.config.model_list)
    if not deployments:
        typer.echo("error: model_list: no models configured (the proxy would have nothing to serve)", err=True)
        raise typer.Exit(code=2)
    problem = asyncio.run(_missing_default_budget(settings))
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(code=2)
    models = sorted({m.model_name for m in settings.config.model_list})
    typer.echo(f"config OK: {plural(deployments, 'deployment')}, {plural(len(models), 'model')}: {', '.join(models)}")


async def _missing_default_budget(settings: Settings) -> str | None:
    """What a start on this config would refuse its customers for: a default budget that the store it would open
    does not hold and the config does not declare. The store is only read (a SQLite file is never created)."""
    litellm = settings.config.litellm_settings
    budget_id = litellm.max_end_user_budget_id
    if budget_id is None or litellm.default_end_user_budget is not None:
        return None
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from haimaker.limits.default_budget import missing_default_budget_message
    from haimaker.storage.engine import create_engine, normalize_database_url

    url = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        how = missing_default_budget_message(budget_id)
        return f"litellm_settings.max_end_user_budget_id: a new store has no budgets. {how}"
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            found = await connection.execute(text("SELECT 1 FROM budgets WHERE budget_id = :id"), {"id": budget_id})
            exists = found.first() is not None
    except Exception as exc:  # an unreachable or unmigrated store: start-up reports it; this check cannot tell
        return f"database_url: cannot read the store to check max_end_user_budget_id ({type(exc).__name__})"
    finally:
        await engine.dispose()
    return None if exists else f"litellm_settings.max_end_user_budget_id: {missing_default_budget_message(budget_id)}"


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the database migrations (also done at startup)."""
    from haimaker.preflight import describe_failure
    from haimaker.storage.engine import normalize_database_url, upgrade

    settings = _load_or_exit(config)
    _check_dependencies_or_exit(settings)
    url = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
    try:
        asyncio.run(upgrade(url))
    except Exception as exc:
        typer.echo(f"error: {describe_failure(exc, settings)}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo("database is up to date")


@app.command("import-litellm")
def import_litellm(
    from_url: Annotated[
        str, typer.Option("--from", help="LiteLLM's DATABASE_URL: postgresql://user:password@host:5432/litellm")
    ],
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and compare, write nothing")] = False,
) -> None:
    """Import a LiteLLM proxy's budgets, end users and virtual keys, with their spend, into haimaker's store.

    Imported keys keep working (LiteLLM stores keys as their SHA-256, as haimaker does). Run it while the haimaker
    proxy is stopped, and start (or restart) the proxy afterwards: a running proxy loads budgets, customers and keys
    at startup only. Safe to run again: rows already imported and unchanged are left alone, rows changed in LiteLLM
    since are brought up to date (LiteLLM's values win, spend included), rows LiteLLM does not have are kept.
    """
    from haimaker.app import verify_configured_store
    from haimaker.importer import LiteLLMSourceError
    from haimaker.importer import import_litellm as run_import
    from haimaker.importer.source import source_url
    from haimaker.storage.engine import normalize_database_url, upgrade
    from haimaker.storage.store_identity import STORE_ID_FILENAME, remember_store

    settings = _load_or_exit(config)
    _check_dependencies_or_exit(settings)

    async def run() -> list[str]:
        source_url(from_url)  # a malformed --from fails before the store is touched
        await verify_configured_store(settings)
        store = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
        await upgrade(store)
        await remember_store(store, settings.config_dir / STORE_ID_FILENAME)
        report = await run_import(from_url, store, now=SystemClock().now(), dry_run=dry_run)
        return report.lines()

    try:
        lines = asyncio.run(run())
    except LiteLLMSourceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None
    for line in lines:
        typer.echo(line)


def main() -> None:
    app(sys.argv[1:], prog_name="haimaker")
