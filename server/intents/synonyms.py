"""Everyday words for a kind of device or room ("telly", "sitting room"): a name the home
did not list but people use all the time. Pure code.

A synonym stands for a device or room only when the home has exactly one that it can mean
(one television, one living room) and nobody configured the word already; otherwise it is
left out, and a command that says it is refused or goes to the chat model as before.
"""

from __future__ import annotations

from server.intents.home import Home, spoken

# A word said for the one device whose name or alias is one of the keys' words.
DEVICE_WORDS: dict[str, tuple[str, ...]] = {
    "telly": ("tv", "television", "telly"),
    "hoover": ("vacuum", "vacuum cleaner", "robot vacuum", "hoover"),
    "aircon": ("air conditioner", "air conditioning", "ac", "aircon"),
}
# A word said for the one room whose name or alias is one of these.
AREA_WORDS: dict[str, tuple[str, ...]] = {
    "lounge": ("living room", "sitting room", "lounge", "front room"),
    "sitting room": ("living room", "sitting room", "lounge", "front room"),
    "front room": ("living room", "sitting room", "lounge", "front room"),
    "living room": ("living room", "sitting room", "lounge", "front room"),
    "loo": ("toilet", "wc", "loo", "downstairs toilet"),
    "landing": ("upstairs hallway", "landing", "upstairs hall"),
}


def _ends_in(name: str, kinds: tuple[str, ...]) -> bool:
    """'living room tv' is a tv; 'tv stand light' is not."""
    said = spoken(name)
    return any(said == kind or said.endswith(" " + kind) for kind in kinds)


def device_synonyms(home: Home) -> list[tuple[str, str, str]]:
    """(word, device name, domain) for each everyday word that means exactly one device."""
    taken = {spoken(n) for d in home.devices for n in (d.name, *d.aliases)}
    taken |= {spoken(n) for a in home.areas for n in (a.name, *a.aliases)}
    found: list[tuple[str, str, str]] = []
    for word, kinds in DEVICE_WORDS.items():
        if word in taken:
            continue
        meant = [d for d in home.devices if any(_ends_in(n, kinds) for n in (d.name, *d.aliases))]
        if len(meant) == 1:
            found.append((word, meant[0].name, meant[0].domain))
    return found


def area_synonyms(home: Home) -> list[tuple[str, str]]:
    """(word, area name) for each everyday word that means exactly one room."""
    taken = {spoken(n) for a in home.areas for n in (a.name, *a.aliases)}
    taken |= {spoken(n) for d in home.devices for n in (d.name, *d.aliases)}
    found: list[tuple[str, str]] = []
    for word, kinds in AREA_WORDS.items():
        if word in taken:
            continue
        meant = [a for a in home.areas if any(spoken(n) in kinds for n in (a.name, *a.aliases))]
        if len(meant) == 1:
            found.append((word, meant[0].name))
    return found
