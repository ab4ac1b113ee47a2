"""Deploy: `jax.export` artifacts of a run (export.py, lowering.py) and their
loader (artifact.py, copied into each artifact as load.py); the serving engines
(programs.py, lm_engine.py, image_batcher.py), Prometheus metrics
(prometheus.py) and OpenAI's HTTP API over them (server.py, app.py, errors.py,
schemas.py, lm_routes.py, image_routes.py). Importing the package does nothing."""
