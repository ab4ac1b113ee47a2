"""Feature extractors for the sample-quality metrics, and the cached features of real data.

`digits_classifier` is the project's own classifier of the embedded 8x8 digits
(shipped in gen_jax/assets); `classifier` loads one a user trained (e.g. on tfds
mnist, configs/classifier_mnist.py); `inception` is InceptionV3 (pool3, logits)
from a local weights file, for published-comparable FID / IS.
"""

import hashlib
import json
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from etils import epath

from gen_jax import data

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
DIGITS_CLASSIFIER = os.path.join(ASSETS, "digits_classifier.npz")
# images_NHWC in [-1, 1] -> (features_ND, logits_NV), as numpy.
Extractor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def save_classifier(workdir: str, path: str) -> None:
    """Writes a trained classifier run (EMA params + model fields) as one .npz."""
    from flax import traverse_util

    from gen_jax import checkpoint

    run = checkpoint.open_run(workdir)
    config = run.config
    if run.family.images or run.family.text:  # a classifier makes neither
        raise ValueError(f"{workdir!r} trains {config.family!r}, not a classifier")
    params = jax.device_get(run.params["model"])
    flat = traverse_util.flatten_dict(params, sep="/")  # _load_classifier's inverse
    meta = {
        # The classifier's label count comes from the data (configs/base.py).
        "model": config.model.to_dict() | {"num_classes": config.data.num_classes},
        "image_shape": [config.data.image_size] * 2 + [config.data.channels],
        "data": config.data.name,
    }
    np.savez(path, __meta__=json.dumps(meta), **flat)


def _load_classifier(path: str) -> tuple[Extractor, tuple[int, ...]]:
    from flax import traverse_util

    from gen_jax.models import MODELS

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"classifier weights {path!r} not found. Train one and export it: "
            "gen-jax train --config=configs/classifier_mnist.py "
            "--workdir=runs/classifier_mnist && gen-jax export-classifier "
            f"--workdir=runs/classifier_mnist --out={path}"
        )
    with np.load(path) as f:
        meta = json.loads(str(f["__meta__"]))
        flat = {tuple(k.split("/")): f[k] for k in f.files if k != "__meta__"}
    kwargs = {k: v for k, v in meta["model"].items() if k != "name"}
    model = MODELS[meta["model"]["name"]](**kwargs)
    params = traverse_util.unflatten_dict(flat)
    fn = jax.jit(lambda x: model.apply({"params": params}, x))
    return lambda x: jax.device_get(fn(x)), tuple(meta["image_shape"])


def _load_inception(path: str) -> Extractor:
    from gen_jax.models import inception

    params = inception.load_params(os.path.expanduser(path))
    model = inception.InceptionV3()
    fn = jax.jit(lambda x: model.apply({"params": params}, x))
    return lambda x: jax.device_get(fn(x))


def make(kind: str, weights: str, data_cfg: ml_collections.ConfigDict) -> Extractor:
    """The extractor `kind` (digits_classifier | classifier | inception) for
    images shaped like `data_cfg`'s."""
    shape = (data_cfg.image_size, data_cfg.image_size, data_cfg.channels)
    if kind == "inception":
        from gen_jax.models import inception

        return _load_inception(weights or inception.DEFAULT_WEIGHTS)
    if kind not in ("digits_classifier", "classifier"):
        raise ValueError(
            f"unknown evals features {kind!r}; use digits_classifier | "
            "classifier | inception"
        )
    if kind == "classifier" and not weights:
        raise ValueError("features=classifier needs `weights`: a classifier .npz")
    fn, want = _load_classifier(weights or DIGITS_CLASSIFIER)
    if want != shape:
        raise ValueError(
            f"the {kind} features expect images of shape {want}, but this run's "
            f"data is {shape}; use a classifier trained on this data "
            "(features=classifier, weights=...) or features=inception"
        )
    return fn


def extract(fn: Extractor, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits of a list of image batches, concatenated."""
    outs = [fn(x) for x in images]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def real_features(
    fn: Extractor,
    data_cfg: ml_collections.ConfigDict,
    split: str,
    *,
    batch_size: int,
    cache_key: str,
    cache_dir: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits of every image of `split`, cached as an .npz in
    `cache_dir` (under a name built from `cache_key` and the data config)."""
    tag = json.dumps([cache_key, split, data_cfg.to_dict()], sort_keys=True)
    name = f"{data_cfg.name}_{split}_{hashlib.sha1(tag.encode()).hexdigest()[:12]}.npz"
    path = epath.Path(cache_dir) / name if cache_dir else None
    if path and path.exists():
        with path.open("rb") as f, np.load(f) as npz:
            return npz["features"], npz["logits"]
    ds = data.make_source(data_cfg, split).batch(batch_size, drop_remainder=False)
    feats, logits = extract(fn, [b["image"] for b in ds])
    if path and jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez(f, features=feats, logits=logits)
    return feats, logits


def weights_id(kind: str, weights: str) -> str:
    """Names the extractor's weights in cache keys: their file's content hash."""
    from gen_jax.models import inception

    path = weights or (
        DIGITS_CLASSIFIER if kind != "inception" else inception.DEFAULT_WEIGHTS
    )
    with open(os.path.expanduser(path), "rb") as f:
        return f"{kind}:{hashlib.sha1(f.read()).hexdigest()[:12]}"


# openai's CLIP image normalisation, when a directory has no preprocessor_config.json.
CLIP_MEAN, CLIP_STD = (
    (0.48145466, 0.4578275, 0.40821073),
    (0.26862954, 0.26130258, 0.27577711),
)


def clip_scorer(directory: str) -> Callable[[np.ndarray, list[str]], np.ndarray]:
    """(images_NHWC in [-1, 1], captions) -> CLIP scores [N], 100 max(cos, 0)
    of each image's and its caption's embeddings (Hessel et al. 2021's
    CLIPScore with torchmetrics' weight of 100), with the CLIP of a local
    Hugging Face directory (config.json, *.safetensors, tokenizer.json,
    preprocessor_config.json). Images are resized (antialiased bicubic) to the
    model's size, grey ones repeated to RGB; captions longer than its context
    are cut, ending in their end-of-text token."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    from gen_jax.models import clip

    path = epath.Path(directory)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{directory!r} holds no config.json: the CLIP evaluator reads a local "
            "Hugging Face CLIP directory (e.g. openai/clip-vit-base-patch32's files)"
        )
    config = json.loads((path / "config.json").read_text())
    tensors = {}
    for shard in sorted(path.glob("*.safetensors")):
        tensors |= load_file(str(shard))
    t, v = config["text_config"], config["vision_config"]
    model = clip.CLIP(t, v, config["projection_dim"])
    layers = {"text": t["num_hidden_layers"], "vision": v["num_hidden_layers"]}
    params = clip.params_from_hf(tensors, layers)
    pre = path / "preprocessor_config.json"
    pre = json.loads(pre.read_text()) if pre.exists() else {}
    mean = np.asarray(pre.get("image_mean", CLIP_MEAN), np.float32).reshape(1, 1, 1, 3)
    std = np.asarray(pre.get("image_std", CLIP_STD), np.float32).reshape(1, 1, 1, 3)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    context, eos = t.get("max_position_embeddings", 77), t["eos_token_id"]
    side = v["image_size"]

    @jax.jit
    def cosines(params, ids, images):
        x = (images + 1) / 2
        if x.shape[-1] == 1:
            x = jax.numpy.repeat(x, 3, axis=-1)
        x = jax.image.resize(x, (x.shape[0], side, side, 3), "bicubic")
        text, image = model.apply({"params": params}, ids, (x - mean) / std)
        return jax.numpy.sum(text * image, axis=-1)

    def score(images: np.ndarray, captions: list[str], batch: int = 64) -> np.ndarray:
        ids = np.full((len(captions), context), eos, np.int32)
        for row, caption in enumerate(captions):
            encoded = tokenizer.encode(caption).ids[:context]
            encoded[-1] = eos if len(encoded) == context else encoded[-1]
            ids[row, : len(encoded)] = encoded
        images = np.asarray(images, np.float32)
        cos = [
            np.asarray(cosines(params, ids[i : i + batch], images[i : i + batch]))
            for i in range(0, len(ids), batch)
        ]
        return 100 * np.maximum(np.concatenate(cos), 0)

    return score
