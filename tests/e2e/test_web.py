"""The web chat widget in real headless Chromium (Debian's, driven by Playwright) against a
real chinwag server with the real models: typed chat, markup safety, stop, reconnection,
a voice turn through Chromium's fake microphone, a refused microphone, a cross-origin embed
with hostile page CSS, and the phone / kiosk / dark layouts."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
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
    assert all(reply.startswith(t.strip()) for t in shown), shown
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
    page: Any, web_server: RunningServer
) -> None:
    await page.add_init_script("window.__pwned = false;")
    widget = await open_widget(page, web_server.http + "/")
    await widget.update_session(temperature=0.0, max_tokens=60)  # greedy: the model echoes
    question = f"Repeat exactly, nothing else: {MARKUP}"
    await widget.type_and_send(question)
    reply = (await widget.replies_done(1))[0]["text"]
    assert "<img src=x onerror=" in reply, f"the model was asked to repeat the markup: {reply!r}"
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

        await served.start()
        await widget.connected(timeout_s=120)
        await playwright_api.expect(status).to_have_text("Connected")
        messages = await widget.messages()
        assert [m["role"] for m in messages] == ["user", "assistant", "note"], messages
        assert "does not remember" in messages[-1]["text"]
        # The generation override was sent again, and the new session answers.
        await widget.type_and_send("What is two plus two?")
        assert (await widget.replies_done(2))[-1]["text"].strip()
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
    played, total = (
        int(await widget.state("playedMs") or 0),
        int(await widget.state("audioMs") or 0),
    )
    assert played < total - 500, f"stopped early: played {played} of {total} ms"
    cut = [m for m in await widget.messages() if m["role"] == "assistant"][1]
    assert cut["status"] in ("interrupted", "stopped"), cut
    await widget.wait(f"{user_turns}.length >= 2", 120)
    await widget.button("Stop listening").click()
    await widget.wait("w.dataset.mic === 'off'", 10)
    # Its answer starts; the stop button ends it (text and audio).
    await widget.wait("w.messages.filter(m => m.role === 'assistant').length >= 3", 120)
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


@pytest.fixture
def other_site(web_server: RunningServer) -> Iterator[str]:
    """A page on another origin (another port of this machine) that embeds the widget."""
    body = HOSTILE_PAGE.replace("SERVER", web_server.http).encode()

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
    origin = f"http://127.0.0.1:{site.server_address[1]}"
    allowed = web_server.app.settings.server.allowed_origins
    allowed.append(origin)  # a site embedding the widget must be allowed explicitly
    yield origin + "/"
    allowed.remove(origin)
    site.shutdown()
    site.server_close()


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
