"""Supervised fine-tuning data: conversations or prompt / completion pairs ->
tokens with a loss mask on the answers -> whole examples packed first-fit into
rows, with segment ids and per-segment positions (so a packed example sees only
itself, at the positions it would have alone).

Sources (`config.data.name`): `pydoc_qa`, embedded pairs from CPython's bundled
`pydoc_data.topics` (a topic's title as the question, its first paragraph as the
answer; every 10th topic held out), and `jsonl`, a user's JSON-lines files of
`{"messages": [{"role", "content"}, ...]}` or `{"prompt", "completion"}` (the
latter as one user and one assistant message).
"""

import functools
import json

import grain
import ml_collections
import numpy as np
from absl import logging

from gen_jax import text

SOURCES = ("pydoc_qa", "jsonl")
OVERLONG = ("truncate", "drop")


def _pydoc_pairs(split: str) -> list[list[dict]]:
    from pydoc_data import topics

    out = []
    for key in text.pydoc_topics(split):
        title, _, body = topics.topics[key].partition("\n")
        paragraphs = [p.strip() for p in body.split("\n\n") if p.strip("*\n ")]
        answer = " ".join(paragraphs[0].split())  # re-flowed onto one line
        out.append(
            [
                {"role": "user", "content": title.strip()},
                {"role": "assistant", "content": answer},
            ]
        )
    return out


def _jsonl(path: str) -> list[list[dict]]:
    if not path:
        raise ValueError(
            "data.name='jsonl' needs --config.data.train_file (and eval_file) "
            "pointing at JSON-lines files"
        )
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
            if "messages" in row:
                out.append(row["messages"])
            elif "prompt" in row and "completion" in row:
                out.append(
                    [
                        {"role": "user", "content": row["prompt"]},
                        {"role": "assistant", "content": row["completion"]},
                    ]
                )
            else:
                raise ValueError(
                    f"{path}:{n}: a row needs 'messages' or 'prompt' and "
                    f"'completion'; it has {sorted(row)}"
                )
    return out


def pieces(tokenizer: text.Tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, trained) pieces of a conversation: only assistant turns train.
    With a chat template, each assistant turn is what rendering it adds after
    the generation prompt; without one, turns are "Role: content\\n\\n"."""
    for m in messages:
        if not {"role", "content"} <= set(m):
            raise ValueError(f"a message needs 'role' and 'content'; got {sorted(m)}")
    if not tokenizer.chat_template:
        out = []
        for m in messages:
            trained = m["role"] == "assistant"
            out += [
                (f"{m['role'].capitalize()}: ", False),
                (m["content"] + "\n\n", trained),
            ]
        return out
    out, done = [], ""
    for i, m in enumerate(messages):
        steps = [(messages[: i + 1], False, m["role"] == "assistant")]
        if m["role"] == "assistant":
            steps.insert(0, (messages[:i], True, False))
        for prefix, generation, trained in steps:
            rendered = text.render_chat(
                tokenizer, prefix, add_generation_prompt=generation
            )
            if not rendered.startswith(done):
                raise ValueError(
                    "the chat template renders a conversation's prefix differently "
                    "from the conversation; its assistant turns cannot be masked"
                )
            out.append((rendered[len(done) :], trained))
            done = rendered
    return out


def encode(tokenizer: text.Tokenizer, messages: list[dict]) -> dict[str, np.ndarray]:
    """{"tokens", "mask"}: each piece tokenized alone (so masks fall on token
    boundaries), the mask 1 on trained tokens."""
    ids, mask = [], []
    for piece, trained in pieces(tokenizer, messages):
        piece_ids = tokenizer.encode(piece)
        ids.append(piece_ids)
        mask.append(np.full(len(piece_ids), int(trained), np.int32))
    return {
        "tokens": np.concatenate(ids).astype(np.int32),
        "mask": np.concatenate(mask),
    }


def examples(cfg: ml_collections.ConfigDict, split: str) -> list[dict]:
    """The split's encoded examples, over-long ones truncated or dropped (and
    counted in the log)."""
    return list(_examples(cfg.to_json(sort_keys=True), split))


@functools.cache
def _examples(cfg_json: str, split: str) -> tuple[dict, ...]:
    cfg = ml_collections.ConfigDict(json.loads(cfg_json))
    if cfg.overlong not in OVERLONG:
        raise ValueError(
            f"data.overlong={cfg.overlong!r}; valid: {', '.join(OVERLONG)}"
        )
    if cfg.name == "pydoc_qa":
        conversations = _pydoc_pairs(split)
    else:
        conversations = _jsonl(
            cfg.train_file if split == cfg.train_split else cfg.eval_file
        )
    tokenizer = text.make_tokenizer(cfg)
    out, long = [], 0
    for messages in conversations:
        ex = encode(tokenizer, messages)
        if len(ex["tokens"]) > cfg.seq_len:
            long += 1
            if cfg.overlong == "drop":
                continue
            ex = {k: v[: cfg.seq_len] for k, v in ex.items()}
        if ex["mask"].any():  # nothing to learn from an example without answers
            out.append(ex)
    logging.info(
        "sft %s/%s: %d examples, %d longer than seq_len=%d (%s)",
        cfg.name,
        split,
        len(out),
        long,
        cfg.seq_len,
        cfg.overlong,
    )
    if not out:
        raise ValueError(f"sft {cfg.name}/{split}: no example with answer tokens")
    return tuple(out)


def packed_rows(
    cfg: ml_collections.ConfigDict, split: str, *, train: bool, rows_per_pack: int
) -> grain.IterDataset:
    """Rows of `seq_len` tokens: {"tokens", "mask", "segment_ids" (0: padding),
    "positions"}, examples whole, packed first-fit over `rows_per_pack` bins."""
    ds = grain.MapDataset.source(examples(cfg, split))
    if train:
        ds = ds.seed(cfg.shuffle_seed).shuffle().repeat()  # reshuffled per epoch
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=cfg.prefetch)
    packed = grain.experimental.FirstFitPackIterDataset(
        ds.to_iter_dataset(options),
        length_struct={"tokens": cfg.seq_len, "mask": cfg.seq_len},
        num_packing_bins=rows_per_pack,
        shuffle_bins=False,  # the order is the shuffled stream's
    )
    return packed.map(
        lambda r: {
            "tokens": r["tokens"].astype(np.int32),
            "mask": r["mask"].astype(np.int32),
            "segment_ids": r["tokens_segment_ids"].astype(np.int32),
            "positions": r["tokens_positions"].astype(np.int32),
        }
    )
