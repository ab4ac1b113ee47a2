"""First-step latency with a cold and a warm persistent compilation cache: the
wall time of `gen-jax train CONFIG --config.train.num_steps=1` (evals off) in a
fresh workdir, run twice against one fresh cache directory.

  python -m benchmarks.first_step --config=configs/lm_pydoc.py
  python -m benchmarks.first_step --config=configs/ddpm_cifar10.py --synthetic

`--synthetic` swaps in the dataset's synthetic twin (same shapes) for datasets
that cannot be downloaded here. Prints one JSON line.
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import time


def _train(config: str, workdir: str, cache: str, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [
            "gen-jax",
            "train",
            f"--config={config}",
            f"--workdir={workdir}",
            "--config.train.num_steps=1",
            "--config.evals={}",
            f"--compilation_cache_dir={cache}",
            *extra,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument(
        "--override", action="append", default=[], help="a.b=value (repeatable)"
    )
    args = parser.parse_args()
    extra = ["--config.data.name=synthetic"] if args.synthetic else []
    extra += [f"--config.{o}" for o in args.override]
    root = tempfile.mkdtemp(prefix="first_step_")
    try:
        cache = f"{root}/cache"
        cold = _train(args.config, f"{root}/a", cache, extra)
        warm = _train(args.config, f"{root}/b", cache, extra)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "config": args.config,
                "cold_cache_s": round(cold, 1),
                "warm_cache_s": round(warm, 1),
                "ratio": round(cold / warm, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
