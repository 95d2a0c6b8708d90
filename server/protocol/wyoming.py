"""The Wyoming protocol (Home Assistant's local voice services) as pure translation.

No asyncio and no sockets here (docs/architecture.md, "Adding a transport"): bytes and
`wyoming.event.Event`s in, typed actions out; the I/O is server/transports/wyoming.py.

- `RequestReader`: one connection's events in order, as what to do (`Action`s), with the
  stream rules (audio inside audio-start/stop, text inside synthesize-start/stop) and limits.
- The events chinwag answers with (`transcript`, `handled`, `not-handled`), and the
  `tcp://HOST:PORT` addresses Wyoming is configured with.

The rest of the protocol is in modules of its own: the framing (with its size limits) in
wyoming_framing.py, the `info` answer and the voices in wyoming_info.py, the audio formats
in wyoming_audio.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from server.errors import ChinwagError, ErrorCode
from server.pipeline.text_split import PhraseSplitter
from server.protocol.wyoming_audio import SAMPLE_WIDTH, AudioFormat, audio_format, to_mono_pcm16

DEFAULT_PORT = 10300
# How Transcribe.vad_sensitivity scales chinwag's end-of-turn silence (use_vad only).
VAD_SENSITIVITY = {"default": 1.0, "relaxed": 1.5, "aggressive": 0.6}

_URI = re.compile(r"^tcp://(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>\d+)/?$")


def parse_tcp_uri(uri: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` (`tcp://[::1]:PORT` for IPv6) as (host, port); ValueError if not."""
    match = _URI.match(uri.strip())
    if match is None:
        raise ValueError(f"expected tcp://HOST:PORT, got {uri!r}")
    port = int(match["port"])
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return match["v6"] or match["host"], port


# --- a connection's requests -----------------------------------------------------------------


@dataclass(frozen=True)
class SendInfo:
    """`describe`: answer with `info` at once."""


@dataclass(frozen=True)
class Ignore:
    """An event this server does not act on (unknown types, `select-program`, `ping`...)."""

    type: str


@dataclass(frozen=True)
class BeginTranscription:
    """`transcribe`: audio to transcribe follows."""

    language: str | None
    vad_sensitivity: float  # scales the end-of-turn silence (use_vad)


@dataclass(frozen=True)
class OpenAudio:
    """`audio-start`; after `transcribe` or on its own (then: a transcription too)."""

    rate: int
    transcription: BeginTranscription


@dataclass(frozen=True)
class AudioIn:
    """Mono 16-bit PCM at the stream's rate."""

    pcm: bytes


@dataclass(frozen=True)
class CloseAudio:
    """`audio-stop`: transcribe what came."""


@dataclass(frozen=True)
class Speak:
    """`synthesize` outside a stream: exactly one audio segment for all of `phrases`."""

    phrases: tuple[str, ...]
    voice: str | None
    language: str | None


@dataclass(frozen=True)
class OpenTextStream:
    """`synthesize-start`: phrases follow, each spoken as its own segment."""

    voice: str | None
    language: str | None


@dataclass(frozen=True)
class TextIn:
    """Phrases completed by `synthesize-chunk`s (`final`: `synthesize-stop`, the last ones)."""

    phrases: tuple[str, ...]
    final: bool = False


@dataclass(frozen=True)
class Converse:
    """A `transcript` sent to this server: answer it as the assistant (`handled`)."""

    text: str
    language: str | None
    conversation_id: str | None
    context: dict[str, Any] = field(default_factory=dict)


Action = (
    SendInfo
    | Ignore
    | BeginTranscription
    | OpenAudio
    | AudioIn
    | CloseAudio
    | Speak
    | OpenTextStream
    | TextIn
    | Converse
)

MAX_CONVERSATION_ID = 256


def _invalid(event: Event, exc: Exception) -> ChinwagError:
    return ChinwagError(ErrorCode.INVALID_MESSAGE, f"{event.type}: missing or bad field ({exc})")


def _voice(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    voice = data.get("voice")
    if voice is None:
        return None, None
    if not isinstance(voice, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`voice` must be an object")
    name, language = voice.get("name"), voice.get("language")
    if name is not None and not isinstance(name, str):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`voice.name` must be a string")
    if language is not None and not isinstance(language, str):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`voice.language` must be a string")
    return name, language


def _text(data: Mapping[str, Any]) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`text` must be a string")
    return text


class RequestReader:
    """One connection's events, in order, as actions. Pure state: which stream is open.

    Rules: audio chunks only inside `audio-start`/`audio-stop`, at most `max_audio_s`
    of audio per stream; text chunks only inside `synthesize-start`/`synthesize-stop`, at most
    `max_text_chars` per request; a `synthesize` inside a stream is Home Assistant's
    compatibility copy of the text and is ignored. A ChinwagError leaves the state unchanged.
    """

    def __init__(
        self,
        *,
        max_audio_s: float,
        max_text_chars: int,
        splitter: Callable[[], PhraseSplitter] = PhraseSplitter,
    ) -> None:
        self.max_audio_s = max_audio_s
        self.max_text_chars = max_text_chars
        self.new_splitter = splitter
        self.transcription: BeginTranscription | None = None
        self.audio: AudioFormat | None = None
        self.audio_bytes = 0  # mono 16-bit bytes received in the open stream
        self.splitter: PhraseSplitter | None = None  # a text stream is open
        self.text_chars = 0

    def _splitter(self) -> PhraseSplitter:
        return self.new_splitter()

    def receive(self, event: Event) -> Action:
        try:
            return self._receive(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _invalid(event, exc) from exc

    def _receive(self, event: Event) -> Action:
        data = event.data or {}
        if Describe.is_type(event.type):
            return SendInfo()
        if Transcribe.is_type(event.type):
            request = Transcribe.from_event(event)
            sensitivity = request.vad_sensitivity
            key = getattr(sensitivity, "value", sensitivity) or "default"
            language = request.language if isinstance(request.language, str) else None
            begin = BeginTranscription(language, VAD_SENSITIVITY.get(str(key), 1.0))
            self.transcription = begin
            return begin
        if AudioStart.is_type(event.type):
            fmt = audio_format(data)
            self.audio, self.audio_bytes = fmt, 0
            begin = self.transcription or BeginTranscription(None, 1.0)
            self.transcription = None
            return OpenAudio(fmt.rate, begin)
        if AudioChunk.is_type(event.type):
            if self.audio is None:
                raise ChinwagError(ErrorCode.AUDIO_NOT_STARTED, "audio-chunk before audio-start")
            fmt = audio_format(data)
            if fmt.rate != self.audio.rate:
                raise ChinwagError(
                    ErrorCode.INVALID_AUDIO_FORMAT,
                    f"audio-chunk at {fmt.rate} Hz in a {self.audio.rate} Hz stream",
                )
            pcm = to_mono_pcm16(event.payload or b"", fmt)
            limit = int(self.max_audio_s * fmt.rate) * SAMPLE_WIDTH
            if self.audio_bytes + len(pcm) > limit:
                raise ChinwagError(
                    ErrorCode.UTTERANCE_TOO_LONG,
                    f"a transcription may take {self.max_audio_s:g} s of audio",
                )
            self.audio_bytes += len(pcm)
            return AudioIn(pcm)
        if AudioStop.is_type(event.type):
            if self.audio is None:
                raise ChinwagError(ErrorCode.AUDIO_NOT_STARTED, "audio-stop before audio-start")
            self.audio = None
            return CloseAudio()
        if Synthesize.is_type(event.type):
            if self.splitter is not None:
                return Ignore(event.type)  # the compatibility copy inside a stream
            text = _text(data)
            self._check_text(len(text), 0)
            voice, language = _voice(data)
            splitter = self._splitter()
            return Speak((*splitter.feed(text), *splitter.flush()), voice, language)
        if SynthesizeStart.is_type(event.type):
            voice, language = _voice(data)
            self.splitter, self.text_chars = self._splitter(), 0
            return OpenTextStream(voice, language)
        if SynthesizeChunk.is_type(event.type):
            if self.splitter is None:
                raise ChinwagError(
                    ErrorCode.INVALID_MESSAGE, "synthesize-chunk before synthesize-start"
                )
            text = _text(data)
            self._check_text(len(text), self.text_chars)
            self.text_chars += len(text)
            return TextIn(tuple(self.splitter.feed(text)))
        if SynthesizeStop.is_type(event.type):
            if self.splitter is None:
                raise ChinwagError(
                    ErrorCode.INVALID_MESSAGE, "synthesize-stop before synthesize-start"
                )
            splitter, self.splitter = self.splitter, None
            return TextIn(tuple(splitter.flush()), final=True)
        if Transcript.is_type(event.type):
            return self._converse(data)
        return Ignore(event.type)

    def _check_text(self, adding: int, so_far: int) -> None:
        if so_far + adding > self.max_text_chars:
            raise ChinwagError(
                ErrorCode.TEXT_TOO_LONG,
                f"text of over {self.max_text_chars} characters; that is the limit",
            )

    def _converse(self, data: Mapping[str, Any]) -> Converse:
        text = _text(data)
        self._check_text(len(text), 0)
        language = data.get("language")
        context = data.get("context") or {}
        if not isinstance(context, dict):
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`context` must be an object")
        conversation_id = context.get("conversation_id")
        if conversation_id is not None and (
            not isinstance(conversation_id, str)
            or not 0 < len(conversation_id) <= MAX_CONVERSATION_ID
        ):
            raise ChinwagError(
                ErrorCode.INVALID_MESSAGE,
                f"`context.conversation_id` must be a string of 1 to {MAX_CONVERSATION_ID}",
            )
        return Converse(
            text.strip(),
            language if isinstance(language, str) else None,
            conversation_id,
            context,
        )


def handled_event(text: str, conversation_id: str | None) -> Event:
    context = {"conversation_id": conversation_id} if conversation_id else None
    return Handled(text=text, context=context).event()


def not_handled_event(text: str, conversation_id: str | None) -> Event:
    context = {"conversation_id": conversation_id} if conversation_id else None
    return NotHandled(text=text, context=context).event()


def transcript_event(text: str, language: str | None) -> Event:
    return Transcript(text=text, language=language).event()
