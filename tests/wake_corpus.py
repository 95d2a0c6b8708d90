"""An hour (or any length) of speech without wake words, and noise, for false-wake counts.

Made from parts the project ships, so the same audio comes out of the same seed anywhere:

- sentences: an everyday grammar (commands, questions, chat, with names and "hey"/"okay" as
  people say them), the sentences of docs/*.md, the site knowledge of prompts/, and the
  transcripts of tests/data/human; none holds a wake word;
- voices: espeak-ng (Debian) in 12 English voices and variants at 130-190 words a minute, and
  Piper's voice when one is given (about a fifth of the speech);
- the human recordings of tests/data/human, clean and in noise;
- noise: white, pink and brown noise, mains hum, and babble (several voices at once), alone,
  between sentences, and under a third of the speech (5-20 dB SNR).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from clients.talk import read_wav
from server import PROJECT_ROOT
from server.audio.pcm import float32_to_int16
from tests.speech import espeak_16k, recordings, to_16k_float

RATE = 16_000
WAKE_LIKE = re.compile(r"jarvis|alexa|nabu|mycroft|rhasspy", re.IGNORECASE)
ESPEAK_VOICES = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029",
    "en-us+f3", "en-us+m3", "en-gb+f2", "en-us+m7", "en-gb-x-rp+f4", "en-us+klatt",
)  # fmt: skip

_NAMES = (
    "Tom", "Sarah", "Mike", "Anna", "Travis", "Alex", "Emma", "Jim", "Lucy", "Max", "Nina",
    "Oscar", "Harvey", "Sam",
)  # fmt: skip
_THINGS = (
    "the kitchen light", "the heating", "the radio", "the oven", "the garage door",
    "the dishwasher", "the fan", "the porch light", "the television", "the kettle",
    "the blinds", "the music", "the alarm", "the coffee machine", "the washing machine",
)  # fmt: skip
_PLACES = (
    "the garden", "the station", "the library", "the market", "town", "the office",
    "the beach", "the school", "the doctor's", "the cinema", "the park", "grandma's",
)  # fmt: skip
_TIMES = (
    "tomorrow morning", "tonight", "at seven", "after lunch", "on Friday", "next week",
    "in ten minutes", "this afternoon", "before dinner", "at half past six",
)  # fmt: skip
_TOPICS = (
    "the weather", "the football", "the news", "dinner", "the holiday", "the new neighbours",
    "the car", "the garden party", "the price of bread", "the train strike", "the film",
)  # fmt: skip
_TEMPLATES = (
    "turn on {thing}", "turn off {thing} please", "could you switch off {thing}",
    "is {thing} still on", "what time is it", "set a timer for {n} minutes",
    "what's the weather like {time}", "remind me to call {name} {time}",
    "hey {name}, are you coming to {place} {time}", "okay, I'll meet you at {place}",
    "{name}, did you hear about {topic}", "I think {topic} was better last year",
    "we should go to {place} {time}", "hey, can you pass me the salt",
    "okay then, let's talk about {topic}", "how long does it take to get to {place}",
    "{name} said {thing} is broken again", "did anyone feed the cat {time}",
    "I'm not sure, ask {name}", "play something relaxing", "what's on the telly {time}",
    "how many minutes are left on the timer", "can you hear me, {name}",
    "let's have {topic} on the agenda {time}", "no, I meant {place}, not {place2}",
    "the bus to {place} leaves {time}", "okay, okay, I'm coming", "hey there, how are you",
    "{name} and {name2} are going to {place} {time}", "open the curtains in the living room",
)  # fmt: skip


def everyday_sentences(rng: np.random.Generator, count: int) -> list[str]:
    """`count` sentences from the everyday grammar."""
    out = []
    for _ in range(count):
        names = rng.choice(_NAMES, 2, replace=False)
        places = rng.choice(_PLACES, 2, replace=False)
        text = str(rng.choice(_TEMPLATES)).format(
            thing=rng.choice(_THINGS), name=names[0], name2=names[1], place=places[0],
            place2=places[1], time=rng.choice(_TIMES), topic=rng.choice(_TOPICS),
            n=int(rng.integers(2, 40)),
        )  # fmt: skip
        out.append(text[0].upper() + text[1:] + ("?" if text.split()[0] in _QUESTION else "."))
    return out


_QUESTION = {"what", "what's", "is", "could", "how", "can", "did"}


def written_sentences() -> list[str]:
    """Plain sentences of the project's docs, site knowledge and recording transcripts."""
    paths = sorted((PROJECT_ROOT / "docs").glob("*.md")) + sorted(
        (PROJECT_ROOT / "prompts").glob("*/*.md")
    )
    text = " ".join(p.read_text(encoding="utf-8") for p in paths)
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`|\[([^\]]*)\]\([^)]*\)|[|#*]", r" \1 ", text)
    sentences = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text))
    sentences += [r.text for r in recordings()]
    return [
        s
        for s in dict.fromkeys(sentences)
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9 ,;:'()-]{15,200}[.!?]", s)
        and 4 <= len(s.split()) <= 30
        and not WAKE_LIKE.search(s)
    ]


def _level(audio: np.ndarray, rms: float) -> np.ndarray:
    current = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) or 1.0
    return audio.astype(np.float64) * (rms / current)


def noise(rng: np.random.Generator, seconds: float, kind: str, rms: float) -> np.ndarray:
    """Float noise at 16 kHz with the given RMS (in int16 units)."""
    n = max(1, round(seconds * RATE))
    if kind == "hum":
        t = np.arange(n) / RATE
        base = float(rng.choice([50.0, 60.0]))
        wave = np.zeros(n)
        for k in (1, 2, 3, 5):
            wave += np.sin(2 * np.pi * base * k * t) / k
        return _level(wave, rms)
    white = rng.normal(0.0, 1.0, n)
    if kind == "white":
        return _level(white, rms)
    spectrum = np.fft.rfft(white)
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 1.0)
    shaped = spectrum / (np.sqrt(freqs) if kind == "pink" else freqs)
    return _level(np.asarray(np.fft.irfft(shaped, n), dtype=np.float64), rms)


def _clip(audio: np.ndarray) -> np.ndarray:
    clipped: np.ndarray = np.clip(np.rint(audio), -32768, 32767).astype(np.int16)
    return clipped


def non_wake_audio(
    seconds: float,
    *,
    seed: int = 15,
    piper: Callable[[str], np.ndarray] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """(what it is, 16 kHz int16 audio) pieces until `seconds` of audio have been given."""
    rng = np.random.default_rng(seed)
    written = written_sentences()
    humans = [(r.text, read_wav(r.path)) for r in recordings()]
    given = 0.0
    batch = 0

    def speech(texts: list[str]) -> tuple[str, np.ndarray]:
        text = " ".join(texts)
        if piper is not None and batch % 5 == 4:
            return f"piper: {text}", piper(text)
        voice = ESPEAK_VOICES[batch % len(ESPEAK_VOICES)]
        speed = int(rng.integers(130, 191))
        return f"espeak-ng {voice} {speed}: {text}", espeak_16k(text, voice, speed)

    while given < seconds:
        batch += 1
        if batch % 7 == 0:  # noise alone, or babble
            kind = str(rng.choice(["white", "pink", "brown", "hum", "babble"]))
            length = float(rng.uniform(3.0, 8.0))
            if kind == "babble":
                voices = [speech(everyday_sentences(rng, 3))[1] for _ in range(3)]
                size = min(v.size for v in voices)
                audio = _clip(np.sum([v[:size].astype(np.float64) * 0.5 for v in voices], axis=0))
            else:
                audio = _clip(noise(rng, length, kind, float(rng.uniform(300, 3000))))
            piece = (f"noise: {kind}", audio)
        elif batch % 11 == 0:  # a human recording, clean or in noise
            text, (pcm, rate) = humans[(batch // 11) % len(humans)]
            audio16 = float32_to_int16(to_16k_float(pcm, rate))
            if (batch // 11) % 2:
                room = noise(rng, audio16.size / RATE, "pink", float(np.std(audio16)) / 4)
                audio16 = _clip(audio16.astype(np.float64) + room[: audio16.size])
            piece = (f"human: {text}", audio16)
        else:
            texts = everyday_sentences(rng, int(rng.integers(3, 8)))
            texts += list(rng.choice(written, int(rng.integers(1, 4)), replace=False))
            rng.shuffle(texts)
            label, audio = speech([str(t) for t in texts])
            gain = float(rng.uniform(0.3, 1.0))
            mixed = audio.astype(np.float64) * gain
            if rng.random() < 0.33:  # in noise, 5-20 dB under the speech
                snr_db = float(rng.uniform(5.0, 20.0))
                rms = float(np.std(mixed)) / 10 ** (snr_db / 20)
                kind = str(rng.choice(["white", "pink", "brown", "hum"]))
                mixed += noise(rng, mixed.size / RATE, kind, rms)[: mixed.size]
                label += f" (+{kind} noise, {snr_db:.0f} dB SNR)"
            piece = (label, _clip(mixed))
        gap = _clip(noise(rng, float(rng.uniform(0.3, 1.5)), "pink", float(rng.uniform(5, 60))))
        for part in (piece, ("room tone", gap)):
            given += part[1].size / RATE
            yield part


def corpus_sources() -> list[Path]:
    """The files the sentences come from (for the report)."""
    return sorted((PROJECT_ROOT / "docs").glob("*.md")) + sorted(
        (PROJECT_ROOT / "prompts").glob("*/*.md")
    )
