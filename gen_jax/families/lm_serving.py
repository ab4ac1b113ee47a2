"""The LM's serving programs: `prefill` and `decode` steps over a KV cache of
fixed slots, each returning the tokens it samples with their log-probabilities
and the likeliest alternatives (and prefill, on request, the prompt's own), so
a server's logprobs and echo cost no second forward pass."""

import jax
import jax.numpy as jnp

from gen_jax.families.family import seeded_keys
from gen_jax.families.lm import sample_logits
from gen_jax.models import transformer

# The most alternatives a token's log-probability comes with (vLLM's default
# max_logprobs; OpenAI's chat allows 20 top_logprobs).
TOP_LOGPROBS = 20


def score(logits_NV: jax.Array, chosen_N: jax.Array, k: int) -> dict:
    """log p(chosen) under log_softmax(logits) (the model's own distribution,
    before temperature, top-k or top-p), and the k likeliest tokens with their
    log-probabilities, in float32 (no [N, V] array of log-probabilities)."""
    logits_NV = logits_NV.astype(jnp.float32)
    lse_N1 = jax.nn.logsumexp(logits_NV, axis=-1, keepdims=True)
    chosen_N1 = jnp.take_along_axis(logits_NV, chosen_N[..., None], axis=-1)
    top_NK, ids_NK = jax.lax.top_k(logits_NV, k)
    return {
        "logprob": (chosen_N1 - lse_N1)[..., 0],
        "top_ids": ids_NK.astype(jnp.int32),
        "top_logprobs": top_NK - lse_N1,
    }


def make_serving(model, context: int):
    """The step functions a server drives decoding with, over a KV cache of
    `context` positions per slot (`transformer.init_cache(model, slots, context)`):

    prefill(params, cache, slots_B, prompts_BP, lengths_B, seeds_B, temperature_B,
            top_k_B, top_p_B, score_prompt_B) -> (out, cache): right-padded
        prompts written into cache rows `slots_B`, each one's first token
        sampled; out = {token [B], logprob [B], top_ids [B, K], top_logprobs
        [B, K], prompt_logprob [B, P], prompt_top_ids [B, P, K],
        prompt_top_logprobs [B, P, K]}, position j of the prompt scored by the
        logits at j - 1 (position 0, and every row when no score_prompt_B is
        1, zeros: computed only when asked);
    decode(window)(params, cache, tokens_S, positions_S, seeds_S, temperature_S,
           top_k_S, top_p_S) -> (out, cache): every slot's token at its position
        in (all positions < window); out = {token, logprob, top_ids,
        top_logprobs} of the token after it.

    K = min(TOP_LOGPROBS, vocabulary). Token i of a sequence is sampled with
    fold_in(key(seed), i), as in `lm.make_generate`: a slot's tokens do not
    depend on the other slots."""
    k = min(TOP_LOGPROBS, model.vocab_size)

    def apply(params, *args, **kwargs):
        return model.apply({"params": params["model"]}, *args, **kwargs)

    def prefill(params, cache, slots_B, prompts_BP, lengths_B, seeds_B, *rest):
        *controls, score_prompt_B = rest
        b, p = prompts_BP.shape
        positions_BP = jnp.broadcast_to(jnp.arange(p), (b, p))
        # A fresh cache as long as the prompts; positions past a prompt's length
        # hold padding, which decoding overwrites before a query can see it.
        logits_BPV, new = apply(
            params, prompts_BP, positions_BP, transformer.init_cache(model, b, p)
        )
        last_BV = jnp.take_along_axis(
            logits_BPV, (lengths_B - 1)[:, None, None], axis=1
        )[:, 0]
        token_B = sample_logits(last_BV, seeded_keys(seeds_B, lengths_B), *controls)

        def prompt_scores(logits_BPV):  # position j scored by the logits at j - 1
            # Gathers, not slices: p is symbolic in the exported program.
            j = jnp.arange(p)
            after_BP = prompts_BP[:, jnp.minimum(j + 1, p - 1)]
            scores = score(logits_BPV, after_BP, k)  # [:, j]: position j + 1's
            shift = lambda x: jnp.where(
                (j > 0).reshape(1, p, *[1] * (x.ndim - 2)),
                x[:, jnp.maximum(j - 1, 0)],
                0,
            ).astype(x.dtype)
            return {f"prompt_{name}": shift(x) for name, x in scores.items()}

        unscored = lambda logits_BPV: jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype),
            jax.eval_shape(prompt_scores, logits_BPV),
        )
        out = jax.lax.cond(
            jnp.any(score_prompt_B > 0), prompt_scores, unscored, logits_BPV
        )

        def write(
            c, n
        ):  # the prompt's positions (axis T of [.., T, G, K]) into its slot
            rows = jax.lax.dynamic_update_slice_in_dim(c[slots_B], n, 0, c.ndim - 3)
            return c.at[slots_B].set(rows)

        out |= {"token": token_B, **score(last_BV, token_B, k)}
        return out, jax.tree.map(write, cache, new)

    def decode(window: int):
        def step(params, cache, tokens_S, positions_S, seeds_S, *controls):
            logits_S1V, cache = apply(
                params,
                tokens_S[:, None],
                positions_S[:, None],
                cache,
                cache_window=window if window < context else 0,
            )
            logits_SV = logits_S1V[:, 0]
            next_S = sample_logits(
                logits_SV, seeded_keys(seeds_S, positions_S + 1), *controls
            )
            return {"token": next_S, **score(logits_SV, next_S, k)}, cache

        return step

    return prefill, decode
