"""OpenAI-compatible HTTP on chinwag's port, with aiohttp (docs/openai-http.md).

  GET  /v1/models                 the personas, as model names
  POST /v1/chat/completions       a reply from the LLM, streamed (server-sent events) or not
  POST /v1/audio/transcriptions   an uploaded audio file (any format FFmpeg reads) as text
  POST /v1/audio/speech           text as audio, streamed phrase by phrase as it is synthesized

The front listener (transports/front.py) hands this module's aiohttp server the connections
whose first request is plain HTTP under /v1/; a later request on a kept-alive connection that
is not ours is answered by the WebSocket server's routes (`fallback`).

Every request passes the same checks as a WebSocket upgrade (server/security.py): the target,
the Host (DNS rebinding), the Origin of browser pages, and the token when one is set. Work goes
where the rest of the server sends it: a chat reply into the ChatRunner's queue (a voice turn
is admitted before it), a transcription onto the background Whisper worker (never ahead of a
turn's), speech onto the TTS worker one phrase at a time. A client that goes away cancels its
request's task (aiohttp's handler cancellation), which stops the model at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web
from pydantic import ValidationError
from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from server import security
from server.app import App
from server.audio.codecs import (
    OUTPUT_FORMATS,
    OUTPUT_RATE,
    AudioDecodeError,
    AudioTooLong,
    SpeechEncoder,
    decode_audio,
)
from server.audio.pcm import StreamResampler
from server.engines.base import PromptTooLong
from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure
from server.pipeline.chat import ChatOutcome, ChatRunner
from server.pipeline.grounding import ReplyPlan, SaidAnswer, plan_reply
from server.pipeline.speech import SpeechRunner
from server.pipeline.text_split import PhraseSplitter, speakable
from server.prompts import GenerationSettings, Persona
from server.protocol import openai_http as oa

log = logging.getLogger(__name__)

MODELS_PATH = "/v1/models"
CHAT_PATH = "/v1/chat/completions"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
SPEECH_PATH = "/v1/audio/speech"
METHODS = {MODELS_PATH: "GET", CHAT_PATH: "POST", TRANSCRIPTIONS_PATH: "POST", SPEECH_PATH: "POST"}
# The model name that means the default persona (as /v1/realtime's default model).
DEFAULT_MODEL = "chinwag"
# Seconds a kept-alive connection may idle, and a shutdown waits for requests under way.
KEEPALIVE_S = 15.0
SHUTDOWN_S = 2.0
# Set on a request once its response status is sent.
STREAMING = web.RequestKey("chinwag.streaming", bool)
CORS_HEADERS = "Authorization, Content-Type, OpenAI-Beta, X-Stainless-Lang"

# The WebSocket server's answer to any other request (websockets' Request in, Response out).
Fallback = Callable[[WsRequest], WsResponse | None]


class _Headers:
    """aiohttp's headers as the security checks read them (`get_all`)."""

    def __init__(self, request: web.BaseRequest) -> None:
        self._headers = request.headers

    def get_all(self, key: str) -> list[str]:
        return list(self._headers.getall(key, []))


def error_response(error: oa.OpenAIError, extra: dict[str, str] | None = None) -> web.Response:
    headers = dict(error.headers)
    headers.update(extra or {})
    return web.json_response(error.body(), status=error.status.value, headers=headers)


def _refused(refusal: security.Refusal) -> oa.OpenAIError:
    return oa.OpenAIError(
        refusal.status, refusal.code.value, refusal.message, headers=refusal.headers
    )


class OpenAIHttp:
    """The aiohttp application and its runner; `protocol_factory()` makes a connection's
    protocol (the front listener calls it)."""

    def __init__(self, app: App, fallback: Fallback) -> None:
        self.app = app
        self.fallback = fallback
        http = app.settings.http
        self.web_app = web.Application(
            middlewares=[self._guard], client_max_size=http.max_upload_bytes
        )
        self.web_app.router.add_get(MODELS_PATH, self.models, allow_head=False)
        self.web_app.router.add_post(CHAT_PATH, self.chat_completions)
        self.web_app.router.add_post(TRANSCRIPTIONS_PATH, self.transcriptions)
        self.web_app.router.add_post(SPEECH_PATH, self.speech)
        self.web_app.router.add_route("*", "/{tail:.*}", self.other)
        self.web_app.on_response_prepare.append(_server_header)
        self.runner = web.AppRunner(
            self.web_app,
            handle_signals=False,
            access_log=None,
            # A client that goes away cancels its handler: the reply stops being generated.
            handler_cancellation=True,
            keepalive_timeout=KEEPALIVE_S,
            shutdown_timeout=SHUTDOWN_S,
        )

    async def start(self) -> None:
        await self.runner.setup()

    def protocol_factory(self) -> asyncio.Protocol:
        server = self.runner.server
        assert server is not None, "start() first"
        return server()

    async def close(self) -> None:
        await self.runner.cleanup()

    # --- checks and errors ------------------------------------------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The checks every request passes, and every failure as an OpenAI-shaped error
        (never aiohttp's plain-text pages, never a traceback)."""
        if not request.path.startswith("/v1/"):
            return await handler(request)  # the WebSocket server's routes check their own
        cors: dict[str, str] = {}
        try:
            if refusal := self._check(request):
                raise _refused(refusal)
            origin = request.headers.get("Origin")
            if origin is not None:
                cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
            if request.method == "OPTIONS" and request.path in METHODS:
                return web.Response(
                    status=204,
                    headers={
                        **cors,
                        "Access-Control-Allow-Methods": METHODS[request.path],
                        "Access-Control-Allow-Headers": CORS_HEADERS,
                        "Access-Control-Max-Age": "600",
                    },
                )
            if refusal := security.check_token(
                self.app.settings.server, _Headers(request), request.path_qs
            ):
                raise _refused(refusal)
            response = await handler(request)
        except oa.OpenAIError as exc:
            return error_response(exc, cors)
        except ChinwagError as exc:
            return error_response(oa.OpenAIError.from_chinwag(exc), cors)
        except web.HTTPException as exc:  # aiohttp's own: a body over client_max_size
            code = security.http_error_code(exc.status)
            if exc.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
                code = ErrorCode.BODY_TOO_LARGE.value
            return error_response(oa.OpenAIError(HTTPStatus(exc.status), code, exc.reason), cors)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away: nothing to answer
        except Exception as exc:
            log_failure(log, "HTTP: answering an OpenAI request failed", exc)
            error = oa.OpenAIError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                ErrorCode.INTERNAL_ERROR,
                "the server failed to answer; details in its log",
            )
            if request.get(STREAMING):
                raise  # the status is sent: aiohttp ends the connection
            return error_response(error, cors)
        if cors and not response.prepared:
            response.headers.update(cors)
        return response

    def _check(self, request: web.Request) -> security.Refusal | None:
        server = self.app.settings.server
        headers = _Headers(request)
        return (
            security.check_target(request.raw_path)
            or security.check_host(security.HostPolicy.build(server), headers.get_all("Host"))
            or security.check_origin(server, headers)
        )

    # --- helpers ----------------------------------------------------------------------------

    def _chat(self) -> ChatRunner:
        if self.app.chat is None:
            raise _loading(self.app)
        return self.app.chat

    def _speech(self) -> SpeechRunner:
        if self.app.speech is None:
            raise _loading(self.app)
        return self.app.speech

    def _persona(self, model: str) -> Persona:
        personas = self.app.personas
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

    async def _read_body(self, request: web.Request, limit: int) -> bytes:
        """The whole body, refused with 413 as soon as it is over `limit`."""
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    # --- routes -----------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        names = [*self.app.personas.names()]
        if DEFAULT_MODEL not in names:
            names.append(DEFAULT_MODEL)
        return web.json_response(oa.model_list(names, int(self.app.started_at)))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        settings = self.app.settings
        body = await self._read_body(request, settings.http.max_body_bytes)
        chat_request = oa.parse_chat_request(body, settings.limits.max_text_chars)
        persona = self._persona(chat_request.model)
        generation = _generation(persona.generation, chat_request)
        conversation = oa.conversation_of(chat_request.messages)
        plan = await _plan(persona, conversation)
        system_prompt = plan.system_prompt
        runner: ChatRunner | SaidAnswer = (
            SaidAnswer(plan.answer) if plan.answer is not None else self._chat()
        )
        reply = _Reply(chat_request, oa.completion_id(), oa.now(), plan)
        if not chat_request.stream:
            text, outcome = await reply.run(runner, system_prompt, conversation, generation, None)
            return web.json_response(
                oa.completion(
                    reply.ident,
                    chat_request.model,
                    reply.created,
                    text,
                    reply.finish_reason(outcome),
                    reply.usage(outcome),
                )
            )
        response = _event_stream()
        await response.prepare(request)
        request[STREAMING] = True
        include_usage = chat_request.include_usage

        async def send(delta: dict[str, Any]) -> None:
            await response.write(
                oa.sse(
                    oa.chunk(
                        reply.ident,
                        chat_request.model,
                        reply.created,
                        delta,
                        include_usage=include_usage,
                    )
                )
            )

        try:
            await send({"role": "assistant", "content": ""})

            async def on_text(text: str) -> None:
                await send({"content": text})

            _, outcome = await reply.run(runner, system_prompt, conversation, generation, on_text)
            await response.write(
                oa.sse(
                    oa.chunk(
                        reply.ident,
                        chat_request.model,
                        reply.created,
                        {},
                        reply.finish_reason(outcome),
                        include_usage=include_usage,
                    )
                )
            )
            if include_usage:
                await response.write(
                    oa.sse(
                        oa.chunk(
                            reply.ident,
                            chat_request.model,
                            reply.created,
                            None,
                            usage_=reply.usage(outcome),
                            include_usage=True,
                        )
                    )
                )
        except (oa.OpenAIError, ChinwagError) as exc:
            error = exc if isinstance(exc, oa.OpenAIError) else oa.OpenAIError.from_chinwag(exc)
            await response.write(oa.sse_error(error))
        await response.write(oa.SSE_DONE)
        await response.write_eof()
        return response

    async def transcriptions(self, request: web.Request) -> web.Response:
        http = self.app.settings.http
        if request.content_length is not None and request.content_length > http.max_upload_bytes:
            raise _too_large(http.max_upload_bytes)
        if request.content_type != "multipart/form-data":
            raise oa.invalid("send the audio as multipart/form-data with a `file` field", "file")
        fields, data = await self._read_form(request, http.max_upload_bytes)
        options = oa.parse_transcription_fields(fields)
        if data is None:
            raise oa.invalid("file is required", "file")
        speech = self._speech()
        try:
            audio = await asyncio.to_thread(
                decode_audio, data, speech.transcriber.sample_rate, http.max_audio_s
            )
        except AudioDecodeError as exc:
            raise oa.OpenAIError(
                HTTPStatus.BAD_REQUEST,
                ErrorCode.INVALID_AUDIO_FORMAT,
                f"the file is not audio this server can decode ({exc})",
                param="file",
            ) from None
        except AudioTooLong as exc:
            raise oa.OpenAIError(
                HTTPStatus.BAD_REQUEST,
                ErrorCode.AUDIO_TOO_LONG,
                f"{exc}; set [http] max_audio_s for longer files",
                param="file",
            ) from None
        result = await speech.transcribe_file(
            audio, language=options.language, prompt=options.prompt
        )
        content_type, body = oa.transcription_body(
            options.response_format, result.language, result.duration_s, result.segments
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _read_form(
        self, request: web.Request, limit: int
    ) -> tuple[dict[str, str], bytes | None]:
        """The form's text fields and its `file`, each bounded; other files are refused."""
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError, KeyError) as exc:
            raise oa.invalid(f"the multipart body cannot be read ({exc})", "file") from None
        fields: dict[str, str] = {}
        data: bytes | None = None
        total = 0
        while True:
            try:
                part = await reader.next()
            except (ValueError, AssertionError, RuntimeError) as exc:
                raise oa.invalid(f"the multipart body cannot be read ({exc})", "file") from None
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise oa.invalid("nested multipart bodies are not accepted", "file")
            name = part.name or ""
            cap = limit if name == "file" else oa.MAX_FIELD_BYTES
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(64 * 1024):
                size += len(chunk)
                total += len(chunk)
                if size > cap or total > limit + oa.MAX_FIELD_BYTES * 8:
                    if name == "file":
                        raise _too_large(limit)
                    raise oa.invalid(f"form field {name[:40]!r} is too long", name[:40] or None)
                chunks.append(chunk)
            value = b"".join(chunks)
            if name == "file":
                data = value
            elif name:
                fields[name] = value.decode("utf-8", "replace")
        return fields, data

    async def speech(self, request: web.Request) -> web.StreamResponse:
        settings = self.app.settings
        body = await self._read_body(request, settings.http.max_body_bytes)
        speech = self._speech()
        voice_name = settings.tts.voice_path.name.removesuffix(".onnx")
        speech_request = oa.parse_speech_request(
            body, settings.limits.max_text_chars, {voice_name, "default"}
        )
        if speech_request.speed != 1.0 and not speech.paced:
            raise oa.invalid("this server's voice speaks only at its own speed (1.0)", "speed")
        text = speakable(speech_request.input)
        splitter = PhraseSplitter()
        phrases = [*splitter.feed(text), *splitter.flush()]
        response = web.StreamResponse(
            headers={
                "Content-Type": OUTPUT_FORMATS[speech_request.response_format].content_type,
                "Cache-Control": "no-store",
                "X-Sample-Rate": str(OUTPUT_RATE),
            }
        )
        response.enable_chunked_encoding()
        encoder = SpeechEncoder(speech_request.response_format)
        resampler = StreamResampler(speech.synthesizer.sample_rate, OUTPUT_RATE, np.int16)
        try:
            async for pcm in _synthesized(speech, phrases, speech_request.speed):
                data = await asyncio.to_thread(encoder.encode, resampler.process(pcm))
                if not response.prepared:
                    await response.prepare(request)
                    request[STREAMING] = True
                if data:
                    await response.write(data)
            tail = resampler.flush()
            data = await asyncio.to_thread(lambda: encoder.encode(tail) + encoder.finish())
            if not response.prepared:
                await response.prepare(request)
            await response.write(data)
            await response.write_eof()
        finally:
            encoder.close()
        return response

    async def other(self, request: web.Request) -> web.StreamResponse:
        """Any other request on a kept-alive connection: answered by the WebSocket server's
        routes (static files, /healthz, /metrics), as on a fresh connection."""
        path = request.path
        if path in METHODS:
            raise oa.OpenAIError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                ErrorCode.METHOD_NOT_ALLOWED,
                f"use {METHODS[path]} for {path}",
                headers=(("Allow", METHODS[path]),),
            )
        if path.startswith("/v1/") and path != "/v1/realtime":
            raise oa.OpenAIError(
                HTTPStatus.NOT_FOUND, ErrorCode.NOT_FOUND, f"no route {path[:200]}"
            )
        headers = Headers(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        )
        if "websocket" in request.headers.get("Upgrade", "").lower():
            # The connection is aiohttp's now; websockets cannot take it over mid-stream.
            body = {
                "error": {
                    "code": ErrorCode.BAD_REQUEST.value,
                    "message": "open WebSocket connections on a new connection",
                }
            }
            return web.json_response(body, status=400, headers={"Connection": "close"})
        answer = self.fallback(WsRequest(request.raw_path, headers, method=request.method))
        if answer is None:  # cannot happen without an upgrade; answered as a missing route
            answer = WsResponse(404, "Not Found", Headers(), b"")
        out = web.Response(
            status=answer.status_code,
            reason=answer.reason_phrase,
            body=b"" if request.method == "HEAD" else answer.body,
        )
        for name, value in answer.headers.raw_items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                out.headers.add(name, value)
        if request.method == "HEAD":
            out.headers["Content-Length"] = answer.headers.get("Content-Length", "0")
        return out


class _Stopped(Exception):
    """A stop sequence was found: the reply ends here (raised through ChatRunner.reply,
    which stops the model)."""


async def _plan(persona: Persona, conversation: oa.Conversation) -> ReplyPlan:
    """The persona's plan for the last user message, as on every other way in: the site's
    facts, an honest "I don't know", a command declined (HTTP chat acts on nothing), or the
    model with the caller's system message (else the persona's) and the facts that match."""
    last = conversation.history[-1] if conversation.history else None
    question = last.content if last is not None and last.role == "user" else None
    system_prompt = conversation.system_prompt or persona.system_prompt
    # Site knowledge embeds the question (milliseconds of numpy): off the event loop.
    return await asyncio.to_thread(
        plan_reply,
        system_prompt,
        question,
        persona.knowledge,
        persona.knowledge_settings,
        guard=persona.honest_actions,
    )


class _FigureNotGiven(Exception):
    """Stops the model: its reply states a figure the question and the facts do not hold."""


class _Reply:
    """One chat completion's text, stop sequences and counts."""

    def __init__(self, request: oa.ChatRequest, ident: str, created: int, plan: ReplyPlan) -> None:
        self.request = request
        self.ident = ident
        self.created = created
        self.plan = plan
        self.scanner = oa.StopScanner(request.stops)

    async def run(
        self,
        runner: ChatRunner | SaidAnswer,
        system_prompt: str,
        conversation: oa.Conversation,
        generation: GenerationSettings,
        on_text: Callable[[str], Awaitable[None]] | None,
    ) -> tuple[str, ChatOutcome]:
        """The reply's text (stop sequences cut off), sent through on_text as it comes."""
        outcome = ChatOutcome()
        parts: list[str] = []

        async def on_delta(delta: str) -> None:
            text = self.scanner.feed(delta)
            if text:
                parts.append(text)
                if on_text is not None:
                    await on_text(text)
            if self.scanner.stopped:
                raise _Stopped

        figures = self.plan.figure_check() if self.plan.answer is None else None

        async def checked(delta: str) -> None:
            if figures is None:
                await on_delta(delta)
                return
            if text := figures.feed(delta):
                await on_delta(text)
            if figures.stopped:
                raise _FigureNotGiven

        try:
            # _FigureNotGiven: the model stated a figure the facts do not hold; stopped.
            with contextlib.suppress(_FigureNotGiven):
                await runner.reply(
                    system_prompt, conversation.history, generation, checked, outcome, urgent=False
                )
            if figures is not None:
                if tail := figures.flush():
                    await on_delta(tail)
                if figures.stopped:
                    await on_delta(figures.honest_line(self.plan.unknown))
            # A reply that claims an action nothing took gets the honest line, as elsewhere.
            note = self.plan.correction("".join(parts))
            if note is not None:
                await on_delta(note)
        except _Stopped:
            pass
        except PromptTooLong as exc:
            raise oa.OpenAIError(
                HTTPStatus.BAD_REQUEST,
                ErrorCode.CONTEXT_OVERFLOW,
                f"the messages do not fit the model's context ({exc})",
                param="messages",
            ) from None
        tail = self.scanner.flush()
        if tail:
            parts.append(tail)
            if on_text is not None:
                await on_text(tail)
        return "".join(parts), outcome

    def finish_reason(self, outcome: ChatOutcome) -> oa.FinishReason:
        stats = outcome.stats
        if not self.scanner.stopped and stats is not None and stats.finish_reason == "length":
            return "length"
        return "stop"

    def usage(self, outcome: ChatOutcome) -> dict[str, int]:
        stats = outcome.stats
        if stats is None:
            return oa.usage(0, 0)
        return oa.usage(stats.prompt_tokens, stats.completion_tokens)


def _generation(base: GenerationSettings, request: oa.ChatRequest) -> GenerationSettings:
    """The persona's settings with the request's overrides, checked by the same rules."""
    overrides: dict[str, Any] = {}
    if request.token_limit is not None:
        overrides["max_tokens"] = request.token_limit
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            overrides[name] = value
    try:
        return GenerationSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        param = "max_completion_tokens" if field == "max_tokens" else field
        raise oa.invalid(f"{param}: {first['msg']}", param) from None


async def _synthesized(
    speech: SpeechRunner, phrases: list[str], speed: float
) -> AsyncIterator[np.ndarray[Any, np.dtype[np.int16]]]:
    """Each phrase's audio as soon as it is synthesized; the next phrase is synthesized
    while the last one is encoded and sent."""
    pending: asyncio.Task[np.ndarray[Any, np.dtype[np.int16]]] | None = None
    try:
        for i, phrase in enumerate(phrases):
            current = pending or asyncio.ensure_future(speech.synthesize(phrase, speed=speed))
            pending = (
                asyncio.ensure_future(speech.synthesize(phrases[i + 1], speed=speed))
                if i + 1 < len(phrases)
                else None
            )
            yield await current
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    """The same Server header as the WebSocket routes' (not aiohttp's version)."""
    response.headers["Server"] = "chinwag"


def _event_stream() -> web.StreamResponse:
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # reverse proxies: do not hold the events back
        }
    )


def _too_large(limit: int) -> oa.OpenAIError:
    return oa.OpenAIError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        ErrorCode.BODY_TOO_LARGE,
        f"the request body is over the limit of {limit} bytes",
    )


def _loading(app: App) -> oa.OpenAIError:
    message = "the models are loading"
    if app.load_error:
        message = f"the models failed to load: {app.load_error}"
    return oa.OpenAIError(HTTPStatus.SERVICE_UNAVAILABLE, ErrorCode.MODELS_LOADING, message)
