"""JSON Schema to Gemini's Schema: what Gemini refuses is removed or rewritten (as LiteLLM does), the rest kept."""

from __future__ import annotations

from typing import Any

import pytest

from haimaker.errors import BadRequestError
from haimaker.providers.gemini_schema import MAX_DEPTH, gemini_schema
from tests.support.fakes.gemini_wire import check_schema


def cleaned(schema: dict[str, Any], **options: Any) -> dict[str, Any]:
    result = gemini_schema(schema, param="p", **options)
    check_schema(result, "p")
    return result


def test_refs_are_inlined_and_unknown_keywords_dropped() -> None:
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"pet": {"$ref": "#/$defs/Pet"}, "tags": {"type": "array"}},
        "required": ["pet"],
        "additionalProperties": False,
        "$defs": {"Pet": {"type": "object", "properties": {"name": {"type": "string", "const": "x"}}, "strict": True}},
    }
    assert cleaned(schema) == {
        "type": "object",
        "properties": {
            "pet": {"type": "object", "properties": {"name": {"type": "string"}}},
            "tags": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["pet"],
    }


def test_nullable_types_and_anyof_null() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "c": {"type": ["string", "integer"]},
        },
    }
    assert cleaned(schema)["properties"] == {
        "a": {"anyOf": [{"type": "string", "nullable": True}]},
        "b": {"anyOf": [{"type": "integer", "nullable": True}]},
        "c": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    }


def test_enums_stay_on_strings_only_without_empty_values() -> None:
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string", "enum": ["a", "", "b"]}, "n": {"type": "integer", "enum": [1, 2]}},
    }
    assert cleaned(schema)["properties"] == {"s": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer"}}


def test_empty_object_loses_properties_and_untyped_is_object() -> None:
    assert cleaned({"properties": {}, "required": []}) == {"type": "object"}
    assert cleaned({"type": "string", "format": "uri"}) == {"type": "string"}
    assert cleaned({"type": "string", "format": "date-time"}) == {"type": "string", "format": "date-time"}


def test_property_ordering_for_response_schemas() -> None:
    schema = {
        "type": "object",
        "properties": {"z": {"type": "string"}, "a": {"type": "object", "properties": {"y": {}}}},
    }
    result = cleaned(schema, property_ordering=True)
    assert result["propertyOrdering"] == ["z", "a"]
    assert result["properties"]["a"]["propertyOrdering"] == ["y"]


def test_a_ref_cycle_or_a_missing_ref_or_a_too_deep_schema_is_a_400() -> None:
    cyclic = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    with pytest.raises(BadRequestError, match="refers to itself"):
        gemini_schema(cyclic, param="p")
    with pytest.raises(BadRequestError, match="not defined"):
        gemini_schema({"$ref": "#/$defs/Missing"}, param="p")
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_DEPTH + 2):
        deep = {"type": "object", "properties": {"x": deep}}
    with pytest.raises(BadRequestError, match="nested deeper"):
        gemini_schema(deep, param="p")
