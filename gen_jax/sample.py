"""Samples from an opened run (`checkpoint.open_run`): image grids and .npz
files, or LM completions of a prompt (KV-cache decoding, one seed per row)."""

import jax
import numpy as np
from etils import epath

from gen_jax import checkpoint, metrics, png, sharding, text
from gen_jax.families.family import image_keys


def images(
    run: checkpoint.Run,
    *,
    num_samples: int,
    seed: int = 0,
    prompt: str | None = None,
    negative_prompt: str | None = None,
) -> np.ndarray:
    """`num_samples` images in [-1, 1] (NHWC) from the run's params; a
    text-to-image run draws them all from `prompt` (None: the null caption,
    unconditional samples), guided away from `negative_prompt`."""
    images_info = run.family.images
    if images_info is None:
        raise ValueError(f"family {run.config.family!r} does not generate images")
    prompts = images_info.prompts
    if prompts is None:
        if prompt is not None or negative_prompt is not None:
            raise ValueError(
                "--prompt / --negative_prompt: this run takes no text (train "
                "a text-to-image config, e.g. configs/t2i_digits.py)"
            )
        sample_fn = jax.jit(
            run.family.sample,
            static_argnums=2,
            out_shardings=sharding.replicated(run.mesh),
        )
        return np.asarray(sample_fn(run.params, jax.random.key(seed), num_samples))
    for value in (prompt, negative_prompt):
        size = 0 if value is None else len(prompts.tokenizer.prompt(value))
        if size > prompts.length:
            raise ValueError(
                f"{value!r} is {size} tokens; this run reads at most "
                f"{prompts.length} (data.caption_len)"
            )
    captions = {
        name: None
        if value is None
        else text.fixed_length([value] * num_samples, prompts.tokenizer, prompts.length)
        for name, value in (("prompt", prompt), ("negative", negative_prompt))
    }
    generate = jax.jit(run.family.generate, out_shardings=sharding.replicated(run.mesh))
    keys = image_keys(jax.random.key(seed), num_samples)
    labels = np.arange(num_samples) % max(images_info.num_classes, 1)
    guidance = np.full(num_samples, images_info.guidance or 1.0, np.float32)
    return np.asarray(generate(run.params, keys, labels, guidance, **captions))


def write_images(workdir: str, images_NHWC: np.ndarray, name: str) -> str:
    """Writes WORKDIR/samples/NAME.png (a grid) and .npz; returns the path prefix."""
    samples = epath.Path(workdir) / "samples"
    prefix = str(samples / name)
    if jax.process_index() == 0:
        samples.mkdir(parents=True, exist_ok=True)
        with epath.Path(prefix + ".npz").open("wb") as f:
            np.savez(f, images=images_NHWC)
        grid = metrics.image_grid(images_NHWC)
        epath.Path(prefix + ".png").write_bytes(png.encode(grid))
    return prefix


def complete(
    run: checkpoint.Run,
    prompt: str,
    *,
    num_samples: int,
    seed: int = 0,
    max_len: int = 256,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> list[str]:
    """LM completions of `prompt`, one per seed (seed, seed + 1, ...)."""
    from gen_jax.families import lm

    if run.family.text is None:
        raise ValueError(
            f"a prompt completes LM runs; this run trains {run.config.family!r}"
        )
    model, tokenizer = run.family.text.model, run.family.text.tokenizer
    ids = tokenizer.prompt(prompt)  # as the model's own tokenizer encodes it
    if not 0 < len(ids) < max_len:
        raise ValueError(
            f"the prompt has {len(ids)} tokens; --max_len={max_len} "
            "must be larger (and the prompt non-empty)"
        )
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    prompt_BP = np.broadcast_to(ids, (num_samples, len(ids)))
    seeds = np.arange(seed, seed + num_samples, dtype=np.int32)
    tokens = generate(run.params, prompt_BP, seeds, max_len, temperature, top_k, top_p)
    return [
        tokenizer.decode(_until_eos(row, len(ids), tokenizer.eos_id))
        for row in np.asarray(tokens)
    ]


def _until_eos(row: np.ndarray, start: int, eos_id: int | None) -> np.ndarray:
    """The row up to and including its first end-of-text token after the prompt."""
    if eos_id is None:
        return row
    hits = np.flatnonzero(row[start:] == eos_id)
    return row[: start + hits[0] + 1] if len(hits) else row
