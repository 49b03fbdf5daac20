"""Bedrock's wire formats for the fake: the Converse request checks, the event-stream encoder, SigV4 verification.

The checks follow the Converse API reference (API_runtime_Converse, Message, ContentBlock, ToolConfiguration,
InferenceConfiguration): only Converse's top-level fields; turns alternate user/assistant starting with the user;
each content block has exactly one member; text is not blank; images are png/jpeg/gif/webp with base64 `bytes`;
`toolUse` only in assistant turns, `toolResult` only in user turns answering an earlier `toolUse` id; a conversation
with tool blocks needs `toolConfig`; `inferenceConfig` holds only its four fields.

SigV4 is verified the way AWS does it: the `Authorization` header is parsed (access key, date, region, service,
signed headers), then the signature is recomputed with botocore from the request as received (raw path, signed
headers, body, `x-amz-date`) and compared.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import struct
import zlib
from collections.abc import Mapping
from typing import Any, Final

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

_FIELDS: Final = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "requestMetadata",
        "performanceConfig",
    }
)
_BLOCKS: Final = {
    "user": frozenset({"text", "image", "document", "video", "toolResult", "cachePoint"}),
    "assistant": frozenset({"text", "toolUse", "reasoningContent", "cachePoint"}),
}
_INFERENCE: Final = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
_IMAGE_FORMATS: Final = frozenset({"png", "jpeg", "gif", "webp"})
_MAX_SKEW: Final = datetime.timedelta(minutes=15)


# ---- event stream ---------------------------------------------------------------------------------------------


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One `application/vnd.amazon.eventstream` message with string headers, both CRCs computed."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack(">B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: bytes) -> bytes:
    """A ConverseStream event message (`:message-type: event`)."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, payload)


def exception(exception_type: str, payload: bytes) -> bytes:
    """A ConverseStream exception message (`:message-type: exception`)."""
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return encode_message(headers, payload)


# ---- SigV4 ----------------------------------------------------------------------------------------------------


def sigv4_problem(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: ReadOnlyCredentials,
    region: str,
    service: str = "bedrock",
    now: datetime.datetime | None = None,
) -> tuple[str, str] | None:
    """Why AWS would refuse this request's signature, as (exception type, message); None when it is valid.

    `headers` are lower-cased; `url` is the scheme, the Host header and the raw (still percent-encoded) path.
    """
    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return "MissingAuthenticationTokenException", "Missing Authentication Token"
    fields = dict(
        part.strip().split("=", 1) for part in authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",") if "=" in part
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        return "IncompleteSignatureException", "Authorization header requires a valid Credential."
    key_id, day, scope_region, scope_service, _ = scope
    if key_id != credentials.access_key:
        return "UnrecognizedClientException", "The security token included in the request is invalid."
    if scope_region != region or scope_service != service:
        return "InvalidSignatureException", f"Credential should be scoped to a valid region ({region}) and {service}."
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "IncompleteSignatureException", "Authorization header requires existence of either X-Amz-Date or Date."
    if abs((now or datetime.datetime.now(datetime.UTC)) - signed_at) > _MAX_SKEW or amz_date[:8] != day:
        return "InvalidSignatureException", "Signature expired or not yet valid."
    signed = fields.get("SignedHeaders", "").split(";")
    required = {"host", "x-amz-date"} | ({"x-amz-security-token"} if credentials.token else set())
    if not required <= set(signed):
        return "IncompleteSignatureException", f"SignedHeaders must include {sorted(required)}."
    if credentials.token and headers.get("x-amz-security-token") != credentials.token:
        return "UnrecognizedClientException", "The security token included in the request is invalid."
    expected = _signature(method, url, headers, signed, body, credentials, region, service, amz_date)
    if fields.get("Signature") != expected:
        return (
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.",
        )
    return None


def _signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    signed: list[str],
    body: bytes,
    credentials: ReadOnlyCredentials,
    region: str,
    service: str,
    amz_date: str,
) -> str:
    to_sign = {name: headers[name] for name in signed if name != "host" and name in headers}
    request = AWSRequest(method=method, url=url, data=body, headers=to_sign)
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(credentials, service, region)
    canonical = auth.canonical_request(request)
    signature: str = auth.signature(auth.string_to_sign(request, canonical), request)
    return signature


# ---- Converse requests ----------------------------------------------------------------------------------------


def converse_problem(body: Mapping[str, Any]) -> str | None:
    """What Bedrock's validation would refuse in a Converse body (None: nothing)."""
    for name in body:
        if name not in _FIELDS:
            return f"Malformed input request: extraneous key [{name}] is not permitted, please reformat your input"
    problem = _system_problem(body.get("system")) or _inference_problem(body.get("inferenceConfig"))
    if problem is not None:
        return problem
    tool_names, problem = _tool_config_problem(body.get("toolConfig"))
    return problem or _messages_problem(body.get("messages"), body.get("toolConfig") is not None, tool_names)


def _system_problem(system: object) -> str | None:
    if system is None:
        return None
    if not isinstance(system, list):
        return "system: must be a list of SystemContentBlock"
    for i, block in enumerate(system):
        if not isinstance(block, dict) or len(block) != 1 or not ({"text", "cachePoint", "guardContent"} >= set(block)):
            return f"system.{i}: a SystemContentBlock must have exactly one member"
        if "text" in block and (not isinstance(block["text"], str) or not block["text"].strip()):
            return f"system.{i}.text: The text field in the SystemContentBlock is blank."
    return None


def _inference_problem(config: object) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict) or set(config) - _INFERENCE:
        return "inferenceConfig: only maxTokens, temperature, topP and stopSequences are permitted"
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        return "inferenceConfig.maxTokens: must be an integer >= 1"
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            return f"inferenceConfig.{name}: must be between 0 and 1"
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        return "inferenceConfig.stopSequences: must be a list of non-empty strings"
    return None


def _tool_config_problem(config: object) -> tuple[set[str], str | None]:
    if config is None:
        return set(), None
    if not isinstance(config, dict) or set(config) - {"tools", "toolChoice"}:
        return set(), "toolConfig: only tools and toolChoice are permitted"
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        return set(), "toolConfig.tools: at least one tool is required"
    names: set[str] = set()
    for i, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) and set(tool) == {"toolSpec"} else None
        if not isinstance(spec, dict) or set(spec) - {"name", "description", "inputSchema"}:
            return names, f"toolConfig.tools.{i}: must be a toolSpec with name, description and inputSchema only"
        schema = spec.get("inputSchema")
        if not isinstance(spec.get("name"), str) or not isinstance(schema, dict) or set(schema) != {"json"}:
            return names, f"toolConfig.tools.{i}.toolSpec: name and inputSchema.json are required"
        if not isinstance(schema["json"], dict) or schema["json"].get("type") != "object":
            return names, f"toolConfig.tools.{i}.toolSpec.inputSchema.json: the schema type must be object"
        names.add(spec["name"])
    choice = config.get("toolChoice")
    if choice is not None:
        if not isinstance(choice, dict) or len(choice) != 1 or not ({"auto", "any", "tool"} >= set(choice)):
            return names, "toolConfig.toolChoice: must have exactly one of auto, any, tool"
        if "tool" in choice and choice["tool"].get("name") not in names:
            return names, "toolConfig.toolChoice.tool.name: names no tool in toolConfig.tools"
    return names, None


def _messages_problem(messages: object, has_tool_config: bool, tool_names: set[str]) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    seen_ids: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return f"messages.{i}: a Message has exactly role and content"
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            return (
                "A conversation must alternate between user and assistant roles. "
                "Make sure the conversation starts with a user message."
            )
        content = message["content"]
        if not isinstance(content, list) or not content:
            return f"messages.{i}.content: at least one content block is required"
        for j, block in enumerate(content):
            problem = _block_problem(block, expected, f"messages.{i}.content.{j}", seen_ids, has_tool_config)
            if problem is not None:
                return problem
            if "toolUse" in block:
                if tool_names and block["toolUse"]["name"] not in tool_names:
                    return f"messages.{i}.content.{j}.toolUse.name: names no tool in toolConfig.tools"
                seen_ids.add(block["toolUse"]["toolUseId"])
    return None


def _block_problem(block: object, role: str, at: str, seen_ids: set[str], has_tool_config: bool) -> str | None:
    if not isinstance(block, dict) or len(block) != 1:
        return f"{at}: a ContentBlock must have exactly one member"
    (kind,) = block
    if kind not in _BLOCKS[role]:
        return f"{at}: {kind} blocks are not permitted in {role} messages"
    value = block[kind]
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        return "The text field in the ContentBlock object is blank. Add text to the text field, and try again."
    if kind == "image":
        return _image_problem(value, at)
    if kind in ("toolUse", "toolResult") and not has_tool_config:
        return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
    if kind == "toolUse" and (
        not isinstance(value, dict)
        or set(value) != {"toolUseId", "name", "input"}
        or not isinstance(value["input"], dict)
        or not isinstance(value["toolUseId"], str)
    ):
        return f"{at}.toolUse: toolUseId, name and an object input are required"
    if kind == "toolResult":
        if not isinstance(value, dict) or set(value) - {"toolUseId", "content", "status"}:
            return f"{at}.toolResult: toolUseId and content only"
        if value.get("toolUseId") not in seen_ids:
            return f"{at}.toolResult.toolUseId: no earlier toolUse has this id"
        parts = value.get("content")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) and len(p) == 1 for p in parts):
            return f"{at}.toolResult.content: a non-empty list of one-member blocks is required"
    if kind == "cachePoint" and value != {"type": "default"}:
        return f"{at}.cachePoint: type must be default"
    return None


def _image_problem(value: object, at: str) -> str | None:
    if not isinstance(value, dict) or value.get("format") not in _IMAGE_FORMATS:
        return f"{at}.image.format: must be one of png, jpeg, gif, webp"
    source = value.get("source")
    data = source.get("bytes") if isinstance(source, dict) and set(source) == {"bytes"} else None
    if not isinstance(data, str) or not data:
        return f"{at}.image.source: bytes are required"
    try:
        base64.b64decode(data, validate=True)
    except binascii.Error:
        return f"{at}.image.source.bytes: not valid base64"
    return None
