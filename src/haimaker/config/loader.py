"""Reads a config file: YAML, `os.environ/NAME` references, environment overrides, validation.

`load_config` returns a validated `Settings` or raises `ConfigError` listing every problem with its
YAML path, which is what `haimaker config check` prints and what stops startup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from haimaker.config.schema import Config, FallbackList
from haimaker.config.typos import check_extras
from haimaker.logs import is_detailed_debug

_ENV_PREFIX = "os.environ/"


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one `path: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Settings:
    """A loaded config plus where it came from and what the environment added."""

    config: Config
    config_dir: Path
    master_key: str | None
    database_url: str | None
    redis_url: str | None
    warnings: tuple[str, ...] = field(default=())
    detailed_debug: bool = False  # `--detailed_debug`, or env DETAILED_DEBUG (LiteLLM's flag and its env twin)

    @property
    def access_log(self) -> bool:
        """Whether each HTTP request is logged (`api/access_log.py`)."""
        return self.detailed_debug or self.config.general_settings.access_log


def load_config(path: Path | str | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the config at `path` (None: an empty config, everything from the environment)."""
    environ = os.environ if env is None else env
    raw: Any = {}
    config_dir = Path.cwd()
    if path is not None:
        file = Path(path)
        config_dir = file.resolve().parent
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError([f"{file}: file not found"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([_yaml_problem(file, exc)]) from None
    if not isinstance(raw, dict):
        raise ConfigError(["(root): must be a mapping of sections (model_list, general_settings, ...)"])
    # A section left with only comments (`router_settings:` and its lines commented out) is null in YAML; LiteLLM reads
    # it as empty, and so do we.
    raw = {name: ({} if value is None and name != "model_list" else value) for name, value in raw.items()}

    # environment_variables are applied first so that os.environ/ references can use them.
    env_vars = raw.get("environment_variables") or {}
    merged_env: dict[str, str] = dict(environ)
    if isinstance(env_vars, dict):
        merged_env.update({str(k): str(v) for k, v in env_vars.items()})
    problems: list[str] = []
    resolved = _resolve_env_refs(raw, merged_env, "", problems)
    # Checked on the raw mapping, before validation, so that a provider problem is reported alongside
    # schema problems instead of only once those are fixed (config check promises every problem at once).
    _check_models(resolved.get("model_list"), problems)
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(problems + [_format_error(err) for err in exc.errors()]) from None

    _check_default_budget(config, problems)
    problems.extend(_fallback_problems(config))
    typos, warnings = check_extras(config)
    problems.extend(typos)
    warnings.extend(_accepted_but_not_enforced(config))
    general = config.general_settings
    master_key = general.master_key or environ.get("HAIMAKER_MASTER_KEY") or environ.get("LITELLM_MASTER_KEY")
    database_url = general.database_url or environ.get("DATABASE_URL")
    redis_url = general.redis_url or environ.get("REDIS_URL") or _redis_url_from_router(config)
    if problems:
        raise ConfigError(problems)
    return Settings(
        config=config,
        config_dir=config_dir,
        master_key=master_key or None,
        database_url=database_url or None,
        redis_url=redis_url or None,
        warnings=tuple(warnings),
        detailed_debug=is_detailed_debug(environ),
    )


def _yaml_problem(file: Path, exc: yaml.YAMLError) -> str:
    """One line naming the file, the line and column, and what the parser expected (PyYAML's own text spans
    several lines and names `<unicode string>` instead of the file)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"{file}: not valid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark
    line = f"{file}: line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        start = exc.context_mark
        line += f" ({exc.context} started at line {start.line + 1}, column {start.column + 1})"
    return line


def _resolve_env_refs(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :]
        if name not in env:
            problems.append(f"{path or '(root)'}: environment variable {name} is not set")
            return None
        return env[name]
    if isinstance(value, dict):
        return {k: _resolve_env_refs(v, env, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env_refs(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _format_error(err: Mapping[str, Any]) -> str:
    path = ""
    for part in err.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(root)'}: {err.get('msg', 'invalid value')}"


def _redis_url_from_router(config: Config) -> str | None:
    router = config.router_settings
    if not router.redis_host:
        return None
    auth = f":{router.redis_password}@" if router.redis_password else ""
    return f"redis://{auth}{router.redis_host}:{router.redis_port or 6379}/0"


_SUPPORTED_PROVIDERS = ("openai", "azure", "anthropic", "gemini", "vertex_ai", "bedrock", "mock")


def _check_models(model_list: Any, problems: list[str]) -> None:
    """Providers we cannot serve, and Azure deployments without their endpoint (shape errors are pydantic's)."""
    if not isinstance(model_list, list):
        return
    for i, entry in enumerate(model_list):
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        if not isinstance(params, dict):
            continue
        model = params.get("model")
        if not isinstance(model, str) or "/" not in model:
            continue
        provider = model.split("/", 1)[0]
        if provider not in _SUPPORTED_PROVIDERS:
            problems.append(
                f"model_list[{i}].litellm_params.model: provider {provider!r} is not supported "
                f"(use one of {', '.join(_SUPPORTED_PROVIDERS)})"
            )
        elif provider == "vertex_ai" and not _vertex_project_known(params):
            problems.append(
                f"model_list[{i}].litellm_params.vertex_project: required for vertex_ai/ deployments, unless "
                "vertex_credentials is a service account JSON (or its file) with a project_id, or VERTEXAI_PROJECT "
                "or GOOGLE_CLOUD_PROJECT is set"
            )
        elif provider == "azure" and not params.get("api_base"):
            problems.append(f"model_list[{i}].litellm_params.api_base: required for azure/ deployments")
        elif provider == "bedrock" and not _bedrock_region_known(params):
            problems.append(
                f"model_list[{i}].litellm_params.aws_region_name: required for bedrock/ deployments "
                "(e.g. aws_region_name: us-east-1), unless AWS_REGION_NAME, AWS_REGION or AWS_DEFAULT_REGION is set "
                "or the AWS profile configures a region"
            )
        elif provider == "anthropic" and not params.get("api_key") and not os.environ.get("ANTHROPIC_API_KEY"):
            problems.append(
                f"model_list[{i}].litellm_params.api_key: required for anthropic/ deployments "
                "(e.g. api_key: os.environ/ANTHROPIC_API_KEY), or set ANTHROPIC_API_KEY"
            )


def _bedrock_region_known(params: Mapping[str, Any]) -> bool:
    """Whether a bedrock/ deployment has a region to sign for (see `providers/bedrock.py`)."""
    from haimaker.providers.bedrock import profile_region, region_of  # botocore loads only for bedrock configs

    profile = params.get("aws_profile_name")
    return region_of(params, os.environ) is not None or (
        profile_region(profile if isinstance(profile, str) else None) is not None
    )


def _vertex_project_known(params: Mapping[str, Any]) -> bool:
    """Whether a vertex_ai/ deployment's project is known before any call (see `providers/vertex.py`)."""
    if params.get("vertex_project") or os.environ.get("VERTEXAI_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT"):
        return True
    credentials = params.get("vertex_credentials")
    info: Any = credentials
    try:
        if isinstance(credentials, str) and credentials.lstrip().startswith("{"):
            info = json.loads(credentials)
        elif isinstance(credentials, str):
            info = json.loads(Path(credentials).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, Mapping) and bool(info.get("project_id"))


def _check_default_budget(config: Config, problems: list[str]) -> None:
    """A declared default budget needs the id it is created under."""
    litellm = config.litellm_settings
    if litellm.default_end_user_budget is not None and not litellm.max_end_user_budget_id:
        problems.append(
            "litellm_settings.default_end_user_budget: declares the default budget, but "
            "litellm_settings.max_end_user_budget_id (the id it is created under) is not set"
        )


_ANY_GROUP = "*"  # a fallback entry for every group without its own (LiteLLM's generic key)


def _fallback_problems(config: Config) -> list[str]:
    """Config errors in the fallback lists: an entry with other than one key, a group or target not configured."""
    groups = {entry.model_name for entry in config.model_list}
    problems = []
    sections = (("router_settings", config.router_settings), ("litellm_settings", config.litellm_settings))
    for section_name, section in sections:
        for key in ("fallbacks", "context_window_fallbacks"):
            entries: FallbackList | None = getattr(section, key)
            for i, entry in enumerate(entries or []):
                path = f"{section_name}.{key}[{i}]"
                if len(entry) != 1:
                    problems.append(f"{path}: must have exactly one key (a model group), has {len(entry)}")
                    continue
                ((group, targets),) = entry.items()
                if group != _ANY_GROUP and group not in groups:
                    problems.append(f"{path}: model group {group!r} is not in model_list")
                problems.extend(
                    f"{path}.{group}: fallback {target!r} is not a model_name in model_list"
                    for target in targets
                    if target not in groups
                )
        for target in section.default_fallbacks or []:
            if target not in groups:
                problems.append(f"{section_name}.default_fallbacks: {target!r} is not a model_name in model_list")
    return problems


def _accepted_but_not_enforced(config: Config) -> list[str]:
    """Keys that validate but do nothing yet: said once at startup rather than dropped silently."""
    found = []
    for i, entry in enumerate(config.model_list):
        params = entry.litellm_params
        if params.max_retries is not None:
            found.append(f"model_list[{i}].litellm_params.max_retries")
    return [f"config key accepted but not enforced yet: {key}" for key in found]
