"""The LM engine: continuous batching over an artifact's `prefill` and
`decode` programs (fixed decode slots; waiting sequences prefilled into free
slots between decode steps), streaming each sequence's text as it grows."""

import collections
import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np
from absl import logging

from gen_jax import text
from gen_jax.deploy import artifact, prometheus, scoring
from gen_jax.deploy import programs as programs_lib


@dataclasses.dataclass
class Sequence:
    """One completion being generated (a request's choice)."""

    prompt: np.ndarray  # int32 ids
    max_tokens: int  # 0: the prompt alone is scored (echo)
    seed: int
    temperature: float
    top_k: int
    top_p: float
    stop: tuple[str, ...]
    # (delta text, finish reason or None, the Scored tokens since the last
    # call), called from the engine thread.
    emit: Callable[[str, str | None, list], None]
    logprobs: int | None = None  # None: none; k: each token and its k likeliest
    score_prompt: bool = False  # the prompt's tokens scored too (echo)
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    tokens: list = dataclasses.field(default_factory=list)
    position: int = 0  # the newest token's position
    sent: int = 0  # characters of text already emitted
    scored: list = dataclasses.field(default_factory=list)  # not yet emitted
    last_token_at: float = 0.0
    # Set (by the server, when the client has left) to drop the sequence: its
    # slot frees before the next decode step, a waiting one never starts.
    abandoned: bool = False

    def score(self, out: dict, row: int, token: int) -> None:
        """Keeps `token`'s log-probability from program output `out` (row
        `row`), if the sequence asked for them."""
        if self.logprobs is not None:
            self.scored.append(scoring.scored(out, row, token, self.logprobs))


class LMEngine(programs_lib.Worker):
    """Continuous batching over `prefill` and `decode`: `slots` sequences decode
    together; between decode steps, waiting sequences are prefilled (one at a
    time, prompts padded to a bucket) into free slots, and a finished sequence
    frees its slot at once. Every program compiles in `warm_up`."""

    def __init__(
        self,
        programs: programs_lib.Programs,
        *,
        slots: int,
        max_waiting: int,
        metrics: prometheus.Metrics,
    ):
        art = programs.artifact
        lm = art.manifest["lm"]
        self.programs, self.metrics = programs, metrics
        self.tokenizer = text.tokenizer_from_spec(
            lm["tokenizer"], str(art.directory / "tokenizer")
        )
        self.context, self.eos_id = lm["context"], lm["eos_id"]
        self.top_logprobs = lm["top_logprobs"]  # the most a request may ask
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
        super().__init__("lm-engine", self._loop)

    def submit(self, sequences: list[Sequence]) -> None:
        """Queues a request's sequences, all or none (QueueFull)."""
        with self._cond:
            if len(self.waiting) + len(sequences) > self.max_waiting:
                raise programs_lib.QueueFull(
                    f"{len(self.waiting)} sequences are waiting (the most is "
                    f"{self.max_waiting}); retry later"
                )
            self.waiting.extend(sequences)
            self._cond.notify()

    def warm_up(self) -> None:
        """Compiles prefill at every bucket and decode at every window (this
        writes slot 0, which is free)."""
        for size in self.buckets:  # (scoring the prompt is a branch inside)
            self._run_prefill(0, np.zeros(size, np.int32), 1, 0, 1.0, 0, 1.0, 0)
        for window in self.windows:
            self._run_decode(window)
        self.metrics.set("gen_jax_compiled_programs", self.programs.compiled())
        self.ready = True

    def _run_prefill(self, slot, padded, length, seed, *controls) -> dict:
        temperature, top_k, top_p, score_prompt = controls
        i32, f32 = (
            lambda x: np.asarray([x], np.int32),
            lambda x: np.asarray([x], np.float32),
        )
        out, self.cache = self.programs(
            "prefill",
            self.cache,
            i32(slot),
            padded[None],
            i32(length),
            i32(seed),
            f32(temperature),
            i32(top_k),
            f32(top_p),
            i32(score_prompt),
        )
        return jax.device_get(out)

    def _run_decode(self, window: int | None = None) -> dict:
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
        out, self.cache = self.programs(
            f"decode_{window}",
            self.cache,
            column(lambda s: s.tokens[-1] if s.tokens else 0, np.int32),
            column(lambda s: s.position, np.int32),
            column(lambda s: s.seed, np.int32),
            column(lambda s: s.temperature, np.float32),
            column(lambda s: s.top_k, np.int32),
            column(lambda s: s.top_p, np.float32),
        )
        return jax.device_get(out)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self.waiting and not any(self.active):
                    self._cond.wait()
                if self._stop:
                    return
                self._drop_abandoned()
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
                        seq.emit("", "error", [])

    def _drop_abandoned(self) -> None:
        """Frees the slots (and queue places) of sequences whose client left."""
        dropped = [s for s in self.waiting if s.abandoned]
        if dropped:
            self.waiting = collections.deque(s for s in self.waiting if not s.abandoned)
        for slot, seq in enumerate(self.active):
            if seq is not None and seq.abandoned:
                self.active[slot] = None
                dropped.append(seq)
        if dropped:
            self.metrics.inc("gen_jax_abandoned_sequences_total", len(dropped))

    def _step(self, admit: list[tuple[int, Sequence]]) -> None:
        """Prefills the admitted sequences, then one decode step over all slots."""
        for slot, seq in admit:
            length = len(seq.prompt)
            size = next(b for b in self.buckets if b >= length)
            padded = np.zeros(size, np.int32)
            padded[:length] = seq.prompt
            seq.position = length
            out = self._run_prefill(
                slot,
                padded,
                length,
                seq.seed,
                seq.temperature,
                seq.top_k,
                seq.top_p,
                int(seq.score_prompt),
            )
            if seq.score_prompt:
                seq.scored = scoring.prompt_scored(out, seq.prompt, seq.logprobs or 0)
            if seq.max_tokens == 0:  # echo alone: the prompt, scored
                self.active[slot] = None
                seq.emit("", "length", seq.scored)
                continue
            self._append(slot, seq, out, 0)
        self._gauges()
        if any(self.active):
            out = self._run_decode()
            for slot, seq in enumerate(self.active):
                if seq is not None:
                    seq.position += 1
                    self._append(slot, seq, out, slot)
            self._gauges()

    def _gauges(self) -> None:
        self.metrics.set(
            "gen_jax_running_sequences", sum(s is not None for s in self.active)
        )
        self.metrics.set("gen_jax_waiting_sequences", len(self.waiting))
        self.metrics.set("gen_jax_compiled_programs", self.programs.compiled())

    def _append(self, slot: int, seq: Sequence, out: dict, row: int) -> None:
        """Adds row `row`'s token of program output `out` to `seq` (in `slot`),
        and emits what of its text is final."""
        token = int(out["token"][row])
        seq.score(out, row, token)  # the end-of-text token too, as vLLM does
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
            scored, seq.scored = seq.scored, []
            seq.emit(delta, finish, scored)


def _overlap(text_: str, stop: str) -> int:
    """The longest suffix of `text_` that is a proper prefix of `stop`."""
    for n in range(min(len(stop) - 1, len(text_)), 0, -1):
        if text_.endswith(stop[:n]):
            return n
    return 0
