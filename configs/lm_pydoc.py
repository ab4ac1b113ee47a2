"""Byte-level GPT on CPython's bundled documentation (`pydoc_data.topics`): the
embedded LM default, no download.

  python -m gen_jax.main --config=configs/lm_pydoc.py --workdir=runs/lm_pydoc
  python -m gen_jax.sample --workdir=runs/lm_pydoc --prompt="The with statement" \
    --max_len=300 --temperature=0.8 --top_k=40

4 layers, 4 heads, width 128, RoPE, 128-byte context, batch 32. Held-out
split: every 10th topic. `:smoke` runs a few steps in seconds.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    base.lm_defaults(c)
    c.optim.model.update(lr=2e-3, warmup_steps=100, final_lr_ratio=0.1)
    c.train.num_steps = 2000
    c.train.batch_size = 32
    c.train.log_every_steps = 100
    c.train.ckpt_every_steps = 1000
    c.evals.heldout.update(every_steps=1000, batch_size=32)

    if arg.smoke:
        c.model.update(num_layers=1, num_heads=2, embed_dim=16, mlp_dim=32)
        c.data.seq_len = 17
        base.shrink_for_smoke(c)
    return c
