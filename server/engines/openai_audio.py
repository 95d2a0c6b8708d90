"""Speech engines on an OpenAI-compatible server (`[asr] backend = "openai"`,
`[tts] backend = "openai"`): `POST /v1/audio/transcriptions` and `POST /v1/audio/speech`, so a
small box sends its heavy stages to a bigger one (another chinwag, faster-whisper-server,
an OpenAI-compatible TTS server).

Both are blocking like every engine and run on SpeechRunner's worker threads; the requests
run on the RemoteClient's own thread (remote.py).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Iterator
from typing import Any, Literal

import aiohttp
import numpy as np

from server.audio.pcm import StreamResampler
from server.audio.wav_stream import AudioStreamError, Pcm16Decoder, WavDecoder, wav_bytes
from server.engines.base import (
    Float32Audio,
    Int16Audio,
    RemoteFailure,
    Transcript,
    UnsupportedAudio,
)
from server.engines.remote import RemoteClient, read_json
from server.errors import ErrorCode

log = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16_000
_MIN_SAMPLES = ASR_SAMPLE_RATE // 10  # shorter than this is not an utterance (as locally)
# One phrase's audio from the TTS server, at most (a phrase is a sentence or less).
MAX_PHRASE_AUDIO_S = 120.0


def transcript_from_answer(answer: Any, audio_s: float, language: str | None) -> Transcript:
    """A Transcript from a transcription response: `json` ({"text"}) or `verbose_json`,
    whose segments carry Whisper's confidence (used to refuse transcripts of noise); without
    them the transcript counts as speech unless it is empty."""
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        raise RemoteFailure(ErrorCode.REMOTE_ERROR, "the transcription has no text")
    text = " ".join(answer["text"].split())
    said = answer.get("language")
    segments = [s for s in answer.get("segments") or [] if isinstance(s, dict)]
    no_speech = [s["no_speech_prob"] for s in segments if _number(s.get("no_speech_prob"))]
    logprobs = [s["avg_logprob"] for s in segments if _number(s.get("avg_logprob"))]
    return Transcript(
        text=text,
        # verbose_json names the language in full ("english"); keep a code if we were given one.
        language=language or (said if isinstance(said, str) else "") or "en",
        no_speech_prob=float(min(no_speech)) if no_speech else (0.0 if text else 1.0),
        avg_logprob=float(sum(logprobs) / len(logprobs)) if logprobs else 0.0,
        audio_s=audio_s,
    )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class OpenAITranscriber:
    """`/v1/audio/transcriptions` with a 16 kHz 16-bit WAV; asks for `verbose_json` (Whisper's
    confidence per segment) and falls back to `json` for servers that refuse it."""

    sample_rate = ASR_SAMPLE_RATE

    def __init__(self, client: RemoteClient, *, model: str, language: str | None) -> None:
        self._client = client
        self._model = model
        self._language = language
        self._format: Literal["verbose_json", "json"] = "verbose_json"

    def transcribe(self, audio: Float32Audio, *, prompt: str | None = None) -> Transcript:
        if audio.ndim != 1:
            raise UnsupportedAudio("audio must be mono")
        audio_s = audio.size / ASR_SAMPLE_RATE
        if audio.size < _MIN_SAMPLES:
            return Transcript("", self._language or "en", 1.0, 0.0, audio_s)
        body = wav_bytes(audio, ASR_SAMPLE_RATE)
        try:
            answer = self._client.run(self._post(body, self._format, prompt))
        except RemoteFailure as exc:
            if self._format != "verbose_json" or exc.code != ErrorCode.REMOTE_ERROR:
                raise
            answer = self._client.run(self._post(body, "json", prompt))
            log.info("the ASR server refused verbose_json; asking for json from now on")
            self._format = "json"
        return transcript_from_answer(answer, audio_s, self._language)

    async def _post(self, wav: bytes, response_format: str, prompt: str | None) -> Any:
        form = aiohttp.FormData()
        form.add_field("file", wav, filename="speech.wav", content_type="audio/wav")
        form.add_field("model", self._model)
        form.add_field("response_format", response_format)
        form.add_field("temperature", "0")
        if self._language:
            form.add_field("language", self._language)
        if prompt:
            form.add_field("prompt", prompt)
        client = self._client
        async with client.request(
            "POST", client.url("audio/transcriptions"), data=form
        ) as response:
            return await read_json(response, client.what)

    def close(self) -> None:
        self._client.close()


class OpenAISynthesizer:
    """`/v1/audio/speech`; yields the audio as it arrives, at `sample_rate` (pcm is taken to
    be at that rate, as OpenAI's 24 kHz; a wav at another rate is resampled)."""

    def __init__(
        self,
        client: RemoteClient,
        *,
        model: str,
        voice: str,
        response_format: Literal["pcm", "wav"],
        sample_rate: int,
    ) -> None:
        self._client = client
        self._model = model
        self._voice = voice
        self._format = response_format
        self.sample_rate = sample_rate

    def synthesize(self, text: str) -> Iterator[Int16Audio]:
        text = text.strip()
        if not text:
            return
        # Filled on the client's loop, drained here. Bounded by MAX_PHRASE_AUDIO_S in _fetch.
        arrived: queue.SimpleQueue[Int16Audio | BaseException | None] = queue.SimpleQueue()
        request = self._client.submit(self._fetch(text, arrived))
        try:
            while True:
                try:
                    item = arrived.get(timeout=self._client.timeout_s + 5.0)
                except queue.Empty:
                    raise RemoteFailure(
                        ErrorCode.REMOTE_TIMEOUT, f"{self._client.what} did not answer in time"
                    ) from None
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            request.cancel()  # a phrase dropped part-way (barge-in): close its connection

    async def _fetch(
        self, text: str, arrived: queue.SimpleQueue[Int16Audio | BaseException | None]
    ) -> None:
        client = self._client
        body = {
            "model": self._model,
            "input": text,
            "voice": self._voice,
            "response_format": self._format,
        }
        decoder: WavDecoder | Pcm16Decoder = (
            WavDecoder() if self._format == "wav" else Pcm16Decoder(self.sample_rate)
        )
        resampler: StreamResampler[np.int16] | None = None
        samples = 0
        try:
            async with client.request("POST", client.url("audio/speech"), json=body) as response:
                async for data in response.content.iter_any():
                    audio = decoder.feed(data)
                    if not audio.size:
                        continue
                    rate = decoder.sample_rate or self.sample_rate
                    if resampler is None:
                        resampler = StreamResampler(rate, self.sample_rate, np.int16)
                    samples += audio.size
                    if samples > MAX_PHRASE_AUDIO_S * rate:
                        raise RemoteFailure(
                            ErrorCode.REMOTE_ERROR,
                            f"{client.what} sent over {MAX_PHRASE_AUDIO_S:.0f} s for one phrase",
                        )
                    if (out := resampler.process(audio)).size:
                        arrived.put(out)
            if resampler is not None and (tail := resampler.flush()).size:
                arrived.put(tail)
            arrived.put(None)
        except AudioStreamError as exc:
            arrived.put(RemoteFailure(ErrorCode.REMOTE_ERROR, f"{client.what}: {exc}"))
        except Exception as exc:
            arrived.put(exc)

    def close(self) -> None:
        self._client.close()
