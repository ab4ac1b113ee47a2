"""`gen-jax serve --workdir=W | --artifact=DIR [--host=127.0.0.1 --port=8000]`: an
OpenAI-compatible HTTP server for any family (pip install -e ".[serve]").

LM: POST /v1/completions, /v1/chat/completions (with a chat template), with
continuous batching over --slots decode slots. Images: POST
/v1/images/generations, micro-batched (--max_batch, --max_wait_ms). Both:
GET /v1/models, /health (503 until every program is compiled), /metrics.
A workdir is exported first (to a temporary artifact), so both serve the same
programs:

  gen-jax serve --workdir=runs/lm_pydoc --port=8000 --slots=16
  curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
    -d '{"model": "lm_pydoc", "prompt": "The with statement", "max_tokens": 64}'
"""

import os

from absl import app, flags, logging

from gen_jax.tools import flags as tool_flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training run to serve (exported first).")
    flags.DEFINE_string("artifact", None, "A `gen-jax export` directory to serve.")
    flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
    flags.DEFINE_string(
        "api_key",
        None,
        "Require 'Authorization: Bearer KEY' on every /v1/* route (default: "
        "$GEN_JAX_API_KEY; unset: no key). /health and /metrics stay open.",
    )
    flags.DEFINE_integer("port", 8000, "Port to listen on.")
    flags.DEFINE_string(
        "model_name", None, "The model id clients send (default: the directory's name)."
    )
    flags.DEFINE_integer("slots", 16, "LM: sequences decoded together.")
    flags.DEFINE_integer(
        "context",
        0,
        "LM, --workdir: KV-cache positions per slot (0: the run's data.seq_len).",
    )
    flags.DEFINE_integer(
        "max_waiting",
        256,
        "Queued sequences / image requests before the server answers 503.",
    )
    flags.DEFINE_integer("max_batch", 8, "Images: images per sampler call (padded).")
    flags.DEFINE_float("max_wait_ms", 10.0, "Images: how long a batch waits to fill.")
    flags.DEFINE_float(
        "graceful_s",
        30.0,
        "On SIGTERM: how long in-flight requests may take to finish.",
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if (FLAGS.workdir is None) == (FLAGS.artifact is None):
        raise app.UsageError("give exactly one of --workdir and --artifact")
    import pathlib
    import tempfile

    from gen_jax.deploy import server

    source = FLAGS.artifact or FLAGS.workdir
    with tempfile.TemporaryDirectory(prefix="gen_jax_serve_") as scratch:
        directory = FLAGS.artifact
        if FLAGS.workdir is not None:
            from gen_jax import checkpoint
            from gen_jax.deploy import export

            run = checkpoint.open_run(FLAGS.workdir)
            export.export_run(run, scratch, context=FLAGS.context or None)
            directory = scratch
        name = FLAGS.model_name or pathlib.Path(source.rstrip("/")).name
        engine, api = server.build(
            directory,
            model_name=name,
            slots=FLAGS.slots,
            max_batch=FLAGS.max_batch,
            max_wait_s=FLAGS.max_wait_ms / 1000,
            max_waiting=FLAGS.max_waiting,
            api_key=FLAGS.api_key or os.environ.get("GEN_JAX_API_KEY") or None,
        )
        family = engine.programs.artifact.family
        logging.info(
            "serving %s (%s) on http://%s:%d", name, family, FLAGS.host, FLAGS.port
        )
        print(
            f"serving {name} ({family}) on http://{FLAGS.host}:{FLAGS.port}",
            flush=True,
        )
        server.run_server(
            api,
            host=FLAGS.host,
            port=FLAGS.port,
            engine=engine,
            graceful_s=FLAGS.graceful_s,
        )


def cli(argv: list[str]) -> None:
    _define_flags()
    tool_flags.run(main, __name__, argv)
