"""The frozen text encoder of text-to-image diffusion: a gen_jax language model
run (trained here, an SFT or LoRA fine-tune, or a `gen-jax import-hf` workdir)
whose hidden states the denoiser cross-attends to (Sana and Lumina-Image 2.0
read Gemma-2's, Playground v3 a Llama 3's).

`config.text.encoder` names the LM run; `config.text.model` repeats its model
section and `config.data`'s tokenizer keys repeat its tokenizer (`prepare`
copies both from its config.json when a run starts, so any LM run just works
as the encoder). The params entry `ENTRY` = {"model": the LM's EMA params, its
blocks past `config.text.layer` dropped} is filled at step 0 (a `Family.loads`
record), frozen (no optimizer, no EMA) and carried by the run's checkpoints, so
sampling, evaluation, export and serving need only the run.

Captions arrive tokenized ("text_tokens", "text_mask": int32 [B, S],
right-padded; text.fixed_length). The LM is causal, so a real token's features
never read the padding after it; the mask keeps padded positions out of the
denoiser's cross-attention and pooled embedding. An all-false mask is the null
caption (classifier-free guidance's unconditional input): the denoiser's text
terms are then exactly zero.
"""

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.families import lm
from gen_jax.families.family import Load, Params, Prompts

ENTRY = "text_encoder"  # the params entry of the frozen LM
# config.data keys that say how the encoder's tokenizer is built: copied from
# its run by `prepare`.
TOKENIZER_KEYS = ("tokenizer", "tokenizer_dir", "sentencepiece_model")


def enabled(config: ml_collections.ConfigDict) -> bool:
    """Whether the run conditions on text (config.json of a run written before
    base.py declared config.text has none)."""
    return bool(config.get("text", {}).get("encoder"))


def prepare(config: ml_collections.ConfigDict, read_config) -> list[str]:
    """Copies the encoder run's model section into `config.text.model` and its
    tokenizer keys into `config.data` (`read_config(workdir)` -> its config),
    so a fresh run's shapes and tokens are the encoder's; returns the dotted
    keys it changed. Nothing without `config.text.encoder`."""
    if not enabled(config):
        return []
    other = read_config(config.text.encoder)
    if other.family != "lm":
        raise ValueError(
            f"config.text.encoder={config.text.encoder!r} is a {other.family!r} "
            "run; the text encoder is a language-model run (gen-jax train "
            "--config=configs/lm_pydoc.py, an SFT / LoRA fine-tune, or gen-jax "
            "import-hf)"
        )
    if other.data.tokenizer == "char":
        raise ValueError(
            f"config.text.encoder={config.text.encoder!r} uses a char tokenizer, "
            "whose vocabulary is its own corpus's characters: captions need a "
            "byte, sentencepiece or hf tokenizer LM"
        )
    changed = []
    model = other.model.to_dict()
    if config.text.model.to_dict() != model:
        with config.text.unlocked():
            config.text.model = ml_collections.ConfigDict(model)
        changed.append("text.model")
    for key in TOKENIZER_KEYS:
        value = other.data.get(key, "")
        if config.data.get(key) != value:
            with config.data.unlocked():
                config.data[key] = value
            changed.append(f"data.{key}")
    return changed


def _checked(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    t = config.text
    if not t.model:
        raise ValueError(
            "config.text.model is empty: repeat the encoder run's config.model "
            "there (gen-jax train fills it from config.text.encoder's config.json)"
        )
    if not 0 <= t.drop_prob < 1:
        raise ValueError(f"config.text.drop_prob must be in [0, 1), got {t.drop_prob}")
    if t.layer != -1 and not 1 <= t.layer <= t.model.num_layers:
        raise ValueError(
            f"config.text.layer={t.layer}: read -1 (the last block) or a block "
            f"count in [1, {t.model.num_layers}]"
        )
    if t.layer != -1 and t.model.get("scan_layers"):
        raise ValueError(
            "config.text.layer reads an earlier block of unrolled layers only: "
            "leave it at -1 for an encoder with scan_layers"
        )
    return t


def make_model(config: ml_collections.ConfigDict):
    """(the encoder Transformer, cut after `config.text.layer` blocks; its
    tokenizer)."""
    t = _checked(config)
    model_config = ml_collections.ConfigDict(t.model.to_dict())
    if t.layer != -1:
        model_config.num_layers = t.layer
    model, tokenizer = lm.make_model(
        ml_collections.ConfigDict({"model": model_config, "data": config.data})
    )
    return model, tokenizer


def denoiser_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The denoiser's text fields `config.model` leaves to the encoder
    ({"text_dim": its width}, or {} without text), checked against
    `config.model.text_conditioning`."""
    conditioning = config.model.get("text_conditioning", "none")
    if enabled(config) == (conditioning == "none"):
        raise ValueError(
            f"config.model.text_conditioning={conditioning!r} with "
            f"config.text.encoder={config.get('text', {}).get('encoder', '')!r}: "
            "a text encoder needs a denoiser that reads text ('cross'), and "
            "text conditioning needs config.text.encoder"
        )
    return {"text_dim": _checked(config).model.embed_dim} if enabled(config) else {}


def prompts(config: ml_collections.ConfigDict) -> Prompts:
    """What the family declares of its prompts (`Images.prompts`)."""
    return Prompts(config.data.caption_len, make_model(config)[1])


def prompt_fn(config: ml_collections.ConfigDict):
    """(params, captions or None, dropout key or None) -> the denoiser's text
    arguments: () without text; else (features, mask) of the captions'
    {"text_tokens", "text_mask"}, a key dropping captions at
    `config.text.drop_prob`."""
    if not enabled(config):
        return lambda params, captions, key=None: ()
    features = features_fn(config)

    def prompt(params: Params, captions, key=None):
        tokens, mask = captions["text_tokens"], captions["text_mask"].astype(bool)
        if key is not None:
            mask = drop_captions(key, mask, config.text.drop_prob)
        return features(params[ENTRY], tokens, mask)

    return prompt


def init(config: ml_collections.ConfigDict, key: jax.Array) -> Params:
    """The entry's params at init (replaced by the encoder run's at step 0)."""
    model, _ = make_model(config)
    tokens = jnp.zeros((1, config.data.caption_len), jnp.int32)
    return {"model": model.init(key, tokens, hidden=True)["params"]}


def features_fn(config: ml_collections.ConfigDict):
    """(entry params, tokens_BS, mask_BS) -> (features_BSD float32, mask_BS
    bool), without gradients."""
    model, _ = make_model(config)

    def features(entry: Params, tokens_BS, mask_BS):
        out, _ = model.apply({"params": entry["model"]}, tokens_BS, hidden=True)
        mask_BS = mask_BS.astype(bool)
        # Padded positions zeroed too, so nothing downstream can read them.
        out = jnp.where(mask_BS[..., None], out, 0.0)
        return jax.lax.stop_gradient(out), mask_BS

    return features


def drop_captions(key: jax.Array, mask_BS: jax.Array, prob: float) -> jax.Array:
    """The mask with each row emptied (the null caption) with probability
    `prob`: classifier-free guidance's caption dropout."""
    keep_B = ~jax.random.bernoulli(key, prob, mask_BS.shape[:1])
    return mask_BS & keep_B[:, None]


def _cut(params: Params, layer: int) -> Params:
    """An LM's params without the blocks past `layer` (-1: all kept) and
    without an untied unembedding (the encoder reads hidden states)."""
    out = {k: v for k, v in params.items() if k != "unembed"}
    if layer == -1:
        return out
    return {
        k: v
        for k, v in out.items()
        if not (k.startswith("block_") and int(k.split("_")[1]) >= layer)
    }


def load(config: ml_collections.ConfigDict) -> Load:
    """The `Family.loads` record that fills `ENTRY` from the encoder run."""
    layer = config.text.layer

    def finish(loaded: Params, batches) -> tuple[Params, dict]:
        del batches
        return {"model": _cut(loaded["model"], layer)}, {}

    return Load(
        ENTRY,
        config.text.encoder,
        "config.text.encoder",
        "train a language model first (e.g. gen-jax train "
        f"--config=configs/lm_pydoc.py --workdir={config.text.encoder}), or "
        "point it at a gen-jax import-hf workdir",
        finish,
    )


def null_caption(num, length: int) -> dict[str, jax.Array]:
    """{"text_tokens", "text_mask"} of `num` null captions (all padding);
    `num` may be a symbolic dimension (an export's batch)."""
    zeros = jnp.zeros((num, length), jnp.int32)
    return {"text_tokens": zeros, "text_mask": zeros}


def padded(captions: dict, length: int) -> dict:
    """{"text_tokens", "text_mask"} right-padded to `length` positions."""
    extra = length - captions["text_tokens"].shape[1]
    return {k: jnp.pad(v, ((0, 0), (0, extra))) for k, v in captions.items()}
