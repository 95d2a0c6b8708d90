"""How precisely the VAD counts silence: the release (end of the voice -> the first window the
VAD counts as silent) at the end of the voice set's turns, and the silence it counts for the
pause corpus's 300 and 400 ms pauses, clean and under the voice set's room noise.

The turn ends a fixed count of silent windows after the release, and a pause ends the turn
when its counted silence reaches that count; so a VAD rule can end turns sooner without
cutting more pauses only if it narrows the spread between the true pause and the counted one.
Variants (no Whisper here, the VAD alone; bench/pause_cuts.py scores the kept one with the
transcripts):

- today: Silero, a window under the negative threshold (0.35) is silent;
- onset rule: today plus VadConfig.onset_rise_db = 10 (a window 10 dB over the pause so far
  ends the pause), through the real TurnDetector;
- negative threshold 0.5;
- energy release: a window Silero is unsure of (p < 0.8) that is 35 or 40 dB below the turn's
  loudest voiced window is silent as well.

Prints a table and writes bench/results-vad-release.json.
"""

from __future__ import annotations

import argparse
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.pause_cuts import HELD_OUT_SENTENCES, PAUSE_SENTENCES, pause_items, with_noise
from bench.voice_set import bench_set
from clients.talk import read_wav
from server.audio.pcm import int16_to_float32, resample
from server.audio.vad import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SileroVad,
    SpeechPaused,
    SpeechResumed,
    TurnDetector,
    VadConfig,
)

WINDOW_MS = WINDOW_SAMPLES * 1000 / SAMPLE_RATE
Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (audio, p, rms) -> silent


def by_probability(below: float) -> Mask:
    return lambda audio, p, rms: p < below


def energy_release(db: float, unsure_below: float = 0.8) -> Mask:
    def mask(audio: np.ndarray, p: np.ndarray, rms: np.ndarray) -> np.ndarray:
        silent = p < 0.35
        loudest = np.maximum.accumulate(np.where(p >= 0.5, rms, 0.0))
        quiet = (p < unsure_below) & (loudest > 0) & (rms < loudest * 10 ** (-db / 20))
        result: np.ndarray = silent | quiet
        return result

    return mask


def onset_rule(rise_db: float) -> Mask:
    """Silent windows as the server's TurnDetector counts them with the onset rule (inside a
    turn; outside one, Silero's)."""

    def mask(audio: np.ndarray, p: np.ndarray, rms: np.ndarray) -> np.ndarray:
        detector = TurnDetector(
            VadConfig(silence_ms=10_000, report_pauses=True, onset_rise_db=rise_db)
        )
        silent = p < 0.35
        paused_at: int | None = None
        for k, probability in enumerate(p.tolist()):
            window = audio[k * WINDOW_SAMPLES : (k + 1) * WINDOW_SAMPLES]
            for event in detector.feed(window, probability):
                if isinstance(event, SpeechPaused):
                    paused_at = k
                elif isinstance(event, SpeechResumed) and paused_at is not None:
                    # The pause ended where the onset was heard, maybe a few windows back.
                    resumed = round(event.at_s * SAMPLE_RATE / WINDOW_SAMPLES)
                    silent[paused_at:resumed] = True
                    silent[resumed : k + 1] = False
                    paused_at = None
            if detector.in_speech and paused_at is None:
                silent[k] = False  # a window Silero calls silent that the rule took as speech
        return silent

    return mask


VARIANTS: dict[str, Mask] = {
    "today (negative threshold 0.35)": by_probability(0.35),
    "onset rule 10 dB": onset_rule(10.0),
    "negative threshold 0.5": by_probability(0.5),
    "energy release 40 dB (p < 0.8)": energy_release(40.0),
    "energy release 35 dB (p < 0.8)": energy_release(35.0),
}


def windows(vad: SileroVad, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    audio = np.concatenate([audio, np.zeros(SAMPLE_RATE, dtype=np.float32)])
    count = audio.size // WINDOW_SAMPLES
    audio = audio[: count * WINDOW_SAMPLES]
    p = vad.new_stream().probabilities(audio)
    rms = np.sqrt(np.mean(audio.reshape(count, WINDOW_SAMPLES).astype(np.float64) ** 2, axis=1))
    return audio, p, rms


def counted_ms(silent: np.ndarray, start_s: float, end_s: float) -> float:
    """The silence counted over a pause: the run of silent windows around its middle."""
    middle = int((start_s + end_s) / 2 * 1000 / WINDOW_MS)
    if not silent[middle]:
        return 0.0
    first, last = middle, middle
    while first > 0 and silent[first - 1]:
        first -= 1
    while last < silent.size and silent[last]:
        last += 1
    return (last - first) * WINDOW_MS


def release_ms(silent: np.ndarray, speech_end_s: float) -> float:
    """End of the voice -> the first window of the silence that ends the recording."""
    k = silent.size
    while k > 0 and silent[k - 1]:
        k -= 1
    return k * WINDOW_MS - speech_end_s * 1000


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(median(values), 1),
        "p95": round(percentile(values, 95), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-vad-release.json")
    args = parser.parse_args()
    vad = SileroVad.load()
    releases: dict[str, dict[str, list[float]]] = {name: {} for name in VARIANTS}
    for item in bench_set():
        pcm, rate = read_wav(item.path)
        audio, p, rms = windows(vad, resample(int16_to_float32(pcm), rate, SAMPLE_RATE))
        family = item.family + (" under noise" if item.noise_snr_db is not None else "")
        for name, mask in VARIANTS.items():
            value = release_ms(mask(audio, p, rms), item.speech_end_s)
            releases[name].setdefault(family, []).append(value)
            releases[name].setdefault("all", []).append(value)
    pauses: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in VARIANTS}
    for set_name, sentences in (("corpus", PAUSE_SENTENCES), ("held-out", HELD_OUT_SENTENCES)):
        for snr in (None, 25.0, 15.0):
            label = set_name + ("" if snr is None else f" {snr:.0f} dB")
            counts: dict[str, dict[int, list[float]]] = {name: {} for name in VARIANTS}
            for pause in pause_items(sentences=sentences):
                if pause.pause_ms not in (300, 400):
                    continue
                pcm, _ = read_wav(pause.path)
                if snr is not None:
                    pcm = with_noise(pcm, snr, zlib.crc32(pause.path.name.encode()))
                audio, p, rms = windows(vad, int16_to_float32(pcm))
                for name, mask in VARIANTS.items():
                    value = counted_ms(mask(audio, p, rms), pause.pause_start_s, pause.pause_end_s)
                    counts[name].setdefault(pause.pause_ms, []).append(value)
            for name in VARIANTS:
                c300 = np.array(counts[name][300])
                c400 = np.array(counts[name][400])
                pauses[name][label] = {
                    "300 ms: counted max": float(c300.max()),
                    "300 ms: counted >= 320 ms": int((c300 >= 320).sum()),
                    "300 ms: counted >= 352 ms": int((c300 >= 352).sum()),
                    "400 ms: counted >= 320 ms": int((c400 >= 320).sum()),
                    "pauses": len(c300),
                }
    result: dict[str, Any] = {
        "benchmark": "vad_release",
        "hardware": hardware(),
        "release_ms": {
            name: {family: summary(v) for family, v in fams.items()}
            for name, fams in releases.items()
        },
        "pause_counts": pauses,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    families = list(next(iter(releases.values())))
    print("release, end of voice -> first silent window, ms (p50 / p95 / max)")
    print(f"{'variant':<32}" + "".join(f"{f:>22}" for f in families))
    for name, fams in result["release_ms"].items():
        cells = [f"{s['p50']:.0f} / {s['p95']:.0f} / {s['max']:.0f}" for s in fams.values()]
        print(f"{name:<32}" + "".join(f"{cell:>22}" for cell in cells))
    print("300 ms pauses counted as >= 320 ms / >= 352 ms (of 60), max counted")
    labels = list(next(iter(pauses.values())))
    print(f"{'variant':<32}" + "".join(f"{label:>18}" for label in labels))
    for name, sets in pauses.items():
        cells = [
            f"{s['300 ms: counted >= 320 ms']}/{s['300 ms: counted >= 352 ms']} "
            f"{s['300 ms: counted max']:.0f}"
            for s in sets.values()
        ]
        print(f"{name:<32}" + "".join(f"{cell:>18}" for cell in cells))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
