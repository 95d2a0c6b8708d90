"""The local intent stage: commands recognised from templates, answered without the LLM.

- `home.py`: the site's areas and devices, from a TOML file (pure).
- `recognizer.py`: hassil with Home Assistant's English sentence templates; resolves the
  devices a command names and renders the packaged response templates (blocking, no asyncio).
- `timers.py`: timers a session keeps (pure bookkeeping; the session schedules them).

The session side (running the recognizer off the loop, timers that fire, the `intent` event)
is `server/pipeline/intents.py`. See docs/intents.md.
"""
