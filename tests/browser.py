"""Helpers for the browser tests: Debian's Chromium driven by Playwright (async API).

No browser is downloaded: Playwright drives `/usr/bin/chromium` (the Debian package, which
`make` installs) through `executable_path`.
"""

from __future__ import annotations

import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np

from clients.talk import read_wav

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def fake_microphone_args(wav: Path) -> list[str]:
    """Chromium grants the microphone and plays this file (in a loop) as its input."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]


def padded_wav(source: Path, out: Path, lead_s: float = 1.5, tail_s: float = 3.0) -> Path:
    """`source` with silence before and after, as a 16-bit mono WAV for the fake microphone."""
    pcm, rate = read_wav(source)
    silence = [np.zeros(int(s * rate), dtype=np.int16) for s in (lead_s, tail_s)]
    samples = np.concatenate([silence[0], pcm.astype(np.int16), silence[1]])
    with wave.open(str(out), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())
    return out


WIDGET = "document.querySelector('chinwag-widget')"


class Widget:
    """The <chinwag-widget> on a Playwright page. Locators pierce its open shadow root."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.host = page.locator("chinwag-widget")
        self.textbox = self.host.get_by_role("textbox", name="Message")

    def button(self, name: str) -> Any:
        return self.host.get_by_role("button", name=name)

    async def wait(self, js: str, timeout_s: float = 120) -> Any:
        """Wait until a JavaScript expression (`w` is the widget element) is truthy."""
        handle = await self.page.wait_for_function(
            f"(() => {{ const w = {WIDGET}; return !!w && ({js}); }})()",
            timeout=timeout_s * 1000,
            polling=100,
        )
        return await handle.json_value()

    async def state(self, name: str) -> str | None:
        value: str | None = await self.page.evaluate(f"{WIDGET}.dataset[{name!r}] ?? null")
        return value

    async def connected(self, timeout_s: float = 120) -> None:
        await self.wait("w.dataset.state === 'connected'", timeout_s)

    async def messages(self) -> list[dict[str, str]]:
        result: list[dict[str, str]] = await self.page.evaluate(f"{WIDGET}.messages")
        return result

    async def shadow(self, js: str) -> Any:
        """Evaluate `js` with `root` bound to the widget's shadow root."""
        return await self.page.evaluate(
            f"(() => {{ const root = {WIDGET}.shadowRoot; return {js}; }})()"
        )

    async def type_and_send(self, text: str) -> None:
        await self.textbox.fill(text)
        await self.textbox.press("Enter")

    async def replies_done(self, count: int, timeout_s: float = 120) -> list[dict[str, str]]:
        """Wait for `count` finished assistant replies and no reply in progress."""
        await self.wait(
            "w.dataset.busy === 'false' && w.messages.filter("
            f"m => m.role === 'assistant' && m.status !== 'streaming').length >= {count}",
            timeout_s,
        )
        return [m for m in await self.messages() if m["role"] == "assistant"]

    async def update_session(self, **generation: Any) -> None:
        await self.page.evaluate(f"g => {WIDGET}.updateSession(g)", generation)


AXE_JS = Path(__file__).parent / "vendor" / "axe.min.js"


async def axe_violations(page: Any, context: str = "document") -> list[dict[str, Any]]:
    """axe-core's violations on the page (its default rule set, shadow roots included), each as
    {id, impact, help, nodes: [target, ...]}. axe is injected from tests/vendor on first use."""
    if not await page.evaluate("!!window.axe"):
        await page.add_script_tag(path=str(AXE_JS))
    result: list[dict[str, Any]] = await page.evaluate(
        f"""async () => {{
            const r = await axe.run({context}, {{resultTypes: ['violations']}});
            return r.violations.map(v => ({{
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => [n.target.join(' '), n.failureSummary]),
            }}));
        }}"""
    )
    return result
