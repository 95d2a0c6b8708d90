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
    covered: bool = True  # a phrasing the templates cover (typed: they match it)
    setup: str | None = None  # typed first in the same session
    # Covered only by chinwag's own templates (server/intents/sentences/en.yaml), not by Home
    # Assistant's: still counted as a paraphrase, to compare with the code before them.
    own: bool = False

    @property
    def kind(self) -> str:
        if self.intent is None:
            return "chit-chat"
        if self.intent == REFUSED:
            return "refusal"
        return "command" if self.covered and not self.own else "paraphrase"


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
    Item("Kill the lights in the kitchen.", "HassTurnOff", {"area": "kitchen"}, (K,), own=True),
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

# --- the held-out set (`--held-out`) -----------------------------------------------------------
# Written before the n-best hearing was built (issue 14), to be measured before and after it and
# never tuned on: other devices, rooms (by their aliases: the lounge, the study) and wording than
# ITEMS, each phrasing checked typed against the templates before any matcher change. The
# chit-chat says device and command words without asking for anything.
HELD_OUT: list[Item] = [
    # --- commands for the home --------------------------------------------------------------
    Item("Switch the kitchen light on.", "HassTurnOn", {"name": "kitchen light"}, (K,)),
    Item("Turn the coffee maker off.", "HassTurnOff", {"name": "coffee machine"}, (COFFEE,)),
    Item("Switch on the reading lamp.", "HassTurnOn", {"name": "floor lamp"}, (LR_LAMP,)),
    Item("Turn off the ceiling light.", "HassTurnOff", {"name": "ceiling light"}, (LR_CEIL,)),
    Item("Switch off the desk lamp.", "HassTurnOff", {"name": "desk lamp"}, (DESK,)),
    Item("Turn on the desk lamp.", "HassTurnOn", {"name": "desk lamp"}, (DESK,)),
    Item("Switch the heater off.", "HassTurnOff", {"name": "heater"}, (HEATER,)),
    Item("Turn the ceiling fan off.", "HassTurnOff", {"name": "ceiling fan"}, (FAN,)),
    Item("Switch on the fan.", "HassTurnOn", {"name": "ceiling fan"}, (FAN,)),
    Item("Turn off the television.", "HassTurnOff", {"name": "tv"}, (TV,)),
    Item("Turn on the lights in the study.", "HassTurnOn", {"area": "office"}, (DESK,)),
    Item(
        "Turn off the lights in the lounge.",
        "HassTurnOff",
        {"area": "living room"},
        (LR_CEIL, LR_LAMP),
    ),
    Item("Switch off the bedroom lights.", "HassTurnOff", {"area": "bedroom"}, (BED,)),
    Item("Switch on the lights in the office.", "HassTurnOn", {"area": "office"}, (DESK,)),
    Item("Open the garage door, please.", "HassTurnOn", {"name": "garage door"}, (GARAGE,)),
    Item("Could you lock the front door?", "HassTurnOn", {"name": "front door"}, (DOOR,)),
    Item(
        "Set the kitchen light to 20 percent.",
        "HassLightSet",
        {"name": "kitchen light", "brightness": 20},
        (K,),
    ),
    Item(
        "Set the floor lamp brightness to 60 percent.",
        "HassLightSet",
        {"brightness": 60},
        (LR_LAMP,),
    ),
    Item(
        "Set the brightness in the office to 70 percent.",
        "HassLightSet",
        {"area": "office", "brightness": 70},
        (DESK,),
    ),
    Item("Make the desk lamp blue.", "HassLightSet", {"color": "blue"}, (DESK,)),
    Item("Set the bedroom light to green.", "HassLightSet", {"color": "green"}, (BED,)),
    Item(
        "Set the heating to 22 degrees.",
        "HassClimateSetTemperature",
        {"temperature": 22},
        (THERMO,),
    ),
    Item(
        "Change the temperature to 18 degrees.",
        "HassClimateSetTemperature",
        {"temperature": 18},
        (THERMO,),
    ),
    Item("Pause the television.", "HassMediaPause", {}, (TV,)),
    Item("Unpause the TV.", "HassMediaUnpause", {}, (TV,)),
    Item("Skip to the next track.", "HassMediaNext", {}, (TV,)),
    Item("Previous track.", "HassMediaPrevious", {}, (TV,)),
    Item("Unmute the TV.", "HassMediaPlayerUnmute", {}, (TV,)),
    Item("Mute the television.", "HassMediaPlayerMute", {}, (TV,)),
    Item("Set the volume to 50 percent.", "HassSetVolume", {"volume_level": 50}, (TV,)),
    Item("Add bread to my shopping list.", "HassShoppingListAddItem", {"item": "bread"}),
    Item("Put apples on the shopping list.", "HassShoppingListAddItem", {"item": "apples"}),
    Item(
        "Please switch off the coffee machine.",
        "HassTurnOff",
        {"name": "coffee machine"},
        (COFFEE,),
    ),
    Item("Can you turn off the reading lamp?", "HassTurnOff", {"name": "floor lamp"}, (LR_LAMP,)),
    Item("Would you turn on the ceiling fan?", "HassTurnOn", {"name": "ceiling fan"}, (FAN,)),
    Item("Close the garage door, please.", "HassTurnOff", {"name": "garage door"}, (GARAGE,)),
    # --- what chinwag answers itself --------------------------------------------------------
    Item("What time is it now?", "HassGetCurrentTime"),
    Item("Tell me the time.", "HassGetCurrentTime"),
    Item("What's the date?", "HassGetCurrentDate"),
    Item("Tell me the date.", "HassGetCurrentDate"),
    Item("Set a 20 minute timer.", "HassStartTimer", {"minutes": 20}),
    Item("Set a timer for 45 seconds.", "HassStartTimer", {"seconds": 45}),
    Item("Start a timer for 15 minutes.", "HassStartTimer", {"minutes": 15}),
    Item("Timer for 8 minutes.", "HassStartTimer", {"minutes": 8}),
    Item(
        "Set a timer for 1 hour and 15 minutes.",
        "HassStartTimer",
        {"hours": 1, "minutes": 15},
    ),
    Item("Stop the timer.", "HassCancelTimer", setup=TIMER),
    Item("How much time is left on my timer?", "HassTimerStatus", setup=TIMER),
    Item("Remove 2 minutes from the timer.", "HassDecreaseTimer", {"minutes": 2}, setup=TIMER),
    Item("Cancel my timer.", "HassCancelTimer", setup=TIMER),
    Item("Nevermind.", "HassNevermind"),
    # --- chit-chat: the model answers, nothing is published ----------------------------------
    *(
        Item(text, None)
        for text in (
            "The light in this painting is lovely.",
            "My grandmother had a red kitchen.",
            "I left my keys by the front door.",
            "What is the best temperature for sleeping?",
            "How does a ceiling fan cool a room?",
            "Do televisions use a lot of power?",
            "I turned off my phone during the movie.",
            "What time does the sun set in winter?",
            "Tell me about the history of coffee.",
            "Why do cats like warm places?",
            "Can you help me plan a birthday party?",
            "How many minutes are in a day?",
            "The garage is full of old boxes.",
            "What makes a good cup of tea?",
            "Set the scene for a spooky story.",
            "Should I lock my bike at night?",
            "I read a book about a lighthouse keeper.",
            "Is it bad to leave the heater on all night?",
            "What do you call a group of owls?",
            "Open your mind to new ideas.",
            "Turn the page and keep reading.",
            "My favourite song is on the radio.",
        )
    ),
]

# --- everyday phrasings and tempting chit-chat (`--phrasings`) -----------------------------------
# Written before chinwag's own sentence templates (server/intents/sentences/en.yaml), to measure
# them: politeness and hedges, particle verbs, brightness, temperature and media in other words,
# timers, and everyday British words for a configured device class or room type. Typed, 12 of
# the 36 were recognised before them (Home Assistant's templates), all 36 since (`own`: counted
# as paraphrases). TEMPTING says the same words without asking anything of the home: none may
# become an action.
PHRASINGS: list[Item] = [
    Item(
        "Could you turn off the kitchen light for me?",
        "HassTurnOff",
        {"name": "kitchen light"},
        (K,),
        own=True,
    ),
    Item("Can you switch the heater on, please?", "HassTurnOn", {}, (HEATER,), own=True),
    Item("Turn the coffee machine off, would you?", "HassTurnOff", {}, (COFFEE,), own=True),
    Item("Right, turn off the bedroom light.", "HassTurnOff", {}, (BED,), own=True),
    Item("Hang on, pause the TV.", "HassMediaPause", {}, (TV,), own=True),
    Item(
        "Would you lock the front door for me, please?",
        "HassTurnOn",
        {},
        (DOOR,),
        own=True,
    ),
    Item("Put the coffee machine on.", "HassTurnOn", {}, (COFFEE,), own=True),
    Item("Stick the heater on.", "HassTurnOn", {}, (HEATER,), own=True),
    Item("Put the fan off.", "HassTurnOff", {}, (FAN,), own=True),
    Item(
        "Kill the lights in the living room.",
        "HassTurnOff",
        {"area": "living room"},
        (LR_CEIL, LR_LAMP),
        own=True,
    ),
    Item("Cut the lights in the bedroom.", "HassTurnOff", {"area": "bedroom"}, (BED,), own=True),
    Item("Kill the kitchen light.", "HassTurnOff", {}, (K,), own=True),
    Item(
        "Switch the lights on in the office.",
        "HassTurnOn",
        {"area": "office"},
        (DESK,),
        own=True,
    ),
    Item("Turn the floor lamp on in the living room.", "HassTurnOn", {}, (LR_LAMP,), own=True),
    Item(
        "Dim the bedroom light to 30 percent.",
        "HassLightSet",
        {"brightness": 30},
        (BED,),
        own=True,
    ),
    Item(
        "Bring the kitchen light down to 20 percent.",
        "HassLightSet",
        {"brightness": 20},
        (K,),
        own=True,
    ),
    Item(
        "Turn the desk lamp down to 40 percent.",
        "HassLightSet",
        {"brightness": 40},
        (DESK,),
        own=True,
    ),
    Item(
        "Brighten the floor lamp up to 80 percent.",
        "HassLightSet",
        {"brightness": 80},
        (LR_LAMP,),
        own=True,
    ),
    Item(
        "Put the bedroom light on full brightness.",
        "HassLightSet",
        {"brightness": 100},
        (BED,),
        own=True,
    ),
    Item("Kitchen light to full.", "HassLightSet", {"brightness": 100}, (K,), own=True),
    Item(
        "Turn the thermostat up to 22 degrees.",
        "HassClimateSetTemperature",
        {"temperature": 22},
        (THERMO,),
        own=True,
    ),
    Item(
        "Turn the heating down to 18.",
        "HassClimateSetTemperature",
        {"temperature": 18},
        (THERMO,),
        own=True,
    ),
    Item(
        "Make it 20 degrees in here.",
        "HassClimateSetTemperature",
        {"temperature": 20},
        (THERMO,),
        own=True,
    ),
    Item(
        "Make it 21 degrees in the house.",
        "HassClimateSetTemperature",
        {"temperature": 21},
        (THERMO,),
        own=True,
    ),
    Item("Start the TV playing again.", "HassMediaUnpause", {}, (TV,), own=True),
    Item(
        "Turn the TV down to 20 percent.",
        "HassSetVolume",
        {"volume_level": 20},
        (TV,),
        own=True,
    ),
    Item(
        "Turn the television up to 60 percent volume.",
        "HassSetVolume",
        {"volume_level": 60},
        (TV,),
        own=True,
    ),
    Item("Pause the TV a sec.", "HassMediaPause", {}, (TV,), own=True),
    Item(
        "Give me a timer for an hour and a half.",
        "HassStartTimer",
        {"hours": 1, "minutes": 30},
        own=True,
    ),
    Item("Give me a timer for half an hour.", "HassStartTimer", {"minutes": 30}, own=True),
    Item("What's the date today?", "HassGetCurrentDate", own=True),
    Item("Turn off the telly.", "HassTurnOff", {}, (TV,), own=True),
    Item("Pause the telly.", "HassMediaPause", {}, (TV,), own=True),
    Item(
        "Turn off the lights in the sitting room.",
        "HassTurnOff",
        {"area": "living room"},
        (LR_CEIL, LR_LAMP),
        own=True,
    ),
    Item("Can you put the telly on for me?", "HassTurnOn", {}, (TV,), own=True),
    Item("Switch the desk lamp on in the office.", "HassTurnOn", {}, (DESK,), own=True),
]
TEMPTING: list[Item] = [
    Item(text, None)
    for text in (
        "I put the kettle on earlier.",
        "The telly was on all night.",
        "The kill the lights scene in that film was great.",
        "Could you believe the heating bill?",
        "Make it a double.",
        "Turn it up, I love this song.",
        "Turn it down a bit, it's too loud.",
        "Make it snappy.",
        "Let's make it 20 questions.",
        "Right, where was I?",
        "Hang on, I need to think.",
        "Could you tell me about the band Lounge Lizards?",
        "Put the telly on the list of things to fix.",
        "The heating is up to 22 degrees already.",
        "It was 20 degrees in here yesterday.",
        "Bring the kids down to the kitchen later.",
        "Cut the cake into eight pieces.",
        "Could you kill a spider for me?",
        "Give me a minute.",
        "Give me a reason to get up.",
        "What's the date of Easter this year?",
        "Start the story playing again.",
        "Pause for a sec.",
        "Put your feet up.",
        "Turn the music down, the neighbours are complaining.",
        "I switched the lights on in the office this morning.",
        "The lights in the lounge are too bright.",
        "My telly is broken.",
        "Dim sum is my favourite food.",
        "Would you like a cup of tea?",
        "Could you put it another way?",
        "Can you make it shorter?",
        "Full brightness is bad for your eyes.",
        "Thermostat wars are common in offices.",
        "Half an hour is a long time to wait.",
        "An hour and a half of cooking, that recipe says.",
        "Turn the tables on them.",
        "Put the lights on the tree before Christmas.",
        "Stick it on my tab.",
        "Switch it off and on again is the classic advice.",
        "Kill the engine before you get out.",
        "Start the car, we're late.",
        "Turn the page, would you?",
        "Dim the mood with a sad story.",
        "Put the kettle on the stove, my gran used to say.",
        "The sitting room needs a new carpet.",
        "What did the telly say about the weather?",
        "Make it 20 minutes and I'll be there.",
        "Can you bring the temperature of the debate down?",
        "Give me a timer joke.",
    )
]

# Polite words before and after a command (server/intents/recognizer.py normalise): each
# prefix and each tail, alone, with every base command, must act as the bare command does
# (typed; tests/unit/test_intents.py). Before these were dropped, 24 of the 40 tails
# (", will you", ", if you don't mind", ", cheers") and 12 of the 30 prefixes ("could you
# just", "do me a favour and") made no command with any base, or refused "light will you"
# as an unknown device. "Would you mind turning ..." (a gerund) and tails that may end a
# remark ("then", "yeah") are left to the chat model.
POLITE_BASES: list[Item] = [
    Item("turn off the kitchen light", "HassTurnOff", {}, (K,)),
    Item("lock the front door", "HassTurnOn", {}, (DOOR,)),
    Item("switch off the TV", "HassTurnOff", {}, (TV,)),
    Item("set the bedroom light to 50 percent", "HassLightSet", {"brightness": 50}, (BED,)),
    Item("set a timer for 5 minutes", "HassStartTimer", {"minutes": 5}),
    Item("turn off the lights in the living room", "HassTurnOff", {}, (LR_CEIL, LR_LAMP)),
]
POLITE_PREFIXES = (
    "please ",
    "could you ",
    "could you please ",
    "can you ",
    "can you please ",
    "would you ",
    "would you please ",
    "will you ",
    "will you please ",
    "please could you ",
    "could you just ",
    "can you just ",
    "could you possibly ",
    "would you kindly ",
    "would you be able to ",
    "can you go ahead and ",
    "could ya ",
    "i'd like you to ",
    "do me a favour and ",
    "be a dear and ",
    "hey, ",
    "ok, ",
    "hey chinwag, ",
    "okay chinwag, please ",
    "right then, ",
    "excuse me, ",
    "and also ",
    "oh and ",
    "um, ",
    "so, ",
)
POLITE_TAILS = (
    ", please",
    " please",
    " pls",
    ", will you",
    " will you",
    ", would you",
    " would you",
    ", could you",
    ", can you",
    ", will ya",
    " would ya",
    ", won't you",
    ", will you please",
    ", would you please",
    " for me",
    ", for me",
    " for me please",
    " for me, would you",
    ", thanks",
    " thanks",
    ", thank you",
    ", thanks a lot",
    " thank you very much",
    ", please and thank you",
    ", cheers",
    ", ta",
    ", ta very much",
    ", mate",
    " now",
    " now please",
    " right now",
    " if you would",
    ", if you could",
    " if you can",
    ", if you don't mind",
    ", would you mind",
    " if possible",
    ", if possible",
    ", okay",
    ", ok",
)


def polite_forms() -> list[Item]:
    """Every base command with each polite prefix, and with each tail, as typed."""
    forms: list[Item] = []
    for base in POLITE_BASES:
        for prefix, tail in [(p, "") for p in POLITE_PREFIXES] + [("", t) for t in POLITE_TAILS]:
            said = prefix + base.text + tail
            end = "?" if "you" in prefix + tail or "ya" in prefix + tail else "."
            forms.append(
                Item(said[0].upper() + said[1:] + end, base.intent, base.slots, base.targets)
            )
        verb, rest = base.text.split(" ", 1)
        for ask in MIND_ASKS:
            said = f"{ask}{MIND_DOING[verb]} {rest}?"
            forms.append(Item(said[0].upper() + said[1:], base.intent, base.slots, base.targets))
    return forms


# "Would you mind turning off ...": the base commands' verbs as the ask takes them.
MIND_ASKS = ("would you mind ", "do you mind ", "would you mind just ", "please would you mind ")
MIND_DOING = {"turn": "turning", "lock": "locking", "switch": "switching", "set": "setting"}


# The same polite words on remarks and questions that ask nothing of the home (and negated or
# reported commands): none may become an action.
TEMPTING_TAILS: list[Item] = [
    Item(text, None)
    for text in (
        "You won't forget, will you?",
        "Would you mind if I turned off the kitchen light?",
        "Do you mind me locking the front door?",
        "Would you mind telling me a joke?",
        "Do you mind turning the kitchen light off when you leave?",
        "Don't turn off the kitchen light, will you?",
        "You didn't leave the kitchen light on, did you?",
        "You'll remember to lock the front door, won't you?",
        "Tell me a joke, will you?",
        "Tell me about the kitchen light, please.",
        "I turned off the kitchen light, thanks.",
        "The kitchen light is on, okay?",
        "I left the TV on, sorry.",
        "Remind me to lock the front door, will you?",
        "Could you tell me why the heater is so loud?",
        "Would you mind if I turned off the TV?",
        "Would you mind turning the music down?",
        "Could you possibly explain how a thermostat works?",
        "Would you be able to tell me a story?",
        "Do me a favour and tell me a joke.",
        "Be a dear and sing me a song.",
        "Can you go ahead and guess my age?",
        "Excuse me, what's your name?",
        "Right then, what should I cook tonight?",
        "I like the kitchen light, will you?",
        "Don't lock the front door, please.",
        "Never mind the TV, thanks.",
        "Turn the music up, will you?",
        "I'll turn off the kitchen light, shall I?",
        "Shall I turn off the kitchen light?",
        "Should I lock the front door, do you think?",
        "Can you hear me?",
        "Will you marry me?",
        "Would you like a cup of tea?",
        "Thank you very much.",
        "Cheers, mate.",
        "Okay, thanks a lot.",
        "Could you be quiet for a moment, please?",
        "Just a moment, please.",
        "Can you wait a sec?",
        "Give me a minute, will you?",
        "Hang on a minute, would you?",
        "Make it a double, please.",
        "Put the kettle on, will you?",
        "Kill the engine, would you?",
        "Turn it up, I love this song, will you?",
        "Lights, camera, action, please.",
        "Please and thank you.",
        "Will you tell me the weather tomorrow?",
        "Open the pod bay doors, will you?",
        "Switch places with me, would you?",
        "Could you just listen for a second?",
        "Would you kindly stop talking about the heater?",
        "If you could turn back time, would you?",
    )
]


# --- blind6: written blind on 2 December 2026 (bench/blind6/README.md) ---------------------------
# 40 commands and 20 chit-chat lines for the demo home, written by an engineer who read only the
# set format and the devices file. `covered` is the writer's guess. Measured once on the code of the
# session's start; after that the lead named the phrasing classes the templates missed here
# (politeness, particle verbs, other words for brightness, temperature and media) for the
# everyday-phrasings change, so its paraphrases are no longer unseen (docs/performance.md).
_ON, _OFF = "HassTurnOn", "HassTurnOff"

BLIND6_COMMANDS: list[Item] = [
    # ---- on / off
    Item(
        "Could you switch the coffee machine on please", _ON, {"name": "coffee machine"}, (COFFEE,)
    ),
    Item("turn off the kitchen light", _OFF, {"name": "kitchen light"}, (K,)),
    Item(
        "lights off in the bedroom please",
        _OFF,
        {"area": "bedroom", "domain": "light"},
        (BED,),
        covered=False,
    ),
    Item(
        "can you put the reading lamp on for me",
        _ON,
        {"name": "floor lamp"},
        (LR_LAMP,),
        covered=False,
    ),
    Item("Switch the desk lamp off", _OFF, {"name": "desk lamp"}, (DESK,)),
    Item(
        "turn on the ceiling fan in the bedroom",
        _ON,
        {"name": "ceiling fan", "area": "bedroom"},
        (FAN,),
    ),
    Item(
        "it's roasting up there, stick the fan on would you",
        _ON,
        {"name": "ceiling fan"},
        (FAN,),
        covered=False,
    ),
    Item(
        "Turn on the lights in the living room",
        _ON,
        {"area": "living room", "domain": "light"},
        (LR_CEIL, LR_LAMP),
    ),
    Item(
        "kill the lights in the lounge",
        _OFF,
        {"area": "living room", "domain": "light"},
        (LR_CEIL, LR_LAMP),
        covered=False,
    ),
    Item("switch the heater on in the study", _ON, {"name": "heater", "area": "office"}, (HEATER,)),
    Item(
        "I'm done working, turn the office heater off please",
        _OFF,
        {"name": "heater", "area": "office"},
        (HEATER,),
        covered=False,
    ),
    Item("Turn off the TV", _OFF, {"name": "tv"}, (TV,)),
    Item("could you turn the telly on", _ON, {"name": "tv"}, (TV,), covered=False),
    Item("turn the light on", _ON, {"domain": "light"}, (K,)),
    Item(
        "switch off every light in the house", _OFF, {"domain": "light"}, ALL_LIGHTS, covered=False
    ),
    Item(
        "turn off the ceiling light in the living room",
        _OFF,
        {"name": "ceiling light", "area": "living room"},
        (LR_CEIL,),
    ),
    Item("Lock the front door please", _ON, {"name": "front door"}, (DOOR,)),
    Item("close the garage door", _OFF, {"name": "garage door"}, (GARAGE,)),
    # ---- brightness
    Item(
        "set the kitchen light to 40 percent",
        "HassLightSet",
        {"name": "kitchen light", "brightness": 40},
        (K,),
    ),
    Item(
        "dim the bedroom light down to twenty percent would you",
        "HassLightSet",
        {"name": "bedroom light", "brightness": 20},
        (BED,),
        covered=False,
    ),
    Item(
        "can you put the desk lamp on full brightness",
        "HassLightSet",
        {"name": "desk lamp", "brightness": 100},
        (DESK,),
        covered=False,
    ),
    Item(
        "bring the living room ceiling light down to 30%",
        "HassLightSet",
        {"name": "ceiling light", "area": "living room", "brightness": 30},
        (LR_CEIL,),
        covered=False,
    ),
    Item(
        "Set the brightness of the floor lamp to 75",
        "HassLightSet",
        {"name": "floor lamp", "brightness": 75},
        (LR_LAMP,),
    ),
    # ---- temperature
    Item(
        "set the heating to 21 degrees", "HassClimateSetTemperature", {"temperature": 21}, (THERMO,)
    ),
    Item(
        "could you turn the thermostat up to 22 please",
        "HassClimateSetTemperature",
        {"name": "thermostat", "temperature": 22},
        (THERMO,),
        covered=False,
    ),
    Item(
        "make it nineteen degrees in the house",
        "HassClimateSetTemperature",
        {"temperature": 19},
        (THERMO,),
        covered=False,
    ),
    # ---- media
    Item("Pause the TV", "HassMediaPause", {"name": "tv"}, (TV,)),
    Item(
        "hang on, can you pause the television a sec",
        "HassMediaPause",
        {"name": "tv"},
        (TV,),
        covered=False,
    ),
    Item("resume the TV", "HassMediaUnpause", {"name": "tv"}, (TV,)),
    Item(
        "right, you can start the television playing again",
        "HassMediaUnpause",
        {"name": "tv"},
        (TV,),
        covered=False,
    ),
    Item("set the TV volume to 30", "HassSetVolume", {"name": "tv", "volume_level": 30}, (TV,)),
    Item(
        "turn the television down to 15 percent volume please",
        "HassSetVolume",
        {"name": "tv", "volume_level": 15},
        (TV,),
        covered=False,
    ),
    Item("mute the TV", "HassMediaPlayerMute", {"name": "tv"}, (TV,)),
    # ---- shopping list
    Item("add milk to my shopping list", "HassShoppingListAddItem", {"item": "milk"}),
    Item(
        "could you put washing-up liquid on the shopping list please",
        "HassShoppingListAddItem",
        {"item": "washing-up liquid"},
        covered=False,
    ),
    # ---- timers
    Item("set a timer for 10 minutes", "HassStartTimer", {"minutes": 10}),
    Item("start a timer for twenty-five minutes please", "HassStartTimer", {"minutes": 25}),
    Item(
        "give me a timer for an hour and a half",
        "HassStartTimer",
        {"hours": 1, "minutes": 30},
        covered=False,
    ),
    # ---- time and date
    Item("what time is it", "HassGetCurrentTime"),
    Item("what's today's date, do you know", "HassGetCurrentDate", covered=False),
]

BLIND6_CHITCHAT: list[Item] = [
    Item("my old bedside lamp finally gave up the ghost last night", None),
    Item("is it really that bad leaving the telly on standby all night", None),
    Item("I can never decide whether to turn the heating up or just put another jumper on", None),
    Item(
        "the kitchen light's been flickering a bit lately, do you reckon it's just the bulb", None
    ),
    Item("roughly how much electricity does a coffee machine use in a day", None),
    Item("we watched a brilliant film on the TV last night, I was in bits at the end", None),
    Item(
        "my neighbour's sprinklers are on a timer and they went off at three in the morning", None
    ),
    Item("what temperature should a bedroom be for a decent night's sleep", None),
    Item("I keep forgetting to lock the front door when I go out, it's getting ridiculous", None),
    Item("do ceiling fans actually save you money compared to air con", None),
    Item("my shopping list is getting out of hand this week", None),
    Item("the garage door makes a horrible squeaking noise every time it opens", None),
    Item("I switched my phone off for the whole weekend and honestly it was lovely", None),
    Item("is it true that dimming LED bulbs saves electricity", None),
    Item("why are the adverts always so much louder than the programme", None),
    Item("I've paused my gym membership for the winter, don't judge me", None),
    Item("the desk lamp at work is so bright it gives me a headache", None),
    Item("turning the heater on in the study is the only way I get any work done in winter", None),
    Item("what's the best time of day to water tomatoes", None),
    Item("can you believe it's December already", None),
]

BLIND6: list[Item] = BLIND6_COMMANDS + BLIND6_CHITCHAT
