"""The four reference shapes of the speed comparison (issue 6), as config overrides.

Each entry is a config file and the `--config.*` overrides that reach the shape
on synthetic data, so `gen-jax bench` and the PyTorch peers time the same model.
"""

REFERENCE = {
    # 4 layers, 4 heads, width 256, block 256, batch 16, vocab 65, AdamW + clipping.
    "lm": (
        "configs/lm_shakespeare_char.py",
        [
            "--config.data.name=synthetic",
            "--config.model.num_layers=4",
            "--config.model.num_heads=4",
            "--config.model.embed_dim=256",
            "--config.model.mlp_dim=1024",
            "--config.model.dropout=0.0",
            "--config.data.seq_len=257",
            "--config.train.batch_size=16",
        ],
    ),
    # DCGAN 32x32x3, nz 100, 64 base channels, batch 64, one D and one G update.
    "gan": (
        "configs/gan_cifar10.py:dcgan",
        # float32 like the peer (the recipe computes in bf16 on accelerators).
        [
            "--config.data.name=synthetic",
            "--config.train.batch_size=64",
            "--config.model.dtype=float32",
        ],
    ),
    # 28x28x1, conv 32-64 (k4 s2), fc 256, 20 latents, batch 128, Adam.
    "vae": (
        "configs/vae_mnist.py",
        ["--config.data.name=synthetic", "--config.train.batch_size=128"],
    ),
    # UNet 32x32x3, ch 64, mult (1,2), one res block per level, attention at
    # 16x16, batch 32, Adam.
    "diffusion": (
        "configs/ddpm_cifar10.py",
        [
            "--config.data.name=synthetic",
            "--config.model.dtype=float32",  # as the peer (the recipe: bf16)
            "--config.model.channels=64",
            "--config.model.channel_mults=(1,2)",
            "--config.model.num_res_blocks=1",
            "--config.model.attention_resolutions=(16,)",
            "--config.train.batch_size=32",
        ],
    ),
}
