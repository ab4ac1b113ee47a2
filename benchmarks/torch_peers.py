"""PyTorch eager peers of gen_jax's four models, for the speed comparison (issue 6).

Each `build_<family>` returns (models, step_fn, batch) at the shapes of
benchmarks/reference.py: the same layers, widths, norms, activations and
parameter counts as gen_jax's model, and a `step_fn(batch)` that does the work
of gen_jax's train step (loss, backward, global-norm clipping where the config
clips, Adam(W), then the EMA of all params). Inputs are synthetic.

  python -m benchmarks.torch_peers --family=lm --steps=20 --warmup=3 \
    [--threads=2] [--out=bench.jsonl]
  python -m benchmarks.torch_peers --check_params  # torch vs gen_jax counts

torch is only needed here; it is not a dependency of the gen_jax package.
"""

import argparse
import datetime
import functools
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- shared training pieces ----


def _adamw(params, impl: str, lr: float, betas, weight_decay: float = 0.0):
    """torch AdamW, as optax.adamw (eps 1e-8; weight_decay 0 makes it Adam)."""
    kw = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    return torch.optim.AdamW(
        params, lr=lr, betas=betas, eps=1e-8, weight_decay=weight_decay, **kw
    )


def _update(params, opt, loss, clip_norm: float) -> None:
    """One optimizer update; clip_norm > 0 clips the global norm first."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm > 0:
        nn.utils.clip_grad_norm_(params, clip_norm)
    opt.step()


class EMA:
    """gen_jax/step.py's EMA of all params, decay min(decay, (1 + n) / (10 + n))."""

    def __init__(self, modules, decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.ema = [p.detach().clone() for p in self.params]
        self.decay, self.step = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        torch._foreach_lerp_(self.ema, self.params, 1 - decay)
        self.step += 1


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """layers.group_norm: gcd(groups, channels) groups, flax's epsilon."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def _images(batch_size: int, channels: int, size: int) -> dict:
    return {"image": torch.rand(batch_size, channels, size, size) * 2 - 1}


# ---- LM: gen_jax/models/transformer.py, families/lm.py ----


def _rope(x, cos, sin):
    """Rotates channel pairs (i, i + K/2) of x [B, H, L, K] (attention.rope)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    """Pre-norm block: LayerNorm, fused bias-free qkv, RoPE, causal attention,
    bias-free output; LayerNorm, up, GELU (tanh, as flax), down. No dropout
    layers: the reference's rate is 0, where flax's Dropout returns its input."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, mlp_dim, bias=False)
        self.down = nn.Linear(mlp_dim, dim, bias=False)

    def forward(self, x, cos, sin):
        b, length, d = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(b, length, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, L, K]
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(out.transpose(1, 2).reshape(b, length, d))
        h = F.gelu(self.up(self.mlp_norm(x)), approximate="tanh")
        return x + self.down(h)


class Transformer(nn.Module):
    """Embedding, blocks, final LayerNorm, logits through the tied embedding."""

    def __init__(self, vocab=65, layers=4, heads=4, dim=256, mlp=1024, max_len=256):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        for m in self.modules():  # gen_jax's normal(0.02) init
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        half = dim // heads // 2  # RoPE angles: constants, as XLA folds them
        freqs = 10_000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
        angles = torch.arange(max_len, dtype=torch.float32)[:, None] * freqs
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, tokens_BL):
        length = tokens_BL.shape[1]
        cos, sin = self.cos[:length], self.sin[:length]
        x = self.embed(tokens_BL)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.final_norm(x) @ self.embed.weight.T  # tied embeddings


def build_lm(batch_size=16, optim_impl="fused", **shape):
    """configs/lm_shakespeare_char.py at the reference shape (rows of 257 tokens):
    AdamW (b2 0.99, weight decay 0.1), clipping 1.0, EMA 0.999."""
    model = Transformer(**shape)
    params = list(model.parameters())
    opt = _adamw(params, optim_impl, 1e-3, (0.9, 0.99), weight_decay=0.1)
    ema = EMA([model], 0.999)

    def step(batch):
        tokens = batch["tokens"]
        logits = model(tokens[:, :-1])  # next-token loss over seq_len - 1
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        _update(params, opt, loss, 1.0)
        ema.update()
        return {"model/loss": loss.detach()}

    shape = (batch_size, len(model.cos) + 1)
    batch = {"tokens": torch.randint(0, model.embed.num_embeddings, shape)}
    return {"model": model}, step, batch


# ---- GAN: gen_jax/models/dcgan.py, families/gan.py ----


class Generator(nn.Module):
    """z -> Dense to 4x4 -> GroupNorm + ReLU, stride-2 4x4 transposed convs -> tanh."""

    def __init__(self, z_dim=100, channels=64, mults=(4, 2, 1), size=32, out=3):
        super().__init__()
        start, width = size // 2 ** len(mults), channels * mults[0]
        self.shape = (width, start, start)
        self.fc = nn.Linear(z_dim, start * start * width)
        net, c = [_group_norm(width, 32), nn.ReLU()], width
        for m in mults[1:]:
            net += [nn.ConvTranspose2d(c, channels * m, 4, 2, 1)]
            net += [_group_norm(channels * m, 32), nn.ReLU()]
            c = channels * m
        self.net = nn.Sequential(*net, nn.ConvTranspose2d(c, out, 4, 2, 1), nn.Tanh())

    def forward(self, z_BZ):
        return self.net(self.fc(z_BZ).view(-1, *self.shape))


class Discriminator(nn.Module):
    """Stride-2 4x4 convs (narrowest first) + LeakyReLU(0.2), flatten, Dense(1)."""

    def __init__(self, channels=64, mults=(4, 2, 1), size=32, in_channels=3):
        super().__init__()
        net, c = [], in_channels
        for m in reversed(mults):
            net += [nn.Conv2d(c, channels * m, 4, 2, 1), nn.LeakyReLU(0.2)]
            c = channels * m
        side = size // 2 ** len(mults)
        self.net = nn.Sequential(*net, nn.Flatten(), nn.Linear(c * side * side, 1))

    def forward(self, x):
        return self.net(x)[:, 0]


def build_gan(batch_size=64, optim_impl="fused", z_dim=100, channels=64, **shape):
    """configs/gan_cifar10.py:dcgan: non-saturating loss, one D then one G update,
    Adam (lr 2e-4, b1 0.5), no clipping, EMA 0.9999 of both networks.
    `channels` is both networks' base width; `shape` takes mults and size."""
    gen = Generator(z_dim, channels, **shape)
    disc = Discriminator(channels, **shape)
    g_params, d_params = list(gen.parameters()), list(disc.parameters())
    g_opt = _adamw(g_params, optim_impl, 2e-4, (0.5, 0.999))
    d_opt = _adamw(d_params, optim_impl, 2e-4, (0.5, 0.999))
    ema = EMA([gen, disc], 0.9999)

    def step(batch):
        real = batch["image"]
        fake = gen(torch.randn(len(real), z_dim))
        real_s, fake_s = disc(torch.cat([real, fake.detach()])).chunk(2)
        d_loss = torch.mean(F.softplus(-real_s) + F.softplus(fake_s))
        _update(d_params, d_opt, d_loss, 0.0)
        disc.requires_grad_(False)  # G's update: no D param grads (as in gen_jax)
        g_loss = torch.mean(F.softplus(-disc(fake)))
        _update(g_params, g_opt, g_loss, 0.0)
        disc.requires_grad_(True)
        ema.update()
        return {"disc/loss": d_loss.detach(), "gen/loss": g_loss.detach()}

    batch = _images(batch_size, 3, shape.get("size", 32))
    return {"gen": gen, "disc": disc}, step, batch


# ---- VAE: gen_jax/models/conv.py ConvVAE, families/vae.py ----


class ConvVAE(nn.Module):
    """Encoder: 4x4 stride-2 SAME convs + GELU, Dense + GELU, Dense to mean and
    log-variance. Decoder: two Dense + GELU, 4x4 stride-2 transposed convs."""

    def __init__(self, channels=(32, 64), hidden=256, latents=20, size=28, image=1):
        super().__init__()
        self.size, self.image = size, image
        gelu = functools.partial(nn.GELU, approximate="tanh")  # flax's nn.gelu
        coarse = size // 2 ** len(channels)
        enc, c = [], image
        for c_out in channels:
            enc += [nn.Conv2d(c, c_out, 4, 2, 1), gelu()]
            c = c_out
        flat = coarse * coarse * c
        enc += [nn.Flatten(), nn.Linear(flat, hidden), gelu()]
        self.encoder = nn.Sequential(*enc, nn.Linear(hidden, 2 * latents))
        dec = [nn.Linear(latents, hidden), gelu(), nn.Linear(hidden, flat), gelu()]
        dec += [nn.Unflatten(1, (c, coarse, coarse))]
        for c_out in reversed(channels[:-1]):
            dec += [nn.ConvTranspose2d(c, c_out, 4, 2, 1), gelu()]
            c = c_out
        self.decoder = nn.Sequential(*dec, nn.ConvTranspose2d(c, image, 4, 2, 1))


def build_vae(batch_size=128, optim_impl="fused", **shape):
    """configs/vae_mnist.py: Bernoulli likelihood, beta 1, Adam lr 1e-3, clipping
    1.0 (configs/base.py's default), EMA 0.999."""
    model = ConvVAE(**shape)
    params = list(model.parameters())
    opt = _adamw(params, optim_impl, 1e-3, (0.9, 0.999))
    ema = EMA([model], 0.999)

    def step(batch):
        x = batch["image"]
        mean, logvar = model.encoder(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = model.decoder(z)
        nll = F.binary_cross_entropy_with_logits(logits, (x + 1) / 2, reduction="none")
        kl = 0.5 * torch.sum(logvar.exp() + mean**2 - 1.0 - logvar, dim=-1)
        loss = torch.mean(nll.sum(dim=(1, 2, 3)) + kl)
        _update(params, opt, loss, 1.0)
        ema.update()
        return {"model/loss": loss.detach()}

    return {"model": model}, step, _images(batch_size, model.image, model.size)


# ---- Diffusion: gen_jax/models/unet.py, layers.py, families/diffusion.py ----


class ResBlock(nn.Module):
    """GroupNorm-swish-conv twice, the time embedding added in between (layers.py)."""

    def __init__(self, c_in, c, emb_dim, dropout, groups):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(c_in, groups), nn.Conv2d(c_in, c, 3, 1, 1)
        self.emb = nn.Linear(emb_dim, c)
        self.norm2, self.drop = _group_norm(c, groups), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)
        nn.init.zeros_(self.conv2.weight)
        self.skip = nn.Conv2d(c_in, c, 1) if c_in != c else nn.Identity()  # Dense

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all pixels, residual (layers.py)."""

    def __init__(self, c, groups):
        super().__init__()
        self.norm = _group_norm(c, groups)
        self.qkv, self.out = nn.Linear(c, 3 * c), nn.Linear(c, c)
        nn.init.zeros_(self.out.weight)

    def forward(self, x):
        b, c, h, w = x.shape
        y = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(y).view(b, h * w, 3, 1, c).permute(2, 0, 3, 1, 4)
        out = self.out(F.scaled_dot_product_attention(q, k, v)[:, 0])
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Res(nn.Module):
    """A ResBlock, then attention when its resolution is listed."""

    def __init__(self, c_in, c, attention: bool, **kw):
        super().__init__()
        self.block = ResBlock(c_in, c, **kw)
        self.attn = AttentionBlock(c, kw["groups"]) if attention else nn.Identity()

    def forward(self, h, emb):
        return self.attn(self.block(h, emb))


class UNet(nn.Module):
    """DDPM's UNet (unet.py) on 3-channel images; dropout 0.1, 32 norm groups."""

    def __init__(self, channels=64, mults=(1, 2), blocks=1, attention=(16,), size=32):
        super().__init__()
        self.channels, self.size, self.image, emb = channels, size, 3, 4 * channels
        self.emb1, self.emb2 = nn.Linear(channels, emb), nn.Linear(emb, emb)
        res = functools.partial(Res, emb_dim=emb, dropout=0.1, groups=32)
        self.conv_in = nn.Conv2d(3, channels, 3, 1, 1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        c, skips = channels, [channels]
        for level, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(res(c, channels * m, size in attention))
                c = channels * m
                skips.append(c)
            if level < len(mults) - 1:  # stride-2 3x3 conv
                self.down.append(nn.Conv2d(c, c, 3, 2, 1))
                skips.append(c)
                size //= 2
        self.mid = nn.ModuleList([res(c, c, True), res(c, c, False)])
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(res(c + skips.pop(), channels * m, size in attention))
                c = channels * m
            if level > 0:  # nearest 2x, then a 3x3 conv
                up = nn.Upsample(scale_factor=2.0, mode="nearest")
                self.up.append(nn.Sequential(up, nn.Conv2d(c, c, 3, 1, 1)))
                size *= 2
        self.out = nn.Sequential(
            _group_norm(c, 32), nn.SiLU(), nn.Conv2d(c, 3, 3, 1, 1)
        )
        nn.init.zeros_(self.out[-1].weight)

    def forward(self, x, t_B):
        half = self.channels // 2  # layers.timestep_embedding
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half) / half)
        args = t_B.float()[:, None] * freqs[None]
        emb = self.emb2(F.silu(self.emb1(torch.cat([args.sin(), args.cos()], -1))))
        h = self.conv_in(x)
        skips = [h]
        for m in self.down:
            h = m(h, emb) if isinstance(m, Res) else m(h)
            skips.append(h)
        h = self.mid[1](self.mid[0](h, emb), emb)
        for m in self.up:
            h = m(torch.cat([h, skips.pop()], 1), emb) if isinstance(m, Res) else m(h)
        return self.out(h)


def build_diffusion(batch_size=32, optim_impl="fused", num_timesteps=1000, **shape):
    """configs/ddpm_cifar10.py at the reference shape: eps prediction MSE, random t
    per example, linear betas 1e-4..0.02, Adam lr 2e-4, clipping 1.0, EMA 0.9999."""
    model = UNet(**shape)
    params = list(model.parameters())
    opt = _adamw(params, optim_impl, 2e-4, (0.9, 0.999))
    ema = EMA([model], 0.9999)
    betas = np.linspace(1e-4, 0.02, num_timesteps, dtype=np.float64)
    abar_T = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)

    def step(batch):
        x0 = batch["image"]
        t_B = torch.randint(0, num_timesteps, (len(x0),))
        eps = torch.randn_like(x0)
        abar = abar_T[t_B][:, None, None, None]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        loss = F.mse_loss(model(x_t, t_B), eps)
        _update(params, opt, loss, 1.0)
        ema.update()
        return {"model/loss": loss.detach()}

    return {"model": model}, step, _images(batch_size, model.image, model.size)


BUILDERS = {
    "lm": build_lm,
    "gan": build_gan,
    "vae": build_vae,
    "diffusion": build_diffusion,
}


def num_params(models: dict) -> int:
    return sum(p.numel() for m in models.values() for p in m.parameters())


# ---- parameter counts against gen_jax ----


def gen_jax_config(family: str):
    """The gen_jax config of `family` at its reference shape (reference.py),
    loaded with the config file and overrides as gen_jax/main.py does."""
    from absl import flags
    from ml_collections import config_flags

    from benchmarks.reference import REFERENCE

    sys.path.insert(0, ROOT)  # the config files import `configs.base`
    path, overrides = REFERENCE[family]
    argv = ["torch_peers", f"--config={os.path.join(ROOT, path)}", *overrides]
    fv = flags.FlagValues()  # the overrides are read from sys_argv
    config_flags.DEFINE_config_file("config", flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config


def check_param_counts() -> dict:
    """{family: (gen_jax, torch)} parameter counts at the reference shapes. The
    LM's gen_jax count is for vocab 65 (the synthetic reference config's own,
    smaller char vocabulary is printed beside it)."""
    import jax

    from gen_jax import data, families, text
    from gen_jax.models import transformer

    count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
    out = {}
    for family, build in BUILDERS.items():
        config = gen_jax_config(family)
        shapes = jax.eval_shape(
            families.make(config).init,
            jax.random.key(0),
            data.dummy_batch(config.data),
        )
        jax_count, note = count(shapes), ""
        if family == "lm":
            kwargs = {k: v for k, v in config.model.items() if k != "name"}
            vocab = text.make_tokenizer(config.data).vocab_size
            note = f" (reference config: vocab {vocab}, {jax_count:,} params)"
            model = transformer.Transformer(vocab_size=65, **kwargs)
            tokens = jax.ShapeDtypeStruct((1, config.data.seq_len - 1), "int32")
            shapes = jax.eval_shape(model.init, jax.random.key(0), tokens)
            jax_count = count(shapes["params"])  # not the "perturbations" entry
        torch_count = num_params(build()[0])
        out[family] = (jax_count, torch_count)
        ok = "ok" if jax_count == torch_count else "MISMATCH"
        print(
            f"{family:9s} gen_jax {jax_count:>10,}  torch {torch_count:>10,}  {ok}{note}"
        )
    return out


# ---- timing harness ----


def _autocast(step_fn):
    """The step under bf16 autocast: matmuls and convolutions (forward, and
    their backward, which follows the forward's dtypes) in bf16, reductions
    and the optimizer's float32 state as autocast leaves them."""

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return step_fn(batch)

    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=sorted(BUILDERS))
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch_size", type=int, help="default: the reference batch")
    p.add_argument(
        "--optim_impl", default="fused", choices=("fused", "foreach", "forloop")
    )
    p.add_argument("--channels_last", action="store_true", help="NHWC image memory")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every model's forward (inductor; backward via AOTAutograd)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="bfloat16: the step under torch.autocast('cpu', bfloat16) (params, "
        "grads and optimizer float32), as gen_jax's model.dtype=bfloat16",
    )
    p.add_argument("--out", default="bench.jsonl", help="appends one JSON line")
    p.add_argument("--check_params", action="store_true", help="compare counts; exit")
    args = p.parse_args(argv)
    if args.check_params:
        counts = check_param_counts()
        sys.exit(0 if all(a == b for a, b in counts.values()) else 1)
    if args.family is None:
        p.error("--family is required")

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    kwargs = {"optim_impl": args.optim_impl}
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    models, step_fn, batch = BUILDERS[args.family](**kwargs)
    if args.dtype == "bfloat16":
        step_fn = _autocast(step_fn)
    if args.channels_last and "image" in batch:
        for m in models.values():
            m.to(memory_format=torch.channels_last)
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    if args.compile:
        # The step functions call model(...), which calls forward: compiling
        # forward compiles each model's forward and backward graphs in place.
        for m in models.values():
            m.forward = torch.compile(m.forward)
    for _ in range(args.warmup):
        step_fn(batch)
    times = []
    for _ in range(args.steps):  # eager CPU torch is synchronous
        start = time.perf_counter()
        metrics = step_fn(batch)
        times.append(time.perf_counter() - start)

    batch_size = len(next(iter(batch.values())))
    p10, median, p90 = np.percentile(times, [10, 50, 90]).tolist()
    tokens = batch_size * (batch["tokens"].shape[1] - 1) if "tokens" in batch else None
    record = {
        "impl": "torch",
        "family": args.family,
        "dtype": args.dtype,
        "batch_size": batch_size,
        "num_params": num_params(models),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "step_s_median": median,
        "step_s_p10": p10,
        "step_s_p90": p90,
        "examples_per_s": batch_size / median,
        "tokens_per_s": tokens / median if tokens else None,
        "torch_version": torch.__version__,
        # The kernels' ISA: torch's bf16 is fast only where the CPU has bf16.
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
        "optim_impl": args.optim_impl,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "loss": {k: float(v) for k, v in metrics.items()},
    }
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    rate = f", {record['tokens_per_s']:,.0f} tokens/s" if tokens else ""
    print(
        f"torch {args.family}: batch {batch_size}, {record['num_params']:,} params, "
        f"{args.threads} threads: median {median * 1e3:.1f} ms/step "
        f"(p10 {p10 * 1e3:.1f}, p90 {p90 * 1e3:.1f}), "
        f"{record['examples_per_s']:,.1f} examples/s{rate} -> {args.out}"
    )


if __name__ == "__main__":
    main()
