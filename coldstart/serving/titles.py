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

Bounded by design: a title is found by name only up to `MAX_TITLE_WORDS` words
(a longer one is never matched), and a text is scanned once, each word looked
up among the titles that start with it (`PhraseIndex`), so one registered title
of hundreds of words costs a request nothing.

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


MAX_TITLE_WORDS = 32  # longer titles are not found by name: a text is never scanned for them


class PhraseIndex:
    """Word sequences (up to `MAX_TITLE_WORDS`) -> a value, found in a text in one pass: each word is looked up
    among the lengths of the sequences that start with it, so a lookup costs O(words x lengths starting there)
    whatever the longest sequence indexed."""

    def __init__(self):
        self.values: dict[tuple[str, ...], object] = {}
        self.lengths: dict[str, tuple[int, ...]] = {}  # first word -> lengths, replaced whole (safe to read)

    def add(self, words: tuple[str, ...], value) -> None:
        if not words or len(words) > MAX_TITLE_WORDS or words in self.values:
            return  # the first added keeps a sequence several values share
        self.values[words] = value
        self.lengths[words[0]] = tuple(sorted({*self.lengths.get(words[0], ()), len(words)}, reverse=True))

    def matches(self, words: list[str], taken: list[bool], accept=None) -> list[tuple[int, int, object]]:
        """(start, end, value) of the sequences in `words`, the longest first where they overlap (then the
        earliest), none over a `taken` word, in text order; `accept(start, length)` may veto one."""
        found = []
        for start, word in enumerate(words):
            for length in self.lengths.get(word, ()):
                value = self.values.get(tuple(words[start:start + length]))
                if value is not None and (accept is None or accept(start, length)):
                    found.append((length, start, value))
        out = []
        for length, start, value in sorted(found, key=lambda f: (-f[0], f[1])):
            if not any(taken[start:start + length]):
                taken[start:start + length] = [True] * length
                out.append((start, start + length, value))
        return sorted(out, key=lambda f: f[0])


class TitleMatcher:
    """Catalogue positions by title, for finding the titles a text names."""

    def __init__(self, titles: list[str | None] | None = None):
        self.index = PhraseIndex()
        for position, title in enumerate(titles or []):
            self.add(position, title)

    def add(self, position: int, title: str | None) -> None:
        for form in title_forms(title or ""):
            self.index.add(form, position)

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
        tokens = [(m.group(), m.start()) for m in _WORD.finditer(text or "")]
        words = [t.lower() for t, _ in tokens]
        return self.index.matches(words, [False] * len(words),
                                  lambda start, length: length > 1 or _as_name(text, tokens, start))


def _as_name(text: str, tokens: list[tuple[str, int]], i: int) -> bool:
    """Whether the one word at token `i` is written as a name: capitalised, not opening a sentence, and not
    naming a kind of thing ("War movies")."""
    word, offset = tokens[i]
    before = offset - 1
    while before >= 0 and text[before].isspace():
        before -= 1
    opens = before < 0 or text[before] in ".!?;:\n\"'(-"
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
        self.index = PhraseIndex()
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
                self.index.add(form, label)

    def find(self, text: str, skip: list[tuple[int, int, int]] = ()) -> list[str]:
        """The labels `text` names, in the order it names them; the longest match wins where matches overlap.
        `skip`: spans of words that name something else (`TitleMatcher.spans`: "Star Wars" names no war film)."""
        words = _WORD.findall((text or "").lower())
        taken = [False] * len(words)
        for start, end, *_ in skip:
            taken[start:end] = [True] * (end - start)
        named: list[str] = []
        for _, _, label in self.index.matches(words, taken):
            if label not in named:
                named.append(label)
        return named
