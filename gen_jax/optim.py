"""Optax transform per role from `config.optim[role]`: clip -> AdamW with warmup
+ cosine, its scalars held as values in the optimizer state.

`optax.inject_hyperparams` keeps the learning rate (the schedule's peak), the
final ratio, the betas, the weight decay and the clipping norm in the state
(`opt_state[role].hyperparams`), so the compiled step reads them as inputs, not
constants: runs that differ only in them (a sweep's trials) share one compiled
program through the persistent compilation cache. What shapes the program
stays static: the step counts and whether to clip.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

# config.optim.<role> keys that reach the step as values (in the state).
VALUES = ("lr", "final_lr_ratio", "b1", "b2", "weight_decay", "clip_norm")


def unit_schedule(
    warmup_steps: int, decay_steps: int, final_lr_ratio
) -> optax.Schedule:
    """Linear warmup from 0 to 1, then cosine decay to `final_lr_ratio`: the
    learning rate's shape, which `lr` scales (a traced value; optax's own
    schedule branches on its peak in Python)."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=warmup_steps,
        decay_steps=decay_steps,
        end_value=final_lr_ratio,
    )


def _steps(cfg: ml_collections.ConfigDict, num_steps: int) -> tuple[int, int]:
    warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
    return warmup, max(num_steps, warmup + 1)


def _clipped_adamw(
    lr, final_lr_ratio, b1, b2, weight_decay, clip_norm, *, steps, clip
) -> optax.GradientTransformation:
    """The transform at given values (traced inside the step)."""
    unit = unit_schedule(*steps, final_lr_ratio)
    adamw = optax.adamw(
        lambda count: lr * unit(count), b1=b1, b2=b2, weight_decay=weight_decay
    )
    if clip:
        return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)
    return adamw


def make_optimizer(
    cfg: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
    """Global-norm clipping (off when clip_norm <= 0), then AdamW; the `VALUES`
    held in the state as float32."""
    factory = functools.partial(
        _clipped_adamw, steps=_steps(cfg, num_steps), clip=cfg.clip_norm > 0
    )
    return optax.inject_hyperparams(
        factory, static_args=("steps", "clip"), hyperparam_dtype=jnp.float32
    )(**{k: float(cfg[k]) for k in VALUES})


def make(
    config: ml_collections.ConfigDict, roles: list[str]
) -> dict[str, optax.GradientTransformation]:
    """One transform per role; a role without its own section uses `optim.model`."""
    out = {}
    for role in roles:
        out[role] = make_optimizer(section(config, role), config.train.num_steps)
    return out


def section(config: ml_collections.ConfigDict, role: str) -> ml_collections.ConfigDict:
    """`config.optim[role]`, or `optim.model` for a role without its own."""
    name = role if role in config.optim else "model"
    if name not in config.optim:
        raise ValueError(
            f"config.optim has no section for role {role!r} (and no "
            f"`optim.model` fallback); sections: {sorted(config.optim)}"
        )
    return config.optim[name]


def with_config_values(opt_state: dict, config: ml_collections.ConfigDict) -> dict:
    """`opt_state` (restored) with its held values set from `config`: a run
    resumed with a changed `--config.optim.*.lr` trains at the new rate, as its
    config.json says, rather than at the checkpoint's."""
    out = {}
    for role, s in opt_state.items():
        cfg = section(config, role)
        values = {
            k: jax.device_put(jnp.asarray(cfg[k], v.dtype), v.sharding)
            for k, v in s.hyperparams.items()
        }
        out[role] = s._replace(hyperparams=values)
    return out


def before_values(opt_state: dict) -> dict:
    """`opt_state` as gen_jax saved it before the optimizer held its values:
    each role's inner (clip + AdamW) state alone."""
    return {role: s.inner_state for role, s in opt_state.items()}


def held(inner: dict, like: dict) -> dict:
    """A restored `before_values` state, held as `like` (abstract) is: its
    update count from the inner state's, its values zero until
    `with_config_values` sets them."""
    out = {}
    for role, s in inner.items():
        (_, count), *_ = optax.tree.get_all_with_path(s, "count")
        values = {
            k: jax.device_put(jnp.zeros(v.shape, v.dtype), v.sharding)
            for k, v in like[role].hyperparams.items()
        }
        out[role] = like[role]._replace(count=count, hyperparams=values, inner_state=s)
    return out
