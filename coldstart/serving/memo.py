"""A bounded, thread-safe memo of what a new entity's content costs to compute again: its rendered text, its
attribute one-hots, a text's encoder vector.

New users arrive with few distinct attribute sets (age, gender, occupation), so a profile's rendered text and
its vector repeat across requests; the free text a user writes mostly does not. Each memo keeps the
`capacity` most recently used answers and counts its hits, so a benchmark can say how much it served.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

CAPACITY = 4096


def key_of(value: Any) -> str:
    """A stable key for a JSON-like value (a request's attributes): the same mapping in any order, one key."""
    return json.dumps(value, sort_keys=True, default=str)


class Memo:
    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.hits = self.misses = 0
        self._answers: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def many(self, keys: Sequence[Hashable], compute: Callable[[list[int]], Sequence[Any]]) -> list[Any]:
        """The answer for each of `keys`: remembered ones as they were, the rest from one call of `compute` with
        their positions in `keys` (so they share one batch). Answers are shared, not copied: treat them as
        read-only."""
        out: list[Any] = [None] * len(keys)
        missing: dict[Hashable, list[int]] = {}
        with self._lock:
            for i, key in enumerate(keys):
                if key in self._answers:
                    self._answers.move_to_end(key)
                    out[i] = self._answers[key]
                    self.hits += 1
                else:
                    missing.setdefault(key, []).append(i)
            self.misses += len(missing)
        if missing:
            answers = compute([positions[0] for positions in missing.values()])
            with self._lock:
                for (key, positions), answer in zip(missing.items(), answers):
                    for i in positions:
                        out[i] = answer
                    self._answers[key] = answer
                    self._answers.move_to_end(key)
                while len(self._answers) > self.capacity:
                    self._answers.popitem(last=False)
        return out
