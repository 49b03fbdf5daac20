"""The service layer: use-cases shared by the management API and the admin UI (one implementation of
each rule). Built once per app in the lifespan."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from haimaker.app_state import AppState
    from haimaker.storage.sink import StoreSink


class Services:
    def __init__(self, state: AppState, sink: StoreSink) -> None:
        self.state = state
        self.sink = sink
