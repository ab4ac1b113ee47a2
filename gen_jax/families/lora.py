"""LoRA (Hu et al., 2021) for any family's model: the base params frozen, and
trainable low-rank adapters on chosen Dense kernels, y = x W + (alpha / r)
dropout(x) A B, added at each adapted module's call by flax method interception.

Why not qwix's LoRA provider: it matches a weight only when the weight itself
reaches `dot_general`, and gen_jax's transformer Dense multiplies a reshaped
kernel (one 2D matmul, faster on XLA:CPU), so it would adapt nothing there.
Interception at the module boundary needs no change to any model, and the
adapter path costs two thin matmuls: the frozen kernel gets no weight gradient.
"""

import math
import re
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax import pytree
from gen_jax.families.family import Family, Params, heldout_metrics

BASE = "lora_base"  # the params entry of the frozen base: {"model": params}


def _inputs(module: nn.Module) -> int | None:
    """How many trailing input axes the module's kernel contracts (None: not a
    Dense, e.g. a convolution)."""
    if hasattr(module, "in_axes"):  # models.layers.Dense
        return len(module.in_axes)
    if isinstance(module, nn.Dense):
        return 1
    return None


def _record(found: dict):
    """An interceptor noting every called module that owns a kernel."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.path:
            found.setdefault(context.module.path, context.module)
        return out

    return interceptor


def _select(found: dict, model_params: dict, cfg) -> dict:
    """{module path: (kernel, inputs)} of the kernels `cfg` targets."""
    if not cfg.targets and not cfg.target_axes:
        raise ValueError(
            "config.lora.rank > 0 needs config.lora.targets (a regex over module "
            "paths like 'block_0/q') or config.lora.target_axes (logical axis names)"
        )
    pattern = re.compile(cfg.targets) if cfg.targets else None
    chosen, kernels = {}, []
    for path, module in sorted(found.items()):
        node = pytree.subtree(model_params, path)
        if not isinstance(node, dict) or "kernel" not in node:
            continue
        kernel = node["kernel"]
        name = "/".join(path)
        kernels.append(name)
        names = set(getattr(kernel, "names", ()) or ())
        if not ((pattern and pattern.fullmatch(name)) or names & set(cfg.target_axes)):
            continue
        if _inputs(module) is None:
            raise ValueError(
                f"config.lora targets {name}, a {type(module).__name__}; LoRA "
                "adapts Dense kernels only"
            )
        chosen[path] = (nn.unbox(kernel), _inputs(module))
    if not chosen:
        raise ValueError(
            f"config.lora.targets={cfg.targets!r} / target_axes="
            f"{tuple(cfg.target_axes)} match no kernel; kernels: "
            f"{', '.join(kernels[:8])}{' ...' if len(kernels) > 8 else ''}"
        )
    return chosen


def _adapted(adapters: dict, scale: float, rate: float, key):
    """An interceptor adding each adapted module's low-rank path to its output."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        node = pytree.subtree(adapters, context.module.path)
        if context.method_name != "__call__" or not node or "lora_a" not in node:
            return out
        a, b = node["lora_a"], node["lora_b"]
        x = args[0].reshape(-1, a.shape[0]).astype(jnp.float32)
        if rate > 0 and key is not None:
            # Seeded by the path, not call order: a remat recomputation draws
            # the same mask as the forward pass.
            path_key = jax.random.fold_in(
                key, zlib.crc32("/".join(context.module.path).encode())
            )
            keep = jax.random.bernoulli(path_key, 1 - rate, x.shape)
            x = jnp.where(keep, x / (1 - rate), 0)
        delta = (x @ a.astype(jnp.float32)) @ b.astype(jnp.float32)
        return out + (scale * delta).reshape(out.shape).astype(out.dtype)

    return interceptor


def merge(params: Params, scale: float) -> Params:
    """{"model": base + scale * A B} in float32: the plain params a sampler,
    evaluator or exporter uses."""
    base = params[BASE]["model"]

    def fold(node, adapters):
        if isinstance(adapters, dict) and "lora_a" in adapters:
            kernel = node["kernel"]
            delta = adapters["lora_a"].astype(jnp.float32) @ adapters["lora_b"].astype(
                jnp.float32
            )
            merged = kernel.astype(jnp.float32) + scale * delta.reshape(kernel.shape)
            return {**node, "kernel": merged}
        return {
            k: fold(v, adapters[k]) if k in adapters else v for k, v in node.items()
        }

    rest = {k: v for k, v in params.items() if k not in (BASE, "model")}
    return rest | {"model": fold(base, params["model"])}


def wrap(family: Family, cfg: ml_collections.ConfigDict) -> Family:
    """`family` training adapters only: params {"model": adapters, BASE:
    {"model": frozen base}}; the optimizer and the EMA see adapter-sized arrays."""
    if family.roles != ["model"]:
        raise ValueError(
            f"LoRA adapts single-model families (lm, vae, diffusion); this one "
            f"trains {family.roles}"
        )
    scale = cfg.alpha / cfg.rank
    base_dtype = jnp.dtype(cfg.base_dtype)

    def init(key: jax.Array, batch) -> Params:
        key_base, key_lora = jax.random.split(key)
        found = {}
        with nn.intercept_methods(_record(found)):
            params = family.init(key_base, batch)
        adapters = {}
        for i, (path, (kernel, n_in)) in enumerate(
            _select(found, params["model"], cfg).items()
        ):
            fan_in = math.prod(kernel.shape[:n_in])
            bound = 1 / math.sqrt(fan_in)  # Kaiming-uniform(a=sqrt 5), peft's default
            node = adapters
            for k in path:
                node = node.setdefault(k, {})
            node["lora_a"] = jax.random.uniform(
                jax.random.fold_in(key_lora, i),
                (fan_in, cfg.rank),
                jnp.float32,
                -bound,
                bound,
            )
            # B = 0: step 0 is exactly the base model.
            node["lora_b"] = jnp.zeros(
                (cfg.rank, math.prod(kernel.shape[n_in:])), jnp.float32
            )
        frozen = jax.tree.map(
            lambda x: (
                x.astype(base_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
            ),
            params["model"],
        )
        return {**params, "model": adapters, BASE: {"model": frozen}}

    def adapted_loss(loss_fn):
        def loss(params, batch, key):
            # The family's own key unchanged: step 0 is the base run exactly.
            dropout_key = jax.random.fold_in(key, 0x10A)
            inner = {**params, "model": params[BASE]["model"]}
            del inner[BASE]
            with nn.intercept_methods(
                _adapted(params["model"], scale, cfg.dropout, dropout_key)
            ):
                return loss_fn(inner, batch, key)

        return loss

    def merged(fn):
        return None if fn is None else (lambda params, *a: fn(merge(params, scale), *a))

    return Family(
        init=init,
        losses={phase: adapted_loss(fn) for phase, fn in family.losses.items()},
        generate=merged(family.generate),
        sample=merged(family.sample),
        apply=merged(family.apply),
        reconstruct=merged(family.reconstruct),
        # Merged weights: no adapter dropout at evaluation.
        evaluate=lambda params, batch, key: heldout_metrics(
            family, merge(params, scale), batch, key
        ),
        per_example=family.per_example,
        every=family.every,
        frozen=(BASE, *family.frozen),  # latent's autoencoder stays frozen too
        images=family.images,
        text=family.text,
        loads=family.loads,
        init_from=BASE,
        # A trained run is used as the plain family with the adapters folded in.
        deployed=lambda params: (family, merge(params, scale)),
    )
