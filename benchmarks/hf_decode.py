"""Greedy decode tokens/s: gen_jax's KV-cache `generate` vs Hugging Face
`generate` (PyTorch eager) on the same SmolLM2-135M-shaped random weights, the
HF side loaded from what `export-hf` wrote.

  pip install -e ".[hf]"
  python -m benchmarks.hf_decode [--batch=1] [--prompt_len=32] [--new_tokens=128] [--serve]

Weights: transformers builds a random LlamaForCausalLM of SmolLM2-135M's shape
(30 layers, width 576, 9 / 3 heads, vocab 49152, tied), `import-hf` reads it,
`export-hf` writes it back, and transformers loads that export. Both sides run
float32 on the CPU, timed after a warm-up (gen_jax: compiled once), median of
--repeats; PyTorch runs in its own process so the two thread pools never share
the cores. Prints one JSON line with both rates, their ratio and whether the
greedy tokens agree. `--serve` adds one stream through `gen-jax serve`
(--slots=1, streamed over HTTP), tokens after the first per second.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOLLM2 = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
}


def _make_weights(directory: pathlib.Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2))
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # any fast tokenizer
        src = ROOT / "tests" / "fixtures" / "hf" / "qwen2" / name
        (directory / name).write_bytes(src.read_bytes())


def _prompt(args) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, SMOLLM2["vocab_size"], (args.batch, args.prompt_len))


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up (gen_jax: the compile)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def gen_jax_decode(workdir: str, args) -> tuple[list[float], np.ndarray]:
    import jax

    from gen_jax import checkpoint
    from gen_jax.families import lm

    run = checkpoint.open_run(workdir)
    model, _ = lm.make_model(run.config)
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    prompt = _prompt(args).astype(np.int32)
    seeds = np.zeros(args.batch, np.int32)
    length = args.prompt_len + args.new_tokens
    out = {}

    def call():
        out["tokens"] = jax.block_until_ready(
            generate(run.params, prompt, seeds, length, 0.0)
        )

    return _time(call, args.repeats), np.asarray(out["tokens"])


def torch_decode(export_dir: str, args) -> tuple[list[float], np.ndarray]:
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count())
    model = transformers.AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=torch.float32
    ).eval()
    prompt = torch.from_numpy(_prompt(args))
    out = {}

    def call():
        with torch.no_grad():
            out["tokens"] = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,  # never stop early at an EOS
                do_sample=False,
                pad_token_id=0,
            )

    return _time(call, args.repeats), out["tokens"].numpy()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt_len", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also time one stream through `gen-jax serve --slots=1` (HTTP, SSE)",
    )
    parser.add_argument("--torch_only", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_only:  # the PyTorch side, in its own process
        times, tokens = torch_decode(args.torch_only, args)
        np.save(pathlib.Path(args.torch_only) / "tokens.npy", tokens)
        print(json.dumps(times))
        return

    from configs import lm_pydoc
    from gen_jax import hf

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hf_decode_"))
    _make_weights(tmp / "random")
    hf.import_run(str(tmp / "random"), str(tmp / "run"), lm_pydoc.get_config())
    hf.export_run(str(tmp / "run"), str(tmp / "export"))
    jax_times, jax_tokens = gen_jax_decode(str(tmp / "run"), args)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.hf_decode",
        f"--torch_only={tmp / 'export'}",
    ]
    cmd += [
        f"--{k}={v}" for k, v in vars(args).items() if k not in ("torch_only", "serve")
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    torch_times = json.loads(result.stdout.strip().splitlines()[-1])
    torch_tokens = np.load(tmp / "export" / "tokens.npy")
    new = args.batch * args.new_tokens
    record = {
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "gen_jax_tokens_per_s": new / statistics.median(jax_times),
        "torch_tokens_per_s": new / statistics.median(torch_times),
        "greedy_tokens_equal": float(np.mean(jax_tokens == torch_tokens)),
    }
    record["speedup"] = record["gen_jax_tokens_per_s"] / record["torch_tokens_per_s"]
    if args.serve:
        from benchmarks import serve_load
        from tests import helpers

        context = 1 << (args.prompt_len + args.new_tokens).bit_length()
        proc, url = helpers.start_server(
            f"--workdir={tmp / 'run'}",
            "--slots=1",
            f"--context={context}",
            "--model_name=model",
            timeout=1800,
        )
        try:
            rate = serve_load.single_stream(
                url, "model", max_tokens=args.new_tokens, repeats=args.repeats
            )
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        record["server_single_stream_tokens_per_s"] = rate
        record["server_vs_torch"] = rate / record["torch_tokens_per_s"]
    print(json.dumps(record))


if __name__ == "__main__":
    main()
