"""Evaluators, chosen by `type` in `config.evals`: each is `run(state) -> {name: value}`.

Values are scalars or uint8 HWC images. Jitted functions come from train.py.
"""

from collections.abc import Callable

import jax
import jax.experimental.multihost_utils
import ml_collections
import numpy as np
from etils import epath

from gen_jax import data, features, metrics, quality
from gen_jax.train_state import TrainState

Evaluator = Callable[[TrainState], dict]


def _heldout(cfg, *, data_cfg, mesh, key, eval_step, **_) -> Evaluator:
    """Mean of every loss metric over one pass of the eval split."""
    ds = data.make_eval(data_cfg, batch_size=cfg.batch_size, mesh=mesh)

    def run(state: TrainState) -> dict:
        params = state.ema_params if cfg.get("use_ema", True) else state.params
        # Dispatch every batch first; fetch once at the end (no per-batch stalls).
        outs = [
            eval_step(params, batch, jax.random.fold_in(key, i))
            for i, batch in enumerate(data.eval_batches(ds, mesh))
        ]
        if not outs:
            raise ValueError(
                f"evals.{cfg.type}: the eval split {data_cfg.eval_split!r} "
                f"holds less than one batch of {cfg.batch_size}; lower "
                "its batch_size"
            )
        outs = jax.device_get(outs)
        means = {k: float(np.mean([o[k] for o in outs])) for k in outs[0]}
        if cfg.get("perplexity", False):  # of the mean loss, not a mean of exps
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
        images = np.asarray(sample_fn(state.ema_params, key, cfg.num_samples))
        out = {"samples": metrics.image_grid(images)}
        if family.reconstruct is not None:
            batch = next(data.eval_batches(ds, mesh))
            x = np.asarray(jax.device_get(reconstruct_fn(state.ema_params, batch, key)))
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


def quality_config(features: str = "digits_classifier", **overrides) -> dict:
    """evals.<name> for sample quality (Fréchet distance, KID, IS, precision /
    recall) of EMA samples against the real train split."""
    return {
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
    } | overrides


def _quality(cfg, *, data_cfg, key, sample_fn, workdir=None, **_) -> Evaluator:
    """Fréchet distance, KID, Inception Score and precision/recall of
    `num_samples` EMA samples against the real `reference_split`, in the
    feature space of `cfg.features`. With `compare_split` set, that real split
    stands in for the samples: the floor the metrics reach on real data."""
    if cfg.num_samples % cfg.batch_size:
        raise ValueError(
            f"evals.{cfg.type}: num_samples={cfg.num_samples} must be a multiple "
            f"of batch_size={cfg.batch_size}"
        )
    extractor = features.make(cfg.features, cfg.weights, data_cfg)
    reference = cfg.get("reference_split", "") or data_cfg.train_split
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
        if cfg.get("compare_split", ""):
            ds = data.make_source(data_cfg, cfg.compare_split).batch(cfg.batch_size)
            images = [b["image"] for b in ds]
        else:
            images = [
                np.asarray(sample_fn(state.ema_params, jax.random.fold_in(key, i), n))
                for i, n in enumerate(
                    [cfg.batch_size] * (cfg.num_samples // cfg.batch_size)
                )
            ]
        feats, logits = features.extract(extractor, images)
        kid, kid_std = quality.kernel_inception_distance(
            real_feats, feats, subset_size=cfg.kid_subset_size
        )
        precision, recall = quality.precision_recall(real_feats, feats, k=cfg.pr_k)
        score, _ = quality.inception_score(logits)
        return {
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


EVALUATORS = {"heldout": _heldout, "quality": _quality, "samples": _samples}


def make(name: str, cfg: ml_collections.ConfigDict, **deps) -> Evaluator:
    """Builds evaluator `name` of type `cfg.type`; `deps` are the jitted functions,
    `family`, `data_cfg`, `mesh` and `key`."""
    if cfg.type not in EVALUATORS:
        raise ValueError(
            f"config.evals.{name}.type={cfg.type!r} is unknown; "
            f"valid: {sorted(EVALUATORS)}"
        )
    return EVALUATORS[cfg.type](cfg, **deps)


def evaluate_workdir(
    workdir: str,
    eval_cfg: ml_collections.ConfigDict,
    *,
    name: str = "quality",
    seed: int = 0,
    diffusion_overrides: dict | None = None,
) -> dict:
    """Runs evaluator `eval_cfg` on the newest checkpoint of `workdir` and writes
    its results (`eval/<name>/...`) at that step to metrics.jsonl and TensorBoard."""
    from gen_jax import sample, train

    config = sample.load_config(workdir)
    overrides = {k: v for k, v in (diffusion_overrides or {}).items() if v is not None}
    if overrides:
        config.diffusion.update(overrides)
    run_setup = train.setup(config)
    state, step = sample.restore(workdir, run_setup)
    config.evals = {name: eval_cfg}
    key = jax.random.key(seed)
    ((_, evaluator),) = train.make_evaluators(
        config, run_setup.family, run_setup.mesh, key, workdir
    ).values()
    results = evaluator(state)
    writer = metrics.Writer(workdir)
    try:
        train.write_eval(writer, step, name, results)
    finally:
        writer.close()
    return results


def cli(argv: list[str]) -> None:
    """`gen-jax evaluate --workdir=W [--num_samples ...]` (also
    `python -m gen_jax.evaluate`): sample-quality metrics of a trained run."""
    import sys

    from absl import flags

    fv = flags.FlagValues()  # private: no clash with the training flags
    flags.DEFINE_string("workdir", None, "A training run's workdir.", flag_values=fv)
    flags.DEFINE_string(
        "name", "quality", "Metric prefix eval/<name>/.", flag_values=fv
    )
    flags.DEFINE_integer("num_samples", 1000, "Samples to score.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 100, "Sampling batch.", flag_values=fv)
    flags.DEFINE_string(
        "features",
        "digits_classifier",
        "digits_classifier | classifier | inception",
        flag_values=fv,
    )
    flags.DEFINE_string("weights", "", "The extractor's weights file.", flag_values=fv)
    flags.DEFINE_string(
        "compare_split",
        "",
        "Score this real split instead of samples (the floor).",
        flag_values=fv,
    )
    flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
    flags.DEFINE_string("sampler", None, "Diffusion: sampler.", flag_values=fv)
    flags.DEFINE_integer("steps", None, "Diffusion: sampler steps.", flag_values=fv)
    flags.DEFINE_float("guidance", None, "Diffusion: guidance scale.", flag_values=fv)
    try:
        fv(argv)
        if fv.workdir is None:
            raise ValueError("--workdir is required")
        eval_cfg = ml_collections.ConfigDict(
            quality_config(
                fv.features,
                num_samples=fv.num_samples,
                batch_size=fv.batch_size,
                weights=fv.weights,
                compare_split=fv.compare_split,
                kid_subset_size=min(1000, fv.num_samples),
            )
        )
        results = evaluate_workdir(
            fv.workdir,
            eval_cfg,
            name=fv.name,
            seed=fv.seed,
            diffusion_overrides={
                "sampler": fv.sampler,
                "sample_steps": fv.steps,
                "guidance_scale": fv.guidance,
            },
        )
    except (flags.Error, ValueError, FileNotFoundError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)
    print(" ".join(f"{k}={v:.4g}" for k, v in results.items()))


if __name__ == "__main__":
    import sys

    cli(sys.argv)
