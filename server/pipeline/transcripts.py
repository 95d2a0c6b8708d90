"""Whether a transcript is speech at all: Whisper reads words into silence and noise.

Transcript data in, a decision out; used by the pipeline before a transcript is answered.
"""

from __future__ import annotations

import re

from server.engines.base import Transcript

_CERTAIN_NO_SPEECH = 0.9
_HALLUCINATION_NO_SPEECH = 0.5
# What Whisper says to silence and noise; normalised as by _normalise().
_HALLUCINATIONS = frozenset(
    {
        "you", "thank you", "thanks", "thank you very much", "thanks for watching",
        "thank you for watching", "thanks for listening", "please subscribe", "bye", "bye bye",
        "okay", "oh", "so", "i'm sorry", "the end", "um", "uh", "hmm",
    }
)  # fmt: skip


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def is_probably_not_speech(
    t: Transcript, *, no_speech_threshold: float = 0.6, logprob_threshold: float = -1.0
) -> bool:
    """Whether a transcript is most likely Whisper's reading of silence or noise.

    True for an empty text, for Whisper's own rule (no speech likely and a low-confidence
    decoding), for a near-certain no_speech_prob, and for a phrase Whisper hallucinates on
    silence ("you", "Thank you.") when no speech is likely.
    """
    words = _normalise(t.text)
    if not words:
        return True
    if t.no_speech_prob > no_speech_threshold and t.avg_logprob < logprob_threshold:
        return True
    # Silence in a short window reads "you" at 0.99 with a confident -0.65; real speech,
    # even a quiet "Hmm.", stayed under 0.65.
    if t.no_speech_prob > _CERTAIN_NO_SPEECH:
        return True
    # A quiet real "Bye." scored 0.36; hallucinations on silence and noise scored 0.77+.
    return words in _HALLUCINATIONS and t.no_speech_prob > _HALLUCINATION_NO_SPEECH
