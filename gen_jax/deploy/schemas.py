"""The request bodies of the OpenAI routes as Pydantic models: FastAPI validates
each body against its model (a failure answers 400 in OpenAI's error shape,
errors.py) and /openapi.json publishes them. Types are strict (a bool is not an
int, "1" not a number); a null field takes its default, as OpenAI's API does.
Limits known only when serving (the context, the batch) are the routes' checks."""

from typing import Annotated, Any

import pydantic
from pydantic import Field, StrictBool, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

MAX_N = 16  # choices per prompt
MAX_PROMPTS = 64  # prompts per completions request
MAX_STOPS = 4  # as OpenAI
INT32 = 2**31  # seeds and top_k reach the programs as int32
SEEDS = INT32  # choice i samples with seed + i
MAX_LOGPROBS = 20  # likeliest alternatives per token (an artifact may hold fewer)

# An int or a float (never a bool or a string).
Number = Annotated[float, Field(strict=True)]


def _ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _prompts(value: Any) -> tuple[str | tuple[int, ...], ...]:
    """OpenAI's prompt forms as a tuple of prompts, each text or token ids."""
    if isinstance(value, str):
        return (value,)
    if _ids(value):
        return (tuple(value),)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            out = tuple(value)
        elif all(_ids(v) for v in value):
            out = tuple(tuple(v) for v in value)
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
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, **_SOME_PROMPTS},
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
    clients send more than a model uses."""

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
    max_tokens: StrictInt = Field(16, ge=1, description="at most the context")
    n: StrictInt = Field(1, ge=1, le=MAX_N, description="choice i: seed + i")
    temperature: Number = Field(1.0, ge=0, le=2, description="0 is greedy")
    top_p: Number = Field(1.0, gt=0, le=1)
    top_k: StrictInt = Field(0, ge=0, lt=INT32, description="0: off")
    seed: StrictInt | None = Field(None, ge=0, lt=SEEDS)
    stop: Stops = ()
    stream: StrictBool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(Sampling):
    prompt: Prompts
    max_tokens: StrictInt = Field(
        16, ge=0, description="at most the context; 0 only with echo"
    )
    logprobs: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_LOGPROBS,
        description="each token's log-probability and its k likeliest alternatives",
    )
    echo: StrictBool = Field(
        False, description="the prompt first, in text and (with logprobs) scored"
    )

    @pydantic.model_validator(mode="after")
    def _zero_tokens_need_echo(self):
        if self.max_tokens == 0 and not self.echo:
            raise PydanticCustomError(
                "max_tokens", "'max_tokens' may be 0 only with 'echo': true"
            )
        return self


class ChatMessage(pydantic.BaseModel):
    role: StrictStr
    content: StrictStr


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: StrictBool = Field(False, description="each token's log-probability")
    top_logprobs: StrictInt | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="its k likeliest (needs logprobs)"
    )

    @pydantic.model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise PydanticCustomError(
                "top_logprobs", "'top_logprobs' needs 'logprobs': true"
            )
        return self


class TokenizeRequest(Body):
    """vLLM's /tokenize: a prompt, or chat messages rendered by the model's
    template (with the assistant's turn opened unless told)."""

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool = Field(
        True, description="the tokenizer's prompt framing (e.g. a BOS token)"
    )
    add_generation_prompt: StrictBool = True

    @pydantic.model_validator(mode="after")
    def _one_of(self):
        if (self.prompt is None) == (self.messages is None):
            raise PydanticCustomError(
                "prompt", "give exactly one of 'prompt' and 'messages'"
            )
        return self


class DetokenizeRequest(Body):
    model: StrictStr | None = None
    tokens: list[StrictInt] = Field(description="token ids, in [0, vocabulary size)")


class ImageRequest(Body):
    """OpenAI's image generation, with the labels, seed, guidance, steps and
    negative prompt of `gen-jax sample`; a model without text conditioning
    accepts the prompt and ignores it."""

    model: StrictStr | None = None  # optional in OpenAI's images API
    prompt: StrictStr = ""
    negative_prompt: StrictStr | None = Field(
        None, description="text-to-image: guidance steers away from it"
    )
    n: StrictInt = Field(1, ge=1, description="at most the server's --max_batch")
    response_format: StrictStr = Field("b64_json", description="b64_json only")
    size: StrictStr | None = Field(None, description="HxW: the model's own size")
    seed: StrictInt | None = Field(None, ge=0, lt=SEEDS)
    label: StrictInt | None = Field(None, ge=0, description="default: every class")
    guidance: Number | None = Field(None, ge=0, le=100)
    steps: StrictInt | None = Field(None, ge=1, description="fixed at export")
