"""Can a recognised command still go on into a different action? Measured, not kept.

A person who pauses after "Turn off the light" may go on "in the bedroom"; after "Turn off the
kitchen light" or "What time is it" there is nothing a template could add that picks another
device or value. `Saturation.cannot_go_on(found)` says which, from the recogniser's
result and the home's configuration alone (no word lists):

- the slots the intent's templates can take are read from the templates themselves (hassil's
  expression trees, expansion rules followed);
- an intent that can take free text (a wildcard: a timer's name, a shopping item, a delayed
  command) can always go on;
- a command for devices must name its target in words: an area, or a device name that only
  one device of the home has (the site's own room, filled in silently, does not count);
- an intent that takes a value (brightness, temperature, a timer's minutes, ...) must have one
  said, and the words must not end on a number ("twenty" may become "twenty one").

bench/command_pauses.py measures a shorter end of turn for such commands; it cut more
commands paused in the middle than today's rule, so the server does not use it
(docs/performance.md, the command silence).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.intents.home import Home
from server.intents.recognizer import Recognized, normalise

# Slots that choose which device a command is for; any other slot carries a value, except
# these descriptors, which narrow a target the way the name or area already does.
TARGET_SLOTS = frozenset({"name", "area", "floor"})
DESCRIPTOR_SLOTS = frozenset({"device_class", "domain", "state"})


@dataclass(frozen=True)
class IntentSlots:
    """What one intent's templates can say: slot names, and which of them take free text."""

    slots: frozenset[str]
    free_text: frozenset[str]

    @property
    def targets(self) -> frozenset[str]:
        return self.slots & TARGET_SLOTS

    @property
    def values(self) -> frozenset[str]:
        return self.slots - TARGET_SLOTS - DESCRIPTOR_SLOTS - self.free_text


def intent_slots(intents: Any, names: Iterable[str]) -> dict[str, IntentSlots]:
    """The slots each named intent's templates refer to, from hassil's parsed `Intents`."""
    found: dict[str, IntentSlots] = {}
    for name in names:
        intent = intents.intents.get(name)
        if intent is None:
            continue
        references: set[tuple[str, bool]] = set()
        for data in intent.data:
            rules = {**intents.expansion_rules, **data.expansion_rules}
            for sentence in data.sentences:
                references |= _references(sentence, intents.slot_lists, rules, frozenset())
        found[name] = IntentSlots(
            frozenset(slot for slot, _ in references),
            frozenset(slot for slot, free in references if free),
        )
    return found


def _references(
    expr: Any, lists: Mapping[str, Any], rules: Mapping[str, Any], seen: frozenset[str]
) -> set[tuple[str, bool]]:
    """(slot name, takes free text) of every list an expression refers to, rules followed."""
    from hassil.expression import Group, ListReference, RuleReference
    from hassil.intents import WildcardSlotList

    if isinstance(expr, ListReference):
        return {(expr.slot_name, isinstance(lists.get(expr.list_name), WildcardSlotList))}
    if isinstance(expr, RuleReference):
        rule = rules.get(expr.rule_name)
        if rule is None or expr.rule_name in seen:
            return set()
        return _references(rule, lists, rules, seen | {expr.rule_name})
    if isinstance(expr, Group):
        found: set[tuple[str, bool]] = set()
        for item in expr.items:
            found |= _references(item, lists, rules, seen)
        return found
    if hasattr(expr, "expression"):  # a Sentence: its top expression
        return _references(expr.expression, lists, rules, seen)
    return set()


class Saturation:
    """Built once per recogniser (the templates are parsed already); thread-safe."""

    def __init__(self, intents: Any, home: Home, names: Iterable[str]) -> None:
        self.home = home
        self.schema = intent_slots(intents, names)

    def cannot_go_on(self, found: Recognized) -> bool:
        """True when no words after these could turn the command into another action."""
        schema = self.schema.get(found.intent)
        if schema is None or schema.free_text:
            return False
        said = {s.name: s for s in found.slots if s.text}
        if schema.targets and not self._target_named(said, found):
            return False
        if schema.values and not (schema.values & said.keys()):
            return False
        words = normalise(found.text).split()
        return not any(
            isinstance(s.value, int | float) and words[-len(s.text.split()) :] == s.text.split()
            for s in said.values()
            if words
        )

    def _target_named(self, said: Mapping[str, Any], found: Recognized) -> bool:
        if "area" in said or "floor" in said:
            return True
        name = said.get("name")
        if name is None:
            return False
        # The one device of that name in the home: no other room holds one.
        return len(self.home.named(str(name.value))) == 1 and len(found.targets) == 1
