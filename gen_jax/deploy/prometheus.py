"""The server's Prometheus metrics: counters, gauges and latency histograms,
rendered in Prometheus' text format for GET /metrics."""

import collections
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


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


def serving() -> Metrics:
    """The server's metrics, declared (so /metrics lists each from the start)."""
    metrics = Metrics()
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
        (
            "gen_jax_abandoned_sequences_total",
            "counter",
            "Sequences dropped because their client left.",
        ),
        ("gen_jax_images_generated_total", "counter", "Images sampled."),
        (
            "gen_jax_compiled_programs",
            "gauge",
            "XLA programs compiled (warm-up included).",
        ),
    ):
        metrics.declare(name, kind, help_text)
    return metrics
