"""LoRA supervised fine-tuning of the `lm_pydoc` byte-level GPT on embedded
question / answer pairs (a pydoc topic's title -> its first paragraph; every 10th
topic held out), the loss on answer bytes only, examples packed whole.

  gen-jax train --config=configs/lm_pydoc.py --workdir=runs/lm_pydoc
  gen-jax train --config=configs/sft_pydoc.py --workdir=runs/sft_pydoc
  gen-jax train --config=configs/sft_pydoc.py:full --workdir=runs/sft_pydoc_full

`base=DIR` names the pretrained run (default runs/lm_pydoc); `full` fine-tunes
every weight instead of rank-8 adapters. The held-out answer loss is logged at
step 0 (the base model) and at the end (eval/heldout/model/loss).
Expected: see the README's fine-tuning table. `:smoke` runs a tiny model from
scratch in seconds.
"""

from configs import base, lm_pydoc


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False, full=False, base="runs/lm_pydoc")
    c = lm_pydoc.get_config()
    base.sft_defaults(c, "pydoc_qa")
    c.data.seq_len = 513  # 221 bytes a pair on average; 2 of 79 are truncated
    c.train.init_from = arg.base
    c.train.update(num_steps=100, batch_size=8, log_every_steps=10, ckpt_every_steps=50)
    c.optim.model.update(lr=1e-3, warmup_steps=20, weight_decay=0.0)
    if arg.full:  # every weight trains: a 10x smaller step
        c.lora.rank = 0
        c.optim.model.lr = 1e-4
    c.evals.heldout.update(every_steps=50, batch_size=8)
    if arg.smoke:
        base.shrink_for_smoke(c)
        c.data.seq_len = 129
        c.train.init_from = ""  # the tiny model trains from scratch
        c.evals.heldout.batch_size = 8
    return c
