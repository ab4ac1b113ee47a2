"""One input pipeline: random-access sources -> grain -> sharded global batches.

Sources: the embedded 8x8 digits (scikit-learn), `synthetic` (same shapes,
random values), and any tfds dataset prepared as array_record under
`config.data.data_dir`, read with `tfds.data_source`; the captioned
`digits_captions` and `coco_captions` (captions.py), whose captions become
`config.data.tokenizer`'s ids. Shuffling, per-process
sharding and exact resume all come from grain's index-based MapDataset.
"""

import functools
from collections.abc import Iterator

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from gen_jax import captions, sft, sharding, text

DIGITS_TEST_SIZE = 300  # of 1797; the split is fixed, independent of config.seed


@functools.cache
def _load_digits():
    """scikit-learn's bundled digits, parsed once per process (not for free)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    return load_digits()


def _digits(split: str) -> grain.MapDataset:
    digits = _load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    splits = {"train": order[DIGITS_TEST_SIZE:], "test": order[:DIGITS_TEST_SIZE]}
    if split not in splits:
        raise ValueError(f"digits has splits {sorted(splits)}, not {split!r}")
    idx = splits[split]
    # Grey levels 0..16 -> [-1, 1].
    images = (digits.images[idx, :, :, None] / 8.0 - 1.0).astype(np.float32)
    labels = digits.target[idx].astype(np.int32)
    return grain.MapDataset.range(len(idx)).map(
        lambda i: {"image": images[i], "label": labels[i]}
    )


def _synthetic(cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
    shape = (cfg.image_size, cfg.image_size, cfg.channels)
    offset = 0 if split == cfg.train_split else 1

    def element(i):
        rng = np.random.default_rng([cfg.shuffle_seed, offset, i])
        label = np.int32(rng.integers(cfg.num_classes))
        out = {"image": rng.uniform(-1, 1, shape).astype(np.float32), "label": label}
        if cfg.get("caption_len"):  # a captioned config's smoke stand-in
            out["caption"] = f"random image number {label}"
        return out

    size = cfg.synthetic_size if offset == 0 else max(cfg.synthetic_size // 8, 1)
    return grain.MapDataset.range(size).map(element)


def _tfds(cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
    def element(ex):
        out = {"image": np.asarray(ex["image"], np.float32) / 127.5 - 1.0}
        if "label" in ex:
            out["label"] = np.int32(ex["label"])
        return out

    return grain.MapDataset.source(_tfds_source(cfg, split)).map(element)


def _tfds_source(cfg: ml_collections.ConfigDict, split: str):
    """tfds's random-access source of a prepared dataset (never downloads)."""
    import tensorflow_datasets as tfds  # loads no TensorFlow; imported only when used

    try:
        source = tfds.data_source(
            cfg.name, split=split, data_dir=cfg.data_dir, download=False
        )  # never fetch inside a run
    except Exception as e:  # tfds raises several types for "not prepared"
        raise FileNotFoundError(
            f"tfds dataset {cfg.name!r} split {split!r} is not prepared as array_record "
            f"under data_dir={cfg.data_dir!r} ({type(e).__name__}: {e}). Prepare it with "
            f"tfds.builder({cfg.name!r}, data_dir=DIR).download_and_prepare("
            "file_format='array_record') and pass --config.data.data_dir=DIR"
        ) from e
    return source


def make_source(cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
    """The per-example dataset for `split`: {"image": float32 HWC in [-1, 1],
    "label"}; captioned sources add "text_tokens" and "text_mask" (int32
    [caption_len], `cfg.tokenizer`'s ids; captions.py) and what wrote the
    caption."""
    if cfg.name == "digits":
        ds = _digits(split)
    elif cfg.name == "digits_captions":
        ds = captions.source(split, _digits)
    elif cfg.name == "coco_captions":
        ds = captions.coco_source(_tfds_source(cfg, split), cfg.image_size)
    elif cfg.name == "synthetic":
        ds = _synthetic(cfg, split)
    else:
        ds = _tfds(cfg, split)
    if cfg.get("caption_len"):  # captions -> the encoder tokenizer's ids
        if "caption" not in ds[0]:
            raise ValueError(
                f"data.caption_len is set but {cfg.name!r} has no captions: "
                "use digits_captions or coco_captions"
            )
        ds = ds.map(captions.tokenize_fn(text.make_tokenizer(cfg), cfg.caption_len))
    want = (cfg.image_size, cfg.image_size, cfg.channels)
    got = tuple(ds[0]["image"].shape)
    if got != want:
        raise ValueError(
            f"dataset {cfg.name!r} yields images of shape {got} but the config expects "
            f"{want} (data.image_size={cfg.image_size}, data.channels={cfg.channels}); "
            f"set --config.data.image_size={got[0]} --config.data.channels={got[-1]}"
        )
    return ds


def _local_batch_size(batch_size: int, mesh: Mesh) -> int:
    if batch_size % mesh.size:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {mesh.size} "
            "devices of the mesh"
        )
    return batch_size // jax.process_count()


def _to_global(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    s = sharding.batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(s, v) for k, v in local.items()}


class Batches:
    """An endless iterator of global training batches; `iterator` is checkpointable."""

    def __init__(self, ds: grain.IterDataset, mesh: Mesh):
        self.iterator = iter(ds)  # grain DatasetIterator: get_state / set_state
        self.mesh = mesh

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        return _to_global(next(self.iterator), self.mesh)


def _token_stream(
    cfg: ml_collections.ConfigDict, split: str, *, train: bool, rows: int
):
    """Documents -> tokens -> packed `seq_len` rows: {"tokens", "mask"} (mask is 0
    on the padding of a final partial row). SFT sources pack whole examples
    first-fit over `rows` bins instead, with segment ids and positions."""
    if cfg.name in sft.SOURCES:
        return sft.packed_rows(cfg, split, train=train, rows_per_pack=rows)
    tokenizer = text.make_tokenizer(cfg)
    ds = text.documents(cfg, split)
    if train:
        ds = ds.seed(cfg.shuffle_seed).shuffle().repeat()  # reshuffled per epoch
    ds = ds.map(lambda doc: {"tokens": tokenizer.encode(doc + text.SEPARATOR)})
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=cfg.prefetch)
    packed = grain.experimental.ConcatThenSplitIterDataset(
        ds.to_iter_dataset(options), length_struct={"tokens": cfg.seq_len}
    )
    return packed.map(
        lambda r: {
            "tokens": r["tokens"],
            "mask": (r["tokens_segment_ids"] > 0).astype(np.int32),
        }
    )


def _pad_rows(batch_size: int):
    """A short final batch padded with empty rows (segment 0, mask 0: no loss)."""

    def pad(batch):
        missing = batch_size - len(batch["tokens"])
        return {k: np.pad(v, ((0, missing), (0, 0))) for k, v in batch.items()}

    return pad


def _rows(index: int, local: int):
    """Batch -> its rows [index * local, (index + 1) * local): one process's part."""
    rows = slice(index * local, (index + 1) * local)
    return lambda batch: {k: v[rows] for k, v in batch.items()}


def local_batches(
    cfg: ml_collections.ConfigDict, *, batch_size: int, index: int, count: int
) -> grain.IterDataset:
    """Process `index` of `count`'s rows of the training batches: shuffled,
    repeated, reshuffled each epoch. Concatenated over processes in index
    order, they are the same global batches for any `count`.

    Images: process p takes the local batches p, p + count, p + 2 count, ...
    of one shuffled stream of `batch_size // count` examples, so the shards
    are disjoint and no process reads another's examples. Text: documents are
    packed into rows sequentially, so every process packs the same global
    batches and keeps its slice of rows (cheap next to the step, and the data
    state is then identical on every process).
    """
    if batch_size % count:
        raise ValueError(
            f"batch size {batch_size} does not split over {count} processes"
        )
    local = batch_size // count
    if is_text(cfg):
        ds = _token_stream(cfg, cfg.train_split, train=True, rows=batch_size)
        return ds.batch(batch_size, drop_remainder=True).map(_rows(index, local))
    ds = make_source(cfg, cfg.train_split).seed(cfg.shuffle_seed)
    ds = ds.shuffle().repeat().batch(local, drop_remainder=True)
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=cfg.prefetch)
    return ds[index::count].to_iter_dataset(options)


def make_train(
    cfg: ml_collections.ConfigDict, *, batch_size: int, mesh: Mesh
) -> Batches:
    """Global training batches sharded over `mesh`, this process's rows read
    by `local_batches` (so the sequence does not depend on the process count)."""
    _local_batch_size(batch_size, mesh)  # checks divisibility by the devices
    ds = local_batches(
        cfg, batch_size=batch_size, index=jax.process_index(), count=jax.process_count()
    )
    return Batches(ds, mesh)


def make_eval(
    cfg: ml_collections.ConfigDict, *, batch_size: int, mesh: Mesh
) -> grain.MapDataset | grain.IterDataset:
    """One ordered pass over the eval split (the remainder is dropped), as a
    re-iterable dataset of this process's local batches."""
    local = _local_batch_size(batch_size, mesh)  # also checks divisibility
    if is_text(cfg):
        ds = _token_stream(cfg, cfg.eval_split, train=False, rows=batch_size)
        rows = _rows(jax.process_index(), local)
        if (
            cfg.name in sft.SOURCES
        ):  # small sets: pad the last batch, keep every example
            return ds.batch(batch_size).map(_pad_rows(batch_size)).map(rows)
        return ds.batch(batch_size, drop_remainder=True).map(rows)
    ds = make_source(cfg, cfg.eval_split).batch(local, drop_remainder=True)
    n = len(ds) // jax.process_count()
    if n == 0:
        raise ValueError(
            f"eval split {cfg.eval_split!r} of {cfg.name!r} has fewer than "
            f"one batch of {batch_size}; lower evals.<name>.batch_size"
        )
    return ds[jax.process_index() : n * jax.process_count() : jax.process_count()]


def eval_batches(
    ds: grain.MapDataset | grain.IterDataset, mesh: Mesh
) -> Iterator[dict[str, jax.Array]]:
    """The global batches of one pass over `ds` (from `make_eval`)."""
    for local in ds:
        yield _to_global(local, mesh)


def is_text(cfg: ml_collections.ConfigDict) -> bool:
    """Text configs pack token rows of `seq_len`; image configs do not (a
    captioned image source names a tokenizer too, for its captions)."""
    return "seq_len" in cfg


def dummy_batch(cfg: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """A one-example batch with the configured shapes, for initialising params."""
    if is_text(cfg):
        return {
            "tokens": np.zeros((1, cfg.seq_len), np.int32),
            "mask": np.ones((1, cfg.seq_len), np.int32),
        }
    shape = (1, cfg.image_size, cfg.image_size, cfg.channels)
    batch = {"image": np.zeros(shape, np.float32), "label": np.zeros((1,), np.int32)}
    if cfg.get("caption_len"):  # a captioned source: its tokens and their mask
        tokens = np.zeros((1, cfg.caption_len), np.int32)
        batch |= {"text_tokens": tokens, "text_mask": tokens}
    return batch
