"""The conversation pipeline: sessions, turns, history and reply text shaping for speech."""
