"""`chinwag chat`: a terminal client of the native protocol."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def _next_event(ws: ClientConnection) -> dict[str, Any]:
    while True:
        frame = await ws.recv()
        if isinstance(frame, str):
            event: dict[str, Any] = json.loads(frame)
            return event


async def ask(ws: ClientConnection, text: str, out: Any = sys.stdout) -> dict[str, Any]:
    """Send one message, print the streamed reply; return the reply.done event."""
    await ws.send(json.dumps({"type": "user.message", "text": text}))
    while True:
        event = await _next_event(ws)
        kind = event["type"]
        if kind == "reply.delta":
            out.write(event["text"])
            out.flush()
        elif kind == "reply.done":
            out.write("\n")
            out.flush()
            return event
        elif kind == "error":
            raise RuntimeError(f"{event['code']}: {event['message']}")


async def run_chat(
    url: str, text: str | None, *, persona: str | None = None, token: str | None = None
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with connect(url, additional_headers=headers, open_timeout=30) as ws:
            started = await asyncio.wait_for(_next_event(ws), timeout=600)
            if started["type"] != "session.started":
                print(f"chinwag: unexpected first event {started}", file=sys.stderr)
                return 1
            if persona:
                await ws.send(json.dumps({"type": "session.start", "persona": persona}))
                event = await _next_event(ws)
                if event["type"] == "error":
                    print(f"chinwag: {event['code']}: {event['message']}", file=sys.stderr)
                    return 1
            if text is not None:
                done = await ask(ws, text)
                return 0 if done["status"] == "completed" and done["text"].strip() else 1
            return await _interactive(ws)
    except (OSError, InvalidStatus, ConnectionClosed) as exc:
        print(f"chinwag: cannot talk to {url}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"chinwag: {exc}", file=sys.stderr)
        return 1


async def _interactive(ws: ClientConnection) -> int:
    print("chinwag chat: type a message and press Enter; Ctrl-D to quit.", file=sys.stderr)
    while True:
        try:
            line = await asyncio.to_thread(input, "> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.strip():
            try:
                await ask(ws, line)
            except RuntimeError as exc:
                print(f"[{exc}]", file=sys.stderr)
