"""A speaker for wyoming-satellite's --snd-command: appends the raw PCM it is given on stdin
to a file (the satellite starts it for each reply). Standard library only."""

from __future__ import annotations

import sys

with open(sys.argv[1], "ab") as out:
    while chunk := sys.stdin.buffer.read(4096):
        out.write(chunk)
        out.flush()
