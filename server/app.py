"""The application: settings, engines and shared state, built once and passed down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from server.audio.vad import SileroVad, VadModel
from server.config import AsrSettings, LlmSettings, Settings, TtsSettings
from server.engines.base import ChatModel, EngineError, Synthesizer, Transcriber, WakeWordEngine
from server.errors import ChinwagError, ErrorCode
from server.intents.recognizer import IntentRecognizer
from server.metrics import Metrics
from server.pipeline.chat import ChatRunner
from server.pipeline.intents import load_recognizer
from server.pipeline.priority import CpuPriority
from server.pipeline.scheduling import JobTrace
from server.pipeline.speech import SpeechRunner
from server.prompts import PersonaLibrary
from server.sessions import SessionHub

if TYPE_CHECKING:
    from server.engines.remote import RemoteClient

log = logging.getLogger(__name__)


@dataclass
class Engines:
    chat: ChatModel
    transcriber: Transcriber
    synthesizer: Synthesizer
    vad: VadModel
    # None: openWakeWord's, loaded when a session first asks for a wake word.
    wake: WakeWordEngine | None = None


@dataclass
class App:
    settings: Settings
    personas: PersonaLibrary
    metrics: Metrics = field(default_factory=Metrics)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    chat: ChatRunner | None = None
    speech: SpeechRunner | None = None
    load_error: str | None = None
    started_at: float = field(default_factory=time.time)
    load_seconds: float | None = None
    # The intent stage's recognizer (docs/intents.md); None when [intents] is off.
    intents: IntentRecognizer | None = None
    # Every transport's sessions: admission, counting, lookup by id, observers.
    hub: SessionHub = field(init=False)
    wake: WakeWordEngine | None = None

    def __post_init__(self) -> None:
        self.hub = SessionHub(self.settings.limits, self.metrics)

    def attach(self, engines: Engines) -> None:
        # A remote LLM takes none of our cores: nothing to pause for speech.
        llm = self.settings.llm
        priority = CpuPriority(enabled=llm.pause_for_speech and not llm.remote)
        max_wait_s = self.settings.limits.max_reply_wait_s
        self.chat = ChatRunner(
            engines.chat, priority, max_wait_s=max_wait_s, share_cores=llm.share_cores_with_speech
        )
        self.speech = SpeechRunner(
            engines.transcriber,
            engines.synthesizer,
            engines.vad,
            priority=priority,
            max_wait_s=max_wait_s,
            phrase_cache_entries=self.settings.tts.phrase_cache_entries,
            on_job=self._speech_job_done,
        )
        # Loaded (and cached) by load_engines on its worker thread; here it is looked up.
        self.intents = load_recognizer(self.settings.intents)
        self.wake = engines.wake
        self.ready.set()

    def _speech_job_done(self, trace: JobTrace) -> None:
        """On the speech worker's thread: where a turn's time goes, for /metrics and the
        debug log (`bench/load_latency.py` reads the latter)."""
        self.metrics.speech_queue_wait.labels(trace.kind).observe(trace.queued_s)
        self.metrics.speech_run.labels(trace.kind).observe(trace.run_s)
        if trace.kind == "tts_later" and trace.late_s > 0:
            self.metrics.speech_late_phrases.inc()
        log.debug(
            "speech job %s: queued %.1f ms, ran %.1f ms, late %.1f ms",
            trace.kind,
            trace.queued_s * 1000,
            trace.run_s * 1000,
            trace.late_s * 1000,
        )

    def wake_engine(self) -> WakeWordEngine:
        """The wake word models (docs/wake-word.md); load_engines loads them, engines given
        without them (tests) get them on first use."""
        if self.wake is None:
            self.wake = load_wake_engine(self.settings)
            if self.wake is None:
                raise ChinwagError(
                    ErrorCode.UNKNOWN_WAKE_WORD, "wake words are unavailable (see the log)"
                )
        return self.wake

    def close(self) -> None:
        if self.chat is not None:
            self.chat.close()
            close_engine(self.chat.model)
        if self.speech is not None:
            self.speech.close()
            close_engine(self.speech.transcriber)
            close_engine(self.speech.synthesizer)

    def health(self) -> dict[str, object]:
        body: dict[str, object] = {
            "status": "ready"
            if self.ready.is_set()
            else "failed"
            if self.load_error
            else "loading",
            "sessions": self.hub.count,
            "uptime_s": round(time.time() - self.started_at, 1),
        }
        if self.chat is not None:
            body["llm"] = {
                "model": self.chat.model.name,
                "context_size": self.chat.model.context_size,
            }
        if self.speech is not None:
            body["tts_sample_rate"] = self.speech.synthesizer.sample_rate
        if self.load_seconds is not None:
            body["load_s"] = round(self.load_seconds, 2)
        if self.load_error:
            body["error"] = self.load_error
        return body


@runtime_checkable
class _Closes(Protocol):
    def close(self) -> None: ...


def close_engine(engine: object) -> None:
    """Release what an engine holds beyond memory (a remote engine's connections and thread)."""
    if isinstance(engine, _Closes):
        engine.close()


def load_engines(settings: Settings) -> Engines:
    """Load every model once (blocking; call from a worker thread) and warm it up, so the
    first turn does not pay for page faults and lazy initialisation. A stage on a remote
    server (`backend = "openai"`) loads nothing here."""
    chat = load_chat_model(settings.llm)
    transcriber = load_transcriber(settings.asr)
    synthesizer = load_synthesizer(settings.tts)
    load_recognizer(settings.intents)  # the intent templates, cached for App.attach
    return Engines(
        chat=chat,
        transcriber=transcriber,
        synthesizer=synthesizer,
        vad=SileroVad.load(),
        wake=load_wake_engine(settings),
    )


def _client(stage: LlmSettings | AsrSettings | TtsSettings, role: str) -> RemoteClient:
    from server.engines.remote import RemoteClient

    assert stage.base_url is not None  # the settings check it
    connections = stage.parallel + 2 if isinstance(stage, LlmSettings) else 4
    return RemoteClient(
        stage.base_url,
        api_key=stage.api_key,
        timeout_s=stage.timeout_s,
        role=role,
        connections=connections,
    )


def load_chat_model(llm: LlmSettings) -> ChatModel:
    if llm.remote:
        from server.engines.openai_chat import OpenAIChatModel

        remote = OpenAIChatModel(
            _client(llm, "LLM"),
            model=llm.model,
            context_size=llm.context_size if "context_size" in llm.model_fields_set else None,
            default_context_size=llm.context_size,
            parallel=llm.parallel,
            tokenizer=llm.tokenizer,
            sampling_extras=llm.sampling_extras,
        )
        remote.probe()  # a server not up yet is asked again later; turns get an error
        return remote
    from server.engines.llama_cpp import LlamaCppChatModel

    chat = LlamaCppChatModel(
        llm.model_path,
        context_size=llm.context_size,
        threads=llm.threads,
        batch_size=llm.batch_size,
        seed=llm.seed,
        parallel=llm.parallel,
        kv_cache_tokens=llm.kv_cache_tokens,
    )
    chat.warm_up()
    return chat


def load_transcriber(asr: AsrSettings) -> Transcriber:
    if asr.remote:
        from server.engines.openai_audio import OpenAITranscriber

        return OpenAITranscriber(_client(asr, "ASR"), model=asr.model, language=asr.language)
    from server.engines.faster_whisper import WhisperTranscriber

    transcriber = WhisperTranscriber(
        asr.model_path,
        compute_type=asr.compute_type,
        cpu_threads=asr.threads,
        beam_size=asr.beam_size,
        language=asr.language,
        short_window=asr.short_window,
        # Two: a partial transcription in progress must not hold up the end of a turn.
        workers=2,
    )
    transcriber.warm_up()
    return transcriber


def load_synthesizer(tts: TtsSettings) -> Synthesizer:
    if tts.remote:
        from server.engines.openai_audio import OpenAISynthesizer

        return OpenAISynthesizer(
            _client(tts, "TTS"),
            model=tts.model,
            voice=tts.voice,
            response_format=tts.response_format,
            sample_rate=tts.sample_rate,
        )
    from server.engines.piper import PiperSynthesizer

    synthesizer = PiperSynthesizer(tts.voice_path, stream_decoder=tts.stream_decoder)
    synthesizer.warm_up()
    return synthesizer


def load_wake_engine(settings: Settings) -> WakeWordEngine | None:
    """openWakeWord's models, checked against models/wake-words.toml (~20 ms). A server that
    cannot load them still serves; sessions that ask for a wake word get an error."""
    from server.engines.open_wakeword import OpenWakeWordEngine

    wake = settings.wake
    try:
        return OpenWakeWordEngine(wake.model_paths, threshold=wake.threshold)
    except (EngineError, OSError) as exc:
        log.error("wake words unavailable: %s", exc)
        return None


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
