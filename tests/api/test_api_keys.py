"""`/key/*` over real HTTP on both engines: LiteLLM's shapes, statuses and messages, and a key's value never shown
again after `/key/generate`."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from haimaker.money import usd_to_nanos
from haimaker.state.keys import key_subject
from haimaker.storage import ChargeBatch
from tests.api.mgmt_support import assert_error, new_id
from tests.support.factories import make_log
from tests.support.proxy import RunningProxy


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/key/generate", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def info(api: httpx.Client, key: str) -> dict[str, Any]:
    response = api.get("/key/info", params={"key": key})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_generate_answers_the_key_once_with_its_hash_and_masked_name(api: httpx.Client) -> None:
    alias = new_id("app")
    body = generate(api, key_alias=alias, models=["gpt-3.5-turbo"], max_budget=5, rpm_limit=60, metadata={"a": 1})
    plaintext = body["key"]
    assert plaintext.startswith("sk-") and len(plaintext) == 25  # LiteLLM: "sk-" + token_urlsafe(16)
    assert body["token"] == body["token_id"] == sha256(plaintext)
    assert body["key_name"] == f"sk-...{plaintext[-4:]}"
    assert body["key_alias"] == alias and body["models"] == ["gpt-3.5-turbo"] and body["metadata"] == {"a": 1}
    assert (body["max_budget"], body["rpm_limit"], body["spend"]) == (5.0, 60, 0.0)
    assert (body["expires"], body["key_type"], body["blocked"], body["status"]) == (None, "default", False, "active")
    assert body["allowed_routes"] == [] and body["customer_id"] is None


def test_generated_keys_differ(api: httpx.Client) -> None:
    assert len({generate(api)["key"] for _ in range(5)}) == 5


def test_a_key_is_never_shown_again_after_generate(api: httpx.Client) -> None:
    alias = new_id("secret")
    plaintext = generate(api, key_alias=alias)["key"]
    token = sha256(plaintext)
    answers = [
        api.get("/key/info", params={"key": plaintext}),
        api.post("/key/update", json={"key": plaintext, "rpm_limit": 5}),
        api.get("/key/list", params={"key_alias": alias, "return_full_object": "true"}),
        api.get("/key/list", params={"key_alias": alias}),
        api.post("/key/block", json={"key": plaintext}),
        api.post("/key/unblock", json={"key": plaintext}),
        api.post("/key/delete", json={"keys": [plaintext]}),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        assert plaintext not in response.text
        assert token in response.text


def test_info_by_value_or_hash_shows_the_hash(api: httpx.Client) -> None:
    created = generate(api, key_alias=new_id("info"), budget_duration="30d", max_budget=2)
    by_value = info(api, created["key"])
    by_hash = info(api, created["token"])
    assert by_value == by_hash
    assert by_value["key"] == created["token"]
    row = by_value["info"]
    assert row["token"] == created["token"] and row["key_name"] == created["key_name"]
    assert row["budget_duration"] == "30d" and row["budget_reset_at"].endswith("T00:00:00Z")
    assert parse(row["budget_reset_at"]).day == 1


def test_info_of_an_unknown_key_is_a_404(api: httpx.Client) -> None:
    assert_error(
        api.get("/key/info", params={"key": "sk-unknown-key-12345"}), 404, "not_found", "Key not found in database"
    )
    assert_error(api.get("/key/info", params={"key": "0" * 64}), 404, "not_found", param="key")
    assert_error(api.get("/key/info"), 400, "invalid_request_error", param="key")


def test_custom_key_is_stored_by_its_hash(api: httpx.Client) -> None:
    custom = f"sk-custom-{new_id()}"
    body = generate(api, key=custom)
    assert body["key"] == custom and body["token"] == sha256(custom)
    assert info(api, custom)["info"]["key_name"] == f"sk-...{custom[-4:]}"
    duplicate = api.post("/key/generate", json={"key": custom})
    assert_error(duplicate, 400, "bad_request", param="key")


def test_custom_key_rules_are_litellms(api: httpx.Client) -> None:
    assert_error(
        api.post("/key/generate", json={"key": "pk-0123456789abcdef"}),
        400,
        "invalid_request_error",
        "Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: pk-0****cdef",
    )
    assert_error(
        api.post("/key/generate", json={"key": "sk-short"}),
        400,
        "invalid_request_error",
        "Invalid key format. LiteLLM Virtual Key must be at least 16 characters long.",
    )


def test_invalid_fields_are_refused(api: httpx.Client) -> None:
    def refused(status: int, **fields: Any) -> dict[str, Any]:
        return assert_error(api.post("/key/generate", json=fields), status, "invalid_request_error")

    assert refused(400, max_budget=-1)["param"] == "max_budget"
    assert refused(400, duration="forever")["param"] == "duration"
    assert refused(400, budget_duration="soon")["param"] == "budget_duration"
    assert refused(400, key_alias="a/../b")["param"] == "key_alias"
    missing = refused(400, end_user_budget_id="no-such-budget")
    assert missing["message"] == "end_user_budget_id=no-such-budget does not match any budget."
    refused(422, key_type="superuser")
    refused(422, rpm_limit=-1)
    refused(422, model_rpm_limit={"gpt-3.5-turbo": -5})
    refused(422, customer_id="")


def test_duplicate_alias_is_refused(api: httpx.Client) -> None:
    alias = new_id("dup")
    first = generate(api, key_alias=alias)
    error = assert_error(api.post("/key/generate", json={"key_alias": alias}), 400, "bad_request", param="key_alias")
    assert (
        error["message"] == f"Key with alias '{alias}' already exists. Unique key aliases across all keys are required."
    )
    other = generate(api)
    assert_error(api.post("/key/update", json={"key": other["token"], "key_alias": alias}), 400, "bad_request")
    assert api.get("/key/list", params={"key_alias": alias}).json()["keys"] == [first["token"]]


def test_key_type_sets_litellms_route_groups(api: httpx.Client) -> None:
    assert generate(api, key_type="llm_api")["allowed_routes"] == ["llm_api_routes"]
    assert generate(api, key_type="management")["allowed_routes"] == ["management_routes"]
    assert generate(api, key_type="read_only")["allowed_routes"] == ["info_routes"]
    assert generate(api, key_type="default", allowed_routes=["/chat/completions"])["allowed_routes"] == [
        "/chat/completions"
    ]


def test_duration_sets_the_expiry(api: httpx.Client) -> None:
    before = datetime.now(UTC)
    body = generate(api, duration="30d")
    expires = parse(body["expires"])
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    updated = api.post("/key/update", json={"key": body["token"], "duration": "-1"}).json()
    assert updated["expires"] is None


def test_update_changes_only_the_fields_sent(api: httpx.Client) -> None:
    budget_id = new_id("eu-tier")
    assert api.post("/budget/new", json={"budget_id": budget_id, "max_budget": 3}).status_code == 200
    created = generate(api, key_alias=new_id("upd"), rpm_limit=10, models=["gpt-3.5-turbo"], metadata={"x": 1})
    response = api.post(
        "/key/update",
        json={
            "key": created["key"],
            "tpm_limit": 1000,
            "max_budget": 2.5,
            "spend": 1.25,
            "metadata": {"y": 2},
            "customer_id": "acme",
            "end_user_budget_id": budget_id,
            "model_tpm_limit": {"gpt-3.5-turbo": 50},
        },
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["key"] == created["token"]
    assert (updated["rpm_limit"], updated["tpm_limit"], updated["max_budget"]) == (10, 1000, 2.5)
    assert updated["models"] == ["gpt-3.5-turbo"] and updated["metadata"] == {"y": 2}
    assert (updated["customer_id"], updated["end_user_budget_id"]) == ("acme", budget_id)
    assert updated["model_tpm_limit"] == {"gpt-3.5-turbo": 50}
    assert info(api, created["token"])["info"]["spend"] == 1.25
    cleared = api.post("/key/update", json={"key": created["token"], "max_budget": None, "end_user_budget_id": ""})
    assert (cleared.json()["max_budget"], cleared.json()["end_user_budget_id"]) == (None, None)


def test_update_by_alias_and_its_errors(api: httpx.Client) -> None:
    alias = new_id("by-alias")
    created = generate(api, key_alias=alias)
    updated = api.post("/key/update", json={"key_alias": alias, "rpm_limit": 7}).json()
    assert updated["token"] == created["token"] and updated["rpm_limit"] == 7
    assert_error(api.post("/key/update", json={"rpm_limit": 7}), 422, "invalid_request_error")
    assert_error(api.post("/key/update", json={"key": "0" * 64, "rpm_limit": 7}), 404, "not_found", "Key not found.")
    missing = new_id("ghost")
    assert_error(
        api.post("/key/update", json={"key_alias": missing}),
        404,
        "not_found",
        f"Key not found. No key with key_alias='{missing}'.",
    )


def test_delete_by_key_or_alias_is_all_or_nothing(api: httpx.Client) -> None:
    first, second = generate(api), generate(api, key_alias=new_id("del"))
    refused = api.post("/key/delete", json={"keys": [first["key"], "f" * 64]})
    assert_error(refused, 404, "not_found")
    assert info(api, first["token"])["key"] == first["token"]
    deleted = api.post("/key/delete", json={"keys": [first["key"]]})
    assert deleted.json() == {"deleted_keys": [first["token"]]}
    assert api.get("/key/info", params={"key": first["token"]}).status_code == 404
    by_alias = api.post("/key/delete", json={"key_aliases": [second["key_alias"]]})
    assert by_alias.json() == {"deleted_keys": [second["key_alias"]]}
    assert api.get("/key/info", params={"key": second["token"]}).status_code == 404
    assert_error(api.post("/key/delete", json={}), 422, "invalid_request_error")
    assert_error(api.post("/key/delete", json={"key_aliases": [new_id("none")]}), 404, "not_found")


def test_list_pages_newest_first_and_filters_by_alias(api: httpx.Client) -> None:
    made = [generate(api, key_alias=new_id("list")) for _ in range(3)]
    first = api.get("/key/list", params={"page": 1, "size": 2}).json()
    assert set(first) == {"keys", "total_count", "current_page", "total_pages"}
    assert first["current_page"] == 1 and first["total_count"] >= 3
    assert first["total_pages"] == math.ceil(first["total_count"] / 2)
    assert first["keys"] == [made[2]["token"], made[1]["token"]]
    assert api.get("/key/list", params={"page": 2, "size": 2}).json()["keys"][0] == made[0]["token"]
    only = api.get("/key/list", params={"key_alias": made[1]["key_alias"], "return_full_object": "true"}).json()
    assert only["total_count"] == 1 and only["total_pages"] == 1
    assert only["keys"][0]["token"] == made[1]["token"] and only["keys"][0]["key_alias"] == made[1]["key_alias"]
    nothing = api.get("/key/list", params={"key_alias": new_id("none")}).json()
    assert nothing == {"keys": [], "total_count": 0, "current_page": 1, "total_pages": 0}
    assert_error(api.get("/key/list", params={"size": 101}), 422, "invalid_request_error")


def test_regenerate_gives_a_new_value_and_keeps_the_row(api: httpx.Client) -> None:
    alias = new_id("regen")
    created = generate(api, key_alias=alias, rpm_limit=9, spend=0.5)
    response = api.post("/key/regenerate", json={"key": created["key"], "tpm_limit": 77})
    assert response.status_code == 200, response.text
    regenerated = response.json()
    assert regenerated["key"] != created["key"] and regenerated["key"].startswith("sk-")
    assert regenerated["token"] == sha256(regenerated["key"]) == regenerated["token_id"]
    assert (regenerated["key_alias"], regenerated["rpm_limit"], regenerated["tpm_limit"]) == (alias, 9, 77)
    assert regenerated["spend"] == 0.5
    assert api.get("/key/info", params={"key": created["token"]}).status_code == 404
    assert info(api, regenerated["key"])["info"]["spend"] == 0.5

    custom = f"sk-rotated-{new_id()}"
    by_path = api.post(f"/key/{regenerated['token']}/regenerate", json={"new_key": custom})
    assert by_path.status_code == 200, by_path.text
    assert by_path.json()["key"] == custom and by_path.json()["token"] == sha256(custom)
    assert api.post(f"/key/{sha256(custom)}/regenerate").status_code == 200  # no body: a random value


def test_regenerate_errors(api: httpx.Client) -> None:
    created = generate(api)
    assert_error(api.post("/key/regenerate", json={}), 400, "invalid_request_error", "No key passed in.")
    assert_error(api.post(f"/key/{'0' * 64}/regenerate"), 404, "not_found", "Key not found.")
    bad = api.post("/key/regenerate", json={"key": created["token"], "new_key": "pk-0123456789abcdef"})
    assert_error(bad, 400, "invalid_request_error", param="new_key")
    short = api.post("/key/regenerate", json={"key": created["token"], "new_key": "sk-short"})
    assert_error(short, 400, "invalid_request_error", "New key must be at least 16 characters long.")


def test_block_and_unblock(api: httpx.Client) -> None:
    created = generate(api)
    blocked = api.post("/key/block", json={"key": created["key"]}).json()
    assert blocked["blocked"] is True and blocked["status"] == "revoked" and blocked["token"] == created["token"]
    assert info(api, created["token"])["info"]["blocked"] is True
    unblocked = api.post("/key/unblock", json={"key": created["token"]}).json()
    assert unblocked["blocked"] is False and unblocked["status"] == "active"
    assert_error(api.post("/key/block", json={"key": "not a key"}), 400, "invalid_request_error", "Invalid key format.")
    assert_error(api.post("/key/block", json={"key": "e" * 64}), 404, "not_found", "Key not found.")
    assert_error(api.post("/key/unblock", json={}), 422, "invalid_request_error")


def test_key_routes_need_the_admin_key(api: httpx.Client) -> None:
    url = str(api.base_url).rstrip("/") + "/key/generate"
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer sk-wrong-key"}).status_code == 401
    assert httpx.post(url, json={}).status_code == 401


def test_every_key_write_reaches_the_hot_state_before_it_answers(api: httpx.Client, shared_proxy: RunningProxy) -> None:
    services = shared_proxy.state.services
    created = generate(api, key_alias=new_id("hot"), rpm_limit=3, spend=0.25)
    cached = services.key_catalog.get(created["token"])
    assert cached is not None and cached.rpm_limit == 3
    assert services.counters.spend(key_subject(created["token"])) == usd_to_nanos("0.25")
    api.post("/key/update", json={"key": created["token"], "budget_duration": "1d"})  # a new period keeps the spend
    assert services.counters.spend(key_subject(created["token"])) == usd_to_nanos("0.25")
    api.post("/key/block", json={"key": created["token"]})
    blocked = services.key_catalog.get(created["token"])
    assert blocked is not None and blocked.blocked
    regenerated = api.post("/key/regenerate", json={"key": created["token"]}).json()
    assert services.key_catalog.get(created["token"]) is None
    assert services.key_catalog.get(regenerated["token"]) is not None
    assert services.counters.spend(key_subject(regenerated["token"])) == usd_to_nanos("0.25")
    api.post("/key/delete", json={"keys": [regenerated["token"]]})
    assert services.key_catalog.get(regenerated["token"]) is None
    assert services.counters.spend(key_subject(regenerated["token"])) is None


def test_spend_logs_filter_by_key_value_or_hash(api: httpx.Client, shared_proxy: RunningProxy) -> None:
    created = generate(api)
    logs = [make_log(api_key=created["token"], end_user=new_id()), make_log(api_key=sha256("sk-another-key-0001"))]
    shared_proxy.call(shared_proxy.state.sink.spend.write_batch(ChargeBatch(logs=logs)))
    for key in (created["key"], created["token"]):
        response = api.get("/spend/logs", params={"api_key": key})
        assert response.status_code == 200, response.text
        assert [row["request_id"] for row in response.json()] == [logs[0].request_id]
        assert response.json()[0]["api_key"] == created["token"]
