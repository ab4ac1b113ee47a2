"""GAN: a discriminator phase, then a generator phase, in one step (Goodfellow et al., 2014).

Losses: non-saturating, hinge (Lim & Ye, 2017; SNGAN) and WGAN-GP (Gulrajani et
al., 2017); R1 penalty (Mescheder et al., 2018), optionally lazy (StyleGAN2).
Spectral-norm vectors are state entry "disc_spectral", updated by the disc phase.
"""

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families.family import (
    Batch,
    Family,
    Images,
    Metrics,
    Params,
    check_name,
    image_shape,
    images_sampler,
    normal_per_key,
)
from gen_jax.models import MODELS

LOSSES = ("non_saturating", "hinge", "wgan_gp")


def disc_loss_from_scores(kind: str, real_B: jax.Array, fake_B: jax.Array):
    """The discriminator's loss on its scores (logits) for real and fake images."""
    if kind == "non_saturating":  # -log sigmoid(real) - log(1 - sigmoid(fake))
        return jnp.mean(jax.nn.softplus(-real_B) + jax.nn.softplus(fake_B))
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1 - real_B) + jax.nn.relu(1 + fake_B))
    if kind == "wgan_gp":  # the critic's Wasserstein estimate; the penalty is added
        return jnp.mean(fake_B - real_B)
    raise ValueError(f"unknown config.gan.loss {kind!r}; valid: {', '.join(LOSSES)}")


def gen_loss_from_scores(kind: str, fake_B: jax.Array) -> jax.Array:
    """The generator's loss on the discriminator's scores for its images."""
    if kind == "non_saturating":  # -log sigmoid(fake): strong gradients early on
        return jnp.mean(jax.nn.softplus(-fake_B))
    return jnp.mean(-fake_B)  # hinge and WGAN


def r1_penalty(critic_fn, x_BHWC: jax.Array) -> jax.Array:
    """E ||grad_x D(x)||^2 over real images (the caller scales by gamma / 2)."""
    g = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_BHWC)
    return jnp.mean(jnp.sum(g**2, axis=(1, 2, 3)))


def gradient_penalty(critic_fn, real_BHWC, fake_BHWC, key: jax.Array) -> jax.Array:
    """E (||grad D(x_hat)||_2 - 1)^2 at random interpolates of real and fake."""
    eps = jax.random.uniform(key, (real_BHWC.shape[0], 1, 1, 1))
    x_hat = eps * real_BHWC + (1 - eps) * fake_BHWC
    g = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
    norm_B = jnp.sqrt(jnp.sum(g**2, axis=(1, 2, 3)) + 1e-12)
    return jnp.mean((norm_B - 1) ** 2)


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the GAN family from `config.model`, `config.gan` and `config.data`."""
    cfg = config.gan
    check_name("config.gan.loss", cfg.loss, LOSSES)
    check_name("config.model.name", config.model.name, MODELS)
    kind, z_dim = cfg.loss, config.model.z_dim
    num_classes = config.data.num_classes if cfg.conditional else 0
    # z_dim is the family's (it draws the latents); the networks take any width.
    kwargs = {k: v for k, v in config.model.items() if k not in ("name", "z_dim")}
    model = MODELS[config.model.name](
        **kwargs,
        image_size=config.data.image_size,
        out_channels=config.data.channels,
        num_classes=num_classes,
    )

    def labels_of(batch: Batch) -> jax.Array:
        return batch["label"] if num_classes else jnp.zeros(len(batch["image"]), int)

    def init(key: jax.Array, batch: Batch) -> Params:
        z_BZ = jnp.zeros((1, z_dim))
        v = model.init(key, z_BZ, batch["image"][:1], labels_of(batch)[:1])
        params = {"gen": v["params"]["generator"], "disc": v["params"]["discriminator"]}
        if "spectral" in v:
            params["disc_spectral"] = v["spectral"]["discriminator"]
        return params

    def generate(params: Params, z_BZ, labels_B) -> jax.Array:
        variables = {"params": {"generator": params["gen"]}}
        return model.apply(variables, z_BZ, labels_B, method=model.generate)

    def critic(params: Params, x_BHWC, labels_B, update: bool = False):
        """Scores, and with `update` the advanced spectral-norm state (else None)."""
        variables = {"params": {"discriminator": params["disc"]}}
        if "disc_spectral" in params:
            variables["spectral"] = {"discriminator": params["disc_spectral"]}
        if not update or "disc_spectral" not in params:
            return model.apply(
                variables, x_BHWC, labels_B, method=model.discriminate
            ), None
        scores_B, new = model.apply(
            variables,
            x_BHWC,
            labels_B,
            True,
            method=model.discriminate,
            mutable=["spectral"],
        )
        return scores_B, new["spectral"]["discriminator"]

    def disc_loss(params: Params, batch: Batch, key) -> tuple[jax.Array, Metrics]:
        real, labels_B = batch["image"], labels_of(batch)
        z_key, gp_key = jax.random.split(key)
        fake = generate(params, jax.random.normal(z_key, (len(real), z_dim)), labels_B)
        # One pass over real and fake: one power-iteration update per step.
        scores, spectral = critic(
            params, jnp.concatenate([real, fake]), jnp.concatenate([labels_B] * 2), True
        )
        real_B, fake_B = jnp.split(scores, 2)
        loss = disc_loss_from_scores(kind, real_B, fake_B)
        aux = {"real_score": jnp.mean(real_B), "fake_score": jnp.mean(fake_B)}
        critic_fn = lambda x: critic(params, x, labels_B)[0]
        if kind == "wgan_gp":
            aux["gp"] = gradient_penalty(critic_fn, real, fake, gp_key)
            loss += cfg.gp_weight * aux["gp"]
        if cfg.r1_gamma and cfg.r1_every == 1:
            aux["r1"] = r1_penalty(critic_fn, real)
            loss += 0.5 * cfg.r1_gamma * aux["r1"]
        if spectral is not None:
            aux["new_state"] = {"disc_spectral": spectral}
        return loss, aux

    def lazy_r1_loss(params: Params, batch: Batch, key) -> tuple[jax.Array, Metrics]:
        del key
        labels_B = labels_of(batch)
        r1 = r1_penalty(lambda x: critic(params, x, labels_B)[0], batch["image"])
        # Scaled by the interval so the penalty's strength does not depend on it.
        return 0.5 * cfg.r1_gamma * cfg.r1_every * r1, {"r1": r1}

    def gen_loss(params: Params, batch: Batch, key) -> tuple[jax.Array, Metrics]:
        labels_B = labels_of(batch)
        fake = generate(
            params, jax.random.normal(key, (len(labels_B), z_dim)), labels_B
        )
        fake_B, _ = critic(params, fake, labels_B)
        return gen_loss_from_scores(kind, fake_B), {"fake_score": jnp.mean(fake_B)}

    def generate_images(params: Params, keys_N, labels_N, guidance_N) -> jax.Array:
        del guidance_N  # no classifier-free guidance
        return generate(params, normal_per_key(keys_N, (z_dim,)), labels_N)

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        del key
        return critic(params, batch["image"], labels_of(batch))[0]

    losses, every = {"disc": disc_loss}, {"gen": cfg.disc_steps}
    if cfg.r1_gamma and cfg.r1_every > 1:
        losses["disc/r1"], every["disc/r1"] = lazy_r1_loss, cfg.r1_every
    losses["gen"] = gen_loss
    return Family(
        init=init,
        losses=losses,
        generate=generate_images,
        sample=images_sampler(generate_images, num_classes),
        apply=apply,
        every=every,
        images=Images(image_shape(config.data), num_classes),
    )
