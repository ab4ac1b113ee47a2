"""What /openapi.json says beyond the request models of schemas.py: their
checks across fields (JSON Schema's if/then, oneOf; null taking a default),
OpenAI's response objects and error shape as Pydantic models, each route's
`responses=` (its status codes and content types), and the limits only a
running server knows (its context, vocabulary, batch) written into the
request schemas; so a client, or a fuzzer such as schemathesis, can check
every request and answer against the spec."""

from collections.abc import Callable
from typing import Any

import pydantic
from fastapi import FastAPI


def nullable_optionals(schema: dict) -> None:
    """The published schema says what the validator does: an optional field
    may be null (it takes its default)."""
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf", [prop])
        if name in required or any(o.get("type") == "null" for o in options):
            continue
        meta = {
            k: prop.pop(k) for k in ("title", "description", "default") if k in prop
        }
        schema["properties"][name] = {"anyOf": [prop, {"type": "null"}], **meta}


def if_then(field: str, value, then_field: str, then_value) -> dict:
    """JSON Schema for "`field` == value needs `then_field` == then_value"."""
    return {
        "if": {"properties": {field: {"const": value}}, "required": [field]},
        "then": {
            "properties": {then_field: {"const": then_value}},
            "required": [then_field],
        },
    }


def schema_extra(more: dict):
    """json_schema_extra: nullable optionals, then `more` (checks across fields)."""

    def extra(schema: dict) -> None:
        nullable_optionals(schema)
        schema.update(more)

    return extra


class Error(pydantic.BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(pydantic.BaseModel):
    error: Error


class Usage(pydantic.BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(pydantic.BaseModel):
    """vLLM's: per token its text, log-probability (null: a prompt's first),
    {text: log-probability} of it and its k likeliest, and text offset."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(pydantic.BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: str | None


class Completion(pydantic.BaseModel):
    """`text_completion`; a stream's chunks have the same shape (usage in the
    last, with stream_options.include_usage)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(pydantic.BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(pydantic.BaseModel):
    content: list[TokenLogprob]


class Message(pydantic.BaseModel):
    role: str
    content: str


class ChatChoice(pydantic.BaseModel):
    index: int
    message: Message
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletion(pydantic.BaseModel):
    """`chat.completion` (streamed: `chat.completion.chunk`s with a `delta`)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class Tokens(pydantic.BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]


class Text(pydantic.BaseModel):
    prompt: str


class TokenizerInfo(pydantic.BaseModel):
    tokenizer_class: str
    vocab_size: int
    model_max_length: int
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    chat_template: str | None


class Image(pydantic.BaseModel):
    b64_json: str


class Images(pydantic.BaseModel):
    created: int
    data: list[Image]


class Card(pydantic.BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class Models(pydantic.BaseModel):
    object: str
    data: list[Card]


class Health(pydantic.BaseModel):
    status: str


WHY = {
    400: "the request is invalid (the message names the field)",
    401: "a missing or wrong API key (when the server has one)",
    404: "another model, or no such route",
    500: "a server bug (the log has it)",
    503: "warming up, or the queue is full: retry later",
}
SSE = {  # each server-sent event (OpenAPI 3.1: `schema` describes one event)
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": "a chunk (the JSON object of the 200 answer, "
                    "choices holding their deltas), or [DONE] last",
                },
                "event": {"type": "string"},
                "id": {"type": "string"},
            },
            "description": "with stream: true",
        }
    }
}


def responses(
    ok: type[pydantic.BaseModel] | None,
    *,
    statuses: tuple[int, ...] = (400, 401, 404, 500, 503),
    stream: bool = False,
) -> dict:
    """A route's `responses=`: 200 with `ok` (JSON, and server-sent events
    if `stream`), and each failure status in OpenAI's error shape."""
    out: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorResponse, "description": WHY[s]} for s in statuses
    }
    if ok is not None:
        out[200] = {"model": ok, **({"content": SSE} if stream else {})}
    return out


def publish_limits(app: FastAPI, limits: dict[tuple[str, str], dict]) -> None:
    """Writes this server's limits into /openapi.json: limits[(schema,
    field)] = {JSON type: keywords}, the keywords added to every subschema of
    that type under the field (e.g. token ids at most the vocabulary)."""
    make: Callable[[], dict] = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = make()
            components = schema["components"]["schemas"]
            for (name, field), by_type in limits.items():
                if name in components:  # e.g. chat only with a chat template
                    _restrict(components[name]["properties"][field], by_type)
        return app.openapi_schema

    app.openapi = openapi


def _restrict(schema: Any, by_type: dict[str, dict]) -> None:
    if isinstance(schema, list):
        for item in schema:
            _restrict(item, by_type)
    elif isinstance(schema, dict):
        schema.update(by_type.get(schema.get("type"), {}))
        for value in schema.values():
            _restrict(value, by_type)
