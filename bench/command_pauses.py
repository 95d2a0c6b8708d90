"""Commands cut in a pause, at each `[intents] command_silence_ms` (docs/performance.md).

A command's turn ends after `command_silence_ms` of silence once the words so far are a whole
command; the shorter that silence, the sooner the answer, and the likelier a person who
pauses in mid-command ("Turn off the light | in the bedroom.") is cut there and the first
half acted on. This measures that trade: commands whose first half is itself a whole command
at the kitchen site, each half spoken by Piper and espeak-ng voices and joined by exactly
250-500 ms of silence (bench/pause_cuts.py's corpus, other sentences), through the real
Silero VAD in 20 ms frames and, at every pause, the real Whisper with the home's prompt and
the server's own reconsidering (heard again, n-best: server/intents/hearing.py), as a
speculative turn in a `smart_home` session hears it, then the real recognizer.

A rule cuts a command when a pause inside it is a whole command and lasts (as the VAD counts
it, in 32 ms windows) at least the command silence, or else at least the text rule's
(complete_silence_ms or silence_ms). `--held-out` adds, in the same run, pairs written before
any rule that tells commands apart was made, never used to choose one. Prints a table per set;
writes bench/results-command-pauses.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.cannot_go_on import Saturation
from bench.common import BENCH_DIR, hardware, median
from bench.pause_cuts import (
    Analyser,
    Pause,
    Rule,
    cut,
    pause_items,
    turn_end_ms,
    window_ms,
    with_noise,
)
from clients.talk import read_wav, speech_end_s
from server.audio.pcm import int16_to_float32, resample
from server.audio.vad import SAMPLE_RATE, WINDOW_SAMPLES, SpeechPaused, VadConfig
from server.engines.base import MoreReadings, Transcript
from server.intents import hearing
from server.intents.home import load_home
from server.intents.recognizer import SUPPORTED, IntentRecognizer, Recognized
from server.pipeline.endpointing import end_of_turn_silence_ms

SITE = "kitchen"
PAUSES_MS = (250, 300, 350, 400, 500)
# (first half, second half): the first half is a whole command at the kitchen site, except
# the last two, which show the rule does nothing there.
COMMAND_PAUSE_SENTENCES: list[tuple[str, str]] = [
    ("Turn off the light", "in the bedroom."),
    ("Turn on the lights", "in the living room."),
    ("Turn off the kitchen light", "and the coffee machine."),
    ("Set a timer for ten minutes", "and thirty seconds."),
    ("Set a timer for five minutes", "named pasta."),
    ("Turn on the TV", "in the living room."),
    ("Turn off the fan", "in the bedroom."),
    ("Turn off the lights", "in the office."),
    ("Lock the front door", "at ten o'clock."),
    ("Pause the TV", "for a moment."),
    ("Set the bedroom light", "to fifty percent."),
    ("Add milk", "to my shopping list."),
]
# Written once, before any rule that ends some commands sooner than others was made, and never
# used to choose one (`--held-out`): pauses after a whole command at the kitchen site, some
# where the rest changes the action ("Turn on the light | in the office."), some where it does
# not ("Turn off the heater | in the office."), other wordings than the corpus above.
HELD_OUT_COMMAND_PAUSE_SENTENCES: list[tuple[str, str]] = [
    ("Turn on the light", "in the office."),
    ("Switch off the lights", "in the living room."),
    ("Set a timer for two minutes", "and forty seconds."),
    ("Set a timer for twenty minutes", "called oven."),
    ("Turn on the floor lamp", "and the ceiling light."),
    ("Set the thermostat to twenty", "one degrees."),
    ("Open the garage door", "halfway."),
    ("Turn off the heater", "in the office."),
    ("Cancel the timer", "for the pasta."),
    ("Unlock the front door", "for the plumber."),
    ("Turn off the TV", "in ten minutes."),
    ("Mute the TV", "for a minute."),
    ("Set the brightness to fifty percent", "in the living room."),
    ("Set the temperature to twenty degrees", "in the office."),
    ("Turn off the desk lamp", "in the study."),
    ("Close the garage door", "at nine."),
]
COMMAND_SILENCES_MS = (250, 220)  # 8 and 7 VAD windows (190 and 160: see docs/performance.md)
CANNOT_GO_ON_SILENCES_MS = (220, 190)
WINDOW_MS = WINDOW_SAMPLES * 1000 // SAMPLE_RATE  # 32


@dataclass
class CommandPause(Pause):
    # Windows just before the pause between the VAD's negative threshold and its threshold:
    # counted as speech today (hysteresis), as silence by the release lever.
    release_windows: int = 0


class CommandAnalyser(Analyser):
    """Pauses heard as a command session hears them: the home's prompt, reconsidered."""

    def __init__(self) -> None:
        super().__init__(None)
        intents = self.settings.intents
        home = load_home(intents.devices)
        self.recognizer = IntentRecognizer(home, intents.language, repair=intents.repair)
        self.recognizer.warm_up()
        self.saturation = Saturation(self.recognizer.intents, home, SUPPORTED)
        self.prompt = home.asr_prompt()

    def pauses(self, audio: np.ndarray, until_s: float | None = None) -> list[Pause]:
        found = super().pauses(audio, until_s)
        # The probabilities the VAD saw (the same windows from the same start, Analyser.pauses).
        padded = np.concatenate([audio, np.zeros(SAMPLE_RATE, dtype=np.float32)])
        whole = padded.size - padded.size % WINDOW_SAMPLES
        probabilities = self.vad.new_stream().probabilities(padded[:whole])
        vad = self.settings.vad
        stop = VadConfig(threshold=vad.threshold).stop_threshold
        marked: list[Pause] = []
        for p in found:
            window = round(p.start_s * SAMPLE_RATE / WINDOW_SAMPLES) - 1
            release = 0
            while window >= 0 and stop <= probabilities[window] < vad.threshold:
                release += 1
                window -= 1
            marked.append(CommandPause(**asdict(p), release_windows=release))
        return marked

    def _pause(self, event: SpeechPaused) -> Pause:
        key = hashlib.sha1(event.audio.tobytes()).digest()
        if key not in self._seen:
            intents = self.settings.intents

            def reconsider(first: Transcript, more: MoreReadings) -> Transcript:
                return hearing.reconsidered(
                    first,
                    more,
                    self.recognizer,
                    SITE,
                    prompt=self.prompt,
                    readings=intents.n_best,
                    max_gap=intents.n_best_gap,
                    unsure_below=intents.n_best_unsure_below,
                )

            heard = self.asr.transcribe_reconsidered(
                event.audio, prompt=self.prompt, reconsider=reconsider
            )
            self._seen[key] = (heard.text, None, None)
        text, _, _ = self._seen[key]
        return Pause(event.at_s, None, text)


def command_rule(
    analyser: CommandAnalyser, command_ms: int, cannot_go_on_ms: int | None = None
) -> Rule:
    """The server's rule (pipeline/session.py): the text rule, shorter for a whole command;
    with cannot_go_on_ms, shorter still for a command whose words cannot go on into another
    action (server/intents/saturation.py)."""
    vad = analyser.settings.vad

    def rule(p: Pause) -> int:
        silence = end_of_turn_silence_ms(p.transcript, vad)
        found = analyser.recognizer.understand(p.transcript, SITE)
        if found is not None:
            silence = min(silence, command_ms)
            if (
                cannot_go_on_ms is not None
                and isinstance(found, Recognized)
                and analyser.saturation.cannot_go_on(found)
            ):
                silence = min(silence, cannot_go_on_ms)
        return silence

    return rule


def release_rule(analyser: CommandAnalyser, command_ms: int) -> Rule:
    """The release lever: a pause whose words are a whole command counts its silence from
    the first window below the VAD's threshold, not below its negative threshold (the
    windows in between, speech today, count as silence): the same as a command silence
    shorter by those windows."""
    base = command_rule(analyser, command_ms)

    def rule(p: Pause) -> int:
        silence = base(p)
        if analyser.recognizer.understand(p.transcript, SITE) is None:
            return silence
        release = p.release_windows if isinstance(p, CommandPause) else 0
        return max(silence - release * WINDOW_MS, WINDOW_MS)

    return rule


def rules(analyser: CommandAnalyser) -> dict[str, Rule]:
    chosen = {
        f"every command {ms} ({window_ms(ms):.0f} ms)": command_rule(analyser, ms)
        for ms in COMMAND_SILENCES_MS
    }
    for ms in CANNOT_GO_ON_SILENCES_MS:
        name = f"250, {ms} ({window_ms(ms):.0f} ms) when it cannot go on"
        chosen[name] = command_rule(analyser, 250, ms)
    chosen["250, counted from below the threshold (release)"] = release_rule(analyser, 250)
    return chosen


def spoken_commands(analyser: CommandAnalyser, chosen: dict[str, Rule]) -> dict[str, Any]:
    """The 120 spoken commands of bench/intent_set.py (Piper and espeak-ng, as
    bench/intent_accuracy.py says them): per rule, end of speech -> end of the turn (stream
    time: it follows from the VAD's windows, whatever the load), and how many turns end on a
    pause given a shorter silence than today's."""
    from bench.intent_accuracy import Voices
    from bench.intent_set import ITEMS

    voices = Voices(["piper", "espeak:en-us"])
    today = next(iter(chosen))
    rows: list[dict[str, Any]] = []
    for voice in voices.names:
        for item in [i for i in ITEMS if i.kind == "command"]:
            pcm, rate = voices.say(voice, item.text)
            end_s = speech_end_s(pcm, rate)
            audio = resample(int16_to_float32(pcm), rate, SAMPLE_RATE)
            pauses = analyser.pauses(audio)
            final = [p for p in pauses if p.start_s >= end_s - 0.1 and p.silence_s is None]
            ends = {name: turn_end_ms(pauses, rule, end_s) for name, rule in chosen.items()}
            rows.append(
                {
                    "text": item.text,
                    "voice": voice,
                    "heard": final[0].transcript if final else None,
                    "turn_end_ms": {name: round(ms, 1) for name, (ms, _) in ends.items()},
                    "ended_inside": {name: inside for name, (_, inside) in ends.items()},
                    "shorter": {
                        name: bool(final) and rule(final[0]) < chosen[today](final[0])
                        for name, rule in chosen.items()
                    },
                }
            )
            print(f"{voice:14} {item.text!r} -> {rows[-1]['heard']!r}", flush=True)
    summary = {
        name: {
            "turn_end_p50_ms": round(median([r["turn_end_ms"][name] for r in rows]), 1),
            "turn_end_mean_ms": round(sum(r["turn_end_ms"][name] for r in rows) / len(rows), 1),
            "shorter_silence": sum(r["shorter"][name] for r in rows),
            "ended_inside_speech": sum(r["ended_inside"][name] for r in rows),
        }
        for name in chosen
    }
    return {"commands": len(rows), "summary": summary, "rows": rows}


def measure(
    analyser: CommandAnalyser,
    chosen: dict[str, Rule],
    sentences: list[tuple[str, str]],
    noise_snr: float | None = None,
) -> dict[str, Any]:
    """Each rule's cuts, per pause length, over the pairs of `sentences` (with the voice
    set's room noise over the whole recording at `noise_snr` dB, if given)."""
    items = pause_items(sentences=sentences, pauses_ms=PAUSES_MS)
    rows: list[dict[str, Any]] = []
    for n, item in enumerate(items):
        if n % 40 == 0:
            print(f"{n}/{len(items)}", flush=True)
        pcm, _ = read_wav(item.path)
        if noise_snr is not None:
            pcm = with_noise(pcm, noise_snr, zlib.crc32(item.path.name.encode()))
        pauses = analyser.pauses(int16_to_float32(pcm), until_s=item.pause_end_s)
        rows.append(
            {
                "first": item.first,
                "second": item.second,
                "voice": item.voice,
                "pause_ms": item.pause_ms,
                "pauses": [
                    {
                        "start_s": p.start_s,
                        "silence_s": p.silence_s,
                        "heard": p.transcript,
                        "release_windows": getattr(p, "release_windows", 0),
                    }
                    for p in pauses
                ],
                "cut": {name: cut(pauses, rule, item.pause_end_s) for name, rule in chosen.items()},
            }
        )
    cuts = {
        name: {
            str(pause): sum(r["cut"][name] for r in rows if r["pause_ms"] == pause)
            for pause in PAUSES_MS
        }
        for name in chosen
    }
    return {
        "sentences": sentences,
        "per_pause_length": len(rows) // len(PAUSES_MS),
        "cuts": cuts,
        "rows": rows,
    }


def print_table(title: str, measured: dict[str, Any]) -> None:
    print(
        f"{title}: commands cut in their pause (of {measured['per_pause_length']} per pause length)"
    )
    print(
        "| rule (command silence as the VAD counts it) | "
        + " | ".join(f"{p} ms" for p in PAUSES_MS)
        + " |"
    )
    print("| --- |" + " ---: |" * len(PAUSES_MS))
    for name, counts in measured["cuts"].items():
        print(f"| {name} | " + " | ".join(str(counts[str(p)]) for p in PAUSES_MS) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(BENCH_DIR / "results-command-pauses.json"))
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="also the held-out pairs, in the same run (rules checked on them, never tuned)",
    )
    parser.add_argument(
        "--noise-snr",
        type=float,
        help="the voice set's room noise over the pause pairs at this SNR, dB (pause_cuts.py)",
    )
    parser.add_argument(
        "--no-spoken-commands",
        action="store_true",
        help="skip the 120 spoken commands of bench/intent_set.py (end of speech -> turn end)",
    )
    args = parser.parse_args()
    began = time.perf_counter()
    load_before = hardware()["load_average"]
    analyser = CommandAnalyser()
    chosen = rules(analyser)
    sets = {"main": COMMAND_PAUSE_SENTENCES}
    if args.held_out:
        sets["held-out"] = HELD_OUT_COMMAND_PAUSE_SENTENCES
    measured = {
        name: measure(analyser, chosen, sentences, args.noise_snr)
        for name, sentences in sets.items()
    }
    spoken = None if args.no_spoken_commands else spoken_commands(analyser, chosen)
    for name, found in measured.items():
        print_table(name, found)
    if spoken is not None:
        print(f"{spoken['commands']} spoken commands: end of speech -> end of the turn")
        print("| rule | p50 | mean | turns given a shorter silence | ended inside the command |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, row in spoken["summary"].items():
            print(
                f"| {name} | {row['turn_end_p50_ms']:.0f} ms | {row['turn_end_mean_ms']:.0f} ms"
                f" | {row['shorter_silence']} | {row['ended_inside_speech']} |"
            )
    result = {
        "benchmark": "command_pauses",
        "hardware": {**hardware(), "load_average_at_start": load_before},
        "site": SITE,
        "noise_snr_db": args.noise_snr,
        "onset_rise_db": analyser.onset_rise_db,
        "rules": list(chosen),
        "runtime_s": round(time.perf_counter() - began, 1),
        "sets": measured,
        "spoken_commands": spoken,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
