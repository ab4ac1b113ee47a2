"""OpenAI's error shape for every failure of the server, {"error": {"message",
"type", "param", "code"}}: the routes' own checks (BadRequest), request bodies
that fail their Pydantic model (400, never FastAPI's 422), unknown paths, a full
queue (503) and bugs (500)."""

import json
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gen_jax.deploy.programs import QueueFull

KINDS = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # OpenAI's, with code invalid_api_key
    404: "invalid_request_error",
    503: "server_overloaded",
}


# The error type of a Pydantic check across a body's fields (schemas.py):
# ACROSS + the field it reports.
ACROSS = "across:"


class BadRequest(Exception):
    """A request the server cannot answer: its message, the field at fault,
    the status (400 unless said) and OpenAI's code, if it has one."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
    ):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    kind: str | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape."""
    kind = kind or KINDS.get(status, "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def describe(errors: list[dict]) -> tuple[str, str | None]:
    """A body's first validation error as (one line, the top-level field at
    fault or None when the body as a whole is)."""
    error = errors[0]
    loc = [part for part in error["loc"] if part != "body"]  # FastAPI's prefix
    if error["type"] == "json_invalid":
        at = f" at position {loc[0]}" if loc else ""
        why = error.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({why}{at})", None
    if error["type"].startswith(ACROSS):  # schemas.py's check across fields
        return error["msg"], error["type"][len(ACROSS) :]
    if not loc and error["type"] == "missing":
        return "the request has no body: send a JSON object", None
    if not loc or not isinstance(loc[0], str):
        why = "the request body must be a JSON object (Content-Type: application/json)"
        return why, None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)[1:]
    message = error["msg"]
    if error["type"] != "missing":
        message += f", got {_short(error.get('input'))}"
    return f"'{field}': {message}", loc[0]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_model(asked: str | None, served: str) -> None:
    """404 in OpenAI's words unless `asked` is the model this server serves."""
    if asked != served:
        raise BadRequest(
            f"the model {asked!r} does not exist; this server serves {served!r}",
            "model",
            404,
            "model_not_found",
        )


def check_ready(engine) -> None:
    """503 until the engine has compiled every program."""
    if not engine.ready:
        raise BadRequest("the server is warming up; retry shortly", status=503)


def install(app: FastAPI) -> None:
    """Answers every exception the routes raise in OpenAI's shape."""

    @app.exception_handler(BadRequest)
    async def bad_request(request, e: BadRequest):
        return response(e.status, str(e), e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return response(400, *describe(list(e.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request, e: HTTPException):
        # Its headers kept: a 405 says what is allowed (Allow), as RFC 9110 asks.
        kind = "invalid_request_error" if e.status_code < 500 else None
        answer = response(e.status_code, str(e.detail), kind=kind)
        answer.headers.update(e.headers or {})
        return answer

    @app.exception_handler(QueueFull)
    async def full(request, e: QueueFull):
        return response(503, str(e))
