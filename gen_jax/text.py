"""Text for the LM: tokenizers (byte, char, SentencePiece) and document sources.

Sources: CPython's bundled documentation (`pydoc_data.topics`, ~465k characters,
no download), `synthetic`, and tfds text datasets (`tiny_shakespeare`, `lm1b`)
read with `tfds.data_source`. Documents are joined by a blank line.
"""

import dataclasses
import functools
import json
from collections.abc import Callable

import grain
import ml_collections
import numpy as np

# tiny_shakespeare's 65 characters: a char-level synthetic run has its vocabulary.
SYNTHETIC_ALPHABET = (
    "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
SEPARATOR = "\n\n"  # between documents; no special tokens, so any tokenizer works
TFDS_TEXT_KEYS = {"tiny_shakespeare": "text", "lm1b": "text"}


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    name: str
    vocab_size: int
    encode: Callable[[str], np.ndarray]  # -> int32 ids
    decode: Callable[[np.ndarray], str]


def _byte_tokenizer() -> Tokenizer:
    return Tokenizer(
        "byte",
        256,
        lambda s: np.frombuffer(s.encode("utf-8"), np.uint8).astype(np.int32),
        lambda ids: bytes(int(i) for i in ids).decode("utf-8", errors="replace"),
    )


def _char_tokenizer(chars: str) -> Tokenizer:
    index = {c: i for i, c in enumerate(chars)}
    table = np.array(list(chars))

    def encode(s: str) -> np.ndarray:
        unknown = set(s) - index.keys()
        if unknown:
            raise ValueError(
                f"characters {sorted(unknown)[:10]} are not in the char "
                "vocabulary (built from the train split)"
            )
        return np.fromiter((index[c] for c in s), np.int32, len(s))

    return Tokenizer(
        "char",
        len(chars),
        encode,
        lambda ids: "".join(table[np.asarray(ids, np.int64)]),
    )


def _sentencepiece_tokenizer(path: str) -> Tokenizer:
    import sentencepiece

    if not path:
        raise ValueError(
            "data.tokenizer='sentencepiece' needs "
            "--config.data.sentencepiece_model=PATH to a .model file"
        )
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    return Tokenizer(
        "sentencepiece",
        sp.get_piece_size(),
        lambda s: np.asarray(sp.encode(s), np.int32),
        lambda ids: sp.decode([int(i) for i in ids]),
    )


@functools.cache
def _pydoc_documents(split: str) -> tuple[str, ...]:
    from pydoc_data import topics  # bundled with CPython

    keys = sorted(topics.topics)
    # A fixed 1-in-10 hold-out of topics, independent of any seed.
    chosen = {
        "train": [k for i, k in enumerate(keys) if i % 10],
        "test": [k for i, k in enumerate(keys) if i % 10 == 0],
    }
    if split not in chosen:
        raise ValueError(f"pydoc has splits {sorted(chosen)}, not {split!r}")
    return tuple(topics.topics[k] for k in chosen[split])


def documents(cfg: ml_collections.ConfigDict, split: str) -> grain.MapDataset:
    """The split's documents (str) as a random-access dataset."""
    if cfg.name == "pydoc":
        return grain.MapDataset.source(list(_pydoc_documents(split)))
    if cfg.name == "synthetic":
        rng = np.random.default_rng([cfg.shuffle_seed, split == cfg.train_split])
        letters = np.array(list(SYNTHETIC_ALPHABET))
        docs = ["".join(rng.choice(letters, 200)) for _ in range(cfg.synthetic_size)]
        return grain.MapDataset.source(docs)
    if cfg.name not in TFDS_TEXT_KEYS:
        raise ValueError(
            f"unknown text dataset {cfg.name!r}; use pydoc, synthetic "
            f"or one of {sorted(TFDS_TEXT_KEYS)}"
        )
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(
            cfg.name, split=split, data_dir=cfg.data_dir, download=False
        )
    except Exception as e:
        raise FileNotFoundError(
            f"tfds dataset {cfg.name!r} split {split!r} is not prepared as "
            f"array_record under data_dir={cfg.data_dir!r}. Prepare it with "
            f"tfds.builder({cfg.name!r}, data_dir=DIR).download_and_prepare("
            "file_format='array_record')"
        ) from e
    key = TFDS_TEXT_KEYS[cfg.name]
    return grain.MapDataset.source(source).map(
        lambda ex: ex[key].decode() if isinstance(ex[key], bytes) else str(ex[key])
    )


def make_tokenizer(cfg: ml_collections.ConfigDict) -> Tokenizer:
    """The tokenizer named by `cfg.tokenizer`; a char vocabulary is built from
    the train split (plus the document separator). Built once per data config:
    the family, the train pipeline and each evaluator all ask for it."""
    return _cached_tokenizer(cfg.to_json(sort_keys=True))


@functools.cache
def _cached_tokenizer(cfg_json: str) -> Tokenizer:
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    if cfg.tokenizer == "byte":
        return _byte_tokenizer()
    if cfg.tokenizer == "char":
        text = "".join(documents(cfg, cfg.train_split)) + SEPARATOR
        return _char_tokenizer("".join(sorted(set(text))))
    if cfg.tokenizer == "sentencepiece":
        return _sentencepiece_tokenizer(cfg.sentencepiece_model)
    raise ValueError(
        f"unknown data.tokenizer {cfg.tokenizer!r}; use byte|char|sentencepiece"
    )
