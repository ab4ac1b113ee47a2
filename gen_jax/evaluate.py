"""Evaluators, chosen by `type` in `config.evals`: each is `run(state) -> {name: value}`.

Values are scalars or uint8 HWC images. The jitted functions they call come from
build.make_evaluators. An evaluator reads only `state.params` or
`state.sampling_params` (sample-based ones the EMA), so a tool may pass the
params of an opened run in their place.
Every key an evaluator reads is declared by the builders in configs/base.py.
"""

from collections.abc import Callable

import jax
import jax.experimental.multihost_utils
import ml_collections
import numpy as np
from etils import epath

from gen_jax import captions, data, features, metrics, quality
from gen_jax.families.family import image_keys
from gen_jax.train_state import TrainState

Evaluator = Callable[[TrainState], dict]


def _heldout(cfg, *, data_cfg, mesh, key, eval_step, **_) -> Evaluator:
    """Mean of every loss metric over one pass of the eval split."""
    ds = data.make_eval(data_cfg, batch_size=cfg.batch_size, mesh=mesh)

    def run(state: TrainState) -> dict:
        params = state.sampling_params if cfg.use_ema else state.params
        # Dispatch every batch first; fetch once at the end (no per-batch stalls).
        # Except across processes on CPU: independent programs run concurrently
        # there, and their collectives (gloo) can meet in a different order on
        # each process and hang (seen: 2 processes, both waiting in the eval).
        serial = jax.process_count() > 1 and jax.default_backend() == "cpu"
        outs = []
        for i, batch in enumerate(data.eval_batches(ds, mesh)):
            outs.append(eval_step(params, batch, jax.random.fold_in(key, i)))
            if serial:
                jax.block_until_ready(outs[-1])
        if not outs:
            raise ValueError(
                f"evals.{cfg.type}: the eval split {data_cfg.eval_split!r} "
                f"holds less than one batch of {cfg.batch_size}; lower "
                "its batch_size"
            )
        outs = jax.device_get(outs)
        means = {k: float(np.mean([o[k] for o in outs])) for k in outs[0]}
        if cfg.perplexity:  # of the mean loss, not a mean of exps
            for k in [k for k in means if k.endswith("/loss")]:
                means[k.replace("/loss", "/perplexity")] = float(np.exp(means[k]))
        return means

    return run


def _samples(
    cfg, *, data_cfg, mesh, key, family, sample_fn, reconstruct_fn, **_
) -> Evaluator:
    """A grid of samples from the EMA params and, if the family can, of
    reconstructions (originals in odd rows, reconstructions under them)."""
    if cfg.num_samples % 8:
        raise ValueError(
            f"evals.samples.num_samples={cfg.num_samples} must be a "
            "multiple of 8 (the grid has 8 columns)"
        )
    ds = data.make_eval(data_cfg, batch_size=cfg.num_samples, mesh=mesh)

    def run(state: TrainState) -> dict:
        images = np.asarray(sample_fn(state.sampling_params, key, cfg.num_samples))
        out = {"samples": metrics.image_grid(images)}
        if family.reconstruct is not None:
            batch = next(data.eval_batches(ds, mesh))
            x = np.asarray(
                jax.device_get(reconstruct_fn(state.sampling_params, batch, key))
            )
            real = np.asarray(
                jax.experimental.multihost_utils.process_allgather(
                    batch["image"], tiled=True
                )
            )
            pairs = np.stack(
                [real.reshape(-1, 8, *real.shape[1:]), x.reshape(-1, 8, *x.shape[1:])],
                axis=1,
            )
            out["reconstructions"] = metrics.image_grid(
                pairs.reshape(-1, *real.shape[1:])
            )
        return out

    return run


def _quality(
    cfg, *, data_cfg, key, sample_fn, family=None, workdir=None, **_
) -> Evaluator:
    """Fréchet distance, KID, Inception Score and precision/recall of
    `num_samples` EMA samples against the real `reference_split`, in the
    feature space of `cfg.features`. With `compare_split` set, that real split
    stands in for the samples: the floor the metrics reach on real data. The
    samples come in batches of `batch_size`, the last one partial if it must.
    A class-conditional family's samples (each batch every class in turn,
    `Family.sample`) also get `class_accuracy`, the share the classifier
    assigns to the class asked for, when its classes are the family's."""
    full, rest = divmod(cfg.num_samples, cfg.batch_size)
    sizes = [cfg.batch_size] * full + ([rest] if rest else [])
    extractor = features.make(cfg.features, cfg.weights, data_cfg)
    reference = cfg.reference_split or data_cfg.train_split
    real_feats, _ = features.real_features(
        extractor,
        data_cfg,
        reference,
        batch_size=cfg.batch_size,
        cache_key=features.weights_id(cfg.features, cfg.weights),
        cache_dir=str(epath.Path(workdir) / "quality_cache") if workdir else None,
    )
    real_stats = quality.feature_stats(real_feats)

    def run(state: TrainState) -> dict:
        if cfg.compare_split:
            ds = data.make_source(data_cfg, cfg.compare_split).batch(cfg.batch_size)
            images = [b["image"] for b in ds]
        else:
            images = [
                np.asarray(
                    sample_fn(state.sampling_params, jax.random.fold_in(key, i), n)
                )
                for i, n in enumerate(sizes)
            ]
        feats, logits = features.extract(extractor, images)
        kid, kid_std = quality.kernel_inception_distance(
            real_feats, feats, subset_size=cfg.kid_subset_size
        )
        precision, recall = quality.precision_recall(real_feats, feats, k=cfg.pr_k)
        score, _ = quality.inception_score(logits)
        out = {}
        classes = family.images.num_classes if family and family.images else 0
        if classes and logits.shape[-1] == classes and not cfg.compare_split:
            asked = np.concatenate([np.arange(n) % classes for n in sizes])
            out["class_accuracy"] = float(np.mean(np.argmax(logits, -1) == asked))
        return out | {
            "frechet_distance": quality.frechet_distance(
                *real_stats, *quality.feature_stats(feats)
            ),
            "kid": kid,
            "kid_std": kid_std,
            "inception_score": score,
            "precision": precision,
            "recall": recall,
            "num_samples": float(len(feats)),
        }

    return run


def _prompted(cfg, family, data_cfg, splits, key) -> Callable:
    """(params) -> {split: image batches} generated from the caption batches
    of `data_cfg`'s `splits`, `cfg.num_samples` each (past a caption source's
    end its index is a later visit: the same image in its next phrasing), and
    those caption batches; for the text-to-image evaluators."""
    if not (family.images and family.images.prompts):
        raise ValueError(
            f"evals type {cfg.type!r} scores text-to-image runs; this family "
            "takes no prompts (set config.text.encoder)"
        )
    guidance = family.images.guidance if cfg.guidance < 0 else cfg.guidance
    generate = jax.jit(lambda p, k, y, g, c: family.generate(p, k, y, g, prompt=c))
    batches = {}
    for split in splits:
        ds = data.make_source(data_cfg, split)
        ds = ds.repeat(-(-cfg.num_samples // len(ds)))[: cfg.num_samples]
        batches[split] = list(ds.batch(cfg.batch_size))

    def images(params) -> dict:
        out = {}
        for s, (split, rows) in enumerate(batches.items()):
            out[split] = []
            for b, batch in enumerate(rows):
                n = len(batch["label"])
                keys = image_keys(jax.random.fold_in(jax.random.fold_in(key, s), b), n)
                captions = {k: batch[k] for k in ("text_tokens", "text_mask")}
                g = np.full(n, guidance, np.float32)
                out[split].append(
                    np.asarray(generate(params, keys, batch["label"], g, captions))
                )
        return out

    return images, batches


def _prompts(cfg, *, data_cfg, key, family, workdir=None, **_) -> Evaluator:
    """Prompt adherence of a text-to-image run on captioned digits: images
    generated from `num_samples` captions of each split in `cfg.splits` (held-out
    phrasings, held-out digit x attribute combinations), scored by the digits
    classifier (digit accuracy: the digit the caption names) and by the
    measurements that wrote the captions (attribute accuracy over the
    attributes a caption states, and per attribute), beside their Fréchet
    distance to the real `reference_split`; and a grid of the first 64."""
    generated, splits = _prompted(cfg, family, data_cfg, cfg.splits, key)
    extractor = features.make(cfg.features, cfg.weights, data_cfg)
    real_feats, _ = features.real_features(
        extractor,
        data_cfg,
        cfg.reference_split or data_cfg.train_split,
        batch_size=cfg.batch_size,
        cache_key=features.weights_id(cfg.features, cfg.weights),
        cache_dir=str(epath.Path(workdir) / "quality_cache") if workdir else None,
    )
    real_stats = quality.feature_stats(real_feats)

    def run(state: TrainState) -> dict:
        out = {}
        for s, (split, images) in enumerate(generated(state.sampling_params).items()):
            out |= _adherence(split, images, splits[split], extractor, real_stats)
            if s == 0:
                out["samples"] = metrics.image_grid(np.concatenate(images)[:64])
        return out

    return run


def _clip(cfg, *, data_cfg, key, family, **_) -> Evaluator:
    """CLIP score of a text-to-image run: images generated from `num_samples`
    captions of `cfg.split`, each scored against its caption by the CLIP of
    the local Hugging Face directory `cfg.weights` (features.clip_scorer);
    the mean, and the same for the split's real images (`real_clip_score`,
    its ceiling)."""
    generated, splits = _prompted(cfg, family, data_cfg, [cfg.split], key)
    score = features.clip_scorer(cfg.weights)
    tokenizer = family.images.prompts.tokenizer
    texts = [
        tokenizer.decode(ids[mask == 1])
        for batch in splits[cfg.split]
        for ids, mask in zip(batch["text_tokens"], batch["text_mask"])
    ]
    real = np.concatenate([b["image"] for b in splits[cfg.split]])
    real_score = float(np.mean(score(real, texts)))

    def run(state: TrainState) -> dict:
        images = np.concatenate(generated(state.sampling_params)[cfg.split])
        return {
            "clip_score": float(np.mean(score(images, texts))),
            "real_clip_score": real_score,
            "num_samples": float(len(images)),
        }

    return run


def _adherence(split, images, batches, extractor, real_stats) -> dict:
    """`split`'s digit, attribute and per-attribute accuracies and Fréchet
    distance of `images`, generated from the captions of `batches`."""
    feats, logits = features.extract(extractor, images)
    images = np.concatenate(images)
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    measured = captions.attributes(images, rows["label"])
    stated = rows["stated"].astype(bool)  # [N, attributes]
    hits = np.stack([measured[a] == rows[a] for a in captions.ATTRIBUTES], axis=1)
    out = {
        "digit_accuracy": float(np.mean(np.argmax(logits, -1) == rows["label"])),
        "attribute_accuracy": float(hits[stated].mean()) if stated.any() else np.nan,
        "frechet_distance": quality.frechet_distance(
            *real_stats, *quality.feature_stats(feats)
        ),
        "num_samples": float(len(images)),
    }
    for i, name in enumerate(captions.ATTRIBUTES):
        if stated[:, i].any():
            out[f"{name}_accuracy"] = float(hits[stated[:, i], i].mean())
    return {f"{split}/{k}": v for k, v in out.items()}


EVALUATORS = {
    "clip": _clip,
    "heldout": _heldout,
    "prompts": _prompts,
    "quality": _quality,
    "samples": _samples,
}


def make(name: str, cfg: ml_collections.ConfigDict, **deps) -> Evaluator:
    """Builds evaluator `name` of type `cfg.type`; `deps` are the jitted functions,
    `family`, `data_cfg`, `mesh` and `key`."""
    if cfg.type not in EVALUATORS:
        raise ValueError(
            f"config.evals.{name}.type={cfg.type!r} is unknown; "
            f"valid: {sorted(EVALUATORS)}"
        )
    return EVALUATORS[cfg.type](cfg, **deps)
