"""Commands recognised with hassil and Home Assistant's English templates. Blocking, no asyncio.

The sentence templates and response templates come from the installed `home-assistant-intents`
package (nothing is downloaded); the names of devices and areas from the site's devices file
(`server/intents/home.py`). `IntentRecognizer.understand(text, site)` answers in a few
milliseconds with:

- `Recognized`: an intent with its slots and the devices it targets (resolved against the
  home), and for commands to the home the spoken confirmation, rendered from the packaged
  response template ("Turned off the kitchen light");
- `Refused`: a command chinwag will not carry out, with what to say ("I don't know a device
  called toaster."); it is published nowhere;
- None: not a command; the chat model answers.

Only whole-sentence matches of the templates count: a sentence that merely mentions a device
is not a command. Names a template leaves open (a device nobody configured) are accepted only
to refuse them, and only after a command verb at the start ("turn off the toaster").
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import ConfigError
from server.intents.home import Device, Home, spoken
from server.intents.number_doubt import numbers_in, spelled
from server.intents.repair import POLARITY, one_edit_candidates, template_vocabulary
from server.intents.synonyms import area_synonyms, device_synonyms

log = logging.getLogger(__name__)

# chinwag's own sentence templates, merged into Home Assistant's (docs/intents.md).
OWN_SENTENCES = Path(__file__).parent / "sentences"

# Intents chinwag answers itself (the clock, its timers).
LOCAL_INTENTS = frozenset(
    {
        "HassGetCurrentTime",
        "HassGetCurrentDate",
        "HassStartTimer",
        "HassCancelTimer",
        "HassCancelAllTimers",
        "HassTimerStatus",
        "HassPauseTimer",
        "HassUnpauseTimer",
        "HassIncreaseTimer",
        "HassDecreaseTimer",
        "HassNevermind",
    }
)
# Commands for the home: published (MQTT) for the home's automations to carry out.
HOME_INTENTS = frozenset(
    {
        "HassTurnOn",
        "HassTurnOff",
        "HassLightSet",
        "HassClimateSetTemperature",
        "HassSetPosition",
        "HassFanSetSpeed",
        "HassMediaPause",
        "HassMediaUnpause",
        "HassMediaNext",
        "HassMediaPrevious",
        "HassSetVolume",
        "HassMediaPlayerMute",
        "HassMediaPlayerUnmute",
        "HassVacuumStart",
        "HassVacuumReturnToBase",
        "HassLawnMowerStartMowing",
        "HassLawnMowerDock",
        "HassShoppingListAddItem",
    }
)
# Questions the templates recognise but chinwag cannot answer: it sees no device states and
# no weather service. An honest answer beats the chat model's guess.
UNAVAILABLE = {
    "HassGetWeather": "Sorry, I have no weather information here.",
    "HassGetState": "Sorry, I can't see the state of devices from here.",
    "HassClimateGetTemperature": "Sorry, I can't read the temperature from here.",
}
SUPPORTED = LOCAL_INTENTS | HOME_INTENTS | frozenset(UNAVAILABLE)

# Intents whose templates may capture free text (a wildcard): others never accept one.
WILDCARD_OK = frozenset(
    {
        "HassStartTimer",
        "HassCancelTimer",
        "HassTimerStatus",
        "HassPauseTimer",
        "HassUnpauseTimer",
        "HassIncreaseTimer",
        "HassDecreaseTimer",
        "HassShoppingListAddItem",
    }
)
# Commands whose unknown device name is refused rather than passed to the chat model.
REFUSABLE = frozenset({"HassTurnOn", "HassTurnOff", "HassLightSet", "HassSetPosition"})
COMMAND_VERBS = ("turn", "switch", "open", "close", "shut", "lock", "unlock", "dim", "brighten")
# First words of the supported commands' templates (not of questions): words so far that
# begin with one are likely a command (IntentRecognizer.begins_command).
COMMAND_STARTS = frozenset(
    {
        *COMMAND_VERBS,
        "set",
        "start",
        "stop",
        "cancel",
        "pause",
        "resume",
        "unpause",
        "continue",
        "mute",
        "unmute",
        "next",
        "skip",
        "previous",
        "add",
        "raise",
        "lower",
        "increase",
        "decrease",
        "change",
        "activate",
        "deactivate",
        "return",
        "dock",
        "mow",
        "vacuum",
        "timer",
        "never",
    }
)
MAX_UNKNOWN_NAME_WORDS = 4
# How alike (difflib's ratio) a misheard name must be to a configured one to stand for it:
# "reading land" -> "reading lamp" (0.92), "four lamp" -> "floor lamp" (0.84).
FUZZY_CUTOFF = 0.8
_NUMBER_WORDS = {str(n): spelled(n) for n in range(11)}  # "4 lamp" may be the "four lamp"

# Said before or after a command; removed before matching ("please turn off the light").
_POLITE_PREFIX = re.compile(
    r"^(?:(?:hey|ok|okay) (?:chinwag|computer)[, ]*)?"
    r"(?:(?:please|kindly|now|and|also|so|okay|ok|alright|hey|right then|right|hang on|actually"
    r"|oh|um|erm|excuse me)[, ]+)*"
    r"(?:(?:can|could|would|will) (?:you|ya)(?: please| possibly| kindly| just| go ahead and)*"
    r"(?: be able to)? |i(?:'d| would) like you to |i want you to |i(?:'d| would) like to "
    r"|i want to |i need you to |go ahead and |let's |do me a favou?r and "
    r"|be a (?:dear|love|star) and )?",
)
# Whisper hears "unlock", "unpause", "unmute" as "and lock", "and pause", "and mute"; the
# polite "and" would then be dropped and the opposite done.
UNLOCK_OR_LOCK = re.compile(r"^(?:and|an|in) (lock|pause|mute)\b", re.IGNORECASE)
# Sounds a one-word repair would drop before "lock", "pause", "mute" that may as well be the
# "un" of "unmute" ("I mute the TV." for "Unmute the TV."): asked, like "and lock".
_UN_SOUNDS = frozenset({"i", "i'm", "a", "un", "on", "and", "an", "in"})
# A question tag ("..., will you?") asks for the same thing as the command without it.
_POLITE_SUFFIX = re.compile(
    r"(?:[, ]+(?:please|pls|(?:and )?thanks(?: a lot)?|(?:and )?thank you(?: very much)?|ta"
    r"(?: very much)?|cheers|mate|now|right now|for me|(?:will|would|could|can) (?:you|ya)"
    r"|won't you|would you mind|if you (?:would|could|can|please|don't mind|do not mind)"
    r"|if possible|ok|okay|alright))+$"
)

# "Would you mind turning off the light?" asks for "turn off the light" (the prefix above has
# already taken "would you"): the verbs of the home's commands, back to the form they take.
_MIND_DOING = {
    "turning": "turn",
    "switching": "switch",
    "setting": "set",
    "locking": "lock",
    "unlocking": "unlock",
    "opening": "open",
    "closing": "close",
    "pausing": "pause",
    "unpausing": "unpause",
    "muting": "mute",
    "unmuting": "unmute",
    "cancelling": "cancel",
    "canceling": "cancel",
    "adding": "add",
    "dimming": "dim",
    "starting": "start",
    "stopping": "stop",
    "resuming": "resume",
    "putting": "put",
    "making": "make",
}
_MIND = re.compile(r"^(?:(?:would|do) you )?mind (?:just )?(" + "|".join(_MIND_DOING) + r") ")


def normalise(text: str, *, fillers: bool = True) -> str:
    """Lower case, no end punctuation or filler, single spaces: what the templates expect."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"[\"“”!?¿¡;:()\[\]]", " ", text)
    text = re.sub(r"(?<!\d)[.,](?!\d)", " ", text)  # 21.5 and 1,000 keep theirs
    text = " ".join(text.split())
    if not fillers:
        return text
    text = _POLITE_PREFIX.sub("", text, count=1)
    text = _MIND.sub(lambda m: _MIND_DOING[m.group(1)] + " ", text, count=1)
    text = _POLITE_SUFFIX.sub("", text)
    return text.strip()


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One filled slot: `name` is the template's slot, `value` the resolved value, `text`
    the words said for it ('' when it came from the site's context, such as its area)."""

    name: str
    value: str | int | float
    text: str


@dataclass(frozen=True)
class Target:
    entity_id: str
    name: str
    domain: str
    area: str | None

    @classmethod
    def of(cls, device: Device) -> Target:
        return cls(device.entity_id, device.name, device.domain, device.area)


@dataclass(frozen=True)
class Recognized:
    intent: str
    text: str  # the input as given
    slots: tuple[Slot, ...]
    response: str  # the response template's key
    targets: tuple[Target, ...] = ()
    area: str | None = None  # the area the command is about, if any
    speech: str = ""  # the confirmation (commands for the home); local intents render later

    @property
    def local(self) -> bool:
        return self.intent in LOCAL_INTENTS

    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)


@dataclass(frozen=True)
class Refused:
    """Recognised but not carried out (published nowhere): what to say, and why."""

    intent: str | None
    text: str
    speech: str
    reason: str  # unknown_device, unknown_area, ambiguous, not_available, ambiguous_number
    # A question's answers ("unlock", "40") and the command each one stands for: the next
    # turn may settle it with one of them (settled_by).
    choices: tuple[tuple[str, str], ...] = ()


Understanding = Recognized | Refused | None

MAX_ANSWER_WORDS = 6  # "no, I said forty percent"; longer is a new sentence, not an answer


def settled_by(answer: str, choices: Sequence[tuple[str, str]]) -> str | None:
    """The command a short answer to a question picks ("Sorry, did you say 4 or 40?" ->
    "forty" or "40 percent"; "... lock or unlock?" -> "unlock it"): exactly one choice named,
    a number as a number alone."""
    words = normalise(answer, fillers=False).split()
    if not words or len(words) > MAX_ANSWER_WORDS:
        return None
    numbers = numbers_in(" ".join(words))
    picked = {
        command
        for key, command in choices
        if (numbers == [int(key)] if key.isdigit() else key in words)
    }
    return picked.pop() if len(picked) == 1 else None


def _lock_or_unlock(text: str, verb: str, rest: str) -> Refused:
    """Asked, not done either way: "and lock the front door" may be either."""
    return Refused(
        None,
        text,
        f"Sorry, did you say {verb} or un{verb}?",
        "ambiguous",
        ((verb, verb + rest), ("un" + verb, "un" + verb + rest)),
    )


def command_key(found: Recognized) -> tuple[Any, ...]:
    """What makes two recognised commands the same command."""
    return (
        found.intent,
        frozenset(t.entity_id for t in found.targets),
        frozenset((s.name, str(s.value).lower()) for s in found.slots),
    )


def deciding_words(text: str) -> tuple[str, ...]:
    """The words of `text` that decide what a command does, in order (on, off, lock, ...)."""
    return tuple(w for w in normalise(text, fillers=False).split() if w in POLARITY)


# --- response templates ------------------------------------------------------------------------


@dataclass
class Responses:
    """Home Assistant's packaged response templates (Jinja2), rendered in a sandbox."""

    templates: Mapping[str, Mapping[str, str]]
    errors: Mapping[str, str]
    _compiled: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self._env = ImmutableSandboxedEnvironment(autoescape=False)

    def _template(self, group: str, key: str, source: str) -> Any:
        found = self._compiled.get((group, key))
        if found is None:
            found = self._compiled[(group, key)] = self._env.from_string(source)
        return found

    def render(self, intent: str, key: str, variables: Mapping[str, Any]) -> str:
        source = self.templates.get(intent, {}).get(key)
        if source is None:
            return ""
        return " ".join(self._template(intent, key, source).render(**variables).split())

    def error(self, key: str, **variables: Any) -> str:
        source = self.errors.get(key)
        if source is None:
            return "Sorry, I can't do that."
        return " ".join(self._template("errors", key, source).render(**variables).split())


# Responses that only say what happens ("Opening"): the device's name is added.
_BARE_RESPONSES = {"Opening", "Closing", "Locking", "Unlocking", "Activated", "Started", "Pressed"}


def name_the_device(speech: str, intent: str, targets: tuple[Target, ...]) -> str:
    """ "Turned off the light" -> "Turned off the kitchen light" when one device was named:
    the packaged templates name the domain only, and a speaker should say which device."""
    if len(targets) != 1 or intent not in ("HassTurnOn", "HassTurnOff"):
        return speech
    name = targets[0].name
    the_name = name if spoken(name).startswith("the ") else f"the {name}"
    if speech in _BARE_RESPONSES:
        return f"{speech} {the_name}"
    head, sep, _ = speech.rpartition(" the ")
    if sep and head in ("Turned on", "Turned off"):
        return f"{head} {the_name}"
    return speech


@dataclass(frozen=True)
class _State:
    """What a response template reads of a device (`state.domain`, `state.name`)."""

    domain: str
    name: str
    state: str = ""
    state_with_unit: str = ""


# --- the recognizer ----------------------------------------------------------------------------


class IntentRecognizer:
    """hassil on the packaged English templates, narrowed to the intents chinwag supports and
    the domains the home has. Load once; `understand` is thread-safe (no shared state
    changes after warm_up)."""

    def __init__(
        self,
        home: Home,
        language: str = "en",
        *,
        repair: bool = True,
        own_sentences: bool = True,
        sentences: Sequence[Path] = (),
    ) -> None:
        import home_assistant_intents
        from hassil import Intents, SlotList, TextSlotList, filter_intents

        data = home_assistant_intents.get_intents(language)
        if data is None:
            raise ValueError(f"home-assistant-intents has no templates for {language!r}")
        own = OWN_SENTENCES / f"{language}.yaml"
        extra = [own] if own_sentences and own.exists() else []
        data = merge_sentences(data, [*extra, *sentences])
        self.home = home
        self.language = language
        everything = Intents.from_dict(data)
        # Timers, the clock and the shopping list need no device; device commands need their
        # domain in the home.
        self.intents = filter_intents(
            everything,
            intent_names=SUPPORTED,
            domains=home.domains or None,
            keep_domainless=True,
        )
        responses = data.get("responses", {})
        self.responses = Responses(responses.get("intents", {}), responses.get("errors", {}))
        names: list[tuple[str, str, dict[str, str]]] = [
            (alias, device.name, {"domain": device.domain})
            for device in home.devices
            for alias in (device.name, *device.aliases)
        ]
        areas = [(alias, area.name) for area in home.areas for alias in (area.name, *area.aliases)]
        if own_sentences:
            # "telly" for the home's one TV, "sitting room" for its one living room.
            names += [(w, name, {"domain": d}) for w, name, d in device_synonyms(home)]
            areas += area_synonyms(home)
        floors = sorted({(a.floor, a.floor) for a in home.areas if a.floor})
        # Every spoken name, for repairing a misheard one.
        self._names = sorted(
            {spoken(alias) for alias, *_ in names} | {spoken(alias) for alias, _ in areas}, key=len
        )
        # The words a one-word repair may put in (repair.py): the templates' and the home's.
        self.repair = repair
        self._vocabulary = template_vocabulary(data, SUPPORTED) | frozenset(
            word for name in self._names for word in name.split()
        )
        self.slot_lists: dict[str, SlotList] = {
            "name": TextSlotList.from_tuples(names, allow_template=False),
            "area": TextSlotList.from_tuples(areas, allow_template=False),
            "floor": TextSlotList.from_tuples(floors, allow_template=False),
        }

    def warm_up(self) -> None:
        """hassil builds its matchers on first use (about 0.7 s): do it at load time."""
        for text in ("turn off the light", "what time is it", "set a timer for 1 minute", "hi"):
            self.understand(text, None)

    # --- matching -----------------------------------------------------------------------------

    def begins_command(self, said: str) -> bool:
        """Whether words so far begin like a command ("turn off the", "please set a"): a
        guess from the first word, for deciding what work to do while someone still speaks."""
        words = normalise(said).split()
        return bool(words) and words[0] in COMMAND_STARTS

    def _match(self, text: str, area: str | None, *, unmatched: bool) -> Any:
        from hassil import recognize_best

        context = {"area": area} if area else None
        return recognize_best(
            text,
            self.intents,
            slot_lists=self.slot_lists,
            intent_context=context,
            language=self.language,
            allow_unmatched_entities=unmatched,
            best_slot_name="name",
        )

    def understand(
        self, text: str, site: str | None, *, repair: bool | None = None
    ) -> Understanding:
        """What `text` said at `site` is; `repair`: try one-word repairs (None: as loaded)."""
        said = normalise(text)
        if not said or len(said) > 200:
            return None
        undone = UNLOCK_OR_LOCK.match(text.strip())
        if undone:
            # Asking beats doing the opposite of what was said.
            rest = text.strip()[undone.end() :]
            return _lock_or_unlock(text, undone.group(1).lower(), rest)
        area = self.home.area_of_site(site)
        area_name = area.name if area is not None else None
        result = self._match(said, area_name, unmatched=False)
        if result is None:
            found = self._unmatched(text, said, area_name)
        else:
            found = self._understood(text, result)
        if found is None and (self.repair if repair is None else repair):
            return self._one_word_off(text, area_name)
        return found

    def _one_word_off(self, text: str, area: str | None) -> Understanding:
        """A command one misheard word away (repair.py): taken only when every repair that
        makes a whole command makes the same one (same intent, devices and slots)."""
        commands: dict[tuple[Any, ...], tuple[Recognized, str]] = {}
        # Before the fillers go: "and 5 minutes to the timer" is "add 5 minutes ...".
        said = normalise(text, fillers=False)
        first, _, rest = said.partition(" ")
        undone = UNLOCK_OR_LOCK.match("and " + rest) if first in _UN_SOUNDS else None
        if undone and self._match(normalise(rest), area, unmatched=False) is not None:
            verb = undone.group(1).lower()
            return _lock_or_unlock(text, verb, rest[len(verb) :])
        for candidate in one_edit_candidates(said, self._vocabulary):
            repaired = normalise(candidate.text)
            if not repaired:
                continue
            result = self._match(repaired, area, unmatched=False)
            if result is None:
                continue
            found = self._understood(text, result)
            if not isinstance(found, Recognized):
                continue
            key = (
                found.intent,
                frozenset(t.entity_id for t in found.targets),
                frozenset((s.name, str(s.value)) for s in found.slots),
            )
            commands.setdefault(key, (found, candidate.edit))
        if len(commands) != 1:
            if commands:
                log.debug("%r: %d different repairs, none taken", said, len(commands))
            return None
        found, edit = next(iter(commands.values()))
        log.debug("%r repaired (%s): %s", said, edit, found.intent)
        return found

    def _understood(self, text: str, result: Any) -> Understanding:
        if _names_only(result):
            # "The television." alone turns it on in Home Assistant's templates; heard by a
            # speaker it is as likely the end of "Mute the television" misheard.
            return None
        intent = result.intent.name
        if any(e.is_wildcard for e in result.entities_list) and intent not in WILDCARD_OK:
            return None
        if intent in UNAVAILABLE:
            return Refused(intent, text, UNAVAILABLE[intent], "not_available")
        slots = tuple(_slot(e) for e in result.entities_list)
        recognized = Recognized(intent, text, slots, result.response or "default")
        if recognized.local:
            return recognized
        return self._resolve(recognized)

    def _unmatched(self, text: str, said: str, area: str | None) -> Understanding:
        """A template matched but for a name nobody configured, or a room it needs."""
        result = self._match(said, area, unmatched=True)
        if result is None:
            return None
        intent = result.intent.name
        unknown = {
            name: e.text.strip()
            for name, e in result.unmatched_entities.items()
            if getattr(e, "text", "").strip() and e.text.strip() != "<missing>"
        }
        missing = {name for name, e in result.unmatched_entities.items() if name not in unknown}
        if any(e.is_wildcard for e in result.entities_list) and intent not in WILDCARD_OK:
            return None
        if intent in REFUSABLE and said.split()[0] in COMMAND_VERBS and unknown:
            # A device or room misheard ("turn on the 4 lamp"): the closest configured name.
            repaired = self._repair(said)
            if repaired is not None:
                fixed = self._match(repaired, area, unmatched=False)
                if fixed is not None:
                    return self._understood(text, fixed)
        if intent in REFUSABLE and set(unknown) == {"name"} and missing <= {"domain", "area"}:
            name = unknown["name"]
            words = name.split()
            if (
                said.split()[0] in COMMAND_VERBS
                and result.text_chunks_matched > 0
                and words[0] not in COMMAND_VERBS
                and len(words) <= MAX_UNKNOWN_NAME_WORDS
            ):
                return Refused(
                    intent, text, f"I don't know a device called {name}.", "unknown_device"
                )
            return None
        area_said = unknown.get("area", "").removeprefix("the ").strip()
        if (
            intent in REFUSABLE
            and set(unknown) == {"area"}
            and said.split()[0] in COMMAND_VERBS
            and area_said not in ("", "the", "all", "a", "my", "every")
            and len(area_said.split()) <= MAX_UNKNOWN_NAME_WORDS
        ):
            speech = self.responses.error("no_area", area=area_said)
            return Refused(intent, text, speech, "unknown_area")
        if not unknown and missing == {"area"} and intent in HOME_INTENTS:
            # "Turn on the lights" where the site has no room: the one device of its kind,
            # or ask which room.
            slots = tuple(_slot(e) for e in result.entities_list)
            return self._resolve(Recognized(intent, text, slots, result.response or "default"))
        return None

    def _repair(self, said: str) -> str | None:
        """`said` with the words most like a configured device or room name replaced by it
        (digits read as words first), or None when nothing comes close enough."""
        words = [_NUMBER_WORDS.get(w, w) for w in said.split()]
        best: tuple[float, int, int, str] | None = None
        for known in self._names:
            size = len(known.split())
            for start in range(1, len(words) - size + 1):  # never the command verb
                window = " ".join(words[start : start + size])
                if window == known:
                    continue
                ratio = difflib.SequenceMatcher(None, window, known).ratio()
                if ratio >= FUZZY_CUTOFF and (best is None or ratio > best[0]):
                    best = (ratio, start, size, known)
        if best is None:
            return None
        _, start, size, known = best
        return " ".join([*words[:start], known, *words[start + size :]])

    # --- targets ------------------------------------------------------------------------------

    def _resolve(self, recognized: Recognized) -> Understanding:
        home, intent = self.home, recognized.intent
        if intent == "HassShoppingListAddItem":
            return self._confirm(recognized, ())
        name = recognized.slot("name")
        area_slot = recognized.slot("area")
        domain_slot = recognized.slot("domain")
        area = home.area(str(area_slot.value)) if area_slot is not None else None
        domains = _domains_of(intent, domain_slot)
        if area is not None and area_slot is not None and not area_slot.text:
            # The room came from the site, not from what was said: "set the temperature to
            # 21 degrees" in the kitchen means the home's thermostat when the kitchen has none.
            here = [
                d
                for d in home.devices
                if _in(d, area.name) and (not domains or d.domain in domains)
            ]
            if name is None and not here:
                area = None
        if name is not None:
            found = [d for d in home.named(str(name.value)) if area is None or _in(d, area.name)]
            if not found:
                said = name.text or str(name.value)
                speech = f"I don't know a device called {said}."
                return Refused(intent, recognized.text, speech, "unknown_device")
        else:
            found = [
                d
                for d in home.devices
                if (not domains or d.domain in domains) and (area is None or _in(d, area.name))
            ]
            if not found:
                what = (domains[0] if domains else "device").replace("_", " ")
                if area is not None:
                    speech = self.responses.error("no_domain_in_area", domain=what, area=area.name)
                else:
                    speech = self.responses.error("no_domain", domain=what)
                return Refused(intent, recognized.text, speech, "unknown_device")
            if area is None and len(found) > 1 and not recognized.response.endswith("_all"):
                rooms = sorted({d.area for d in found if d.area})
                speech = "Which room do you mean" + (
                    f": the {_or_list(rooms)}?" if 1 < len(rooms) <= 4 else "?"
                )
                return Refused(intent, recognized.text, speech, "ambiguous")
        targets = tuple(Target.of(d) for d in found)
        if area is None and len({t.area for t in targets}) == 1:
            area = home.area(targets[0].area)
        resolved = Recognized(
            intent,
            recognized.text,
            recognized.slots,
            recognized.response,
            targets,
            area.name if area is not None else None,
        )
        return self._confirm(resolved, targets)

    def _confirm(self, recognized: Recognized, targets: tuple[Target, ...]) -> Recognized:
        variables: dict[str, Any] = {"slots": slot_variables(recognized.slots)}
        if targets:
            first = targets[0]
            variables["state"] = _State(first.domain, first.name)
            variables["query"] = {"matched": [_State(t.domain, t.name) for t in targets]}
        try:
            speech = self.responses.render(recognized.intent, recognized.response, variables)
        except Exception as exc:  # a template that needs state chinwag does not have
            log.debug("response %s/%s: %s", recognized.intent, recognized.response, exc)
            speech = ""
        speech = name_the_device(speech, recognized.intent, targets) or "Done."
        return Recognized(
            recognized.intent,
            recognized.text,
            recognized.slots,
            recognized.response,
            targets,
            recognized.area,
            speech,
        )

    def render_local(self, recognized: Recognized, extra: Mapping[str, Any]) -> str:
        """A local intent's answer from its packaged template, with chinwag's own values
        (the time, the date, the timers) as slots."""
        slots = {**slot_variables(recognized.slots), **extra}
        return self.responses.render(recognized.intent, recognized.response, {"slots": slots})


def merge_sentences(data: Mapping[str, Any], files: Sequence[Path]) -> dict[str, Any]:
    """Home Assistant's templates with each file's merged in, as Home Assistant merges
    custom_sentences (hassil's merge_dict: intents' `data` lists and `skip_words` extended,
    `lists` and `expansion_rules` added or replaced by name). A bad file is a ConfigError."""
    import copy

    import yaml  # type: ignore[import-untyped]  # hassil's own dependency
    from hassil.util import merge_dict

    merged = copy.deepcopy(dict(data))
    for path in files:
        try:
            custom = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"[intents] sentences: cannot read {path}: {exc}") from exc
        if not isinstance(custom, dict) or not isinstance(custom.get("intents", {}), dict):
            raise ConfigError(f"[intents] sentences: {path} is not a hassil sentence file")
        custom = {k: v for k, v in custom.items() if k != "language"}
        try:
            merge_dict(merged, custom)
        except AssertionError as exc:
            raise ConfigError(f"[intents] sentences: {path} does not fit: {exc}") from exc
    return merged


def slot_variables(slots: tuple[Slot, ...]) -> dict[str, Any]:
    """Slots as Home Assistant's templates read them: the words said, else the value."""
    return {s.name: s.text.strip() or s.value for s in slots}


def _names_only(result: Any) -> bool:
    """A template that is only a name ("[<the>] {name}": saying a device turns it on in Home
    Assistant): not a command here, heard or repaired."""
    template = result.intent_sentence.text if result.intent_sentence is not None else ""
    return not re.sub(r"\[?<the>\]?|\{name\}|\{area\}|[\s\[\]()|]", "", template)


def _slot(entity: Any) -> Slot:
    value = entity.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, str | int | float):
        value = str(value)
    return Slot(entity.name, value, (entity.text or "").strip())


def _domains_of(intent: str, domain: Slot | None) -> list[str]:
    if domain is not None:
        return [str(domain.value)]
    return {
        "HassClimateSetTemperature": ["climate"],
        "HassLightSet": ["light"],
        "HassFanSetSpeed": ["fan"],
        "HassMediaPause": ["media_player"],
        "HassMediaUnpause": ["media_player"],
        "HassMediaNext": ["media_player"],
        "HassMediaPrevious": ["media_player"],
        "HassSetVolume": ["media_player"],
        "HassMediaPlayerMute": ["media_player"],
        "HassMediaPlayerUnmute": ["media_player"],
        "HassVacuumStart": ["vacuum"],
        "HassVacuumReturnToBase": ["vacuum"],
        "HassLawnMowerStartMowing": ["lawn_mower"],
        "HassLawnMowerDock": ["lawn_mower"],
        "HassSetPosition": ["cover", "valve"],
    }.get(intent, [])


def _in(device: Device, area: str) -> bool:
    return device.area is not None and spoken(device.area) == spoken(area)


def _or_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def now_slots(now: dt.datetime) -> dict[str, Any]:
    """The clock as the time and date templates read it."""
    return {"time": now.time(), "date": now.date()}
