"""The one-port server: WebSocket endpoints and plain HTTP (health, metrics), with `websockets`.

It routes and checks the handshake; each endpoint lives in its own module (native.py,
realtime.py) and is wired in ENDPOINTS.

Routes:
  GET /healthz         503 while models load, 200 with a JSON body when ready
  GET /metrics         Prometheus text format
  WS  / or /ws         the native protocol (docs/protocol.md)
  WS  /v1/realtime     the OpenAI Realtime protocol (docs/realtime.md)
  GET /, /<file>       the web chat widget and demo page (clients/web/)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from server import WEB_DIR, security
from server.app import App
from server.errors import ErrorCode
from server.transports import native, realtime

log = logging.getLogger(__name__)

# One connection of an endpoint, from the handshake to the client's going.
Endpoint = Callable[[App, ServerConnection], Awaitable[None]]
NATIVE_PATHS = {"/", "/ws"}
REALTIME_PATH = "/v1/realtime"
ENDPOINTS: dict[str, Endpoint] = {
    **dict.fromkeys(NATIVE_PATHS, native.serve),
    REALTIME_PATH: realtime.serve,
}
# The web chat widget and demo page, served as plain files (no build step).
STATIC_DIR = WEB_DIR
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".wav": "audio/wav",
}


def http_response(
    status: HTTPStatus, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            *(extra or []),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def json_response(status: HTTPStatus, data: object) -> Response:
    return http_response(status, json.dumps(data).encode(), "application/json")


def error_response(status: HTTPStatus, code: ErrorCode, message: str) -> Response:
    return json_response(status, {"error": {"code": code.value, "message": message}})


def refusal_response(refusal: security.Refusal) -> Response:
    response = error_response(refusal.status, refusal.code, refusal.message)
    response.headers.update(refusal.headers)
    return response


def head_response(
    connection: ServerConnection, request: Request, response: Response
) -> Response | None:
    """HEAD: the headers GET would get (Content-Length included), without the body."""
    return dataclasses.replace(response, body=b"") if request.method == "HEAD" else None


def static_file(path: str) -> Path | None:
    """The file under STATIC_DIR a URL path names, if any; never anything outside it."""
    relative = "index.html" if path in ("", "/") else path.lstrip("/")
    if relative.endswith("/"):
        relative += "index.html"
    candidate = (STATIC_DIR / relative).resolve()
    if not candidate.is_relative_to(STATIC_DIR.resolve()) or not candidate.is_file():
        return None
    return candidate if candidate.suffix in CONTENT_TYPES else None


class WebSocketServer:
    def __init__(self, app: App) -> None:
        self.app = app
        self._server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        limits = self.app.settings.limits
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            process_response=head_response,
            # Hard memory cap; frames between the app limit and this get a clear error.
            max_size=limits.max_message_bytes * 4,
            max_queue=16,
            write_limit=256 * 1024,
            server_header="chinwag",
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        server = self.app.settings.server
        if refusal := security.check_request(server, request.method, request.headers, upgrade):
            return refusal_response(refusal)  # a method other than GET/HEAD, a foreign Host
        if path == "/healthz":
            ready = self.app.ready.is_set()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return json_response(status, self.app.health())
        if path == "/metrics":
            return http_response(
                HTTPStatus.OK, self.app.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
            )
        if upgrade and path in ENDPOINTS:
            if refusal := security.check_upgrade(server, request.headers, request.path):
                return refusal_response(refusal)  # another page's Origin, no valid token
            if self.app.hub.full:
                full = self.app.hub.too_many()
                return error_response(HTTPStatus.SERVICE_UNAVAILABLE, full.code, full.message)
            return None
        if not upgrade and (found := static_file(path)):
            body = found.read_bytes()
            # Public files: lets pages on other origins load the widget's worklet module.
            cors = [("Access-Control-Allow-Origin", "*")]
            return http_response(HTTPStatus.OK, body, CONTENT_TYPES[found.suffix], cors)
        return error_response(HTTPStatus.NOT_FOUND, ErrorCode.NOT_FOUND, f"no route {path}")

    async def _handle(self, connection: ServerConnection) -> None:
        # Each endpoint registers its session with app.hub (admission, counting, metrics).
        path = urlsplit(connection.request.path if connection.request else "/").path
        await ENDPOINTS.get(path, native.serve)(self.app, connection)
