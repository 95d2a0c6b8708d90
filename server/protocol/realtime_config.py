"""The Realtime session's configuration: `session.update` checked and applied.

`RealtimeConfig` is the session as the client last set it (instructions, output modalities,
turn detection, voice, limits and chinwag's wake-word extension); `apply` checks every field
of a `session.update` before anything changes, and `audio_start` and `session_object` give it
back as the native audio stream and as the `session` object of `session.created`/`.updated`.
Separate from the wire (server/protocol/realtime.py) because it is the one large piece of the
protocol's meaning, with the tables that map OpenAI's turn detection onto chinwag's VAD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from server.protocol.native import AudioStart, VadOptions, WakeOptions, describe_validation_error
from server.protocol.realtime import (
    MAX_OUTPUT_TOKENS,
    RATE,
    RealtimeError,
    check_modalities,
    event_id_of,
    field_of,
    invalid_value,
)

# semantic_vad's eagerness -> how long a turn waits in silence when its words so far do not
# read as a finished sentence (the native `vad.silence_ms`). A sentence that reads as finished
# (server/pipeline/endpointing.py) ends after [vad] complete_silence_ms at any eagerness.
EAGERNESS_SILENCE_MS = {"low": 2000, "medium": 1000, "auto": 1000, "high": 500}


@dataclass
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    # "server_vad" (silence only) or "semantic_vad" (eagerness: how sure it waits to be).
    kind: str = "server_vad"
    eagerness: str = "auto"

    @property
    def silence_ms(self) -> int:
        """The silence that ends a turn whose words do not yet read as finished."""
        if self.kind == "semantic_vad":
            return EAGERNESS_SILENCE_MS[self.eagerness]
        return self.silence_duration_ms

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "semantic_vad":
            return {
                "type": "semantic_vad",
                "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
            "idle_timeout_ms": None,
        }


# turn_detection fields -> the native `vad` options that check their ranges.
VAD_FIELDS = {
    "threshold": "threshold",
    "prefix_padding_ms": "prefix_padding_ms",
    "silence_duration_ms": "silence_ms",
}
NATIVE_VAD_NAMES = {native: name for name, native in VAD_FIELDS.items()}
VAD_FLAGS = ("create_response", "interrupt_response")
# session.update fields accepted and ignored, with the types they must have.
IGNORED_SESSION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "session.model": str,
    "session.tool_choice": (str, dict),
    "session.tracing": (str, dict),
    "session.truncation": (str, dict),
    "session.include": list,
    "session.prompt": dict,
    "session.audio.input.transcription": dict,
    "session.audio.input.noise_reduction": dict,
}


@dataclass
class RealtimeConfig:
    """The Realtime session configuration as the client last set it."""

    model: str
    instructions: str
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    max_output_tokens: int | None = None
    voice: str = "chinwag"
    # Recorded and echoed in session.updated; the server's Whisper transcribes whatever the
    # model named, Piper speaks at its own speed, and there is no noise reduction stage.
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    speed: float = 1.0
    tracing: str | dict[str, Any] | None = None
    truncation: str | dict[str, Any] = "auto"
    # chinwag's extension (session.chinwag.wake): wait for a wake word (docs/wake-word.md).
    wake: WakeOptions | None = None

    @property
    def speak(self) -> bool:
        return "audio" in self.output_modalities

    def apply(self, event: dict[str, Any], wake_words: tuple[str, ...] = ()) -> None:
        """Apply a session.update. Every field is checked (type, range) before anything
        changes: a bad one is an error naming it (`param`), and the session stays as it was.
        `wake_words`: the ids session.chinwag.wake may name."""
        eid = event_id_of(event)
        field_of(event, "session", dict)
        kind = field_of(event, "session.type", str)
        if kind is not None and kind != "realtime":
            raise RealtimeError(
                "invalid_value",
                "session.type must be 'realtime' (transcription sessions are not supported)",
                param="session.type",
                event_id=eid,
            )
        # Accepted and ignored (any model name is served by the configured model; tracing,
        # truncation, include, prompt and tool_choice change nothing), but of the right type.
        for path, kinds in IGNORED_SESSION_FIELDS.items():
            field_of(event, path, kinds)
        updated = dict(vars(self))
        instructions = field_of(event, "session.instructions", str)
        if instructions is not None:
            updated["instructions"] = instructions
        modalities = field_of(event, "session.output_modalities", list)
        if modalities is not None:
            updated["output_modalities"] = check_modalities(event, "session.output_modalities")
        for direction in ("input", "output"):
            fmt = field_of(event, f"session.audio.{direction}.format", dict)
            if fmt is not None and (
                fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE
            ):
                raise RealtimeError(
                    "unsupported_format",
                    "only audio/pcm at 24000 Hz is supported",
                    param=f"session.audio.{direction}.format",
                    event_id=eid,
                )
        audio_input = field_of(event, "session.audio.input", dict, {})
        if "turn_detection" in audio_input:
            updated["turn_detection"] = self._turn_detection(event, audio_input["turn_detection"])
        if "transcription" in audio_input:
            updated["transcription"] = self._transcription(event)
        if "noise_reduction" in audio_input:
            reduction = audio_input["noise_reduction"]
            kind = field_of(event, "session.audio.input.noise_reduction.type", str)
            if reduction is not None and kind not in (None, "near_field", "far_field"):
                raise invalid_value(
                    event,
                    "session.audio.input.noise_reduction.type",
                    "noise_reduction.type must be near_field or far_field",
                )
            updated["noise_reduction"] = None if reduction is None else {"type": kind}
        session = field_of(event, "session", dict, {})
        for name in ("tracing", "truncation"):
            if name in session and session[name] is not None:
                updated[name] = session[name]
        if field_of(event, "session.tools", list):
            raise RealtimeError(
                "unsupported_tools",
                "tools are not supported by chinwag",
                param="session.tools",
                event_id=eid,
            )
        tokens = field_of(event, "session.max_output_tokens", (int, str))
        if tokens is not None:
            if tokens == "inf":
                updated["max_output_tokens"] = None
            elif isinstance(tokens, int) and 1 <= tokens <= MAX_OUTPUT_TOKENS:
                updated["max_output_tokens"] = tokens
            else:
                raise invalid_value(
                    event,
                    "session.max_output_tokens",
                    f"session.max_output_tokens must be 1 to {MAX_OUTPUT_TOKENS} or 'inf'",
                )
        voice = field_of(event, "session.audio.output.voice", str)
        if voice is not None:
            updated["voice"] = voice
        speed = field_of(event, "session.audio.output.speed", (int, float))
        if speed is not None and not 0.25 <= speed <= 1.5:
            raise invalid_value(
                event, "session.audio.output.speed", "session.audio.output.speed: 0.25 to 1.5"
            )
        if speed is not None:
            updated["speed"] = float(speed)
        chinwag = field_of(event, "session.chinwag", dict, {})
        if "wake" in chinwag:
            updated["wake"] = self._wake(event, chinwag["wake"], wake_words)
        unknown = set(chinwag) - {"wake"}
        if unknown:
            raise invalid_value(
                event,
                "session.chinwag",
                f"unknown chinwag setting(s): {', '.join(sorted(unknown))}",
            )
        for key, value in updated.items():
            setattr(self, key, value)

    @staticmethod
    def _wake(event: dict[str, Any], wake: Any, known: tuple[str, ...]) -> WakeOptions:
        """session.chinwag.wake: {"words": [...], "listen_s", "follow_up_s"}, or null (off)."""
        param = "session.chinwag.wake"
        if wake is None:
            return WakeOptions(words=[])
        try:
            options = WakeOptions.model_validate(wake)
        except ValidationError as exc:
            raise invalid_value(event, param, f"{param}: {describe_validation_error(exc)}") from exc
        unknown = [w for w in options.words if w not in known]
        if unknown:
            raise invalid_value(
                event,
                f"{param}.words",
                f"unknown wake word {', '.join(unknown)}; available: {', '.join(known)}",
            )
        return options

    def _turn_detection(self, event: dict[str, Any], td: Any) -> TurnDetection | None:
        """session.audio.input.turn_detection: null (push-to-talk) or server_vad, checked
        against the ranges the native protocol's `vad` options allow."""
        param = "session.audio.input.turn_detection"
        if td is None:
            return None
        if not isinstance(td, dict):
            raise invalid_value(event, param, f"{param} must be an object or null")
        kind = field_of(event, f"{param}.type", str, "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise RealtimeError(
                "unsupported_turn_detection",
                "turn_detection.type must be server_vad or semantic_vad (or turn_detection null)",
                param=f"{param}.type",
                event_id=event_id_of(event),
            )
        base = self.turn_detection or TurnDetection()
        if kind == "semantic_vad":
            # Silence and the words so far (server/pipeline/endpointing.py) decide the end of
            # the turn; server_vad's numbers do not apply to it and are not read.
            eagerness = field_of(event, f"{param}.eagerness", str, "auto")
            if eagerness not in EAGERNESS_SILENCE_MS:
                raise invalid_value(
                    event, f"{param}.eagerness", f"{param}.eagerness: low, medium, high or auto"
                )
            semantic = {name: field_of(event, f"{param}.{name}", bool) for name in VAD_FLAGS}
            return TurnDetection(
                threshold=base.threshold,
                prefix_padding_ms=base.prefix_padding_ms,
                silence_duration_ms=base.silence_duration_ms,
                create_response=base.create_response
                if semantic["create_response"] is None
                else semantic["create_response"],
                interrupt_response=base.interrupt_response
                if semantic["interrupt_response"] is None
                else semantic["interrupt_response"],
                kind="semantic_vad",
                eagerness=eagerness,
            )
        options = {
            native_name: td[name]
            for name, native_name in VAD_FIELDS.items()
            if td.get(name) is not None
        }
        try:
            VadOptions.model_validate(options, strict=True)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = NATIVE_VAD_NAMES.get(str(error["loc"][0]), str(error["loc"][0]))
            raise invalid_value(
                event, f"{param}.{name}", f"{param}.{name}: {error['msg']}"
            ) from exc
        flags = {name: field_of(event, f"{param}.{name}", bool) for name in VAD_FLAGS}
        idle = field_of(event, f"{param}.idle_timeout_ms", int)
        if idle is not None and idle < 0:
            raise invalid_value(
                event, f"{param}.idle_timeout_ms", f"{param}.idle_timeout_ms must be >= 0"
            )
        return TurnDetection(
            threshold=float(options.get("threshold", base.threshold)),
            prefix_padding_ms=int(options.get("prefix_padding_ms", base.prefix_padding_ms)),
            silence_duration_ms=int(options.get("silence_ms", base.silence_duration_ms)),
            create_response=base.create_response
            if flags["create_response"] is None
            else flags["create_response"],
            interrupt_response=base.interrupt_response
            if flags["interrupt_response"] is None
            else flags["interrupt_response"],
        )

    @staticmethod
    def _transcription(event: dict[str, Any]) -> dict[str, Any] | None:
        """session.audio.input.transcription: null, or {model, language, prompt} (strings),
        kept as set; the server's own Whisper transcribes in any case."""
        param = "session.audio.input.transcription"
        if event["session"]["audio"]["input"]["transcription"] is None:
            return None
        kept: dict[str, Any] = {}
        for name in ("model", "language", "prompt"):
            value = field_of(event, f"{param}.{name}", str)
            if value is not None:
                kept[name] = value
        return kept

    def audio_start(self) -> AudioStart:
        """The native audio stream these settings ask for (valid for any applied update)."""
        td = self.turn_detection
        return AudioStart(
            sample_rate=RATE,
            output_sample_rate=RATE,
            mode="vad" if td else "push_to_talk",
            respond=td.create_response if td else False,
            interrupt=td.interrupt_response if td else True,
            speak=self.speak,
            vad=VadOptions(
                threshold=td.threshold,
                prefix_padding_ms=td.prefix_padding_ms,
                silence_ms=td.silence_ms,
            )
            if td
            else None,
        )

    def session_object(self, session_id: str) -> dict[str, Any]:
        pcm = {"type": "audio/pcm", "rate": RATE}
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": self.model,
            "output_modalities": self.output_modalities,
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": self.transcription,
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": self.turn_detection.as_dict()
                    if self.turn_detection
                    else None,
                },
                "output": {"format": pcm, "voice": self.voice, "speed": self.speed},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": self.max_output_tokens or "inf",
            "tracing": self.tracing,
            "truncation": self.truncation,
            "prompt": None,
            "include": None,
            # chinwag's extension, shown once a client has set it.
            **({"chinwag": {"wake": self.wake.model_dump()}} if self.wake is not None else {}),
        }
