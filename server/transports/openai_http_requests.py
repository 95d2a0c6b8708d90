"""What every OpenAI HTTP route does with its request (transports/openai_http.py): the body
read within a limit, the runners (or 503 while the models load), the persona a model name
stands for, and the mark of a response whose status is sent."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from server.app import App
from server.errors import ErrorCode
from server.pipeline.chat import ChatRunner
from server.pipeline.speech import SpeechRunner
from server.prompts import Persona
from server.protocol import openai_http as oa

# The model name that means the default persona (as /v1/realtime's default model).
DEFAULT_MODEL = "chinwag"
# Set on a request once its response status is sent.
STREAMING = web.RequestKey("chinwag.streaming", bool)


def chat_runner(app: App) -> ChatRunner:
    if app.chat is None:
        raise loading(app)
    return app.chat


def speech_runner(app: App) -> SpeechRunner:
    if app.speech is None:
        raise loading(app)
    return app.speech


def persona_of(app: App, model: str) -> Persona:
    personas = app.personas
    if model in personas.names():
        return personas.get(model)
    if model == DEFAULT_MODEL:
        return personas.get(None)
    raise oa.OpenAIError(
        HTTPStatus.NOT_FOUND,
        ErrorCode.MODEL_NOT_FOUND,
        f"no model {model[:64]!r}; the models are this server's personas: "
        f"{', '.join(personas.names())} (or {DEFAULT_MODEL!r} for the default)",
        param="model",
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is over `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def too_large(limit: int) -> oa.OpenAIError:
    return oa.OpenAIError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        ErrorCode.BODY_TOO_LARGE,
        f"the request body is over the limit of {limit} bytes",
    )


def loading(app: App) -> oa.OpenAIError:
    message = "the models are loading"
    if app.load_error:
        message = f"the models failed to load: {app.load_error}"
    return oa.OpenAIError(HTTPStatus.SERVICE_UNAVAILABLE, ErrorCode.MODELS_LOADING, message)
