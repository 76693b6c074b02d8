"""One reading of the attribute columns of an items or users table.

The loaders, the text templates, the attribute one-hots and title matching all
see entity columns through `clean_entity_table`, so a value that does not fit
its column means the same thing everywhere:

- a column named like a year: a whole number (nullable Int64, as MovieLens is
  read); a value that is not a number becomes missing;
- the title column (`title` unless the roles name another): stripped text; an
  empty title is missing;
- a list column (`genres`, `tags`, `categories`, text mostly holding `|`, or one
  the roles name with its separator): parts joined by `|`, whatever the
  separators and stray empty parts were;
- every other column as it is (free text and categorical columns the roles name
  included).

`ColumnRoles` is what a user says of their columns (`--templates.title-column`,
`--templates.text-columns`, ...): the title, free text, categorical and
multi-valued ones with their separator. Without it the reading above is the
automatic one.

Values already in that form come out unchanged. When a `file` is named, each
column with values that did not fit gets one warning with the count and an
example; the smaller helpers read single values (a serving request's) the
same way.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TITLE_COLUMN = "title"
# Column names that read as an item's title when there is no `title` (a shop's `name`, say), in this order.
TITLE_LIKE = ("title", "name", "item_name", "product_name", "product_title", "product", "label")
# Named list columns: their values are lists whatever the separator. A column found by its `|`s is read
# with `|` alone, since commas and semicolons in free text are punctuation.
LIST_COLUMNS = frozenset({"genres", "tags", "categories"})
NAMED_SEPARATORS = re.compile(r"[|;,]")
PIPE = re.compile(r"\|")
# A year beyond float precision is junk, and could not become an Int64 anyway.
_LARGEST_YEAR = 2 ** 53
_EXAMPLE_CHARS = 200


@dataclass(frozen=True)
class ColumnRoles:
    """What the columns of an entity table are, where their names do not say it (`coldstart.text.templates`
    fills this from the run's resolved templates; serving from the artifact's record of them)."""

    title: str | None = TITLE_COLUMN  # None: the table has no title
    text: frozenset[str] = frozenset()  # free text: rendered, never one-hot, never split
    categorical: frozenset[str] = frozenset()  # one-hot whatever their number of distinct values
    lists: dict[str, str] = field(default_factory=dict)  # multi-valued columns -> their separator

    def to_json(self) -> dict:
        return {"title": self.title, "text": sorted(self.text), "categorical": sorted(self.categorical),
                "lists": dict(self.lists)}

    @classmethod
    def from_json(cls, data: dict | None) -> "ColumnRoles":
        if not data:
            return cls()
        return cls(data.get("title"), frozenset(data.get("text", ())), frozenset(data.get("categorical", ())),
                   dict(data.get("lists", {})))


DEFAULT_ROLES = ColumnRoles()


def find_title_column(columns, wanted: str | None = "auto") -> str | None:
    """The column that holds items' titles: `wanted` when named, else the first of `TITLE_LIKE` the table has
    (None when it has none, or when `wanted` is None: a catalogue without titles)."""
    if wanted != "auto":
        return wanted
    names = {str(c).lower(): c for c in columns}
    return next((names[n] for n in TITLE_LIKE if n in names), None)


def is_missing(value: object) -> bool:
    """None, NaN and pd.NA (not arrays: a list value is a value)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def is_year_column(name: object) -> bool:
    return "year" in str(name).lower()


def read_year(value: object) -> int | None:
    """A single value read as a year column reads it: a whole number, or None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        # a year read already (an Int64 column's value): through pandas one at a time, transfer's title
        # matching spent 13 s on ml-1m against ml-100k
        return int(value) if abs(value) < _LARGEST_YEAR else None
    if value is pd.NA:
        return None
    years, _ = _read_years(pd.Series([value], dtype=object))
    return None if years.isna().iloc[0] else int(years.iloc[0])


def clean_entity_table(frame: pd.DataFrame, id_column: str, *, file: str | Path | None = None,
                       roles: ColumnRoles = DEFAULT_ROLES) -> pd.DataFrame:
    """A copy of `frame` with its columns read as the module docstring says; `frame` is left as it was.

    `file` names the table in the warnings; without it (a row built in memory, as serving does) the
    values are read the same way, silently. `roles`: what the user said of the columns.
    """
    out = frame.copy()
    # By position: a table may reach here before its column names were checked for duplicates.
    for position, name in enumerate(frame.columns):
        if name == id_column:
            continue
        read = _reader(name, frame.iloc[:, position], roles)
        if read is None:
            continue
        values, bad, what = read(frame.iloc[:, position])
        out.isetitem(position, values)
        if bad.any() and file is not None:
            _warn(file, name, frame.iloc[:, position][bad], what)
    return out


def _warn(file: str | Path, name: object, bad_values: pd.Series, what: str) -> None:
    first = bad_values.iloc[0]
    example = repr(first.item() if isinstance(first, np.generic) else first)
    if len(example) > _EXAMPLE_CHARS:  # a 10 MB field must not become a 10 MB log line
        example = example[:_EXAMPLE_CHARS] + "..."
    log.warning("%s, column '%s': %d %s (example: %s)", file, name, len(bad_values), what, example)


def _reader(name: object, col: pd.Series, roles: ColumnRoles = DEFAULT_ROLES):
    """The function that reads this column, or None to leave it as it is."""
    textual = col.dtype == object or pd.api.types.is_string_dtype(col)
    if name == roles.title:
        return _read_titles
    if name in roles.text or name in roles.categorical:
        return None
    if name in roles.lists:
        separator = re.compile(re.escape(roles.lists[name]))
        return lambda c: _read_lists(c, separator)
    if is_year_column(name):
        # Integers already fit; booleans, dates and categories are not years written oddly.
        numeric = pd.api.types.is_float_dtype(col)
        return _read_year_column if textual or numeric else None
    if not textual:
        return None
    if str(name).lower() in LIST_COLUMNS:
        return lambda c: _read_lists(c, NAMED_SEPARATORS)
    if _mostly_piped(col):
        return lambda c: _read_lists(c, PIPE)
    return None


def _mostly_piped(col: pd.Series) -> bool:
    present = [v for v in col if not is_missing(v)]
    piped = sum(isinstance(v, str) and "|" in v for v in present)
    return bool(present) and 2 * piped >= len(present)


def _read_years(col: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(Int64 years, mask of values given but not read as a year); blanks are missing, not bad."""
    numbers = pd.to_numeric(col, errors="coerce").astype("Float64")
    finite = numbers.notna() & np.isfinite(numbers.fillna(0)) & (numbers.abs().fillna(0) < _LARGEST_YEAR)
    years = numbers.where(finite).round().astype("Int64")
    given = col.map(lambda v: not is_missing(v) and str(v).strip() != "").astype(bool)
    return years, given & years.isna()


def _read_year_column(col: pd.Series) -> tuple[pd.Series, pd.Series, str]:
    years, bad = _read_years(col)
    return years, bad, "value(s) that are not a year, read as missing"


def _read_titles(col: pd.Series) -> tuple[pd.Series, pd.Series, str]:
    text = col.map(lambda v: v if is_missing(v) else str(v).strip()).astype(object)
    blank = text.map(lambda v: isinstance(v, str) and v == "").astype(bool)
    text = text.mask(blank, pd.NA)
    return _same_kind(text, col), blank, "empty title(s), read as missing"


def _read_lists(col: pd.Series, separators: re.Pattern) -> tuple[pd.Series, pd.Series, str]:
    joined = col.map(lambda v: _join(v, separators)).astype(object)
    odd = pd.Series([isinstance(before, str) and _squeezed(before) != _squeezed(after)
                     for before, after in zip(col, joined)], index=col.index, dtype=bool)
    return _same_kind(joined, col), odd, "list value(s) with odd separators or empty parts, read as '|'-joined"


def _join(value: object, separators: re.Pattern) -> object:
    if is_missing(value):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):  # a parquet list column
        parts = [str(p) for p in value if not is_missing(p)]
    else:
        parts = separators.split(str(value))
    parts = [p.strip() for p in parts if p.strip()]
    return "|".join(parts) if parts else pd.NA


def _squeezed(value: object) -> str:
    """The text without whitespace: a change only in spacing is no surprise worth a warning."""
    return "" if is_missing(value) else re.sub(r"\s+", "", str(value))


def _same_kind(values: pd.Series, original: pd.Series) -> pd.Series:
    """Text columns keep their string dtype, so a clean column comes back exactly as it was."""
    if pd.api.types.is_string_dtype(original) and original.dtype != object:
        return values.astype(original.dtype)
    return values
