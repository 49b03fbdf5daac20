"""`/spend/dead_letters`: the charges and resets the store could not hold (admin only, like every `/spend/` route).

A dead letter stays until an operator deals with it (re-applies it by hand, or decides it was nonsense) and deletes
it; while any exists, readiness says "degraded". Items filed in the dead-letter file (the store was down at the
time) are counted here but listed only in that file (`dead-letters.jsonl` beside the config).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from haimaker.api.deps import AppStateDep
from haimaker.api.responses import json_response
from haimaker.api.schemas import error_responses
from haimaker.errors import NotFoundError, ServiceUnavailableError
from haimaker.storage.dead_letters_repo import DeadLetterRepository

router = APIRouter(tags=["Budget & Spend Tracking"])
_LETTER_ID: Final = re.compile(r"[0-9a-f]{64}")


def _repository(state: AppStateDep) -> DeadLetterRepository:
    if state.dead_letters is None:
        raise ServiceUnavailableError("the dead-letter table is not available")
    return state.dead_letters


@router.get("/spend/dead_letters", responses=error_responses(422))
async def list_dead_letters(
    state: AppStateDep, limit: Annotated[int, Query(ge=1, le=1_000, description="At most this many")] = 100
) -> Response:
    """The newest dead letters first, each with its error and the item as it was queued."""
    letters = await _repository(state).list(limit)
    box = state.recorder.dead_letters
    return json_response(
        {
            "data": [
                {
                    "id": letter.id,
                    "kind": letter.kind,
                    "error": letter.error,
                    "created_at": letter.created_at.isoformat(),
                    "item": orjson.loads(letter.payload),
                }
                for letter in letters
            ],
            "in_file": box.in_file,
            "in_log_only": box.in_log_only,
        }
    )


@router.delete("/spend/dead_letters/{letter_id}", responses=error_responses(404))
async def delete_dead_letter(letter_id: str, state: AppStateDep) -> Response:
    """Remove a dead letter once it has been dealt with."""
    # Ids are sha256 hex: anything else (a NUL, a megabyte) is not one, and never reaches the store.
    if not _LETTER_ID.fullmatch(letter_id) or not await _repository(state).remove(letter_id):
        raise NotFoundError("no such dead letter", param="letter_id")
    return json_response({"deleted": letter_id})
