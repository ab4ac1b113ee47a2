"""Text-to-image on COCO captions at PixArt-alpha's 256 px shapes (Chen et al.
2023): a DiT-XL/2 (28 blocks, width 1152, 16 heads, patch 2) on the 32x32x4
latents of vae_coco's autoencoder, cross-attending in every block to 120
caption tokens of a frozen language model, flow matching (SD3's logit-normal
t), AdamW at 2e-5, batch 256. For accelerators.

  gen-jax import-hf --hf_dir=SmolLM2-135M --workdir=runs/smollm2
  gen-jax train --config=configs/vae_coco.py --workdir=runs/vae_coco \
    --config.data.data_dir=DIR
  gen-jax train --config=configs/t2i_coco.py --workdir=runs/t2i_coco \
    --config.data.data_dir=DIR
  gen-jax sample --workdir=runs/t2i_coco --prompt="a red bus on a city street"

`config.text.encoder` (default runs/smollm2, any gen_jax LM run or import-hf
workdir) and `config.latent.autoencoder` (default runs/vae_coco) are read at
step 0; `gen-jax train` copies the encoder's model section and tokenizer.
`:smoke` runs a few steps of tiny models on synthetic captioned images,
pairing with vae_coco.py:smoke and lm_pydoc.py:smoke.
"""

from configs import base, fm_digits, lm_pydoc, vae_coco


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False)
    c = fm_digits.get_config()  # flow matching on a DiT, its sampler
    c.model.update(
        patch_size=2, num_layers=28, num_heads=16, embed_dim=1152, mlp_ratio=4
    )
    c.model.text_conditioning = "cross"
    c.model.dtype = "bfloat16"
    autoencoder = vae_coco.get_config("smoke" if arg.smoke else None)
    c.data = autoencoder.data
    c.data.tokenizer = "hf"  # the encoder's: copied from its run at train time
    c.data.tokenizer_dir = ""
    c.data.sentencepiece_model = ""
    c.data.caption_len = 120  # PixArt-alpha's T5 tokens
    c.latent.update(
        autoencoder="runs/vae_coco",
        model=autoencoder.model.to_dict(),
        likelihood=autoencoder.vae.likelihood,
    )
    c.diffusion.update(conditional=False, guidance_scale=4.5)  # PixArt's default
    c.text.update(encoder="runs/smollm2", model={})
    c.optim.model.update(lr=2e-5, weight_decay=0.03, warmup_steps=1000)
    c.train.update(num_steps=200_000, batch_size=256, ckpt_every_steps=5000)
    c.train.ema_decay = 0.9999
    c.evals = {"heldout": base.heldout_eval(every_steps=5000, batch_size=64)}
    c.evals.samples = base.samples_eval(every_steps=5000, num_samples=64)
    # CLIP score on validation captions: a local copy of openai's ViT-B/32.
    c.evals.clip = base.clip_eval(
        every_steps=20_000, weights="runs/clip-vit-base-patch32", split="val"
    )

    if arg.smoke:
        encoder = lm_pydoc.get_config("smoke")
        c.data.tokenizer = encoder.data.tokenizer
        c.text.update(encoder="runs/lm_pydoc", model=encoder.model.to_dict())
        c.model.dtype = "float32"
        c.latent.scale_batches = 2
        base.shrink_for_smoke(c)
        c.data.caption_len = 32
    return c
