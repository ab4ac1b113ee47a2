"""The FastAPI app of `gen-jax serve`: what every server answers (GET /health,
/metrics, /v1/models), OpenAI's error shape on every failure, a request count
per route, and the routes of its engine (lm_routes.py or image_routes.py)."""

import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from gen_jax.deploy import errors

Routes = Callable[[FastAPI, object, str], None]  # (app, engine, model name)


def make_app(engine, routes: Routes, *, model_name: str) -> FastAPI:
    """The app over a started engine (`LMEngine` or `ImageBatcher`, its
    metrics in `engine.metrics`) warming up in the background: /health is 503
    until it is ready. `routes` adds the engine's own routes."""
    app = FastAPI(title="gen_jax", docs_url=None, redoc_url=None)
    metrics = engine.metrics
    created = int(time.time())
    errors.install(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        try:
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
