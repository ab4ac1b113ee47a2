"""`jax.export` artifacts of a run (`gen-jax export`): the image sampler, or the
LM's prefill and decode steps, serialized with the params they take
(params.safetensors), manifest.json and example.npz. `artifact.py`, copied in as
load.py, loads them with jax, numpy and safetensors alone. The one module of
`gen_jax.deploy` that reads runs (checkpoint, families, models)."""

import json
import pathlib
import shutil
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from gen_jax import checkpoint
from gen_jax import text as text_lib
from gen_jax.deploy import artifact, lowering
from gen_jax.families import lm_serving
from gen_jax.families.family import Params, seeded_keys
from gen_jax.models import transformer


def _int32(name, shape, meaning, example):
    return lowering.Arg(
        name, jax.ShapeDtypeStruct(shape, jnp.int32), meaning, np.int32(example)
    )


def _float32(name, shape, meaning, example):
    return lowering.Arg(
        name, jax.ShapeDtypeStruct(shape, jnp.float32), meaning, np.float32(example)
    )


def image_functions(run: checkpoint.Run) -> dict[str, lowering.Function]:
    """`sample(params, seeds, indices, labels, guidance) -> images`: image i from
    fold_in(key(seeds[i]), indices[i]), so `gen-jax sample --seed=S` is seeds
    all S and indices 0..n-1."""
    generate, images = run.family.generate, run.family.images
    if images is None:
        raise ValueError(f"family {run.config.family!r} does not generate images")

    def sample(params: Params, seeds_N, indices_N, labels_N, guidance_N, *text):
        keys = seeded_keys(seeds_N, indices_N)
        if not text:
            return generate(params, keys, labels_N, guidance_N)
        prompt, negative = (
            {"text_tokens": tokens, "text_mask": mask}
            for tokens, mask in (text[:2], text[2:])
        )
        return generate(
            params, keys, labels_N, guidance_N, prompt=prompt, negative=negative
        )

    (n,) = jax_export.symbolic_shape("n")
    classes = max(images.num_classes, 1)
    guidance = 1.0 if images.guidance is None else images.guidance
    args = [
        _int32("seeds", (n,), "seed of each image's PRNG key", [0, 0]),
        _int32("indices", (n,), "folded into the key: image i of a seed", [0, 1]),
        _int32(
            "labels",
            (n,),
            "class of each image (ignored if unconditional)",
            np.arange(2) % classes,
        ),
        _float32(
            "guidance",
            (n,),
            "classifier-free guidance weight per image (diffusion; ignored otherwise)",
            [guidance] * 2,
        ),
    ]
    if images.prompts is not None:
        args += _prompt_args(images.prompts, n)
    outputs = ["images [n, H, W, C] float32 in [-1, 1]"]
    return {"sample": lowering.Function(sample, args, outputs)}


def _prompt_args(prompts, n) -> list[lowering.Arg]:
    """A text-to-image sampler's caption arguments: the prompt's and the
    negative prompt's token ids and masks ([n, length], right-padded; an
    all-zero mask is the null caption), as manifest["images"]["prompts"]
    says to tokenize them."""
    example = text_lib.fixed_length(
        ["a thick seven leaning right", "number two, small"],
        prompts.tokenizer,
        prompts.length,
    )
    null = np.zeros_like(example["text_mask"])
    shape = (n, prompts.length)
    return [
        _int32(
            "prompt_tokens", shape, "the prompt's token ids", example["text_tokens"]
        ),
        _int32("prompt_mask", shape, "1 on the prompt's tokens", example["text_mask"]),
        _int32("negative_tokens", shape, "the negative prompt's token ids", null),
        _int32("negative_mask", shape, "1 on its tokens; all 0: none", null),
    ]


def lm_functions(run: checkpoint.Run, context: int) -> dict[str, lowering.Function]:
    """The LM's `prefill` and `decode` (`lm_serving.make_serving`) over a KV cache of
    `context` positions per slot."""
    model, tokenizer = run.family.text.model, run.family.text.tokenizer
    prefill, decode = lm_serving.make_serving(model, context)
    # One symbolic scope per function: a dim must appear in its arguments.
    b, p, prefill_slots = jax_export.symbolic_shape(
        "b, p, slots", constraints=(f"p <= {context}",)
    )
    (s,) = jax_export.symbolic_shape("slots")
    prompt = np.asarray(tokenizer.prompt("The "), np.int32)[: context - 8]
    controls = lambda dim, ex: [
        _float32("temperature", (dim,), "0 is greedy", ex[0]),
        _int32("top_k", (dim,), "keep the k likeliest tokens (0: off)", ex[1]),
        _float32("top_p", (dim,), "nucleus mass (1: off)", ex[2]),
    ]
    cache = _cache_arg(model, context)
    padded = np.zeros((1, len(prompt) + 3), np.int32)
    padded[0, : len(prompt)] = prompt
    prefill_args = [
        cache(prefill_slots),
        _int32("slots", (b,), "cache row each prompt is written to", [1]),
        _int32("prompts", (b, p), "token ids, right-padded", padded),
        _int32("lengths", (b,), "each prompt's length", [len(prompt)]),
        _int32("seeds", (b,), "each sequence's sampling seed", [3]),
        *controls(b, ([0.7], [40], [0.9])),
        _int32(
            "score_prompt",
            (b,),
            "1: also score the prompt's tokens (echo with logprobs)",
            [1],
        ),
    ]
    decode_args = [
        cache(s),
        _int32("tokens", (s,), "each slot's newest token", [5, 7]),
        _int32("positions", (s,), "that token's position", [0, len(prompt)]),
        _int32("seeds", (s,), "each slot's sampling seed", [0, 3]),
        *controls(s, ([0.0, 1.0], [0, 20], [1.0, 0.8])),
    ]
    scored = "log-probability and the K likeliest (ids, log-probabilities)"
    first = (
        "{token [b], logprob [b], top_ids [b, K], top_logprobs [b, K], "
        "prompt_logprob [b, p], prompt_top_ids [b, p, K], prompt_top_logprobs "
        f"[b, p, K]}}: the first sampled token, its {scored}; the prompt's "
        "tokens scored (position j by the logits at j - 1; zeros unless "
        "score_prompt)"
    )
    functions = {"prefill": lowering.Function(prefill, prefill_args, [first, "cache"])}
    for window in decode_windows(context):
        after = (
            "{token [slots], logprob [slots], top_ids [slots, K], top_logprobs "
            f"[slots, K]}}: the next token (every position < {window}), its {scored}"
        )
        functions[f"decode_{window}"] = lowering.Function(
            decode(window), decode_args, [after, "cache"]
        )
    return functions


def _cache_arg(model, context: int) -> Callable[[object], lowering.Arg]:
    """slots (a symbolic dim) -> the KV-cache argument of that many slots."""
    example = jax.device_get(transformer.init_cache(model, 2, context))
    leaf = jax.tree.leaves(transformer.cache_spec(model, 1, context))[0]
    layout = (
        "[slots, layers, T, G, K]"
        if model.scan_layers
        else "per layer [slots, T, G, K]"
    )
    meaning = (
        f"KV cache of {model.num_layers} layers, {{k, v}} {layout} {leaf.dtype} "
        f"(T = {context}, G = {model.kv_heads}, K = {model.head_size})"
    )
    return lambda slots: lowering.Arg(
        "cache", transformer.cache_spec(model, slots, context), meaning, example
    )


def decode_windows(context: int) -> list[int]:
    """The attention windows decode is exported for: a step attends over the
    cache's first `window` positions, the smallest past every slot's."""
    return artifact.length_buckets(context, 64)


def export_run(
    run: checkpoint.Run,
    out: str,
    *,
    platforms: Sequence[str] = ("cpu",),
    context: int | None = None,
) -> list[str]:
    """Writes the run's artifact to `out`; returns the files written."""
    out_path = pathlib.Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    text = run.family.text
    if text is not None:  # what it makes decides what is exported
        context = context or run.config.data.seq_len
        functions = lm_functions(run, context)
        product = {"lm": _lm_section(run, context, out_path)}
    else:
        functions = image_functions(run)
        images = run.family.images
        info = {"shape": list(images.shape), "num_classes": images.num_classes}
        if images.guidance is not None:  # absent: the model takes no weight
            info["guidance"] = images.guidance
        if images.prompts is not None:  # what tokenizes a prompt, and its length
            info["prompts"] = _prompts_section(run, images.prompts, out_path)
        product = {"images": info | images.sampler}
    manifest_fns = lowering.write_functions(
        functions, jax.device_get(run.params), out_path, platforms
    )
    shutil.copyfile(artifact.__file__, out_path / "load.py")
    manifest = {
        "format": artifact.FORMAT,
        "version": artifact.VERSION,
        "family": run.config.family,
        "step": run.step,
        "jax_version": jax.__version__,
        "platforms": list(platforms),
        "functions": manifest_fns,
        "config": json.loads(run.config.to_json()),
        **product,
    }
    (out_path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return sorted(str(p) for p in out_path.rglob("*") if p.is_file())


def _prompts_section(run: checkpoint.Run, prompts, out_path: pathlib.Path) -> dict:
    """The manifest's images["prompts"]: the caption length and the tokenizer
    (its files under `out_path`/tokenizer), so prompt -> image runs where
    gen_jax is not installed."""
    return {
        "length": prompts.length,
        "tokenizer": text_lib.describe_tokenizer(
            run.config.data, prompts.tokenizer, str(out_path / "tokenizer")
        ),
    }


def _lm_section(run: checkpoint.Run, context: int, out_path: pathlib.Path) -> dict:
    """The manifest's "lm": what a server needs besides the functions (the
    tokenizer's files are written under `out_path`)."""
    text = run.family.text
    return {
        "context": context,
        "vocab_size": text.model.vocab_size,
        "eos_id": text.tokenizer.eos_id,
        # K: how many likeliest tokens each program returns with a token.
        "top_logprobs": min(lm_serving.TOP_LOGPROBS, text.model.vocab_size),
        "num_layers": text.model.num_layers,
        "decode_windows": decode_windows(context),
        "tokenizer": text_lib.describe_tokenizer(
            run.config.data, text.tokenizer, str(out_path / "tokenizer")
        ),
    }
