"""The image batcher: micro-batched calls of an artifact's `sample` program,
each image the same whether it was sampled alone or batched."""

import collections
import dataclasses
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from gen_jax import text
from gen_jax.deploy import programs as programs_lib
from gen_jax.deploy import prometheus


@dataclasses.dataclass
class ImageJob:
    count: int
    seed: int
    label: int | None  # None: every class in turn, as `gen-jax sample`
    guidance: float
    # images [count, H, W, C] in [-1, 1], or None when sampling failed
    done: Callable[[np.ndarray | None], None]
    # A text-to-image model's caption arrays ([length] each: the sampler's
    # prompt_tokens, prompt_mask, negative_tokens, negative_mask); None: none.
    captions: tuple[np.ndarray, ...] | None = None


class ImageBatcher(programs_lib.Worker):
    """Micro-batching: jobs that arrive within `max_wait_s` of the first share
    one sampler call of `max_batch` images (padded). Image i of a job is image i
    of `gen-jax sample --seed=SEED`, bitwise the same alone or batched: keys,
    labels and guidance are per image, and every call has the one size, as
    XLA:CPU's convolutions round differently per batch size (1 ulp apart at
    sizes 1, 2, 4, 8 and 16 here), so buckets would tie an image to its batch."""

    def __init__(
        self,
        programs: programs_lib.Programs,
        *,
        max_batch: int,
        max_wait_s: float,
        max_waiting: int,
        metrics: prometheus.Metrics,
    ):
        self.programs, self.metrics = programs, metrics
        info = programs.artifact.manifest["images"]
        # What a request may ask: the image size and labels are the model's;
        # `steps` (None: the sampler has none) and the guidance weight are fixed
        # at export; `guidance` None: the model takes no guidance weight.
        self.shape: tuple[int, ...] = tuple(info["shape"])
        self.num_classes: int = info["num_classes"]
        self.steps: int | None = info.get("steps")
        self.guidance: float | None = info.get("guidance")
        # Text-to-image: the caption length and the tokenizer of its prompts.
        self.prompt_length, self.tokenizer = 0, None
        if "prompts" in info:
            self.prompt_length = info["prompts"]["length"]
            self.tokenizer = text.tokenizer_from_spec(
                info["prompts"]["tokenizer"],
                str(programs.artifact.directory / "tokenizer"),
            )
        self.max_batch, self.max_wait_s, self.max_waiting = (
            max_batch,
            max_wait_s,
            max_waiting,
        )
        self._jobs: collections.deque[ImageJob] = collections.deque()
        super().__init__("images", self._loop)

    def submit(self, job: ImageJob) -> None:
        with self._cond:
            if len(self._jobs) >= self.max_waiting:
                raise programs_lib.QueueFull(
                    f"{len(self._jobs)} image requests are waiting; retry later"
                )
            self._jobs.append(job)
            self._cond.notify()

    @property
    def default_guidance(self) -> float:
        """The weight a job without one samples with (1.0, ignored, when the
        model takes none)."""
        return 1.0 if self.guidance is None else self.guidance

    def captions(self, prompt: str, negative: str | None) -> tuple[np.ndarray, ...]:
        """A job's caption arrays: "" is the null caption, as is a missing
        negative prompt. ValueError(message, field) when one is longer than
        the model reads."""
        out = []
        for which, value in (("prompt", prompt), ("negative_prompt", negative)):
            ids = self.tokenizer.prompt(value) if value else []
            if len(ids) > self.prompt_length:
                raise ValueError(
                    f"'{which}' is {len(ids)} tokens; this model reads at most "
                    f"{self.prompt_length}",
                    which,
                )
            row = text.fixed_length([value or ""], self.tokenizer, self.prompt_length)
            if not value:
                row = {k: np.zeros_like(v) for k, v in row.items()}
            out += [row["text_tokens"][0], row["text_mask"][0]]
        return tuple(out)

    def warm_up(self) -> None:
        captions = self.captions("", None) if self.tokenizer else None
        self._sample(
            [ImageJob(1, 0, None, self.default_guidance, lambda _: None, captions)]
        )
        self.metrics.set("gen_jax_compiled_programs", self.programs.compiled())
        self.ready = True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._jobs:
                    self._cond.wait()
                if self._stop:
                    return
                deadline = time.monotonic() + self.max_wait_s
                batch = [self._jobs.popleft()]
                while True:
                    total = sum(j.count for j in batch)
                    if self._jobs and total + self._jobs[0].count <= self.max_batch:
                        batch.append(self._jobs.popleft())
                        continue
                    left = deadline - time.monotonic()
                    if self._jobs or left <= 0 or total >= self.max_batch:
                        break
                    self._cond.wait(left)
            try:
                self._sample(batch)
            except Exception:  # noqa: BLE001 - the server outlives a failed batch
                logging.exception("a sampler call failed; its requests end in error")
                for job in batch:
                    job.done(None)

    def _sample(self, jobs: list[ImageJob]) -> None:
        seeds, indices, labels, guidance = [], [], [], []
        for job in jobs:
            seeds += [job.seed] * job.count
            indices += range(job.count)
            labels += (
                [job.label] * job.count
                if job.label is not None
                else [i % max(self.num_classes, 1) for i in range(job.count)]
            )
            guidance += [job.guidance] * job.count
        total = len(seeds)
        pad = lambda xs, dtype: np.asarray(
            xs + [xs[0]] * (self.max_batch - total), dtype
        )
        args = [
            pad(seeds, np.int32),
            pad(list(indices), np.int32),
            pad(labels, np.int32),
            pad(guidance, np.float32),
        ]
        if self.tokenizer is not None:  # per image, like the labels
            for i in range(4):
                rows = [job.captions[i] for job in jobs for _ in range(job.count)]
                args.append(pad(rows, np.int32))
        images = np.asarray(self.programs("sample", *args))
        self.metrics.inc("gen_jax_images_generated_total", total)
        start = 0
        for job in jobs:
            job.done(images[start : start + job.count])
            start += job.count
