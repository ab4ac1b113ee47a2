"""Text-to-image flow matching on the captioned 8x8 digits: fm_digits' flow
DiT with cross-attention on the hidden states of a frozen gen_jax language
model (PixArt-alpha's layout: cross-attention in every block, the pooled
caption added to the adaLN conditioning), no class label: the caption alone
says which digit, how thick, how slanted and how large ("a thick seven
leaning right"; captions.py writes them from the image).

  gen-jax train --config=configs/lm_pydoc.py --workdir=runs/lm_pydoc
  gen-jax train --config=configs/t2i_digits.py --workdir=runs/t2i_digits
  gen-jax sample --workdir=runs/t2i_digits --prompt="a thick seven leaning right"

`config.text.encoder` (default runs/lm_pydoc) may be any LM run, a fine-tune
or a `gen-jax import-hf` workdir: `gen-jax train` copies its model section and
tokenizer from its config.json. `:smoke` pairs with lm_pydoc.py:smoke, as
ldm_digits.py:smoke pairs with its VAE. `latent` (`:latent` or
`:smoke,latent`) trains on vae_latents_digits' latents (ldm_digits' setup),
reading config.latent.autoencoder: the pydoc LM + gen_jax's VAE + a DiT, a
miniature Stable Diffusion.
"""

from configs import base, fm_digits, ldm_digits, lm_pydoc


def get_config(arg: str | None = None):
    arg = base.parse_arg(arg, smoke=False, latent=False)
    variant = "smoke" if arg.smoke else None
    c = ldm_digits.get_config(variant) if arg.latent else fm_digits.get_config()
    encoder = lm_pydoc.get_config(variant)
    c.data.update(name="digits_captions")
    # Captions as the encoder tokenizes them (its keys, copied at train time).
    c.data.tokenizer = encoder.data.tokenizer
    c.data.tokenizer_dir = encoder.data.tokenizer_dir
    c.data.sentencepiece_model = encoder.data.sentencepiece_model
    c.data.caption_len = 64  # the longest caption is 51 bytes
    c.diffusion.conditional = False  # no label: the text says which digit
    c.diffusion.guidance_scale = 2.0  # against the null caption
    c.model.text_conditioning = "cross"
    c.text.update(encoder="runs/lm_pydoc", model=encoder.model.to_dict())
    # Reading the digit and its attributes from an LM's features takes longer
    # than a label: at fm_digits' 2000 steps the held-out loss still falls
    # (0.390 at 1000, 0.355 at 2000) and digit accuracy is 93% (README).
    c.train.update(num_steps=6000, ckpt_every_steps=2000)
    c.evals.heldout.every_steps = 2000
    # Prompt adherence on held-out captions in place of label-cycled quality.
    del c.evals["quality"]
    c.evals.samples.every_steps = c.train.num_steps
    c.evals.prompts = base.prompts_eval(every_steps=c.train.num_steps)

    if arg.smoke:  # again for the latent variant: its prompts eval is new
        base.shrink_for_smoke(c)
    return c
