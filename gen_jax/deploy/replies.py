"""OpenAI's completion objects for one request: whole (`text_completion`,
`chat.completion`) or as stream chunks, with usage, log-probabilities (vLLM's
completions shape, OpenAI's chat shape) and echo; lm_routes.py fills them from
the engine's arrivals."""

import time
import uuid
from collections.abc import AsyncIterator, Callable

from gen_jax.deploy.scoring import Scored

# (choice, delta, finish, the Scored tokens that came with the delta)
Arrivals = AsyncIterator[tuple[int, str, str | None, list[Scored]]]
FLOOR = -9999.0  # what -inf becomes (JSON has no infinity; OpenAI's value)


class Reply:
    """One request's answer in OpenAI's objects: whole, or as chunks. With
    `echo`, choice i's text starts with echo[i] (its prompt's text)."""

    def __init__(
        self,
        model_name: str,
        chat: bool,
        prompt_tokens: int,
        sequences,
        token_text: Callable[[int], str],
        echo: list[str] | None = None,
    ):
        # Usage counts each prompt once, whatever `n` (as OpenAI and vLLM do).
        self.chat, self.prompt_tokens, self.sequences = chat, prompt_tokens, sequences
        self.token_text, self.echo = token_text, echo
        self.offsets: dict[int, int] = {}  # characters of each choice sent so far
        self.kind = "chat.completion" if chat else "text_completion"
        self.chunk_kind = self.kind + ".chunk" if chat else self.kind
        self.head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
            "object": self.kind,
            "created": int(time.time()),
            "model": model_name,
        }

    def usage(self) -> dict:
        prompt = self.prompt_tokens
        completion = sum(len(s.tokens) for s in self.sequences)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def whole(self, arrivals: Arrivals) -> dict:
        texts, scored, finishes = {}, {}, {}
        async for i, delta, finish, tokens in arrivals:
            if finish == "error":
                raise RuntimeError("generation failed; the server log has the cause")
            texts[i] = texts.get(i, "") + delta
            scored[i] = scored.get(i, []) + tokens
            if finish:
                finishes[i] = finish
        choices = [
            self._choice(i, texts.get(i, ""), finishes[i], scored[i], True)
            for i in sorted(finishes)
        ]
        return {**self.head, "choices": choices, "usage": self.usage()}

    async def chunks(self, arrivals: Arrivals, usage: bool) -> AsyncIterator[dict]:
        """One chunk per arrival; a choice's first carries its echo."""
        head = {**self.head, "object": self.chunk_kind}
        async for i, delta, finish, tokens in arrivals:
            first = i not in self.offsets
            choice = self._choice(i, delta, finish, tokens, first)
            if self.chat:  # a delta, not a message; the role in the first
                message = choice.pop("message")
                choice["delta"] = message if first else {"content": delta}
            yield {**head, "choices": [choice]}
        if usage:
            yield {**head, "choices": [], "usage": self.usage()}

    def _choice(
        self, i: int, text_: str, finish: str | None, tokens: list, first: bool
    ) -> dict:
        """Choice i's text (its echo first if `first`) and the log-probabilities
        of `tokens`, text offsets counting on from what was sent before."""
        if first and self.echo is not None:
            text_ = self.echo[i] + text_
        start = self.offsets.get(i, 0)
        self.offsets[i] = start + len(text_)
        logprobs = None
        if self.sequences[i].logprobs is not None:
            logprobs = (self._chat_logprobs if self.chat else self._logprobs)(
                tokens, start
            )
        if not self.chat:
            return {
                "index": i,
                "text": text_,
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        message = {"role": "assistant", "content": text_}
        return {
            "index": i,
            "logprobs": logprobs,
            "finish_reason": finish,
            "message": message,
        }

    def _logprobs(self, tokens: list[Scored], start: int) -> dict:
        """vLLM's completions logprobs: each token's text, log-probability and
        {text: log-probability} of it and its k likeliest; text_offset where
        its text starts (counting token texts, as vLLM does)."""
        out = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
            "text_offset": [],
        }
        for t in tokens:
            text_ = self.token_text(t.token)
            out["tokens"].append(text_)
            out["text_offset"].append(start)
            start += len(text_)
            if t.logprob is None:  # a prompt's first token
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            out["token_logprobs"].append(max(t.logprob, FLOOR))
            top = {text_: max(t.logprob, FLOOR)}
            for token, logprob in t.top:
                top.setdefault(self.token_text(token), max(logprob, FLOOR))
            out["top_logprobs"].append(top)
        return out

    def _chat_logprobs(self, tokens: list[Scored], start: int) -> dict:
        """OpenAI's chat logprobs: {"content": [{token, logprob, bytes,
        top_logprobs: [the k likeliest, each {token, logprob, bytes}]}]}."""

        def entry(token: int, logprob: float) -> dict:
            text_ = self.token_text(token)
            return {
                "token": text_,
                "logprob": max(logprob, FLOOR),
                "bytes": list(text_.encode("utf-8")),
            }

        content = [
            entry(t.token, t.logprob)
            | {"top_logprobs": [entry(token, lp) for token, lp in t.top]}
            for t in tokens
        ]
        return {"content": content}
