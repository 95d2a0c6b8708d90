"""The sequences of the llama.cpp chat model's one KV cache: which reply holds which cells.

One llama.cpp context holds up to `parallel` sequences in one unified KV cache. Each sequence
keeps the tokens it holds after its reply ends; a new prompt goes to the sequence with the
longest common prefix (the same conversation's last turn, or a prefill of the words said so
far), and the shared start of another sequence (the system prompt) is linked in without
evaluating it again (`llama_memory_seq_cp` shares cells in a unified cache). When the cache
is full, idle sequences are dropped first, then the newest replies under way are parked.
Separate from the model (server/engines/llama_cpp.py): this is the cache's bookkeeping, the
model builds and evaluates the batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from server.engines.llama_generation import LlamaGeneration, Slot


class KvSequences:
    """The `parallel` sequences of one context (`_internals.LlamaContext`) and what they hold;
    `capacity` is the cache's size in cells."""

    def __init__(self, lib: Any, ctx: Any, parallel: int, capacity: int) -> None:
        self.lib = lib
        self.ctx = ctx
        self.capacity = capacity
        self.slots = [Slot(i) for i in range(parallel)]

    @property
    def memory(self) -> Any:
        return self.ctx.memory

    def cells_used(self) -> int:
        # Shared cells count once per sequence: an overestimate, which only evicts sooner.
        return sum(len(slot.tokens) for slot in self.slots)

    def forget(self, slot: Slot, keep: int = 0) -> None:
        self.lib.llama_memory_seq_rm(self.memory, slot.seq_id, keep, -1)
        del slot.tokens[keep:]

    def claim(self, tokens: list[int]) -> tuple[Slot, int]:
        """A free sequence for this prompt, holding as much of its start as the cache has;
        returns it and the number of tokens it holds."""
        free = [slot for slot in self.slots if slot.owner is None]
        assert free, "more replies than sequences; ChatRunner admits at most `parallel`"

        def common(slot: Slot) -> int:
            n = 0
            for a, b in zip(slot.tokens, tokens, strict=False):
                if a != b:
                    break
                n += 1
            return n

        # The same conversation (its start is all this slot holds, or most of it) wins; else
        # an empty slot; else the one used longest ago.
        best = max(free, key=lambda s: (common(s) * 2 >= len(s.tokens) > 0, common(s)))
        if not (common(best) * 2 >= len(best.tokens) > 0):
            best = min(free, key=lambda s: (len(s.tokens) > 0, s.used_at))
        held = common(best)
        self.forget(best, held)
        # Link in a longer shared start from any other sequence (the system prompt).
        donor = max(self.slots, key=common)
        shared = common(donor)
        if donor is not best and shared > held:
            self.forget(best)
            self.lib.llama_memory_seq_cp(self.memory, donor.seq_id, best.seq_id, 0, shared)
            best.tokens = tokens[:shared]
            held = shared
        best.used_at = time.monotonic()
        return best, held

    def make_room(self, needed: int, keep: set[int]) -> bool:
        """Drop idle sequences' tokens (longest unused first) until `needed` cells fit."""
        idle = sorted(
            (
                s
                for s in self.slots
                if (s.owner is None or s.owner.done) and s.tokens and s.seq_id not in keep
            ),
            key=lambda s: s.used_at,
        )
        while self.cells_used() + needed > self.capacity and idle:
            self.forget(idle.pop(0))
        return self.cells_used() + needed <= self.capacity

    def park_newer(
        self,
        gen: LlamaGeneration,
        active: Sequence[LlamaGeneration],
        in_batch: set[int],
        needed: int,
        keep: set[int],
    ) -> bool:
        """The cache is full of replies under way: drop the cells of the newest ones after
        `gen` (they evaluate their tokens again once there is room), so that older replies
        always progress. False if there is no newer one to park."""
        for victim in reversed(active):
            if victim is gen:
                return False
            slot = victim.slot
            if id(victim) in in_batch or slot is None or not slot.tokens:
                continue
            victim.pending = [*slot.tokens, *victim.pending]
            self.forget(slot)
            if self.make_room(needed, keep):
                return True
        return False

    def clear(self) -> None:
        """Forget every sequence not in use (tests: a cold cache, as after a restart)."""
        for slot in self.slots:
            if slot.owner is None:
                self.forget(slot)
