"""Image classifier (cross-entropy): trains the feature extractors of the
sample-quality metrics on the same spine as the generative families."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax.families.family import Batch, Family, Metrics, Params, check_name
from gen_jax.models import MODELS


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the classifier family from `config.model` and `config.data`."""
    check_name("config.model.name", config.model.name, MODELS)
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    # One logit per label of the data (config.data.num_classes is the one count).
    model = MODELS[config.model.name](**kwargs, num_classes=config.data.num_classes)

    def init(key: jax.Array, batch: Batch) -> Params:
        return {"model": model.init(key, batch["image"][:1])["params"]}

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        del key
        return model.apply({"params": params["model"]}, batch["image"])[1]

    def loss(params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        logits_BV = apply(params, batch, key)
        xent_B = optax.softmax_cross_entropy_with_integer_labels(
            logits_BV, batch["label"]
        )
        accuracy = jnp.mean(jnp.argmax(logits_BV, -1) == batch["label"])
        return jnp.mean(xent_B), {"accuracy": accuracy}

    return Family(init=init, losses={"model": loss}, apply=apply)
