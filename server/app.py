"""The application: settings, engines and shared state, built once and passed down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server.config import Settings
from server.engines.base import ChatModel
from server.metrics import Metrics
from server.pipeline.chat import ChatRunner
from server.prompts import PersonaLibrary

log = logging.getLogger(__name__)


@dataclass
class Engines:
    chat: ChatModel


@dataclass
class App:
    settings: Settings
    personas: PersonaLibrary
    metrics: Metrics = field(default_factory=Metrics)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    chat: ChatRunner | None = None
    load_error: str | None = None
    started_at: float = field(default_factory=time.time)
    load_seconds: float | None = None
    sessions: int = 0

    def attach(self, engines: Engines) -> None:
        self.chat = ChatRunner(engines.chat)
        self.ready.set()

    def health(self) -> dict[str, object]:
        body: dict[str, object] = {
            "status": "ready" if self.ready.is_set() else "failed" if self.load_error else "loading",
            "sessions": self.sessions,
            "uptime_s": round(time.time() - self.started_at, 1),
        }
        if self.chat is not None:
            body["llm"] = {"model": self.chat.model.name, "context_size": self.chat.model.context_size}
        if self.load_seconds is not None:
            body["load_s"] = round(self.load_seconds, 2)
        if self.load_error:
            body["error"] = self.load_error
        return body


def load_engines(settings: Settings) -> Engines:
    """Load every model once (blocking; call from a worker thread) and warm it up."""
    from server.engines.llama_cpp import LlamaCppChatModel

    llm = settings.llm
    chat = LlamaCppChatModel(
        llm.model_path,
        context_size=llm.context_size,
        threads=llm.threads,
        batch_size=llm.batch_size,
        seed=llm.seed,
    )
    chat.warm_up()
    return Engines(chat=chat)


Loader = Callable[[Settings], Engines]


async def load_into(app: App, loader: Loader = load_engines) -> None:
    """Load the engines off the event loop; /healthz answers 503 until this is done."""
    start = time.perf_counter()
    try:
        engines = await asyncio.to_thread(loader, app.settings)
    except Exception as exc:
        app.load_error = f"{type(exc).__name__}: {exc}"
        log.error("could not load the models: %s", app.load_error)
        raise
    app.load_seconds = time.perf_counter() - start
    app.attach(engines)
    log.info("models ready in %.1f s", app.load_seconds)

