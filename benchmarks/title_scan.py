"""What one crafted registered title costs every profile request: the title scan, before and after the fix.

A catalogue's titles (MovieLens-like, 1,700 of them), then one registered title of
256 one-letter words (issue 33: it took each profile request's scan from 0.8 ms to
0.38 s, under the catalogue lock). Each profile text is 2,000 characters of
ordinary words. The scan before (`scan_before`: every length up to the longest
title at every word, kept here as the baseline) against `TitleMatcher.spans`,
interleaved, median of `--repeats`.

    python -m benchmarks.title_scan [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from coldstart.serving.titles import _WORD, TitleMatcher, _as_name, title_forms


def scan_before(positions: dict, longest: int, text: str) -> list[tuple[int, int, int]]:
    """The scan as it was before (commit fb0b23b): every length from the longest title down, at every word."""
    tokens = [(m.group(), m.start()) for m in _WORD.finditer(text)]
    words = [t.lower() for t, _ in tokens]
    found, taken = [], [False] * len(words)
    for length in range(min(longest, len(words)), 0, -1):
        for start in range(len(words) - length + 1):
            if any(taken[start:start + length]):
                continue
            position = positions.get(tuple(words[start:start + length]))
            if position is None or (length == 1 and not _as_name(text, tokens, start)):
                continue
            found.append((start, start + length, position))
            taken[start:start + length] = [True] * length
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    words = "love the old film about a ship and the war with music and a dog in space at night".split()
    titles = [f"{words[i % 17].title()} {words[(i * 7) % 17]} {words[(i * 3) % 17]} ({1950 + i % 50})"
              for i in range(1700)]
    crafted = " ".join("abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(256))
    text = " ".join(words[(i * 5) % 17] for i in range(400))[:2000]
    print(f"| registered | scan | median ms per profile text (2,000 chars) |\n|---|---|---|")
    for label, catalogue in (("catalogue alone", titles), ("with the crafted title", titles + [crafted])):
        matcher = TitleMatcher(catalogue)
        positions, longest = {}, 0
        for position, title in enumerate(catalogue):
            for form in title_forms(title):
                positions.setdefault(form, position)
                longest = max(longest, len(form))
        times = {"before": [], "now": []}
        for _ in range(args.repeats):  # interleaved
            for name, scan in (("before", lambda: scan_before(positions, longest, text)),
                               ("now", lambda: matcher.spans(text))):
                started = time.perf_counter()
                scan()
                times[name].append((time.perf_counter() - started) * 1000)
        for name in ("before", "now"):
            print(f"| {label} | {name} | {statistics.median(times[name]):.2f} |")
        print(f"| {label} | now / before | {statistics.median(times['now']) / statistics.median(times['before']):.3f}x |")


if __name__ == "__main__":
    main()
