"""Deterministic checks that keep replies honest: what kind of message this is, and whether a
reply claims to have done something.

A 135M chat model cannot be trusted to say "I don't know" or to refrain from "I have turned off
the lights"; these few patterns can (docs/performance.md measures them). Pure functions.
"""

from __future__ import annotations

import re

_LEAD = r"^\s*(?:(?:hey|hi|ok|okay)\s+\w+[,!]?\s+)?(?:please\s+)?"
_ASK_YOU = r"(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?|i\s+(?:want|need)\s+you\s+to\s+)?"
_ACTION_VERBS = (
    r"turn|switch|set|start|stop|dim|brighten|lower|raise|increase|decrease|play|pause|resume|"
    r"skip|lock|unlock|open|close|shut|call|ring|text|send|book|order|buy|remind|add|cancel|"
    r"schedule|email|message|wake|reserve|arm|disarm|mute|unmute|record|water|feed|vacuum|"
    r"activate|deactivate|enable|disable"
)
_COMMAND = re.compile(
    _LEAD + _ASK_YOU + rf"(?:{_ACTION_VERBS})\b(?!\s+(?:you|is|are|does|do)\b)", re.IGNORECASE
)
# "turn the lights off" / "lights off please" / "timer for ten minutes"
_DEVICE_REQUEST = re.compile(
    r"^\s*(?:please\s+)?(?:the\s+)?(?:lights?|lamps?|heating|heater|music|tv|fan|radio)\s+"
    r"(?:on|off|up|down)\b|\b(?:a|the)\s+(?:timer|alarm|reminder)\s+(?:for|at|in)\b",
    re.IGNORECASE,
)

_CLAIM_VERBS = (
    r"turned|switched|set|started|stopped|dimmed|brightened|lowered|raised|increased|"
    r"decreased|played|paused|locked|unlocked|opened|closed|shut|called|rung|texted|sent|"
    r"booked|ordered|bought|reminded|added|cancell?ed|scheduled|emailed|messaged|reserved|"
    r"armed|disarmed|muted|unmuted|recorded|activated|deactivated|enabled|disabled|created|"
    r"made|put|adjusted|changed|notified|informed|alerted|contacted"
)
_FUTURE_VERBS = (
    r"turn|switch|set|start|stop|dim|brighten|lower|raise|increase|decrease|play|pause|lock|"
    r"unlock|open|close|shut|call|ring|text|send|book|order|buy|remind|add|cancel|schedule|"
    r"email|message|reserve|arm|disarm|mute|record|activate|enable|disable|create|make|put|"
    r"adjust|change|notify|inform|alert|contact|get\s+(?:that|it|this)\s+done"
)
_CLAIM = re.compile(
    r"\b(?:i(?:'ve|\s+have|\s+had)|i\s+just|i'm\s+done|we(?:'ve|\s+have))\s+"
    r"(?:now\s+|just\s+|already\s+|successfully\s+|gone\s+ahead\s+and\s+)*"
    rf"(?:{_CLAIM_VERBS})\b"
    r"|\b(?:i(?:'ll|\s+will|'m\s+going\s+to|\s+am\s+going\s+to|\s+shall)|let\s+me)\s+"
    r"(?:now\s+|just\s+|go\s+ahead\s+and\s+|quickly\s+)*"
    rf"(?:{_FUTURE_VERBS})\b"
    r"|\bi(?:'m|\s+am)\s+(?:now\s+)?(?:turning|switching|setting|starting|stopping|dimming|"
    r"playing|locking|unlocking|opening|closing|calling|sending|booking|ordering|adding|"
    r"scheduling|cancell?ing)\b"
    r"|\b(?:timer|alarm|reminder|lights?|heating|music|door|booking|order)\s+"
    r"(?:is|are|has\s+been|have\s+been)\s+(?:now\s+)?(?:on|off|set|started|locked|unlocked|"
    r"turned|switched|dimmed|playing|booked|placed|confirmed|scheduled)\b"
    r"|^\s*(?:done|all\s+done|there\s+you\s+go)\b",
    re.IGNORECASE,
)
# What "I'll tell you" and "I'll help" are: not actions on the world.
_NOT_ACTIONS = re.compile(r"\b(?:let\s+me|i'll|i\s+will)\s+(?:know|see|check|think|explain)\b")

_SMALL_TALK = re.compile(
    r"^\s*(?:hi|hello|hey|hiya|howdy|good\s+(?:morning|afternoon|evening|night)|thanks|"
    r"thank\s+you|cheers|bye|goodbye|see\s+you|ok(?:ay)?|great|cool|nice|yes|no|sure|"
    r"how\s+are\s+you|how's\s+it\s+going|who\s+are\s+you|what(?:'s|\s+is)\s+your\s+name|"
    r"what\s+can\s+you\s+do|are\s+you\s+(?:a\s+)?(?:robot|human|real|there))\b[\s\w,'!.?]{0,40}$",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^\s*(?:(?:excuse\s+me|sorry|hi|hello|hey)[,!.]?\s+)?(?:where|what|when|which|who|whom|"
    r"whose|why|how|is|are|am|do|does|did|can|could|may|might|will|would|should|shall|have|"
    r"has|was|were|tell\s+me|i\s+(?:need|want|am\s+looking|'m\s+looking|would\s+like)|"
    r"i'm\s+looking|any|got)\b",
    re.IGNORECASE,
)
# Words that point a question at the place itself rather than the wide world.
_SITE_CUES = re.compile(
    r"\b(?:you|your|here|this\s+(?:place|building|centre|center|venue|site|office)|there\s+(?:is|are|a|an|any)|"
    r"is\s+there|are\s+there|where|nearest|nearby|inside|i\s+(?:can|may)|can\s+i|may\s+i|"
    r"do\s+i|am\s+i|allowed|floor|desk|staff|manager|reception|building|entrance|exit|"
    r"upstairs|downstairs|today|tonight|tomorrow)\b",
    re.IGNORECASE,
)


def is_small_talk(text: str) -> bool:
    """Greetings, thanks, goodbyes and questions about the assistant itself."""
    return bool(_SMALL_TALK.match(text))


def is_command(text: str) -> bool:
    """A request to do something in the world (a device, a timer, a booking, a message)."""
    return bool(_COMMAND.match(text) or _DEVICE_REQUEST.search(text))


def is_question(text: str) -> bool:
    return text.rstrip().endswith("?") or bool(_QUESTION_START.match(text))


def has_site_cue(text: str) -> bool:
    return bool(_SITE_CUES.search(text))


def claims_action(reply: str) -> bool:
    """The reply says something was (or is being) done: "I've turned off the lights", "I'll set
    a timer", "Your alarm is set". Refusals ("I can't turn off the lights") do not match."""
    for sentence in re.split(r"(?<=[.!?])\s+", reply):
        if _CLAIM.search(sentence) and not _NOT_ACTIONS.search(sentence):
            return True
    return False
