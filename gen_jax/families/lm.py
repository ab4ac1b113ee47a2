"""Decoder-only LM family: next-token cross-entropy, held-out bits per byte/char,
and KV-cache decoding (greedy, temperature, top-k, top-p) in a `lax` loop."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gen_jax import text
from gen_jax.families.family import (
    Batch,
    Family,
    Metrics,
    Params,
    Text,
    check_name,
)
from gen_jax.models import MODELS, block, transformer


def make_model(config: ml_collections.ConfigDict):
    """The Transformer for `config` and the tokenizer that sets its vocabulary."""
    check_name("config.model.name", config.model.name, ("transformer",))
    check_name("config.model.norm", config.model.norm, block.NORMS)
    check_name("config.model.mlp", config.model.mlp, block.MLPS)
    tokenizer = text.make_tokenizer(config.data)
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    kwargs["rope_llama3"] = tuple(kwargs.get("rope_llama3", ()))  # JSON gives a list
    vocab = kwargs.pop("vocab_size", 0) or tokenizer.vocab_size
    if vocab < tokenizer.vocab_size:
        raise ValueError(
            f"config.model.vocab_size={vocab} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens; set it to 0 (the tokenizer's) or more"
        )
    return MODELS[config.model.name](vocab_size=vocab, **kwargs), tokenizer


def flops_per_token(num_params: int, model, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmuls of forward + backward, plus
    the attention scores and values, 12 * layers * (heads * head size) * length
    (PaLM, App. B)."""
    attention_width = model.num_heads * model.head_size
    return 6 * num_params + 12 * model.num_layers * attention_width * seq_len


def sample_logits(logits_BV, key_B, temperature, top_k, top_p):
    """One token per row. temperature 0 is greedy; top_k 0 and top_p 1 are off.
    Each control is a scalar or one value per row (a server's decode slots),
    and may be traced, so changing them does not recompile."""
    logits_BV = logits_BV.astype(jnp.float32)
    b, vocab = logits_BV.shape
    per_row = lambda x, dtype: jnp.broadcast_to(jnp.asarray(x, dtype), (b,))[:, None]
    temperature_B1 = per_row(temperature, jnp.float32)
    top_k_B1, top_p_B1 = per_row(top_k, jnp.int32), per_row(top_p, jnp.float32)
    temperature_B1 = jnp.maximum(temperature_B1, 1e-6)

    def truncate(logits_BV):  # top-k, then top-p over what is left
        sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
        k_B1 = jnp.clip(jnp.where(top_k_B1 > 0, top_k_B1, vocab), 1, vocab)
        kth_B1 = jnp.take_along_axis(sorted_BV, k_B1 - 1, -1)
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
        # top-p: keep the smallest prefix of sorted tokens whose mass reaches top_p.
        probs_BV = jax.nn.softmax(
            jnp.where(sorted_BV < kth_B1, -jnp.inf, sorted_BV) / temperature_B1, -1
        )
        before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
        cutoff_B1 = jnp.min(
            jnp.where(before_BV < top_p_B1, sorted_BV, jnp.inf), axis=-1, keepdims=True
        )
        # Rows that do not truncate keep their logits exactly (a row never
        # depends on the others).
        cut_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
        return jnp.where(truncates_B1, cut_BV, logits)

    # The sort only when some row truncates: a decode step mostly samples plainly.
    truncates_B1 = (top_k_B1 > 0) | (top_p_B1 < 1)
    logits = logits_BV
    logits_BV = jax.lax.cond(jnp.any(truncates_B1), truncate, lambda x: x, logits_BV)
    sampled_B = jax.vmap(jax.random.categorical)(key_B, logits_BV / temperature_B1)
    greedy_B = jnp.broadcast_to(jnp.asarray(temperature) <= 0, (b,))
    return jnp.where(~greedy_B, sampled_B, jnp.argmax(logits_BV, -1))


def make_generate(model, *, use_cache: bool = True):
    """(params, prompt_BP, seeds_B, max_len, temperature, top_k, top_p) -> tokens
    [B, max_len]: the prompt, then sampled tokens. Jit with max_len static: one
    compile per (batch, prompt length, max_len)."""

    def generate(
        params, prompt_BP, seeds_B, max_len, temperature=1.0, top_k=0, top_p=1.0
    ):
        b, p = prompt_BP.shape
        tokens_BL = jnp.zeros((b, max_len), jnp.int32).at[:, :p].set(prompt_BP)
        keys_B = jax.vmap(jax.random.key)(seeds_B)  # one stream per request
        apply = lambda *a: model.apply({"params": params["model"]}, *a)
        if use_cache:
            positions = jnp.broadcast_to(jnp.arange(p), (b, p))
            logits_BPV, cache = apply(
                prompt_BP, positions, transformer.init_cache(model, b, max_len)
            )
            carry = (tokens_BL, logits_BPV[:, -1], cache)
        else:
            carry = (tokens_BL, None, None)

        def body(i, carry):
            tokens_BL, logits_BV, cache = carry
            if not use_cache:  # recompute everything; causal masking hides the rest
                logits_BV = jnp.take(apply(tokens_BL)[0], i - 1, axis=1)
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(keys_B)
            token_B = sample_logits(logits_BV, step_keys, temperature, top_k, top_p)
            tokens_BL = tokens_BL.at[:, i].set(token_B)
            if use_cache:
                logits_B1V, cache = apply(token_B[:, None], jnp.full((b, 1), i), cache)
                logits_BV = logits_B1V[:, 0]
                return tokens_BL, logits_BV, cache
            return tokens_BL, None, None

        return jax.lax.fori_loop(p, max_len, body, carry)[0]

    return generate


def make(config: ml_collections.ConfigDict) -> Family:
    """Builds the LM family from `config.model` and `config.data` (tokenizer, seq_len)."""
    model, tokenizer = make_model(config)
    length = config.data.seq_len - 1  # inputs per row; targets are shifted by one
    bits_name = {"byte": "bits_per_byte", "char": "bits_per_char"}.get(
        tokenizer.name, "bits_per_token"
    )
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), jnp.zeros((1, length), jnp.int32)
    )
    # Params only: init also returns the (zero) "perturbations" collection.
    num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract["params"]))
    generate = make_generate(model)

    def init(key: jax.Array, batch: Batch) -> Params:
        # Params stay boxed with logical axis names; the spine shards and unboxes.
        return {"model": model.init(key, batch["tokens"][:, :-1])["params"]}

    def logits(params, batch, key, train: bool) -> jax.Array:
        """Next-token logits for every input position of the rows (packed rows:
        each segment sees only itself, at its own positions)."""
        packed = "segment_ids" in batch
        logits_BLV, _ = model.apply(
            {"params": params["model"]},
            batch["tokens"][:, :-1],
            batch["positions"][:, :-1] if packed else None,
            segment_ids_BL=batch["segment_ids"][:, :-1] if packed else None,
            train=train,
            rngs={"dropout": key},
        )
        return logits_BLV

    def apply(params: Params, batch: Batch, key: jax.Array) -> jax.Array:
        return logits(params, batch, key, train=False)

    def nll(params, batch, key, train: bool) -> jax.Array:
        tokens_BL = batch["tokens"]
        # mask: which tokens are targets (SFT: answer tokens only; 0 on padding).
        mask_BL = (
            batch["mask"][:, 1:] if "mask" in batch else jnp.ones_like(tokens_BL[:, 1:])
        )
        if "segment_ids" in batch:  # no target across a packed boundary
            seg_BL = batch["segment_ids"]
            mask_BL = mask_BL * (seg_BL[:, 1:] == seg_BL[:, :-1])
        logits_BLV = logits(params, batch, key, train)
        nll_BL = optax.softmax_cross_entropy_with_integer_labels(
            logits_BLV, tokens_BL[:, 1:]
        )
        return jnp.sum(nll_BL * mask_BL) / jnp.maximum(jnp.sum(mask_BL), 1)

    def loss(params: Params, batch: Batch, key: jax.Array) -> tuple[jax.Array, Metrics]:
        value = nll(params, batch, key, train=True)
        return value, {bits_name: value / math.log(2)}

    def evaluate(params: Params, batch: Batch, key: jax.Array) -> Metrics:
        value = nll(params, batch, key, train=False)
        return {"model/loss": value, f"model/{bits_name}": value / math.log(2)}

    def sample(params: Params, key: jax.Array, num: int) -> jax.Array:
        """`num` rows of `seq_len` tokens continued from a newline."""
        prompt = jnp.broadcast_to(jnp.asarray(tokenizer.encode("\n")), (num, 1))
        seeds = jax.random.randint(key, (num,), 0, 2**31 - 1)
        return generate(params, prompt, seeds, config.data.seq_len)

    return Family(
        init=init,
        losses={"model": loss},
        sample=sample,
        apply=apply,
        evaluate=evaluate,
        per_example={
            "tokens": length,
            "flops": length * flops_per_token(num_params, model, length),
        },
        text=Text(model, tokenizer),
    )
