"""Item and user text from templates over any columns.

A template is a Python format string over the entity's columns, e.g.
"{title} ({year}). Genres: {genres}." Missing or null values render as empty
and `|`-joined lists as comma lists. `None` means the automatic template: the
title (if any) then "column: value" for every other column. A user's text can
include `{liked}`: titles of items they interacted with in train (never from
val or test, so no held-out interaction leaks into the content); the automatic
template ends with them ("liked: ..."), so users without a users table are
still described by what they liked.
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

from coldstart.data.columns import clean_entity_table, is_missing

log = logging.getLogger(__name__)

MOVIELENS_ITEM = "{title} ({year}). Genres: {genres}."
MOVIELENS_USER = "A {gender_word} aged {age}, working as {occupation}. Liked movies: {liked}."


class TextTemplates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str | None = Field(MOVIELENS_ITEM, description="Item text template; null for automatic.")
    user: str | None = Field(MOVIELENS_USER, description="User text template; null for automatic.")
    max_liked: int = Field(10, ge=0, description="Most liked item titles in a user's {liked}.")
    title_column: str = Field("title", description="Item column that {liked} lists.")

    def fingerprint(self) -> str:
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:12]


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


def _auto(row: dict[str, Any], id_column: str, title: str) -> str:
    parts = [_clean(row[title])] if title in row and _clean(row[title]) else []
    parts += [f"{k}: {_clean(v)}" for k, v in row.items() if k not in (id_column, title) and _clean(v)]
    return ". ".join(parts) + ("." if parts else "")


def render(template: str | None, rows: pd.DataFrame, id_column: str, *, title: str = "title",
           extra: dict[str, pd.Series] | None = None) -> list[str]:
    """One text per row; fields a template names but the table lacks render empty."""
    fields = {f for _, f, _, _ in string.Formatter().parse(template or "") if f}
    absent = fields - set(rows.columns) - set(extra or {}) - {"gender_word"}
    if template is not None and absent:
        # A template written for other data (the MovieLens default on a shop's catalogue, say).
        log.warning("template fields %s are not columns of this table; using the automatic template",
                    sorted(absent))
        template = None
    out = []
    # The loaders' reading of years, titles and lists, so a serving row renders as a catalogue row would.
    records = clean_entity_table(rows, id_column).to_dict("records")
    for i, row in enumerate(records):
        values = _Values({k: _clean(v) for k, v in row.items()})
        for name, series in (extra or {}).items():
            values[name] = _clean(series.iloc[i])
        if "gender_word" in fields:
            values["gender_word"] = {"M": "man", "F": "woman"}.get(values.get("gender", ""), "person")
        if template is None:  # the extra fields too: a user's {liked} titles are often all their text says
            text = _auto({**row, **{name: series.iloc[i] for name, series in (extra or {}).items()}}, id_column, title)
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
                         "text": render(templates.item, items, "item_id", title=templates.title_column)})


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
    if templates.max_liked and templates.title_column in items.columns:
        titles = items.set_index("item_id")[templates.title_column]
        # Deterministic pick: the user's train items in order of a stable hash of the id.
        ranked = train.assign(h=train["item_id"].map(lambda s: hashlib.md5(s.encode()).hexdigest()))
        ranked = ranked.sort_values(["user_id", "h"]).groupby("user_id")["item_id"].apply(
            lambda s: "|".join(str(titles.get(i, "")) for i in s.iloc[: templates.max_liked]))
        liked = table["user_id"].map(ranked.astype(object)).astype(object).where(lambda s: s.notna(), "")
    return pd.DataFrame({"user_id": table["user_id"].to_numpy(),
                         "text": render(templates.user, table, "user_id", extra={"liked": liked})})


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()
