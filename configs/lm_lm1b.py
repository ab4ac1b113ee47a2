"""Byte-level GPT on tfds lm1b (One Billion Word), prepared as array_record.

  python -c "import tensorflow_datasets as tfds; \
    tfds.builder('lm1b', data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax train --config=configs/lm_lm1b.py --workdir=runs/lm_lm1b \
    --config.data.data_dir=DATA

8 layers, 8 heads, width 512, SwiGLU, RMSNorm, 256-byte context, batch 256, bf16
compute. For a subword vocabulary pass --config.data.tokenizer=sentencepiece
--config.data.sentencepiece_model=PATH. `:smoke` uses synthetic text.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    base.lm_defaults(c)
    c.model.update(
        num_layers=8,
        num_heads=8,
        embed_dim=512,
        mlp_dim=1408,
        mlp="swiglu",
        dtype="bfloat16",
    )
    c.data.update(name="lm1b", tokenizer="byte", seq_len=257)
    c.optim.model.update(lr=1e-3, warmup_steps=1000, final_lr_ratio=0.1)
    c.train.update(
        num_steps=100_000, batch_size=256, log_every_steps=500, ckpt_every_steps=5000
    )
    c.evals.heldout.update(every_steps=5000, batch_size=256)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
