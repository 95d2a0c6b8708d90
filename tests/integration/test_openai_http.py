"""OpenAI-compatible HTTP with the official `openai` SDK as the client, against a real server
on 127.0.0.1:0 with the real models: chat (streamed and not, stop, usage, personas),
transcription of human recordings in many formats, and speech synthesized then transcribed
back by the real Whisper."""

from __future__ import annotations

import asyncio
import io
import re
import wave
from collections.abc import AsyncIterator

import aiohttp
import av
import numpy as np
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from server.engines.base import ChatMessage
from server.pipeline.honesty import claims_action
from tests.conftest import RunningServer
from tests.speech import normalise, recording, wer

# Real models and servers started per test: minutes on 2 cores, so CI runs them in test-slow.
pytestmark = [pytest.mark.models, pytest.mark.slow]

QUESTION = "What is the capital of France? Answer in one short sentence."


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=server.http + "/v1", api_key="unused", max_retries=0, timeout=300
    ) as api:
        yield api


def prompt_tokens(server: RunningServer, system: str, user: str) -> int:
    assert server.app.chat is not None
    return server.app.chat.model.count_prompt_tokens(
        [ChatMessage("system", system), ChatMessage("user", user)]
    )


async def test_chat_not_streamed(server: RunningServer, client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=40,
        temperature=0,
    )
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "assistant"
    assert choice.message.role == "assistant"
    assert "paris" in (choice.message.content or "").lower()
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    persona = server.app.personas.get("assistant")
    assert reply.usage.prompt_tokens == prompt_tokens(server, persona.system_prompt, QUESTION)
    assert 0 < reply.usage.completion_tokens <= 40
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_chat_streamed_with_usage(server: RunningServer, client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": QUESTION}],
        max_completion_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas: list[str] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            deltas.append(chunk.choices[0].delta.content or "")
            if chunk.choices[0].finish_reason:
                finish.append(chunk.choices[0].finish_reason)
        else:
            usage = chunk.usage
    text = "".join(deltas)
    assert len([d for d in deltas if d]) >= 2, "the reply streams in several deltas"
    assert "paris" in text.lower()
    assert finish == ["stop"]
    assert usage is not None and usage.completion_tokens >= len([d for d in deltas if d]) - 1
    assert usage.prompt_tokens > 0


async def test_max_tokens_ends_with_length(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequences_cut_the_reply(client: openai.AsyncOpenAI, stream: bool) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Count from 1 to 10 in digits, separated by commas."}
    ]
    create = client.chat.completions.create
    full = await create(model="assistant", messages=messages, temperature=0, max_tokens=60)
    whole = full.choices[0].message.content or ""
    assert "4" in whole and "7" in whole, whole
    if stream:
        chunks = await create(
            model="assistant",
            messages=messages,
            temperature=0,
            max_tokens=60,
            stop=["5"],
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    else:
        cut = await create(
            model="assistant", messages=messages, temperature=0, max_tokens=60, stop=["5"]
        )
        text = cut.choices[0].message.content or ""
        assert cut.choices[0].finish_reason == "stop"
    # The same (seeded, temperature 0) reply, up to the stop sequence and without it.
    assert "5" not in text and "4" in text
    assert whole.startswith(text)


async def test_persona_as_model_and_caller_system_message(
    server: RunningServer, client: openai.AsyncOpenAI
) -> None:
    question = "Who are you?"
    for name in ("receptionist", "smart_home"):
        reply = await client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": question}], max_tokens=3
        )
        persona = server.app.personas.get(name)
        assert reply.model == name
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == prompt_tokens(server, persona.system_prompt, question)
    system = "You are a pirate. Answer like a pirate."
    reply = await client.chat.completions.create(
        model="chinwag",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=3,
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt_tokens(server, system, question)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_persona_plans_its_answer_over_http_as_on_every_way_in(
    server: RunningServer, client: openai.AsyncOpenAI, stream: bool
) -> None:
    """The receptionist's venue facts, its honest "I don't know" and its refusal to claim an
    action come over HTTP as over the native protocol (tests/integration/test_site_knowledge.py):
    said word for word from the plan, not generated; their usage is counted with the model's
    tokenizer as a generated reply's is (the prompt the model would have read, the text said)."""
    assert server.app.chat is not None
    model = server.app.chat.model
    persona = server.app.personas.get("receptionist")

    async def ask(question: str) -> str:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": question}]
        create = client.chat.completions.create
        if stream:
            chunks = await create(
                model="receptionist",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts: list[str] = []
            usage = None
            async for chunk in chunks:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                else:
                    usage = chunk.usage
            text = "".join(parts)
        else:
            reply = await create(model="receptionist", messages=messages)
            assert reply.choices[0].finish_reason == "stop"
            text = reply.choices[0].message.content or ""
            usage = reply.usage
        assert usage is not None
        assert usage.prompt_tokens == prompt_tokens(server, persona.system_prompt, question)
        assert usage.completion_tokens == model.count_text_tokens(text) > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        return text

    assert "9 am to 5 pm" in await ask("What time do you open on Saturday?")
    unknown = await ask("Is there a swimming pool in the building?")
    assert "don't know" in unknown and "01632 960 412" in unknown
    command = await ask("Turn off the lights in the main hall.")
    assert "can't" in command and not claims_action(command)


async def test_disconnect_mid_stream_frees_the_model(server: RunningServer) -> None:
    runner = server.app.chat
    assert runner is not None
    body = {
        "model": "assistant",
        "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        "max_tokens": 1000,
        "stream": True,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.http + "/v1/chat/completions", json=body) as response,
    ):
        assert response.headers["Server"] == "chinwag"
        async for line in response.content:
            if b'"content": "' in line and b'"content": ""' not in line:
                break  # the first words: the reply is being generated
        assert runner.busy
    # The client is gone: the reply stops at the model's next token.
    for _ in range(500):
        if not runner.busy:
            break
        await asyncio.sleep(0.02)
    assert not runner.busy


# --- transcription --------------------------------------------------------------------------

# (container, codec, file name): what people upload.
FORMATS = [
    ("mp3", "libmp3lame", "speech.mp3"),
    ("ogg", "libopus", "speech.ogg"),
    ("flac", "flac", "speech.flac"),
    ("webm", "libopus", "speech.webm"),
    ("ipod", "aac", "speech.m4a"),
    ("wav", "pcm_s16le", "speech.wav"),
]


def convert(path: str, container: str, codec: str) -> bytes:
    """A recording re-encoded by PyAV (FFmpeg), at the codec's usual rate."""
    out = io.BytesIO()
    with av.open(path) as source, av.open(out, mode="w", format=container) as target:
        rate = 48000 if codec == "libopus" else 44100
        stream = target.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        for frame in source.decode(audio=0):
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    target.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(("container", "codec", "name"), FORMATS, ids=[f[2] for f in FORMATS])
async def test_transcribes_common_formats(
    client: openai.AsyncOpenAI, container: str, codec: str, name: str
) -> None:
    rec = recording("spk1_snt1.wav")
    data = convert(str(rec.path), container, codec)
    result = await client.audio.transcriptions.create(model="whisper-1", file=(name, data))
    assert wer([rec.text], [result.text]) <= 0.2, result.text


async def test_every_response_format(client: openai.AsyncOpenAI) -> None:
    rec = recording("lj050_0131.wav")
    data = rec.path.read_bytes()
    create = client.audio.transcriptions.create
    plain = await create(model="whisper-1", file=("a.wav", data), response_format="json")
    assert wer([rec.text], [plain.text]) <= 0.2, plain.text
    text = await create(model="whisper-1", file=("a.wav", data), response_format="text")
    assert normalise(text) == normalise(plain.text)
    verbose = await create(
        model="whisper-1",
        file=("a.wav", data),
        response_format="verbose_json",
        language="en",
        prompt="A reading from the Warren Commission report.",
    )
    with wave.open(str(rec.path)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert verbose.language == "english"
    assert abs(verbose.duration - seconds) < 0.05
    assert verbose.segments and wer([rec.text], [verbose.text]) <= 0.2
    assert verbose.segments[0].start >= 0 and verbose.segments[-1].end <= seconds + 0.5
    # The same transcription (no prompt) as segments, subtitles and captions.
    plain_verbose = await create(
        model="whisper-1", file=("a.wav", data), response_format="verbose_json"
    )
    assert plain_verbose.segments is not None
    srt = await create(model="whisper-1", file=("a.wav", data), response_format="srt")
    cues = re.findall(r"(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)\n", srt)
    assert [int(c[0]) for c in cues] == list(range(1, len(plain_verbose.segments) + 1))
    assert [c[3] for c in cues] == [s.text for s in plain_verbose.segments]
    first = plain_verbose.segments[0]
    assert cues[0][1] == f"00:00:{first.start:06.3f}".replace(".", ",")
    vtt = await create(model="whisper-1", file=("a.wav", data), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    times = re.findall(r"(\d\d:\d\d:\d\d\.\d\d\d) --> (\d\d:\d\d:\d\d\.\d\d\d)", vtt)
    assert [(a.replace(".", ","), b.replace(".", ",")) for a, b in times] == [
        (c[1], c[2]) for c in cues
    ]


# --- speech ---------------------------------------------------------------------------------

SENTENCE = "The quick brown fox jumps over the lazy dog. Then it runs into the forest."


def pcm_to_wav(pcm: bytes, rate: int = 24000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def duration_s(data: bytes) -> float:
    with av.open(io.BytesIO(data), mode="r") as container:
        samples: int = sum(frame.samples for frame in container.decode(audio=0))
        return samples / container.streams.audio[0].rate


@pytest.mark.parametrize("response_format", ["wav", "pcm", "mp3", "opus", "flac", "aac"])
async def test_speech_round_trip(client: openai.AsyncOpenAI, response_format: str) -> None:
    speech = await client.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=SENTENCE,
        response_format=response_format,  # type: ignore[arg-type]
    )
    audio = speech.read()
    if response_format == "pcm":
        assert len(audio) % 2 == 0
        audio = pcm_to_wav(audio)
    assert 2.0 < duration_s(audio) < 10.0
    heard = await client.audio.transcriptions.create(
        model="whisper-1", file=(f"speech.{response_format}", audio)
    )
    assert wer([SENTENCE], [heard.text]) <= 0.2, heard.text


async def test_speech_speed(client: openai.AsyncOpenAI) -> None:
    async def seconds(speed: float) -> float:
        speech = await client.audio.speech.create(
            model="tts-1", voice="alloy", input=SENTENCE, response_format="pcm", speed=speed
        )
        return len(speech.read()) / 2 / 24000

    normal, fast = await seconds(1.0), await seconds(2.0)
    assert fast < normal * 0.7
    assert np.isfinite(normal)
