"""The web chat widget in real headless Chromium (Debian's, driven by Playwright) against a
real chinwag server with the real models: typed chat, markup safety, stop, reconnection,
a voice turn through Chromium's fake microphone, a refused microphone, a cross-origin embed
with hostile page CSS, and the phone / kiosk / dark layouts."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from server import PROJECT_ROOT
from server.app import Engines
from tests.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WIDGET,
    Widget,
    axe_violations,
    fake_microphone_args,
    padded_wav,
)
from tests.conftest import RunningServer, make_settings, start_server
from tests.speech import recording, wer

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make system-deps)"
)

SCREENSHOT = PROJECT_ROOT / "docs" / "widget-screenshot.png"
VOICE_SAMPLE = "spk1_snt1.wav"  # "The child almost hurt the small dog."
MARKUP = '<img src=x onerror="window.__pwned=true">'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def web_server(engines: Engines) -> AsyncIterator[RunningServer]:
    running = await start_server(make_settings(), engines)
    yield running
    await running.web.close()


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One Chromium for the module, its fake microphone saying the voice sample once (the
    long silence after it keeps the loop from repeating during the test)."""
    wav = padded_wav(
        recording(VOICE_SAMPLE).path,
        tmp_path_factory.mktemp("mic") / "speech.wav",
        lead_s=1.5,
        tail_s=20.0,
    )
    pw = await playwright_api.async_playwright().start()
    chromium = await pw.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *fake_microphone_args(wav)]
    )
    yield chromium
    await chromium.close()
    await pw.stop()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh tab (own sessionStorage); fails the test on any uncaught page error."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, color_scheme="light"
    )
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    await context.close()
    assert not errors, errors


async def open_widget(page: Any, url: str) -> Widget:
    await page.goto(url)
    widget = Widget(page)
    await widget.connected()
    return widget


async def test_typed_question_gets_a_streamed_reply_kept_across_reload(
    page: Any, web_server: RunningServer
) -> None:
    widget = await open_widget(page, web_server.http + "/")
    # Every text the reply bubble shows, as the DOM changes.
    await widget.shadow(
        """(() => {
            window.__shown = [];
            new MutationObserver(() => {
                const last = [...root.querySelectorAll('li.assistant .text')].pop();
                if (last) window.__shown.push(last.textContent);
            }).observe(root, {subtree: true, childList: true, characterData: true});
        })()"""
    )
    # The outside check: type into the page's text box, press Enter, a reply appears.
    await page.get_by_role("textbox").fill("What is the capital of France?")
    await page.keyboard.press("Enter")
    replies = await widget.replies_done(1)
    reply = replies[0]["text"].strip()
    assert reply and replies[0]["status"] == ""
    shown = [t for t in await page.evaluate("window.__shown") if t]
    assert len(set(shown)) >= 3, f"the reply should appear piece by piece, saw {shown}"

    # Rendered as markdown (paragraphs, no markers, no newlines in textContent): compare the
    # letters only.
    def bare(text: str) -> str:
        return re.sub(r"[\s*_`#>]", "", text)

    assert all(bare(reply).startswith(bare(t)) for t in shown), shown
    assert await widget.shadow("!!root.querySelector('li.assistant .text > p')"), "markdown"
    await playwright_api.expect(page.get_by_text(reply[:30]).first).to_be_visible()
    # The demo page shows the widget's events in its own (light) DOM too.
    await playwright_api.expect(page.locator("#events")).to_contain_text(reply[:30])
    before = await widget.messages()

    await page.reload()
    await widget.connected()
    after = await widget.messages()
    assert after[: len(before)] == before, "the conversation survives a reload in the tab"
    assert after[-1]["role"] == "note" and "does not remember" in after[-1]["text"]
    await widget.type_and_send("Thank you!")
    assert (await widget.replies_done(2))[-1]["text"].strip()


async def test_markup_in_messages_and_replies_is_text_and_never_runs(
    page: Any, engines: Engines, tmp_path: Path
) -> None:
    # The reply's markup comes from the venue's own facts, said word for word, because a model
    # asked to echo it does so only on some CPUs (greedy decoding differs between them).
    (tmp_path / "venue.md").write_text(
        f"# Venue\n\n## Wifi\nThe wifi password is on the card marked {MARKUP} at the front desk.\n"
    )
    # Named as the demo page's persona, so the page asks for this one.
    (tmp_path / "assistant.toml").write_text(
        'system_prompt = "You are a receptionist."\n'
        '[knowledge]\npath = "venue.md"\nanswer = "extract"\n'
    )
    settings = make_settings(prompts={"directory": str(tmp_path), "default_persona": "assistant"})
    server = await start_server(settings, engines)
    try:
        await page.add_init_script("window.__pwned = false;")
        widget = await open_widget(page, server.http + "/")
        await check_markup_stays_text(page, widget)
    finally:
        await server.web.close()


async def check_markup_stays_text(page: Any, widget: Widget) -> None:
    question = "Where is the wifi password?"
    await widget.type_and_send(question)
    reply = (await widget.replies_done(1))[0]["text"]
    assert "<img src=x onerror=" in reply, f"the venue's fact carries the markup: {reply!r}"
    await widget.type_and_send("<b>bold?</b><script>window.__pwned = true</script>")
    await widget.replies_done(2)

    async def check() -> None:
        texts = await widget.shadow(
            "[...root.querySelectorAll('li.msg .text')].map(e => e.textContent)"
        )
        assert texts[0] == question and "<img src=x onerror=" in texts[1], texts
        assert texts[2] == "<b>bold?</b><script>window.__pwned = true</script>", texts
        assert await widget.shadow("root.querySelectorAll('img, script, b').length") == 0
        assert await page.evaluate("document.querySelectorAll('img').length") == 0
        await asyncio.sleep(1.0)  # an onerror would have fired by now
        assert await page.evaluate("window.__pwned") is False

    await check()
    await page.reload()  # the same, rendered back from sessionStorage
    await widget.connected()
    await check()


async def test_stop_button_and_escape_end_a_reply(page: Any, web_server: RunningServer) -> None:
    widget = await open_widget(page, web_server.http + "/")
    await widget.update_session(max_tokens=1000)
    story = "Write a very long story about a dragon who learns to bake bread, with many details."
    for how in ("button", "escape"):
        await widget.type_and_send(story)
        await widget.wait(
            "w.messages.some(m => m.role === 'assistant' && m.status === 'streaming' && m.text)"
        )
        if how == "button":
            await widget.button("Stop the reply").click()
        else:
            await widget.textbox.press("Escape")
        stopped = await widget.replies_done(1 if how == "button" else 2)
        assert stopped[-1]["status"] == "stopped", (how, stopped[-1])
        await asyncio.sleep(1.0)
        assert (await widget.messages())[-1] == stopped[-1], "nothing more arrives after stop"
        assert await widget.button("Stop the reply").is_hidden()
    await widget.update_session(max_tokens=30)
    await widget.type_and_send("Say hello.")
    assert (await widget.replies_done(3))[-1]["status"] == ""


class ServedProcess:
    """`chinwag serve` as a process on a fixed port, so it can be restarted on it."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.ready = directory / "ready"
        self.log = directory / "server.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "serve", "--port", str(self.port),
                "--ready-file", str(self.ready),
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
            )  # fmt: skip
        for _ in range(1200):
            if self.ready.exists() or self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert self.ready.exists(), self.log.read_text()[-3000:]

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_page_reconnects_after_the_server_restarts(page: Any, tmp_path: Path) -> None:
    served = ServedProcess(free_port(), tmp_path)
    await served.start()
    try:
        widget = await open_widget(page, f"http://127.0.0.1:{served.port}/")
        await widget.update_session(max_tokens=30)
        await widget.type_and_send("Hello there!")
        await widget.replies_done(1)
        status = widget.host.get_by_role("status")
        await playwright_api.expect(status).to_have_text("Connected")

        await served.stop()
        await widget.wait("w.dataset.state === 'reconnecting'", 30)
        await playwright_api.expect(status).to_contain_text("Reconnecting")
        await asyncio.sleep(2.0)  # a few failed attempts while the server is down
        assert await widget.state("state") == "reconnecting"
        await widget.type_and_send("Are you back?")  # waits for the new session
        assert (await widget.messages())[-1]["status"] == "queued"

        await served.start()
        await widget.connected(timeout_s=120)
        await playwright_api.expect(status).to_have_text("Connected")
        await widget.replies_done(2)
        messages = await widget.messages()
        # The note between the two sessions: above the message typed during the outage.
        assert [m["role"] for m in messages] == ["user", "assistant", "note", "user", "assistant"]
        assert "does not remember" in messages[2]["text"]
        assert messages[3] == {"role": "user", "text": "Are you back?", "status": ""}
        # The generation override was sent again, and the new session answers.
        await widget.type_and_send("What is two plus two?")
        assert (await widget.replies_done(3))[-1]["text"].strip()
        assert [m["role"] for m in await widget.messages()].count("note") == 1
    finally:
        await served.stop()


async def test_voice_turn_with_the_fake_microphone(
    page: Any, web_server: RunningServer, tmp_path: Path
) -> None:
    """Hands-free: transcript, reply text, reply audio playing; speaking over the reply stops
    it at once; then push-to-talk from the keyboard. Each time the microphone opens, the fake
    device plays the sample from its start: 1.5 s of silence, then the sentence."""
    reference = recording(VOICE_SAMPLE).text
    user_turns = (
        "w.messages.filter(m => m.role === 'user' && m.status === '' && /child/i.test(m.text))"
    )
    widget = await open_widget(page, web_server.http + "/")
    await widget.update_session(max_tokens=80, temperature=0.0)
    await widget.type_and_send("Hello! Can I talk to you?")
    await widget.replies_done(1)

    await widget.button("Start talking (hands-free)").click()
    await widget.wait("w.dataset.mic === 'listening'", 30)
    await widget.wait(f"{user_turns}.length >= 1", 120)  # the live transcript, then the final
    heard = [m["text"] for m in await widget.messages() if m["role"] == "user"][-1]
    assert wer([reference], [heard]) <= 0.25, heard
    # The reply streams as text and its audio plays, reported back to the server.
    await widget.wait("w.messages.filter(m => m.role === 'assistant' && m.text).length >= 2", 120)
    await widget.wait("Number(w.dataset.audioFrames) > 0 && w.dataset.playing === 'true'", 120)
    await widget.wait("Number(w.dataset.playedMs || 0) > 0", 30)
    assert float(await widget.state("micPeak") or 0) > 0.3, "the level meter moved"
    assert int(await widget.state("micFrames") or 0) > 50
    await playwright_api.expect(widget.host.locator(".live")).to_have_text("Speaking…")
    # Mid-conversation, for the README; only rewritten when asked, so tests leave the tree clean.
    shot = SCREENSHOT if os.environ.get("CHINWAG_UPDATE_SCREENSHOT") else tmp_path / "widget.png"
    await page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    await widget.button("Stop listening").click()
    await widget.wait("w.dataset.mic === 'off'", 10)

    # Talking over the reply (hands-free again): the server says clear, the audio stops.
    assert await widget.state("playing") == "true", "the reply should still be playing"
    await widget.button("Start talking (hands-free)").click()
    await widget.wait("w.dataset.playing === 'false'", 60)
    # The audio stops at once on the client; the reply's end comes from the server after it
    # (reply.truncated or reply.done), later on a busy machine.
    second = "w.messages.filter(m => m.role === 'assistant')[1]"
    await widget.wait(f"['interrupted', 'stopped'].includes({second}?.status)", 60)
    cut = [m for m in await widget.messages() if m["role"] == "assistant"][1]
    assert cut["status"] in ("interrupted", "stopped"), cut
    # Nothing more of it plays. (Not "played < received - 500 ms": on a busy machine the
    # synthesis can fall behind, all that had arrived has played, and the cut comes in the gap.)
    frames = await widget.state("audioFrames")
    await asyncio.sleep(1.0)
    assert await widget.state("audioFrames") == frames
    assert await widget.state("playing") == "false"
    await widget.wait(f"{user_turns}.length >= 2", 120)
    await widget.button("Stop listening").click()
    await widget.wait("w.dataset.mic === 'off'", 10)
    # Its answer starts; the stop button ends it (text and audio). (Stopped before its first
    # word, a reply would leave no bubble, and the count at the end would be one short.)
    await widget.wait("w.messages.filter(m => m.role === 'assistant' && m.text).length >= 3", 120)
    await widget.button("Stop the reply").click()
    await widget.wait("w.dataset.busy === 'false' && w.dataset.playing === 'false'", 30)

    # Push to talk, from the keyboard: hold Space on the microphone button.
    await widget.host.get_by_role("combobox", name="Microphone").select_option("push_to_talk")
    await widget.button("Hold to talk").focus()
    await page.keyboard.down(" ")
    await widget.wait("w.dataset.mic === 'listening'", 30)
    await asyncio.sleep(5.0)  # the silence and the sentence
    await page.keyboard.up(" ")
    await widget.wait("w.dataset.mic === 'off'", 10)
    await widget.wait(f"{user_turns}.length >= 3", 120)
    heard = [m["text"] for m in await widget.messages() if m["role"] == "user"][-1]
    assert wer([reference], [heard]) <= 0.25, heard
    await widget.wait("w.messages.filter(m => m.role === 'assistant' && m.text).length >= 4", 120)


# Every stream getUserMedia hands the page, to check that none is still live.
MIC_SPY = """
window.__streams = [];
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await getUserMedia(constraints);
  window.__streams.push(stream);
  // A slow permission prompt, when a test asks for one.
  await new Promise((resolve) => setTimeout(resolve, window.__getUserMediaDelayMs || 0));
  return stream;
};
"""
LIVE_TRACKS = (
    "window.__streams.flatMap(s => s.getTracks()).filter(t => t.readyState !== 'ended').length"
)


class SocketLog:
    """Every WebSocket frame the page sends and receives, as Chromium's network layer sees
    them (what actually leaves the page, not what the widget believes it sent), in order,
    each with the time it reached the test."""

    def __init__(self, page: Any) -> None:
        self.sent: list[tuple[float, str | bytes]] = []
        self.received: list[tuple[float, dict[str, Any]]] = []
        page.on("websocket", self._attach)

    def _attach(self, ws: Any) -> None:
        ws.on("framesent", lambda payload: self.sent.append((time.monotonic(), payload)))
        ws.on("framereceived", self._on_received)

    def _on_received(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.received.append((time.monotonic(), json.loads(payload)))

    def binary_sent(self, since: float = 0.0) -> int:
        return sum(1 for t, p in self.sent if t >= since and isinstance(p, bytes))

    def sent_types(self) -> list[str]:
        return [json.loads(p)["type"] for _, p in self.sent if isinstance(p, str)]

    def binary_after(self, event_type: str) -> int:
        """Binary frames sent after the last text frame of this type (-1: there is none)."""
        last = -1
        for i, (_, p) in enumerate(self.sent):
            if isinstance(p, str) and json.loads(p)["type"] == event_type:
                last = i
        if last < 0:
            return -1
        return sum(1 for _, p in self.sent[last + 1 :] if isinstance(p, bytes))

    async def wait_received(self, event_type: str, timeout_s: float = 30, **fields: Any) -> None:
        for _ in range(int(timeout_s * 10)):
            for _, e in self.received:
                if e["type"] == event_type and all(e.get(k) == v for k, v in fields.items()):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {event_type} {fields} in {timeout_s} s")

    def received_types(self, since: float) -> list[str]:
        return [e["type"] for t, e in self.received if t >= since]


async def start_hands_free(widget: Widget) -> None:
    await widget.button("Start talking (hands-free)").click()
    await widget.wait("w.dataset.mic === 'listening' && Number(w.dataset.micFrames || 0) >= 10", 30)


async def test_closing_the_panel_turns_the_microphone_off(
    page: Any, web_server: RunningServer
) -> None:
    """Hands-free on, then the panel closed: the tracks end, `audio.stop` goes out and not one
    audio frame after it, and nothing more is heard. The fake microphone starts 1.5 s of
    silence before the sentence each time it opens, so the panel closes before the sentence
    and a microphone left on would have it transcribed within the wait."""
    await page.add_init_script(MIC_SPY)
    sockets = SocketLog(page)
    widget = await open_widget(page, web_server.http + "/")
    await start_hands_free(widget)
    assert sockets.binary_sent() > 0 and await page.evaluate(LIVE_TRACKS) == 1

    await widget.host.locator("button.close").click()  # the panel's own close button
    closed_at = time.monotonic()
    await playwright_api.expect(widget.button("Open the chat")).to_be_visible()
    await asyncio.sleep(7.0)  # the sentence, a pause, its transcript: if anything listened
    after_close = {
        "live tracks": await page.evaluate(LIVE_TRACKS),
        "mic": await widget.state("mic"),
        "audio.stop sent": "audio.stop" in sockets.sent_types(),
        "frames after audio.stop": sockets.binary_after("audio.stop"),
        "frames in the last 6 s": sockets.binary_sent(since=closed_at + 1.0),
        "heard": [
            t
            for t in sockets.received_types(since=closed_at)
            if t.startswith(("speech.", "transcript", "reply.", "output_audio."))
        ],
        "voice messages": [m for m in await widget.messages() if m["role"] == "user"],
    }
    assert after_close == {
        "live tracks": 0,
        "mic": "off",
        "audio.stop sent": True,
        "frames after audio.stop": 0,
        "frames in the last 6 s": 0,
        "heard": [],
        "voice messages": [],
    }, after_close


async def test_reopened_panel_keeps_the_microphone_off_and_the_assistant_quiet(
    page: Any, web_server: RunningServer
) -> None:
    """Closing also stops the assistant speaking and keeps it silent while closed; opening
    the panel again does not open the microphone, only the button does; leaving the page
    (pagehide) turns it off too."""
    await page.add_init_script(MIC_SPY)
    sockets = SocketLog(page)
    widget = await open_widget(page, web_server.http + "/")
    # The assistant speaks (a `say`, no model needed) while the microphone listens. The
    # microphone opens after the speech starts, so that its 1.5 s of silence is still
    # playing when the panel closes (a sentence would interrupt the speech: barge-in).
    await start_hands_free(widget)  # the first start sets up Web Audio, for playback too
    await widget.button("Stop listening").click()
    long_text = "One, two, three, four, five, six, seven, eight, nine, ten. " * 3
    await page.evaluate(
        f"t => {WIDGET}.sendEvent({{type: 'say', text: t, id: 'say-1'}})", long_text
    )
    await widget.wait("w.dataset.playing === 'true'", 30)
    await start_hands_free(widget)
    assert await widget.state("playing") == "true"

    await widget.host.locator("button.launcher").click()  # the launcher closes it too
    assert await widget.state("playing") == "false", "closing stops the assistant speaking"
    assert await widget.state("mic") == "off" and await page.evaluate(LIVE_TRACKS) == 0
    frames_played = await widget.state("audioFrames")
    # Audio that comes while the panel is closed is not played.
    await page.evaluate(f"t => {WIDGET}.sendEvent({{type: 'say', text: t, id: 'say-2'}})", "Hello.")
    await sockets.wait_received("output_audio.done", stream_id="say-2")
    assert await widget.state("audioFrames") == frames_played
    assert await widget.state("playing") == "false"

    # Open again: the microphone stays off, and says so, until the button is pressed.
    await widget.button("Open the chat").click()
    reopened_at = time.monotonic()
    await asyncio.sleep(2.0)
    mic = widget.button("Start talking (hands-free)")
    assert await mic.get_attribute("aria-pressed") == "false"
    assert await widget.state("mic") == "off"
    assert await page.evaluate("window.__streams.length") == 2, "no new getUserMedia"
    assert sockets.binary_sent(since=reopened_at) == 0
    await start_hands_free(widget)
    assert await page.evaluate(LIVE_TRACKS) == 1
    assert await widget.button("Stop listening").get_attribute("aria-pressed") == "true"

    # Leaving the page turns it off as well.
    stops = sockets.sent_types().count("audio.stop")
    await page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide'))")
    left_at = time.monotonic()
    assert await widget.state("mic") == "off" and await page.evaluate(LIVE_TRACKS) == 0
    await asyncio.sleep(1.5)
    assert sockets.sent_types().count("audio.stop") == stops + 1
    assert sockets.binary_after("audio.stop") == 0
    assert sockets.binary_sent(since=left_at + 0.5) == 0


async def test_closing_the_panel_while_the_microphone_starts(
    page: Any, web_server: RunningServer
) -> None:
    """The panel closes while getUserMedia is still answering (a slow permission prompt):
    the stream that arrives then is stopped at once and nothing is sent."""
    await page.add_init_script("window.__getUserMediaDelayMs = 1500;")
    await page.add_init_script(MIC_SPY)
    sockets = SocketLog(page)
    widget = await open_widget(page, web_server.http + "/")
    await widget.button("Start talking (hands-free)").click()
    await widget.wait("w.dataset.mic === 'starting'", 10)
    await widget.host.locator("button.close").click()
    await widget.wait("window.__streams.length === 1", 10)
    await asyncio.sleep(2.5)  # the delayed stream has arrived and been dealt with
    assert await page.evaluate(LIVE_TRACKS) == 0
    assert await widget.state("mic") == "off"
    assert "audio.start" not in sockets.sent_types()
    assert sockets.binary_sent() == 0


@pytest.mark.parametrize(
    ("error", "message"),
    [("NotAllowedError", "Microphone access was refused"), ("NotFoundError", "No microphone")],
)
async def test_microphone_refused_or_missing_keeps_text_chat_working(
    page: Any, web_server: RunningServer, error: str, message: str
) -> None:
    await page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () => "
        f"Promise.reject(new DOMException('refused by the test', '{error}'));"
    )
    widget = await open_widget(page, web_server.http + "/")
    await widget.button("Start talking (hands-free)").click()
    alert = widget.host.get_by_role("alert")
    await playwright_api.expect(alert).to_contain_text(message)
    await playwright_api.expect(alert).to_contain_text("You can still type")
    assert await widget.state("mic") in ("denied", "missing")
    await widget.update_session(max_tokens=20)
    await widget.type_and_send("Hi!")
    assert (await widget.replies_done(1))[0]["text"].strip()


HOSTILE_PAGE = """<!doctype html><html><head><style>
  * { color: rgb(255, 0, 0) !important; font-family: serif !important;
      font-size: 40px !important; letter-spacing: 9px !important; }
  textarea, button { display: none !important; }
  .msg, .panel, .log { background: rgb(0, 255, 0) !important; }
</style></head><body>
  <p class="msg">The host page's own paragraph.</p>
  <script src="SERVER/chinwag-widget.js" data-layout="inline" defer></script>
  <chinwag-widget style="display:block; height: 600px" persona="receptionist"></chinwag-widget>
</body></html>"""


@contextlib.contextmanager
def page_site(body: bytes) -> Iterator[str]:
    """Another origin (another port of this machine) serving one HTML page; its origin."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()


@pytest.fixture
def other_site(web_server: RunningServer) -> Iterator[str]:
    """A page on another origin (another port of this machine) that embeds the widget."""
    with page_site(HOSTILE_PAGE.replace("SERVER", web_server.http).encode()) as origin:
        allowed = web_server.app.settings.server.allowed_origins
        allowed.append(origin)  # a site embedding the widget must be allowed explicitly
        yield origin + "/"
        allowed.remove(origin)


async def test_embedded_in_another_origin_with_hostile_css(page: Any, other_site: str) -> None:
    widget = await open_widget(page, other_site)
    # Host CSS does not get in...
    await playwright_api.expect(widget.textbox).to_be_visible()
    style = await widget.shadow(
        "(() => { const s = getComputedStyle(root.querySelector('.input'));"
        " return [s.color, s.fontSize, s.letterSpacing, s.fontFamily]; })()"
    )
    assert style[0] != "rgb(255, 0, 0)" and style[1] != "40px", style
    assert style[2] in ("normal", "0px") and style[3] != "serif", style
    # ...and the widget's CSS does not get out.
    host_p = await page.evaluate(
        "(() => { const s = getComputedStyle(document.querySelector('p.msg'));"
        " return [s.maxWidth, s.borderTopLeftRadius, s.backgroundColor]; })()"
    )
    assert host_p == ["none", "0px", "rgb(0, 255, 0)"], host_p  # the page's own styles
    assert await widget.shadow("root.querySelector('.title').textContent") == "chinwag"
    # Text chat across origins, with the persona set on the element.
    await widget.update_session(max_tokens=30)
    await widget.type_and_send("Hello, where is the lobby?")
    assert (await widget.replies_done(1))[0]["text"].strip()
    bubble = await widget.shadow(
        "(() => { const s = getComputedStyle(root.querySelector('li.msg'));"
        " return [s.backgroundColor, s.display]; })()"
    )
    assert bubble[0] != "rgb(0, 255, 0)" and bubble[1] != "none", bubble
    # The microphone works too: the worklet module comes from chinwag's origin without CORS.
    await widget.button("Start talking (hands-free)").click()
    await widget.wait("Number(w.dataset.micFrames || 0) >= 10", 30)
    await widget.button("Stop listening").click()
    await widget.wait("w.dataset.mic === 'off'", 10)


async def test_layouts_themes_and_labels(page: Any, web_server: RunningServer) -> None:
    widget = await open_widget(page, web_server.http + "/")
    unlabelled = await widget.shadow(
        "[...root.querySelectorAll('button, textarea, select')]"
        ".filter(e => !e.hidden && !(e.getAttribute('aria-label') || e.labels?.length))"
        ".map(e => e.className)"
    )
    assert unlabelled == []
    # Keyboard: the text box has the focus (demo page) and Tab reaches the buttons.
    assert await widget.shadow("root.activeElement?.className") == "input"
    await page.keyboard.press("Tab")
    assert await widget.shadow("root.activeElement?.getAttribute('aria-label')") == (
        "Start talking (hands-free)"
    )
    for width, height in ((360, 740), (1920, 1080)):
        await page.set_viewport_size({"width": width, "height": height})
        box = await widget.host.locator(".panel").bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, (width, box)
        send = await widget.button("Send message").bounding_box()
        assert send is not None and send["width"] >= 44 and send["height"] >= 44
    backgrounds = {}
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        backgrounds[scheme] = await widget.shadow(
            "getComputedStyle(root.querySelector('.panel')).backgroundColor"
        )
    assert backgrounds == {"light": "rgb(255, 255, 255)", "dark": "rgb(21, 23, 28)"}


# --- issue 19: reflow, accessibility, failed messages, stable controls, the view, markdown ---

LONG_STORY = "Write a very long story about a dragon who learns to bake bread, with many details."
CODE_REPLY = (
    "Here is **bold**, *italic* and `inline code`.\n\n"
    "1. first\n2. second\n\n"
    "```python\nprint('hello')\n```\n\n"
    "See [the docs](https://example.com/docs) or mail [us](mailto:team@example.com)."
)


def storage_key(server: RunningServer, persona: str = "assistant") -> str:
    return f"chinwag-widget:v1:ws://127.0.0.1:{server.web.port}/#{persona}"


async def seed_conversation(
    page: Any, server: RunningServer, messages: list[dict[str, str]], open_: bool = True
) -> None:
    """A conversation in the tab's sessionStorage before the page loads, as if shown before a
    reload (a reload keeps what the widget itself saved since)."""
    stored = json.dumps({"messages": messages, "open": open_})
    await page.add_init_script(
        f"""if (!sessionStorage.getItem({json.dumps(storage_key(server))}))
            sessionStorage.setItem({json.dumps(storage_key(server))}, {json.dumps(stored)});"""
    )


def exchange(count: int) -> list[dict[str, str]]:
    out = []
    for i in range(count):
        out.append({"role": "user", "text": f"Question number {i}?", "status": ""})
        out.append(
            {"role": "assistant", "text": f"Answer number {i}.\n\nA second line.", "status": ""}
        )
    return out


# Every visible control of the panel: brought into view, is it whole, on screen and on top?
CLIPPED_CONTROLS = """(() => {
  const root = document.querySelector('chinwag-widget').shadowRoot;
  const W = innerWidth, H = innerHeight, bad = [];
  const controls = [...root.querySelectorAll(
    '.panel button, .panel textarea, .panel select, .panel [tabindex="0"]',
  )].filter(e => e.getClientRects().length);
  for (const e of controls) {
    if (e.classList.contains('log')) continue;  // the conversation itself, taller than the screen
    e.scrollIntoView({block: 'nearest', inline: 'nearest'});
    const r = e.getBoundingClientRect();
    const name = e.getAttribute('aria-label') || e.className;
    if (r.left < -0.5 || r.top < -0.5 || r.right > W + 0.5 || r.bottom > H + 0.5) {
      bad.push([name, 'off screen', ...[r.left, r.top, r.right, r.bottom].map(Math.round)]);
      continue;
    }
    const x = r.left + Math.min(r.width / 2, 10), y = r.top + r.height / 2;
    const hit = root.elementFromPoint(x, y);
    if (!hit || !(hit === e || e.contains(hit)))
      bad.push([name, 'covered by', hit && hit.className]);
  }
  // The latest message can be read whole too (not a sliver of conversation).
  const last = [...root.querySelectorAll('li.msg')].pop();
  if (last) {
    last.scrollIntoView({block: 'nearest'});
    const r = last.getBoundingClientRect();
    const hit = root.elementFromPoint(r.left + 5, r.top + r.height / 2);
    if (r.top < -0.5 || r.bottom > H + 0.5 || !hit || !last.contains(hit))
      bad.push(['latest message', Math.round(r.top), Math.round(r.bottom), hit && hit.className]);
  }
  const panel = root.querySelector('.panel');
  if (panel.scrollWidth > panel.clientWidth + 1)
    bad.push(['panel', 'scrolls sideways', panel.scrollWidth, panel.clientWidth]);
  return {bad, count: controls.length, log: root.querySelector('.log').clientHeight};
})()"""


@pytest.mark.parametrize(
    ("device", "width", "height"),
    [
        ("desktop 200 %", 640, 400),
        ("desktop 400 %", 320, 200),
        ("phone 200 %", 180, 370),
        ("phone on its side 200 %", 370, 180),
    ],
)
async def test_no_control_is_clipped_at_200_and_400_percent_zoom(
    browser: Any, web_server: RunningServer, device: str, width: int, height: int
) -> None:
    """Zoom is a smaller viewport in CSS pixels (1280x800 at 200 % is 640x400): the panel goes
    fullscreen, and every control, with a conversation and the microphone notice showing,
    can be brought into view whole and is not covered by another."""
    phone = device.startswith("phone")
    context = await browser.new_context(
        viewport={"width": width, "height": height}, has_touch=phone, is_mobile=phone
    )
    page = await context.new_page()
    try:
        await page.add_init_script(
            "navigator.mediaDevices.getUserMedia = () => "
            "Promise.reject(new DOMException('refused by the test', 'NotAllowedError'));"
        )
        await seed_conversation(page, web_server, exchange(4))
        widget = await open_widget(page, web_server.http + "/")
        box = await widget.host.locator(".panel").bounding_box()
        assert box == {"x": 0, "y": 0, "width": width, "height": height}, "fullscreen"
        first = await page.evaluate(CLIPPED_CONTROLS)
        assert first["bad"] == [] and first["count"] >= 6, (device, first)
        if (width, height) == (640, 400):
            assert first["log"] >= 150, f"the conversation gets {first['log']} px"
        await widget.button("Start talking").click()
        await playwright_api.expect(widget.host.get_by_role("alert")).to_contain_text("refused")
        second = await page.evaluate(CLIPPED_CONTROLS)
        assert second["bad"] == [], (device, second)
        if (width, height) == (640, 400):
            assert second["log"] >= 100, (
                f"with the notice, the conversation gets {second['log']} px"
            )
    finally:
        await context.close()


def contrast_js(fg: str, bg: str) -> str:
    """JS: the WCAG contrast ratio of two computed colours (rgb()/rgba() strings)."""
    return f"""(() => {{
      const lum = (c) => {{
        const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => {{
          v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }});
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      }};
      const a = lum({fg}), b = lum({bg});
      return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    }})()"""


async def test_axe_finds_nothing_idle_and_in_error_states_light_and_dark(
    page: Any, web_server: RunningServer
) -> None:
    """axe-core (tests/vendor) on the demo page: a conversation with markdown, then the
    error states (a refused microphone, a failed message, an error note); the focus ring is
    at least 3:1 against the panel in both themes."""
    await page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () => "
        "Promise.reject(new DOMException('refused by the test', 'NotAllowedError'));"
    )
    await seed_conversation(
        page,
        web_server,
        [
            {"role": "user", "text": "Show me some code.", "status": ""},
            {"role": "assistant", "text": CODE_REPLY, "status": ""},
            {"role": "user", "text": "Stop there.", "status": ""},
            {"role": "assistant", "text": "Stopped half", "status": "stopped"},
            {"role": "user", "text": "x" * 50, "status": "failed", "reason": "too long"},
            {"role": "note", "text": "Error: something went wrong", "status": ""},
        ],
    )
    widget = await open_widget(page, web_server.http + "/")
    for state in ("idle", "error"):
        if state == "error":
            await widget.button("Start talking").click()
            await playwright_api.expect(widget.host.get_by_role("alert")).to_be_visible()
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            assert await axe_violations(page) == [], (state, scheme)
            await widget.textbox.focus()
            await page.keyboard.press("Tab")  # keyboard focus: the ring shows
            ring = await widget.shadow(
                "(() => { const s = getComputedStyle(root.activeElement);"
                " return [s.outlineStyle, parseFloat(s.outlineWidth), s.outlineColor,"
                " getComputedStyle(root.querySelector('.composer')).backgroundColor"
                " === 'rgba(0, 0, 0, 0)' ? getComputedStyle(root.querySelector('.panel'))"
                ".backgroundColor : getComputedStyle(root.querySelector('.composer'))"
                ".backgroundColor]; })()"
            )
            assert ring[0] == "solid" and ring[1] >= 2, ring
            ratio = await page.evaluate(contrast_js(json.dumps(ring[2]), json.dumps(ring[3])))
            assert ratio >= 3.0, (scheme, ring, ratio)


async def test_axe_finds_nothing_while_streaming_and_listening(
    page: Any, web_server: RunningServer
) -> None:
    """A reply streaming, then the microphone listening with the person's words coming in,
    in light and dark. The live regions announce states and the final transcript, never a
    partial one."""
    await page.add_init_script(
        """window.__announced = [];
        addEventListener('DOMContentLoaded', () => {
          const w = document.querySelector('chinwag-widget');
          const watch = () => {
            const root = w && w.shadowRoot;
            if (!root || !root.querySelector('.announce')) return setTimeout(watch, 20);
            new MutationObserver(() => {
              for (const e of root.querySelectorAll('[aria-live], [role=status], [role=alert]'))
                if (e.textContent.trim()) window.__announced.push(e.textContent.trim());
            }).observe(root, {subtree: true, childList: true, characterData: true});
          };
          watch();
        });"""
    )
    sockets = SocketLog(page)
    widget = await open_widget(page, web_server.http + "/")
    await widget.update_session(max_tokens=1000)
    await widget.type_and_send(LONG_STORY)
    await widget.wait("w.messages.some(m => m.status === 'streaming' && m.text.length > 20)")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        assert await axe_violations(page) == [], ("streaming", scheme)
    assert await widget.state("busy") == "true"
    await widget.button("Stop the reply").click()
    await widget.replies_done(1)

    await widget.button("Start talking (hands-free)").click()
    await widget.wait("w.messages.some(m => m.role === 'user' && m.status === 'listening')", 30)
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        assert await axe_violations(page) == [], ("listening", scheme)
    await widget.wait(
        "w.messages.some(m => m.role === 'user' && /child/i.test(m.text) && !m.status)"
    )
    await widget.button("Stop listening").click()
    partials = [e["text"].strip() for _, e in sockets.received if e["type"] == "transcript.partial"]
    final = next(e["text"].strip() for _, e in sockets.received if e["type"] == "transcript")
    announced = await page.evaluate("window.__announced")
    assert partials, "the server sent partial transcripts"
    assert f"You said: {final}" in announced, announced
    assert "Listening." in announced, announced
    leaked = [p for p in partials if p != final and any(a.endswith(p) for a in announced)]
    assert leaked == [], f"partials announced: {leaked}"
    assert await widget.shadow("root.querySelector('.live').hasAttribute('aria-live')") is False


async def test_phone_panel_is_a_modal_dialog_that_keeps_the_focus(
    browser: Any, web_server: RunningServer
) -> None:
    context = await browser.new_context(
        viewport={"width": 360, "height": 740}, has_touch=True, is_mobile=True
    )
    page = await context.new_page()
    try:
        widget = await open_widget(page, web_server.http + "/")
        dialog = widget.host.get_by_role("dialog", name="Chat with chinwag")
        assert await dialog.get_attribute("aria-modal") == "true"
        inside = f"document.activeElement === {WIDGET}"
        for key in ["Tab"] * 14 + ["Shift+Tab"] * 14:
            await page.keyboard.press(key)
            assert await page.evaluate(inside), f"{key} left the dialog"
        # The page cannot pull the focus out either.
        await page.evaluate("document.querySelector('a, #events, main').focus?.()")
        await page.evaluate("document.body.tabIndex = -1; document.body.focus()")
        assert await page.evaluate(inside)
        # The hint about keys is not shown on a touch screen; text is at least 16 px (iOS).
        assert await widget.host.locator(".hint").is_hidden()
        sizes = await widget.shadow(
            "['.input', '.mode']"
            ".map(s => parseFloat(getComputedStyle(root.querySelector(s)).fontSize))"
        )
        assert min(sizes) >= 16, sizes
        mode = await widget.host.get_by_role("combobox", name="Microphone").bounding_box()
        assert mode is not None and mode["height"] >= 44 and mode["width"] >= 44, mode
        # Closed: not modal any more.
        await widget.host.locator("button.close").click()
        assert await widget.state("modal") == "false"
        # On a desktop the floating panel is a dialog, not modal; the hint shows.
        await page.set_viewport_size({"width": 1280, "height": 800})
        await widget.button("Open the chat").click()
        assert await dialog.get_attribute("aria-modal") == "false"
    finally:
        await context.close()
    desktop = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await desktop.new_page()
    try:
        widget = await open_widget(page, web_server.http + "/")
        await playwright_api.expect(widget.host.locator(".hint")).to_be_visible()
    finally:
        await desktop.close()


async def test_a_message_over_the_limit_keeps_its_text_and_says_so(
    page: Any, web_server: RunningServer
) -> None:
    """The limit (max_text_chars: 1000 in the tests) shows as a counter; an over-long message
    is not sent and stays in the text box."""
    sockets = SocketLog(page)
    widget = await open_widget(page, web_server.http + "/")
    await widget.wait("!w.shadowRoot.querySelector('.count').hidden || w._limits", 10)
    await widget.textbox.fill("a" * 850)
    count = widget.host.locator(".count")
    await playwright_api.expect(count).to_have_text("850 / 1,000 characters")
    text = "word " * 300
    await widget.textbox.fill(text)
    await playwright_api.expect(count).to_contain_text("1,499 / 1,000 characters: too long")
    await widget.textbox.press("Enter")
    alert = widget.host.get_by_role("alert")
    await playwright_api.expect(alert).to_contain_text("the limit is 1,000")
    assert await widget.textbox.input_value() == text, "the text is kept"
    assert await widget.textbox.get_attribute("aria-invalid") == "true"
    await asyncio.sleep(0.5)
    assert "user.message" not in sockets.sent_types() and await widget.messages() == []
    # Shortened: it goes.
    await widget.update_session(max_tokens=20)
    await widget.textbox.fill("Hello!")
    await playwright_api.expect(alert).to_be_hidden()
    await widget.textbox.press("Enter")
    assert (await widget.replies_done(1))[0]["text"].strip()


async def test_a_message_the_server_refuses_is_marked_failed_with_retry(
    page: Any, web_server: RunningServer
) -> None:
    """When the widget cannot know the limit (here /widget/check is blocked), the server's
    text_too_long marks that bubble failed, its text kept; Edit puts it back in the box. A
    message that was lost with the connection (kept across the reload) has Retry."""
    await page.route("**/widget/check*", lambda route: route.abort())
    lost = {"role": "user", "text": "Say hello.", "status": "failed"}
    await seed_conversation(page, web_server, [{**lost, "reason": "the connection was lost"}])
    widget = await open_widget(page, web_server.http + "/")
    await widget.update_session(max_tokens=20)
    text = "word " * 300
    await widget.type_and_send(text)
    await widget.wait("w.messages.filter(m => m.status === 'failed').length === 2", 10)
    too_long = {"role": "user", "text": text.strip(), "status": "failed"}
    assert [m for m in await widget.messages() if m["role"] == "user"] == [lost, too_long]
    bubble = widget.host.locator("li.msg.user").last
    await playwright_api.expect(bubble).to_contain_text("Not sent: too long")
    await playwright_api.expect(bubble).to_contain_text("the limit is 1000")
    # Sending it again as it is would fail again: Edit, not Retry.
    await playwright_api.expect(bubble.get_by_role("button", name="Retry")).to_be_hidden()
    await bubble.get_by_role("button", name="Edit this message").click()
    assert await widget.textbox.input_value() == text.strip()
    assert too_long not in await widget.messages()
    await widget.textbox.fill("")
    # The lost one: Retry sends it (as the latest message) and it is answered.
    first = widget.host.locator("li.msg.user").first
    await playwright_api.expect(first).to_contain_text("Not sent: the connection was lost")
    await first.get_by_role("button", name="Retry sending this message").click()
    replies = await widget.replies_done(1)
    assert replies[-1]["text"].strip()
    users = [m for m in await widget.messages() if m["role"] == "user"]
    assert users == [{"role": "user", "text": "Say hello.", "status": ""}], users


FORBIDDEN_PAGE = """<!doctype html><html lang="en"><head><title>elsewhere</title></head><body>
<main><h1>Another site</h1></main>
<script src="SERVER/chinwag-widget.js" data-open="on" TOKEN defer></script></body></html>"""


@pytest.fixture
def forbidden_site(web_server: RunningServer) -> Iterator[str]:
    """A page on another origin that embeds the widget without being allowed to."""
    body = FORBIDDEN_PAGE.replace("SERVER", web_server.http).replace("TOKEN", "").encode()
    with page_site(body) as origin:
        yield origin + "/"


async def test_a_forbidden_origin_says_what_is_wrong_and_stops_retrying(
    page: Any, forbidden_site: str
) -> None:
    attempts: list[str] = []
    page.on("websocket", lambda ws: attempts.append(ws.url))
    await page.goto(forbidden_site)
    widget = Widget(page)
    await widget.wait("w.dataset.state === 'failed'", 20)
    status = widget.host.get_by_role("status")
    await playwright_api.expect(status).to_have_text("Not available on this site")
    alert = widget.host.get_by_role("alert")
    await playwright_api.expect(alert).to_contain_text("not available on this site")
    await playwright_api.expect(alert).to_contain_text(forbidden_site.rstrip("/"))
    await playwright_api.expect(alert).to_contain_text("allowed_origins")
    await asyncio.sleep(3.0)  # a retrying widget would have tried again by now (0.5 s, 1 s)
    assert len(attempts) == 1, attempts
    assert await widget.state("state") == "failed"
    # A message typed now waits, visibly; the page is still accessible.
    await widget.type_and_send("Anyone there?")
    await playwright_api.expect(widget.host.locator("li.msg.user")).to_contain_text(
        "waiting to send"
    )
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        assert await axe_violations(page) == [], scheme


async def test_a_missing_token_says_so_and_stops_retrying(page: Any, engines: Engines) -> None:
    guarded = await start_server(make_settings(server={"token": "a-secret"}), engines)
    try:
        attempts: list[str] = []
        page.on("websocket", lambda ws: attempts.append(ws.url))
        await page.goto(guarded.http + "/")
        widget = Widget(page)
        await widget.wait("w.dataset.state === 'failed'", 20)
        await playwright_api.expect(widget.host.get_by_role("alert")).to_contain_text(
            "access token (data-token) is missing or wrong"
        )
        await asyncio.sleep(2.0)
        assert len(attempts) == 1, attempts
    finally:
        await guarded.web.close()


async def test_controls_keep_their_places_while_a_reply_streams(
    page: Any, web_server: RunningServer
) -> None:
    """Stop takes Send's place, never the microphone's; typing brings Send back there."""
    widget = await open_widget(page, web_server.http + "/")
    places = (
        "(() => Object.fromEntries(['.mic', '.send', '.stop', '.input', '.mode'].map(s => {"
        " const e = root.querySelector(s); const r = e.getBoundingClientRect();"
        " return [s, e.hidden ? null : [r.x, r.y, r.width, r.height].map(Math.round)]; })))()"
    )
    idle = await widget.shadow(places)
    assert idle[".stop"] is None and idle[".send"] is not None
    await widget.update_session(max_tokens=1000)
    await widget.type_and_send(LONG_STORY)
    await widget.wait("w.messages.some(m => m.status === 'streaming' && m.text)")
    streaming = await widget.shadow(places)
    assert streaming[".stop"] == idle[".send"] and streaming[".send"] is None, streaming
    assert {k: streaming[k] for k in (".mic", ".input", ".mode")} == {
        k: idle[k] for k in (".mic", ".input", ".mode")
    }, (idle, streaming)
    await widget.textbox.fill("And then?")
    typing = await widget.shadow(places)
    assert typing[".send"] == idle[".send"] and typing[".stop"] is None
    assert typing[".mic"] == idle[".mic"]
    await widget.textbox.fill("")
    await widget.button("Stop the reply").click()
    await widget.replies_done(1)
    assert (await widget.shadow(places)) == idle


async def test_reload_opens_at_the_latest_message_with_one_session_note(
    page: Any, web_server: RunningServer
) -> None:
    """A long conversation reopens scrolled to its end; the "New session" note comes once,
    not again on the next reload; scrolled up, "Jump to latest" brings the end back."""
    await seed_conversation(page, web_server, exchange(20))
    widget = await open_widget(page, web_server.http + "/")
    at_end = (
        "(() => { const l = root.querySelector('.log');"
        " return l.scrollHeight > l.clientHeight * 2"
        " && l.scrollHeight - l.scrollTop - l.clientHeight < 2; })()"
    )
    notes = "w.messages.filter(m => m.role === 'note').length"
    await widget.wait(f"{notes} === 1")
    assert await widget.shadow(at_end), "opens at the latest message"
    assert (await widget.messages())[-1]["role"] == "note"
    for _ in range(2):
        await page.reload()
        await widget.connected()
        await asyncio.sleep(0.3)
        assert await widget.wait(f"{notes}") == 1, "no second note: nothing was said since"
        await widget.wait("w.shadowRoot.querySelector('.root.styled')")
        assert await widget.shadow(at_end)
    # Scrolled up: the jump button; pressed: back at the end.
    jump = widget.button("Jump to latest")
    await playwright_api.expect(jump).to_be_hidden()
    await widget.shadow("root.querySelector('.log').scrollTop = 0")
    await playwright_api.expect(jump).to_be_visible()
    await jump.click()
    await playwright_api.expect(jump).to_be_hidden()
    assert await widget.shadow(at_end)
    # At 400 % zoom the whole panel scrolls: the same, and the text box is in view after.
    await page.set_viewport_size({"width": 320, "height": 200})
    # Scrolled up only once the new layout has made the panel scroll and the widget, still
    # following the latest message, has taken the panel to its end: a loaded machine may lay
    # it out, and run the widget's resize observer, after the resize returns. Scrolled up
    # before that, the scroll to 0 is a no-op (no scroll event) and the observer then moves
    # the view to the end (seen in CI).
    panel = "w.shadowRoot.querySelector('.panel')"
    await widget.wait(
        f"{panel}.scrollHeight > {panel}.clientHeight * 2"
        f" && {panel}.scrollHeight - {panel}.scrollTop - {panel}.clientHeight < 2"
    )
    await widget.shadow("root.querySelector('.panel').scrollTop = 0")
    await playwright_api.expect(jump).to_be_visible(timeout=15000)
    await jump.click()
    await playwright_api.expect(jump).to_be_hidden()
    await playwright_api.expect(widget.textbox).to_be_in_viewport()


async def test_unread_badge_undo_for_new_conversation_and_dismissible_notice(
    page: Any, web_server: RunningServer
) -> None:
    await page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () => "
        "Promise.reject(new DOMException('refused by the test', 'NotAllowedError'));"
    )
    sockets = SocketLog(page)
    widget = await open_widget(page, web_server.http + "/")
    await widget.update_session(max_tokens=20)
    # A reply that arrives while the panel is closed: a badge on the launcher.
    await widget.host.locator("button.close").click()
    await page.evaluate(f"{WIDGET}.send('Hello!')")
    await widget.replies_done(1)
    launcher = widget.button("Open the chat (1 new reply)")
    await playwright_api.expect(launcher).to_be_visible()
    await playwright_api.expect(widget.host.locator(".unread")).to_have_text("1")
    await launcher.click()
    await playwright_api.expect(widget.host.locator(".unread")).to_be_hidden()
    assert await widget.state("unread") == "0"

    # "+" clears at once, and can be undone: the server is told only when it is final.
    before = await widget.messages()
    starts = sockets.sent_types().count("session.start")  # the demo page's persona
    await widget.button("Start a new conversation").click()
    assert await widget.messages() == []
    await playwright_api.expect(widget.host.locator(".notice")).to_contain_text(
        "Conversation cleared."
    )
    await widget.host.get_by_role("button", name="Undo").click()
    assert await widget.messages() == before
    assert sockets.sent_types().count("session.start") == starts
    await widget.button("Start a new conversation").click()
    await widget.type_and_send("Hi again!")  # going on makes it final
    await widget.replies_done(1)
    types = sockets.sent_types()
    assert types.count("session.start") == starts + 1
    assert types[-2:] == ["session.start", "user.message"], types
    assert [m["role"] for m in await widget.messages()] == ["user", "assistant"]
    await playwright_api.expect(widget.host.locator(".notice")).to_be_hidden()

    # The microphone's notice can be dismissed.
    await widget.button("Start talking").click()
    alert = widget.host.get_by_role("alert")
    await playwright_api.expect(alert).to_contain_text("refused")
    await widget.button("Dismiss this message").click()
    await playwright_api.expect(widget.host.locator(".notice")).to_be_hidden()


XSS_REPLY = "\n".join(
    [
        '**bold <img src=x onerror="window.__pwned=true">** and *em*',
        "[click](javascript:window.__pwned=true) [data](data:text/html,<script>alert(1)</script>)",
        '[ok](https://example.com/a_b "title") <a href="javascript:alert(1)">raw</a>',
        "![image](https://example.com/x.png) <script>window.__pwned=true</script>",
        "[vb](vbscript:msgbox) [js2]( javascript:alert(1)) [js3](JaVaScRiPt:alert(1))",
        "",
        "```html",
        '<script>window.__pwned=true</script><img src=x onerror="window.__pwned=true">',
        "```",
        "",
        "- item with `<b>code</b>`",
        "- see https://example.org/path.",
        "",
        "snake_case_name and 2 * 3 * 4",
    ]
)


async def test_markdown_replies_render_safely(browser: Any, web_server: RunningServer) -> None:
    """Replies render a markdown subset as DOM nodes: bold, italic, code, lists, code blocks
    with a copy button, links only to http(s) and mailto (rel=noopener). Markup and script
    URLs stay text."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        await page.add_init_script("window.__pwned = false;")
        await seed_conversation(
            page,
            web_server,
            [
                {"role": "user", "text": "**not markdown** for the person", "status": ""},
                {"role": "assistant", "text": CODE_REPLY, "status": ""},
                {"role": "assistant", "text": XSS_REPLY, "status": ""},
            ],
        )
        widget = await open_widget(page, web_server.http + "/")
        replies = widget.host.locator("li.msg.assistant .text")
        good = replies.nth(0)
        assert await good.locator("strong").inner_text() == "bold"
        assert await good.locator("em").inner_text() == "italic"
        assert await good.locator("p code").inner_text() == "inline code"
        assert await good.locator("ol > li").all_inner_texts() == ["first", "second"]
        assert await good.locator("pre code").inner_text() == "print('hello')"
        links = await good.locator("a").evaluate_all(
            "as => as.map(a => [a.textContent, a.getAttribute('href'), a.rel, a.target])"
        )
        assert links == [
            ["the docs", "https://example.com/docs", "noopener noreferrer nofollow", "_blank"],
            ["us", "mailto:team@example.com", "noopener noreferrer nofollow", "_blank"],
        ]
        user_text = await widget.host.locator("li.msg.user .text").inner_text()
        assert user_text == "**not markdown** for the person"
        # Copy the code block.
        await widget.host.get_by_role("button", name="Copy the code").first.click()
        await playwright_api.expect(widget.host.locator(".copy").first).to_have_text("Copied")
        assert await page.evaluate("navigator.clipboard.readText()") == "print('hello')"

        bad = replies.nth(1)
        hrefs = await bad.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        # An image is a link to it, never loaded.
        assert hrefs == [
            "https://example.com/a_b",
            "https://example.com/x.png",
            "https://example.org/path",
        ], hrefs
        shown = await bad.inner_text()
        for literal in ("<img src=x onerror=", "[click](javascript:", "<script>", "<a href="):
            assert literal in shown, literal
        elements = await widget.shadow(
            "[...root.querySelectorAll('li.msg .text *')].map(e => e.localName)"
            ".filter(n => !['p', 'strong', 'em', 'code', 'pre', 'ul', 'ol', 'li', 'a', 'div',"
            " 'span', 'button', 'blockquote', 'hr'].includes(n))"
        )
        assert elements == [], elements
        handlers = await widget.shadow(
            "[...root.querySelectorAll('li.msg *')].flatMap(e => [...e.attributes]"
            ".map(a => a.name)).filter(n => n.startsWith('on') || n === 'src' || n === 'style')"
        )
        assert handlers == [], handlers
        assert await bad.locator("strong").count() == 1
        assert await bad.locator("pre code").inner_text() == (
            '<script>window.__pwned=true</script><img src=x onerror="window.__pwned=true">'
        )
        await asyncio.sleep(1.0)
        assert await page.evaluate("window.__pwned") is False
        assert await page.evaluate("document.querySelectorAll('img, script[src*=x]').length") == 0
    finally:
        await context.close()
    assert not errors, errors
