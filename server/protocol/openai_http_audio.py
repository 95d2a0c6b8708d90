"""OpenAI's speech and transcription requests, the parts chinwag answers: the request checked,
transcriptions in each response_format (SubRip and WebVTT subtitles too). Pure functions; no
I/O. The transport is server/transports/openai_http_audio.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from server.engines.base import Segment
from server.errors import ErrorCode
from server.protocol.openai_http import (
    OpenAIError,
    RequestModel,
    from_validation,
    invalid,
    parse_json_object,
)

# --- speech ---------------------------------------------------------------------------------

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# OpenAI's voice names, accepted so that clients written for OpenAI work unchanged: this
# server has one voice, and each of them is that voice.
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "onyx",
        "nova",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)


class SpeechRequest(RequestModel):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: Annotated[str, Field(min_length=1)]
    voice: Annotated[str, Field(min_length=1, max_length=256)]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] = 1.0
    instructions: str | None = None  # accepted, not used: Piper voices take no instructions


def parse_speech_request(body: bytes, max_text_chars: int, voices: set[str]) -> SpeechRequest:
    """A /v1/audio/speech body; `voices` are this server's voice names besides OpenAI's."""
    try:
        request = SpeechRequest.model_validate(parse_json_object(body))
    except ValidationError as exc:
        raise from_validation(exc) from None
    if len(request.input) > max_text_chars:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.TEXT_TOO_LONG,
            f"input has {len(request.input)} characters; the limit is {max_text_chars}",
            param="input",
        )
    if request.voice not in voices and request.voice not in OPENAI_VOICES:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.UNKNOWN_VOICE,
            f"no voice {request.voice[:64]!r}; this server has {', '.join(sorted(voices))} "
            "(OpenAI's voice names are accepted too)",
            param="voice",
        )
    return request


# --- transcriptions -------------------------------------------------------------------------

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MAX_PROMPT_CHARS = 2000
MAX_FIELD_BYTES = 16 * 1024  # a form field other than the file


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str
    response_format: str = "json"
    language: str | None = None
    prompt: str | None = None


def parse_transcription_fields(fields: dict[str, str]) -> TranscriptionRequest:
    """The form fields of /v1/audio/transcriptions besides `file` (others are ignored)."""
    model = fields.get("model", "").strip()
    if not model:
        raise invalid("model is required", "model")
    response_format = fields.get("response_format", "json").strip() or "json"
    if response_format not in TRANSCRIPTION_FORMATS:
        raise invalid(
            f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}",
            "response_format",
        )
    language = fields.get("language", "").strip().lower() or None
    if language is not None and not (
        2 <= len(language) <= 3 and language.isascii() and language.isalpha()
    ):
        raise invalid("language must be an ISO-639-1 code such as 'en'", "language")
    prompt = fields.get("prompt") or None
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.TEXT_TOO_LONG,
            f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            param="prompt",
        )
    return TranscriptionRequest(model, response_format, language, prompt)


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, math.floor(seconds * 1000 + 0.5))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: Sequence[Segment]) -> str:
    """SubRip: numbered cues, comma before the milliseconds."""
    cues = [
        f"{i}\n{_timestamp(s.start_s, ',')} --> {_timestamp(s.end_s, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[Segment]) -> str:
    """WebVTT: a header, then cues with a dot before the milliseconds."""
    cues = [
        f"{_timestamp(s.start_s, '.')} --> {_timestamp(s.end_s, '.')}\n{s.text}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "nl": "dutch",
    "pt": "portuguese",
}


def transcription_body(
    response_format: str, language: str, duration_s: float, segments: Sequence[Segment]
) -> tuple[str, bytes]:
    """(content type, body) of a transcription in a response_format."""
    text = " ".join(s.text for s in segments)
    if response_format == "text":
        return "text/plain; charset=utf-8", (text + "\n").encode()
    if response_format == "srt":
        return "application/x-subrip; charset=utf-8", srt(segments).encode()
    if response_format == "vtt":
        return "text/vtt; charset=utf-8", vtt(segments).encode()
    body: dict[str, Any] = {"text": text}
    if response_format == "verbose_json":
        body = {
            "task": "transcribe",
            "language": LANGUAGE_NAMES.get(language, language),
            "duration": round(duration_s, 3),
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": round(s.start_s, 3),
                    "end": round(s.end_s, 3),
                    "text": s.text,
                    "tokens": list(s.tokens),
                    "temperature": 0.0,
                    "avg_logprob": round(s.avg_logprob, 4),
                    "compression_ratio": round(s.compression_ratio, 4),
                    "no_speech_prob": round(s.no_speech_prob, 4),
                }
                for i, s in enumerate(segments)
            ],
        }
    return "application/json", json.dumps(body, ensure_ascii=False).encode()
