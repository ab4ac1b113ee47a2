"""A token with its log-probability and likeliest alternatives, read from
what the LM's serving programs return (`lm_serving.make_serving`)."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Scored:
    """A token with its log-probability under the model (None: a prompt's
    first token) and the likeliest tokens there, as (id, log-probability)."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


def scored(out: dict, row, token: int, k: int, prefix: str = "") -> Scored:
    ids, values = out[prefix + "top_ids"][row], out[prefix + "top_logprobs"][row]
    top = tuple((int(i), float(v)) for i, v in zip(ids[:k], values[:k]))
    return Scored(int(token), float(out[prefix + "logprob"][row]), top)


def prompt_scored(out: dict, prompt: np.ndarray, k: int) -> list[Scored]:
    """The prompt's tokens scored by prefill's output (row 0): the first has
    no log-probability."""
    rest = [scored(out, (0, j), prompt[j], k, "prompt_") for j in range(1, len(prompt))]
    return [Scored(int(prompt[0]), None), *rest]
