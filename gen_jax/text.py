"""Text for the LM: tokenizers (byte, char, SentencePiece, a Hugging Face
`tokenizer.json` with its chat template) and document sources.

Sources: CPython's bundled documentation (`pydoc_data.topics`, ~465k characters,
no download), `synthetic`, and tfds text datasets (`tiny_shakespeare`, `lm1b`)
read with `tfds.data_source`. Documents are joined by a blank line.
"""

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence

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
    encode: Callable[[str], np.ndarray]  # -> int32 ids, no special tokens
    decode: Callable[[np.ndarray], str]
    # A prompt's ids as the model's own tokenizer gives them (Llama's adds <s>).
    encode_prompt: Callable[[str], np.ndarray] | None = None
    eos_id: int | None = None  # completions end at it
    chat_template: str | None = None  # jinja2, rendered by `render_chat`
    special_tokens: dict = dataclasses.field(default_factory=dict)  # bos/eos text

    def prompt(self, text: str) -> np.ndarray:
        return (self.encode_prompt or self.encode)(text)


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


def pydoc_topics(split: str) -> list[str]:
    """The split's `pydoc_data.topics` keys: a fixed 1-in-10 hold-out of topics,
    independent of any seed (the LM text and the SFT pairs share it)."""
    from pydoc_data import topics  # bundled with CPython

    keys = sorted(topics.topics)
    chosen = {
        "train": [k for i, k in enumerate(keys) if i % 10],
        "test": [k for i, k in enumerate(keys) if i % 10 == 0],
    }
    if split not in chosen:
        raise ValueError(f"pydoc has splits {sorted(chosen)}, not {split!r}")
    return chosen[split]


@functools.cache
def _pydoc_documents(split: str) -> tuple[str, ...]:
    from pydoc_data import topics

    return tuple(topics.topics[k] for k in pydoc_topics(split))


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
    if cfg.tokenizer == "hf":
        return _hf_tokenizer(cfg.tokenizer_dir)
    raise ValueError(
        f"unknown data.tokenizer {cfg.tokenizer!r}; use byte|char|sentencepiece|hf"
    )


def _special(value) -> str:
    """tokenizer_config.json spells a special token as text or {"content": text}."""
    return value.get("content", "") if isinstance(value, dict) else (value or "")


def _hf_tokenizer(directory: str) -> Tokenizer:
    """A Hugging Face tokenizer from its files (tokenizer.json,
    tokenizer_config.json, chat_template.jinja) through `tokenizers`: no torch,
    no transformers."""
    import pathlib

    import tokenizers

    path = pathlib.Path(directory or ".")
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"data.tokenizer='hf' needs a tokenizer.json in data.tokenizer_dir="
            f"{directory!r} (a Hugging Face model directory or an import-hf workdir's hf/)"
        )
    tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    template = cfg.get("chat_template")
    if (path / "chat_template.jinja").is_file():  # transformers >= 4.43 writes it apart
        template = (path / "chat_template.jinja").read_text()
    if isinstance(template, list):  # named templates: take the default
        template = {t["name"]: t["template"] for t in template}.get("default")
    specials = {k: _special(cfg.get(f"{k}_token")) for k in ("bos", "eos")}
    eos_id = tok.token_to_id(specials["eos"]) if specials["eos"] else None
    return Tokenizer(
        "hf",
        tok.get_vocab_size(),
        lambda s: np.asarray(tok.encode(s, add_special_tokens=False).ids, np.int32),
        lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False),
        encode_prompt=lambda s: np.asarray(tok.encode(s).ids, np.int32),
        eos_id=eos_id,
        chat_template=template,
        special_tokens={f"{k}_token": v for k, v in specials.items()},
    )


def describe_tokenizer(
    cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, directory: str
) -> dict:
    """What rebuilds `tokenizer` without the data (an export artifact): a
    JSON-able spec, with its files copied into `directory` (named relative to it)."""
    import pathlib
    import shutil

    out = pathlib.Path(directory)
    if tokenizer.name == "byte":
        return {"tokenizer": "byte"}
    if tokenizer.name == "char":  # the vocabulary is the decoded ids, in order
        return {
            "tokenizer": "char",
            "chars": tokenizer.decode(np.arange(tokenizer.vocab_size)),
        }
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer.name == "sentencepiece":
        shutil.copyfile(cfg.sentencepiece_model, out / "tokenizer.model")
        return {"tokenizer": "sentencepiece", "sentencepiece_model": "tokenizer.model"}
    if tokenizer.name == "hf":
        src = pathlib.Path(cfg.tokenizer_dir or ".")
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
        return {"tokenizer": "hf", "tokenizer_dir": "."}
    raise ValueError(f"cannot describe tokenizer {tokenizer.name!r}")


def tokenizer_from_spec(spec: dict, directory: str) -> Tokenizer:
    """The tokenizer `describe_tokenizer` wrote, its files under `directory`."""
    import pathlib

    kind = spec.get("tokenizer")
    if kind == "byte":
        return _byte_tokenizer()
    if kind == "char":
        return _char_tokenizer(spec["chars"])
    if kind == "sentencepiece":
        path = pathlib.Path(directory) / spec["sentencepiece_model"]
        return _sentencepiece_tokenizer(str(path))
    if kind == "hf":
        return _hf_tokenizer(str(pathlib.Path(directory) / spec["tokenizer_dir"]))
    raise ValueError(f"unknown tokenizer spec {spec!r}")


def render_chat(
    tokenizer: Tokenizer, messages: list[dict], *, add_generation_prompt: bool
) -> str:
    """`messages` through the tokenizer's chat template, rendered as transformers
    does (a sandboxed jinja2 with trim_blocks and lstrip_blocks)."""
    import jinja2.sandbox

    def raise_exception(message):
        raise ValueError(f"chat template: {message}")

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True
    )
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(tokenizer.chat_template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        **tokenizer.special_tokens,
    )


def fixed_length(
    captions: Sequence[str], tokenizer: Tokenizer, max_len: int
) -> dict[str, np.ndarray]:
    """{"text_tokens", "text_mask"}: int32 [N, max_len], right-padded with 0 and
    mask 1 on real tokens. A caption is encoded as a prompt
    (`Tokenizer.prompt`: as the LM's own tokenizer encodes one, so a Llama
    tokenizer adds its BOS, the byte tokenizer nothing) with no EOS: a causal
    LM's features at the last real token already read the whole caption, and
    the mask marks where it ends. Longer captions are truncated to their first
    `max_len` tokens."""
    tokens = np.zeros((len(captions), max_len), np.int32)
    mask = np.zeros((len(captions), max_len), np.int32)
    for row, caption in enumerate(captions):
        ids = np.asarray(tokenizer.prompt(caption), np.int32)[:max_len]
        tokens[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return {"text_tokens": tokens, "text_mask": mask}
