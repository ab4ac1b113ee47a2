"""An artifact served: `build` makes the engine for what the artifact makes
(text: the LM engine and its routes; images: the batcher and its route), the one
place serving asks which; `run_server` runs it under uvicorn until SIGTERM."""

import contextlib
import signal
import threading

import uvicorn
from fastapi import FastAPI

from gen_jax.deploy import app as app_lib
from gen_jax.deploy import (
    artifact,
    image_batcher,
    image_routes,
    lm_engine,
    lm_routes,
    programs,
    prometheus,
)


def build(
    directory: str,
    *,
    model_name: str,
    slots: int,
    max_batch: int,
    max_wait_s: float,
    max_waiting: int,
    api_key: str | None = None,
):
    """(the engine, not started, and its app) for the artifact in `directory`:
    an LM over `slots` decode slots, or images in batches of `max_batch`
    filled for at most `max_wait_s`; `max_waiting` queued before a 503;
    /v1/* behind `api_key` when given."""
    progs = programs.Programs(artifact.Artifact(directory))
    metrics = prometheus.serving()
    if "lm" in progs.artifact.manifest:  # what the artifact makes: text, else images
        engine = lm_engine.LMEngine(
            progs, slots=slots, max_waiting=max_waiting, metrics=metrics
        )
        routes = lm_routes.add
    else:
        engine = image_batcher.ImageBatcher(
            progs,
            max_batch=max_batch,
            max_wait_s=max_wait_s,
            max_waiting=max_waiting,
            metrics=metrics,
        )
        routes = image_routes.add
    app = app_lib.make_app(engine, routes, model_name=model_name, api_key=api_key)
    return engine, app


def run_server(
    app: FastAPI, *, host: str, port: int, engine, graceful_s: float = 30.0
) -> None:
    """Starts the engine and its warm-up, then serves until SIGTERM / SIGINT:
    uvicorn stops accepting, lets in-flight requests finish (at most
    `graceful_s`), then the engine stops."""
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
    server = _Server(config)
    try:
        server.run()
    finally:
        engine.stop()


class _Server(uvicorn.Server):
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
