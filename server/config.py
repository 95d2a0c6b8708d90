"""Typed, grouped settings: one object built once at start-up and passed down.

Precedence, lowest to highest: built-in defaults, the TOML file (``--config`` or
``CHINWAG_CONFIG``), environment variables (``CHINWAG_<GROUP>__<FIELD>``, e.g.
``CHINWAG_SERVER__PORT=9000``), then command-line flags.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from server import IS_CHECKOUT, PROJECT_ROOT, PROMPTS_DIR

# Defined in server.errors with the other exceptions (pure modules raise it too).
from server.errors import ConfigError as ConfigError
from server.pipeline.text_split import PhraseSplitter
from server.protocol.mqtt import parse_broker_url
from server.protocol.wyoming import parse_tcp_uri


def default_models_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the model weights are unless `[models] directory` says otherwise.

    In a checkout its own models/ (where `make models` puts them); for an installed chinwag the
    per-user data directory, $XDG_DATA_HOME/chinwag/models (~/.local/share/chinwag/models).
    """
    if IS_CHECKOUT:
        return PROJECT_ROOT / "models"
    data_home = Path((os.environ if environ is None else environ).get("XDG_DATA_HOME", ""))
    base = data_home if data_home.is_absolute() else Path.home() / ".local" / "share"
    return base / "chinwag" / "models"


# The default models folder; `settings.models.directory` is the one in effect.
MODELS_DIR = default_models_dir()
# The default weights (models/manifest.toml), inside the models folder.
DEFAULT_LLM = Path("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_ASR = Path("whisper-tiny-en")
DEFAULT_VOICE = Path("piper-joe-medium", "en_US-joe-medium.onnx")


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    # Token required from clients when set (query ?token=... or Authorization: Bearer).
    token: str | None = None
    # Web pages on other origins allowed to connect (e.g. "https://intranet.example");
    # "*" allows any. Pages served by chinwag itself and clients that send no Origin
    # (CLIs, devices) are always allowed: any website a visitor opens must not be able to
    # use their local assistant unasked.
    allowed_origins: list[str] = Field(default_factory=list)
    # Names (besides loopback names and addresses, the bind address, and this machine's host
    # names when serving the network) that clients reach the server by, checked against the
    # Host header of every request against DNS rebinding (docs/security.md):
    # e.g. ["kiosk.local", "*.home.lan"]; "*" turns the check off.
    server_names: list[str] = Field(default_factory=list)

    @field_validator("allowed_origins", "server_names", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """A list from the environment: a JSON list or comma-separated names."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc.msg}") from None
        return [item.strip() for item in text.split(",") if item.strip()]


class LimitsSettings(_Group):
    max_sessions: int = Field(64, ge=1)
    # Largest WebSocket message the application reads; larger ones get a
    # `frame_too_large` error. The transport closes at 4x this as a hard memory cap.
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    max_text_chars: int = Field(4000, ge=1)
    # MQTT messages waiting to be published, per queue (replies, events); beyond it the oldest
    # is dropped.
    # (A WebSocket client that stops reading for 30 s is dropped instead.)
    max_queued_events: int = Field(1024, ge=16)
    # Admission control: a turn that has waited this long for the model (every place taken
    # by other sessions' replies) or for the speech recognizer (other sessions' turns ahead)
    # is refused with an `overloaded` error, and a voice turn hears a short spoken apology,
    # instead of waiting without end (docs/scaling.md). 0: wait as long as it takes.
    max_reply_wait_s: float = Field(10.0, ge=0.0)


class HttpSettings(_Group):
    """OpenAI-compatible HTTP on the server's port (docs/openai-http.md)."""

    enabled: bool = True
    # Largest JSON body (chat, speech); a larger one is refused with 413 before it is read.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Largest uploaded audio file (OpenAI's own limit is 25 MB).
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    # Longest uploaded audio transcribed; decoding stops as soon as a file is longer.
    max_audio_s: float = Field(600.0, gt=0.0, le=7200.0)


def check_base_url(url: str) -> str:
    """An OpenAI-compatible server's API root: http(s)://HOST[:PORT][/PATH], e.g.
    http://gpu-box:8080/v1. Returned without a trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://HOST[:PORT]/v1 or https://...")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment: the API root only, e.g. http://HOST:8080/v1")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("not a valid port") from None
    return url.strip().rstrip("/")


class _Remote(_Group):
    """A stage that may run here (`backend = "local"`) or on an OpenAI-compatible server
    (`backend = "openai"`; docs/scaling.md, "Remote engines"). No connection is made unless
    `backend = "openai"`."""

    backend: Literal["local", "openai"] = "local"
    # The server's API root, e.g. http://gpu-box:8080/v1 (llama-server, vLLM, Ollama,
    # llama_cpp.server, another chinwag).
    base_url: str | None = None
    # Sent as `Authorization: Bearer ...`; better from the environment
    # (CHINWAG_LLM__API_KEY, CHINWAG_ASR__API_KEY, CHINWAG_TTS__API_KEY) than in a file.
    api_key: str | None = None
    # Longest wait for the connection, the first byte, or the next chunk of a stream.
    timeout_s: float = Field(30.0, gt=0.0, le=600.0)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, url: str | None) -> str | None:
        return None if url is None else check_base_url(url)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> _Remote:
        if self.backend == "openai" and self.base_url is None:
            raise ValueError('backend = "openai" needs base_url (e.g. http://HOST:8080/v1)')
        return self

    @property
    def remote(self) -> bool:
        return self.backend == "openai"


class LlmSettings(_Remote):
    model_path: Path = MODELS_DIR / DEFAULT_LLM
    # Remote: the model name sent in requests; none: the first one the server lists.
    model: str | None = None
    # Remote: unless set, taken from the server where it says (llama-server, vLLM), else 2048.
    context_size: int = Field(2048, ge=256)
    # Remote: count prompt tokens with the server's tokenizer where it has one
    # (llama-server's /tokenize, llama_cpp.server's /extras/tokenize) or "estimate" them
    # from the text's length (for servers without one).
    tokenizer: Literal["auto", "estimate"] = "auto"
    # Remote: also send llama.cpp's top_k and repeat_penalty (llama-server, llama_cpp.server
    # and vLLM take them; turn off for a server that refuses unknown fields).
    sampling_extras: bool = True
    threads: int = Field(0, ge=0, description="0: all cores")
    batch_size: int = Field(256, ge=8)
    seed: int = -1
    # Replies generated at once, interleaved token by token in one batch (continuous
    # batching): a new reply's first token never waits for another reply to finish. One
    # place is kept for a reply someone waits to hear (docs/performance.md, "Several replies
    # at once").
    parallel: int = Field(8, ge=1, le=64)
    # KV cache cells shared by those replies and the conversations cached between turns;
    # 0: twice context_size (about 94 MB for the default model at 2048).
    kv_cache_tokens: int = Field(0, ge=0)
    # The model pauses between tokens while a transcription or a reply's first phrase runs,
    # so they have both cores (Piper: 60 instead of 155 ms on 2 cores; docs/performance.md).
    pause_for_speech: bool = True
    # While speech work runs beside it (a transcription, a phrase), the model steps on one
    # thread fewer, so that its threads do not wait for one preempted by Whisper or Piper.
    share_cores_with_speech: bool = True
    # While the person speaks, transcribe what they said so far every half second and evaluate
    # it into the KV cache, so the reply evaluates only the last words (docs/performance.md).
    prefill_while_speaking: bool = True


class AsrSettings(_Remote):
    model_path: Path = MODELS_DIR / DEFAULT_ASR
    # Remote: the model name sent to /v1/audio/transcriptions.
    model: str = "whisper-1"
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1, le=10)
    language: str | None = "en"
    # CTranslate2 threads. One is fastest for short utterances on 2 cores (74 ms against 84 ms
    # with 2 and 121 ms with CTranslate2's default of 4, for a 3 s utterance; docs/performance.md).
    threads: int = Field(1, ge=0, description="0: CTranslate2's default")
    # Encode a 10 or 20 s window instead of Whisper's padded 30 s one (see docs/performance.md).
    short_window: bool = True


class TtsSettings(_Remote):
    voice_path: Path = MODELS_DIR / DEFAULT_VOICE
    # Remote: what is asked of /v1/audio/speech. "pcm" is raw 16-bit mono at sample_rate
    # (OpenAI's is 24 kHz); "wav" states its rate, and audio at another one is resampled.
    model: str = "tts-1"
    voice: str = "alloy"
    response_format: Literal["pcm", "wav"] = "pcm"
    sample_rate: int = Field(24000, ge=8000, le=48000)
    # Seconds of audio per binary frame sent to clients.
    frame_s: float = Field(0.1, gt=0.0, le=1.0)
    # The first phrase of a reply ends after this many words if no punctuation came sooner:
    # the first sound waits for the first phrase's synthesis (0: whole first sentence).
    first_phrase_max_words: int = Field(4, ge=0, le=50)
    # ...and at a comma or other clause boundary once it has this many words, or (with
    # first_phrase_prosodic_cut) before a word that opens a new phrase: "Turned on | the
    # kitchen light" (docs/performance.md: same word error rate through Whisper as 3-4 words).
    first_phrase_min_words: int = Field(2, ge=1, le=50)
    first_phrase_prosodic_cut: bool = True
    # Piper: send each sentence's audio in pieces as its decoder makes them (the voice graph
    # split at its latent at load), not once the whole sentence is synthesized; the same
    # audio, sooner (docs/performance.md, "Piper's audio below the sentence").
    stream_decoder: bool = True
    # Short phrases said again come from memory (server/pipeline/speech.py); 0 turns it off,
    # e.g. for benchmarks that repeat their texts (bench/wyoming_latency.py).
    phrase_cache_entries: int = Field(64, ge=0, le=1024)

    @model_validator(mode="after")
    def _first_phrase_bounds(self) -> TtsSettings:
        if 0 < self.first_phrase_max_words < self.first_phrase_min_words:
            raise ValueError("first_phrase_max_words must be 0 or >= first_phrase_min_words")
        return self

    def phrase_splitter(self) -> PhraseSplitter:
        """The splitter every reply and Wyoming synthesis cuts its text with."""
        return PhraseSplitter(
            first_phrase_min_words=self.first_phrase_min_words,
            first_phrase_max_words=self.first_phrase_max_words or None,
            prosodic_cut=self.first_phrase_prosodic_cut,
        )


class VadSettings(_Group):
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    min_speech_ms: int = Field(250, ge=0, le=5000)
    silence_ms: int = Field(500, ge=100, le=10000)
    prefix_padding_ms: int = Field(300, ge=0, le=2000)
    max_utterance_s: float = Field(30.0, gt=0.0, le=120.0)
    # Start transcribing and answering when the person goes quiet, before the turn is
    # confirmed; the work is kept if the turn ends there and dropped if they go on.
    speculate: bool = True
    # Silence that ends a turn whose transcript reads as a complete sentence (at most
    # silence_ms). Above 300 ms so that a pause in mid-sentence never ends a turn.
    complete_silence_ms: int = Field(350, ge=100, le=10000)
    # Inside a pause, a window this many dB louder than the pause so far (and within 35 dB of
    # the turn's loudest speech) ends the pause if Silero hears speech within 96 ms: Silero
    # hears soft onsets ("for", "that") late, which counted 300 ms pauses as up to 384 ms of
    # silence. A knock it does not confirm delays the end of a turn by at most 96 ms. 0: off.
    onset_rise_db: float = Field(10.0, ge=0.0, le=60.0)


class MqttSettings(_Group):
    """The MQTT bridge; off unless `url` is set (e.g. mqtt://127.0.0.1:1883, mqtts://...)."""

    url: str | None = None
    username: str | None = None
    password: str | None = None
    # TLS: implied by mqtts://; ca_file to trust a private CA.
    tls: bool = False
    ca_file: Path | None = None
    client_id: str = "chinwag"
    topic_prefix: str = "chinwag"
    hermes: bool = True  # also answer Rhasspy Hermes topics
    # The persona of site sessions (prompts/); smart_home recognises commands (docs/intents.md).
    # none: [prompts] default_persona.
    persona: str | None = "smart_home"
    reconnect_max_s: float = Field(30.0, gt=0.0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None) -> str | None:
        if url is not None:
            parse_broker_url(url)  # ValueError: the bridge's own check, made at load time
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if any(not level or {"+", "#"} & set(level) for level in prefix.split("/")):
            raise ValueError("topic levels must be non-empty, without + or #")
        return prefix


class WyomingSettings(_Group):
    """The Wyoming server for Home Assistant (docs/home-assistant.md); off unless `uri` is set
    (tcp://HOST:PORT; 10300 is Wyoming's usual port)."""

    uri: str | None = None
    # Announce the server on the local network (mDNS `_wyoming._tcp.local.`), so that Home
    # Assistant discovers it; only useful when `uri` binds an address others can reach.
    zeroconf: bool = False
    zeroconf_name: str = "chinwag"
    # Speech-to-text: Home Assistant's own VAD ends the audio (requires_external_vad). With
    # use_vad, chinwag's VAD ends the turn and the transcript is sent at once.
    use_vad: bool = False
    # The conversation agent's persona (prompts/); none: [prompts] default_persona.
    persona: str | None = "smart_home"
    # Conversations (by Home Assistant's conversation_id) kept, and how long one is kept idle.
    max_conversations: int = Field(16, ge=1, le=1024)
    conversation_idle_s: float = Field(300.0, gt=0.0)
    # Audio one speech-to-text request may send; beyond it the request fails.
    max_audio_s: float = Field(60.0, gt=0.0, le=600.0)
    # Largest event (header, data and payload) read from a client.
    max_event_bytes: int = Field(1024 * 1024, ge=4096)
    # wyoming-satellites chinwag connects to and drives, as Home Assistant does
    # (docs/satellites.md): tcp://HOST:PORT each (10700 is the satellite's usual port).
    # Independent of `uri`: a satellite needs no Wyoming server.
    satellites: list[str] = Field(default_factory=list, max_length=64)
    # The satellites' persona; none: `persona` above.
    satellite_persona: str | None = None
    # What a satellite that asks chinwag for the wake stage (one that streams all the time)
    # waits for, unless it names its own (wake_word_names); [] answers every utterance.
    satellite_wake_words: list[str] = Field(default_factory=lambda: ["okay_nabu"], max_length=8)
    # Longest a reconnection to a satellite waits (it starts at 1 s and doubles).
    satellite_reconnect_max_s: float = Field(30.0, ge=1.0, le=3600.0)

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str | None) -> str | None:
        if uri is not None:
            parse_tcp_uri(uri)  # ValueError: checked at load time
        return uri

    @field_validator("satellites")
    @classmethod
    def _check_satellites(cls, uris: list[str]) -> list[str]:
        for uri in uris:
            parse_tcp_uri(uri)
        if len(set(uris)) != len(uris):
            raise ValueError("a satellite is listed twice")
        return uris


class IntentsSettings(_Group):
    """The local intent stage (docs/intents.md): commands recognised from Home Assistant's
    templates and answered without the chat model, for personas with `intents = true`."""

    enabled: bool = True
    # The home's areas and devices (TOML); none: no devices (time, date and timers still work).
    # The default is the demo home shipped in prompts/devices.example.toml.
    devices: Path | None = PROMPTS_DIR / "devices.example.toml"
    language: str = "en"
    # The site named in published intents of a session that has none (Hermes' default).
    default_site: str = Field("default", min_length=1, max_length=128)
    # Silence that ends a turn whose words (so far) are a whole command the stage recognises
    # (at most [vad] complete_silence_ms): the answer is ready, and waits only for this.
    command_silence_ms: int = Field(250, ge=100, le=10000)
    # chinwag's own sentence templates (server/intents/sentences/en.yaml: everyday phrasings
    # such as "kill the lights", "put the telly on") and its everyday words for a kind of
    # device or room ("telly", "sitting room") are merged into Home Assistant's.
    own_sentences: bool = True
    # The site's own extra sentence file (hassil YAML, as Home Assistant's custom_sentences),
    # merged in too; a path relative to the working directory. None: none.
    sentences: Path | None = None
    # Whisper is prompted with the home's device and area names in sessions that take commands.
    asr_prompt: bool = True
    # A transcript one misheard word away from a command ("start at 3 minute timer") is taken
    # for it when only one command fits (server/intents/repair.py).
    repair: bool = True
    # A transcript that is no command is read again: this many readings of the same audio
    # (Whisper's beam search, one encoder pass), and the one command they agree on is taken
    # (server/intents/hearing.py). 0 or 1: off.
    n_best: int = Field(5, ge=0, le=16)
    # How far below the likeliest reading (mean log-probability per token) a reading counts.
    n_best_gap: float = Field(0.5, gt=0.0, le=10.0)
    # Only a first hearing Whisper was unsure of (mean log-probability per token below this)
    # is read again; 0: every one that is no command.
    n_best_unsure_below: float = Field(-0.25, ge=-10.0, le=0.0)
    # A transcript still no command is rescored: the home's command sentences close to it
    # (a device or area named in it, spelled alike) are scored by Whisper against the same
    # audio, and one clearly likelier than the others is taken (server/intents/rescore.py).
    rescore: bool = True
    # While someone speaks, the words so far are transcribed and evaluated into the chat
    # model's cache ([llm] prefill_while_speaking); once they begin like a command ("turn
    # ...", "set ..."), that stops for the utterance: the model will not answer it, and the
    # work would compete with the command's own transcription. true: go on regardless.
    prefill_commands: bool = False
    # Timers one session keeps at once, and the longest one.
    max_timers: int = Field(8, ge=1, le=100)
    max_timer_s: float = Field(24 * 3600.0, gt=0.0, le=7 * 24 * 3600.0)


class WakeSettings(_Group):
    """Wake words (docs/wake-word.md): a session that asks for one, or whose persona or this
    default names one, hears nothing until it is said."""

    # The wake words a session listens for when neither it nor its persona says; none: off.
    # Ids of openWakeWord's packaged models (okay_nabu, hey_jarvis, hey_mycroft, alexa,
    # hey_rhasspy) or of the models in model_paths.
    wake_words: list[str] = Field(default_factory=list)
    # More openWakeWord .tflite models; a model's id is its file name without .tflite.
    model_paths: list[Path] = Field(default_factory=list)
    # Score (0-1) at or above which a wake word counts; higher: fewer false wakes, more misses.
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    # After the wake word, the request must begin within this time, or the session waits for
    # the wake word again.
    listen_s: float = Field(5.0, gt=0.0, le=60.0)
    # After a turn, further turns are taken without the wake word if they begin within this
    # time of the end of the last one's speech (0: one turn per wake word).
    follow_up_s: float = Field(0.0, ge=0.0, le=300.0)


class ModelsSettings(_Group):
    # Where `chinwag models fetch` puts the default weights and where the default model paths
    # point; an explicit [llm] model_path, [asr] model_path or [tts] voice_path wins.
    directory: Path = Field(default_factory=default_models_dir)


class PromptSettings(_Group):
    directory: Path = PROMPTS_DIR
    default_persona: str = "assistant"


class Settings(_Group):
    """Everything chinwag can be told, grouped by the part it configures.

    The layers are merged by hand (about twenty lines) rather than with pydantic-settings:
    its sources cannot put a TOML file chosen at run time below the environment without
    more code than the merge itself.
    """

    server: ServerSettings = ServerSettings()
    limits: LimitsSettings = LimitsSettings()
    http: HttpSettings = HttpSettings()
    models: ModelsSettings = ModelsSettings()
    llm: LlmSettings = LlmSettings()
    asr: AsrSettings = AsrSettings()
    tts: TtsSettings = TtsSettings()
    vad: VadSettings = VadSettings()
    mqtt: MqttSettings = MqttSettings()
    wyoming: WyomingSettings = WyomingSettings()
    intents: IntentsSettings = IntentsSettings()
    wake: WakeSettings = WakeSettings()
    prompts: PromptSettings = PromptSettings()

    @model_validator(mode="after")
    def _default_weights_in_models_dir(self) -> Settings:
        """Model paths not set explicitly name the default weights in the models folder."""
        directory = self.models.directory
        if "model_path" not in self.llm.model_fields_set:
            self.llm = self.llm.model_copy(update={"model_path": directory / DEFAULT_LLM})
        if "model_path" not in self.asr.model_fields_set:
            self.asr = self.asr.model_copy(update={"model_path": directory / DEFAULT_ASR})
        if "voice_path" not in self.tts.model_fields_set:
            self.tts = self.tts.model_copy(update={"voice_path": directory / DEFAULT_VOICE})
        return self


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_layer(environ: dict[str, str]) -> dict[str, Any]:
    """CHINWAG_GROUP__FIELD=value as a nested dict (values stay strings; pydantic converts)."""
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("CHINWAG_") or name == "CHINWAG_CONFIG":
            continue
        parts = name[len("CHINWAG_") :].lower().split("__")
        if len(parts) != 2:
            raise ConfigError(f"environment variable {name}: expected CHINWAG_<GROUP>__<FIELD>")
        layer.setdefault(parts[0], {})[parts[1]] = value
    return layer


def load_settings(
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from defaults < TOML file < environment < overrides (flags)."""
    environ = dict(os.environ) if environ is None else environ
    if config_path is None and environ.get("CHINWAG_CONFIG"):
        config_path = Path(environ["CHINWAG_CONFIG"])
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {config_path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from exc
        data = _resolve_paths(data, config_path.parent)
    data = _deep_merge(data, _env_layer(environ))
    data = _deep_merge(data, overrides or {})
    if isinstance(models := data.get("models", {}), dict) and "directory" not in models:
        data = _deep_merge(data, {"models": {"directory": str(default_models_dir(environ))}})
    try:
        # Validate from one merged dict so precedence is ours, not the library's.
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


_PATH_FIELDS = {
    ("llm", "model_path"),
    ("asr", "model_path"),
    ("tts", "voice_path"),
    ("prompts", "directory"),
    ("models", "directory"),
    ("mqtt", "ca_file"),
    ("intents", "devices"),
    ("wake", "model_paths"),  # a list of paths
}


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a config file are relative to that file, not to the cwd."""
    for group, field in _PATH_FIELDS:
        value = data.get(group, {}).get(field) if isinstance(data.get(group), dict) else None
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            data[group][field] = str((base / value).resolve())
        elif isinstance(value, list):
            data[group][field] = [
                str((base / v).resolve())
                if isinstance(v, str) and not Path(v).expanduser().is_absolute()
                else v
                for v in value
            ]
    return data


def settings_as_toml(settings: Settings) -> str:
    """The effective settings as TOML text (what --print-config shows)."""
    lines: list[str] = []
    dumped = settings.model_dump(mode="json")
    secrets = (("server", "token"), ("mqtt", "password"))
    for group, secret in (*secrets, ("llm", "api_key"), ("asr", "api_key"), ("tts", "api_key")):
        if dumped[group].get(secret):
            dumped[group][secret] = "***"
    for group, fields in dumped.items():
        lines.append(f"[{group}]")
        for key, value in fields.items():
            if value is None:
                lines.append(f"# {key} is not set")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
