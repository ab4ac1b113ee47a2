"""Hugging Face import / export, checked against transformers' own numbers: the
fixtures under tests/fixtures/hf/ were written by tests/fixtures/make_hf.py with
transformers (float32 logits on 300 tokens, greedy `generate`), so no torch here."""

import json
import pathlib

import jax
import numpy as np
import pytest

from configs import lm_pydoc
from gen_jax import checkpoint, hf, text
from gen_jax.families import lm
from tests import helpers

FIXTURES = pathlib.Path(helpers.ROOT) / "tests" / "fixtures" / "hf"
KINDS = ("llama", "qwen2", "qwen3")


def _import(kind: str, workdir) -> checkpoint.Run:
    hf.import_run(str(FIXTURES / kind), str(workdir), lm_pydoc.get_config())
    return checkpoint.open_run(str(workdir))


@pytest.mark.parametrize("kind", KINDS)
def test_imported_logits_and_greedy_tokens_match_transformers(kind, tmp_path):
    run = _import(kind, tmp_path / kind)
    expected = np.load(FIXTURES / kind / "expected.npz")
    strings = json.loads((FIXTURES / kind / "expected.json").read_text())
    model, tokenizer = lm.make_model(run.config)
    params = {"params": run.params["model"]}

    logits, _ = jax.jit(model.apply)(params, expected["input_ids"][None])
    diff = np.abs(np.asarray(logits[0]) - expected["logits"]).max()
    assert diff <= 1e-4, diff
    assert expected["logits"].std() > 1.0  # far from uniform: a wrong map shows

    prompt = tokenizer.prompt(strings["prompt"])
    np.testing.assert_array_equal(prompt, expected["prompt_ids"])  # <s> for llama
    greedy = expected["greedy"]
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    tokens = generate(run.params, prompt[None], np.zeros(1, np.int32), len(greedy), 0.0)
    np.testing.assert_array_equal(np.asarray(tokens[0]), greedy)
    if strings["chat"]:
        rendered = text.render_chat(
            tokenizer, strings["messages"], add_generation_prompt=False
        )
        assert rendered == strings["chat"]


def test_export_then_import_is_bitwise_identical(tmp_path):
    run = _import("llama", tmp_path / "a")  # untied, llama3 RoPE, sharded files
    hf.export_run(str(tmp_path / "a"), str(tmp_path / "out"))
    exported = json.loads((tmp_path / "out" / "config.json").read_text())
    original = json.loads((FIXTURES / "llama" / "config.json").read_text())
    assert hf.model_fields(exported) == hf.model_fields(original)
    again = _import_dir(tmp_path / "out", tmp_path / "b")
    for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (
        FIXTURES / "llama" / "tokenizer.json"
    ).read_bytes()


def _import_dir(hf_dir, workdir) -> checkpoint.Run:
    hf.import_run(str(hf_dir), str(workdir), lm_pydoc.get_config())
    return checkpoint.open_run(str(workdir))


@pytest.mark.parametrize(
    "change, words",
    [
        ({"architectures": ["GPT2LMHeadModel"]}, "GPT2LMHeadModel is not supported"),
        (
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
            "rope_scaling 'yarn'",
        ),
        (
            {"architectures": ["MistralForCausalLM"], "sliding_window": 4096},
            "a sliding window (4096)",
        ),
        ({"use_sliding_window": True}, "sliding window"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ],
)
def test_unsupported_models_are_refused_in_one_line(change, words):
    config = json.loads((FIXTURES / "qwen2" / "config.json").read_text()) | change
    with pytest.raises(ValueError, match="not supported") as e:
        hf.model_fields(config)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert "Qwen3ForCausalLM" in str(e.value)  # names what is supported


def test_a_missing_tensor_is_named(tmp_path):
    out = tmp_path / "broken"
    out.mkdir()
    for f in FIXTURES.joinpath("qwen2").iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))
    with pytest.raises(ValueError, match="model.layers.2.input_layernorm.weight"):
        hf.import_run(str(out), str(tmp_path / "w"), lm_pydoc.get_config())


def _ok(result) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_import_sample_lora_sft_export_through_the_cli(tmp_path):
    """import-hf -> sample (greedy = transformers' greedy) -> LoRA SFT on a
    jsonl file with the chat template -> export-hf (base + PEFT adapter, and
    --merge) -> the merged export imports back as the fine-tuned weights."""
    kind, work = "qwen2", tmp_path / "imported"
    strings = json.loads((FIXTURES / kind / "expected.json").read_text())
    expected = np.load(FIXTURES / kind / "expected.npz")
    _ok(
        helpers.gen_jax("import-hf", f"--hf_dir={FIXTURES / kind}", f"--workdir={work}")
    )
    out = _ok(
        helpers.gen_jax(
            "sample",
            f"--workdir={work}",
            f"--prompt={strings['prompt']}",
            "--temperature=0",
            f"--max_len={len(expected['greedy'])}",
            "--num_samples=1",
        )
    )
    tokenizer = lm.make_model(checkpoint.load_config(str(work)))[1]
    assert tokenizer.decode(expected["greedy"]) in out

    rows = [
        {"messages": strings["messages"]},
        {"prompt": "What is a tuple?", "completion": "An immutable sequence."},
    ]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows * 4))
    sft = tmp_path / "sft"
    _ok(
        helpers.gen_jax(
            "train",
            f"--config=configs/sft_hf.py:base={work},train_file={jsonl}",
            f"--workdir={sft}",
            "--config.train.num_steps=4",
            "--config.train.batch_size=4",
            "--config.train.log_every_steps=2",
            "--config.train.ckpt_every_steps=4",
            "--config.data.seq_len=65",
            "--config.evals.heldout.batch_size=4",
            "--config.evals.heldout.every_steps=4",
            "--config.optim.model.lr=0.05",  # so four steps move the adapters
        )
    )
    _ok(helpers.gen_jax("export-hf", f"--workdir={sft}", f"--out={tmp_path / 'hf'}"))
    adapter = json.loads(
        (tmp_path / "hf" / "adapter" / "adapter_config.json").read_text()
    )
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 8
    assert "q_proj" in adapter["target_modules"]
    _ok(
        helpers.gen_jax(
            "export-hf", f"--workdir={sft}", f"--out={tmp_path / 'merged'}", "--merge"
        )
    )

    tuned = checkpoint.open_run(str(sft))  # merged by open_run
    base = checkpoint.open_run(str(work))
    again = _import_dir(tmp_path / "merged", tmp_path / "again")
    moved = 0.0
    for a, b, c in zip(*(jax.tree.leaves(r.params) for r in (tuned, again, base))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        moved = max(moved, float(np.abs(np.asarray(a) - np.asarray(c)).max()))
    assert moved > 1e-3  # the fine-tune changed the weights it exported
    unmerged = _import_dir(tmp_path / "hf", tmp_path / "unmerged")  # the base
    for a, b in zip(jax.tree.leaves(unmerged.params), jax.tree.leaves(base.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_scanned_import_gives_the_logits_tokens_and_export_of_the_unrolled(tmp_path):
    """model.scan_layers: the layers stacked on import (Qwen3: q/k norm) give
    HF's logits and greedy tokens, and export-hf unstacks them to the same
    files an unrolled run writes."""
    config = lm_pydoc.get_config()
    config.model.scan_layers = True
    hf.import_run(str(FIXTURES / "qwen3"), str(tmp_path / "s"), config)
    run = checkpoint.open_run(str(tmp_path / "s"))
    assert "blocks" in run.params["model"] and "block_0" not in run.params["model"]
    expected = np.load(FIXTURES / "qwen3" / "expected.npz")
    model, _ = lm.make_model(run.config)
    logits, _ = jax.jit(model.apply)(
        {"params": run.params["model"]}, expected["input_ids"][None]
    )
    assert np.abs(np.asarray(logits[0]) - expected["logits"]).max() <= 1e-4
    greedy = expected["greedy"]
    generate = jax.jit(lm.make_generate(model), static_argnums=3)
    prompt = expected["prompt_ids"]
    tokens = generate(run.params, prompt[None], np.zeros(1, np.int32), len(greedy), 0.0)
    np.testing.assert_array_equal(np.asarray(tokens[0]), greedy)
    hf.export_run(str(tmp_path / "s"), str(tmp_path / "out"))
    unrolled = _import("qwen3", tmp_path / "u")
    hf.export_run(str(tmp_path / "u"), str(tmp_path / "out_u"))
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        tmp_path / "out_u" / "model.safetensors"
    ).read_bytes()
    del unrolled
