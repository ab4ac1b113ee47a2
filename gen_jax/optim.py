"""Optax transform per role from `config.optim[role]`: clip -> AdamW with warmup + cosine."""

import ml_collections
import optax


def make_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine decay to `lr * final_lr_ratio`."""
    warmup = min(cfg.warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=cfg.lr * cfg.final_lr_ratio,
    )


def make_optimizer(
    cfg: ml_collections.ConfigDict, num_steps: int
) -> optax.GradientTransformation:
    """Global-norm clipping (off when clip_norm <= 0), then AdamW."""
    adamw = optax.adamw(
        make_schedule(cfg, num_steps),
        b1=cfg.b1,
        b2=cfg.b2,
        weight_decay=cfg.weight_decay,
    )
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
    return adamw


def make(
    config: ml_collections.ConfigDict, roles: list[str]
) -> dict[str, optax.GradientTransformation]:
    """One transform per role; a role without its own section uses `optim.model`."""
    out = {}
    for role in roles:
        section = role if role in config.optim else "model"
        if section not in config.optim:
            raise ValueError(
                f"config.optim has no section for role {role!r} (and no "
                f"`optim.model` fallback); sections: {sorted(config.optim)}"
            )
        out[role] = make_optimizer(config.optim[section], config.train.num_steps)
    return out
