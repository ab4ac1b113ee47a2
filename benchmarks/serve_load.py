"""The server under load: Poisson arrivals of completion requests with random
prompt and output lengths, against `gen-jax serve` started here (continuous
batching over --slots, then the same server with one slot) or any
OpenAI-compatible --url; image requests batched vs unbatched; a soak with one
request in ten malformed.

  python -m benchmarks.serve_load --workdir=runs/lm_pydoc [--rate=8 --requests=64]
  python -m benchmarks.serve_load --url=http://127.0.0.1:8000 --model=NAME
  python -m benchmarks.serve_load --image_workdir=runs/ddpm_digits --requests=32
  python -m benchmarks.serve_load --workdir=runs/lm_pydoc --soak=1000
  python -m benchmarks.serve_load --workdir=runs/lm_pydoc --engine   # + no HTTP

Reports req/s, output tokens/s, time to first token and inter-token latency
(p50 / p99, seconds) as one JSON line per server; streamed requests, so TTFT
and ITL are what a client sees. Resident memory (VmRSS of the server process)
before and after the soak.
"""

import argparse
import concurrent.futures
import json
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

from tests import helpers

WORDS = [
    "the",
    "with",
    "statement",
    "function",
    "class",
    "object",
    "return",
    "value",
    "module",
    "import",
]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _stream(url: str, body: dict) -> dict:
    """One streamed completion: its token arrival times and status."""
    request = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    start, arrivals = time.perf_counter(), []
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            for line in r:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["text"]:
                    arrivals.append(time.perf_counter())
        status = 200
    except urllib.error.HTTPError as e:
        status = e.code
    return {
        "start": start,
        "arrivals": arrivals,
        "status": status,
        "end": time.perf_counter(),
    }


def load(
    url: str,
    model: str,
    *,
    requests: int,
    rate: float,
    max_prompt: int,
    max_tokens: int,
    seed: int,
) -> dict:
    """Poisson arrivals at `rate` req/s (0: all at once); one thread per request."""
    rng = random.Random(seed)
    asks = []
    for i in range(requests):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_prompt)))
        asks.append(
            {
                "model": model,
                "prompt": prompt,
                "seed": i,
                "temperature": 1.0,
                "max_tokens": rng.randint(max(1, max_tokens // 4), max_tokens),
            }
        )
    gaps = [rng.expovariate(rate) if rate > 0 else 0.0 for _ in asks]
    results = [None] * requests
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        futures = []
        for i, (ask, gap) in enumerate(zip(asks, gaps)):
            time.sleep(gap)
            futures.append(
                pool.submit(lambda i=i, a=ask: results.__setitem__(i, _stream(url, a)))
            )
        for f in futures:
            f.result()
    elapsed = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]
    ttft = [r["arrivals"][0] - r["start"] for r in ok if r["arrivals"]]
    itl = [b - a for r in ok for a, b in zip(r["arrivals"], r["arrivals"][1:])]
    tokens = sum(len(r["arrivals"]) for r in ok)  # chunks with text (~tokens)
    return {
        "requests": requests,
        "ok": len(ok),
        "rate": rate,
        "seconds": round(elapsed, 2),
        "req_per_s": round(len(ok) / elapsed, 3),
        "output_tokens_per_s": round(tokens / elapsed, 1),
        "ttft_p50": round(_percentile(ttft, 0.5), 4),
        "ttft_p99": round(_percentile(ttft, 0.99), 4),
        "itl_p50": round(_percentile(itl, 0.5), 4),
        "itl_p99": round(_percentile(itl, 0.99), 4),
    }


def _complete(url: str, body: dict) -> tuple[float, int]:
    """(seconds, completion tokens) of one unstreamed completion."""
    request = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as r:
        usage = json.loads(r.read())["usage"]
    return time.perf_counter() - start, usage["completion_tokens"]


def single_stream(url: str, model: str, *, max_tokens: int, repeats: int = 3) -> float:
    """Decode tokens/s of one request alone (median): the time of max_tokens
    tokens less that of one (the prefill), over the tokens after the first.
    Counted from `usage`, so tokens that decode to no text count too."""
    ask = {"model": model, "prompt": "The with statement", "temperature": 0.0}
    rates = []
    for _ in range(repeats):
        first, _ = _complete(url, {**ask, "max_tokens": 1})
        total, tokens = _complete(url, {**ask, "max_tokens": max_tokens})
        if tokens > 1:
            rates.append((tokens - 1) / (total - first))
    return round(statistics.median(rates), 1)


def images(url: str, *, requests: int, per_request: int) -> dict:
    """All requests at once; images/s end to end."""
    body = lambda i: json.dumps(
        {"n": per_request, "seed": i, "response_format": "b64_json"}
    )

    def one(i):
        request = urllib.request.Request(
            url + "/v1/images/generations",
            data=body(i).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as r:
            return len(json.loads(r.read())["data"])

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(requests) as pool:
        count = sum(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - t0
    return {
        "requests": requests,
        "images": count,
        "images_per_s": round(count / elapsed, 2),
    }


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(url: str, model: str, pid: int | None, *, requests: int) -> dict:
    """`requests` completions, 16 at a time, one in ten malformed in turn."""
    bad = [
        b'{"model": "%s", "prompt": ' % model.encode(),
        json.dumps({"model": model, "prompt": "x", "temperature": -1}).encode(),
        json.dumps({"model": model, "prompt": "x", "max_tokens": 10**6}).encode(),
        json.dumps({"model": "nope", "prompt": "x"}).encode(),
        b"[1, 2]",
    ]

    def one(i):
        data = (
            bad[i // 10 % len(bad)]
            if i % 10 == 9
            else json.dumps(
                {"model": model, "prompt": "The ", "max_tokens": 8, "seed": i}
            ).encode()
        )
        request = urllib.request.Request(
            url + "/v1/completions",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as r:
                return r.status, i % 10 == 9
        except urllib.error.HTTPError as e:
            return e.code, i % 10 == 9

    rss = []
    statuses = []
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for start in range(0, requests, 100):
            statuses += pool.map(one, range(start, min(requests, start + 100)))
            if pid:
                rss.append(round(_rss_mib(pid), 1))
    valid_ok = sum(s == 200 for s, malformed in statuses if not malformed)
    return {
        "requests": requests,
        "valid": sum(not m for _, m in statuses),
        "valid_answered_200": valid_ok,
        "malformed_4xx": sum(400 <= s < 500 for s, m in statuses if m),
        "rss_mib_per_100": rss,
    }


def engine_only(workdir: str, slots: int, *, sequences: int, max_tokens: int) -> dict:
    """The LM engine's own rate, no HTTP: `sequences` sequences of `max_tokens`
    tokens submitted at once to an in-process `lm_engine.LMEngine`."""
    import tempfile

    from gen_jax import checkpoint
    from gen_jax.deploy import artifact, export, lm_engine, programs, prometheus

    with tempfile.TemporaryDirectory() as tmp:
        export.export_run(checkpoint.open_run(workdir), tmp)
        engine = lm_engine.LMEngine(
            programs.Programs(artifact.Artifact(tmp)),
            slots=slots,
            max_waiting=sequences,
            metrics=prometheus.serving(),
        )
        tokenizer = engine.tokenizer
        engine.warm_up()
        engine.start()
        left, done = [sequences], threading.Event()

        def emit(delta, finish):
            if finish:
                left[0] -= 1
                if not left[0]:
                    done.set()

        prompt = tokenizer.prompt("The with statement")
        start = time.perf_counter()
        engine.submit(
            [
                lm_engine.Sequence(prompt, max_tokens, i, 1.0, 0, 1.0, (), emit)
                for i in range(sequences)
            ]
        )
        done.wait()
        elapsed = time.perf_counter() - start
        engine.stop()
    return {
        "engine_slots": slots,
        "tokens_per_s": round(sequences * max_tokens / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--model", default="model")
    parser.add_argument("--workdir")
    parser.add_argument("--image_workdir")
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--max_prompt", type=int, default=8, help="words")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--soak", type=int, default=0)
    parser.add_argument(
        "--engine",
        action="store_true",
        help="--workdir: also the engine alone, no HTTP",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    common = {
        "requests": args.requests,
        "rate": args.rate,
        "max_prompt": args.max_prompt,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
    }
    if args.url:
        print(json.dumps({"server": args.url, **load(args.url, args.model, **common)}))
        return
    if args.workdir and args.engine:
        for slots in (args.slots, 1):
            print(
                json.dumps(
                    engine_only(
                        args.workdir,
                        slots,
                        sequences=args.requests,
                        max_tokens=args.max_tokens,
                    )
                ),
                flush=True,
            )
    if args.workdir:
        for slots in (args.slots, 1):
            proc, url = helpers.start_server(
                f"--workdir={args.workdir}",
                f"--slots={slots}",
                "--model_name=model",
                "--max_waiting=4096",
            )
            try:
                row = {
                    "server": f"--slots={slots}",
                    **load(url, "model", **common),
                    "single_stream_tokens_per_s": single_stream(
                        url, "model", max_tokens=args.max_tokens
                    ),
                }
                print(json.dumps(row), flush=True)
                if args.soak and slots != 1:
                    print(
                        json.dumps(
                            {
                                "soak": soak(
                                    url, "model", proc.pid, requests=args.soak
                                ),
                                "alive": proc.poll() is None,
                            }
                        ),
                        flush=True,
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=120)
    if args.image_workdir:
        for batch in (8, 1):
            proc, url = helpers.start_server(
                f"--workdir={args.image_workdir}",
                f"--max_batch={batch}",
                "--max_wait_ms=20",
                "--max_waiting=4096",
            )
            try:
                row = images(url, requests=args.requests, per_request=1)
                print(json.dumps({"server": f"--max_batch={batch}", **row}), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=120)


if __name__ == "__main__":
    sys.exit(main())
