"""The end of the turn under a background that is not stationary: knocks and music with a beat,
mixed under and after the voice set's clean sentences, with the VAD's onset rule on and off.

The onset rule ([vad] onset_rise_db) takes a sudden rise of energy inside a pause for a soft
onset Silero will hear late; a knock or a drum beat is such a rise too. The rule keeps an
onset tentative until Silero hears speech within onset_confirm_ms, and while it is, the turn
does not end; this measures how much later turns end for it (stream time, the real Silero
model, the complete-sentence silence of 350 ms). Prints a table and writes
bench/results-vad-transients.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.voice_set import bench_set
from clients.talk import read_wav
from server.audio.pcm import int16_to_float32, resample
from server.audio.vad import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SileroVad,
    SpeechStopped,
    TurnDetector,
    VadConfig,
)

COMPLETE_MS = 350
AFTER_S = 2.0  # the background goes on after the speech this long


def knocks(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Knocks: 15 ms bursts of decaying noise at random intervals of 150-400 ms."""
    out = np.zeros(samples)
    burst = int(0.015 * SAMPLE_RATE)
    envelope = np.exp(-np.arange(burst) / (burst / 4))
    at = int(rng.uniform(0.05, 0.3) * SAMPLE_RATE)
    while at + burst < samples:
        out[at : at + burst] += rng.standard_normal(burst) * envelope
        at += int(rng.uniform(0.15, 0.4) * SAMPLE_RATE)
    return out


def beat_music(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Music with a beat: a chord (220, 277, 330 Hz), a kick drum every 500 ms (a decaying
    60 Hz tone, 80 ms), a hi-hat every 250 ms (a 10 ms noise burst)."""
    t = np.arange(samples) / SAMPLE_RATE
    pad = 0.2 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    out = np.asarray(pad, dtype=np.float64)
    kick = int(0.08 * SAMPLE_RATE)
    kick_wave = np.sin(2 * np.pi * 60 * np.arange(kick) / SAMPLE_RATE) * np.exp(
        -np.arange(kick) / (kick / 3)
    )
    hat = int(0.01 * SAMPLE_RATE)
    start = int(rng.uniform(0, 0.25) * SAMPLE_RATE)
    for n, at in enumerate(range(start, samples - kick, SAMPLE_RATE // 4)):
        out[at : at + hat] += 0.5 * rng.standard_normal(hat)
        if n % 2 == 0:
            out[at : at + kick] += 2.0 * kick_wave
    return out


BACKGROUNDS = {"knocks": knocks, "music with a beat": beat_music}


def turn_end_ms(
    vad: SileroVad, audio: np.ndarray, speech_end_s: float, onset_rise_db: float | None
) -> float | None:
    """End of speech -> the window at which the turn ended (stream time); None: it never did."""
    count = audio.size // WINDOW_SAMPLES
    audio = audio[: count * WINDOW_SAMPLES].astype(np.float32)
    probabilities = vad.new_stream().probabilities(audio)
    detector = TurnDetector(
        VadConfig(silence_ms=COMPLETE_MS, onset_rise_db=onset_rise_db, max_utterance_s=60.0)
    )
    ends = []
    for k, probability in enumerate(probabilities.tolist()):
        window = audio[k * WINDOW_SAMPLES : (k + 1) * WINDOW_SAMPLES]
        if any(isinstance(e, SpeechStopped) for e in detector.feed(window, probability)):
            ends.append(detector.position_s)
    after = [e for e in ends if e > speech_end_s - 0.1]
    return (after[0] - speech_end_s) * 1000 if after else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-vad-transients.json")
    args = parser.parse_args()
    vad = SileroVad.load()
    items = [i for i in bench_set() if i.noise_snr_db is None]
    rows: dict[str, dict[str, list[float | None]]] = {}
    for name, make in BACKGROUNDS.items():
        for snr in (None, 25.0, 15.0):
            label = "none" if snr is None else f"{name}, {snr:.0f} dB"
            if snr is None and name != "knocks":
                continue
            found: dict[str, list[float | None]] = {"off": [], "on": []}
            for n, item in enumerate(items):
                pcm, rate = read_wav(item.path)
                speech = resample(int16_to_float32(pcm), rate, SAMPLE_RATE).astype(np.float64)
                audio = np.concatenate([speech, np.zeros(int(AFTER_S * SAMPLE_RATE))])
                if snr is not None:
                    voiced = speech[np.abs(speech) > 0.05 * np.abs(speech).max()]
                    level = float(np.sqrt(np.mean(voiced**2))) / 10 ** (snr / 20)
                    background = make(audio.size, np.random.default_rng(7000 + n))
                    audio = audio + level * background / np.sqrt(np.mean(background**2))
                for rule, rise in (("off", None), ("on", 10.0)):
                    found[rule].append(turn_end_ms(vad, audio, item.speech_end_s, rise))
            rows[label] = found
    table: dict[str, Any] = {}
    print(f"end of speech -> end of turn, ms, {len(items)} clean items, onset rule off / on")
    print(f"{'background':<26}{'p50':>14}{'p95':>14}{'max':>14}{'later, max':>12}{'no end':>9}")
    for label, found in rows.items():
        both = [(a, b) for a, b in zip(found["off"], found["on"], strict=True)]
        ended = [(a, b) for a, b in both if a is not None and b is not None]
        off = [a for a, _ in ended]
        on = [b for _, b in ended]
        later = max(b - a for a, b in ended)
        never = sum(a is None or b is None for a, b in both)
        table[label] = {
            "off": {"p50": median(off), "p95": percentile(off, 95), "max": max(off)},
            "on": {"p50": median(on), "p95": percentile(on, 95), "max": max(on)},
            "on_later_than_off_max_ms": later,
            "items_without_an_end": never,
            "turns": found,
        }
        print(
            f"{label:<26}{f'{median(off):.0f} / {median(on):.0f}':>14}"
            f"{f'{percentile(off, 95):.0f} / {percentile(on, 95):.0f}':>14}"
            f"{f'{max(off):.0f} / {max(on):.0f}':>14}{later:>12.0f}{never:>9}"
        )
    result = {"benchmark": "vad_transients", "hardware": hardware(), "results": table}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
