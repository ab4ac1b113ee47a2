"""Shared defaults for every experiment: every key a run reads, `parse_arg` for
":smoke"-style variants, the evaluator builders, and the smoke shrink."""

import ml_collections
from ml_collections import config_dict

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# Sources that need no download; `:smoke` swaps any other for `synthetic`.
EMBEDDED_SOURCES = ("digits", "digits_captions", "pydoc", "pydoc_qa", "synthetic")


def _convert(name: str, value: str, default):
    """`value` as the type of `default`; strict for bools (bool("no") is True)."""
    if isinstance(default, bool):
        if value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError(
            f"config argument {name}={value!r} is not a bool; "
            f"use one of {', '.join(_TRUE + _FALSE)}"
        )
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(
            f"config argument {name}={value!r} is not a valid {type(default).__name__}"
        ) from None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses "smoke" or "smoke,batch=8" into a ConfigDict over `defaults`; a
    bare name sets a bool argument to True."""
    out = ml_collections.ConfigDict(defaults)
    for item in (arg or "").split(","):
        name, sep, value = item.strip().partition("=")
        if not name:
            continue
        if name not in out:
            raise ValueError(
                f"unknown config argument {name!r}; valid: {', '.join(sorted(out))}"
            )
        if sep:
            out[name] = _convert(name, value, defaults[name])
        elif isinstance(defaults[name], bool):
            out[name] = True
        else:
            raise ValueError(f"config argument {name!r} needs a value: {name}=...")
    return out


def _section(what: str, defaults: dict, overrides: dict) -> ml_collections.ConfigDict:
    """`defaults` with `overrides`, refusing keys the defaults do not declare."""
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"{what}: unknown keys {unknown}; valid: {', '.join(sorted(defaults))}"
        )
    return ml_collections.ConfigDict(defaults | overrides)


def heldout_eval(**overrides) -> ml_collections.ConfigDict:
    """evals.<name> for the mean of every loss metric over the eval split."""
    defaults = {
        "type": "heldout",
        "every_steps": 1000,
        "batch_size": 100,
        "use_ema": True,  # False scores the raw params
        "perplexity": False,  # also exp(mean loss), for LMs
    }
    return _section("heldout_eval", defaults, overrides)


def samples_eval(**overrides) -> ml_collections.ConfigDict:
    """evals.<name> for a grid of EMA samples (and reconstructions, if any)."""
    defaults = {"type": "samples", "every_steps": 1000, "num_samples": 64}
    return _section("samples_eval", defaults, overrides)


def quality_eval(
    features: str = "digits_classifier", **overrides
) -> ml_collections.ConfigDict:
    """evals.<name> for sample quality (Fréchet distance, KID, IS, precision /
    recall) of EMA samples against a real split."""
    defaults = {
        "type": "quality",
        "every_steps": 1000,
        "num_samples": 1000,
        "batch_size": 100,
        # digits_classifier (embedded 8x8 digits) | classifier (weights: an
        # exported classifier .npz) | inception (weights: its .npz)
        "features": features,
        "weights": "",  # "" = the default file of `features`
        "kid_subset_size": 1000,
        "pr_k": 3,  # k-NN radius for precision / recall
        "reference_split": "",  # "" = data.train_split
        "compare_split": "",  # a real split in place of samples: the floor
    }
    return _section("quality_eval", defaults, overrides)


# The tiny model of each family that `:smoke` variants train.
SMOKE_MODELS = {
    "vae": {"channels": (8, 16), "hidden": 32, "latents": 4},
    "diffusion": {
        "channels": 8,
        # One level (no down/up sampling: tests/test_models.py covers those):
        # compiling the train step is most of a smoke run, and each level adds
        # its convolutions and their gradients to it.
        "channel_mults": (1,),
        "num_res_blocks": 1,
        "norm_groups": 8,
    },
    "dit": {"num_layers": 1, "num_heads": 2, "embed_dim": 16},
    "classifier": {"channels": (8, 16), "features": 16},
    "gan": {"z_dim": 8, "gen_channels": 8, "disc_channels": 8},
    "lm": {
        "num_layers": 1,
        "num_heads": 2,
        "num_kv_heads": 0,
        "head_dim": 0,
        "embed_dim": 16,
        "mlp_dim": 32,
        "dtype": "float32",
    },
}


def shrink_for_smoke(c: ml_collections.ConfigDict, num_steps: int = 6) -> None:
    """Every `:smoke` variant: the family's tiny model and a few steps with tiny
    batches that still pass through every log, checkpoint and eval path."""
    if c.data.name not in EMBEDDED_SOURCES:
        c.data.name = "synthetic"  # the same shapes, no download
    # Keyed by family, or by model where a family has several (a DiT denoiser).
    c.model.update(SMOKE_MODELS.get(c.model.get("name"), SMOKE_MODELS[c.family]))
    if c.family == "diffusion" and c.model.name == "unet":
        c.model.attention_resolutions = (c.data.image_size,)
        c.diffusion.sample_steps = 4
    if c.family == "diffusion" and c.diffusion.objective == "ddpm":
        # T=40: room for the README's 20-step samplers; a longer T costs only
        # the ddpm sampler's loop length, nothing to compile. ddpm's keys, so
        # set only under ddpm: the other objectives refuse them.
        c.diffusion.update(num_timesteps=40, eval_timesteps=4)
    if c.family == "lm":
        c.data.seq_len = 17
    for role in c.optim:
        c.optim[role].warmup_steps = 2
    c.train.update(
        num_steps=num_steps,
        batch_size=16,
        log_every_steps=2,
        ckpt_every_steps=num_steps // 2,
    )
    for name, e in list(c.evals.items()):  # their weights are files users supply
        if e.type == "clip" or e.get("features", "digits_classifier") != (
            "digits_classifier"
        ):
            del c.evals[name]
    for e in c.evals.values():
        e.every_steps = num_steps
        e.update({k: 16 for k in ("batch_size", "num_samples") if k in e})


def prompts_eval(**overrides) -> ml_collections.ConfigDict:
    """evals.<name> for a text-to-image run's prompt adherence on captioned
    digits: EMA samples from held-out captions, their digit accuracy, attribute
    accuracy and Fréchet distance to the real split."""
    defaults = {
        "type": "prompts",
        "every_steps": 1000,
        # Captions of held-out images (captions.py): in trained phrasings,
        # in whole phrasings never trained on, and stating digit x attribute
        # pairs never stated together in training. Add "train" for a Fréchet
        # distance that compares with a class-conditional run's: its
        # captions follow the reference split as cycled labels do ("test"'s
        # follow its 300 images, themselves ~7 from the train split).
        "splits": ("test", "heldout_phrasings", "heldout_combos"),
        # Per split; past a split's size its images come round in their
        # next phrasing.
        "num_samples": 1000,
        "batch_size": 100,
        "guidance": -1.0,  # < 0: the run's diffusion.guidance_scale
        "features": "digits_classifier",
        "weights": "",
        "reference_split": "",  # "" = data.train_split
    }
    return _section("prompts_eval", defaults, overrides)


def clip_eval(**overrides) -> ml_collections.ConfigDict:
    """evals.<name> for a text-to-image run's CLIP score: EMA samples from a
    split's captions, scored against them by a local Hugging Face CLIP."""
    defaults = {
        "type": "clip",
        "every_steps": 1000,
        "weights": "",  # a local HF CLIP directory (config.json, safetensors)
        "split": "val",
        "num_samples": 1000,
        "batch_size": 50,
        "guidance": -1.0,  # < 0: the run's diffusion.guidance_scale
    }
    return _section("clip_eval", defaults, overrides)


def lm_defaults(c: ml_collections.ConfigDict) -> None:
    """The LM's model and data fields (a small GPT on the embedded text)."""
    c.family = "lm"
    c.model = ml_collections.ConfigDict(
        {
            "name": "transformer",
            "vocab_size": 0,  # 0 = the tokenizer's (published models pad it)
            "num_layers": 4,
            "num_heads": 4,
            "num_kv_heads": 0,  # grouped-query attention; 0 = num_heads
            "head_dim": 0,  # 0 = embed_dim // num_heads
            "embed_dim": 128,
            "mlp_dim": 512,
            "dropout": 0.0,
            "norm": "rms",
            "norm_eps": 1e-6,
            "mlp": "gelu",
            "qkv_bias": False,  # Qwen2
            "qk_norm": False,  # Qwen3
            "rope_theta": 10_000.0,
            # (factor, low_freq_factor, high_freq_factor, original_max_len)
            "rope_llama3": (),
            "tie_embeddings": True,
            "remat": False,
            "remat_policy": "nothing",  # nothing | dots | everything (with remat)
            "scan_layers": False,  # nn.scan over the blocks: compile time flat in depth
            "dtype": "float32",
        }
    )
    c.data.name = "pydoc"  # pydoc | synthetic | tiny_shakespeare | lm1b
    c.data.tokenizer = "byte"  # byte | char | sentencepiece | hf
    c.data.sentencepiece_model = ""
    c.data.tokenizer_dir = ""  # hf: tokenizer.json (+ tokenizer_config.json) here
    c.data.seq_len = 129  # tokens per row: 128 inputs, targets shifted by one
    c.optim.model.update(weight_decay=0.1, b2=0.99)
    c.evals.heldout = heldout_eval(batch_size=32, perplexity=True)


def sft_defaults(c: ml_collections.ConfigDict, name: str = "pydoc_qa") -> None:
    """Supervised fine-tuning data over an LM config: conversations packed whole,
    the loss on answer tokens only, LoRA on every attention and MLP kernel, and
    the held-out loss measured before the first step too."""
    c.data.name = name  # pydoc_qa (embedded) | jsonl
    c.data.train_file = ""  # jsonl: {"messages": [...]} or {"prompt", "completion"}
    c.data.eval_file = ""
    c.data.overlong = "truncate"  # examples longer than seq_len: truncate | drop
    c.lora.update(
        rank=8, alpha=16.0, targets=r"block_\d+/(q|k|v|attn_out|gate|up|down)"
    )
    c.train.eval_at_start = True
    c.train.ema_decay = 0.0  # a short fine-tune: the EMA is the weights as trained


def gan_defaults(c: ml_collections.ConfigDict) -> None:
    """The GAN's loss fields, and one optimizer per role (no `optim.model`)."""
    c.family = "gan"
    c.gan = ml_collections.ConfigDict(
        {
            "loss": "hinge",  # non_saturating | hinge | wgan_gp
            "conditional": False,  # on data.num_classes labels (projection critic)
            "disc_steps": 1,  # discriminator updates per generator update
            "r1_gamma": 0.0,  # R1 weight (0: off); penalty = gamma / 2 E|grad D|^2
            "r1_every": 1,  # > 1: lazy R1, its own update every n steps
            "gp_weight": 10.0,  # WGAN-GP's lambda
        }
    )
    # DCGAN's Adam (lr 2e-4, beta1 0.5), constant rate, no clipping.
    role = dict(c.optim.model) | {
        "lr": 2e-4,
        "b1": 0.5,
        "warmup_steps": 0,
        "final_lr_ratio": 1.0,
        "clip_norm": 0.0,
    }
    del c.optim["model"]
    c.optim.disc, c.optim.gen = dict(role), dict(role)


def diffusion_defaults() -> ml_collections.ConfigDict:
    """`config.diffusion`: the objective (DDPM's process by default: T=1000,
    linear betas 1e-4..0.02), its samplers and guidance.

    One flat section in four groups: the shared keys, then those of one
    objective each (ddpm, edm, flow). A key of another objective than the
    run's must keep its default (make time fails naming it). Each objective's
    valid samplers are its record's `samplers`, in
    gen_jax/families/diffusion_objectives.py (a wrong one fails naming them)."""
    return ml_collections.ConfigDict(
        {
            # Shared by every objective.
            "objective": "ddpm",  # ddpm | edm | flow
            "conditional": False,  # on data.num_classes labels, + a null label
            "label_dropout": 0.1,  # null-label rate, for classifier-free guidance
            "guidance_scale": 1.0,  # 1 = the conditional model
            "sampler": "ddim",  # one of the objective's samplers (see above)
            # ddpm's sampler always uses T; heun to sigma = 0 makes 2 steps - 1
            # model calls, midpoint 2 per step, the others 1.
            "sample_steps": 50,
            # Guidance only at EDM-equivalent noise levels sigma / alpha in
            # (lo, hi] (Kynkäänniemi et al. 2024); (): everywhere.
            "guidance_interval": (),
            # ddpm only (Ho et al. 2020).
            "num_timesteps": 1000,
            "schedule": "linear",  # linear | cosine
            "beta_start": 1e-4,
            "beta_end": 0.02,
            "prediction": "eps",  # eps | x0 | v
            "loss": "simple",  # simple | vlb
            "variance": "small",  # p(x_{t-1}|x_t) variance: small (beta~) | large
            "ddim_eta": 0.0,
            "eval_timesteps": 50,  # stratified timesteps per image for bits/dim
            # edm only (Karras et al. 2022).
            "sigma_data": 0.5,
            "p_mean": -1.2,  # training ln sigma ~ N(p_mean, p_std^2)
            "p_std": 1.2,
            "sigma_min": 0.002,  # the sampler's sigma grid, rho-spaced
            "sigma_max": 80.0,
            "rho": 7.0,
            "churn": 0.0,  # EDM's S_churn (0: the deterministic sampler)
            "churn_min": 0.0,  # S_tmin, S_tmax: the sigma range churned
            "churn_max": 1e9,
            "churn_noise": 1.0,  # S_noise
            # flow only: training t ~ uniform | logit_normal (mean, std; SD3: 0, 1).
            "timesteps": "logit_normal",
            "t_mean": 0.0,
            "t_std": 1.0,
        }
    )


def vae_defaults() -> ml_collections.ConfigDict:
    """`config.vae`: the decoder's likelihood and the KL weight."""
    return ml_collections.ConfigDict(
        {
            "likelihood": "bernoulli",  # bernoulli | gaussian
            "beta": 1.0,  # KL weight (1: the ELBO)
            "gaussian_scale": 0.1,  # the gaussian likelihood's fixed std
        }
    )


def get_config() -> ml_collections.ConfigDict:
    """Defaults shared by all families; experiment files override what differs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.family = ""
    c.model = ml_collections.ConfigDict({"name": ""})

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # digits | synthetic | any tfds name (mnist, ...)
    c.data.data_dir = config_dict.placeholder(str)  # tfds array_record data
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.image_size = 8
    c.data.channels = 1
    # The one label count. Models take `num_classes` from here, never from
    # config.model: a conditional family passes it (0 when `<family>.conditional`
    # is False), so the data's labels and the model's embedding cannot disagree,
    # and config.model stays the network's kwargs.
    c.data.num_classes = 10
    c.data.shuffle_seed = 0
    c.data.prefetch = 2  # batches buffered by a host thread; 0 disables
    c.data.synthetic_size = 4096  # examples in the synthetic source

    # One section per role; a role without a section here uses `optim.model`.
    c.optim = ml_collections.ConfigDict()
    c.optim.model = ml_collections.ConfigDict(
        {
            "lr": 1e-3,
            "b1": 0.9,
            "b2": 0.999,
            "weight_decay": 0.0,
            "warmup_steps": 100,
            "final_lr_ratio": 0.1,
            "clip_norm": 1.0,
        }
    )

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 128  # global, across all processes
    c.train.log_every_steps = 50
    c.train.ckpt_every_steps = 500
    c.train.keep_checkpoints = 3
    c.train.ema_decay = 0.999
    c.train.init_from = ""  # a workdir or checkpoint dir: load params only
    c.train.eval_at_start = False  # run the evaluators before the first step too
    # For MFU (families that count FLOPs): datasheet peak FLOP/s per device,
    # or -1 to time a float32 matmul once at start.
    c.train.peak_flops_per_device = -1.0

    c.evals = ml_collections.ConfigDict()

    # LoRA (rank > 0): the model's params frozen, low-rank adapters trained on
    # the Dense kernels matched by `targets` (a regex over module paths such as
    # "block_0/q") or carrying a logical axis in `target_axes` ("mlp", "heads").
    c.lora = ml_collections.ConfigDict(
        {
            "rank": 0,
            "alpha": 16.0,  # the adapter's output is scaled by alpha / rank
            "dropout": 0.0,  # on the adapter's input, training only
            "targets": "",
            "target_axes": (),
            "base_dtype": "float32",  # bfloat16 halves the frozen base's memory
        }
    )

    # Latent diffusion (families/latent.py): with `autoencoder` set, the
    # diffusion family trains on that VAE run's latents.
    c.latent = ml_collections.ConfigDict(
        {
            "autoencoder": "",  # a VAE run's workdir; "": on pixels
            # That run's config.model, repeated: this run's shapes are fixed
            # before any checkpoint is read.
            "model": {},
            "likelihood": "bernoulli",  # that run's vae.likelihood (its decoder's)
            # Training batches whose posterior means set the latent scale.
            "scale_batches": 10,
            "scale": 0.0,  # filled at step 0: 1 / std of those means
        }
    )

    # Text-to-image (families/text_encoder.py): with `encoder` set, the
    # diffusion family reads captions ("text_tokens" of a captioned source,
    # whose data section names the encoder's tokenizer and `caption_len`)
    # through that frozen LM's hidden states.
    c.text = ml_collections.ConfigDict(
        {
            "encoder": "",  # a language-model run's workdir; "": no text
            # That run's config.model, repeated (gen-jax train copies it, and
            # its tokenizer keys into config.data, from the run's config.json).
            "model": {},
            # Blocks whose output is read, through the final norm: -1 all of
            # them (the last hidden state), k the first k (an earlier layer).
            "layer": -1,
            # Captions replaced by the null caption in training, so the same
            # network is the unconditional model of classifier-free guidance.
            "drop_prob": 0.1,
        }
    )

    # -1 takes all remaining devices. Batches split over (data, fsdp). Params
    # with logical axis names follow sharding.LOGICAL_RULES (fsdp, tensor); the
    # others are sharded over fsdp when they have >= fsdp_min_size elements.
    c.mesh = ml_collections.ConfigDict(
        {"data": -1, "fsdp": 1, "tensor": 1, "fsdp_min_size": 2**14}
    )
    return c
