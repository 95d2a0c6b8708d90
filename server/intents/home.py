"""The home chinwag may act on: areas and devices, from a TOML file. Pure code.

    [[areas]]
    name = "kitchen"
    aliases = ["cooking area"]
    sites = ["kitchen-speaker"]     # chinwag sites in this room: "turn on the light" there

    [[devices]]
    id = "light.kitchen"            # what automations see (default: domain.name_with_underscores)
    name = "kitchen light"
    aliases = ["kitchen lamp"]
    domain = "light"
    area = "kitchen"

See prompts/devices.example.toml and docs/intents.md.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.errors import ConfigError

# Home Assistant's entity domains that the packaged templates command.
Domain = Literal[
    "light",
    "switch",
    "fan",
    "cover",
    "lock",
    "climate",
    "media_player",
    "vacuum",
    "lawn_mower",
    "scene",
    "script",
    "valve",
    "humidifier",
    "water_heater",
    "input_boolean",
    "button",
]

Name = str  # spoken names: letters, digits, spaces, apostrophes, hyphens

_NAME = re.compile(r"^[\w][\w' .-]{0,63}$")
MAX_DEVICES = 1000
MAX_AREAS = 200


def spoken(name: str) -> str:
    """A name as it is matched: lower case, single spaces."""
    return " ".join(name.lower().split())


def _check_names(names: list[str], what: str) -> None:
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{what} {name!r}: 1-64 letters, digits, spaces, ' . -")


class Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    aliases: tuple[Name, ...] = ()
    floor: Name | None = None
    # chinwag sites (a session's `site`, an MQTT site) in this room.
    sites: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _names(self) -> Area:
        _check_names([self.name, *self.aliases], "area")
        return self


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    domain: Domain
    id: str | None = Field(None, min_length=1, max_length=255)
    aliases: tuple[Name, ...] = ()
    area: Name | None = None

    @model_validator(mode="after")
    def _names(self) -> Device:
        _check_names([self.name, *self.aliases], "device")
        return self

    @property
    def entity_id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", spoken(self.name)).strip("_")
        return self.id or f"{self.domain}.{slug}"


class Home(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    areas: tuple[Area, ...] = Field((), max_length=MAX_AREAS)
    devices: tuple[Device, ...] = Field((), max_length=MAX_DEVICES)

    @model_validator(mode="after")
    def _consistent(self) -> Home:
        known = {spoken(a.name) for a in self.areas}
        for device in self.devices:
            if device.area is not None and spoken(device.area) not in known:
                raise ValueError(f"device {device.name!r}: no area called {device.area!r}")
        ids = [d.entity_id for d in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError("two devices have the same id")
        return self

    def area(self, name: str | None) -> Area | None:
        if name is None:
            return None
        wanted = spoken(name)
        return next(
            (a for a in self.areas if wanted in {spoken(n) for n in (a.name, *a.aliases)}), None
        )

    def area_of_site(self, site: str | None) -> Area | None:
        """The room a site is in: listed in an area's `sites`, or named like the area."""
        if site is None:
            return None
        for area in self.areas:
            if site in area.sites:
                return area
        return self.area(site.replace("-", " ").replace("_", " "))

    def named(self, name: str) -> list[Device]:
        wanted = spoken(name)
        return [d for d in self.devices if wanted in {spoken(n) for n in (d.name, *d.aliases)}]

    @property
    def domains(self) -> set[str]:
        return {d.domain for d in self.devices}

    def asr_prompt(self) -> str | None:
        """Whisper's previous-text prompt for a session that takes commands: the home's device
        and area names, said as a command. Whisper then hears "turn on the heater" rather than
        "the fever" (docs/performance.md: spoken command accuracy with and without it)."""
        said = [*(d.name for d in self.devices), *(a.name for a in self.areas)]
        names = list(dict.fromkeys(said))
        return f"Turn on the {', '.join(names)}." if names else None


def load_home(path: Path | None) -> Home:
    """The home of a devices file; an empty home without one. ConfigError when it is wrong."""
    if path is None:
        return Home()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Home.model_validate(data)
    except FileNotFoundError as exc:
        raise ConfigError(f"[intents] devices: file not found: {path}") from exc
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"[intents] devices {path}: {exc}") from exc
