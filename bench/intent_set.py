"""The labelled set of `make bench-intents` (bench/intent_accuracy.py), on the demo home of
prompts/devices.example.toml, as said at a site in the kitchen.

Each item: what is said, the intent expected (None: chit-chat, which must reach the model;
"refused": a device nobody configured, refused and published nowhere), the slots and devices
expected, whether Home Assistant's templates cover the phrasing, and what is typed first in the
same session (a timer to cancel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SITE = "kitchen"
REFUSED = "refused"


@dataclass(frozen=True)
class Item:
    text: str
    intent: str | None
    slots: dict[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ()
    covered: bool = True  # a phrasing the packaged templates cover
    setup: str | None = None  # typed first in the same session

    @property
    def kind(self) -> str:
        if self.intent is None:
            return "chit-chat"
        if self.intent == REFUSED:
            return "refusal"
        return "command" if self.covered else "paraphrase"


K, LR_CEIL, LR_LAMP, BED, DESK = (
    "light.kitchen",
    "light.living_room_ceiling",
    "light.living_room_floor_lamp",
    "light.bedroom",
    "light.office_desk_lamp",
)
ALL_LIGHTS = (K, LR_CEIL, LR_LAMP, BED, DESK)
COFFEE, HEATER, FAN = "switch.coffee_machine", "switch.office_heater", "fan.bedroom_ceiling"
TV, THERMO, DOOR, GARAGE = (
    "media_player.living_room_tv",
    "climate.thermostat",
    "lock.front_door",
    "cover.garage_door",
)
TIMER = "set a timer for 10 minutes"

ITEMS: list[Item] = [
    # --- commands for the home --------------------------------------------------------------
    Item("Turn off the kitchen light.", "HassTurnOff", {"name": "kitchen light"}, (K,)),
    Item("Turn on the kitchen light.", "HassTurnOn", {"name": "kitchen light"}, (K,)),
    Item("Switch off the coffee machine.", "HassTurnOff", {"name": "coffee machine"}, (COFFEE,)),
    Item("Switch on the coffee maker.", "HassTurnOn", {"name": "coffee machine"}, (COFFEE,)),
    Item("Turn on the floor lamp.", "HassTurnOn", {"name": "floor lamp"}, (LR_LAMP,)),
    Item("Turn off the reading lamp.", "HassTurnOff", {"name": "floor lamp"}, (LR_LAMP,)),
    Item("Turn on the ceiling light.", "HassTurnOn", {"name": "ceiling light"}, (LR_CEIL,)),
    Item("Turn the bedroom light off.", "HassTurnOff", {"name": "bedroom light"}, (BED,)),
    Item("Turn the bedroom light on.", "HassTurnOn", {"name": "bedroom light"}, (BED,)),
    Item("Turn off the desk lamp.", "HassTurnOff", {"name": "desk lamp"}, (DESK,)),
    Item("Turn on the heater.", "HassTurnOn", {"name": "heater"}, (HEATER,)),
    Item("Turn off the heater.", "HassTurnOff", {"name": "heater"}, (HEATER,)),
    Item("Turn on the ceiling fan.", "HassTurnOn", {"name": "ceiling fan"}, (FAN,)),
    Item("Turn off the fan.", "HassTurnOff", {"name": "ceiling fan"}, (FAN,)),
    Item("Turn on the television.", "HassTurnOn", {"name": "tv"}, (TV,)),
    Item(
        "Turn off the lights in the living room.",
        "HassTurnOff",
        {"area": "living room"},
        (LR_CEIL, LR_LAMP),
    ),
    Item("Turn on the lights in the bedroom.", "HassTurnOn", {"area": "bedroom"}, (BED,)),
    Item("Turn off the office lights.", "HassTurnOff", {"area": "office"}, (DESK,)),
    Item(
        "Turn on the living room lights.", "HassTurnOn", {"area": "living room"}, (LR_CEIL, LR_LAMP)
    ),
    Item("Turn off all the lights.", "HassTurnOff", {"domain": "light"}, ALL_LIGHTS),
    Item("Turn on all the lights.", "HassTurnOn", {}, ALL_LIGHTS, covered=False),
    Item("Turn on the light.", "HassTurnOn", {"area": "kitchen"}, (K,)),
    Item("Turn off the lights.", "HassTurnOff", {"area": "kitchen"}, (K,)),
    Item("Kitchen light off.", "HassTurnOff", {"name": "kitchen light"}, (K,)),
    Item("Lock the front door.", "HassTurnOn", {"name": "front door"}, (DOOR,)),
    Item("Unlock the front door.", "HassTurnOff", {"name": "front door"}, (DOOR,)),
    Item("Open the garage door.", "HassTurnOn", {"name": "garage door"}, (GARAGE,)),
    Item("Close the garage door.", "HassTurnOff", {"name": "garage door"}, (GARAGE,)),
    Item(
        "Set the bedroom light to 50 percent.",
        "HassLightSet",
        {"name": "bedroom light", "brightness": 50},
        (BED,),
    ),
    Item("Set the desk lamp to 80 percent.", "HassLightSet", {"brightness": 80}, (DESK,)),
    Item("Turn the kitchen light red.", "HassLightSet", {"color": "red"}, (K,)),
    Item(
        "Set the brightness in the living room to 40 percent.",
        "HassLightSet",
        {"area": "living room", "brightness": 40},
        (LR_CEIL, LR_LAMP),
    ),
    Item(
        "Set the temperature to 21 degrees.",
        "HassClimateSetTemperature",
        {"temperature": 21},
        (THERMO,),
    ),
    Item(
        "Set the thermostat to 19 degrees.",
        "HassClimateSetTemperature",
        {"temperature": 19},
        (THERMO,),
    ),
    Item("Pause the TV.", "HassMediaPause", {}, (TV,)),
    Item("Resume the TV.", "HassMediaUnpause", {}, (TV,)),
    Item("Next track.", "HassMediaNext", {}, (TV,)),
    Item("Mute the TV.", "HassMediaPlayerMute", {}, (TV,)),
    Item("Set the TV volume to 30 percent.", "HassSetVolume", {"volume_level": 30}, (TV,)),
    Item("Add milk to my shopping list.", "HassShoppingListAddItem", {"item": "milk"}),
    Item("Add eggs to the shopping list.", "HassShoppingListAddItem", {"item": "eggs"}),
    Item("Please turn off the kitchen light.", "HassTurnOff", {"name": "kitchen light"}, (K,)),
    Item("Could you turn on the bedroom light?", "HassTurnOn", {"name": "bedroom light"}, (BED,)),
    Item("Can you switch off the heater, please?", "HassTurnOff", {"name": "heater"}, (HEATER,)),
    Item("I want to turn on the floor lamp.", "HassTurnOn", {"name": "floor lamp"}, (LR_LAMP,)),
    # --- what chinwag answers itself --------------------------------------------------------
    Item("What time is it?", "HassGetCurrentTime"),
    Item("What's the time?", "HassGetCurrentTime"),
    Item("What is the date today?", "HassGetCurrentDate"),
    Item("What's today's date?", "HassGetCurrentDate"),
    Item("Set a timer for 5 minutes.", "HassStartTimer", {"minutes": 5}),
    Item("Set a timer for 10 seconds.", "HassStartTimer", {"seconds": 10}),
    Item("Start a 3 minute timer.", "HassStartTimer", {"minutes": 3}),
    Item("Set a timer for 1 hour.", "HassStartTimer", {"hours": 1}),
    Item(
        "Set a timer for 2 minutes and 30 seconds.",
        "HassStartTimer",
        {"minutes": 2, "seconds": 30},
    ),
    Item("Set a timer for 10 minutes named pasta.", "HassStartTimer", {"minutes": 10}),
    Item("How much time is left on the timer?", "HassTimerStatus", setup=TIMER),
    Item("Cancel the timer.", "HassCancelTimer", setup=TIMER),
    Item("Cancel all timers.", "HassCancelAllTimers", setup=TIMER),
    Item("Pause the timer.", "HassPauseTimer", setup=TIMER),
    Item("Add 5 minutes to the timer.", "HassIncreaseTimer", {"minutes": 5}, setup=TIMER),
    Item("Never mind.", "HassNevermind"),
    # --- devices nobody configured: refused, published nowhere -------------------------------
    Item("Turn off the toaster.", REFUSED),
    Item("Switch on the hot tub.", REFUSED),
    Item("Turn on the garage light.", REFUSED),
    Item("Turn off the dishwasher.", REFUSED),
    Item("Turn on the porch light.", REFUSED),
    # --- paraphrases the templates do not cover (measured, not a goal) -----------------------
    Item(
        "Kill the lights in the kitchen.", "HassTurnOff", {"area": "kitchen"}, (K,), covered=False
    ),
    Item("Make it warmer.", "HassClimateSetTemperature", {}, (THERMO,), covered=False),
    Item("Shut the garage.", "HassTurnOff", {}, (GARAGE,), covered=False),
    Item("Wake me up in 10 minutes.", "HassStartTimer", {"minutes": 10}, covered=False),
    Item("It's too dark in the bedroom.", "HassTurnOn", {}, (BED,), covered=False),
    Item("Lights out in the office.", "HassTurnOff", {}, (DESK,), covered=False),
    # --- chit-chat: the model answers, nothing is published ----------------------------------
    *(
        Item(text, None)
        for text in (
            "What is a rainbow?",
            "Tell me a joke.",
            "How are you today?",
            "Who wrote Romeo and Juliet?",
            "What's the capital of France?",
            "Why is the sky blue?",
            "Can you recommend a good book?",
            "What should I cook for dinner?",
            "Tell me a story about a dragon.",
            "How do light bulbs work?",
            "What does a thermostat do?",
            "I love my new kitchen.",
            "My bedroom is always cold.",
            "Do you like music?",
            "What is the meaning of life?",
            "How far away is the moon?",
            "Good morning!",
            "Thank you very much.",
            "What can you do?",
            "Explain photosynthesis simply.",
            "How many legs does a spider have?",
            "What is two plus two?",
            "Is it healthy to drink coffee?",
            "The kitchen light is pretty.",
            "Who invented the telephone?",
            "What's your name?",
            "Say something funny.",
            "I had a long day at work.",
            "How do I fix a leaky tap?",
            "Should I turn off the lights when I leave a room?",
            "Why do doors squeak?",
            "What is a garage sale?",
            "How long should I boil an egg?",
            "Do you think timers are useful?",
        )
    ),
]
