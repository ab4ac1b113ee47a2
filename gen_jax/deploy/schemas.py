"""The request bodies of the OpenAI routes as Pydantic models: FastAPI validates
each body against its model (a failure answers 400 in OpenAI's error shape,
errors.py) and /openapi.json publishes them. Types are strict (a bool is not an
int, "1" not a number); a null field takes its default, as OpenAI's API does.
Limits known only when serving (the context, the batch) are the routes' checks."""

from typing import Annotated, Any

import pydantic
from pydantic import Field, StrictBool, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from gen_jax.deploy import spec
from gen_jax.deploy.errors import ACROSS

MAX_N = 16  # choices per prompt
MAX_PROMPTS = 64  # prompts per completions request
MAX_STOPS = 4  # as OpenAI
INT32 = 2**31  # seeds and top_k reach the programs as int32
SEEDS = INT32  # choice i samples with (seed + i) % SEEDS
MAX_LOGPROBS = 20  # likeliest alternatives per token (an artifact may hold fewer)

# An int or a float (never a bool or a string).
Number = Annotated[float, Field(strict=True)]


def _integral(value: Any) -> Any:
    """A float with no fraction is the integer JSON Schema says it is (82.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(**constraints) -> type:
    """An integer as JSON Schema counts them (never a bool, a string or 82.5),
    with Field constraints (placed before the validator, so the published
    schema keeps them inside a union with null)."""
    return Annotated[
        StrictInt, Field(**constraints), pydantic.BeforeValidator(_integral)
    ]


Integer = integer()


def _ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(_integral(v), int) and not isinstance(v, bool) for v in value
        )
    )


def _prompts(value: Any) -> tuple[str | tuple[int, ...], ...]:
    """OpenAI's prompt forms as a tuple of prompts, each text or token ids."""
    if isinstance(value, str) and value:
        return (value,)
    if _ids(value):
        return (tuple(_integral(v) for v in value),)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            out = tuple(value)
        elif all(_ids(v) for v in value):
            out = tuple(tuple(_integral(i) for i in v) for v in value)
        else:
            out = ()
        if len(out) > MAX_PROMPTS:
            raise PydanticCustomError("prompt", f"takes at most {MAX_PROMPTS} prompts")
        if out:
            return out
    raise PydanticCustomError(
        "prompt",
        "must be a string, a list of strings, a list of token ids or a list of "
        "such lists (none empty)",
    )


def _stops(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise PydanticCustomError(
            "stop", "must be a non-empty string or a list of them"
        )
    if len(stops) > MAX_STOPS:
        raise PydanticCustomError("stop", f"takes at most {MAX_STOPS} sequences")
    return tuple(stops)


_TOKEN_IDS = {"type": "array", "items": {"type": "integer"}, "minItems": 1}
_SOME_PROMPTS = {"minItems": 1, "maxItems": MAX_PROMPTS}
Prompts = Annotated[
    tuple[str | tuple[int, ...], ...],
    pydantic.BeforeValidator(_prompts),
    pydantic.WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    **_SOME_PROMPTS,
                },
                _TOKEN_IDS,
                {"type": "array", "items": _TOKEN_IDS, **_SOME_PROMPTS},
            ],
            "description": "the text(s) to complete, or their token ids; `n` "
            "choices each, prompt p's choice i at index p * n + i",
        }
    ),
]
Stops = Annotated[
    tuple[str, ...],
    pydantic.BeforeValidator(_stops),
    pydantic.WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "maxItems": MAX_STOPS,
                },
            ],
            "description": "text that ends a choice (not part of it)",
        }
    ),
]


class Body(pydantic.BaseModel):
    """A request body; fields it does not know are ignored, as OpenAI's
    clients send more than a model uses. A null field takes its default."""

    model_config = pydantic.ConfigDict(json_schema_extra=spec.nullable_optionals)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class StreamOptions(Body):
    include_usage: StrictBool = False


class Sampling(Body):
    """What completions and chat completions share: the model, how many
    tokens and choices, how each token is sampled, streaming."""

    model: StrictStr
    max_tokens: Integer = Field(16, ge=1, description="at most the context")
    n: Integer = Field(1, ge=1, le=MAX_N, description="choice i: seed + i")
    temperature: Number = Field(1.0, ge=0, le=2, description="0 is greedy")
    top_p: Number = Field(1.0, gt=0, le=1)
    top_k: Integer = Field(0, ge=0, lt=INT32, description="0: off")
    seed: integer(ge=0, lt=SEEDS) | None = None
    stop: Stops = ()
    stream: StrictBool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(Sampling):
    model_config = pydantic.ConfigDict(
        json_schema_extra=spec.schema_extra(spec.if_then("max_tokens", 0, "echo", True))
    )

    prompt: Prompts
    max_tokens: Integer = Field(
        16, ge=0, description="at most the context; 0 only with echo"
    )
    logprobs: integer(ge=0, le=MAX_LOGPROBS) | None = Field(
        None,
        description="each token's log-probability and its k likeliest alternatives",
    )
    echo: StrictBool = Field(
        False, description="the prompt first, in text and (with logprobs) scored"
    )

    @pydantic.model_validator(mode="after")
    def _zero_tokens_need_echo(self):
        if self.max_tokens == 0 and not self.echo:
            raise PydanticCustomError(
                ACROSS + "max_tokens", "'max_tokens' may be 0 only with 'echo': true"
            )
        return self


class ChatMessage(pydantic.BaseModel):
    role: StrictStr
    content: StrictStr


class ChatCompletionRequest(Sampling):
    model_config = pydantic.ConfigDict(
        json_schema_extra=spec.schema_extra(
            {
                "if": {
                    "properties": {"top_logprobs": {"type": "integer"}},
                    "required": ["top_logprobs"],
                },
                "then": {
                    "properties": {"logprobs": {"const": True}},
                    "required": ["logprobs"],
                },
            }
        )
    )

    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: StrictBool = Field(False, description="each token's log-probability")
    top_logprobs: integer(ge=0, le=MAX_LOGPROBS) | None = Field(
        None, description="its k likeliest (needs logprobs)"
    )

    @pydantic.model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise PydanticCustomError(
                ACROSS + "top_logprobs", "'top_logprobs' needs 'logprobs': true"
            )
        return self


class TokenizeRequest(Body):
    """vLLM's /tokenize: a prompt, or chat messages rendered by the model's
    template (with the assistant's turn opened unless told)."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=spec.schema_extra(
            {
                "oneOf": [
                    {
                        "required": ["prompt"],
                        "properties": {"prompt": {"type": "string"}},
                    },
                    {
                        "required": ["messages"],
                        "properties": {"messages": {"type": "array"}},
                    },
                ]
            }
        )
    )

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_special_tokens: StrictBool = Field(
        True, description="the tokenizer's prompt framing (e.g. a BOS token)"
    )
    add_generation_prompt: StrictBool = True

    @pydantic.model_validator(mode="after")
    def _one_of(self):
        if (self.prompt is None) == (self.messages is None):
            raise PydanticCustomError(
                ACROSS + "prompt", "give exactly one of 'prompt' and 'messages'"
            )
        return self


class DetokenizeRequest(Body):
    model: StrictStr | None = None
    tokens: list[Integer] = Field(description="token ids, in [0, vocabulary size)")


class ImageRequest(Body):
    """OpenAI's image generation, with the labels, seed, guidance, steps and
    negative prompt of `gen-jax sample`; a model without text conditioning
    accepts the prompt and ignores it."""

    model: StrictStr | None = None  # optional in OpenAI's images API
    prompt: StrictStr = ""
    negative_prompt: StrictStr | None = Field(
        None, description="text-to-image: guidance steers away from it"
    )
    n: Integer = Field(1, ge=1, description="at most the server's --max_batch")
    response_format: StrictStr = Field("b64_json", description="b64_json only")
    size: StrictStr | None = Field(None, description="HxW: the model's own size")
    seed: integer(ge=0, lt=SEEDS) | None = None
    label: integer(ge=0) | None = Field(None, description="default: every class")
    guidance: Number | None = Field(None, ge=0, le=100)
    steps: integer(ge=1) | None = Field(None, description="fixed at export")
