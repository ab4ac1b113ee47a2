"""The text-to-image chain as a user types it: `gen-jax train` an LM
(lm_pydoc:smoke) -> `gen-jax train --config=configs/t2i_digits.py:smoke
--config.text.encoder=LM_RUN` -> `gen-jax sample --prompt` -> `gen-jax export`
(the artifact reruns bitwise where gen_jax, flax and optax cannot be imported,
and draws `gen-jax sample`'s images from the same tokens) -> `gen-jax serve`
answering the openai client's images.generate(prompt=...)."""

import concurrent.futures
import json
import os

import numpy as np
import openai
import pytest

from gen_jax import png, text
from gen_jax.deploy import artifact
from tests import helpers
from tests.test_export import check_standalone
from tests.test_serve import images

PROMPT = "a thick seven leaning right"


# Its own xdist group (and LM run, not the shared one of the "trained" group),
# so the chain runs beside the other groups' shared runs.
pytestmark = pytest.mark.xdist_group("text_to_image_cli")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(the text-to-image workdir, its artifact), made by the CLI from an LM
    run it trains first."""
    root = tmp_path_factory.mktemp("t2i_cli")
    lm, workdir, out = str(root / "lm"), str(root / "run"), str(root / "artifact")
    for args in (
        ["--config=configs/lm_pydoc.py:smoke", f"--workdir={lm}"],
        ["--config=configs/t2i_digits.py:smoke", f"--workdir={workdir}"]
        + [f"--config.text.encoder={lm}"],
    ):
        result = helpers.gen_jax("train", *args)
        assert result.returncode == 0, result.stderr[-3000:]
    result = helpers.gen_jax("export", f"--workdir={workdir}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, out


def _artifact_images(directory: str, prompt: str, seed: int, n: int) -> np.ndarray:
    art = artifact.Artifact(directory)
    info = art.manifest["images"]["prompts"]
    tokenizer = text.tokenizer_from_spec(
        info["tokenizer"], os.path.join(directory, "tokenizer")
    )
    ids = text.fixed_length([prompt] * n, tokenizer, info["length"])
    zeros = np.zeros_like(ids["text_mask"])
    return np.asarray(
        art.call(
            "sample",
            np.full(n, seed, np.int32),
            np.arange(n, dtype=np.int32),
            np.zeros(n, np.int32),
            np.full(n, art.manifest["images"]["guidance"], np.float32),
            ids["text_tokens"],
            ids["text_mask"],
            zeros,
            zeros,
        )
    )


@pytest.mark.slow  # the first tier holds the chain's pieces (test_text_to_image.py)
def test_sample_export_and_the_artifact_without_gen_jax(chain, tmp_path):
    workdir, out = chain
    result = helpers.gen_jax(
        "sample", f"--workdir={workdir}", f"--prompt={PROMPT}", "--num_samples=4"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    prefix = result.stdout.strip().splitlines()[-1].removesuffix(".png")
    assert prefix.endswith("a-thick-seven-leaning-right")
    with np.load(prefix + ".npz") as f:
        sampled = f["images"]
    # The exported sampler, fed the prompt's tokens, draws the same images.
    np.testing.assert_array_equal(_artifact_images(out, PROMPT, 0, 4), sampled)
    with open(os.path.join(out, "manifest.json")) as f:
        prompts = json.load(f)["images"]["prompts"]
    assert prompts == {"length": 64, "tokenizer": {"tokenizer": "byte"}}
    check_standalone(out, tmp_path)
    bad = helpers.gen_jax("sample", f"--workdir={workdir}", "--prompt=" + "x" * 65)
    assert bad.returncode != 0 and "at most 64" in bad.stderr


@pytest.mark.slow
def test_served_prompts_are_the_same_alone_or_batched(chain):
    _, out = chain
    proc, url = helpers.start_server(
        f"--artifact={out}", "--max_batch=4", "--max_wait_ms=300", "--model_name=t2i"
    )
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        asks = [
            {"prompt": PROMPT, "seed": 1, "n": 2},
            {"prompt": "number two, small", "seed": 1},
            {"prompt": "a thin one", "negative_prompt": "thick", "seed": 3},
        ]
        solo = [images(client, "t2i", **dict(a)) for a in asks]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # one 300 ms window
            together = list(pool.map(lambda a: images(client, "t2i", **dict(a)), asks))
        for a, b in zip(solo, together):
            np.testing.assert_array_equal(np.stack(a), np.stack(b))
        # The server's images are the artifact's for the same tokens,
        # PNG-rounded; the prompt decides them (same seed, another prompt: in
        # floats, as six smoke steps barely move the zero-started text
        # projections, which PNG's 8 bits round away).
        mine = _artifact_images(out, PROMPT, 1, 2)
        other = _artifact_images(out, "number two, small", 1, 1)
        assert not np.array_equal(mine[:1], other)
        np.testing.assert_array_equal(np.stack(solo[0]), png.to_uint8(mine)[..., 0])
        np.testing.assert_array_equal(solo[1][0], png.to_uint8(other)[0, ..., 0])
        with pytest.raises(openai.BadRequestError, match="at most 64"):
            images(client, "t2i", prompt="x" * 65)
        assert len(images(client, "t2i", prompt="")) == 1  # the null caption
    finally:
        proc.terminate()
        proc.wait(timeout=60)
