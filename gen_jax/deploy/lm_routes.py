"""OpenAI's completions, and chat completions when the tokenizer has a chat
template, over the LM engine: `n` choices (choice i samples with seed + i),
log-probabilities and echo,
stop sequences and usage, answered whole or streamed as server-sent events;
and vLLM's tokenizer routes (tokenizer_routes.py)."""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from gen_jax.deploy import errors, replies, schemas, spec, tokenizer_routes
from gen_jax.deploy.lm_engine import LMEngine, Sequence

Arrivals = replies.Arrivals
DISCONNECT_POLL_S = 0.1  # how often a whole answer checks its client is there


def add(app: FastAPI, engine: LMEngine, model_name: str) -> None:
    """POST /v1/completions, and /v1/chat/completions with a chat template."""
    tokenizer = engine.tokenizer

    spec.publish_limits(app, _limits(engine, model_name))
    tokenizer_routes.add(app, engine, model_name)

    @app.post("/v1/completions", responses=spec.responses(spec.Completion, stream=True))
    async def completions(body: schemas.CompletionRequest, request: Request):
        errors.check_model(body.model, model_name)
        prompts = [tokenizer_routes.prompt_ids(tokenizer, p) for p in body.prompt]
        echo = None
        if body.echo:  # each choice's prompt text, as given (ids: decoded)
            texts = [
                p if isinstance(p, str) else tokenizer.decode(ids)
                for p, ids in zip(body.prompt, prompts)
            ]
            echo = [t for t in texts for _ in range(body.n)]
        return await _respond(
            request, engine, model_name, body, prompts, chat=False, echo=echo
        )

    if not tokenizer.chat_template:
        return

    @app.post(
        "/v1/chat/completions",
        responses=spec.responses(spec.ChatCompletion, stream=True),
    )
    async def chat_completions(body: schemas.ChatCompletionRequest, request: Request):
        errors.check_model(body.model, model_name)
        rendered = tokenizer_routes.render(tokenizer, body.messages, True)
        prompt_ids = tokenizer.encode(rendered)
        return await _respond(
            request, engine, model_name, body, [prompt_ids], chat=True
        )


def _limits(engine: LMEngine, model_name: str) -> dict:
    """What the routes check beyond schemas.py, for /openapi.json."""
    ids = {"integer": {"minimum": 0, "maximum": engine.tokenizer.vocab_size - 1}}
    at_most = lambda n: {"integer": {"maximum": n}}
    chat, plain = "ChatCompletionRequest", "CompletionRequest"
    named = (plain, chat, "TokenizeRequest", "DetokenizeRequest")
    limits = {(name, "model"): {"string": {"enum": [model_name]}} for name in named}
    if not engine.tokenizer.chat_template:
        limits[("TokenizeRequest", "messages")] = {"array": {"not": {}}}
    return limits | {
        (plain, "prompt"): ids,
        ("DetokenizeRequest", "tokens"): ids,
        # A prompt has a token at least (the context's rest: checked when served).
        (plain, "max_tokens"): at_most(engine.context - 1),
        (chat, "max_tokens"): at_most(engine.context - 1),
        (plain, "logprobs"): at_most(engine.top_logprobs),
        (chat, "top_logprobs"): at_most(engine.top_logprobs),
    }


async def _respond(
    request: Request,
    engine: LMEngine,
    model_name: str,
    body: schemas.Sampling,
    prompts: list[np.ndarray],
    *,
    chat: bool,
    echo: list[str] | None = None,
):
    errors.check_ready(engine)
    sequences, arrivals = _start(
        engine, lambda emit_for: _sequences(body, engine, prompts, emit_for)
    )
    token_text = lambda t: engine.tokenizer.decode(np.asarray([t], np.int32))
    usage = sum(len(p) for p in prompts)
    reply = replies.Reply(model_name, chat, usage, sequences, token_text, echo)
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        chunks = reply.chunks(arrivals, usage)
        return StreamingResponse(
            _sse(chunks, sequences), media_type="text/event-stream"
        )
    return await _unless_abandoned(request, reply.whole(arrivals), sequences)


def _abandon(sequences: list[Sequence]) -> None:
    """The client left: the engine drops whatever of them still runs or waits."""
    for seq in sequences:
        seq.abandoned = True


async def _unless_abandoned(request: Request, whole, sequences) -> dict:
    """Awaits a whole answer, checking every `DISCONNECT_POLL_S` whether the
    client is still there; if it left, the sequences are dropped (their slots
    free at the next decode step) and the answer (never sent) is a 499."""
    task = asyncio.ensure_future(whole)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                _abandon(sequences)
                return errors.response(499, "the client closed the request")
    finally:
        task.cancel()


def _sequences(
    body: schemas.Sampling, engine: LMEngine, prompts: list[np.ndarray], emit_for
) -> list[Sequence]:
    """The request's sequences (`n` choices of each prompt; prompt p's choice i
    is sequence p * n + i and samples with (seed + p * n + i) % SEEDS), checked against
    what only the server knows: its context."""
    max_tokens = body.max_tokens
    logprobs, echo = _logprobs(body, engine.top_logprobs), getattr(body, "echo", False)
    if max_tokens >= engine.context:
        raise errors.BadRequest(
            f"'max_tokens' must be in [1, {engine.context - 1}], got {max_tokens}",
            "max_tokens",
        )
    seed = body.seed
    if seed is None:  # still one stream per choice
        seed = int.from_bytes(os.urandom(4), "little") % schemas.SEEDS
    for ids in prompts:
        _check_fits(ids, max_tokens, engine.context)
    return [
        Sequence(
            ids,
            max_tokens,
            (seed + index) % schemas.SEEDS,
            float(body.temperature),
            body.top_k,
            float(body.top_p),
            body.stop,
            emit_for(index),
            logprobs,
            echo and logprobs is not None,
        )
        for index, ids in enumerate(p for p in prompts for _ in range(body.n))
    ]


def _logprobs(body: schemas.Sampling, most: int) -> int | None:
    """How many likeliest tokens come with each token's log-probability
    (None: no log-probabilities), at most the artifact's `most`."""
    if isinstance(body, schemas.ChatCompletionRequest):
        k, field = (body.top_logprobs or 0) if body.logprobs else None, "top_logprobs"
    else:
        k, field = body.logprobs, "logprobs"
    if k is not None and k > most:
        raise errors.BadRequest(
            f"'{field}' must be at most {most} for this model, got {k}", field
        )
    return k


def _check_fits(prompt_ids: np.ndarray, max_tokens: int, context: int) -> None:
    if len(prompt_ids) == 0:
        raise errors.BadRequest("the prompt is empty", "prompt")
    if len(prompt_ids) + max_tokens > context:
        raise errors.BadRequest(
            f"this model's context is {context} tokens; a prompt has "
            f"{len(prompt_ids)} and max_tokens is {max_tokens}: shorten the prompt "
            "or lower max_tokens",
            "max_tokens",
            code="context_length_exceeded",
        )


def _start(engine: LMEngine, make_sequences: Callable) -> tuple[list, Arrivals]:
    """Builds and queues the request's sequences, so a bad field or a full
    queue raises here, before any response (or stream) has begun. Returns
    (the sequences, an async iterator of (index, delta, finish, scored) as
    they come)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit_for(i):
        return lambda delta, finish, scored: loop.call_soon_threadsafe(
            events.put_nowait, (i, delta, finish, scored)
        )

    sequences = make_sequences(emit_for)
    engine.submit(sequences)

    async def arrivals():
        left = len(sequences)
        while left:
            i, delta, finish, scored = await events.get()
            left -= finish is not None
            yield i, delta, finish, scored

    return sequences, arrivals()


async def _sse(chunks: AsyncIterator[dict], sequences) -> AsyncIterator[str]:
    """Server-sent events; a stream that ends early (its client left: the
    server cancels or closes it) drops its sequences."""
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        _abandon(sequences)  # finished ones are past caring
