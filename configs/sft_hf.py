"""LoRA supervised fine-tuning of an imported Hugging Face decoder on a user's
JSON-lines data ({"messages": [{"role", "content"}, ...]} or {"prompt",
"completion"} per line), rendered with the model's chat template, the loss on
assistant tokens only, examples packed whole.

  gen-jax import-hf --hf_dir=/path/to/SmolLM2-135M-Instruct --workdir=runs/smollm2
  gen-jax train --config=configs/sft_hf.py:base=runs/smollm2,train_file=train.jsonl,eval_file=eval.jsonl \\
    --workdir=runs/sft_smollm2
  gen-jax export-hf --workdir=runs/sft_smollm2 --out=runs/sft_smollm2_hf

`base` is an import-hf workdir: its config.json gives the model and tokenizer,
its checkpoint the frozen weights. `full` trains every weight. `:smoke` runs the
recipe on a tiny byte-level model and the embedded pydoc pairs.
"""

import json
import pathlib

from configs import base, lm_pydoc


def get_config(arg: str | None = None):
    arg = base.parse_arg(
        arg, smoke=False, full=False, base="runs/hf_model", train_file="", eval_file=""
    )
    c = lm_pydoc.get_config()
    base.sft_defaults(c, "jsonl")
    c.data.update(train_file=arg.train_file, eval_file=arg.eval_file or arg.train_file)
    c.data.seq_len = 1025
    imported = pathlib.Path(arg.base, "config.json")
    if imported.is_file() and not arg.smoke:  # the imported model (JSON: no gen_jax)
        saved = json.loads(imported.read_text())
        c.model.update(
            {
                k: tuple(v) if isinstance(v, list) else v
                for k, v in saved["model"].items()
            }
        )
        c.data.update(tokenizer="hf", tokenizer_dir=saved["data"]["tokenizer_dir"])
    c.train.init_from = arg.base
    c.train.update(
        num_steps=500, batch_size=8, log_every_steps=10, ckpt_every_steps=100
    )
    c.optim.model.update(lr=2e-4, warmup_steps=20, weight_decay=0.0)
    if arg.full:
        c.lora.rank = 0
        c.optim.model.lr = 2e-5
    c.evals.heldout.update(every_steps=100, batch_size=8, perplexity=True)
    if arg.smoke:
        base.shrink_for_smoke(c)
        c.data.update(name="pydoc_qa", tokenizer="byte", seq_len=129)
        c.train.init_from = ""
        c.evals.heldout.batch_size = 8
    return c
