"""JSON Schema (OpenAI tool parameters, `json_schema` response formats) to the Schema object Gemini accepts.

Gemini takes an OpenAPI 3.0 subset and answers 400 to anything else (`additionalProperties`, `$ref`, `strict`,
type arrays, `const`...). As LiteLLM does (`build_vertex_schema`): `$defs` / `$ref` are inlined, a type array
becomes `anyOf`, a `null` branch of `anyOf` becomes `nullable: true` on the others, `enum` is kept on strings only
(and its empty strings dropped), an array gets `items` (an object when it has none), an object with no properties
loses `properties` / `required`, a schema with no type is an object, and every key outside Gemini's Schema fields
is dropped. `propertyOrdering` is added for response schemas (Gemini orders output fields alphabetically without it).

Invariants: the input is never modified (a new schema is built); a `$ref` cycle or a schema nested past
`MAX_DEPTH` is a `BadRequestError` naming the parameter, never a recursion error.
"""

from __future__ import annotations

from typing import Any, Final

from haimaker.errors import BadRequestError

MAX_DEPTH: Final = 48
# The fields of Gemini's Schema object (generativelanguage v1beta / aiplatform v1), as LiteLLM's `Schema` TypedDict.
_SCHEMA_FIELDS: Final = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "default",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "properties",
        "propertyOrdering",
        "required",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
    }
)
_FORMATS: Final = frozenset({"enum", "date-time"})
# Moved into the `object` / `array` branch when a type array becomes `anyOf`.
_TYPE_SPECIFIC: Final = ("properties", "required", "items", "minItems", "maxItems", "minProperties", "maxProperties")


def gemini_schema(schema: dict[str, Any], *, param: str, property_ordering: bool = False) -> dict[str, Any]:
    """The Gemini Schema object for a JSON Schema; `param` names the request field in errors."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    return _Cleaner(defs if isinstance(defs, dict) else {}, param, property_ordering).clean(schema, 0, ())


class _Cleaner:
    __slots__ = ("_defs", "_ordering", "_param")

    def __init__(self, defs: dict[str, Any], param: str, ordering: bool) -> None:
        self._defs = defs
        self._param = param
        self._ordering = ordering

    def clean(self, schema: object, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise BadRequestError(f"{self._param}: the JSON schema is nested deeper than {MAX_DEPTH} levels.")
        if not isinstance(schema, dict):
            return {"type": "object"}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if ref in refs:
                raise BadRequestError(
                    f"{self._param}: the JSON schema's {ref!r} refers to itself (Gemini has no $ref)."
                )
            target = self._resolve(ref)
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            return self.clean({**target, **extra}, depth + 1, (*refs, ref))
        schema = _split_type_array(schema)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key not in _SCHEMA_FIELDS:
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: self.clean(sub, depth + 1, refs) for name, sub in value.items()}
            elif key == "items":
                out[key] = self.clean(value, depth + 1, refs) if isinstance(value, dict) and value else None
            elif key == "anyOf" and isinstance(value, list):
                out[key] = [self.clean(sub, depth + 1, refs) for sub in value if _is_not_null(sub)]
                if len(out[key]) < len(value):
                    for branch in out[key]:
                        branch["nullable"] = True
                if not out[key]:
                    del out[key]
            elif key == "format":
                if value in _FORMATS:
                    out[key] = value
            elif key == "enum":
                if isinstance(value, list):
                    out[key] = [item for item in value if isinstance(item, str) and item]
            else:
                out[key] = value
        return self._finish(out)

    def _finish(self, out: dict[str, Any]) -> dict[str, Any]:
        kind = out.get("type")
        if kind is None and "anyOf" not in out:
            kind = out["type"] = "object"
        if "enum" in out and (kind != "string" or not out["enum"]):
            del out["enum"]
        if kind == "array" and not out.get("items"):
            out["items"] = {"type": "object"}
        if out.get("items") is None:
            out.pop("items", None)
        if kind == "object" and not out.get("properties"):
            out.pop("properties", None)
            out.pop("required", None)
            out.pop("propertyOrdering", None)
        if self._ordering and isinstance(out.get("properties"), dict) and "propertyOrdering" not in out:
            out["propertyOrdering"] = list(out["properties"])
        return out

    def _resolve(self, ref: str) -> dict[str, Any]:
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                target = self._defs.get(ref[len(prefix) :])
                if isinstance(target, dict):
                    return target
        raise BadRequestError(f"{self._param}: the JSON schema's $ref {ref!r} is not defined in its $defs.")


def _split_type_array(schema: dict[str, Any]) -> dict[str, Any]:
    """`{"type": ["string", "null"]}` as `anyOf` branches (object/array fields moved into their branch)."""
    kinds = schema.get("type")
    if not isinstance(kinds, list):
        return schema
    names = [k for k in kinds if isinstance(k, str)]
    if len(names) == 1:
        return {**schema, "type": names[0]}
    rest = {k: v for k, v in schema.items() if k != "type"}
    branches: list[dict[str, Any]] = []
    for name in names:
        branch: dict[str, Any] = {"type": name}
        if name in ("object", "array"):
            branch.update({f: schema[f] for f in _TYPE_SPECIFIC if f in schema})
        elif name == "string" and "enum" in schema:
            branch["enum"] = schema["enum"]
        branches.append(branch)
    if any(name in ("object", "array") for name in names):
        rest = {k: v for k, v in rest.items() if k not in _TYPE_SPECIFIC}
    rest.pop("enum", None)
    return {**rest, "anyOf": branches}


def _is_not_null(branch: object) -> bool:
    return not (isinstance(branch, dict) and branch.get("type") == "null")
