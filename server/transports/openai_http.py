"""OpenAI-compatible HTTP on chinwag's port, with aiohttp (docs/openai-http.md).

  GET  /v1/models                 the personas, as model names
  POST /v1/chat/completions       a reply from the LLM, streamed (server-sent events) or not
  POST /v1/audio/transcriptions   an uploaded audio file (any format FFmpeg reads) as text
  POST /v1/audio/speech           text as audio, streamed phrase by phrase as it is synthesized

The routes' work is in openai_http_chat.py (chat completions) and openai_http_audio.py
(transcriptions, speech), with what they share in openai_http_requests.py; this module is the
server: the checks every request passes, errors, routing.

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
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from server import security
from server.app import App
from server.errors import ChinwagError, ErrorCode
from server.logs import log_failure
from server.protocol import openai_http as oa
from server.transports.openai_http_audio import speech, transcriptions
from server.transports.openai_http_chat import chat_completions
from server.transports.openai_http_requests import DEFAULT_MODEL, STREAMING

log = logging.getLogger(__name__)

MODELS_PATH = "/v1/models"
CHAT_PATH = "/v1/chat/completions"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
SPEECH_PATH = "/v1/audio/speech"
METHODS = {MODELS_PATH: "GET", CHAT_PATH: "POST", TRANSCRIPTIONS_PATH: "POST", SPEECH_PATH: "POST"}
# Seconds a kept-alive connection may idle, and a shutdown waits for requests under way.
KEEPALIVE_S = 15.0
SHUTDOWN_S = 2.0
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

    # --- routes -----------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        names = [*self.app.personas.names()]
        if DEFAULT_MODEL not in names:
            names.append(DEFAULT_MODEL)
        return web.json_response(oa.model_list(names, int(self.app.started_at)))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await chat_completions(self.app, request)  # transports/openai_http_chat.py

    async def transcriptions(self, request: web.Request) -> web.Response:
        return await transcriptions(self.app, request)  # transports/openai_http_audio.py

    async def speech(self, request: web.Request) -> web.StreamResponse:
        return await speech(self.app, request)

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


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    """The same Server header as the WebSocket routes' (not aiohttp's version)."""
    response.headers["Server"] = "chinwag"
