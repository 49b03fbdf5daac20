"""The `haimaker` command: serve the proxy, check a config, upgrade the database.

haimaker --config config.yaml [--host 0.0.0.0] [--port 4000] [--num_workers 1] [--detailed_debug]
haimaker config check --config config.yaml
haimaker db upgrade --config config.yaml
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from haimaker.config.loader import ConfigError, Settings, load_config

app = typer.Typer(add_completion=False, no_args_is_help=False, help="haimaker: an OpenAI-compatible LLM gateway.")
config_app = typer.Typer(help="Inspect a config file.")
db_app = typer.Typer(help="Manage the database.")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="Path to config.yaml")]


def _load_or_exit(config: Path | None) -> Settings:
    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "0.0.0.0",
    port: Annotated[int | None, typer.Option(help="Port (default 4000, or env PORT)")] = None,
    num_workers: Annotated[int, typer.Option("--num_workers", "--num-workers", min=1)] = 1,
    detailed_debug: Annotated[bool, typer.Option("--detailed_debug", "--detailed-debug")] = False,
    server: Annotated[str, typer.Option(help="HTTP server: uvicorn or granian")] = "uvicorn",
) -> None:
    """Run the proxy."""
    if ctx.invoked_subcommand is not None:
        return
    logging.basicConfig(
        level=logging.DEBUG if detailed_debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = _load_or_exit(config)
    port = port if port is not None else int(os.environ.get("PORT", "4000"))
    from haimaker.app import verify_configured_store
    from haimaker.server import run_server

    try:
        asyncio.run(verify_configured_store(settings))
        run_server(settings, config, host=host, port=port, workers=num_workers, server=server, debug=detailed_debug)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2) from None


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate a config file and print every problem with its YAML path."""
    settings = _load_or_exit(config)
    for warning in settings.warnings:
        typer.echo(f"warning: {warning}")
    models = sorted({m.model_name for m in settings.config.model_list})
    typer.echo(f"config OK: {len(settings.config.model_list)} deployments, models: {', '.join(models) or 'none'}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the database migrations (also done at startup)."""
    from haimaker.storage.engine import normalize_database_url, upgrade

    settings = _load_or_exit(config)
    url = normalize_database_url(settings.database_url, config_dir=settings.config_dir)
    asyncio.run(upgrade(url))
    typer.echo("database is up to date")


def main() -> None:
    app(sys.argv[1:], prog_name="haimaker")
