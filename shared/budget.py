"""Sizing work to an invocation's time budget from the rate measured so far: intake's chunks
(shared.submit) and finalize's parts (shared.merge_parts). A first batch of a fixed size gives a
rate; each later batch is what that rate does in a share of the budget, so that an invocation which
stops when the next batch would not fit overruns its budget by about that share at most."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class RateSizer:
    budget: float  # seconds
    largest: int  # never more per batch (a setting)
    first: int = 100  # the first batch, before there is a rate
    share: float = 0.05  # a batch takes at most this share of the budget...
    min_seconds: float = 0.0  # ... or this long, when that is more
    smallest: int = 1
    done: int = 0
    spent: float = 0.0
    batches: int = 0

    def next_size(self) -> int:
        if self.batches == 0 or self.spent <= 0:
            return max(self.smallest, min(self.first, self.largest))
        seconds = max(self.min_seconds, self.budget * self.share)
        return max(self.smallest, min(self.largest, math.floor(self.done / self.spent * seconds)))

    def record(self, items: int, seconds: float) -> None:
        self.done, self.spent, self.batches = self.done + items, self.spent + seconds, self.batches + 1
