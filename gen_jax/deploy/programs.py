"""What both serving engines stand on: an artifact's functions jitted once on
device, the worker thread an engine runs them in, and the full-queue error."""

import threading
from collections.abc import Callable

import jax

from gen_jax.deploy import artifact


class QueueFull(Exception):
    """More waiting work than the server queues: the client retries later (503)."""


class Programs:
    """The artifact's functions, each jitted once over its params on device
    (the KV cache donated, so decoding updates it in place)."""

    def __init__(self, art: artifact.Artifact):
        self.artifact = art
        # One device copy; each function takes its leaves of it (the LM's
        # prefill and decode windows share every weight).
        on_device = jax.device_put(art.params)
        self._params = {n: art.params_of(n, on_device) for n in art.functions}
        self._jitted = {
            name: jax.jit(exp.call, donate_argnums=(1,) if name != "sample" else ())
            for name, exp in art.functions.items()
        }

    def __call__(self, name: str, *args):
        return self._jitted[name](self._params[name], *args)

    def compiled(self) -> int:
        return sum(f._cache_size() for f in self._jitted.values())


class Worker:
    """A daemon thread running `loop`, which waits on `_cond` and returns once
    `_stop` is set; `ready` once the engine's `warm_up` has compiled every
    program."""

    def __init__(self, name: str, loop: Callable[[], None]):
        self.ready = False
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)
