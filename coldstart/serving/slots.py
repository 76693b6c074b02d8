"""Which slots of a list go to a second list (new items, or the items a stated interest names), and the merge.

New items' generated vectors score on another scale than old items' trained
ones: merged by score, they rarely reach a list. A list is therefore two
searches merged slot by slot: `Slots` says which slots are the second list's.
`Slots.learnt` takes the pattern from validation: for each rank r of each list,
the mean gain of its r-th entry (a hit's weight in the user's NDCG), and fills
each slot from the list whose next entry gains more. The slot discount is the
same whichever list fills a slot, so with non-increasing gains this is the
pattern of highest expected NDCG (the rearrangement inequality). A fixed share
(`Slots.share`) is one such pattern; on three ml-100k seeds the learnt pattern
carried to test better than the best share on validation (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PERIOD = 20  # slots a pattern covers; longer lists repeat it
# A stated interest's share of a list's first 10 slots (`coldstart.serving.ranking.STATED_HEAD`): 7 of them
# honour what a new user said (genre precision@10 0.73-0.74 on six user-cold splits). Since a stated
# interest's map places the user (`coldstart.serving.statements`) the most-watched genre stated predicts
# 1.118x popularity at 0.7 and 1.119x at 0.3 (six splits' mean; benchmarks/RESULTS.md, stated interest), so
# the list can say what the user asked for at no cost to what it predicts; 0.3 left precision at 0.37.
STATED_SHARE = 0.7


@dataclass(frozen=True)
class Slots:
    """Slot i of a list is the second list's when `pattern[i % len(pattern)]`; no pattern keeps no slots."""

    pattern: tuple[bool, ...] = ()

    @classmethod
    def share(cls, share: float, period: int = PERIOD) -> "Slots":
        """`share` of the slots, spread evenly: slot i when floor((i + 1) * share) > floor(i * share)."""
        if not 0 <= share <= 1:
            raise ValueError(f"a share of slots is between 0 and 1, got {share}")
        return cls(tuple(int(round((i + 1) * share, 9)) > int(round(i * share, 9)) for i in range(period)))

    @classmethod
    def head(cls, share: float, first: int, period: int = PERIOD) -> "Slots":
        """`share` of the first `first` slots of each `period` (`share`'s spread), none after them."""
        return cls(cls.share(share, first).pattern + (False,) * (period - first))

    @classmethod
    def learnt(cls, old_gains: Sequence[float], new_gains: Sequence[float]) -> "Slots":
        """The pattern that fills each slot from the list whose next entry gains more (ties: the first list);
        `old_gains[r]`, `new_gains[r]`: the mean gain of each list's entry at rank r, made non-increasing."""
        old = np.minimum.accumulate(np.asarray(old_gains, np.float64))
        new = np.minimum.accumulate(np.asarray(new_gains, np.float64))
        pattern, a, b = [], 0, 0
        for _ in range(max(len(old), len(new))):
            take_new = b < len(new) and (a >= len(old) or new[b] > old[a])
            pattern.append(bool(take_new))
            a, b = a + (not take_new), b + take_new
        return cls(tuple(pattern))

    @classmethod
    def from_record(cls, record: dict | float | None) -> "Slots":
        """From serving.json: {"new": [slot, ...], "of": period}, or a share (older folders)."""
        if record is None:
            return cls()
        if isinstance(record, (int, float)):
            return cls.share(float(record))
        chosen = set(record["new"])
        return cls(tuple(i in chosen for i in range(int(record["of"]))))

    @classmethod
    def served(cls, serving: dict, generator: str) -> "Slots":
        """What serving.json (`serving`) says `generator` keeps for new items: its learnt slots, or the share of
        an older folder; none if it says nothing."""
        return cls.from_record(serving.get("new_slots", serving.get("new_share", {})).get(generator))

    def record(self) -> dict:
        return {"new": [i for i, p in enumerate(self.pattern) if p], "of": len(self.pattern)}

    def __call__(self, slot: int) -> bool:
        return bool(self.pattern) and self.pattern[slot % len(self.pattern)]

    def __bool__(self) -> bool:
        return any(self.pattern)

    @property
    def fraction(self) -> float:
        return sum(self.pattern) / len(self.pattern) if self.pattern else 0.0

    def __str__(self) -> str:
        return f"{sum(self.pattern)} of {len(self.pattern)} slots" if self else "no slots"


def interleave(first: list, second: list, k: int, slots: Slots, distinct=None) -> list:
    """The first k of two ranked lists merged, `slots` saying which slots are `second`'s; when one list runs
    out the other fills the rest. With `distinct` (an entry -> its key), an entry whose key is already listed
    is skipped (lists that overlap)."""
    first, second, out, listed = list(first), list(second), [], set()
    while len(out) < k and (first or second):
        entry = (second if second and (slots(len(out)) or not first) else first).pop(0)
        if distinct is not None:
            if distinct(entry) in listed:
                continue
            listed.add(distinct(entry))
        out.append(entry)
    return out
