"""A real Mosquitto broker for the tests, on a free loopback port, with its own config file.

    broker = MosquittoBroker(tmp_path)
    await broker.start()      # picks a free port the first time, keeps it afterwards
    await broker.stop()       # SIGTERM: clients see the connection drop
    await broker.restart()    # the same port again

No persistence, so a restart forgets retained messages: what a client sees afterwards was
published after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_path() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    return found


class MosquittoBroker:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self._process: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "log_dest stderr\n"
            # `subscribe` lets a test wait until an outside client (mosquitto_sub) listens.
            "log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n"
            "connection_messages true\n",
            encoding="utf-8",
        )

    async def start(self) -> None:
        if self.running:
            return
        self._write_config()
        self._log_file = self.log.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            mosquitto_path(),
            "-c",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )
        # Ready when it accepts connections; polling is the only signal mosquitto gives.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT_S
        while True:
            if self._process.returncode is not None:
                raise RuntimeError(f"mosquitto exited at start-up: {self.log_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(f"mosquitto did not listen: {self.log_text()}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def wait_for_log(self, text: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Until the broker's log mentions `text` (it logs connections and subscriptions)."""
        async with asyncio.timeout(timeout):
            # A log file gives no event to wait on.
            while text not in self.log_text(tail=None):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    def log_text(self, tail: int | None = 4000) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text if tail is None else text[-tail:]


@contextlib.asynccontextmanager
async def running_broker(
    directory: Path, port: int | None = None
) -> AsyncIterator[MosquittoBroker]:
    broker = MosquittoBroker(directory, port)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
