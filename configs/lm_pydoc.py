"""Byte-level GPT on CPython's bundled documentation (`pydoc_data.topics`): the
embedded LM default, no download.

  gen-jax train --config=configs/lm_pydoc.py --workdir=runs/lm_pydoc
  gen-jax sample --workdir=runs/lm_pydoc --prompt="The with statement" \
    --max_len=300 --temperature=0.8 --top_k=40

4 layers, 4 heads, width 128, RoPE, 128-byte context, batch 16. Held-out
split: every 10th topic. Expected (2-core CPU, measured 2026-12-02, separate
q/k/v projections): about 3 min 20 s at ~8 steps/s, held-out loss 1.543
nats/byte (2.23 bits/byte) after 1500 steps. `:smoke` runs a few steps in seconds.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    base.lm_defaults(c)
    c.optim.model.update(lr=2e-3, warmup_steps=100, final_lr_ratio=0.1)
    # ~0.2 s/step on 2 CPU cores (about 50 GFLOP/s): 1500 steps take ~5 minutes.
    c.train.num_steps = 1500
    c.train.batch_size = 16
    c.train.log_every_steps = 100
    c.train.ckpt_every_steps = 500
    c.evals.heldout.update(every_steps=500, batch_size=32)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
