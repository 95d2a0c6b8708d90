"""Real OpenAI-compatible servers for the remote-engine tests, on loopback.

`LlamaServer`: llama-cpp-python's own `llama_cpp.server` (the `[server]` extra) serving the
project's GGUF on 127.0.0.1:0, as a subprocess; its output is kept (the last lines) so that a
test can see what the server saw ("Disconnected from client").

`TcpProxy`: a plain TCP relay in front of a server, which records each connection (what was
asked on it, when the client closed it) and can play a server that is down (connections
refused and cut) or stalled (accepted, never answered).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0
_LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
_REQUEST_LINE = re.compile(rb"(GET|POST) (\S+) HTTP/1\.1\r\n")


class LlamaServer:
    """`python -m llama_cpp.server` with a GGUF on a free loopback port."""

    def __init__(self, model: Path, *, n_ctx: int, api_key: str | None = None) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.api_key = api_key
        self.port = 0
        self.lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._line_added = asyncio.Condition()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        args = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model), "--host", "127.0.0.1", "--port", "0",
            "--n_ctx", str(self.n_ctx), "--n_threads", "2", "--seed", "7",
            # One request at a time either way; a new one must not cut off the one under way.
            "--interrupt_requests", "false",
        ]  # fmt: skip
        if self.api_key:
            args += ["--api_key", self.api_key]
        self._process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(listening))
        try:
            self.port = await asyncio.wait_for(listening, STARTUP_TIMEOUT_S)
        except BaseException:
            await self.stop()
            raise

    async def _read(self, listening: asyncio.Future[int]) -> None:
        assert self._process is not None and self._process.stdout is not None
        async for raw in self._process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self.lines.append(line)
            async with self._line_added:
                self._line_added.notify_all()
            if not listening.done() and (match := _LISTENING.search(line)):
                listening.set_result(int(match[1]))
        if not listening.done():
            tail = "\n".join(list(self.lines)[-20:])
            listening.set_exception(RuntimeError(f"llama_cpp.server exited:\n{tail}"))

    def count(self, text: str) -> int:
        """Lines of the server's output so far that contain `text`."""
        return sum(text in line for line in self.lines)

    async def wait_for(self, text: str, *, more_than: int = 0, timeout: float = 30.0) -> None:
        """Until more than `more_than` lines of the output contain `text`."""
        async with asyncio.timeout(timeout), self._line_added:
            await self._line_added.wait_for(lambda: self.count(text) > more_than)

    async def stop(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


@dataclass
class Relayed:
    """One client connection through the proxy."""

    opened: float
    requests: list[str] = field(default_factory=list)  # "POST /v1/chat/completions", ...
    asked_at: list[float] = field(default_factory=list)  # when each was seen (monotonic)
    client_closed: float | None = None  # when the client closed its side (monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class TcpProxy:
    """127.0.0.1:0 relayed to 127.0.0.1:`target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections: list[Relayed] = []
        self.stalled = False  # accept, read, never answer
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Like a server that went away: new connections are refused, open ones cut."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:  # each ends on its own once its sockets are gone
            await asyncio.wait(list(self._tasks), timeout=10)

    async def up(self) -> None:
        """Listening again, on the same port."""
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.down()

    def requests_to(self, path: str) -> list[Relayed]:
        return [c for c in self.connections if any(path in r for r in c.requests)]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        relayed = Relayed(opened=time.monotonic())
        self.connections.append(relayed)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.stalled:
                while await reader.read(65536):
                    pass
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(upstream)
            back = asyncio.create_task(self._pipe(up_reader, writer, None))
            await self._pipe(reader, upstream, relayed)
            # The client closed its side: so do we towards the server (it sees the client go).
            upstream.close()
            await asyncio.gather(back, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if relayed.client_closed is None:
                relayed.client_closed = time.monotonic()
            relayed.closed.set()
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, relayed: Relayed | None
    ) -> None:
        try:
            while data := await source.read(65536):
                if relayed is not None:
                    for match in _REQUEST_LINE.finditer(data):
                        relayed.requests.append(f"{match[1].decode()} {match[2].decode()}")
                        relayed.asked_at.append(time.monotonic())
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if relayed is not None:
                relayed.client_closed = time.monotonic()
            else:
                sink.close()
