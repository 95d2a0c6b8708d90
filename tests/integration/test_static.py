"""Static files (the widget and demo page) over raw HTTP against a real server on 127.0.0.1:0:
cached with validation (ETag, If-None-Match -> 304), gzip when the client accepts it; and
`GET /widget/check`, which tells a page what a refused WebSocket handshake could not."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import pytest

from server import WEB_DIR
from server.app import Engines
from server.transports.websocket import accepts_gzip, etag_matches
from tests.conftest import RunningServer, make_settings, start_server

TOKEN = "static-test-token"
ALLOWED = "http://allowed.example"


async def request(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request; the body is read to the end of the connection (the server closes
    it after a plain HTTP response), so a 304 needs no Content-Length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


@pytest.fixture(scope="module")
async def guarded(engines: Engines) -> AsyncIterator[RunningServer]:
    running = await start_server(
        make_settings(server={"token": TOKEN, "allowed_origins": [ALLOWED]}), engines
    )
    yield running
    await running.web.close()


async def test_static_file_is_cached_with_validation(server: RunningServer) -> None:
    port = server.web.port
    expected = (WEB_DIR / "chinwag-widget.js").read_bytes()
    status, headers, body = await request(port, "/chinwag-widget.js")
    assert status == 200 and body == expected
    assert headers["content-length"] == str(len(expected))
    assert headers["cache-control"] == "no-cache"  # keep it, but ask before using it
    assert headers["vary"] == "Accept-Encoding"
    assert headers["access-control-allow-origin"] == "*"
    assert "content-encoding" not in headers
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10

    status, again, body = await request(port, "/chinwag-widget.js", {"If-None-Match": etag})
    assert (status, body) == (304, b""), "the browser's copy is current"
    assert again["etag"] == etag and again["cache-control"] == "no-cache"
    assert "content-length" not in again
    for other in ('"stale"', f"W/{etag}", f'"x", {etag}', "*"):
        status, _, _ = await request(port, "/chinwag-widget.js", {"If-None-Match": other})
        assert status == (200 if other == '"stale"' else 304), other
    # Another file has another tag.
    _, css, _ = await request(port, "/chinwag-widget.css")
    assert css["etag"] != etag
    # HEAD: the same headers, no body.
    status, head, body = await request(port, "/chinwag-widget.js", method="HEAD")
    assert (status, body, head["etag"]) == (200, b"", etag)


async def test_static_file_is_compressed_when_accepted(server: RunningServer) -> None:
    port = server.web.port
    for name in ("chinwag-widget.js", "chinwag-widget.css", "index.html", "mic-worklet.js"):
        expected = (WEB_DIR / name).read_bytes()
        status, headers, body = await request(
            port, "/" + name, {"Accept-Encoding": "gzip, deflate, br"}
        )
        assert status == 200 and headers["content-encoding"] == "gzip", name
        assert headers["content-length"] == str(len(body))
        assert gzip.decompress(body) == expected, name
        assert len(body) < len(expected) * 0.5, (name, len(body), len(expected))
        assert headers["vary"] == "Accept-Encoding"
        plain_etag = (await request(port, "/" + name))[1]["etag"]
        assert headers["etag"] != plain_etag, "each representation has its own tag"
        status, revalidated, body = await request(
            port, "/" + name, {"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]}
        )
        assert (status, body, revalidated["etag"]) == (304, b"", headers["etag"])
    # Refused explicitly: identity.
    _, headers, body = await request(port, "/chinwag-widget.js", {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in headers
    assert body == (WEB_DIR / "chinwag-widget.js").read_bytes()
    # HEAD with gzip: the Content-Length of the compressed body.
    _, got, _ = await request(port, "/chinwag-widget.js", {"Accept-Encoding": "gzip"})
    _, head, body = await request(port, "/chinwag-widget.js", {"Accept-Encoding": "gzip"}, "HEAD")
    assert body == b"" and head["content-length"] == got["content-length"]
    # API responses are still not cached.
    _, health, _ = await request(port, "/healthz", {"Accept-Encoding": "gzip"})
    assert health["cache-control"] == "no-store" and "content-encoding" not in health


def test_accept_encoding_and_if_none_match_parsing() -> None:
    assert accepts_gzip("gzip") and accepts_gzip("br, GZIP;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip("") and not accepts_gzip("br, deflate")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("gzip;q=0, *")
    assert not accepts_gzip("gzip; q=bogus")
    assert etag_matches('"a", "b"', ('"b"',)) and etag_matches('W/"b"', ('"b"',))
    assert etag_matches("*", ('"b"',)) and not etag_matches('"c"', ('"b"',))
    assert not etag_matches("", ('"b"',))


async def test_widget_check_says_why_a_page_is_refused(guarded: RunningServer) -> None:
    port = guarded.web.port

    async def check(headers: dict[str, str], query: str = "") -> tuple[int, dict[str, object]]:
        status, got, body = await request(port, "/widget/check" + query, headers)
        assert got["access-control-allow-origin"] == "*", "any page may read the answer"
        assert got["cache-control"] == "no-store"
        return status, json.loads(body)

    status, answer = await check({"Origin": "http://elsewhere.example"}, f"?token={TOKEN}")
    assert status == 403 and answer["error"]["code"] == "origin_not_allowed", answer  # type: ignore[index]
    # An allowed origin without the token: 401 (a foreign origin never learns about tokens).
    status, answer = await check({"Origin": ALLOWED})
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer  # type: ignore[index]
    status, answer = await check({"Origin": ALLOWED}, "?token=wrong")
    assert status == 401
    status, answer = await check({"Origin": ALLOWED}, f"?token={TOKEN}")
    assert status == 200 and answer == {
        "ok": True,
        "limits": {"max_text_chars": 1000, "max_message_bytes": 4096},
    }, answer
