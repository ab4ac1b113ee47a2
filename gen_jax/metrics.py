"""Metric writers (TensorBoard event files and metrics.jsonl) on process 0, the
NaN guard, and the training log's window of averages."""

import json
import math
import os
import socket
import time

import jax
import numpy as np
from absl import logging
from clu import metrics as clu_metrics
from etils import epath

from gen_jax import png


class NonFiniteLossError(FloatingPointError):
    """Raised when a step produced a non-finite loss or gradient norm."""


class _TensorBoard:
    """`events.out.tfevents.*` in TensorBoard's record format, written with
    TensorBoard's own record writer and protos (as PyTorch's SummaryWriter
    does) through epath, so local and gs:// workdirs alike. Not clu's writer,
    which imports TensorFlow (train.py's docstring says what we take from clu).
    Scalars are `simple_value`s, images PNGs, as TensorBoard reads them."""

    def __init__(self, workdir: epath.Path, start_step: int | None):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._pb, self._summary = event_pb2, summary_pb2
        # TensorFlow's name: one file per writer, so a resumed run adds its own.
        name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
        self._records = RecordWriter((workdir / name).open("wb"))
        self._add(file_version="brain.Event:2")
        if start_step is not None:
            # As TensorFlow's Supervisor marks a (re)start: TensorBoard drops
            # the earlier files' events from this step on, which the run redoes.
            start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
            self._add(step=start_step + 1, session_log=start)

    def _add(self, **event) -> None:
        event = self._pb.Event(wall_time=time.time(), **event)
        self._records.write(event.SerializeToString())
        self._records.flush()

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        Value = self._summary.Summary.Value
        values = [Value(tag=k, simple_value=v) for k, v in scalars.items()]
        self._add(step=step, summary=self._summary.Summary(value=values))

    def write_images(self, step: int, pngs: dict[str, tuple[bytes, tuple]]) -> None:
        """{tag: (PNG bytes, its HWC shape)}."""
        Value, Image = self._summary.Summary.Value, self._summary.Summary.Image
        values = [
            Value(
                tag=k,
                image=Image(height=h, width=w, colorspace=c, encoded_image_string=data),
            )
            for k, (data, (h, w, c)) in pngs.items()
        ]
        self._add(step=step, summary=self._summary.Summary(value=values))

    def close(self) -> None:
        self._records.close()


class Writer:
    """Writes scalars to TensorBoard and `metrics.jsonl`, images to TensorBoard and PNG.

    Only process 0 writes; other processes log nothing.
    """

    def __init__(self, workdir: str, start_step: int | None = None):
        """`start_step`: the step a training run starts (or resumes) from;
        what the workdir logged after it goes. None (a tool adding rows to
        a run, e.g. `gen-jax evaluate`): nothing goes."""
        self.workdir = epath.Path(workdir)  # local or gs://
        self.active = jax.process_index() == 0
        if self.active:
            self._tb = _TensorBoard(self.workdir, start_step)
            jsonl = self.workdir / "metrics.jsonl"
            if start_step is not None:
                _drop_rows_after(jsonl, start_step)
            # Open for the whole run; closed in close(). On Cloud Storage each
            # flush uploads the file again (small: one line per log step).
            self._jsonl = jsonl.open("a")

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        scalars = {k: float(v) for k, v in scalars.items()}
        self._tb.write_scalars(step, scalars)
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()

    def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """Images are HWC uint8 grids; also saved as `<name>_<step>.png`."""
        if not self.active:
            return
        pngs = {k: (png.encode(v), v.shape) for k, v in images.items()}  # encoded once
        self._tb.write_images(step, pngs)
        for name, (data, _) in pngs.items():
            path = self.workdir / f"{name.replace('/', '_')}_{step}.png"
            path.write_bytes(data)

    def write_eval(self, step: int, name: str, results: dict) -> None:
        """An evaluator's results: scalars as `eval/<name>/<key>` (and one log
        line), images (HWC uint8) to TensorBoard and PNG."""
        scalars = {f"eval/{name}/{k}": v for k, v in results.items() if np.ndim(v) == 0}
        images = {f"eval/{name}/{k}": v for k, v in results.items() if np.ndim(v) == 3}
        if scalars:
            self.write_scalars(step, scalars)
            text = "  ".join(
                f"{k} {v:.4g}" for k, v in results.items() if np.ndim(v) == 0
            )
            logging.info("step %d  eval/%s  %s", step, name, text)
        if images:
            self.write_images(step, images)

    def close(self) -> None:
        if self.active:
            self._tb.close()
            self._jsonl.close()


def _drop_rows_after(path: epath.Path, step: int) -> None:
    """A run resumed from the checkpoint at `step` logs the steps after it
    again (the same values, training being deterministic): their earlier rows
    go, and so does a line cut short by a kill, so the file reads as one run."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    if len(keep) < len(lines):
        path.write_text("".join(f"{line}\n" for line in keep))


def check_finite(step: int, metrics: dict[str, float]) -> None:
    """Stops the run when a loss or gradient norm of `step` is not finite."""
    bad = {
        k: v
        for k, v in metrics.items()
        if k.endswith(("/loss", "grad_norm")) and not math.isfinite(v)
    }
    if bad:
        raise NonFiniteLossError(
            f"non-finite values at step {step}: {bad}. The run stopped before saving this "
            "state; the last good checkpoint is intact. Lower the learning rate (or "
            "check the data) and restart with the same --workdir to resume from it."
        )


def measure_matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a jitted float32 n x n matmul on the default device: the best
    of `repeats` (a peak; on a shared host the median wanders with the load)."""
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


# Dense bf16 peak FLOP/s per JAX device, matched as substrings of
# `device.device_kind` in this order (so "H100 PCIe" wins over "H100"). TPU v2/v3
# devices are single cores (half a chip); v4 and later are whole chips.
PEAK_BF16_FLOPS = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L4": 121e12,
    "TPU v6 lite": 918e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v4": 275e12,
    "TPU v3": 61.5e12,
    "TPU v2": 22.5e12,
}


def peak_flops(per_device: float = 0.0) -> tuple[float, str]:
    """Peak FLOP/s of the whole job for MFU, and where the figure came from.

    `per_device` > 0 is taken as given; a known GPU/TPU kind uses its datasheet
    bf16 peak; otherwise a float32 matmul is timed once. XLA:CPU runs one
    matmul on all cores, so on CPU that figure is per host."""
    if per_device > 0:
        return per_device * jax.device_count(), "flag"
    kind = jax.devices()[0].device_kind
    for name, value in PEAK_BF16_FLOPS.items():
        if name in kind:
            return value * jax.device_count(), f"bf16 datasheet ({name})"
    measured = measure_matmul_flops()
    hosts = (
        jax.process_count() if jax.default_backend() == "cpu" else jax.device_count()
    )
    return measured * hosts, "measured float32 matmul"


def image_grid(images_NHWC: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tiles images in [-1, 1] into one uint8 HWC grid with a 1-pixel border;
    images smaller than 32 px are enlarged (nearest) so the grid is legible."""
    scale = max(1, 32 // images_NHWC.shape[1])
    images_NHWC = np.repeat(np.repeat(images_NHWC, scale, axis=1), scale, axis=2)
    n, h, w, c = images_NHWC.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, c), 255, np.uint8)
    pixels = png.to_uint8(images_NHWC)
    for i in range(n):
        r, col = divmod(i, columns)
        grid[
            1 + r * (h + 1) : 1 + r * (h + 1) + h,
            1 + col * (w + 1) : 1 + col * (w + 1) + w,
        ] = pixels[i]
    return grid


class LogWindow:
    """Holds each step's device metrics until the next step is dispatched, then
    fetches them (so the device never idles), checks them for NaN and adds
    them to the log window's `clu.metrics.Average`s.

    A phase that runs every n steps reports `<phase>/updates` (1 or 0) with
    each step; its other metrics count only in its updates (weight 0
    otherwise), so a log window holds their exact mean whatever its alignment
    with n (after a resume, in a final partial window)."""

    def __init__(self):
        self.pending = None
        self.window: dict[str, clu_metrics.Average] = {}
        self.weight_key: dict[str, str | None] = {}  # metric -> its "/updates"

    def push(self, step: int, device_metrics) -> None:
        self.flush()
        self.pending = (step, device_metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, device_metrics = self.pending
        self.pending = None
        values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        check_finite(step, values)
        if not self.weight_key:  # the same keys every step
            phases = [k[: -len("updates")] for k in values if k.endswith("/updates")]
            for key in values:
                owners = [p for p in phases if key.startswith(p)]
                owner = max(owners, key=len, default=None)
                self.weight_key[key] = owner and owner + "updates"
        for key, value in values.items():
            if key.endswith("/updates"):
                continue
            weight = values[self.weight_key[key]] if self.weight_key[key] else 1.0
            # Host scalars: merging them is plain numpy arithmetic, no dispatch.
            one = clu_metrics.Average(
                total=np.float64(weight * value), count=np.float64(weight)
            )
            old = self.window.get(key)
            self.window[key] = one if old is None else old.merge(one)

    def mean(self) -> dict[str, float]:
        """The window's averages (a phase with no update in it logs nothing)."""
        self.flush()
        out = {k: float(a.compute()) for k, a in self.window.items() if a.count}
        self.window = {}
        return out
