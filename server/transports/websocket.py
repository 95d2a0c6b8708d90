"""The one-port server: WebSocket endpoints and plain HTTP (health, metrics), with `websockets`.

It routes and checks the handshake; each endpoint lives in its own module (native.py,
realtime.py) and is wired in ENDPOINTS.

Routes:
  GET /healthz         503 while models load, 200 with a JSON body when ready
  GET /metrics         Prometheus text format
  WS  / or /ws         the native protocol (docs/protocol.md)
  WS  /v1/realtime     the OpenAI Realtime protocol (docs/realtime.md)
  GET /widget/check    whether a page's WebSocket would be admitted (Origin, token), and the
                       text limits: the widget asks after a refused handshake, which a
                       browser cannot read
  GET /, /<file>       the web chat widget and demo page (clients/web/): ETag validation
                       (304), gzip when accepted
  /v1/models, /v1/chat/completions, /v1/audio/transcriptions, /v1/audio/speech
                       OpenAI-compatible HTTP (transports/openai_http.py, on aiohttp: see
                       transports/front.py for why a second HTTP server shares the port)
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import StatusLike

from server import WEB_DIR, security
from server.app import App
from server.errors import ErrorCode
from server.logs import log_failure
from server.transports import native, realtime, sink
from server.transports.front import FrontProtocol
from server.transports.openai_http import OpenAIHttp

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
WIDGET_CHECK_PATH = "/widget/check"
OPEN_TIMEOUT_S = 10.0  # websockets' default for the opening handshake
# Static files: cached in memory with their gzip form (files up to STATIC_CACHE_MAX_BYTES,
# STATIC_CACHE_FILES of them at most); browsers may keep them but revalidate (ETag -> 304).
STATIC_CACHE_CONTROL = "no-cache"
GZIP_SUFFIXES = frozenset({".html", ".js", ".css", ".svg", ".json"})
STATIC_CACHE_FILES = 64
STATIC_CACHE_MAX_BYTES = 1 << 20


def http_response(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
    cache: str = "no-store",
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
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
    try:
        candidate = (STATIC_DIR / relative).resolve()
        if not candidate.is_relative_to(STATIC_DIR.resolve()) or not candidate.is_file():
            return None
    except (OSError, ValueError):  # a name too long for the OS, a NUL byte: no such file
        return None
    return candidate if candidate.suffix in CONTENT_TYPES else None


@dataclasses.dataclass(frozen=True)
class StaticEntry:
    stamp: tuple[int, int]  # (mtime_ns, size): a changed file is read again
    body: bytes
    gzipped: bytes | None  # None: not worth compressing
    etag: str


_static_cache: dict[Path, StaticEntry] = {}


def static_entry(path: Path) -> StaticEntry:
    """The file's bytes, gzip form and ETag, computed once per version of the file."""
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    entry = _static_cache.get(path)
    if entry is not None and entry.stamp == stamp:
        return entry
    body = path.read_bytes()
    gzipped = None
    if path.suffix in GZIP_SUFFIXES and 256 < len(body) <= STATIC_CACHE_MAX_BYTES:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    entry = StaticEntry(stamp, body, gzipped, '"' + hashlib.sha256(body).hexdigest()[:24] + '"')
    if len(body) <= STATIC_CACHE_MAX_BYTES:
        _static_cache.pop(path, None)
        while len(_static_cache) >= STATIC_CACHE_FILES:
            del _static_cache[next(iter(_static_cache))]  # the oldest
        _static_cache[path] = entry
    return entry


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value accepts gzip (an explicit entry beats "*"; q=0 refuses)."""
    found: dict[str, bool] = {}
    for part in accept_encoding.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        found.setdefault(name.lower(), q > 0)
    return found.get("gzip", found.get("*", False))


def etag_matches(if_none_match: str, etags: tuple[str, ...]) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return any(t == "*" or t in etags for t in tags)


def static_response(path: Path, headers: Headers) -> Response:
    """200 with the file (gzip when accepted and smaller), or 304 when the client's copy is it."""
    entry = static_entry(path)
    gzip_etag = entry.etag[:-1] + '-gz"'
    use_gzip = entry.gzipped is not None and accepts_gzip(headers.get("Accept-Encoding", ""))
    common = [
        ("Cache-Control", STATIC_CACHE_CONTROL),
        ("ETag", gzip_etag if use_gzip else entry.etag),
        ("Vary", "Accept-Encoding"),
        # Public files: lets pages on other origins load the widget's worklet module.
        ("Access-Control-Allow-Origin", "*"),
    ]
    if etag_matches(headers.get("If-None-Match", ""), (entry.etag, gzip_etag)):
        return Response(HTTPStatus.NOT_MODIFIED.value, "Not Modified", Headers(common), b"")
    body = entry.gzipped if use_gzip and entry.gzipped is not None else entry.body
    extra = [*common[1:], *([("Content-Encoding", "gzip")] if use_gzip else [])]
    return http_response(
        HTTPStatus.OK, body, CONTENT_TYPES[path.suffix], extra, cache=STATIC_CACHE_CONTROL
    )


class JsonErrorConnection(ServerConnection):
    """websockets answers some requests itself before any route runs (a request line over
    8 kB: 414, headers too large: 431, a malformed upgrade: 400, shutting down: 503) with a
    plain-text body; here those are JSON errors like every other."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        super().__init__(protocol, *args, **kwargs)
        protocol.reject = json_reject  # type: ignore[method-assign]


def json_reject(status: StatusLike, text: str) -> Response:
    """websockets' ServerProtocol.reject, with a JSON body."""
    status = HTTPStatus(status)
    message = text.strip().removeprefix("Failed to open a WebSocket connection")
    message = message.lstrip(":.\n ").rstrip(".") or status.phrase
    body = {"error": {"code": security.http_error_code(status), "message": message}}
    return http_response(
        status, json.dumps(body).encode(), "application/json", [("Connection", "close")]
    )


class WebSocketServer:
    """The port: a front listener (transports/front.py) hands each connection to websockets
    (the routes above) or, for plain HTTP under /v1/, to the OpenAI HTTP server
    (transports/openai_http.py). websockets' per-connection objects are made here the way
    `websockets.asyncio.server.serve` makes them, since the front, not websockets, accepts."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._server: Server | None = None
        self._http: OpenAIHttp | None = None
        self._fronts: set[FrontProtocol] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        if self.app.settings.http.enabled:
            self._http = OpenAIHttp(self.app, self._answer)
            await self._http.start()
        http = self._http.protocol_factory if self._http is not None else None

        async def create_server() -> asyncio.Server:
            loop = asyncio.get_running_loop()
            return await loop.create_server(
                lambda: FrontProtocol(self._new_connection, http, self._fronts), host, port
            )

        server = Server(create_server, self._serve_connection)
        self._server = await server

    def _new_connection(self) -> ServerConnection:
        """A WebSocket connection's protocol objects, as `serve` makes them."""
        assert self._server is not None
        limits = self.app.settings.limits
        protocol = ServerProtocol(
            # Hard memory cap; frames between the app limit and this get a clear error.
            max_size=limits.max_message_bytes * 4,
            logger=self._server.logger,
        )
        return JsonErrorConnection(
            protocol,
            self._server,
            # A client that stops reading answers no ping: dropped by the sink's one rule.
            ping_interval=sink.KEEPALIVE_INTERVAL_S,
            ping_timeout=sink.SEND_TIMEOUT_S,
            max_queue=16,
            write_limit=256 * 1024,
        )

    async def _serve_connection(self, connection: ServerConnection) -> None:
        """One connection's life, as websockets' own `serve` runs it: the handshake (or an
        HTTP answer), then the endpoint; the TCP connection is closed in every case."""
        assert self._server is not None
        server = self._server
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                await connection.handshake(
                    self._process_request, head_response, server_header="chinwag"
                )
            if connection.protocol.state is not OPEN:
                connection.transport.abort()
                return
            server.all_connections.add(connection)
            connection.start_keepalive()
            try:
                async with connection:
                    await self._handle(connection)
            except Exception:
                connection.logger.error("connection handler failed", exc_info=True)
            finally:
                server.all_connections.discard(connection)
        except Exception:
            connection.transport.abort()  # a handshake timed out or failed: never leak it
        finally:
            task = asyncio.current_task()
            if task is not None:
                server.handler_tasks.discard(task)

    async def close(self) -> None:
        for front in list(self._fronts):  # connections that never sent a whole head
            front.abort()
        if self._server is not None:
            self._server.close()
        if self._http is not None:
            await self._http.close()
        if self._server is not None:
            await self._server.wait_closed()

    def _answer(self, request: Request) -> Response | None:
        """A plain HTTP request's answer from these routes (for the OpenAI HTTP server's
        kept-alive connections)."""
        return self._process_request(None, request)

    def _process_request(
        self, connection: ServerConnection | None, request: Request
    ) -> Response | None:
        """Every request's answer: checked target, then the routes. An exception is a bug,
        answered with a JSON 500 and logged without the request's text (never websockets'
        plain-text 500)."""
        if refusal := security.check_target(request.path):
            return refusal_response(refusal)  # a NUL or other control character, too long
        try:
            return self._route(request)
        except Exception as exc:
            log_failure(log, "HTTP: answering a request failed", exc)
            return error_response(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                ErrorCode.INTERNAL_ERROR,
                "the server failed to answer; details in its log",
            )

    def _route(self, request: Request) -> Response | None:
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
        if path == WIDGET_CHECK_PATH:
            # What a browser cannot read from a refused WebSocket handshake: the same Origin
            # and token checks, answered to any page (CORS), with the limits the widget shows.
            cors = [("Access-Control-Allow-Origin", "*")]
            if refusal := security.check_upgrade(server, request.headers, request.path):
                response = refusal_response(refusal)
                response.headers.update(cors)
                return response
            limits = self.app.settings.limits
            return http_response(
                HTTPStatus.OK,
                json.dumps(
                    {
                        "ok": True,
                        "limits": {
                            "max_text_chars": limits.max_text_chars,
                            "max_message_bytes": limits.max_message_bytes,
                        },
                    }
                ).encode(),
                "application/json",
                cors,
            )
        if upgrade and path in ENDPOINTS:
            if refusal := security.check_upgrade(server, request.headers, request.path):
                return refusal_response(refusal)  # another page's Origin, no valid token
            if self.app.hub.full:
                full = self.app.hub.too_many()
                return error_response(HTTPStatus.SERVICE_UNAVAILABLE, full.code, full.message)
            return None
        if not upgrade and (found := static_file(path)):
            return static_response(found, request.headers)
        shown = path if len(path) <= 200 else path[:200] + "..."
        return error_response(HTTPStatus.NOT_FOUND, ErrorCode.NOT_FOUND, f"no route {shown}")

    async def _handle(self, connection: ServerConnection) -> None:
        # Each endpoint registers its session with app.hub (admission, counting, metrics).
        path = urlsplit(connection.request.path if connection.request else "/").path
        await ENDPOINTS.get(path, native.serve)(self.app, connection)
