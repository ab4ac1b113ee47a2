"""OpenAI's image generations over the image batcher: image i of a request with
`seed` S is image i of `gen-jax sample --seed=S`, as PNG (gen_jax/png.py) in
base64; labels, guidance and steps as the exported sampler allows. A
text-to-image model draws from `prompt` ("" is the null caption) and guides
away from `negative_prompt`; other models accept the prompt and ignore it."""

import asyncio
import base64
import os
import time

from fastapi import FastAPI

from gen_jax import png
from gen_jax.deploy import errors, schemas, spec
from gen_jax.deploy.image_batcher import ImageBatcher, ImageJob


def add(app: FastAPI, batcher: ImageBatcher, model_name: str) -> None:
    """POST /v1/images/generations."""
    spec.publish_limits(app, _limits(batcher, model_name))

    @app.post("/v1/images/generations", responses=spec.responses(spec.Images))
    async def generations(body: schemas.ImageRequest):
        if body.model is not None:
            errors.check_model(body.model, model_name)
        errors.check_ready(batcher)
        _check(body, batcher)
        seed = body.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little") % schemas.SEEDS
        weight = batcher.default_guidance if body.guidance is None else body.guidance
        captions = None
        if batcher.tokenizer is not None:
            try:
                captions = batcher.captions(body.prompt, body.negative_prompt)
            except ValueError as e:
                raise errors.BadRequest(*e.args) from None
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        batcher.submit(
            ImageJob(
                body.n,
                seed,
                body.label,
                float(weight),
                lambda images: loop.call_soon_threadsafe(done.set_result, images),
                captions,
            )
        )
        images = await done
        if images is None:
            raise RuntimeError("the sampler failed; the server log has the cause")
        return {
            "created": int(time.time()),
            "data": [
                {"b64_json": base64.b64encode(png.encode(x)).decode()} for x in images
            ],
        }


def _limits(batcher: ImageBatcher, model_name: str) -> dict:
    """What `_check` enforces, for /openapi.json."""
    h, w = batcher.shape[:2]
    none = {"not": {}}  # no value of that type is valid
    limits = {
        "model": {"string": {"enum": [model_name]}},
        "n": {"integer": {"maximum": batcher.max_batch}},
        "response_format": {"string": {"enum": ["b64_json"]}},
        "size": {"string": {"enum": [f"{h}x{w}"]}},
        "label": {"integer": {"maximum": batcher.num_classes - 1}}
        if batcher.num_classes
        else {"integer": none},
        "steps": {"integer": {"enum": [batcher.steps]} if batcher.steps else none},
    }
    if batcher.guidance is None:
        limits["guidance"] = {"number": none}
    if batcher.tokenizer is None:
        limits["negative_prompt"] = {"string": none}
    return {("ImageRequest", field): v for field, v in limits.items()}


def _check(body: schemas.ImageRequest, batcher: ImageBatcher) -> None:
    """What only the served model knows: its batch, size, labels, guidance
    and sampler steps."""
    h, w = batcher.shape[:2]
    if body.n > batcher.max_batch:
        raise errors.BadRequest(
            f"'n' must be in [1, {batcher.max_batch}], got {body.n}", "n"
        )
    if body.response_format != "b64_json":
        raise errors.BadRequest(
            "'response_format' must be 'b64_json' (no URLs are hosted)",
            "response_format",
        )
    if body.size is not None and body.size != f"{h}x{w}":
        raise errors.BadRequest(f"'size' must be {h}x{w} for this model", "size")
    if body.label is not None and not batcher.num_classes:
        raise errors.BadRequest("'label': this model is unconditional", "label")
    if body.label is not None and body.label >= batcher.num_classes:
        raise errors.BadRequest(
            f"'label' must be in [0, {batcher.num_classes - 1}], got {body.label}",
            "label",
        )
    if body.guidance is not None and batcher.guidance is None:
        raise errors.BadRequest(
            "'guidance': this model takes no guidance weight", "guidance"
        )
    if body.negative_prompt is not None and batcher.tokenizer is None:
        raise errors.BadRequest(
            "'negative_prompt': this model takes no text", "negative_prompt"
        )
    if body.steps is not None and body.steps != batcher.steps:
        raise errors.BadRequest(
            f"'steps': this model samples with {batcher.steps} steps "
            f"(fixed at export; re-export with --sampler_steps={body.steps})",
            "steps",
        )
