"""The FastAPI app of `gen-jax serve`: what every server answers (GET /health,
/metrics, /v1/models), OpenAI's error shape on every failure, a request count
per route, an optional API key on /v1/*, and the routes of its engine
(lm_routes.py or image_routes.py)."""

import hmac
import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from gen_jax.deploy import errors, spec

Routes = Callable[[FastAPI, object, str], None]  # (app, engine, model name)


def make_app(
    engine, routes: Routes, *, model_name: str, api_key: str | None = None
) -> FastAPI:
    """The app over a started engine (`LMEngine` or `ImageBatcher`, its
    metrics in `engine.metrics`) warming up in the background: /health is 503
    until it is ready. `routes` adds the engine's own routes. With `api_key`,
    every /v1/* request needs `Authorization: Bearer <api_key>` (401 in
    OpenAI's shape otherwise); /health and /metrics stay open."""
    app = FastAPI(title="gen_jax", docs_url=None, redoc_url=None)
    metrics = engine.metrics
    created = int(time.time())
    errors.install(app)

    # Pure ASGI, not @app.middleware: Starlette's BaseHTTPMiddleware hides a
    # client's disconnect from the routes (request.is_disconnected()).
    app.add_middleware(_Gate, metrics=metrics, api_key=api_key)

    @app.get("/health", responses=spec.responses(spec.Health, statuses=(503,)))
    async def health():
        if not engine.ready:
            return errors.response(
                503, "warming up: compiling every program", kind="unavailable"
            )
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4"
        )

    @app.get("/v1/models", responses=spec.responses(spec.Models, statuses=(401,)))
    async def models():
        card = {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "gen_jax",
        }
        return {"object": "list", "data": [card]}

    routes(app, engine, model_name)
    return app


class _Gate:
    """ASGI middleware: the API key on /v1/* (401 in OpenAI's shape, compared
    in constant time), a 500 in OpenAI's shape for a bug (the server goes on),
    and the request count by route and status."""

    def __init__(self, app, *, metrics, api_key: str | None):
        self.app, self.metrics = app, metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = []

        async def send_noting_status(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        if self._refused(scope):
            response = errors.response(
                401,
                "missing or incorrect API key: send the header 'Authorization: "
                "Bearer <key>' (the key of gen-jax serve --api_key or "
                "$GEN_JAX_API_KEY)",
                code="invalid_api_key",
            )
            await response(scope, receive, send_noting_status)
        else:
            try:
                await self.app(scope, receive, send_noting_status)
            except Exception as e:  # a bug answers 500, and the server goes on
                if status:  # the response had begun: nothing more to send
                    raise
                message = f"internal error: {type(e).__name__}: {e}"
                await errors.response(500, message)(scope, receive, send_noting_status)
        # Routes only: a label per unknown path would grow without bound.
        self.metrics.inc(
            "gen_jax_requests_total",
            endpoint=getattr(scope.get("route"), "path", "unmatched"),
            status=status[0] if status else 500,
        )

    def _refused(self, scope) -> bool:
        """Whether a /v1/* request lacks the key (compared in constant time)."""
        if self.expected is None or not scope["path"].startswith("/v1/"):
            return False
        headers = dict(scope["headers"])
        return not hmac.compare_digest(
            headers.get(b"authorization", b""), self.expected
        )
