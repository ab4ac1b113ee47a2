"""Serving engines over an export artifact (`artifact.Artifact`): the LM's
continuous batching (fixed decode slots; waiting sequences prefilled into free
slots between decode steps), the images' micro-batching, and the Prometheus
metrics both report. `gen_jax/openai_api.py` puts HTTP in front of them."""

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from gen_jax import artifact, text

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class QueueFull(Exception):
    """More waiting work than the server queues: the client retries later (503)."""


class Metrics:
    """Counters, gauges and histograms, rendered in Prometheus' text format."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[tuple, float] = collections.defaultdict(float)
        self._hist: dict[str, list] = {}
        self._help: dict[str, tuple[str, str]] = {}

    def declare(self, name: str, kind: str, help_text: str) -> None:
        self._help[name] = (kind, help_text)
        if kind == "histogram":
            self._hist[name] = [[0] * len(LATENCY_BUCKETS), 0, 0.0]

    def inc(self, name: str, value: float = 1.0, **labels) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] += value

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[(name, ())] = value

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            counts, _, _ = hist = self._hist[name]
            for i, bound in enumerate(LATENCY_BUCKETS):
                counts[i] += seconds <= bound
            hist[1] += 1
            hist[2] += seconds

    def render(self) -> str:
        lines = []
        with self._lock:
            for name, (kind, help_text) in self._help.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                if kind == "histogram":
                    counts, count, total = self._hist[name]
                    for bound, c in zip(LATENCY_BUCKETS, counts):
                        lines.append(f'{name}_bucket{{le="{bound}"}} {c}')
                    lines += [
                        f'{name}_bucket{{le="+Inf"}} {count}',
                        f"{name}_sum {total}",
                        f"{name}_count {count}",
                    ]
                    continue
                for (key, labels), value in sorted(self._values.items()):
                    if key == name:
                        tags = ",".join(f'{k}="{v}"' for k, v in labels)
                        lines.append(
                            f"{name}{{{tags}}} {value:g}"
                            if tags
                            else f"{name} {value:g}"
                        )
        return "\n".join(lines) + "\n"


def declare_metrics(metrics: Metrics) -> None:
    for name, kind, help_text in (
        ("gen_jax_requests_total", "counter", "HTTP requests by endpoint and status."),
        ("gen_jax_time_to_first_token_seconds", "histogram", "Submit to first token."),
        (
            "gen_jax_inter_token_latency_seconds",
            "histogram",
            "Between a sequence's tokens.",
        ),
        ("gen_jax_generated_tokens_total", "counter", "Tokens sampled."),
        ("gen_jax_running_sequences", "gauge", "Sequences in decode slots."),
        ("gen_jax_waiting_sequences", "gauge", "Sequences waiting for a slot."),
        ("gen_jax_images_generated_total", "counter", "Images sampled."),
        (
            "gen_jax_compiled_programs",
            "gauge",
            "XLA programs compiled (warm-up included).",
        ),
    ):
        metrics.declare(name, kind, help_text)


class Programs:
    """The artifact's functions, each jitted once over its params on device
    (the KV cache donated, so decoding updates it in place)."""

    def __init__(self, art: artifact.Artifact):
        self.artifact = art
        self._params = {n: jax.device_put(art.params_of(n)) for n in art.functions}
        self._jitted = {
            name: jax.jit(exp.call, donate_argnums=(1,) if name != "sample" else ())
            for name, exp in art.functions.items()
        }

    def __call__(self, name: str, *args):
        return self._jitted[name](self._params[name], *args)

    def compiled(self) -> int:
        return sum(f._cache_size() for f in self._jitted.values())


class _Worker:
    """A daemon thread running `_loop`, woken through `_cond`; `ready` once
    `warm_up` has compiled every program."""

    def __init__(self, name: str):
        self.ready = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)


@dataclasses.dataclass
class Sequence:
    """One completion being generated (a request's choice)."""

    prompt: np.ndarray  # int32 ids
    max_tokens: int
    seed: int
    temperature: float
    top_k: int
    top_p: float
    stop: tuple[str, ...]
    # (delta text, finish reason or None), called from the engine thread.
    emit: Callable[[str, str | None], None]
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    tokens: list = dataclasses.field(default_factory=list)
    position: int = 0  # the newest token's position
    sent: int = 0  # characters of text already emitted
    last_token_at: float = 0.0


class LMEngine(_Worker):
    """Continuous batching over `prefill` and `decode`: `slots` sequences decode
    together; between decode steps, waiting sequences are prefilled (one at a
    time, prompts padded to a bucket) into free slots, and a finished sequence
    frees its slot at once. Every program compiles in `warm_up`."""

    def __init__(
        self,
        programs: Programs,
        tokenizer: text.Tokenizer,
        *,
        slots: int,
        max_waiting: int,
        metrics: Metrics,
    ):
        lm = programs.artifact.manifest["lm"]
        self.programs, self.tokenizer, self.metrics = programs, tokenizer, metrics
        self.context, self.eos_id = lm["context"], lm["eos_id"]
        self.slots, self.max_waiting = slots, max_waiting
        self.buckets = artifact.length_buckets(self.context, 16)
        self.windows = lm["decode_windows"]
        # Zeros in the exported cache's own tree and shapes, `slots` rows.
        tree, avals = artifact.arg_spec(programs.artifact.functions["prefill"], 1)
        zeros = [
            np.zeros([d if isinstance(d, int) else slots for d in a.shape], a.dtype)
            for a in avals
        ]
        # Committed to a device, like every cache a program returns: an
        # uncommitted first cache would compile each program a second time.
        self.cache = jax.device_put(jax.tree.unflatten(tree, zeros), jax.devices()[0])
        self.active: list[Sequence | None] = [None] * slots
        self.waiting: collections.deque[Sequence] = collections.deque()
        super().__init__("lm-engine")

    def submit(self, sequences: list[Sequence]) -> None:
        """Queues a request's sequences, all or none (QueueFull)."""
        with self._cond:
            if len(self.waiting) + len(sequences) > self.max_waiting:
                raise QueueFull(
                    f"{len(self.waiting)} sequences are waiting (the most is "
                    f"{self.max_waiting}); retry later"
                )
            self.waiting.extend(sequences)
            self._cond.notify()

    def warm_up(self) -> None:
        """Compiles prefill at every bucket and decode at every window (this
        writes slot 0, which is free)."""
        for size in self.buckets:
            self._run_prefill(0, np.zeros(size, np.int32), 1, 0, 1.0, 0, 1.0)
        for window in self.windows:
            self._run_decode(window)
        self.metrics.set("gen_jax_compiled_programs", self.programs.compiled())
        self.ready = True

    def _run_prefill(self, slot, padded, length, seed, temperature, top_k, top_p):
        i32, f32 = (
            lambda x: np.asarray([x], np.int32),
            lambda x: np.asarray([x], np.float32),
        )
        token, self.cache = self.programs(
            "prefill",
            self.cache,
            i32(slot),
            padded[None],
            i32(length),
            i32(seed),
            f32(temperature),
            i32(top_k),
            f32(top_p),
        )
        return int(token[0])

    def _run_decode(self, window: int | None = None) -> np.ndarray:
        """One decode step over every slot (free ones too), attending over the
        smallest exported window that holds every active position."""
        rows = [
            s or Sequence(np.zeros(1, np.int32), 0, 0, 0.0, 0, 1.0, (), None)
            for s in self.active
        ]
        column = lambda f, dtype: np.asarray([f(s) for s in rows], dtype)
        if window is None:
            last = max(s.position for s in rows)
            window = next(w for w in self.windows if w > last)
        next_S, self.cache = self.programs(
            f"decode_{window}",
            self.cache,
            column(lambda s: s.tokens[-1] if s.tokens else 0, np.int32),
            column(lambda s: s.position, np.int32),
            column(lambda s: s.seed, np.int32),
            column(lambda s: s.temperature, np.float32),
            column(lambda s: s.top_k, np.int32),
            column(lambda s: s.top_p, np.float32),
        )
        return np.asarray(next_S)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self.waiting and not any(self.active):
                    self._cond.wait()
                if self._stop:
                    return
                admit = []
                for slot, seq in enumerate(self.active):
                    if seq is None and self.waiting:
                        admit.append((slot, self.waiting.popleft()))
                        self.active[slot] = admit[-1][1]
            try:
                self._step(admit)
            except Exception:  # noqa: BLE001 - the server outlives a failed step
                logging.exception("a decode step failed; its sequences end in error")
                for slot, seq in enumerate(self.active):
                    if seq is not None:
                        self.active[slot] = None
                        seq.emit("", "error")

    def _step(self, admit: list[tuple[int, Sequence]]) -> None:
        """Prefills the admitted sequences, then one decode step over all slots."""
        for slot, seq in admit:
            length = len(seq.prompt)
            size = next(b for b in self.buckets if b >= length)
            padded = np.zeros(size, np.int32)
            padded[:length] = seq.prompt
            seq.position = length
            token = self._run_prefill(
                slot,
                padded,
                length,
                seq.seed,
                seq.temperature,
                seq.top_k,
                seq.top_p,
            )
            self._append(slot, seq, token)
        self._gauges()
        if any(self.active):
            next_S = self._run_decode()
            for slot, seq in enumerate(self.active):
                if seq is not None:
                    seq.position += 1
                    self._append(slot, seq, int(next_S[slot]))
            self._gauges()

    def _gauges(self) -> None:
        self.metrics.set(
            "gen_jax_running_sequences", sum(s is not None for s in self.active)
        )
        self.metrics.set("gen_jax_waiting_sequences", len(self.waiting))
        self.metrics.set("gen_jax_compiled_programs", self.programs.compiled())

    def _append(self, slot: int, seq: Sequence, token: int) -> None:
        now = time.perf_counter()
        if seq.tokens:
            self.metrics.observe(
                "gen_jax_inter_token_latency_seconds", now - seq.last_token_at
            )
        else:
            self.metrics.observe(
                "gen_jax_time_to_first_token_seconds", now - seq.submitted
            )
        seq.last_token_at = now
        self.metrics.inc("gen_jax_generated_tokens_total")
        finish = None
        if token == self.eos_id:
            finish = "stop"  # the end-of-text token is not part of the text
        else:
            seq.tokens.append(token)
            if len(seq.tokens) >= seq.max_tokens or seq.position + 1 >= self.context:
                finish = "length"
        full = self.tokenizer.decode(np.asarray(seq.tokens, np.int32))
        end, hold = len(full), 0
        for stop in seq.stop:
            at = full.find(stop, max(0, seq.sent - len(stop)))
            if at >= 0 and at < end:
                end, finish = at, "stop"
        if finish is None:  # hold back what may be a stop's start or half a character
            hold = max([_overlap(full, s) for s in seq.stop] + [0])
            while full[: end - hold].endswith("\ufffd"):
                hold += 1
        delta = full[seq.sent : end - hold]
        seq.sent += len(delta)
        if finish is not None:
            self.active[slot] = None
        if delta or finish:
            seq.emit(delta, finish)


def _overlap(text_: str, stop: str) -> int:
    """The longest suffix of `text_` that is a proper prefix of `stop`."""
    for n in range(min(len(stop) - 1, len(text_)), 0, -1):
        if text_.endswith(stop[:n]):
            return n
    return 0


@dataclasses.dataclass
class ImageJob:
    count: int
    seed: int
    label: int | None  # None: every class in turn, as `gen-jax sample`
    guidance: float
    # images [count, H, W, C] in [-1, 1], or None when sampling failed
    done: Callable[[np.ndarray | None], None]


class ImageBatcher(_Worker):
    """Micro-batching: jobs that arrive within `max_wait_s` of the first share
    one sampler call of `max_batch` images (padded). Image i of a job is image i
    of `gen-jax sample --seed=SEED`, bitwise the same alone or batched: keys,
    labels and guidance are per image, and every call has the one size, as
    XLA:CPU's convolutions round differently per batch size (1 ulp apart at
    sizes 1, 2, 4, 8 and 16 here), so buckets would tie an image to its batch."""

    def __init__(
        self,
        programs: Programs,
        *,
        max_batch: int,
        max_wait_s: float,
        max_waiting: int,
        metrics: Metrics,
    ):
        self.programs, self.metrics = programs, metrics
        info = programs.artifact.manifest["images"]
        self.num_classes, self.guidance = info["num_classes"], info.get("guidance", 1.0)
        self.max_batch, self.max_wait_s, self.max_waiting = (
            max_batch,
            max_wait_s,
            max_waiting,
        )
        self._jobs: collections.deque[ImageJob] = collections.deque()
        super().__init__("images")

    def submit(self, job: ImageJob) -> None:
        with self._cond:
            if len(self._jobs) >= self.max_waiting:
                raise QueueFull(
                    f"{len(self._jobs)} image requests are waiting; retry later"
                )
            self._jobs.append(job)
            self._cond.notify()

    def warm_up(self) -> None:
        self._sample([ImageJob(1, 0, None, self.guidance, lambda _: None)])
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
        images = np.asarray(
            self.programs(
                "sample",
                pad(seeds, np.int32),
                pad(list(indices), np.int32),
                pad(labels, np.int32),
                pad(guidance, np.float32),
            )
        )
        self.metrics.inc("gen_jax_images_generated_total", total)
        start = 0
        for job in jobs:
            job.done(images[start : start + job.count])
            start += job.count
