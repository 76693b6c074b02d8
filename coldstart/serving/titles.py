"""Items a new user names by title in their free text ("I loved Fargo and The Godfather").

A named item is something the user says they liked: the catalogue takes it as a
liked item (it shapes their vector and is not recommended back), where the text
match alone would rank the named films first. Titles are compared as people
type them: case and punctuation aside, without the year MovieLens appends, and
with a trailing article put back in front ("Godfather, The (1972)" is "the
godfather", also found as "godfather"). Longer titles are found in any case; a
title of one word only where the text writes it as a name: capitalised, not
opening a sentence, not followed by "movies" or "films" ("I loved Fargo", but not
"I love speed", "War is my favourite" or "I love War movies"). Where matches
overlap, the longest wins ("The Godfather: Part II" over "The Godfather"); a title
several items share goes to the first added.

`LabelMatcher` finds the attribute values a text names ("Mostly horror films
for me" names "genres: Horror"): the catalogue then ranks the items that carry
them by the collaborative score, instead of matching the text's vector to items'
texts (`Catalogue.stated_share`).
"""

from __future__ import annotations

import re

ARTICLES = ("the", "a", "an", "les", "la", "le", "il", "das", "der", "die", "el")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_INVERTED = re.compile(r"^(?P<rest>.+),\s*(?P<article>" + "|".join(ARTICLES) + r")$", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+")
KINDS = {"movie", "movies", "film", "films", "show", "shows", "series", "book", "books", "song", "songs"}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def spoken_title(title: str) -> str:
    """A title as people say it: "Godfather, The (1972)" -> "The Godfather"."""
    title = _YEAR.sub("", title.strip())
    inverted = _INVERTED.match(title)
    return f"{inverted['article']} {inverted['rest']}" if inverted else title


def title_forms(title: str) -> list[tuple[str, ...]]:
    """The word sequences a title is found by: as said (`spoken_title`), and without its leading article."""
    words = tuple(_words(spoken_title(title)))
    forms = [words] if words else []
    if len(words) > 1 and words[0] in ARTICLES:
        forms.append(words[1:])
    return forms


class TitleMatcher:
    """Catalogue positions by title, for finding the titles a text names."""

    def __init__(self, titles: list[str | None] | None = None):
        self.positions: dict[tuple[str, ...], int] = {}
        self.longest = 0
        for position, title in enumerate(titles or []):
            self.add(position, title)

    def add(self, position: int, title: str | None) -> None:
        for form in title_forms(title or ""):
            self.positions.setdefault(form, position)
            self.longest = max(self.longest, len(form))

    def find(self, text: str) -> list[int]:
        """Positions of the items `text` names, in the order it names them."""
        named: list[int] = []
        for _, _, position in self.spans(text):
            if position not in named:
                named.append(position)
        return named

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """(first word, end word, position) of each title `text` names, in text order (words as `_WORD` reads
        them)."""
        tokens = [(m.group(), m.start()) for m in _WORD.finditer(text)]
        words = [t.lower() for t, _ in tokens]
        found: list[tuple[int, int, int]] = []  # (start, end, position)
        taken = [False] * len(words)
        for length in range(min(self.longest, len(words)), 0, -1):
            for start in range(len(words) - length + 1):
                if any(taken[start:start + length]):
                    continue
                position = self.positions.get(tuple(words[start:start + length]))
                if position is None or (length == 1 and not _as_name(text, tokens, start)):
                    continue
                found.append((start, start + length, position))
                taken[start:start + length] = [True] * length
        return sorted(found)


def _as_name(text: str, tokens: list[tuple[str, int]], i: int) -> bool:
    """Whether the one word at token `i` is written as a name: capitalised, not opening a sentence, and not
    naming a kind of thing ("War movies")."""
    word, offset = tokens[i]
    before = text[:offset].rstrip()
    opens = not before or before[-1] in ".!?;:\n\"'(-"
    kind = i + 1 < len(tokens) and tokens[i + 1][0].lower() in KINDS
    return word[:1].isupper() and not opens and not kind


# Values too vague to be a stated interest, whatever a catalogue calls them.
VAGUE = {"unknown", "other", "others", "none", "misc", "new", "all", "any", "various", "n a", "na"}


def _forms(value: str) -> list[tuple[str, ...]]:
    """The word sequences a value is found by: as written, without a possessive ("Children's" is also
    "children"), and in the plural ("comedy" -> "comedies", "western" -> "westerns")."""
    forms = []
    for words in {tuple(_WORD.findall(value.lower())), tuple(_WORD.findall(re.sub(r"'s\b", "", value.lower())))}:
        if not words:
            continue
        *head, last = words
        forms += [words, (*head, last + "s")]
        if last.endswith("y") and len(last) > 2 and last[-2] not in "aeiou":
            forms.append((*head, last[:-1] + "ies"))
    return sorted(forms)


class LabelMatcher:
    """The attribute values ("genres: Horror", as `AttributeEncoder.labels` names them) a text names in words.

    A value is found as a whole word sequence, in any case, also in the plural; values with digits (years,
    number bins), of fewer than three letters, or vague (`VAGUE`) are never found."""

    def __init__(self, labels: list[list[str]] | None = None):
        self.forms: dict[tuple[str, ...], str] = {}
        self.longest = 0
        for row in labels or []:
            self.add(row)

    def add(self, labels: list[str]) -> None:
        for label in labels:
            value = label.split(": ", 1)[-1]
            words = _WORD.findall(value.lower())
            if (not words or any(ch.isdigit() for ch in value) or sum(len(w) for w in words) < 3
                    or " ".join(words) in VAGUE):
                continue
            for form in _forms(value):
                self.forms.setdefault(form, label)
                self.longest = max(self.longest, len(form))

    def find(self, text: str, skip: list[tuple[int, int, int]] = ()) -> list[str]:
        """The labels `text` names, in the order it names them; the longest match wins where matches overlap.
        `skip`: spans of words that name something else (`TitleMatcher.spans`: "Star Wars" names no war film)."""
        words = _WORD.findall((text or "").lower())
        taken = [False] * len(words)
        for start, end, *_ in skip:
            taken[start:end] = [True] * (end - start)
        found: list[tuple[int, str]] = []
        for length in range(min(self.longest, len(words)), 0, -1):
            for start in range(len(words) - length + 1):
                label = None if any(taken[start:start + length]) else self.forms.get(tuple(words[start:start + length]))
                if label is not None:
                    found.append((start, label))
                    taken[start:start + length] = [True] * length
        named: list[str] = []
        for _, label in sorted(found):
            if label not in named:
                named.append(label)
        return named
