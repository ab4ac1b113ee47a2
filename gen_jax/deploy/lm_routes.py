"""OpenAI's completions, and chat completions when the tokenizer has a chat
template, over the LM engine: `n` choices (choice i samples with seed + i),
stop sequences and usage, answered whole or streamed as server-sent events;
and vLLM's /tokenize, /detokenize and /tokenizer_info, so clients need no
tokenizer files."""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from gen_jax import text
from gen_jax.deploy import errors, replies, schemas
from gen_jax.deploy.lm_engine import LMEngine, Sequence

Arrivals = replies.Arrivals
DISCONNECT_POLL_S = 0.1  # how often a whole answer checks its client is there


def add(app: FastAPI, engine: LMEngine, model_name: str) -> None:
    """POST /v1/completions, and /v1/chat/completions with a chat template."""
    tokenizer = engine.tokenizer

    @app.post("/v1/completions")
    async def completions(body: schemas.CompletionRequest, request: Request):
        errors.check_model(body.model, model_name)
        prompts = [_prompt_ids(tokenizer, p) for p in body.prompt]
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

    @app.post("/tokenize")
    async def tokenize(body: schemas.TokenizeRequest):
        if body.model is not None:
            errors.check_model(body.model, model_name)
        if body.messages is not None:
            if not tokenizer.chat_template:
                raise errors.BadRequest("this model has no chat template", "messages")
            messages = [m.model_dump() for m in body.messages]
            prompt = text.render_chat(
                tokenizer, messages, add_generation_prompt=body.add_generation_prompt
            )
            ids = tokenizer.encode(prompt)  # the template holds its own framing
        else:
            encode = tokenizer.prompt if body.add_special_tokens else tokenizer.encode
            ids = encode(body.prompt)
        tokens = [int(t) for t in ids]
        return {"count": len(tokens), "max_model_len": engine.context, "tokens": tokens}

    @app.post("/detokenize")
    async def detokenize(body: schemas.DetokenizeRequest):
        if body.model is not None:
            errors.check_model(body.model, model_name)
        ids = _checked_ids(tokenizer, body.tokens, "tokens")
        return {"prompt": tokenizer.decode(ids)}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        """vLLM's: what a client tokenizing remotely needs besides /tokenize
        (lm-eval's `tokenizer_backend=remote` reads it)."""
        return {
            "tokenizer_class": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "model_max_length": engine.context,
            "bos_token": tokenizer.special_tokens.get("bos_token"),
            "eos_token": tokenizer.special_tokens.get("eos_token"),
            "pad_token": None,
            "chat_template": tokenizer.chat_template,
        }

    if not tokenizer.chat_template:
        return

    @app.post("/v1/chat/completions")
    async def chat_completions(body: schemas.ChatCompletionRequest, request: Request):
        errors.check_model(body.model, model_name)
        messages = [m.model_dump() for m in body.messages]
        rendered = text.render_chat(tokenizer, messages, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(rendered)
        return await _respond(
            request, engine, model_name, body, [prompt_ids], chat=True
        )


def _prompt_ids(tokenizer: text.Tokenizer, prompt: str | tuple) -> np.ndarray:
    """A prompt's token ids: text framed as the tokenizer frames prompts, or
    ids as given (checked against the vocabulary)."""
    if isinstance(prompt, str):
        return tokenizer.prompt(prompt)
    return _checked_ids(tokenizer, prompt, "prompt")


def _checked_ids(tokenizer: text.Tokenizer, ids, field: str) -> np.ndarray:
    """Token ids a client sent, as int32, each in the vocabulary (else a 400
    naming `field`)."""
    ids = np.asarray(ids, np.int64)
    bad = ids[(ids < 0) | (ids >= tokenizer.vocab_size)]
    if bad.size:
        raise errors.BadRequest(
            f"'{field}' holds token id {int(bad[0])}, outside this model's "
            f"vocabulary [0, {tokenizer.vocab_size})",
            field,
        )
    return ids.astype(np.int32)


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
    is sequence p * n + i and samples with seed + p * n + i), checked against
    what only the server knows: its context."""
    total, max_tokens = body.n * len(prompts), body.max_tokens
    logprobs, echo = _logprobs(body, engine.top_logprobs), getattr(body, "echo", False)
    if max_tokens > engine.context:
        raise errors.BadRequest(
            f"'max_tokens' must be in [1, {engine.context}], got {max_tokens}",
            "max_tokens",
        )
    seed = body.seed
    if seed is not None and seed > schemas.SEEDS - total:
        many = f" and {len(prompts)} prompts" if len(prompts) > 1 else ""
        raise errors.BadRequest(
            f"'seed' must be in [0, {schemas.SEEDS - total}] with n={body.n}{many}, "
            f"got {seed}",
            "seed",
        )
    if seed is None:  # still one stream per choice
        seed = int.from_bytes(os.urandom(4), "little") % (schemas.SEEDS - total)
    for ids in prompts:
        _check_fits(ids, max_tokens, engine.context)
    return [
        Sequence(
            ids,
            max_tokens,
            seed + index,
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
