"""The service layer as a FastAPI dependency, for the management routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from haimaker.api.deps import AppStateDep
from haimaker.services.container import Services


def get_services(state: AppStateDep) -> Services:
    services = state.services
    assert services is not None, "the lifespan builds the services before serving"
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
