"""Host, Origin, method and token checks against a real server on 127.0.0.1:0.

Raw HTTP requests carry the Host and Origin a browser would send after DNS rebinding; the
websockets client carries them as extra headers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.app import Engines
from tests.conftest import RunningServer, make_settings, start_server

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
async def guarded(engines: Engines) -> AsyncIterator[RunningServer]:
    """A server with a token and one configured name, as a kiosk would run."""
    running = await start_server(
        make_settings(server={"token": TOKEN, "server_names": ["kiosk.local"]}), engines
    )
    yield running
    await running.web.close()


async def raw_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh socket; status, headers (lower-case names) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode("latin-1").strip().split("\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        body = b""
        if status != 101 and method != "HEAD":
            body = await asyncio.wait_for(reader.readexactly(int(parsed["content-length"])), 10)
    finally:
        writer.close()
    return status, parsed, body


def upgrade_headers(host: str, origin: str | None = None) -> dict[str, str]:
    headers = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if origin is not None:
        headers["Origin"] = origin
    return headers


def error_code(body: bytes | bytearray) -> str:
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["message"]
    return str(error["code"])


async def test_a_rebound_host_is_refused_for_upgrades_and_plain_http(
    server: RunningServer,
) -> None:
    port = server.web.port
    rebound = f"rebind.example:{port}"
    status, headers, body = await raw_request(
        port, "GET", "/", upgrade_headers(rebound, f"http://{rebound}")
    )
    assert status == 403 and error_code(body) == "host_not_allowed"
    assert headers["content-type"] == "application/json"
    # A rebinding page could read plain HTTP answers too: the widget, health and metrics.
    for path in ("/", "/chinwag-widget.js", "/healthz", "/metrics", "/v1/realtime"):
        status, _, body = await raw_request(port, "GET", path, {"Host": rebound})
        assert status == 403 and error_code(body) == "host_not_allowed", path
    # The same requests by the server's own names go through.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        status, _, _ = await raw_request(port, "GET", "/healthz", {"Host": host})
        assert status == 200, host
        status, _, _ = await raw_request(port, "GET", "/", {"Host": host})
        assert status == 200, host
        status, _, _ = await raw_request(port, "GET", "/", upgrade_headers(host, f"http://{host}"))
        assert status == 101, host
    # No Host at all: not a browser (HTTP/1.0 tools); answered.
    status, _, _ = await raw_request(port, "GET", "/healthz")
    assert status == 200


async def test_websocket_clients_by_loopback_names(server: RunningServer) -> None:
    port = server.web.port
    # The URI names the host (and so the Host header); the socket goes to 127.0.0.1.
    for name in ("localhost", "127.0.0.1", "[::1]"):
        uri, origin = f"ws://{name}:{port}/", f"http://{name}:{port}"
        async with connect(uri, host="127.0.0.1", port=port, origin=origin) as ws:  # type: ignore[arg-type]
            assert json.loads(await ws.recv())["type"] == "session.started"
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"ws://rebind.example:{port}/",
            host="127.0.0.1",
            port=port,
            origin=f"http://rebind.example:{port}",  # type: ignore[arg-type]
        ):
            pass
    assert info.value.response.status_code == 403
    assert error_code(info.value.response.body) == "host_not_allowed"
    # A second Host header (here added to the one the client sends) is refused too.
    with pytest.raises(InvalidStatus) as info:
        async with connect(server.url, additional_headers={"Host": f"localhost:{port}"}):
            pass
    assert info.value.response.status_code == 403


async def test_configured_server_names_and_lowercase_bearer(guarded: RunningServer) -> None:
    port = guarded.web.port
    kiosk = f"kiosk.local:{port}"
    for scheme in ("Bearer", "bearer", "BEARER"):
        async with connect(
            f"ws://{kiosk}/",
            host="127.0.0.1",
            port=port,
            additional_headers={"Authorization": f"{scheme} {TOKEN}"},
            origin=f"http://{kiosk}",  # type: ignore[arg-type]
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.started"
    async with connect(guarded.url + f"?token={TOKEN}") as ws:
        assert json.loads(await ws.recv())["type"] == "session.started"
    for headers in ({"Authorization": "bearer wrong"}, {}):
        with pytest.raises(InvalidStatus) as info:
            async with connect(guarded.url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401
        assert error_code(info.value.response.body) == "unauthorized"
    status, _, body = await raw_request(port, "GET", "/healthz", {"Host": "other.local"})
    assert status == 403 and error_code(body) == "host_not_allowed"
    status, _, _ = await raw_request(port, "GET", "/healthz", {"Host": kiosk})
    assert status == 200


async def test_same_origin_only_under_an_allowed_name(server: RunningServer) -> None:
    port = server.web.port
    # The Host is ours but the page is elsewhere: another origin.
    status, _, body = await raw_request(
        port, "GET", "/", upgrade_headers(f"127.0.0.1:{port}", f"http://rebind.example:{port}")
    )
    assert status == 403 and error_code(body) == "origin_not_allowed"
    server.app.settings.server.server_names.append("*")
    try:  # with the Host check off, the rebinding upgrade passes: what "*" means
        status, _, _ = await raw_request(
            port,
            "GET",
            "/",
            upgrade_headers(f"rebind.example:{port}", f"http://rebind.example:{port}"),
        )
        assert status == 101
    finally:
        server.app.settings.server.server_names.remove("*")


async def test_only_get_and_head(server: RunningServer) -> None:
    port, local = server.web.port, {"Host": f"127.0.0.1:{server.web.port}"}
    get_status, get_headers, get_body = await raw_request(port, "GET", "/healthz", local)
    assert get_status == 200 and get_body
    status, headers, body = await raw_request(port, "HEAD", "/healthz", local)
    assert status == 200 and body == b""
    assert headers["content-length"] == get_headers["content-length"]
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"):
        for path in ("/healthz", "/", "/chinwag-widget.js", "/metrics", "/nowhere"):
            status, headers, body = await raw_request(
                port, method, path, {**local, "Content-Length": "0"}
            )
            assert status == 405, (method, path)
            assert headers["allow"] == "GET, HEAD"
            assert error_code(body) == "method_not_allowed"
    status, headers, body = await raw_request(port, "POST", "/", upgrade_headers(local["Host"]))
    assert status == 405 and headers["allow"] == "GET"
    assert error_code(body) == "method_not_allowed"
