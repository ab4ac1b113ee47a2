"""nanoGPT's shakespeare-char recipe on tfds tiny_shakespeare (character level).

  python -c "import tensorflow_datasets as tfds; tfds.builder('tiny_shakespeare', \
    data_dir='DATA').download_and_prepare(file_format='array_record')"
  gen-jax train --config=configs/lm_shakespeare_char.py \
    --workdir=runs/shakespeare_char --config.data.data_dir=DATA

6 layers, 6 heads, width 384, block 256, batch 64, dropout 0.2, AdamW lr 1e-3
(beta2 0.99, weight decay 0.1, warmup 100, cosine to 1e-4), 5000 iterations,
LayerNorm + GELU, tied embeddings. Published target (nanoGPT README): val loss
1.4697 after about 3 minutes on one A100. Differences: RoPE instead of learned
positions; consecutive 257-char windows instead of random offsets; tfds's
train/validation split instead of nanoGPT's 90/10 cut.
`:smoke` runs a tiny model on synthetic text in seconds.
"""

from configs import base


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = base.get_config()
    base.lm_defaults(c)
    c.model.update(
        num_layers=6,
        num_heads=6,
        embed_dim=384,
        mlp_dim=1536,
        dropout=0.2,
        norm="layer",
        mlp="gelu",
    )
    c.data.update(
        name="tiny_shakespeare",
        tokenizer="char",
        seq_len=257,
        train_split="train",
        eval_split="validation",
    )
    c.optim.model.update(
        lr=1e-3,
        b2=0.99,
        weight_decay=0.1,
        warmup_steps=100,
        final_lr_ratio=0.1,
        clip_norm=1.0,
    )
    c.train.update(
        num_steps=5000, batch_size=64, log_every_steps=250, ckpt_every_steps=1000
    )
    c.evals.heldout.update(every_steps=250, batch_size=64)

    if arg.smoke:
        base.shrink_for_smoke(c)
    return c
