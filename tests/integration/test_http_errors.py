"""HTTP requests the server cannot serve get a JSON error with a 4xx status, never a 500 with a
traceback (issue 17 item 9): raw requests over a real socket, as an attacker writes them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server import security
from server.errors import ErrorCode
from tests.conftest import RunningServer, fake_engines, serving


@pytest.fixture(scope="module")
async def http_server() -> AsyncIterator[RunningServer]:
    async with serving(fake_engines()) as running:
        yield running


async def raw_request(server: RunningServer, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request head as bytes; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.web.port)
    try:
        writer.write(head)
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, body


def get(target: bytes, *extra: bytes) -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(extra) + b"\r\n"


def json_error(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and "Traceback" not in error["message"]
    return error


CASES = [
    (b"/\x00", 400, "bad_request"),
    (b"/chinwag-widget.js\x00.png", 400, "bad_request"),
    (b"/healthz?x=\x00", 400, "bad_request"),
    (b"/\x1b[31m", 400, "bad_request"),
    (b"/" + b"a" * 4095, 414, "uri_too_long"),  # the 4,096-character path
    (b"/" + b"a/" * 1500, 414, "uri_too_long"),
    (b"/" + b"a" * 9000, 414, "uri_too_long"),  # over websockets' 8 kB line: its own answer
    (b"/" + b"a" * 300 + b".js", 404, "not_found"),  # a file name too long for the OS
    (b"/%00", 404, "not_found"),
    (b"/../../etc/passwd", 404, "not_found"),
]


@pytest.mark.parametrize(("target", "status", "code"), CASES, ids=range(len(CASES)))
async def test_unservable_targets_get_json_errors(
    http_server: RunningServer,
    caplog: pytest.LogCaptureFixture,
    target: bytes,
    status: int,
    code: str,
) -> None:
    caplog.set_level(logging.INFO)
    got, headers, body = await raw_request(http_server, get(target))
    assert got == status
    assert json_error(headers, body)["code"] == code
    assert len(body) < 1000  # the target is not echoed whole
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # The server goes on.
    got, _, _ = await raw_request(http_server, get(b"/healthz"))
    assert got == 200


async def test_websockets_own_refusals_are_json(http_server: RunningServer) -> None:
    # A header line over websockets' limit.
    got, headers, body = await raw_request(
        http_server, get(b"/", b"X-Big: " + b"b" * 9000 + b"\r\n")
    )
    assert got == 431 and json_error(headers, body)["code"] == "headers_too_large"
    # An upgrade without its key: websockets' handshake refuses it.
    upgrade = get(b"/", b"Upgrade: websocket\r\n", b"Connection: Upgrade\r\n",
                  b"Sec-WebSocket-Version: 13\r\n")  # fmt: skip
    got, headers, body = await raw_request(http_server, upgrade)
    assert got == 400 and json_error(headers, body)["code"] == "bad_request"


def test_check_target() -> None:
    assert security.check_target("/chinwag-widget.js?x=%00") is None
    assert security.check_target("/" + "a" * (security.MAX_TARGET_CHARS - 1)) is None
    too_long = security.check_target("/" + "a" * security.MAX_TARGET_CHARS)
    assert too_long is not None and too_long.code is ErrorCode.URI_TOO_LONG
    for bad in ("/\x00", "/\t", "/\x7f", "/a\r\nSet-Cookie: x"):
        refusal = security.check_target(bad)
        assert refusal is not None and refusal.status == 400, bad
    assert security.http_error_code(414) == "uri_too_long"
    assert security.http_error_code(426) == "upgrade_required"
    assert security.http_error_code(599) == "http_error"
