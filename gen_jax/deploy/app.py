"""The FastAPI app of `gen-jax serve`: what every server answers (GET /health,
/metrics, /v1/models), OpenAI's error shape on every failure, a request count
per route, an optional API key on /v1/*, and the routes of its engine
(lm_routes.py or image_routes.py)."""

import hmac
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from gen_jax.deploy import errors

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
    expected = f"Bearer {api_key}".encode() if api_key else None

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        try:
            if _refused(request, expected):
                response = errors.response(
                    401,
                    "missing or incorrect API key: send the header "
                    "'Authorization: Bearer <key>' (the key of gen-jax serve "
                    "--api_key or $GEN_JAX_API_KEY)",
                    code="invalid_api_key",
                )
            else:
                response = await call_next(request)
        except Exception as e:  # noqa: BLE001 - a bug answers 500, the server goes on
            response = errors.response(500, f"internal error: {type(e).__name__}: {e}")
        # Routes only: a label per unknown path would grow without bound.
        route = request.scope.get("route")
        metrics.inc(
            "gen_jax_requests_total",
            endpoint=getattr(route, "path", "unmatched"),
            status=response.status_code,
        )
        return response

    @app.get("/health")
    async def health():
        if not engine.ready:
            return errors.response(
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

    routes(app, engine, model_name)
    return app


def _refused(request: Request, expected: bytes | None) -> bool:
    """Whether a /v1/* request lacks the key (compared in constant time)."""
    if expected is None or not request.url.path.startswith("/v1/"):
        return False
    given = request.headers.get("authorization", "").encode()
    return not hmac.compare_digest(given, expected)
