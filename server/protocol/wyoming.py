"""The Wyoming protocol (Home Assistant's local voice services) as pure translation.

No asyncio and no sockets here (docs/architecture.md, "Adding a transport"): bytes and
`wyoming.event.Event`s in, typed actions out; the I/O is server/transports/wyoming.py.

- Framing: an event is a JSON header line (`type`, `data`, `data_length`, `payload_length`),
  then `data_length` bytes of JSON merged into `data`, then `payload_length` bytes of payload.
  The `wyoming` package reads a frame with no bound on those lengths, so the header is parsed
  here, its lengths checked against a limit before anything is read, and the package's own
  `Event` built from it; events are written with the package's writer.
- `build_info`: the `info` answer to `describe`, built from the settings (not the loaded
  engines), so it can be given at once while the models load.
- Audio: Wyoming audio may come at any rate, sample width and channel count; it is turned into
  mono 16-bit PCM here (the rate is kept: the session resamples).
- `RequestReader`: one connection's events in order, as what to do (`Action`s), with the
  stream rules (audio inside audio-start/stop, text inside synthesize-start/stop) and limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    Describe,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from server.errors import ChinwagError, ErrorCode
from server.pipeline.text_split import PhraseSplitter
from server.protocol.native import parse_json

if TYPE_CHECKING:
    from server.config import Settings

DEFAULT_PORT = 10300
# A header line longer than this is not a Wyoming header (HA's are under 300 bytes).
MAX_HEADER_BYTES = 16 * 1024
SAMPLE_WIDTH = 2  # what chinwag sends and converts to: 16-bit signed little-endian
MAX_CHANNELS = 8
WIDTHS = (1, 2, 3, 4)
# Whisper's languages, for a model not limited to one by [asr] language.
_WHISPER_LANGUAGES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo yue zh"
)
WHISPER_LANGUAGES: tuple[str, ...] = tuple(_WHISPER_LANGUAGES.split(" "))
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


# --- framing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """A parsed header line; `data_length` and `payload_length` bytes follow it, in order."""

    type: str
    data: dict[str, Any]
    data_length: int
    payload_length: int


def _length(value: object, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, f"{name} must be a non-negative integer")
    return value


def parse_header(line: bytes, max_event_bytes: int) -> Header:
    """One header line (with or without its newline). Raises ChinwagError before anything
    larger than `max_event_bytes` would be read."""
    if len(line) > MAX_HEADER_BYTES:
        raise ChinwagError(ErrorCode.FRAME_TOO_LARGE, f"header over {MAX_HEADER_BYTES} bytes")
    try:
        # The same checked parser as the other protocols: depth, huge numbers, surrogates.
        header = parse_json(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_JSON, "an event header must be one JSON line") from exc
    if not isinstance(header, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "an event header must be a JSON object")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "an event needs a string `type`")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "`data` must be a JSON object")
    data_length = _length(header.get("data_length"), "data_length")
    payload_length = _length(header.get("payload_length"), "payload_length")
    if len(line) + data_length + payload_length > max_event_bytes:
        raise ChinwagError(
            ErrorCode.FRAME_TOO_LARGE,
            f"a {kind} event of {len(line) + data_length + payload_length} bytes; "
            f"the limit is {max_event_bytes}",
        )
    return Header(kind, data, data_length, payload_length)


def build_event(header: Header, data_bytes: bytes = b"", payload: bytes = b"") -> Event:
    """The event a header and the bytes that followed it make."""
    data = dict(header.data)
    if data_bytes:
        try:
            extra = parse_json(data_bytes.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ChinwagError(ErrorCode.INVALID_JSON, "event data is not JSON") from exc
        if not isinstance(extra, dict):
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, "event data must be a JSON object")
        data.update(extra)
    return Event(type=header.type, data=data, payload=payload or None)


def error_event(exc: ChinwagError) -> Event:
    from wyoming.error import Error

    return Error(text=exc.message, code=exc.code.value).event()


# --- info ------------------------------------------------------------------------------------

CHINWAG = "chinwag"


@dataclass(frozen=True)
class Voice:
    """A voice chinwag can speak with: its Wyoming name and languages."""

    name: str
    path: Path
    languages: tuple[str, ...]
    description: str
    sample_rate: int | None


def voice_of(path: Path) -> Voice:
    """A Piper voice described from its .onnx.json (read only; the model is not loaded)."""
    name = path.name.removesuffix(".onnx")
    languages: tuple[str, ...] = ()
    rate: int | None = None
    quality = ""
    try:
        config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict):
        language = config.get("language")
        if isinstance(language, dict) and isinstance(language.get("code"), str):
            languages = (language["code"],)
        audio = config.get("audio")
        if isinstance(audio, dict):
            if isinstance(audio.get("sample_rate"), int):
                rate = audio["sample_rate"]
            if isinstance(audio.get("quality"), str):
                quality = audio["quality"]
    if not languages:
        # Piper voice files are named LANG_REGION-NAME-QUALITY.
        first = name.split("-", 1)[0]
        languages = (first,) if re.fullmatch(r"[a-z]{2,3}(_[A-Z]{2})?", first) else ("en",)
    parts = name.split("-")
    speaker = parts[1] if len(parts) >= 2 else name
    description = f"{speaker} ({languages[0]}{', ' + quality if quality else ''})"
    return Voice(name, path, languages, description, rate)


def asr_languages(settings: Settings) -> list[str]:
    language = settings.asr.language
    if language:
        return [language]
    model = settings.asr.model_path.name.lower()
    return ["en"] if model.endswith((".en", "-en", "_en")) else list(WHISPER_LANGUAGES)


def conversation_languages(settings: Settings) -> list[str]:
    return [settings.asr.language or "en"]


def build_info(settings: Settings, persona: str, version: str) -> Info:
    """What `describe` answers: an ASR, a TTS and a handle program, every field filled.

    Home Assistant creates a speech-to-text entity (named after the first ASR program), a
    text-to-speech entity (the first installed TTS program) and a conversation agent (the
    first installed handle program) from it; programs and models must be `installed`."""
    asr_model = settings.asr.model_path
    llm_model = settings.llm.model_path
    voice = voice_of(settings.tts.voice_path)
    whisper = Attribution(name="OpenAI", url="https://github.com/openai/whisper")
    piper = Attribution(name="Open Home Foundation", url="https://github.com/OHF-Voice/piper1-gpl")
    llama = Attribution(name="llama.cpp", url="https://github.com/ggml-org/llama.cpp")
    return Info(
        asr=[
            AsrProgram(
                name=CHINWAG,
                attribution=Attribution(
                    name="faster-whisper", url="https://github.com/SYSTRAN/faster-whisper"
                ),
                installed=True,
                description=f"chinwag speech-to-text (Whisper {asr_model.name})",
                version=version,
                models=[
                    AsrModel(
                        name=asr_model.name,
                        attribution=whisper,
                        installed=True,
                        description=f"Whisper {asr_model.name} (CTranslate2)",
                        version=version,
                        languages=asr_languages(settings),
                    )
                ],
                supports_transcript_streaming=False,
                requires_external_vad=not settings.wyoming.use_vad,
            )
        ],
        tts=[
            TtsProgram(
                name=CHINWAG,
                attribution=piper,
                installed=True,
                description="chinwag text-to-speech (Piper)",
                version=version,
                voices=[
                    TtsVoice(
                        name=voice.name,
                        attribution=piper,
                        installed=True,
                        description=voice.description,
                        version=version,
                        languages=list(voice.languages),
                        speakers=None,
                    )
                ],
                supports_synthesize_streaming=True,
            )
        ],
        handle=[
            HandleProgram(
                name=CHINWAG,
                attribution=llama,
                installed=True,
                description=f"chinwag assistant ({persona} persona, {llm_model.stem})",
                version=version,
                models=[
                    HandleModel(
                        name=llm_model.stem,
                        attribution=llama,
                        installed=True,
                        description=f"{llm_model.name} with the {persona} persona",
                        version=version,
                        languages=conversation_languages(settings),
                    )
                ],
                supports_handled_streaming=False,
                supports_home_control=False,
            )
        ],
    )


def pick_voice(voices: Sequence[Voice], name: str | None, language: str | None) -> Voice:
    """The voice a request asks for (by name, else by language, else the first)."""
    if name is not None:
        for voice in voices:
            if voice.name == name:
                return voice
        known = ", ".join(v.name for v in voices)
        raise ChinwagError(ErrorCode.UNKNOWN_VOICE, f"no voice {name!r}; this server has {known}")
    if language is not None:
        wanted = language.replace("-", "_").lower()
        for voice in voices:
            for lang in voice.languages:
                have = lang.lower()
                if have == wanted or have.split("_")[0] == wanted:
                    return voice
        raise ChinwagError(ErrorCode.UNKNOWN_VOICE, f"no voice for language {language!r}")
    return voices[0]


# --- audio -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    width: int
    channels: int

    @property
    def bytes_per_frame(self) -> int:
        return self.width * self.channels


def audio_format(data: Mapping[str, Any]) -> AudioFormat:
    """The rate, width and channels of an audio-start or audio-chunk, checked."""
    values = []
    for name in ("rate", "width", "channels"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ChinwagError(ErrorCode.INVALID_AUDIO_FORMAT, f"audio needs an integer {name}")
        values.append(value)
    fmt = AudioFormat(*values)
    if fmt.width not in WIDTHS:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT, f"sample width {fmt.width} is not 1, 2, 3 or 4 bytes"
        )
    if not 1 <= fmt.channels <= MAX_CHANNELS:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT, f"{fmt.channels} channels; 1 to {MAX_CHANNELS} work"
        )
    from server.audio.pcm import check_sample_rate

    check_sample_rate(fmt.rate)
    return fmt


def to_mono_pcm16(audio: bytes, fmt: AudioFormat) -> bytes:
    """Little-endian PCM of any width (8-bit unsigned, 16/24/32-bit signed) and channel count
    as mono 16-bit PCM at the same rate (channels averaged). A trailing partial frame is an
    error: Wyoming chunks hold whole frames."""
    if len(audio) % fmt.bytes_per_frame:
        raise ChinwagError(
            ErrorCode.INVALID_AUDIO_FORMAT,
            f"{len(audio)} bytes is not a whole number of {fmt.bytes_per_frame}-byte frames",
        )
    if fmt.width == SAMPLE_WIDTH and fmt.channels == 1:
        return audio
    raw = np.frombuffer(audio, dtype=np.uint8)
    if fmt.width == 1:
        samples = (raw.astype(np.int32) - 128) << 8
    elif fmt.width == 2:
        samples = np.frombuffer(audio, dtype="<i2").astype(np.int32)
    elif fmt.width == 3:
        triples = raw.reshape(-1, 3).astype(np.int32)
        value = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = np.where(value >= 1 << 23, value - (1 << 24), value) >> 8
    else:
        samples = np.frombuffer(audio, dtype="<i4").astype(np.int64) >> 16
    mono = samples.reshape(-1, fmt.channels).mean(axis=1)
    out: bytes = np.clip(np.rint(mono), -32768, 32767).astype("<i2").tobytes()
    return out


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


def audio_start_event(rate: int) -> Event:
    return AudioStart(rate=rate, width=SAMPLE_WIDTH, channels=1).event()


def audio_chunk_event(rate: int, pcm: bytes) -> Event:
    return AudioChunk(rate=rate, width=SAMPLE_WIDTH, channels=1, audio=pcm).event()


def audio_stop_event() -> Event:
    return AudioStop().event()
