"""CLIP (Radford et al. 2021) for scoring text-to-image samples: the text and
vision towers and their projections, laid out as Hugging Face's `CLIPModel`
(`params_from_hf` maps its safetensors), so a published checkpoint read from a
local directory gives its own embeddings. Pre-norm blocks with quick-GELU
(openai's), a causal text tower pooled at the first end-of-text token, a ViT
pooled at its class token. Inference only; float32.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


class _Layer(nn.Module):
    """HF's CLIPEncoderLayer: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    heads: int
    mlp_dim: int
    eps: float

    @nn.compact
    def __call__(self, x_BLD, mask_BLL):
        d = x_BLD.shape[-1]
        h = nn.LayerNorm(epsilon=self.eps, name="layer_norm1")(x_BLD)
        q, k, v = (
            nn.Dense(d, name=f"{n}_proj")(h).reshape(*h.shape[:2], self.heads, -1)
            for n in ("q", "k", "v")
        )
        scores = jnp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        scores = jnp.where(mask_BLL[:, None], scores, -jnp.inf)
        out = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(scores, -1), v)
        x_BLD = x_BLD + nn.Dense(d, name="out_proj")(out.reshape(x_BLD.shape))
        h = nn.LayerNorm(epsilon=self.eps, name="layer_norm2")(x_BLD)
        h = nn.Dense(d, name="fc2")(quick_gelu(nn.Dense(self.mlp_dim, name="fc1")(h)))
        return x_BLD + h


class _Tower(nn.Module):
    layers: int
    heads: int
    mlp_dim: int
    eps: float

    @nn.compact
    def __call__(self, x_BLD, mask_BLL):
        for i in range(self.layers):
            x_BLD = _Layer(self.heads, self.mlp_dim, self.eps, name=f"layer_{i}")(
                x_BLD, mask_BLL
            )
        return x_BLD


class CLIP(nn.Module):
    """`text(ids_BL)` and `image(pixels_BHWC)` -> L2-normalised embeddings
    [B, projection_dim]; pixels already normalised with the model's image
    mean and std, at its image size."""

    text_config: dict
    vision_config: dict
    projection_dim: int

    def setup(self):
        t, v = self.text_config, self.vision_config
        eps_t, eps_v = t.get("layer_norm_eps", 1e-5), v.get("layer_norm_eps", 1e-5)
        self.token_embedding = nn.Embed(t["vocab_size"], t["hidden_size"])
        self.text_positions = self.param(
            "text_positions",
            nn.initializers.normal(0.02),
            (t.get("max_position_embeddings", 77), t["hidden_size"]),
        )
        self.text_tower = _Tower(
            t["num_hidden_layers"],
            t["num_attention_heads"],
            t["intermediate_size"],
            eps_t,
        )
        self.final_layer_norm = nn.LayerNorm(epsilon=eps_t)
        self.text_projection = nn.Dense(self.projection_dim, use_bias=False)
        p, d = v["patch_size"], v["hidden_size"]
        self.patch_embedding = nn.Conv(d, (p, p), strides=(p, p), use_bias=False)
        self.class_embedding = self.param(
            "class_embedding", nn.initializers.normal(0.02), (d,)
        )
        patches = (v["image_size"] // p) ** 2
        self.vision_positions = self.param(
            "vision_positions", nn.initializers.normal(0.02), (patches + 1, d)
        )
        self.pre_layernorm = nn.LayerNorm(epsilon=eps_v)
        self.vision_tower = _Tower(
            v["num_hidden_layers"],
            v["num_attention_heads"],
            v["intermediate_size"],
            eps_v,
        )
        self.post_layernorm = nn.LayerNorm(epsilon=eps_v)
        self.visual_projection = nn.Dense(self.projection_dim, use_bias=False)

    def text(self, ids_BL):
        """Ids framed as the tokenizer frames them, padded after their first
        end-of-text token (the pooled position; causal, so padding is unread)."""
        length = ids_BL.shape[1]
        x = self.token_embedding(ids_BL) + self.text_positions[None, :length]
        causal = jnp.tril(jnp.ones((length, length), bool))[None]
        x = self.final_layer_norm(self.text_tower(x, causal))
        eos = jnp.argmax(ids_BL == self.text_config["eos_token_id"], axis=-1)
        pooled = jnp.take_along_axis(x, eos[:, None, None], axis=1)[:, 0]
        return _normalised(self.text_projection(pooled))

    def image(self, pixels_BHWC):
        x = self.patch_embedding(pixels_BHWC)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        cls = jnp.broadcast_to(self.class_embedding, (x.shape[0], 1, x.shape[-1]))
        x = jnp.concatenate([cls, x], axis=1) + self.vision_positions[None]
        everything = jnp.ones((1, x.shape[1], x.shape[1]), bool)
        x = self.vision_tower(self.pre_layernorm(x), everything)
        return _normalised(self.visual_projection(self.post_layernorm(x[:, 0])))

    def __call__(self, ids_BL, pixels_BHWC):
        return self.text(ids_BL), self.image(pixels_BHWC)


def _normalised(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def params_from_hf(tensors: dict[str, np.ndarray], num_layers: dict) -> dict:
    """HF CLIPModel safetensors -> CLIP's params (`num_layers`: {"text": n,
    "vision": m}). Linear weights [out, in] are transposed to Dense kernels;
    the patch conv [D, C, p, p] to [p, p, C, D]."""

    def dense(prefix, bias=True):
        out = {"kernel": tensors[f"{prefix}.weight"].T}
        if bias:
            out["bias"] = tensors[f"{prefix}.bias"]
        return out

    def norm(prefix):
        return {"scale": tensors[f"{prefix}.weight"], "bias": tensors[f"{prefix}.bias"]}

    def tower(prefix, count):
        layers = {}
        for i in range(count):
            p = f"{prefix}.encoder.layers.{i}"
            layer = {
                n: dense(f"{p}.self_attn.{n}") for n in ("q_proj", "k_proj", "v_proj")
            }
            layer |= {
                "out_proj": dense(f"{p}.self_attn.out_proj"),
                "layer_norm1": norm(f"{p}.layer_norm1"),
                "layer_norm2": norm(f"{p}.layer_norm2"),
                "fc1": dense(f"{p}.mlp.fc1"),
                "fc2": dense(f"{p}.mlp.fc2"),
            }
            layers[f"layer_{i}"] = layer
        return layers

    t, v = "text_model", "vision_model"
    return {
        "token_embedding": {
            "embedding": tensors[f"{t}.embeddings.token_embedding.weight"]
        },
        "text_positions": tensors[f"{t}.embeddings.position_embedding.weight"],
        "text_tower": tower(t, num_layers["text"]),
        "final_layer_norm": norm(f"{t}.final_layer_norm"),
        "text_projection": dense("text_projection", bias=False),
        "patch_embedding": {
            "kernel": tensors[f"{v}.embeddings.patch_embedding.weight"].transpose(
                2, 3, 1, 0
            )
        },
        "class_embedding": tensors[f"{v}.embeddings.class_embedding"],
        "vision_positions": tensors[f"{v}.embeddings.position_embedding.weight"],
        "pre_layernorm": norm(f"{v}.pre_layrnorm"),  # sic: HF's name
        "vision_tower": tower(v, num_layers["vision"]),
        "post_layernorm": norm(f"{v}.post_layernorm"),
        "visual_projection": dense("visual_projection", bias=False),
    }
