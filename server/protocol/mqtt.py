"""The MQTT bridge's wire format: broker URLs, topics and payloads. Pure code, no I/O.

Commands become the native protocol's messages (validated exactly as a WebSocket client's);
what the bridge publishes is built here as bytes. docs/mqtt.md documents every topic.
"""

from __future__ import annotations

import io
import json
import uuid
import wave
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from server.errors import ChinwagError, ConfigError, ErrorCode
from server.protocol import json_checks
from server.protocol import native as proto

if TYPE_CHECKING:
    from server.config import MqttSettings
    from server.pipeline.state import SessionState

MAX_SITE_CHARS = 128

HERMES_SAY = "hermes/tts/say"
HERMES_SAY_FINISHED = "hermes/tts/sayFinished"
HERMES_TTS_ERROR = "hermes/error/tts"
HERMES_TEXT_CAPTURED = "hermes/asr/textCaptured"
HERMES_DEFAULT_SITE = "default"
HERMES_INTENT = "hermes/intent"  # /<intentName>
HERMES_HOTWORD = "hermes/hotword"  # /<wakewordId>/detected


# --- broker addresses ------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None = field(repr=False)


def parse_broker_url(url: str) -> SplitResult:
    """The one check of a broker URL, mqtt://[user:pass@]host[:port] or mqtts://...

    Raises ValueError (the settings validator reports it as a configuration error)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError("expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("only scheme, credentials, host and port")
    _ = parts.port  # ValueError when out of range
    return parts


def broker_address(settings: MqttSettings) -> BrokerAddress:
    """Where to connect; the settings' credentials win over the URL's."""
    url = settings.url or ""
    try:
        parts = parse_broker_url(url)
    except ValueError as exc:
        raise ConfigError(f"[mqtt] url {url!r}: {exc}") from exc
    assert parts.hostname is not None  # checked by parse_broker_url
    tls = parts.scheme.lower() == "mqtts" or settings.tls
    username = settings.username or (unquote(parts.username) if parts.username else None)
    password = settings.password
    if password is None and parts.password is not None:
        password = unquote(parts.password)
    port = parts.port or (8883 if tls else 1883)
    return BrokerAddress(parts.hostname, port, tls, username, password)


# --- topics ----------------------------------------------------------------------------------


def valid_level(name: str) -> bool:
    """Usable as one topic level of a published topic: no separator, wildcard or control."""
    return 0 < len(name) <= MAX_SITE_CHARS and not any(
        ch in "/+#" or ord(ch) < 0x20 or ch == "\x7f" for ch in name
    )


class Topics:
    def __init__(self, prefix: str) -> None:
        levels = prefix.split("/")
        if not all(valid_level(level) for level in levels):
            raise ConfigError(f"[mqtt] topic_prefix {prefix!r}: levels must be non-empty, no + #")
        self.prefix = prefix
        self._depth = len(levels)
        self.status = f"{prefix}/status"
        self.error = f"{prefix}/error"  # errors that belong to no valid site
        self.commands = [f"{prefix}/+/ask", f"{prefix}/+/say"]

    def site(self, site: str, leaf: str) -> str:
        return f"{self.prefix}/{site}/{leaf}"

    def command(self, topic: str) -> tuple[str, str] | None:
        """(site, "ask" | "say") for a command topic, else None."""
        levels = topic.split("/")
        if len(levels) != self._depth + 2 or levels[-1] not in ("ask", "say"):
            return None
        if "/".join(levels[: self._depth]) != self.prefix:
            return None
        return levels[self._depth], levels[-1]


def event_leaf(event: proto.ServerEvent) -> str:
    """chinwag/<site>/event/reply_done for reply.done, and so on; wake.detected is
    chinwag/<site>/event/wake."""
    if isinstance(event, proto.WakeDetected):
        return "event/wake"
    return "event/" + event.type.replace(".", "_")


def hermes_hotword_topic(wake_word_id: str) -> str:
    return f"{HERMES_HOTWORD}/{wake_word_id}/detected"


def hermes_play_bytes(site: str, request_id: str) -> str:
    return f"hermes/audioServer/{site}/playBytes/{request_id}"


# --- commands in -----------------------------------------------------------------------------


def json_object(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the payload is not UTF-8 text") from exc
    data = json_checks.parse_json(text)  # ChinwagError(INVALID_JSON) for any bad JSON
    if not isinstance(data, dict):
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the payload must be a JSON object")
    return data


def parse_command(kind: str, payload: bytes, max_text_chars: int) -> proto.ClientMessage:
    """An ask or say payload: plain text, or a JSON object with `text` (and `id`...)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "the payload is not UTF-8 text") from exc
    if not text.lstrip().startswith("{"):
        return command(kind, {"text": text.strip()}, max_text_chars)
    data = json_object(payload)
    # Other keys are ignored: devices often send more than we need.
    allowed = ("text", "id", "sample_rate") if kind == "say" else ("text", "id")
    return command(kind, {k: data[k] for k in allowed if k in data}, max_text_chars)


def command(kind: str, fields: dict[str, Any], max_text_chars: int) -> proto.ClientMessage:
    """A session message from the fields of a command, validated as the WebSocket's are."""
    if "text" not in fields:
        raise ChinwagError(ErrorCode.INVALID_MESSAGE, "field 'text' is required")
    kind_type = "say" if kind == "say" else "user.message"
    return proto.validate_client_message({"type": kind_type, **fields}, max_text_chars)


@dataclass(frozen=True)
class HermesSay:
    """A valid hermes/tts/say: speak `say` in the session of `site`."""

    site: str
    say_id: str | None
    session_id: str | None
    request_id: str  # a topic level: the say's id, or a fresh one
    say: proto.ClientMessage


class HermesSayError(ChinwagError):
    """A rejected hermes/tts/say, with what the error reply names (site may be invalid)."""

    def __init__(self, error: ChinwagError, site: str | None, session_id: object) -> None:
        super().__init__(error.code, error.message)
        self.site = site
        self.session_id = session_id


def parse_hermes_say(payload: bytes, max_bytes: int, max_text_chars: int) -> HermesSay:
    site: str | None = None  # named in errors even when it is not a valid one
    data: dict[str, Any] = {}
    try:
        json_checks.check_frame_size(payload, max_bytes, "payload")
        data = json_object(payload)
        raw_site = data.get("siteId") or HERMES_DEFAULT_SITE
        site = raw_site if isinstance(raw_site, str) else None
        if site is None or not valid_level(site):
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, f"invalid siteId {raw_site!r}")
        say_id, session_id = data.get("id"), data.get("sessionId")
        if not isinstance(say_id, str | None) or not isinstance(session_id, str | None):
            raise ChinwagError(ErrorCode.INVALID_MESSAGE, "id and sessionId must be strings")
        # The request id is a topic level; an id that cannot be one gets a fresh uuid.
        request_id = say_id if say_id and valid_level(say_id) else uuid.uuid4().hex
        # `lang` and `volume` are accepted and ignored: the voice is the server's.
        fields = {k: v for k, v in (("text", data.get("text")), ("id", request_id)) if v}
        say = command("say", fields, max_text_chars)
    except ChinwagError as exc:
        raise HermesSayError(exc, site, data.get("sessionId")) from exc
    return HermesSay(site, say_id, session_id, request_id, say)


# --- payloads out ----------------------------------------------------------------------------


def dumps(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def event_payload(event: proto.ServerEvent, session_id: str) -> bytes:
    """{"type", "session_id", ...the event's fields}, serialized once by the event's model."""
    head = dumps({"type": event.type, "session_id": session_id})
    # SessionStarted has a session_id of its own: the same id, written once.
    fields = event.model_dump_json(exclude_none=True, exclude={"session_id"}).encode()
    if fields == b"{}":
        return head
    return head[:-1] + b"," + fields[1:]


def state_payload(session_id: str, previous: SessionState, state: SessionState) -> bytes:
    return dumps({"state": state.value, "previous": previous.value, "session_id": session_id})


def reply_delta_payload(reply_id: str, text: str) -> bytes:
    return dumps({"id": reply_id, "text": text})


def reply_payload(reply_id: str, text: str, status: str) -> bytes:
    return dumps({"id": reply_id, "text": text, "status": status})


def error_payload(
    code: str, message: str, source: str | None, *, site: str | None = None, unsited: bool = False
) -> bytes:
    """An error on a site's error topic, or (unsited) on chinwag/error, naming the site."""
    body: dict[str, Any] = {"code": code, "message": message, "source": source}
    if unsited:
        body["site"] = site
    return dumps(body)


def hermes_tts_error_payload(exc: HermesSayError) -> bytes:
    return dumps(
        {
            "error": exc.message,
            "context": exc.code.value,
            "siteId": exc.site,
            "sessionId": exc.session_id,
        }
    )


def say_finished_payload(say_id: str | None, session_id: str | None) -> bytes:
    return dumps({"id": say_id, "sessionId": session_id})


def text_captured_payload(transcript: proto.Transcript, site: str, session_id: str) -> bytes:
    return dumps(
        {
            "text": transcript.text.strip(),
            "likelihood": 1.0,  # Whisper gives no utterance confidence
            "seconds": round(transcript.transcribe_ms / 1000, 3),
            "siteId": site,
            "sessionId": session_id,
            "wakewordId": None,
        }
    )


def hotword_detected_payload(event: proto.WakeDetected, site: str, session_id: str) -> bytes:
    """Rhasspy Hermes' HotwordDetected (hermes/hotword/<wakewordId>/detected)."""
    return dumps(
        {
            "modelId": event.wake_word_id,
            "modelVersion": "",
            "modelType": "universal",  # openWakeWord's models are not trained per speaker
            "currentSensitivity": event.probability,
            "siteId": site,
            "sessionId": session_id,
            "sendAudioCaptured": None,
            "lang": None,
            "customEntities": None,
        }
    )


def hermes_intent_topic(intent: proto.Intent) -> str:
    return f"{HERMES_INTENT}/{intent.name}"


def _slot_entity(name: str) -> str:
    """Hermes names each slot's entity (its list of values): ours are the template's lists."""
    return {"name": "device", "area": "area", "floor": "floor", "domain": "domain"}.get(name, name)


def hermes_intent_payload(intent: proto.Intent, session_id: str) -> bytes:
    """Rhasspy Hermes' NLU intent message (hermes/intent/<intentName>)."""
    slots = []
    for slot in intent.slots:
        number = isinstance(slot.value, int | float) and not isinstance(slot.value, bool)
        slots.append(
            {
                "entity": _slot_entity(slot.name),
                "slotName": slot.name,
                "rawValue": slot.text or str(slot.value),
                "value": {"kind": "Number" if number else "Custom", "value": slot.value},
                "confidence": 1.0,
            }
        )
    # The devices the command is for, as slots automations can read (`entity_id`).
    for target in intent.targets:
        slots.append(
            {
                "entity": target.domain,
                "slotName": "entity_id",
                "rawValue": target.name,
                "value": {"kind": "Custom", "value": target.entity_id},
                "confidence": 1.0,
            }
        )
    return dumps(
        {
            "input": intent.text.strip(),
            "rawInput": intent.text.strip(),
            "intent": {"intentName": intent.name, "confidenceScore": intent.confidence},
            "slots": slots,
            "siteId": intent.site,
            "sessionId": session_id,
            "customData": None,
            "asrTokens": [],
            "asrConfidence": None,
            "wakewordId": None,
            "lang": "en",
        }
    )


def intent_payload(intent: proto.Intent, session_id: str) -> bytes:
    """chinwag/<site>/intent: the intent with its devices resolved, one object."""
    return dumps(
        {
            "intent": intent.name,
            "text": intent.text.strip(),
            "site": intent.site,
            "session_id": session_id,
            "reply_id": intent.reply_id,
            "slots": {slot.name: slot.value for slot in intent.slots},
            "targets": [target.model_dump() for target in intent.targets],
            "area": intent.area,
            "handled_by": intent.handled_by,
            "speech": intent.speech,
            "confidence": intent.confidence,
        }
    )


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()
