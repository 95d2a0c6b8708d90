"""Several readings of a spoken command (n-best hearing). Pure code, no asyncio.

Whisper `tiny.en` sometimes hears a command as another sentence ("Set a Tyler for well-hour",
"The new 30-week" for "Mute the TV"), which matches no template. Its decoder can give more
than one reading of the same audio (beam search, `num_hypotheses`), likeliest first, and the
right sentence is often among them. `choose` picks the reading to act on, with the same care
as the one-word repair (repair.py):

- only readings close to the likeliest count: a reading far below it in Whisper's score
  (mean log-probability per token, `MAX_SCORE_GAP`) is a guess, not a hearing;
- every reading that counts is understood (strict templates, no repair: the caller's
  `understand`); if they make more than one command (other intent, devices or slots), or one
  of them is the "lock or unlock?" question, none is taken;
- the words that decide what a command does (on, off, lock, unlock, ...: repair.POLARITY)
  are never changed: when the first hearing had some, the reading taken has the same ones.

What is chosen is a reading Whisper gave, word for word; it is what the transcript says.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from server.engines.base import Hypothesis, MoreReadings, Rereading, Transcript
from server.intents import rescore
from server.intents.recognizer import (
    UNLOCK_OR_LOCK,
    IntentRecognizer,
    Recognized,
    Refused,
    Understanding,
    command_key,
    deciding_words,
    normalise,
)

log = logging.getLogger(__name__)

# How far below the likeliest reading (mean log-probability per token) a reading may be and
# still count. Measured: docs/performance.md#hearing-several-readings.
MAX_SCORE_GAP = 0.5
# Readings asked for when the first hearing is not a command.
READINGS = 5
# A first hearing longer than this is not a command misheard (commands are short).
MAX_WORDS = 12
# Only a first hearing Whisper was unsure of is read again (its mean log-probability per
# token below this): the misheard commands measured were all below -0.35, most chit-chat is
# heard above -0.25, and reading it again would only delay the model's answer.
UNSURE_BELOW = -0.25


@dataclass(frozen=True)
class Chosen:
    reading: Hypothesis
    rank: int  # 0: the likeliest reading
    understood: Recognized


def worth_reading_again(first: str) -> bool:
    """Whether a first hearing that is not a command could be one misheard."""
    return 0 < len(normalise(first, fillers=False).split()) <= MAX_WORDS


def choose(
    first: str,
    readings: Sequence[Hypothesis],
    understand: Callable[[str], Understanding],
    *,
    max_gap: float = MAX_SCORE_GAP,
) -> Chosen | None:
    """The reading to act on instead of `first` (which is no command), or None."""
    if not readings:
        return None
    best = max(r.avg_logprob for r in readings)
    heard = deciding_words(first)
    commands: dict[tuple[Any, ...], Chosen] = {}
    seen: set[str] = set()
    for rank, reading in enumerate(readings):
        if best - reading.avg_logprob > max_gap:
            continue
        said = normalise(reading.text)
        if not said or said in seen:
            continue
        seen.add(said)
        found = understand(reading.text)
        if isinstance(found, Refused):
            if found.reason == "ambiguous":
                return None  # "lock or unlock?": the readings themselves disagree
            continue
        if found is None:
            continue
        commands.setdefault(command_key(found), Chosen(reading, rank, found))
    if len(commands) != 1:
        return None
    chosen = next(iter(commands.values()))
    if heard and deciding_words(chosen.reading.text) != heard:
        return None
    return chosen


def heard_the_prompt(heard: str) -> bool:
    """A comma list (the prompt's shape: no command has two commas) or "and lock"."""
    return heard.count(",") >= 2 or bool(UNLOCK_OR_LOCK.match(heard.strip()))


def reconsidered(
    first: Transcript,
    more: MoreReadings,
    recognizer: IntentRecognizer,
    site: str | None,
    *,
    prompt: str | None,
    readings: int = READINGS,
    max_gap: float = MAX_SCORE_GAP,
    unsure_below: float = UNSURE_BELOW,
    understand: Callable[[str], Understanding] | None = None,
    rescoring: bool = False,
) -> Transcript:
    """The transcript of a turn in a session that takes commands, from Whisper's first one:

    - made with the home's `prompt`, it is made again without it when Whisper wrote the
      prompt's list back instead of the words ("Turn on the light, ceiling fan, room,") or
      heard "unlock" as "and lock" (heard_the_prompt);
    - when what was heard is no command (`understand`, the recognizer's full answer by
      default) and Whisper was unsure of it (`unsure_below`), `readings` readings of the
      same audio are asked for, and the one command they agree on is taken (`choose`,
      strict templates);
    - with `rescoring`, when it is still no command and the engine can score sentences
      (a Rereading), the home's command sentences close to it are scored against the same
      audio, and one clearly likelier than the others is taken (rescore.py).
    """
    heard = first
    if prompt and heard_the_prompt(first.text):
        again = more(1, None)
        if again:
            heard = dataclasses.replace(first, text=again[0].text)
        log.debug("heard %r with the prompt, %r without", first.text, heard.text)
    read_again = readings >= 2 and heard.avg_logprob < unsure_below
    score = more.score if rescoring and isinstance(more, Rereading) else None
    if score is not None and not rescore.worth_scoring(heard.text, recognizer.home):
        score = None  # no sentence of the home could stand for it: most chit-chat
    if not (read_again or score) or not worth_reading_again(heard.text):
        return heard
    full = understand or (lambda text: recognizer.understand(text, site))
    if full(heard.text) is not None:
        return heard

    def strictly(text: str) -> Understanding:
        return recognizer.understand(text, site, repair=False)

    if read_again:
        chosen = choose(heard.text, more(readings, prompt), strictly, max_gap=max_gap)
        if chosen is not None:
            log.debug(
                "heard %r; reading %d, %r, is %s",
                heard.text,
                chosen.rank,
                chosen.reading.text,
                chosen.understood.intent,
            )
            return dataclasses.replace(heard, text=chosen.reading.text)
    if score is None:
        return heard
    taken = rescore.rescored(
        heard.text, recognizer.home, strictly, lambda texts: score(texts, prompt)
    )
    return heard if taken is None else dataclasses.replace(heard, text=taken.text)
