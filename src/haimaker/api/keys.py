"""`/key/*`: LiteLLM's virtual-key API, thin handlers over `services.keys`.

Shapes follow LiteLLM 1.110.2: `/key/generate` and `/key/regenerate` answer `GenerateKeyResponse` (the plaintext
`key`, once, beside its `token` hash); `/key/info` `{"key", "info"}`; `/key/update` the row with `key`;
`/key/block` / `/key/unblock` the row; `/key/list` `KeyListResponseObject`. Where LiteLLM echoes the key a caller
passed, haimaker answers with its hash, so a plaintext key is never sent back after it was generated.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from haimaker.api.deps import ServicesDep
from haimaker.api.responses import json_response
from haimaker.api.schemas import (
    BlockKeyRequest,
    GenerateKeyRequest,
    KeyRequest,
    Name,
    Page,
    RegenerateKeyRequest,
    Text,
    UpdateKeyRequest,
    error_responses,
    set_fields,
)
from haimaker.api.wire import key_row
from haimaker.errors import BadRequestError
from haimaker.services.container import Services
from haimaker.services.keys import MAX_LIST_SIZE
from haimaker.storage.records import VirtualKey

router = APIRouter(tags=["key management"])


def _generated(services: Services, plaintext: str, key: VirtualKey) -> dict[str, Any]:
    """LiteLLM's `GenerateKeyResponse`: the plaintext once, the hash as `token` and `token_id`."""
    return {"key": plaintext, **key_row(key, services.clock.now()), "token_id": key.token}


@router.post("/key/generate", responses=error_responses(400, 422))
async def generate_key(body: GenerateKeyRequest, services: ServicesDep) -> Response:
    """Create a virtual key; the answer is the only place its value ever appears."""
    plaintext, key = await services.keys.generate(set_fields(body))
    return json_response(_generated(services, plaintext, key))


@router.get("/key/info", responses=error_responses(400, 404, 422))
async def key_info(
    services: ServicesDep,
    key: Annotated[
        Name | None, Query(description="The key's hash (preferred: keeps keys out of logs) or value")
    ] = None,
) -> Response:
    """One key: its hash, masked name, limits and live spend."""
    if not key:
        raise BadRequestError("No key passed in. Pass ?key= or authenticate with a virtual key.", param="key")
    found = await services.keys.info(key)
    return json_response({"key": found.token, "info": key_row(found, services.clock.now())})


@router.post("/key/update", responses=error_responses(400, 404, 422))
async def update_key(body: UpdateKeyRequest, services: ServicesDep) -> Response:
    """Change the fields sent of the key named by `key` (value or hash) or `key_alias`."""
    updated = await services.keys.update(set_fields(body))
    return json_response({"key": updated.token, **key_row(updated, services.clock.now())})


@router.post("/key/delete", responses=error_responses(400, 404, 422))
async def delete_keys(body: KeyRequest, services: ServicesDep) -> Response:
    """Delete keys by value, hash or alias, all or none; their spend logs stay."""
    deleted = await services.keys.delete(keys=body.keys, key_aliases=body.key_aliases)
    return json_response({"deleted_keys": deleted})


@router.get("/key/list", responses=error_responses(400, 422))
async def list_keys(
    services: ServicesDep,
    page: Annotated[Page, Query(description="Page number")] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_LIST_SIZE, description="Page size")] = 10,
    key_alias: Annotated[Text | None, Query(description="Only the key with exactly this alias")] = None,
    return_full_object: Annotated[bool, Query(description="Whole key rows instead of hashes")] = False,
) -> Response:
    """Keys newest first: their hashes, or with `return_full_object` their rows."""
    result = await services.keys.list(page, size, key_alias, return_full_object)
    now = services.clock.now()
    keys: list[Any] = [key_row(key, now) if return_full_object else key.token for key in result.keys]
    return json_response(
        {
            "keys": keys,
            "total_count": result.total_count,
            "current_page": result.current_page,
            "total_pages": result.total_pages,
        }
    )


@router.post("/key/regenerate", responses=error_responses(400, 404, 422))
async def regenerate_key(services: ServicesDep, body: RegenerateKeyRequest | None = None) -> Response:
    """A new value for the key named in the body; the old value stops working at once."""
    fields = set_fields(body) if body is not None else {}
    plaintext, key = await services.keys.regenerate(None, fields)
    return json_response(_generated(services, plaintext, key))


@router.post("/key/{key}/regenerate", responses=error_responses(400, 404, 422))
async def regenerate_key_by_path(
    key: Name, services: ServicesDep, body: RegenerateKeyRequest | None = None
) -> Response:
    """`/key/regenerate` with the key (value or hash) in the path."""
    fields = set_fields(body) if body is not None else {}
    plaintext, regenerated = await services.keys.regenerate(key, fields)
    return json_response(_generated(services, plaintext, regenerated))


@router.post("/key/block", responses=error_responses(400, 404, 422))
async def block_key(body: BlockKeyRequest, services: ServicesDep) -> Response:
    """Refuse every request made with the key until it is unblocked."""
    return json_response(key_row(await services.keys.block(body.key), services.clock.now()))


@router.post("/key/unblock", responses=error_responses(400, 404, 422))
async def unblock_key(body: BlockKeyRequest, services: ServicesDep) -> Response:
    """Let a blocked key make requests again."""
    return json_response(key_row(await services.keys.unblock(body.key), services.clock.now()))
