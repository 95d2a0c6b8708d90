"""The HTTP side of the remote engines (`backend = "openai"`): one aiohttp session on an event
loop of its own thread, and the mapping of what can go wrong to error codes.

The engine interfaces are blocking and called on worker threads (base.py). A remote engine
sends its requests from its own thread's event loop and the worker waits on a future: the
requests never touch the server's event loop, a stream is consumed while the worker does
other things (ChatRunner steps several replies), and cancelling the request's task closes its
connection at once. aiohttp is already a dependency (the HTTP endpoints); the `openai` SDK
would add httpx and a second HTTP stack for the same few requests, and its streams close on
cancellation only through the same asyncio machinery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp

from server.engines.base import RemoteFailure
from server.errors import ErrorCode

log = logging.getLogger(__name__)

T = TypeVar("T")
# Of an error response, this much is read for its message.
MAX_ERROR_BODY = 16 * 1024
# Of a JSON response (model list, tokenizer, transcript), at most this much.
MAX_JSON_BODY = 4 * 1024 * 1024


def server_root(base_url: str) -> str:
    """The server's root from its OpenAI API root: extras such as /tokenize live there."""
    return base_url.removesuffix("/v1")


def error_message(body: bytes) -> str:
    """The message of an error response: OpenAI's {"error": {"message"}}, FastAPI's
    {"detail"}, or the start of the text."""
    text = body.decode("utf-8", errors="replace").strip()
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
        if isinstance(parsed, dict):
            error = parsed.get("error", parsed)
            if isinstance(error, str):
                text = error
            elif isinstance(error, dict):
                found = error.get("message") or error.get("detail")
                if isinstance(found, str):
                    text = found
                elif found is not None:
                    text = json.dumps(found)
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


def error_for_status(what: str, status: int, body: bytes) -> RemoteFailure:
    """The failure an HTTP error status from `what` ("the LLM server at HOST") means."""
    said = error_message(body)
    detail = f"{what} answered HTTP {status}" + (f": {said}" if said else "")
    if status in (401, 403):
        return RemoteFailure(ErrorCode.REMOTE_UNAUTHORIZED, f"{detail} (check api_key)")
    if status in (408, 504):
        return RemoteFailure(ErrorCode.REMOTE_TIMEOUT, detail)
    if status in (429, 502, 503):
        return RemoteFailure(ErrorCode.REMOTE_UNAVAILABLE, detail)
    return RemoteFailure(ErrorCode.REMOTE_ERROR, detail)


def failure_for(what: str, exc: BaseException) -> RemoteFailure:
    """What an exception raised by aiohttp (or the loop) while talking to `what` means."""
    if isinstance(exc, RemoteFailure):
        return exc
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError and connect timeouts too
        return RemoteFailure(ErrorCode.REMOTE_TIMEOUT, f"{what} did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        return RemoteFailure(ErrorCode.REMOTE_UNAVAILABLE, f"cannot reach {what}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RemoteFailure(ErrorCode.REMOTE_ERROR, f"{what} broke off its answer")
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError):
        return RemoteFailure(ErrorCode.REMOTE_UNAVAILABLE, f"lost the connection to {what}")
    return RemoteFailure(
        ErrorCode.REMOTE_ERROR, f"unexpected answer from {what} ({type(exc).__name__})"
    )


class RemoteClient:
    """An OpenAI-compatible server at `base_url`, reached from one thread of our own.

    Blocking calls (`run`) are for worker threads; never call them on that thread itself.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        timeout_s: float,
        role: str,
        connections: int = 16,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root = server_root(self.base_url)
        host = urlsplit(self.base_url).netloc
        self.what = f"the {role} server at {host}"
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Connect, and every read of the body: a stream that stalls longer is a timeout.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._connections = connections
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=f"remote-{role}", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession = self.run(self._open())
        self._closed = False

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open(self) -> aiohttp.ClientSession:
        # No cookies, no proxy from the environment: a remote engine talks to the one server
        # it is configured with (docs/security.md: no connection the user did not configure).
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            trust_env=False,
            headers=self._headers,
        )

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the client's loop; cancelling the future cancels it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the client's loop and wait for it (from a worker thread), at most
        `timeout` seconds (then it is cancelled and REMOTE_TIMEOUT raised)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RemoteFailure(
                ErrorCode.REMOTE_TIMEOUT, f"{self.what} did not answer in time"
            ) from None

    def close(self) -> None:
        """Close the connections and stop the thread; idempotent."""
        if self._closed or not self.loop.is_running():
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self.run(self._session.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()

    # --- requests (on the client's loop) ----------------------------------------------------

    def url(self, path: str, *, root: bool = False) -> str:
        """`path` under the API root (chat/completions), or under the server root."""
        return f"{self.root if root else self.base_url}/{path.lstrip('/')}"

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, url: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to a request, its status checked; what fails (here or while the
        caller reads the body) is raised as a RemoteFailure. On any early exit, cancellation
        included, the connection is closed (not returned to the pool half read)."""
        try:
            async with self._session.request(method, url, **kwargs) as response:
                try:
                    if response.status >= 400:
                        body = await read_limited(response, MAX_ERROR_BODY)
                        raise error_for_status(self.what, response.status, body)
                    yield response
                except BaseException:
                    response.close()
                    raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise failure_for(self.what, exc) from exc

    async def get_json(self, url: str) -> Any:
        async with self.request("GET", url) as response:
            return await read_json(response, self.what)

    async def post_json(self, url: str, body: dict[str, Any]) -> Any:
        async with self.request("POST", url, json=body) as response:
            return await read_json(response, self.what)


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first `limit` bytes and one more (so that "too long" shows)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


async def read_json(response: aiohttp.ClientResponse, what: str) -> Any:
    body = await read_limited(response, MAX_JSON_BODY)
    if len(body) > MAX_JSON_BODY:
        raise RemoteFailure(ErrorCode.REMOTE_ERROR, f"{what} sent an answer over 4 MB")
    try:
        return json.loads(body)
    except ValueError:
        raise RemoteFailure(ErrorCode.REMOTE_ERROR, f"{what} did not answer with JSON") from None
