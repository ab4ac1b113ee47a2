"""OpenAI's completion objects for one request: whole (`text_completion`,
`chat.completion`) or as stream chunks, with usage; lm_routes.py fills them
from the engine's arrivals."""

import time
import uuid
from collections.abc import AsyncIterator

Arrivals = AsyncIterator[tuple[int, str, str | None]]  # (choice, delta, finish)


class Reply:
    """One request's answer in OpenAI's objects: whole, or as chunks."""

    def __init__(self, model_name: str, chat: bool, prompt_tokens: int, sequences):
        # Usage counts each prompt once, whatever `n` (as OpenAI and vLLM do).
        self.chat, self.prompt_tokens, self.sequences = chat, prompt_tokens, sequences
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
        texts, finishes = {}, {}
        async for i, delta, finish in arrivals:
            if finish == "error":
                raise RuntimeError("generation failed; the server log has the cause")
            texts[i] = texts.get(i, "") + delta
            if finish:
                finishes[i] = finish
        choices = [
            self._choice(i, texts.get(i, ""), finishes[i]) for i in sorted(finishes)
        ]
        return {**self.head, "choices": choices, "usage": self.usage()}

    async def chunks(self, arrivals: Arrivals, usage: bool) -> AsyncIterator[dict]:
        head, started = {**self.head, "object": self.chunk_kind}, set()
        async for i, delta, finish in arrivals:
            first = i not in started
            started.add(i)
            yield {**head, "choices": [self._delta(i, delta, finish, first)]}
        if usage:
            yield {**head, "choices": [], "usage": self.usage()}

    def _choice(self, i: int, text_: str, finish: str) -> dict:
        if not self.chat:
            return {
                "index": i,
                "text": text_,
                "logprobs": None,
                "finish_reason": finish,
            }
        message = {"role": "assistant", "content": text_}
        return {
            "index": i,
            "logprobs": None,
            "finish_reason": finish,
            "message": message,
        }

    def _delta(self, i: int, delta: str, finish: str | None, first: bool) -> dict:
        if not self.chat:
            return {
                "index": i,
                "text": delta,
                "logprobs": None,
                "finish_reason": finish,
            }
        content = (
            {"role": "assistant", "content": delta} if first else {"content": delta}
        )
        return {"index": i, "delta": content, "logprobs": None, "finish_reason": finish}
