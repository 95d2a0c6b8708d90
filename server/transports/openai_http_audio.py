"""POST /v1/audio/transcriptions and /v1/audio/speech (transports/openai_http.py routes them
here): an uploaded file decoded and transcribed on the background Whisper worker; text
synthesized on the TTS worker phrase by phrase, each phrase encoded and sent as it comes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from server.app import App
from server.audio.codecs import (
    OUTPUT_FORMATS,
    OUTPUT_RATE,
    AudioDecodeError,
    AudioTooLong,
    SpeechEncoder,
    decode_audio,
)
from server.audio.pcm import StreamResampler
from server.errors import ErrorCode
from server.pipeline.speech import SpeechRunner
from server.pipeline.text_split import PhraseSplitter, speakable
from server.protocol import openai_http as oa
from server.protocol import openai_http_audio as oa_audio
from server.transports.openai_http_requests import (
    STREAMING,
    read_body,
    speech_runner,
    too_large,
)


async def transcriptions(app: App, request: web.Request) -> web.Response:
    http = app.settings.http
    if request.content_length is not None and request.content_length > http.max_upload_bytes:
        raise too_large(http.max_upload_bytes)
    if request.content_type != "multipart/form-data":
        raise oa.invalid("send the audio as multipart/form-data with a `file` field", "file")
    fields, data = await _read_form(request, http.max_upload_bytes)
    options = oa_audio.parse_transcription_fields(fields)
    if data is None:
        raise oa.invalid("file is required", "file")
    speech = speech_runner(app)
    try:
        audio = await asyncio.to_thread(
            decode_audio, data, speech.transcriber.sample_rate, http.max_audio_s
        )
    except AudioDecodeError as exc:
        raise oa.OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.INVALID_AUDIO_FORMAT,
            f"the file is not audio this server can decode ({exc})",
            param="file",
        ) from None
    except AudioTooLong as exc:
        raise oa.OpenAIError(
            HTTPStatus.BAD_REQUEST,
            ErrorCode.AUDIO_TOO_LONG,
            f"{exc}; set [http] max_audio_s for longer files",
            param="file",
        ) from None
    result = await speech.transcribe_file(audio, language=options.language, prompt=options.prompt)
    content_type, body = oa_audio.transcription_body(
        options.response_format, result.language, result.duration_s, result.segments
    )
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _read_form(request: web.Request, limit: int) -> tuple[dict[str, str], bytes | None]:
    """The form's text fields and its `file`, each bounded; other files are refused."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise oa.invalid(f"the multipart body cannot be read ({exc})", "file") from None
    fields: dict[str, str] = {}
    data: bytes | None = None
    total = 0
    while True:
        try:
            part = await reader.next()
        except (ValueError, AssertionError, RuntimeError) as exc:
            raise oa.invalid(f"the multipart body cannot be read ({exc})", "file") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise oa.invalid("nested multipart bodies are not accepted", "file")
        name = part.name or ""
        cap = limit if name == "file" else oa_audio.MAX_FIELD_BYTES
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(64 * 1024):
            size += len(chunk)
            total += len(chunk)
            if size > cap or total > limit + oa_audio.MAX_FIELD_BYTES * 8:
                if name == "file":
                    raise too_large(limit)
                raise oa.invalid(f"form field {name[:40]!r} is too long", name[:40] or None)
            chunks.append(chunk)
        value = b"".join(chunks)
        if name == "file":
            data = value
        elif name:
            fields[name] = value.decode("utf-8", "replace")
    return fields, data


async def speech(app: App, request: web.Request) -> web.StreamResponse:
    settings = app.settings
    body = await read_body(request, settings.http.max_body_bytes)
    speech = speech_runner(app)
    voice_name = settings.tts.voice_path.name.removesuffix(".onnx")
    speech_request = oa_audio.parse_speech_request(
        body, settings.limits.max_text_chars, {voice_name, "default"}
    )
    if speech_request.speed != 1.0 and not speech.paced:
        raise oa.invalid("this server's voice speaks only at its own speed (1.0)", "speed")
    text = speakable(speech_request.input)
    splitter = PhraseSplitter()
    phrases = [*splitter.feed(text), *splitter.flush()]
    response = web.StreamResponse(
        headers={
            "Content-Type": OUTPUT_FORMATS[speech_request.response_format].content_type,
            "Cache-Control": "no-store",
            "X-Sample-Rate": str(OUTPUT_RATE),
        }
    )
    response.enable_chunked_encoding()
    encoder = SpeechEncoder(speech_request.response_format)
    resampler = StreamResampler(speech.synthesizer.sample_rate, OUTPUT_RATE, np.int16)
    try:
        async for pcm in _synthesized(speech, phrases, speech_request.speed):
            data = await asyncio.to_thread(encoder.encode, resampler.process(pcm))
            if not response.prepared:
                await response.prepare(request)
                request[STREAMING] = True
            if data:
                await response.write(data)
        tail = resampler.flush()
        data = await asyncio.to_thread(lambda: encoder.encode(tail) + encoder.finish())
        if not response.prepared:
            await response.prepare(request)
        await response.write(data)
        await response.write_eof()
    finally:
        encoder.close()
    return response


async def _synthesized(
    speech: SpeechRunner, phrases: list[str], speed: float
) -> AsyncIterator[np.ndarray[Any, np.dtype[np.int16]]]:
    """Each phrase's audio as soon as it is synthesized; the next phrase is synthesized
    while the last one is encoded and sent."""
    pending: asyncio.Task[np.ndarray[Any, np.dtype[np.int16]]] | None = None
    try:
        for i, phrase in enumerate(phrases):
            current = pending or asyncio.ensure_future(speech.synthesize(phrase, speed=speed))
            pending = (
                asyncio.ensure_future(speech.synthesize(phrases[i + 1], speed=speed))
                if i + 1 < len(phrases)
                else None
            )
            yield await current
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
