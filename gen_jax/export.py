"""`jax.export` artifacts of a run (`gen-jax export`): the image sampler, or the
LM's prefill and decode steps, serialized with the params they take
(params.safetensors), manifest.json and example.npz. `artifact.py`, copied in as
load.py, loads them with jax, numpy and safetensors alone."""

import dataclasses
import json
import pathlib
import shutil
from collections.abc import Callable, Sequence

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from gen_jax import artifact, checkpoint
from gen_jax import text as text_lib
from gen_jax.families import lm
from gen_jax.families.family import Params, seeded_keys
from gen_jax.models import transformer

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument after params: its spec (dims may be symbolic), what it
    means, and the example value example.npz records."""

    name: str
    spec: object  # a ShapeDtypeStruct, or a pytree of them (the KV cache)
    meaning: str
    example: object


@dataclasses.dataclass(frozen=True)
class Function:
    fn: Callable  # (params, *args)
    args: list[Arg]
    outputs: list[str]  # what each output is


def _int32(name, shape, meaning, example):
    return Arg(name, jax.ShapeDtypeStruct(shape, jnp.int32), meaning, np.int32(example))


def _float32(name, shape, meaning, example):
    return Arg(
        name, jax.ShapeDtypeStruct(shape, jnp.float32), meaning, np.float32(example)
    )


def image_functions(run: checkpoint.Run) -> dict[str, Function]:
    """`sample(params, seeds, indices, labels, guidance) -> images`: image i from
    fold_in(key(seeds[i]), indices[i]), so `gen-jax sample --seed=S` is seeds
    all S and indices 0..n-1."""
    generate, images = run.family.generate, run.family.images
    if images is None:
        raise ValueError(f"family {run.config.family!r} does not generate images")

    def sample(params: Params, seeds_N, indices_N, labels_N, guidance_N):
        return generate(params, seeded_keys(seeds_N, indices_N), labels_N, guidance_N)

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
    outputs = ["images [n, H, W, C] float32 in [-1, 1]"]
    return {"sample": Function(sample, args, outputs)}


def lm_functions(run: checkpoint.Run, context: int) -> dict[str, Function]:
    """The LM's `prefill` and `decode` (`lm.make_serving`) over a KV cache of
    `context` positions per slot."""
    model, tokenizer = run.family.text.model, run.family.text.tokenizer
    prefill, decode = lm.make_serving(model, context)
    # One symbolic scope per function: a dim must appear in its arguments.
    b, p, prefill_slots = jax_export.symbolic_shape(
        "b, p, slots", constraints=(f"p <= {context}",)
    )
    (s,) = jax_export.symbolic_shape("slots")
    example_cache = jax.device_get(transformer.init_cache(model, 2, context))
    prompt = np.asarray(tokenizer.prompt("The "), np.int32)[: context - 8]
    controls = lambda dim, ex: [
        _float32("temperature", (dim,), "0 is greedy", ex[0]),
        _int32("top_k", (dim,), "keep the k likeliest tokens (0: off)", ex[1]),
        _float32("top_p", (dim,), "nucleus mass (1: off)", ex[2]),
    ]
    leaf = jax.tree.leaves(transformer.cache_spec(model, 1, context))[0]
    layout = (
        "[slots, layers, T, G, K]"
        if model.scan_layers
        else "per layer [slots, T, G, K]"
    )
    cache_meaning = (
        f"KV cache of {model.num_layers} layers, {{k, v}} {layout} {leaf.dtype} "
        f"(T = {context}, G = {model.kv_heads}, K = {model.head_size})"
    )
    cache = lambda slots: transformer.cache_spec(model, slots, context)
    padded = np.zeros((1, len(prompt) + 3), np.int32)
    padded[0, : len(prompt)] = prompt
    prefill_args = [
        Arg("cache", cache(prefill_slots), cache_meaning, example_cache),
        _int32("slots", (b,), "cache row each prompt is written to", [1]),
        _int32("prompts", (b, p), "token ids, right-padded", padded),
        _int32("lengths", (b,), "each prompt's length", [len(prompt)]),
        _int32("seeds", (b,), "each sequence's sampling seed", [3]),
        *controls(b, ([0.7], [40], [0.9])),
    ]
    decode_args = [
        Arg("cache", cache(s), cache_meaning, example_cache),
        _int32("tokens", (s,), "each slot's newest token", [5, 7]),
        _int32("positions", (s,), "that token's position", [0, len(prompt)]),
        _int32("seeds", (s,), "each slot's sampling seed", [0, 3]),
        *controls(s, ([0.0, 1.0], [0, 20], [1.0, 0.8])),
    ]
    functions = {
        "prefill": Function(
            prefill, prefill_args, ["first sampled token [b] int32", "cache"]
        )
    }
    for window in decode_windows(context):
        functions[f"decode_{window}"] = Function(
            decode(window),
            decode_args,
            [f"next token [slots] int32 (every position < {window})", "cache"],
        )
    return functions


def decode_windows(context: int) -> list[int]:
    """The attention windows decode is exported for: a step attends over the
    cache's first `window` positions, the smallest past every slot's."""
    return artifact.length_buckets(context, 64)


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """{"gen": {"conv": {"kernel": x}}} -> {"gen/conv/kernel": x}."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}{key}/")
    return flat


def _used_params(fn: Function, params: Params) -> dict:
    """The params leaves `fn` reads (a GAN's sampler takes no discriminator, a
    VAE's no encoder): the artifact stores and passes only those."""
    flat = flatten(
        jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    )
    specs = [a.spec for a in fn.args]
    closed = jax.make_jaxpr(fn.fn)(artifact.unflatten(flat), *specs)
    num = len(flat)
    invars = closed.jaxpr.invars[:num]
    read = {
        id(v)
        for v in [
            *(x for e in closed.jaxpr.eqns for x in e.invars),
            *closed.jaxpr.outvars,
        ]
        if isinstance(v, jax.extend.core.Var)
    }
    names = [k for k, _ in flatten_with_order(flat)]
    values = flatten(params)
    return {name: values[name] for name, var in zip(names, invars) if id(var) in read}


def flatten_with_order(flat: dict) -> list:
    """(name, value) in the order `jax.tree.leaves` visits the unflattened tree."""
    tree = artifact.unflatten(dict(flat))
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [("/".join(k.key for k in path), value) for path, value in paths]


def lower(
    name: str, fn: Function, abstract: dict, platforms: Sequence[str]
) -> jax_export.Exported:
    """`jax.export` of one function for `platforms`, or one line saying which
    platform cannot be lowered here and which can."""
    unknown = sorted(set(platforms) - set(PLATFORMS))
    if unknown or not platforms:
        raise ValueError(
            f"--platforms: unknown {unknown or 'empty list'}; choose from {', '.join(PLATFORMS)}"
        )
    specs = [artifact.unflatten(abstract), *(a.spec for a in fn.args)]
    try:
        return jax_export.export(jax.jit(fn.fn), platforms=tuple(platforms))(*specs)
    except Exception:  # find the platform(s) that fail, for the message
        ok, failed = [], {}
        for platform in platforms:
            try:
                jax_export.export(jax.jit(fn.fn), platforms=(platform,))(*specs)
                ok.append(platform)
            except Exception as e:  # noqa: BLE001 - reported below
                failed[platform] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if not failed:
            raise
        why = "; ".join(f"{p}: {m}" for p, m in failed.items())
        raise ValueError(
            f"cannot lower {name!r} for {', '.join(failed)} here ({why}); "
            f"platforms that lower here: {', '.join(ok) or 'none'}"
        ) from None


def _describe(arg: Arg) -> dict:
    leaf = jax.tree.leaves(arg.spec)[0]
    return {
        "name": arg.name,
        "shape": [str(d) if not isinstance(d, int) else d for d in leaf.shape],
        "dtype": str(leaf.dtype),
        "meaning": arg.meaning,
    }


def export_run(
    run: checkpoint.Run,
    out: str,
    *,
    platforms: Sequence[str] = ("cpu",),
    context: int | None = None,
) -> list[str]:
    """Writes the run's artifact to `out`; returns the files written."""
    text = run.family.text
    if text is not None:  # what it makes decides what is exported
        context = context or run.config.data.seq_len
        functions = lm_functions(run, context)
    else:
        functions = image_functions(run)
    params = jax.device_get(run.params)
    out_path = pathlib.Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    stored, examples, manifest_fns = {}, {}, {}
    for name, fn in functions.items():
        used = _used_params(fn, params)
        exported = lower(name, fn, used, platforms)
        (out_path / f"{name}.jax").write_bytes(exported.serialize())
        stored |= used
        # What gen_jax itself computes (jit of the same function), for load.py.
        example_args = [a.example for a in fn.args]
        outputs = jax.jit(fn.fn)(artifact.unflatten(used), *example_args)
        for i, leaf in enumerate(jax.tree.leaves(example_args)):
            examples[f"{name}/in/{i}"] = np.asarray(leaf)
        for i, leaf in enumerate(jax.tree.leaves(outputs)):
            examples[f"{name}/out/{i}"] = np.asarray(leaf)
        manifest_fns[name] = {
            "file": f"{name}.jax",
            "params": sorted(used),
            "args": [
                {"name": "params", "meaning": "params.safetensors: the keys above"},
                *(_describe(a) for a in fn.args),
            ],
            "outputs": fn.outputs,
        }
    from safetensors.numpy import save_file

    save_file(
        # np.array, not np.ascontiguousarray: that one makes a scalar 1-D (a
        # latent run's autoencoder scale).
        {k: np.array(v, order="C") for k, v in stored.items()},
        str(out_path / "params.safetensors"),
    )
    np.savez_compressed(out_path / "example.npz", **examples)
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
    }
    if text is not None:
        manifest["lm"] = {
            "context": context,
            "vocab_size": text.model.vocab_size,
            "eos_id": text.tokenizer.eos_id,
            "num_layers": text.model.num_layers,
            "decode_windows": decode_windows(context),
            "tokenizer": text_lib.describe_tokenizer(
                run.config.data, text.tokenizer, str(out_path / "tokenizer")
            ),
        }
    else:
        images = run.family.images
        manifest["images"] = {
            "shape": list(images.shape),
            "num_classes": images.num_classes,
            **images.sampler,
        }
    (out_path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return sorted(str(p) for p in out_path.rglob("*") if p.is_file())
