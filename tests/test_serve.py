"""`gen-jax serve`, driven by OpenAI's own client against a server subprocess:
completions (streamed, n, stop), continuous batching (16 concurrent requests
each equal to its solo output), errors that leave the server serving, no
compile after warm-up, images micro-batched, workdir == artifact, SIGTERM. And
the HTTP side alone over stand-in engines (nothing compiled): every invalid body
a 400 in OpenAI's shape naming its field, the request schemas in /openapi.json."""

import base64
import concurrent.futures
import io
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests import helpers

openai = pytest.importorskip("openai")


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def _post(url: str, path: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def lm_server(exported):
    proc, url = helpers.start_server(
        f"--artifact={exported('lm_pydoc')}",
        "--slots=4",
        "--model_name=lm",
        "--max_waiting=1024",  # the largest request (64 prompts, n=16) fits
    )
    yield url
    proc.terminate()
    proc.wait(timeout=60)


def _client(url: str):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.slow
def test_completions_stream_n_and_stop(lm_server):
    client = _client(lm_server)
    assert [m.id for m in client.models.list().data] == ["lm"]
    ask = {
        "model": "lm",
        "prompt": "The ",
        "max_tokens": 12,
        "temperature": 0.9,
        "seed": 11,
    }
    full = client.completions.create(**ask)
    (choice,) = full.choices
    assert choice.finish_reason == "length" and full.usage.completion_tokens == 12
    assert full.usage.prompt_tokens == 4  # "The " in bytes
    chunks = list(client.completions.create(**ask, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    assert chunks[-1].choices[0].finish_reason == "length"
    # n=2: choice i samples with seed + i, so choice 0 is the request above.
    two = client.completions.create(**ask, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == choice.text
    # A stop sequence cuts the text before it.
    stop = choice.text[4:6]
    cut = client.completions.create(**ask, stop=[stop])
    assert cut.choices[0].text == choice.text[: choice.text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_a_prompt_list_answers_each_prompt_as_alone(lm_server):
    """Prompts as a list (text or token ids, as /tokenize gives them): prompt
    p's choice i is choice p * n + i, sampled with seed + p * n + i."""
    client = _client(lm_server)
    ask = {"model": "lm", "max_tokens": 6, "temperature": 0.8, "n": 2}
    prompts = ["The ", "def f(x):"]
    solo = [
        client.completions.create(prompt=p, seed=5 + 2 * k, **ask)
        for k, p in enumerate(prompts)
    ]
    both = client.completions.create(prompt=prompts, seed=5, **ask)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    want = [c.text for answer in solo for c in answer.choices]
    assert [c.text for c in both.choices] == want
    assert both.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in solo)
    _, ids = _post(lm_server, "/tokenize", json.dumps({"prompt": "The "}).encode())
    by_ids = client.completions.create(prompt=ids["tokens"], seed=5, **ask)
    assert [c.text for c in by_ids.choices] == want[:2]


@pytest.mark.slow
def test_sixteen_concurrent_requests_each_equal_their_solo_output(lm_server):
    """Continuous batching over 4 slots: the outputs do not depend on what else
    runs, and nothing compiles after warm-up."""
    client = _client(lm_server)
    compiled = _metric(lm_server, "gen_jax_compiled_programs")
    asks = [
        {
            "model": "lm",
            "prompt": "The " + "x" * (i % 5) * 4,
            "max_tokens": 4 + i % 7,
            "temperature": 0.0 if i % 4 == 0 else 1.0,
            "seed": 100 + i,
            "extra_body": {"top_k": i % 3 * 10},
        }
        for i in range(16)
    ]
    solo = [client.completions.create(**a).choices[0].text for a in asks]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda a: client.completions.create(**a), asks))
    assert [r.choices[0].text for r in together] == solo
    assert _metric(lm_server, "gen_jax_compiled_programs") == compiled
    assert _metric(lm_server, "gen_jax_running_sequences") == 0


def _forward_logprobs(workdir: str, ids: np.ndarray) -> np.ndarray:
    """log p(ids[j] | ids[:j]) for j >= 1 by one full forward pass of the LM
    family's own model (no cache), in float32."""
    import jax

    from gen_jax import checkpoint
    from gen_jax.families import lm

    run = checkpoint.open_run(workdir)
    model, _ = lm.make_model(run.config)
    logits = model.apply({"params": run.params["model"]}, np.asarray(ids)[None])[0]
    logp = np.asarray(jax.nn.log_softmax(np.asarray(logits[0], np.float32), -1))
    return logp[np.arange(len(ids) - 1), ids[1:]], logp


@pytest.mark.slow
def test_echo_and_logprobs_score_prompt_and_tokens_like_a_forward_pass(
    lm_server, trained
):
    """`echo` + `logprobs`: one entry per prompt token (the first null) then one
    per generated token, each a full forward pass's log-softmax; at
    temperature 0 each token is the top of its alternatives; streamed and whole
    agree; `max_tokens: 0` echoes the prompt alone; nothing compiles."""
    compiled = _metric(lm_server, "gen_jax_compiled_programs")
    ask = {"model": "lm", "prompt": "The value", "max_tokens": 5, "logprobs": 3}
    ask |= {"echo": True, "temperature": 0, "seed": 1}
    status, whole = _post(lm_server, "/v1/completions", json.dumps(ask).encode())
    assert status == 200, whole
    (choice,) = whole["choices"]
    logprobs = choice["logprobs"]
    prompt = list(b"The value")  # the byte tokenizer: one token per byte
    assert len(logprobs["tokens"]) == len(prompt) + 5
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert choice["text"].startswith("The value") and choice["text"] == "".join(
        logprobs["tokens"]
    )
    assert logprobs["text_offset"] == list(
        np.cumsum([0] + [len(t) for t in logprobs["tokens"][:-1]])
    )
    ids = np.asarray(prompt + list(choice["text"][len(prompt) :].encode()), np.int32)
    want, _ = _forward_logprobs(trained("lm_pydoc"), ids)
    np.testing.assert_allclose(logprobs["token_logprobs"][1:], want, atol=1e-4)
    for token, value, top in zip(
        logprobs["tokens"][len(prompt) :],
        logprobs["token_logprobs"][len(prompt) :],
        logprobs["top_logprobs"][len(prompt) :],
    ):  # greedy: the token is the likeliest; k = 3 (the token among them)
        assert max(top.values()) == value == top[token] and len(top) <= 3
    for top in logprobs["top_logprobs"][1 : len(prompt)]:  # prompt: its token + 3
        assert 3 <= len(top) <= 4
    chunks = []  # streamed: the same text and entries, the prompt in the first
    with _client(lm_server).completions.create(**ask, stream=True) as stream:
        chunks = [c.choices[0] for c in stream]
    assert chunks[0].text.startswith("The value")
    assert "".join(c.text for c in chunks) == choice["text"]
    for key in logprobs:
        streamed = [v for c in chunks for v in getattr(c.logprobs, key)]
        assert streamed == logprobs[key], key
    alone = _post(
        lm_server, "/v1/completions", json.dumps(ask | {"max_tokens": 0}).encode()
    )[1]["choices"][0]
    assert alone["text"] == "The value" and alone["finish_reason"] == "length"
    assert alone["logprobs"]["token_logprobs"] == logprobs["token_logprobs"][:9]
    assert _metric(lm_server, "gen_jax_compiled_programs") == compiled


@pytest.mark.slow
def test_a_loglikelihood_request_built_as_lm_eval_builds_it(lm_server, trained):
    """lm-eval's `local-completions` loglikelihood payload (a batch of token-id
    prompts, context + continuation, max_tokens 1, logprobs 1, echo) parsed as
    its `parse_logprobs` does: the continuation's summed log-probability is the
    model's own, and `is_greedy` says whether each continuation token was the
    likeliest."""
    context = list(b"def f(x):\n    return ")
    continuations = [list(b"x"), list(b"None")]
    payload = {  # lm_eval/models/openai_completions.py, _create_payload
        "model": "lm",
        "prompt": [context + c for c in continuations],
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    status, out = _post(lm_server, "/v1/completions", json.dumps(payload).encode())
    assert status == 200, out
    ctxlen = len(context)
    choices = sorted(out["choices"], key=lambda c: c["index"])
    assert len(choices) == 2
    for choice, continuation in zip(choices, continuations):
        token_logprobs = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        top_logprobs = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        assert len(token_logprobs) == len(continuation)
        ids = np.asarray(context + continuation, np.int32)
        want, logp = _forward_logprobs(trained("lm_pydoc"), ids)
        assert sum(token_logprobs) == pytest.approx(want[ctxlen - 1 :].sum(), abs=1e-4)
        is_greedy = all(
            t == max(top.values()) for t, top in zip(token_logprobs, top_logprobs)
        )
        want_greedy = all(
            logp[ctxlen - 1 + j].argmax() == token
            for j, token in enumerate(continuation)
        )
        assert is_greedy == want_greedy


@pytest.mark.slow
def test_bad_requests_get_their_error_and_the_server_keeps_serving(lm_server):
    client = _client(lm_server)
    with pytest.raises(openai.BadRequestError) as e:  # 4 + 45 > 48 positions
        client.completions.create(model="lm", prompt="The ", max_tokens=45)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="lm", prompt="The ", temperature=-0.5)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="The ")
    status, body = _post(lm_server, "/v1/completions", b'{"model": "lm", "prompt": ')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = _post(lm_server, "/v1/completions", b'{"model": "lm", "prompt": 3}')
    assert status == 400 and body["error"]["param"] == "prompt"
    status, _ = _post(lm_server, "/v1/chat/completions", b"{}")  # no chat template
    assert status == 404
    ok = client.completions.create(model="lm", prompt="The ", max_tokens=3)
    assert ok.choices[0].finish_reason == "length"


@pytest.fixture(scope="module")
def image_server(exported):
    proc, url = helpers.start_server(
        f"--artifact={exported('ddpm_digits')}",
        "--max_batch=4",
        "--max_wait_ms=300",
        "--model_name=digits",
    )
    yield url
    proc.terminate()
    proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["lm_server", "image_server"])
def test_schemathesis_finds_no_5xx_and_no_answer_off_the_spec(
    server, request, tmp_path
):
    """`st run --checks all` (schemathesis, from the published spec alone):
    no 5xx, every status, content type, header and body as documented, no 405
    without Allow, invalid bodies refused and valid ones accepted; the one
    exception is a prompt too long for max_tokens in the context (400
    context_length_exceeded), a limit across fields a schema cannot state."""
    import re
    import shutil
    import subprocess
    import xml.etree.ElementTree as ET

    url = request.getfixturevalue(server)
    st = shutil.which("st")
    assert st, "schemathesis (the test extra) is not installed"
    command = [st, "run", f"{url}/openapi.json", "--checks=all", "--seed=1"]
    command += ["--max-examples=30", "--report=junit", f"--report-dir={tmp_path}"]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False
    )
    (report,) = tmp_path.glob("*.xml")
    cases = list(ET.parse(report).getroot().iter("testcase"))
    assert len(cases) >= 4  # every route tested
    failures = [
        (case.get("name"), found)
        for case in cases
        for failure in case.iter("failure")
        for found in re.split(r"\n(?=\d+\. Test Case ID)", failure.text or "")
    ]
    unexpected = [
        f"{name}: {found}"
        for name, found in failures
        if not ("ST202" in found and "context_length_exceeded" in found)
    ]
    assert not unexpected, "\n\n".join(unexpected)[:6000]
    assert result.returncode in (0, 1), result.stderr[-3000:]


def images(client, model: str = "digits", **ask) -> list[np.ndarray]:
    """The images an images.generate call returns, decoded from their PNGs."""
    from PIL import Image

    response = client.images.generate(
        model=model,
        prompt=ask.pop("prompt", ""),
        response_format="b64_json",
        n=ask.pop("n", 1),
        extra_body=ask,
    )
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(d.b64_json))))
        for d in response.data
    ]


@pytest.mark.slow
def test_images_are_the_same_alone_or_micro_batched(image_server):
    client = _client(image_server)
    asks = [{"seed": 1, "n": 2}, {"seed": 2, "label": 3, "guidance": 2.0}, {"seed": 3}]
    solo = [images(client, **dict(a)) for a in asks]
    assert solo[0][0].shape == (8, 8)  # the model's size, one channel
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # within one 300 ms window
        together = list(pool.map(lambda a: images(client, **dict(a)), asks))
    for a, b in zip(solo, together):
        np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(solo[0][0], solo[0][1])
    with pytest.raises(openai.BadRequestError, match="steps"):
        images(client, steps=999)


@pytest.mark.slow
def test_workdir_server_equals_artifact_server_and_drains_on_sigterm(
    trained, image_server
):
    proc, url = helpers.start_server(
        f"--workdir={trained('ddpm_digits')}",
        "--max_batch=4",
        "--max_wait_ms=1000",
        "--model_name=digits",
    )
    client = _client(url)
    want = images(_client(image_server), seed=5, n=2)
    np.testing.assert_array_equal(np.stack(images(client, seed=5, n=2)), np.stack(want))
    # SIGTERM with a request in flight (waiting 1 s for its batch to fill): it
    # is answered, then the server exits 0.
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(images=images(client, seed=5, n=2))
    )
    thread.start()
    threading.Event().wait(0.3)
    proc.send_signal(signal.SIGTERM)
    thread.join(timeout=120)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    np.testing.assert_array_equal(np.stack(result["images"]), np.stack(want))


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    """The Qwen2 fixture (a chat template, an end-of-text token) imported and
    served from its workdir."""
    workdir = tmp_path_factory.mktemp("chat") / "qwen2"
    hf_dir = f"{helpers.ROOT}/tests/fixtures/hf/qwen2"
    result = helpers.gen_jax("import-hf", f"--hf_dir={hf_dir}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-2000:]
    proc, url = helpers.start_server(
        f"--workdir={workdir}", "--slots=2", "--context=64", "--model_name=qwen"
    )
    yield url
    proc.terminate()
    proc.wait(timeout=60)


@pytest.mark.slow
def test_chat_completions_with_the_models_own_template(chat_server):
    client = _client(chat_server)
    ask = {
        "model": "qwen",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8,
        "temperature": 0.7,
        "seed": 3,
    }
    reply = client.chat.completions.create(**ask)
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > len("hello there") // 4  # the template's tokens
    chunks = list(client.chat.completions.create(**ask, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        choice.message.content
    )
    # logprobs in chat's shape: each token's, with its 2 likeliest (greedy: the
    # token is the first of them).
    scored = client.chat.completions.create(
        **ask | {"temperature": 0}, logprobs=True, top_logprobs=2
    )
    content = scored.choices[0].logprobs.content
    assert len(content) >= scored.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob == entry.logprob
        assert entry.bytes == list(entry.token.encode())
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="qwen", messages=[])


def _lm_app(
    ready: bool = True, chat_template: str | None = None, api_key: str | None = None
):
    """The LM routes over a stand-in engine whose queue is always full, and its
    TestClient: the HTTP side alone, nothing compiled."""
    import dataclasses

    from fastapi.testclient import TestClient

    from gen_jax import text
    from gen_jax.deploy import app, lm_routes, programs, prometheus

    byte = text.tokenizer_from_spec({"tokenizer": "byte"}, ".")

    class Engine:
        context, top_logprobs, metrics = 32, 20, prometheus.serving()
        tokenizer = dataclasses.replace(byte, chat_template=chat_template)

        def submit(self, sequences):
            raise programs.QueueFull("256 sequences are waiting; retry later")

    engine = Engine()
    engine.ready = ready
    api = app.make_app(engine, lm_routes.add, model_name="m", api_key=api_key)
    return engine, TestClient(api)


def test_warming_up_and_a_full_queue_answer_503_in_openais_shape():
    engine, client = _lm_app(ready=False)
    ask = {"model": "m", "prompt": "hi", "max_tokens": 4}
    assert client.get("/health").status_code == 503
    response = client.post("/v1/completions", json=ask)
    assert (
        response.status_code == 503
        and "warming up" in response.json()["error"]["message"]
    )
    engine.ready = True
    assert client.get("/health").json() == {"status": "ok"}
    response = client.post("/v1/completions", json=ask)
    assert response.status_code == 503
    assert response.json()["error"]["message"].endswith("retry later")
    assert 'gen_jax_requests_total{endpoint="/v1/completions",status="503"} 2' in (
        client.get("/metrics").text
    )


def test_an_api_key_guards_every_v1_route_and_leaves_health_open():
    _, client = _lm_app(api_key="sk-local")
    ask = {"model": "m", "prompt": "hi", "max_tokens": 4}
    wrong = ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "sk-local"})
    for headers in wrong:
        for response in (
            client.post("/v1/completions", json=ask, headers=headers),
            client.get("/v1/models", headers=headers),
        ):
            assert response.status_code == 401, headers
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key"
            assert "Authorization: Bearer" in error["message"]
    good = {"Authorization": "Bearer sk-local"}
    assert client.get("/v1/models", headers=good).status_code == 200
    # Past the key, the request reaches the engine (whose queue is full here).
    assert client.post("/v1/completions", json=ask, headers=good).status_code == 503
    assert client.get("/health").status_code == 200
    assert 'status="401"} 6' in client.get("/metrics").text


def test_a_bug_answers_500_in_openais_shape_and_is_counted():
    engine, client = _lm_app()

    def broken(sequences):
        raise RuntimeError("the engine broke")

    engine.submit = broken
    response = client.post("/v1/completions", json={"model": "m", "prompt": "hi"})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == (
        "internal error: RuntimeError: the engine broke"
    )
    assert client.get("/health").status_code == 200  # it goes on
    assert 'endpoint="/v1/completions",status="500"} 1' in client.get("/metrics").text


def test_tokenize_and_detokenize_round_trip_in_vllms_shapes():
    from gen_jax import text

    byte = text.tokenizer_from_spec({"tokenizer": "byte"}, ".")
    _, client = _lm_app(chat_template="<{{ messages[0].content }}>")
    said = "héllo, world"
    answer = client.post("/tokenize", json={"model": "m", "prompt": said}).json()
    assert answer["tokens"] == byte.prompt(said).tolist()
    assert answer["count"] == len(answer["tokens"]) and answer["max_model_len"] == 32
    plain = client.post("/tokenize", json={"prompt": said, "add_special_tokens": False})
    tokens = plain.json()["tokens"]
    assert tokens == byte.encode(said).tolist()
    assert client.post("/detokenize", json={"tokens": tokens}).json() == {
        "prompt": said
    }
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/tokenize", json=chat).json()["tokens"] == list(b"<hi>")
    for path, body, field in (
        ("/detokenize", {"tokens": [1, 256]}, "tokens"),
        ("/tokenize", {"prompt": "a", **chat}, "prompt"),
        ("/tokenize", {}, "prompt"),
        ("/tokenize", {"model": "other", "prompt": "a"}, "model"),
    ):
        response = client.post(path, json=body)
        assert response.status_code in (400, 404), (path, body)
        assert response.json()["error"]["param"] == field, response.json()
    _, plain_client = _lm_app()  # no chat template: messages are refused
    response = plain_client.post("/tokenize", json=chat)
    assert response.status_code == 400 and "chat template" in response.text


def test_a_failed_sampler_call_fails_its_requests_and_the_batcher_goes_on():
    import types

    from gen_jax.deploy import image_batcher, prometheus

    class Programs:
        artifact = types.SimpleNamespace(
            manifest={"images": {"shape": [2, 2, 1], "num_classes": 0}}
        )
        calls = 0

        def __call__(self, name, seeds, *rest):
            Programs.calls += 1
            if Programs.calls == 1:
                raise RuntimeError("an XLA error")
            return np.zeros((len(seeds), 2, 2, 1), np.float32)

        def compiled(self):
            return 1

    batcher = image_batcher.ImageBatcher(
        Programs(),
        max_batch=2,
        max_wait_s=0.0,
        max_waiting=4,
        metrics=prometheus.serving(),
    )
    batcher.start()
    results = []
    for seed in (1, 2):
        done = threading.Event()
        batcher.submit(
            image_batcher.ImageJob(
                1, seed, None, 1.0, lambda x, d=done: (results.append(x), d.set())
            )
        )
        assert done.wait(30)
    batcher.stop()
    assert results[0] is None and results[1].shape == (1, 2, 2, 1)


@pytest.mark.parametrize(
    "path, body, param, says",
    [
        ("completions", b'{"model": "m", "prompt": ', None, "not valid JSON"),
        ("completions", b"[1, 2]", None, "must be a JSON object"),
        ("completions", b'{"prompt": "hi"}', "model", "Field required"),
        ("completions", b'{"model": "m", "prompt": 3}', "prompt", "a string"),
        ("completions", b'{"model": "m", "prompt": ["a", 1]}', "prompt", "list of strings"),
        ("completions", b'{"model": "m", "prompt": [[1], []]}', "prompt", "none empty"),
        ("completions", b'{"model": "m", "prompt": [1, 256]}', "prompt", "vocabulary"),
        ("completions", b'{"model": "m", "prompt": "hi", "n": 17}', "n", "17"),
        ("completions", b'{"model": "m", "prompt": "h", "max_tokens": true}', "max_tokens", "integer"),
        ("completions", b'{"model": "m", "prompt": "h", "max_tokens": 32}', "max_tokens", "[1, 31]"),
        ("completions", b'{"model": "m", "prompt": "h", "temperature": "1"}', "temperature", "number"),
        ("completions", b'{"model": "m", "prompt": "h", "top_p": 0}', "top_p", "greater than 0"),
        ("completions", b'{"model": "m", "prompt": "h", "stop": ["a", ""]}', "stop", "non-empty"),
        ("completions", b'{"model": "m", "prompt": "h", "stop": ["a", "b", "c", "d", "e"]}', "stop", "at most 4"),
        ("completions", b'{"model": "m", "prompt": "h", "stream": "yes"}', "stream", "boolean"),
        ("completions", b'{"model": "m", "prompt": "h", "stream_options": {"include_usage": 1}}', "stream_options", "include_usage"),
        ("completions", b'{"model": "m", "prompt": "h", "max_tokens": 0}', "max_tokens", "only with 'echo'"),
        ("completions", b'{"model": "m", "prompt": "h", "logprobs": 21}', "logprobs", "less than or equal to 20"),
        ("completions", b'{"model": "m", "prompt": "h", "logprobs": true}', "logprobs", "integer"),
        ("completions", b'{"model": "m", "prompt": "h", "echo": 1}', "echo", "boolean"),
        ("chat/completions", b'{"model": "m", "messages": []}', "messages", "at least 1"),
        ("chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}', "top_logprobs", "needs 'logprobs'"),
        ("chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": 3}]}', "messages", "messages[0].content"),
    ],
)  # fmt: skip
def test_every_invalid_body_is_a_400_in_openais_shape_naming_its_field(
    path, body, param, says
):
    """Pydantic's validation, FastAPI's JSON parsing and the routes' own checks
    alike: 400 (never 422), OpenAI's error object, the field in `param` and
    one line that names it."""
    _, client = _lm_app(chat_template="{{ messages[0].content }}")
    response = client.post(
        f"/v1/{path}", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.keys() == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"] and "\n" not in error["message"]
    if param:
        assert f"'{param}" in error["message"]


def test_null_fields_take_their_defaults_and_an_unknown_model_is_404():
    _, client = _lm_app()
    ask = {"model": "m", "prompt": "hi", "max_tokens": None, "stop": None, "user": "u"}
    response = client.post("/v1/completions", json=ask)
    assert response.status_code == 503  # validated, then queued: the queue is full
    response = client.post("/v1/completions", json={**ask, "model": "gpt-4"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def _image_app(images: np.ndarray, *, guidance=None, num_classes=0, steps=None):
    """The images route over a stand-in batcher that answers every job with
    `images` at once."""
    from fastapi.testclient import TestClient

    from gen_jax.deploy import app, image_routes, prometheus

    class Batcher:
        ready, metrics, max_batch = True, prometheus.serving(), 4
        shape = images.shape[1:]
        tokenizer = None  # no text conditioning

        def __init__(self):
            self.num_classes, self.steps, self.guidance = num_classes, steps, guidance
            self.default_guidance = 1.0 if guidance is None else guidance
            self.jobs = []

        def submit(self, job):
            self.jobs.append(job)
            job.done(images[: job.count])

    batcher = Batcher()
    return batcher, TestClient(
        app.make_app(batcher, image_routes.add, model_name="digits")
    )


@pytest.mark.parametrize(
    "ask, param, says",
    [
        ({"n": 5}, "n", "[1, 4]"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"response_format": "url"}, "response_format", "no URLs"),
        ({"size": "16x16"}, "size", "8x8"),
        ({"label": 3}, "label", "unconditional"),
        ({"guidance": 2.0}, "guidance", "no guidance weight"),
        ({"steps": 50}, "steps", "--sampler_steps=50"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"negative_prompt": "thin"}, "negative_prompt", "takes no text"),
    ],
)
def test_image_requests_the_model_cannot_answer_are_400s(ask, param, says):
    batcher, client = _image_app(np.zeros((4, 8, 8, 1), np.float32))
    response = client.post("/v1/images/generations", json={"prompt": "", **ask})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert not batcher.jobs


def test_an_image_request_reaches_the_batcher_as_asked():
    batcher, client = _image_app(
        np.zeros((4, 8, 8, 1), np.float32), guidance=1.5, num_classes=10, steps=20
    )
    ask = {"model": "digits", "prompt": "", "n": 2, "seed": 7, "label": 3, "steps": 20}
    response = client.post("/v1/images/generations", json=ask)
    assert response.status_code == 200 and len(response.json()["data"]) == 2
    (job,) = batcher.jobs
    assert (job.count, job.seed, job.label, job.guidance) == (2, 7, 3, 1.5)


def test_the_openapi_spec_publishes_requests_answers_and_this_servers_limits():
    """Every body's schema (null: its default), every answer's (OpenAI's
    objects, server-sent events, the error shape), and the limits the server
    knows (context, vocabulary, model name) written into them."""
    _, client = _lm_app(chat_template="{{ messages[0].content }}")
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"CompletionRequest", "ChatCompletionRequest", "ChatMessage"} <= set(schemas)
    request = schemas["CompletionRequest"]["properties"]
    temperature = request["temperature"]["anyOf"]
    assert temperature[0]["maximum"] == 2 and temperature[1] == {"type": "null"}
    assert request["max_tokens"]["anyOf"][0]["maximum"] == 31  # context 32
    assert request["model"]["enum"] == ["m"]  # required: never null
    ids = request["prompt"]["anyOf"][2]["items"]  # a prompt as token ids
    assert ids["maximum"] == 255 and ids["minimum"] == 0  # the byte vocabulary
    assert schemas["CompletionRequest"]["then"]["required"] == ["echo"]
    post = spec["paths"]["/v1/completions"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/CompletionRequest")
    ok = post["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/Completion")
    assert ok["text/event-stream"]["schema"]["required"] == ["data"]
    for status in ("400", "401", "404", "500", "503"):
        error = post["responses"][status]["content"]["application/json"]["schema"]
        assert error["$ref"].endswith("/ErrorResponse")
    logprobs = schemas["CompletionLogprobs"]["properties"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    _, client = _image_app(np.zeros((1, 8, 8, 1), np.float32))
    image = client.get("/openapi.json").json()["components"]["schemas"]
    assert image["ImageRequest"]["properties"]["size"]["anyOf"][0]["enum"] == ["8x8"]
    assert "Images" in image


def test_a_405_says_what_is_allowed():
    _, client = _lm_app()
    response = client.put("/v1/completions", json={})
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


class _Hanging:
    """A stand-in LM engine whose sequences never finish: each gets one delta
    at once, then nothing (a long generation), until the server drops them."""

    context, top_logprobs, ready = 32, 20, True

    def __init__(self):
        from gen_jax import text
        from gen_jax.deploy import prometheus

        self.metrics = prometheus.serving()
        self.tokenizer = text.tokenizer_from_spec({"tokenizer": "byte"}, ".")
        self.sequences = []

    def submit(self, sequences):
        self.sequences += sequences
        for seq in sequences:
            seq.emit("x", None, [])


def _until(condition, what: str, deadline_s: float = 30.0) -> None:
    """Polls `condition` (a liveness deadline, not a speed bound)."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.02)


def test_a_request_whose_client_leaves_is_dropped():
    """Streaming or not, a client that hangs up marks its sequences abandoned
    (the engine frees their slots before its next decode step)."""
    import socket

    import uvicorn

    from gen_jax.deploy import app, lm_routes

    engine = _Hanging()
    api = app.make_app(engine, lm_routes.add, model_name="m")
    port = helpers.free_port()
    server = uvicorn.Server(uvicorn.Config(api, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _until(lambda: server.started, "the server started")
    try:
        for stream in (True, False):
            body = json.dumps(
                {
                    "model": "m",
                    "prompt": "hi",
                    "max_tokens": 30,
                    "stream": stream,
                    "n": 2,
                }
            ).encode()
            request = (
                f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                f"application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            before = len(engine.sequences)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request)
                _until(lambda n=before: len(engine.sequences) == n + 2, "submitted")
                if stream:  # the first event has come
                    assert b"data: " in s.recv(4096)
            mine = engine.sequences[before:]
            _until(lambda m=mine: all(q.abandoned for q in m), f"dropped ({stream=})")
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_engine_frees_abandoned_slots_and_queue_places():
    import collections

    from gen_jax.deploy import lm_engine, prometheus

    def seq(abandoned):
        s = lm_engine.Sequence(np.zeros(1, np.int32), 4, 0, 1.0, 0, 1.0, (), None)
        s.abandoned = abandoned
        return s

    engine = object.__new__(lm_engine.LMEngine)  # its bookkeeping alone
    engine.metrics = prometheus.serving()
    kept_running, kept_waiting = seq(False), seq(False)
    engine.active = [seq(True), kept_running, None, seq(True)]
    engine.waiting = collections.deque([seq(True), kept_waiting])
    engine._drop_abandoned()
    assert engine.active == [None, kept_running, None, None]
    assert list(engine.waiting) == [kept_waiting]
    assert "gen_jax_abandoned_sequences_total 3" in engine.metrics.render()
