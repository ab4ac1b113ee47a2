"""vLLM's tokenizer routes over an LM engine's tokenizer: /tokenize,
/detokenize and /tokenizer_info, so clients (lm-eval's
`tokenizer_backend=remote`) need no tokenizer files; and the token-id checks
the completions route shares."""

import numpy as np
from fastapi import FastAPI

from gen_jax import text
from gen_jax.deploy import errors, schemas, spec


def add(app: FastAPI, engine, model_name: str) -> None:
    """The routes (open without an API key, as /v1/* is not their prefix)."""
    tokenizer = engine.tokenizer
    local = (400, 404, 500)  # no key, no queue

    @app.post("/tokenize", responses=spec.responses(spec.Tokens, statuses=local))
    async def tokenize(body: schemas.TokenizeRequest):
        if body.model is not None:
            errors.check_model(body.model, model_name)
        if body.messages is not None:
            if not tokenizer.chat_template:
                raise errors.BadRequest("this model has no chat template", "messages")
            prompt = render(tokenizer, body.messages, body.add_generation_prompt)
            ids = tokenizer.encode(prompt)  # the template holds its own framing
        else:
            encode = tokenizer.prompt if body.add_special_tokens else tokenizer.encode
            ids = encode(body.prompt)
        tokens = [int(t) for t in ids]
        return {"count": len(tokens), "max_model_len": engine.context, "tokens": tokens}

    @app.post("/detokenize", responses=spec.responses(spec.Text, statuses=local))
    async def detokenize(body: schemas.DetokenizeRequest):
        if body.model is not None:
            errors.check_model(body.model, model_name)
        ids = checked_ids(tokenizer, body.tokens, "tokens")
        return {"prompt": tokenizer.decode(ids)}

    @app.get(
        "/tokenizer_info", responses=spec.responses(spec.TokenizerInfo, statuses=(500,))
    )
    async def tokenizer_info():
        """vLLM's: what a client tokenizing remotely needs besides /tokenize
        (lm-eval's `tokenizer_backend=remote` reads it)."""
        return {
            "tokenizer_class": tokenizer.name,
            "vocab_size": tokenizer.vocab_size,
            "model_max_length": engine.context,
            "bos_token": tokenizer.special_tokens.get("bos_token") or None,
            "eos_token": tokenizer.special_tokens.get("eos_token") or None,
            "pad_token": None,
            "chat_template": tokenizer.chat_template,
        }


def render(tokenizer: text.Tokenizer, messages: list, add_generation_prompt: bool):
    """The messages through the model's chat template; what the template
    refuses (e.g. roles out of order) is a 400 on 'messages'."""
    import jinja2

    dicts = [m.model_dump() for m in messages]
    try:
        return text.render_chat(
            tokenizer, dicts, add_generation_prompt=add_generation_prompt
        )
    except (ValueError, jinja2.TemplateError) as e:
        raise errors.BadRequest(f"'messages': {e}", "messages") from None


def prompt_ids(tokenizer: text.Tokenizer, prompt: str | tuple) -> np.ndarray:
    """A prompt's token ids: text framed as the tokenizer frames prompts, or
    ids as given (checked against the vocabulary)."""
    if isinstance(prompt, str):
        return tokenizer.prompt(prompt)
    return checked_ids(tokenizer, prompt, "prompt")


def checked_ids(tokenizer: text.Tokenizer, ids, field: str) -> np.ndarray:
    """Token ids a client sent, as int32, each in the vocabulary (else a 400
    naming `field`)."""
    ids = np.asarray(ids, np.int64)
    bad = ids[(ids < 0) | (ids >= tokenizer.vocab_size)]
    if bad.size:
        raise errors.BadRequest(
            f"'{field}' holds token id {int(bad[0])}, outside this model's "
            f"vocabulary [0, {tokenizer.vocab_size})",
            field,
        )
    return ids.astype(np.int32)
