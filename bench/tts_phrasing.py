"""How the reply's first phrase is cut and whether Piper streams its decoder: time to the
first audio and what Whisper hears, side by side in one process.

For each configuration, every answer is cut into phrases by chinwag's splitter (as a reply or
a Wyoming stream is), each phrase is synthesized on its own as the server does, and:

- first audio: time from asking for the first phrase to its first chunk of audio (the voice
  in this process, no network), median over answers and repetitions, and the process's CPU
  time until then (onnxruntime's threads included; it moves less with the machine's load);
- word error rate: the phrases' audio, joined, resampled to 16 kHz and transcribed by Whisper
  (tiny.en, beam 5) against the answer, over all answers and repetitions (VITS draws noise,
  so each repetition sounds a little different).

Configurations (interleaved answer by answer):

- `phrase`: the shipped cut (2 to 4 words, before a phrase opener), Piper whole;
- `phrase+stream`: the same cut, Piper's decoder streamed ([tts] stream_decoder);
- `sentence+stream`: the first phrase is the first clause or sentence
  (first_phrase_max_words = 0, no prosodic cut), decoder streamed.

    python -m bench.tts_phrasing [--repeats 3]

Prints a table and writes bench/results-tts-phrasing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import jiwer
import numpy as np
import soxr

from bench.common import BENCH_DIR, hardware, median
from bench.wyoming_latency import TEXTS
from server.config import TtsSettings, load_settings
from server.engines.faster_whisper import WhisperTranscriber
from server.engines.piper import PiperSynthesizer
from server.intents.number_doubt import spelled

RESULTS = BENCH_DIR / "results-tts-phrasing.json"
# The Wyoming benchmark's answers and typical replies of the assistant.
ANSWERS = [
    *TEXTS,
    "Turned on the kitchen light.",
    "Paris is the capital of France.",
    "Sure, I have set an alarm for seven tomorrow morning.",
    "The weather in London is mild, with rain in the afternoon.",
    "I'm sorry, I don't know the answer to that question.",
    "The front door is locked and the garage door is closed.",
    "Playing some relaxing music in the living room.",
]


@dataclass(frozen=True)
class Config:
    name: str
    stream_decoder: bool
    tts: TtsSettings


def words(text: str) -> str:
    # Whisper writes "21" where the answer says "twenty one".
    text = re.sub(r"\b\d{1,2}\b", lambda m: spelled(int(m.group())), text.lower())
    return " ".join(re.sub(r"[^\w\s']", " ", text).split())


def phrases_of(tts: TtsSettings, text: str) -> list[str]:
    splitter = tts.phrase_splitter()
    return [*splitter.feed(text), *splitter.flush()]


def speak(voice: PiperSynthesizer, phrases: list[str]) -> tuple[float, float, np.ndarray]:
    """(seconds to the first chunk, CPU seconds of this process until then, all the audio).
    The CPU time (onnxruntime's threads included) moves less with the machine's load."""
    began, cpu = time.perf_counter(), time.process_time()
    first: tuple[float, float] | None = None
    chunks = []
    for phrase in phrases:
        for chunk in voice.synthesize(phrase):
            if first is None:
                first = (time.perf_counter() - began, time.process_time() - cpu)
            chunks.append(chunk)
    assert first is not None
    return *first, np.concatenate(chunks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    settings = load_settings(environ={})
    base = settings.tts
    sentence = base.model_copy(
        update={"first_phrase_max_words": 0, "first_phrase_prosodic_cut": False}
    )
    configs = [
        Config("phrase", False, base),
        Config("phrase+stream", True, base),
        Config("sentence+stream", True, sentence),
    ]
    voices = {
        flag: PiperSynthesizer(base.voice_path, stream_decoder=flag) for flag in (False, True)
    }
    for voice in voices.values():
        voice.warm_up()
    whisper = WhisperTranscriber(settings.asr.model_path, beam_size=5)
    load_start = os.getloadavg()
    firsts: dict[str, list[float]] = {c.name: [] for c in configs}
    first_cpus: dict[str, list[float]] = {c.name: [] for c in configs}
    heard: dict[str, list[str]] = {c.name: [] for c in configs}
    references: list[str] = []
    first_phrases: dict[str, list[str]] = {c.name: [] for c in configs}
    for repeat in range(args.repeats):
        for index, answer in enumerate(ANSWERS):
            references.append(words(answer))
            order = configs[(index + repeat) % 3 :] + configs[: (index + repeat) % 3]
            for config in order:
                phrases = phrases_of(config.tts, answer)
                if repeat == 0:
                    first_phrases[config.name].append(phrases[0])
                voice = voices[config.stream_decoder]
                first, first_cpu, pcm = speak(voice, phrases)
                firsts[config.name].append(first)
                first_cpus[config.name].append(first_cpu)
                audio = soxr.resample(pcm.astype(np.float32) / 32768, voice.sample_rate, 16000)
                heard[config.name].append(words(whisper.transcribe(audio.astype(np.float32)).text))
    figures: dict[str, Any] = {}
    print(f"{'configuration':18} {'first audio p50':>16} {'its CPU time p50':>17} {'WER':>7}")
    for config in configs:
        error = jiwer.wer(references, heard[config.name])
        figures[config.name] = {
            "first_audio_ms": round(median(firsts[config.name]) * 1000, 1),
            "first_audio_cpu_ms": round(median(first_cpus[config.name]) * 1000, 1),
            "wer": round(error, 4),
            "first_phrases": first_phrases[config.name],
            "heard": heard[config.name][: len(ANSWERS)],
        }
        row = figures[config.name]
        print(
            f"{config.name:18} {row['first_audio_ms']:>14.1f}ms"
            f" {row['first_audio_cpu_ms']:>15.1f}ms {error:>7.1%}"
        )
    result = {
        "hardware": hardware(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "repeats": args.repeats,
        "answers": ANSWERS,
        "stream_gain": voices[True].stream_gain,
        "figures": figures,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
