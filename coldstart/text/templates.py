"""Item and user text from templates over any columns.

A template is a Python format string over the entity's columns, e.g.
"{title} ({year}). Genres: {genres}." Missing or null values render as empty
and `|`-joined lists as comma lists. `None` means the automatic template: the
title (if any) then "column: value" for every other column. A user's text can
include `{liked}`: titles of items they interacted with in train (never from
val or test, so no held-out interaction leaks into the content); the automatic
template ends with them ("liked: ..."), so users without a users table are
still described by what they liked.

What a run used is what it records: `TextTemplates.resolve` turns the
configured templates into the ones a table allows (a MovieLens template on a
shop's catalogue becomes the automatic one; the title column found or none),
logged once, and the embedding stage writes that into its artifacts, which
training, evaluation and serving then read instead of the defaults.
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from coldstart.config import ConfigError
from coldstart.data.columns import DEFAULT_ROLES, ColumnRoles, clean_entity_table, find_title_column, is_missing

log = logging.getLogger(__name__)

MOVIELENS_ITEM = "{title} ({year}). Genres: {genres}."
MOVIELENS_USER = "A {gender_word} aged {age}, working as {occupation}. Liked movies: {liked}."


class TextTemplates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str | None = Field(MOVIELENS_ITEM, description="Item text template; null for automatic (a template "
                             "naming columns the items table lacks becomes the automatic one).")
    user: str | None = Field(MOVIELENS_USER, description="User text template; null for automatic.")
    max_liked: int = Field(10, ge=0, description="Most liked item titles in a user's {liked}.")
    title_column: str | None = Field("auto", description="Item column holding the title: what {liked} lists, "
                                     "what new users name items by, what answers show. 'auto': `title`, else a "
                                     "title-like column (`name`, `product_name`, ...); null: the items have none.")
    text_columns: list[str] = Field([], description="Free-text columns: in the text, never attribute one-hots "
                                    "(without this, text with many distinct values is left out of the one-hots).")
    categorical_columns: list[str] = Field([], description="Columns one-hot encoded whatever their number of "
                                           "distinct values (without this, up to 64 values).")
    list_columns: dict[str, str] = Field({}, description="Multi-valued columns and their separator, e.g. "
                                         "{keywords: ';'} (without this: genres/tags/categories, or '|').")

    def fingerprint(self) -> str:
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:12]

    def roles(self, side: str = "item") -> ColumnRoles:
        """The column roles for reading a table of `side` ("item" or "user": users have no title); an
        unresolved 'auto' title reads as `title`."""
        title = None if side == "user" else "title" if self.title_column == "auto" else self.title_column
        return ColumnRoles(title, frozenset(self.text_columns), frozenset(self.categorical_columns),
                           dict(self.list_columns))

    def resolve(self, items: pd.DataFrame, users: pd.DataFrame | None, *, announce: bool = True) -> "TextTemplates":
        """The templates as these tables allow them, which is what a run records: the title column found (or
        none), and a template that names columns the table lacks replaced by the automatic one. With
        `announce`, logged with what was decided; a column named in a role but absent is an error naming it."""
        for option, names in (("text_columns", self.text_columns), ("categorical_columns", self.categorical_columns),
                              ("list_columns", list(self.list_columns))):
            absent = [n for n in names if n not in items.columns and (users is None or n not in users.columns)]
            if absent:
                raise ConfigError(f"templates.{option}: no column {absent[0]!r} in the items or users table")
        if self.title_column not in ("auto", None) and self.title_column not in items.columns:
            raise ConfigError(f"templates.title_column: the items table has no column {self.title_column!r} "
                              f"(its columns: {', '.join(map(str, items.columns))})")
        title = find_title_column(items.columns, self.title_column)
        user_columns = set(users.columns) if users is not None else {"user_id"}
        item = _allowed(self.item, set(items.columns))
        user = _allowed(self.user, user_columns | {"liked"} | ({"gender_word"} if "gender" in user_columns else set()))
        resolved = self.model_copy(update={"item": item, "user": user, "title_column": title})
        if announce:
            _announce(self, resolved, items.columns, user_columns)
        return resolved


def _announce(configured: TextTemplates, resolved: TextTemplates, item_columns, user_columns) -> None:
    """One line: which templates and title column the run uses, and why where it is not what was configured."""
    def how(used: str | None, wanted: str | None, columns) -> str:
        if used is not None:
            return f"the template {used!r}"
        if wanted is None:
            return "the automatic template"
        return f"the automatic template (the configured one names {_absent(wanted, columns)}, not columns here)"

    title = resolved.title_column
    roles = {"free text": configured.text_columns, "categorical": configured.categorical_columns,
             "lists": configured.list_columns}
    log.info("texts: items by %s; users by %s; title column %s%s", how(resolved.item, configured.item, item_columns),
             how(resolved.user, configured.user, user_columns),
             repr(title) if title is not None else "none (new users' texts are not matched to items by title)",
             "".join(f"; {name}: {value}" for name, value in roles.items() if value))


def template_fields(template: str | None) -> set[str]:
    """The column names a template refers to (`{title}` -> "title")."""
    return {f for _, f, _, _ in string.Formatter().parse(template or "") if f}


def _allowed(template: str | None, columns: set) -> str | None:
    """`template` when every field it names is a column, else None (the automatic template)."""
    return template if template is not None and template_fields(template) <= columns else None


def _absent(template: str | None, columns) -> str:
    return ", ".join(sorted(template_fields(template) - set(columns) - {"liked", "gender_word"}))


class _Values(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _clean(value: Any) -> str:
    if is_missing(value):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a year read as 1995.0 reads as 1995
    text = str(value).strip()
    return ", ".join(p for p in text.split("|")) if "|" in text else text


def _auto(row: dict[str, Any], id_column: str, title: str | None) -> str:
    parts = [_clean(row[title])] if title in row and _clean(row[title]) else []
    parts += [f"{k}: {_clean(v)}" for k, v in row.items() if k not in (id_column, title) and _clean(v)]
    return ". ".join(parts) + ("." if parts else "")


def render(template: str | None, rows: pd.DataFrame, id_column: str, *, roles: ColumnRoles = DEFAULT_ROLES,
           extra: dict[str, pd.Series] | None = None) -> list[str]:
    """One text per row; fields a template names but the table lacks render empty."""
    fields = template_fields(template)
    absent = fields - set(rows.columns) - set(extra or {}) - {"gender_word"}
    if template is not None and absent:
        # A template written for other data (the MovieLens default on a shop's catalogue, say).
        log.warning("template fields %s are not columns of this table; using the automatic template",
                    sorted(absent))
        template = None
    out = []
    # The loaders' reading of years, titles and lists, so a serving row renders as a catalogue row would.
    records = clean_entity_table(rows, id_column, roles=roles).to_dict("records")
    for i, row in enumerate(records):
        values = _Values({k: _clean(v) for k, v in row.items()})
        for name, series in (extra or {}).items():
            values[name] = _clean(series.iloc[i])
        if "gender_word" in fields:
            values["gender_word"] = {"M": "man", "F": "woman"}.get(values.get("gender", ""), "person")
        if template is None:  # the extra fields too: a user's {liked} titles are often all their text says
            text = _auto({**row, **{name: series.iloc[i] for name, series in (extra or {}).items()}}, id_column,
                         roles.title)
        else:
            text = template.format_map(values)
        out.append(_tidy(text))
    return out


def _tidy(text: str) -> str:
    """Collapse what empty fields leave behind ("()", ", ,", double spaces)."""
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"(?:^|(?<=\.))[^.:]*:\s*(?:\.|$)", "", text)  # "Label: ." with nothing after it
    text = re.sub(r"\s+([.,;:])", r"\1", text)
    text = re.sub(r"([.,;:])(\s*[.,;:])+", r"\1", text)
    text = re.sub(r"\s+", " ", text).strip()
    return "" if re.fullmatch(r"[\W_]*", text) else text


def item_texts(items: pd.DataFrame, templates: TextTemplates) -> pd.DataFrame:
    """(item_id, text) for every item."""
    return pd.DataFrame({"item_id": items["item_id"].to_numpy(),
                         "text": render(templates.item, items, "item_id", roles=templates.roles())})


def user_texts(users: pd.DataFrame | None, train: pd.DataFrame, items: pd.DataFrame,
               templates: TextTemplates, user_ids: list[str] | None = None) -> pd.DataFrame:
    """(user_id, text) for every user in `users` (or `user_ids`), with liked titles from train only."""
    ids = list(users["user_id"]) if users is not None else sorted(set(train["user_id"]))
    if user_ids is not None:
        ids = list(dict.fromkeys(list(ids) + list(user_ids)))
    table = pd.DataFrame({"user_id": ids})
    if users is not None:
        table = table.merge(users, on="user_id", how="left")
    liked = pd.Series([""] * len(table))
    title = find_title_column(items.columns, templates.title_column)
    if templates.max_liked and title in items.columns:
        titles = items.set_index("item_id")[title]
        # Deterministic pick: the user's train items in order of a stable hash of the id.
        ranked = train.assign(h=train["item_id"].map(lambda s: hashlib.md5(s.encode()).hexdigest()))
        ranked = ranked.sort_values(["user_id", "h"]).groupby("user_id")["item_id"].apply(
            lambda s: "|".join(str(titles.get(i, "")) for i in s.iloc[: templates.max_liked]))
        liked = table["user_id"].map(ranked.astype(object)).astype(object).where(lambda s: s.notna(), "")
    return pd.DataFrame({"user_id": table["user_id"].to_numpy(),
                         "text": render(templates.user, table, "user_id", roles=templates.roles("user"),
                                        extra={"liked": liked})})


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
