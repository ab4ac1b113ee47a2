"""A SmolLM2-135M-shaped decoder with random weights, for timing only: 30 layers,
width 576, 9 query / 3 kv heads of 64, SwiGLU 1536, vocab 49152, tied.

  gen-jax bench --config=configs/lm_smollm2_shape.py --timed_steps=3 --warmup_steps=1
  gen-jax bench --config=configs/lm_smollm2_shape.py:lora --timed_steps=3 --warmup_steps=1
  gen-jax train --config=configs/lm_smollm2_shape.py:smoke --workdir=runs/smollm2_smoke

`lora` trains rank-8 adapters on every attention and MLP kernel (the base
frozen) instead of every weight. Rows of 256 byte tokens from the synthetic
source (the vocabulary stays SmolLM2's 49152). Expected: the README's
fine-tuning table.
"""

from configs import base, lm_pydoc


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False, lora=False)
    c = lm_pydoc.get_config()
    c.model.update(
        vocab_size=49152,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        head_dim=64,
        embed_dim=576,
        mlp_dim=1536,
        mlp="swiglu",
        norm_eps=1e-5,
        rope_theta=100000.0,
    )
    c.data.update(name="synthetic", seq_len=257)
    c.train.update(batch_size=4, num_steps=200)
    c.lora.update(targets=r"block_\d+/(q|k|v|attn_out|gate|up|down)", alpha=16.0)
    if arg.lora:
        c.lora.rank = 8
    c.evals = {}
    if arg.smoke:
        base.shrink_for_smoke(c)
        c.model.vocab_size = 0
    return c
