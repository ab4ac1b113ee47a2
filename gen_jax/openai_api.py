"""The OpenAI-compatible HTTP API of `gen-jax serve` (FastAPI): completions, chat
completions (when the tokenizer has a chat template), image generations, models,
health and Prometheus metrics, over the engines of `serve.py`. Every error has
OpenAI's shape, {"error": {"message", "type", "param", "code"}}."""

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import threading
import time
import uuid

import numpy as np

from gen_jax import serve, text

MAX_N = 16  # choices per request
MAX_STOPS = 4  # as OpenAI


class BadRequest(Exception):
    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
    ):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def _error(status: int, message: str, param=None, code=None, kind=None):
    from fastapi.responses import JSONResponse

    kind = kind or {
        400: "invalid_request_error",
        404: "invalid_request_error",
        503: "server_overloaded",
    }.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _field(body: dict, name: str, kind, default, *, low=None, high=None):
    """body[name] checked: its type (bool is not an int) and range."""
    value = body.get(name, default)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise BadRequest(f"'{name}' must be {names}, got {json.dumps(value)}", name)
    if low is not None and value < low or high is not None and value > high:
        raise BadRequest(f"'{name}' must be in [{low}, {high}], got {value}", name)
    return value


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOPS:
        raise BadRequest(f"'stop' takes at most {MAX_STOPS} sequences", "stop")
    return tuple(stops)


async def _json_body(request) -> dict:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request body is not valid JSON ({e})") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def make_app(
    *,
    model_name: str,
    engine,
    tokenizer=None,
    image_shape=None,
    num_classes=0,
    steps=None,
    guidance=None,
    metrics: serve.Metrics,
):
    """The FastAPI app; `engine` is a started `serve.LMEngine` (with the
    `tokenizer`: the LM routes) or `serve.ImageBatcher` (the images route;
    `guidance` None: the model takes no guidance weight), warming up in the
    background (/health is 503 until then)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="gen_jax", docs_url=None, redoc_url=None)
    created = int(time.time())

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        try:
            response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - a bug answers 500, the server goes on
            response = _error(500, f"internal error: {type(e).__name__}: {e}")
        # Routes only: a label per unknown path would grow without bound.
        route = request.scope.get("route")
        metrics.inc(
            "gen_jax_requests_total",
            endpoint=getattr(route, "path", "unmatched"),
            status=response.status_code,
        )
        return response

    @app.exception_handler(BadRequest)
    async def bad_request(request, e: BadRequest):
        return _error(e.status, str(e), e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e):
        return _error(400, f"invalid request: {e.errors()[:1]}")

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(serve.QueueFull)
    async def full(request, e):
        return _error(503, str(e))

    @app.get("/health")
    async def health():
        if not engine.ready:
            return _error(
                503, "warming up: compiling every program", kind="unavailable"
            )
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4"
        )

    @app.get("/v1/models")
    async def models():
        card = {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "gen_jax",
        }
        return {"object": "list", "data": [card]}

    def check_model(body: dict) -> None:
        name = body.get("model")
        if name != model_name:
            raise BadRequest(
                f"the model {name!r} does not exist; this server serves {model_name!r}",
                "model",
                404,
                "model_not_found",
            )

    def check_ready() -> None:
        if not engine.ready:
            raise BadRequest("the server is warming up; retry shortly", status=503)

    if tokenizer is not None:
        _lm_routes(app, engine, tokenizer, model_name, check_model, check_ready)
    else:
        _image_routes(
            app,
            engine,
            image_shape,
            num_classes,
            steps,
            guidance,
            check_model,
            check_ready,
        )
    return app


def _sampling(body: dict, engine, prompt_ids: np.ndarray, emit_for):
    """The request's sequences (n choices of each prompt), validated."""
    max_tokens = _field(body, "max_tokens", int, 16, low=1, high=engine.context)
    n = _field(body, "n", int, 1, low=1, high=MAX_N)
    temperature = float(_field(body, "temperature", (int, float), 1.0, low=0, high=2))
    top_p = float(_field(body, "top_p", (int, float), 1.0, low=0, high=1))
    if top_p <= 0:
        raise BadRequest("'top_p' must be in (0, 1]", "top_p")
    top_k = _field(body, "top_k", int, 0, low=0, high=2**31 - 1)
    seed = _field(body, "seed", int, None, low=0, high=2**31 - n)
    if seed is None:  # still one stream per choice
        seed = int.from_bytes(os.urandom(4), "little") % (2**31 - n)
    stops = _stops(body)
    if len(prompt_ids) == 0:
        raise BadRequest("the prompt is empty", "prompt")
    if len(prompt_ids) + max_tokens > engine.context:
        raise BadRequest(
            f"this model's context is {engine.context} tokens; the prompt has "
            f"{len(prompt_ids)} and max_tokens is {max_tokens}: shorten the prompt "
            "or lower max_tokens",
            "max_tokens",
            code="context_length_exceeded",
        )
    return [
        serve.Sequence(
            prompt_ids,
            max_tokens,
            seed + i,
            temperature,
            top_k,
            top_p,
            stops,
            emit_for(i),
        )
        for i in range(n)
    ]


def _start(engine, make_sequences):
    """Builds and queues the request's sequences, so a bad field or a full
    queue raises here, before any response (or stream) has begun. Returns
    (the sequences, an async iterator of (index, delta, finish) as they come)."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def emit_for(i):
        return lambda delta, finish: loop.call_soon_threadsafe(
            events.put_nowait, (i, delta, finish)
        )

    sequences = make_sequences(emit_for)
    engine.submit(sequences)

    async def arrivals():
        left = len(sequences)
        while left:
            i, delta, finish = await events.get()
            left -= finish is not None
            yield i, delta, finish

    return sequences, arrivals()


def _sse(chunks):
    async def stream():
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return stream()


def _lm_routes(app, engine, tokenizer, model_name, check_model, check_ready):
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    async def respond(body: dict, prompt_ids, chat: bool):
        check_ready()
        stream = _field(body, "stream", bool, False)
        sequences, gen = _start(
            engine, lambda emit_for: _sampling(body, engine, prompt_ids, emit_for)
        )
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        chunk_kind = kind + ".chunk" if chat else kind

        def choice(i, delta, finish, first=False):
            if not chat:
                return {
                    "index": i,
                    "text": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            content = (
                {"role": "assistant", "content": delta} if first else {"content": delta}
            )
            return {
                "index": i,
                "delta": content,
                "logprobs": None,
                "finish_reason": finish,
            }

        def usage():
            completion = sum(len(s.tokens) for s in sequences)
            return {
                "prompt_tokens": len(prompt_ids) * len(sequences),
                "completion_tokens": completion,
                "total_tokens": len(prompt_ids) * len(sequences) + completion,
            }

        if stream:
            include_usage = bool(
                (body.get("stream_options") or {}).get("include_usage")
            )

            async def chunks():
                started = set()
                async for i, delta, finish in gen:
                    first = i not in started
                    started.add(i)
                    yield {
                        "id": rid,
                        "object": chunk_kind,
                        "created": created,
                        "model": model_name,
                        "choices": [choice(i, delta, finish, first)],
                    }
                if include_usage:
                    yield {
                        "id": rid,
                        "object": chunk_kind,
                        "created": created,
                        "model": model_name,
                        "choices": [],
                        "usage": usage(),
                    }

            return StreamingResponse(_sse(chunks()), media_type="text/event-stream")
        texts, finishes = {}, {}
        async for i, delta, finish in gen:
            if finish == "error":
                raise RuntimeError("generation failed; the server log has the cause")
            texts[i] = texts.get(i, "") + delta
            if finish:
                finishes[i] = finish
        choices = []
        for i in sorted(finishes):
            if chat:
                choices.append(
                    {
                        "index": i,
                        "logprobs": None,
                        "finish_reason": finishes[i],
                        "message": {"role": "assistant", "content": texts.get(i, "")},
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": texts.get(i, ""),
                        "logprobs": None,
                        "finish_reason": finishes[i],
                    }
                )
        return {
            "id": rid,
            "object": kind,
            "created": created,
            "model": model_name,
            "choices": choices,
            "usage": usage(),
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _json_body(request)
        check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("'prompt' must be a string (or a list of one)", "prompt")
        return await respond(body, tokenizer.prompt(prompt), chat=False)

    if tokenizer.chat_template:

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            body = await _json_body(request)
            check_model(body)
            messages = body.get("messages")
            if (
                not isinstance(messages, list)
                or not messages
                or not all(
                    isinstance(m, dict)
                    and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str)
                    for m in messages
                )
            ):
                raise BadRequest(
                    "'messages' must be a non-empty list of "
                    "{role, content} with string values",
                    "messages",
                )
            rendered = text.render_chat(tokenizer, messages, add_generation_prompt=True)
            return await respond(body, tokenizer.encode(rendered), chat=True)


def _png(image_HWC: np.ndarray) -> str:
    from PIL import Image

    pixels = np.clip(np.rint((image_HWC + 1) * 127.5), 0, 255).astype(np.uint8)
    pil = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _image_routes(
    app, batcher, shape, num_classes, steps, guidance, check_model, check_ready
):
    from fastapi import Request

    @app.post("/v1/images/generations")
    async def generations(request: Request):
        body = await _json_body(request)
        if "model" in body:  # optional in OpenAI's images API
            check_model(body)
        check_ready()
        n = _field(body, "n", int, 1, low=1, high=batcher.max_batch)
        fmt = _field(body, "response_format", str, "b64_json")
        if fmt != "b64_json":
            raise BadRequest(
                "'response_format' must be 'b64_json' (no URLs are hosted)",
                "response_format",
            )
        size = _field(body, "size", str, None)
        if size is not None and size != f"{shape[0]}x{shape[1]}":
            raise BadRequest(
                f"'size' must be {shape[0]}x{shape[1]} for this model", "size"
            )
        seed = _field(body, "seed", int, None, low=0, high=2**31 - 1)
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little") % 2**31
        label = _field(body, "label", int, None, low=0, high=max(num_classes - 1, 0))
        if label is not None and not num_classes:
            raise BadRequest("'label': this model is unconditional", "label")
        weight = _field(body, "guidance", (int, float), None, low=0, high=100)
        if weight is not None and guidance is None:
            raise BadRequest(
                "'guidance': this model takes no guidance weight", "guidance"
            )
        want = _field(body, "steps", int, None, low=1)
        if want is not None and want != steps:
            raise BadRequest(
                f"'steps': this model samples with {steps} steps "
                f"(fixed at export; re-export with --sampler_steps={want})",
                "steps",
            )
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        job = serve.ImageJob(
            n,
            seed,
            label,
            float(weight if weight is not None else guidance or 1.0),
            lambda images: loop.call_soon_threadsafe(done.set_result, images),
        )
        batcher.submit(job)
        images = await done
        if images is None:
            raise RuntimeError("the sampler failed; the server log has the cause")
        return {
            "created": int(time.time()),
            "data": [{"b64_json": _png(image)} for image in images],
        }


def run_server(app, *, host: str, port: int, engine, graceful_s: float = 30.0) -> None:
    """Serves until SIGTERM / SIGINT: uvicorn stops accepting, lets in-flight
    requests finish (at most `graceful_s`), then the engine stops."""
    import uvicorn

    warm = threading.Thread(target=engine.warm_up, name="warm-up", daemon=True)
    engine.start()
    warm.start()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=graceful_s,
    )

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises SIGTERM after its graceful shutdown, so the
            # process would die of it; a server that drained exits 0 instead.
            signals = (signal.SIGINT, signal.SIGTERM)
            before = {s: signal.signal(s, self.handle_exit) for s in signals}
            try:
                yield
            finally:
                for s, handler in before.items():
                    signal.signal(s, handler)

    server = Server(config)
    try:
        server.run()
    finally:
        engine.stop()
