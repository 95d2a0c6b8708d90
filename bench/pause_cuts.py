"""Pauses that wrongly end a turn, and how soon turns end, under each end-of-turn rule.

The pause corpus: sentences cut in two at different places (after a phrase that reads as
complete, "Set a timer | for ten minutes."; after a word that needs more, "Remind me to | buy
some milk."), each half spoken by a Piper or espeak-ng voice, the halves trimmed to their
voiced extent and joined by exactly 250, 300, 400 or 600 ms of silence. Generated into
bench/.cache/pause-set on first use, deterministically (bench/voice_set.py).

Each recording goes through the real Silero VAD in 20 ms frames, with the server's turn-taking
settings, once; every pause it reports is transcribed with the real Whisper (the server's
settings: short window, one thread), as the speculative turn would be, and scored by the
end-of-turn model when one is given, and by the chat model (`--chat-model`: the probability
that the words end a sentence, `LlamaCppChatModel.sentence_end_probability`, with the
default persona's system prompt; measured, not kept). A rule maps a pause
to the silence that ends the turn there; the turn is cut when a pause inside the sentence
lasts (as the VAD counts it) at least that long. The same analysis on the voice benchmark's
set gives, per rule, the time from the end of speech to the end of the turn (no server
needed: it follows from the VAD's windows).

Prints a table and writes bench/results-pauses.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, hardware, median, percentile
from bench.voice_set import (
    CACHE_DIR,
    VOICES,
    Voice,
    espeak_version,
    piper_voice_path,
    room_noise,
    speak,
)
from clients.talk import Pcm, read_wav, write_wav
from server.audio.pcm import int16_to_float32, resample
from server.audio.vad import (
    SAMPLE_RATE,
    SileroVad,
    SpeechPaused,
    SpeechResumed,
    StreamingVad,
    VadConfig,
)
from server.config import Settings, load_settings
from server.engines.base import ChatMessage
from server.pipeline.endpointing import looks_complete

PAUSE_CACHE = CACHE_DIR.parent / "pause-set"
SENTENCE_END_THRESHOLDS = (0.2, 0.3, 0.4)
PAUSES_MS = (250, 300, 400, 600)
FRAME = 320  # 20 ms at 16 kHz, as clients send

# (first part, second part): the pause goes between them.
PAUSE_SENTENCES: list[tuple[str, str]] = [
    ("Set a timer", "for ten minutes."),
    ("Turn on the lights", "in the living room."),
    ("I would like to order a pizza", "with extra cheese."),
    ("Can you tell me", "what the weather will be tomorrow?"),
    ("Remind me to", "buy some milk later."),
    ("What is the capital", "of Australia?"),
    ("My favourite colour is", "dark green."),
    ("Play the song", "that we heard yesterday."),
    ("How long does it take to drive", "from London to Paris?"),
    ("Tell me a story about a dragon", "and a brave knight."),
]
# Written once, after the rules above were chosen, and never used to tune them: a check that
# a rule tuned on the corpus holds on sentences it has not seen (`--held-out`).
HELD_OUT_SENTENCES: list[tuple[str, str]] = [
    ("Turn off the heating", "in the bedroom."),
    ("Call my mother", "when I get home."),
    ("What is the weather like", "in Berlin today?"),
    ("Add eggs to the shopping list", "and some bread."),
    ("Tell me a joke", "about penguins."),
    ("Who wrote the book", "that won the prize last year?"),
    ("Lock the front door", "at ten o'clock."),
    ("I want to listen to music", "by the Beatles."),
    ("How many people live", "in New York City?"),
    ("Wake me up", "at seven tomorrow morning."),
]
PAUSE_VOICE_NAMES = (
    "joe",
    "joe-fast",
    "joe-slow",
    "en-us-175",
    "en-gb-scotland-145",
    "en-gb-x-rp-200",
)
PAUSE_VOICES = [v for v in VOICES if v.name in PAUSE_VOICE_NAMES]


@dataclass(frozen=True)
class PauseItem:
    path: Path
    first: str
    second: str
    voice: str
    family: str
    pause_ms: int
    pause_start_s: float  # where the silence between the parts begins and ends
    pause_end_s: float


def trim(pcm: Pcm, rate: int) -> Pcm:
    """The voiced extent: from the first to the last 10 ms frame above -45 dBFS."""
    size = rate // 100
    frames = len(pcm) // size
    blocks = pcm[: frames * size].astype(np.float64).reshape(frames, size) / 32768.0
    loud = np.nonzero(np.sqrt((blocks**2).mean(axis=1)) > 10 ** (-45 / 20))[0]
    return pcm[loud[0] * size : (loud[-1] + 1) * size]


def with_noise(pcm: Pcm, snr_db: float, seed: int) -> Pcm:
    """The voice set's room noise (pink noise and hum) over the whole recording, lead-in and
    pauses included, at an SNR relative to the speech's RMS over its voiced part (as
    bench/voice_set.py's noisy items): the corpus joins its halves with digital silence,
    which no microphone gives and which flatters any rule that listens to energy."""
    signal = pcm.astype(np.float64)
    voiced = signal[np.abs(signal) > 0.05 * np.abs(signal).max()]
    noise_rms = float(np.sqrt(np.mean(voiced**2))) / 10 ** (snr_db / 20)
    noisy = signal + noise_rms * room_noise(signal.size, SAMPLE_RATE, seed)
    return np.clip(np.round(noisy), -32768, 32767).astype(np.int16)


def spoken_half(text: str, voice: Voice, seed: int) -> Pcm:
    pcm, rate = speak(text, voice, seed)
    return trim(resample(pcm, rate, SAMPLE_RATE), SAMPLE_RATE)


def pause_items(
    cache_dir: Path = PAUSE_CACHE,
    sentences: list[tuple[str, str]] = PAUSE_SENTENCES,
    pauses_ms: tuple[int, ...] = PAUSES_MS,
) -> list[PauseItem]:
    spec = [[asdict(v) for v in PAUSE_VOICES], sentences, pauses_ms, 1]
    digest = hashlib.sha256(json.dumps(spec).encode())
    digest.update(hashlib.sha256(piper_voice_path().read_bytes()).digest())
    digest.update(espeak_version().encode())
    folder = cache_dir / digest.hexdigest()[:16]
    manifest = folder / "manifest.json"
    if manifest.is_file():
        rows = json.loads(manifest.read_text())
        return [PauseItem(**{**r, "path": folder / r["path"]}) for r in rows]
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    lead = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.int16)
    tail = np.zeros(int(0.2 * SAMPLE_RATE), dtype=np.int16)
    for v, voice in enumerate(PAUSE_VOICES):
        for s, (first, second) in enumerate(sentences):
            seed = 5000 + 100 * v + s
            # A comma: the first part is said as a clause that goes on, as people do.
            one = spoken_half(first + ",", voice, seed)
            two = spoken_half(second, voice, seed + 50)
            for pause_ms in pauses_ms:
                gap = np.zeros(pause_ms * SAMPLE_RATE // 1000, dtype=np.int16)
                pcm = np.concatenate([lead, one, gap, two, tail])
                name = f"{voice.name}-{s:02d}-{pause_ms}.wav"
                write_wav(folder / name, pcm.astype("<i2").tobytes(), SAMPLE_RATE)
                start_s = (lead.size + one.size) / SAMPLE_RATE
                rows.append(
                    {
                        "path": name,
                        "first": first,
                        "second": second,
                        "voice": voice.name,
                        "family": voice.family,
                        "pause_ms": pause_ms,
                        "pause_start_s": round(start_s, 4),
                        "pause_end_s": round(start_s + pause_ms / 1000, 4),
                    }
                )
    manifest.write_text(json.dumps(rows, indent=1) + "\n")
    return [PauseItem(**{**r, "path": folder / r["path"]}) for r in rows]


# --- analysis ------------------------------------------------------------------------------


@dataclass
class Pause:
    """One pause the VAD reported inside a turn."""

    start_s: float  # stream time of the first silent window
    silence_s: float | None  # silence the VAD counted before speech resumed (None: never)
    transcript: str  # the turn so far, as the speculative turn transcribes it
    end_of_turn_probability: float | None = None  # the end-of-turn model's, if given
    sentence_end_probability: float | None = None  # the chat model's, if asked


class Analyser:
    def __init__(
        self,
        end_of_turn_model: Path | None = None,
        chat_model: bool = False,
        style_prompt: str | None = None,
        onset_rise_db: float | None = None,
    ) -> None:
        """style_prompt: Whisper's previous text when none is given (measured, not kept:
        docs/performance.md, issue 16)."""
        from server.engines.faster_whisper import WhisperTranscriber

        settings = load_settings(environ={})
        self.settings = settings
        asr = settings.asr
        self.style_prompt = style_prompt or ""
        # The server's VAD onset rule unless told otherwise (0: off).
        rise = settings.vad.onset_rise_db if onset_rise_db is None else onset_rise_db
        self.onset_rise_db = rise or None
        self.asr = WhisperTranscriber(
            asr.model_path,
            compute_type=asr.compute_type,
            cpu_threads=asr.threads,
            beam_size=asr.beam_size,
            short_window=asr.short_window,
            style_prompt=self.style_prompt,
        )
        self.vad = SileroVad.load()
        self.smart_turn: SmartTurn | None = (
            SmartTurn(end_of_turn_model) if end_of_turn_model is not None else None
        )
        self.sentence_end: SentenceEnd | None = SentenceEnd(settings) if chat_model else None
        # The recordings of one sentence differ only after the pause, so the turn so far at
        # the first pauses is the same audio: transcribed once.
        self._seen: dict[bytes, tuple[str, float | None, float | None]] = {}

    def pauses(self, audio: np.ndarray, until_s: float | None = None) -> list[Pause]:
        """Every pause of the one turn the audio holds, with the server's VAD settings (the
        turn never ends here: the rules decide that afterwards). Pauses from until_s on are
        not transcribed (nothing is decided there)."""
        vad_settings = self.settings.vad
        config = VadConfig(
            threshold=vad_settings.threshold,
            min_speech_ms=vad_settings.min_speech_ms,
            silence_ms=10_000,
            prefix_padding_ms=vad_settings.prefix_padding_ms,
            report_pauses=True,
            onset_rise_db=self.onset_rise_db,
        )
        vad = StreamingVad(self.vad, config)
        padded = np.concatenate([audio, np.zeros(SAMPLE_RATE, dtype=np.float32)])
        found: list[Pause] = []
        for i in range(0, len(padded), FRAME):
            for event in vad.feed(padded[i : i + FRAME]):
                if isinstance(event, SpeechPaused):
                    if until_s is not None and event.at_s >= until_s:
                        found.append(Pause(event.at_s, None, ""))
                    else:
                        found.append(self._pause(event))
                elif isinstance(event, SpeechResumed) and found:
                    found[-1].silence_s = event.at_s - found[-1].start_s
        return found

    def _pause(self, event: SpeechPaused) -> Pause:
        key = hashlib.sha1(event.audio.tobytes()).digest()
        if key not in self._seen:
            text = self.asr.transcribe(event.audio).text
            probability = self.smart_turn.probability(event.audio) if self.smart_turn else None
            sentence_end = self.sentence_end.probability(text) if self.sentence_end else None
            self._seen[key] = (text, probability, sentence_end)
        text, probability, sentence_end = self._seen[key]
        return Pause(event.at_s, None, text, probability, sentence_end)


class SentenceEnd:
    """The chat model's probability that a transcript's words end a sentence, with the
    default persona's system prompt and no history (a conversation's first turn), on a cold
    KV cache but for the system prompt (as at a pause without prefill while speaking, the
    dearer case)."""

    def __init__(self, settings: Settings) -> None:
        from server.engines.llama_cpp import LlamaCppChatModel
        from server.prompts import PersonaLibrary

        llm = settings.llm
        self.model = LlamaCppChatModel(
            llm.model_path,
            context_size=llm.context_size,
            threads=llm.threads,
            parallel=llm.parallel,
        )
        persona = PersonaLibrary.load(settings.prompts.directory, settings.prompts.default_persona)
        self.system = ChatMessage("system", persona.get(None).system_prompt)
        self.model.warm_up()
        self.seconds: list[float] = []  # wall time of each call
        self.cpu_seconds: list[float] = []  # process CPU time of each call

    def probability(self, text: str) -> float | None:
        if not text.strip():
            return None
        self.model.clear_cache()
        self.model.prefill([self.system, ChatMessage("user", "")])  # the persona's prompt
        began, began_cpu = time.perf_counter(), time.process_time()
        found = self.model.sentence_end_probability([self.system, ChatMessage("user", text)])
        self.seconds.append(time.perf_counter() - began)
        self.cpu_seconds.append(time.process_time() - began_cpu)
        return found


class SmartTurn:
    """Pipecat's Smart Turn v3 (BSD-2-Clause): a Whisper-encoder classifier of the last 8 s of
    a turn, complete or not; the features are Whisper's log-mel of the zero-mean, unit-variance
    audio (faster-whisper's extractor gives the same numbers as Pipecat's)."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime  # type: ignore[import-untyped]
        from faster_whisper.feature_extractor import FeatureExtractor

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._features = FeatureExtractor(feature_size=80, chunk_length=8)
        self.seconds: list[float] = []

    def probability(self, audio: np.ndarray) -> float:
        began = time.perf_counter()
        window = 8 * SAMPLE_RATE
        audio = audio[-window:]
        audio = np.pad(audio, (window - audio.size, 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._features(audio.astype(np.float32), padding=0)[:, :800]
        out = self._session.run(None, {"input_features": features[None].astype(np.float32)})
        self.seconds.append(time.perf_counter() - began)
        return float(np.asarray(out[0]).reshape(-1)[0])


# --- rules -------------------------------------------------------------------------------

Rule = Callable[[Pause], int]  # the silence (ms) after which the turn ends at this pause


def text_rule(complete_ms: int, silence_ms: int = 500) -> Rule:
    """Today's rule at a given silence: complete_ms when the transcript reads as a finished
    sentence (server/pipeline/endpointing.py), silence_ms otherwise."""
    return lambda p: complete_ms if looks_complete(p.transcript) else silence_ms


def model_rule(complete_ms: int, threshold: float = 0.5, silence_ms: int = 500) -> Rule:
    """The end-of-turn model alone."""

    def rule(p: Pause) -> int:
        assert p.end_of_turn_probability is not None
        return complete_ms if p.end_of_turn_probability > threshold else silence_ms

    return rule


def both_rule(both_ms: int, text_ms: int = 350, threshold: float = 0.5) -> Rule:
    """Shorter still when the transcript reads as complete and the model agrees."""

    def rule(p: Pause) -> int:
        if not looks_complete(p.transcript):
            return 500
        assert p.end_of_turn_probability is not None
        return both_ms if p.end_of_turn_probability > threshold else text_ms

    return rule


def sentence_end_rule(both_ms: int, threshold: float, text_ms: int = 350) -> Rule:
    """Shorter when the transcript reads as complete and the chat model's probability that
    the words end a sentence reaches the threshold (measured, not kept: docs/performance.md;
    it was wired into the server as `[vad] sentence_end_model` in commit 78b67c1)."""

    def rule(p: Pause) -> int:
        if not looks_complete(p.transcript):
            return 500
        probability = p.sentence_end_probability
        return both_ms if probability is not None and probability >= threshold else text_ms

    return rule


def window_ms(ms: int) -> float:
    """The VAD counts silence in whole 32 ms windows: the silence it needs to see."""
    windows = -(-ms * SAMPLE_RATE // 1000 // 512)  # ceil over samples, as _samples() rounds
    return windows * 512 / SAMPLE_RATE * 1000


def cut(pauses: list[Pause], rule: Rule, before_s: float) -> bool:
    """Does a pause that starts before `before_s` (inside the sentence) end the turn?"""
    return any(
        p.start_s < before_s and (p.silence_s is None or p.silence_s * 1000 >= window_ms(rule(p)))
        for p in pauses
    )


def turn_end_ms(pauses: list[Pause], rule: Rule, speech_end_s: float) -> tuple[float, bool]:
    """End of speech -> end of the turn, and whether a pause inside the speech ended a turn
    before (the rest is then a turn of its own, joined to the first by the server)."""
    inside = [p for p in pauses if p.start_s < speech_end_s - 0.1]
    final = [p for p in pauses if p.start_s >= speech_end_s - 0.1 and p.silence_s is None]
    if not final:
        raise RuntimeError("the VAD saw no pause after the end of speech")
    end = (final[0].start_s + window_ms(rule(final[0])) / 1000 - speech_end_s) * 1000
    return end, cut(inside, rule, speech_end_s)


# --- main --------------------------------------------------------------------------------


def rules(with_model: bool, with_chat: bool = False) -> dict[str, Rule]:
    chosen = {
        "text 350 ms (today)": text_rule(350),
        "text 320 ms": text_rule(320),
        "text 300 ms": text_rule(300),
        "text 250 ms": text_rule(250),
        "text 200 ms": text_rule(200),
    }
    if with_chat:
        for threshold in SENTENCE_END_THRESHOLDS:
            for both_ms in (300, 250, 200):
                chosen[f"text+chat>={threshold} {both_ms} ms"] = sentence_end_rule(
                    both_ms, threshold
                )
    if with_model:
        chosen |= {
            "model 250 ms": model_rule(250),
            "model 200 ms": model_rule(200),
            "text+model 250 ms": both_rule(250),
            "text+model 200 ms": both_rule(200),
        }
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results-pauses.json")
    parser.add_argument(
        "--end-of-turn-model",
        type=Path,
        help="Smart Turn v3 ONNX file to score as rules (default: models/smart-turn-v3, if there)",
    )
    parser.add_argument("--no-bench-set", action="store_true", help="pause corpus only")
    parser.add_argument(
        "--chat-model",
        action="store_true",
        help="also score the chat model's sentence-end probability as rules",
    )
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="the held-out pause sentences instead of the corpus (rules checked, not tuned)",
    )
    parser.add_argument(
        "--style-prompt",
        help="Whisper's previous text when none is given, e.g. 'Hi there. How are you today?' "
        "(its punctuation makes tiny.en punctuate; measured, not kept)",
    )
    parser.add_argument(
        "--noise-snr",
        type=float,
        help="add the voice set's room noise to every pause recording at this SNR (dB)",
    )
    parser.add_argument(
        "--onset-rise-db",
        type=float,
        help="the VAD's onset rule at this rise, dB (default: the server's [vad] "
        "onset_rise_db; 0: off, the VAD before it)",
    )
    args = parser.parse_args()
    began = time.perf_counter()
    model = args.end_of_turn_model
    if model is None:
        default = Path(__file__).resolve().parent.parent / "models" / "smart-turn-v3"
        found = sorted(default.glob("*.onnx")) if default.is_dir() else []
        model = found[0] if found else None
    analyser = Analyser(
        model,
        chat_model=args.chat_model,
        style_prompt=args.style_prompt,
        onset_rise_db=args.onset_rise_db,
    )
    chosen = rules(model is not None, args.chat_model)
    load_before = hardware()["load_average"]

    sentences = HELD_OUT_SENTENCES if args.held_out else PAUSE_SENTENCES
    items = pause_items(sentences=sentences)
    corpus: list[dict[str, Any]] = []
    for n, item in enumerate(items):
        if n % 20 == 0:
            print(f"pause corpus: {n}/{len(items)}", flush=True)
        pcm, rate = read_wav(item.path)
        if args.noise_snr is not None:
            pcm = with_noise(pcm, args.noise_snr, zlib.crc32(item.path.name.encode()))
        pauses = analyser.pauses(int16_to_float32(pcm), until_s=item.pause_end_s)
        cuts = {name: cut(pauses, rule, item.pause_end_s) for name, rule in chosen.items()}
        corpus.append(
            {
                **asdict(item),
                "path": item.path.name,
                "pauses": [asdict(p) for p in pauses],
                "cut": cuts,
            }
        )

    cut_rates: dict[str, dict[str, float]] = {}
    for name in chosen:
        cut_rates[name] = {}
        for pause_ms in PAUSES_MS:
            rows = [c for c in corpus if c["pause_ms"] == pause_ms]
            share = sum(c["cut"][name] for c in rows) / len(rows)
            cut_rates[name][str(pause_ms)] = round(share, 4)

    turn_ends: dict[str, dict[str, Any]] = {}
    bench_rows: list[dict[str, Any]] = []
    if not args.no_bench_set:
        from bench.voice_set import bench_set

        for bench_item in bench_set():
            pcm, rate = read_wav(bench_item.path)
            audio = resample(int16_to_float32(pcm), rate, SAMPLE_RATE)
            pauses = analyser.pauses(audio)
            bench_rows.append(
                {
                    "item": bench_item.path.name,
                    "family": bench_item.family,
                    "turn_end_ms": {
                        name: turn_end_ms(pauses, rule, bench_item.speech_end_s)
                        for name, rule in chosen.items()
                    },
                    "pauses": [asdict(p) for p in pauses],
                }
            )
        for name in chosen:
            ends = [r["turn_end_ms"][name][0] for r in bench_rows]
            turn_ends[name] = {
                "p50": round(median(ends), 1),
                "p95": round(percentile(ends, 95), 1),
                "ended_inside_speech": sum(r["turn_end_ms"][name][1] for r in bench_rows),
            }

    result = {
        "benchmark": "pause_cuts",
        "hardware": {**hardware(), "load_average_at_start": load_before},
        "end_of_turn_model": str(model) if model else None,
        "end_of_turn_model_ms_p50": (
            round(median(analyser.smart_turn.seconds) * 1000, 1) if analyser.smart_turn else None
        ),
        "chat_model_ms": _cost(analyser.sentence_end),
        "pause_sentences": "held-out" if args.held_out else "corpus",
        "whisper_style_prompt": analyser.style_prompt,
        "noise_snr_db": args.noise_snr,
        "vad_onset_rise_db": analyser.onset_rise_db,
        "pause_items": len(items),
        "cut_rate": cut_rates,
        "bench_set_turn_end_ms": turn_ends,
        "runtime_s": round(time.perf_counter() - began, 1),
        "pause_corpus": corpus,
        "bench_set": bench_rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    per = len(items) // len(PAUSES_MS)
    print(f"pauses wrongly ending a turn ({per} sentences x voices per pause length)")
    width = max(len(name) for name in chosen) + 2
    print(
        f"{'rule':<{width}}"
        + "".join(f"{f'cut@{p}':>9}" for p in PAUSES_MS)
        + f"{'turn end p50':>14}{'p95':>7}"
    )
    for name in chosen:
        summary = turn_ends.get(name, {})
        print(
            f"{name:<{width}}"
            + "".join(f"{cut_rates[name][str(p)]:>9.1%}" for p in PAUSES_MS)
            + f"{summary.get('p50', float('nan')):>14.0f}{summary.get('p95', float('nan')):>7.0f}"
        )
    if analyser.smart_turn:
        print(f"end-of-turn model: {result['end_of_turn_model_ms_p50']} ms a pause (p50)")
    if analyser.sentence_end:
        print(f"chat model's sentence-end probability, a pause: {result['chat_model_ms']}")
    print(f"wrote {args.out} in {result['runtime_s']:.0f} s")


def _cost(scorer: SentenceEnd | None) -> dict[str, float] | None:
    if scorer is None or not scorer.seconds:
        return None
    return {
        "calls": len(scorer.seconds),
        "wall_p50": round(median(scorer.seconds) * 1000, 1),
        "wall_p95": round(percentile(scorer.seconds, 95) * 1000, 1),
        "cpu_p50": round(median(scorer.cpu_seconds) * 1000, 1),
        "cpu_p95": round(percentile(scorer.cpu_seconds, 95) * 1000, 1),
    }


if __name__ == "__main__":
    main()
