"""The content of a new item or user, built exactly as training built it for the catalogue.

Text: the artifact's template over the given attributes (a user's `{liked}`
left empty, as in training), then the request's free text. Attribute
one-hots: the artifact's fitted `AttributeEncoder`, so an unseen value gets no
bit. The text vector comes from the encoder stage; `features` joins the two
into the generator's input.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from coldstart.data.columns import ColumnRoles
from coldstart.features import AttributeEncoder
from coldstart.serving.errors import Invalid
from coldstart.serving.memo import Memo, key_of
from coldstart.text.templates import TextTemplates, render, template_fields

Side = Literal["item", "user"]
NUMERIC_KINDS = ("decade", "bins")


@dataclass(frozen=True)
class ToEncode:
    """What of a new item or user goes to the encoder (`NewContent.to_encode`), and how its answer reads."""

    usable: bool  # anything says what the entity is: it gets a generated vector
    rendered: str  # the whole text as training rendered it ("" when not usable)
    free: str  # the free text alone, for a user who states what they like ("" otherwise)
    text_dim: int

    @property
    def texts(self) -> list[str]:
        """Both texts go to the encoder at once, so they share one batch."""
        return [t for t in (self.rendered, self.free) if t]

    def vectors(self, encoded) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(LLM vector of the whole text, of the free text alone) from the encoder's answer to `texts`."""
        encoded = list(encoded)
        return (encoded[0] if self.rendered else None), (encoded[-1] if self.free else None)

    def generator_input(self, text_vector: np.ndarray | None) -> np.ndarray:
        """The text vector the generator takes: zeros where nothing was rendered (attributes alone)."""
        return text_vector if text_vector is not None else np.zeros(self.text_dim, np.float32)


class NewContent:
    def __init__(self, spec: dict):
        self.templates = TextTemplates.model_validate(spec["templates"])
        self.attribute_encoders = {"item": AttributeEncoder.from_json(spec["item_attributes"]),
                                   "user": AttributeEncoder.from_json(spec["user_attributes"])}
        self.text_dim = int(spec["text_dim"])
        # A new user's attributes repeat across requests: their rendered text and one-hots are remembered.
        self.rendered, self.one_hots = Memo(), Memo()

    def roles(self, side: Side) -> ColumnRoles:
        """The run's column roles; in a catalogue without a title column a registered item's title goes under
        `title` and is still read first."""
        roles = self.templates.roles(side)
        return roles if side == "user" or roles.title else dataclasses.replace(roles, title="title")

    def _template(self, side: Side) -> str | None:
        return self.templates.item if side == "item" else self.templates.user

    def known_attributes(self, side: Side) -> set[str]:
        """Attributes that change a new entity's content: template fields and encoded columns."""
        template = self._template(side)
        fields = template_fields(template)
        if "gender_word" in fields:
            fields.add("gender")
        return (fields | {c["name"] for c in self.attribute_encoders[side].columns}) - {"liked", "gender_word"}

    def check(self, side: Side, attributes: dict, field: str = "attributes") -> None:
        """An attribute the encoder bins by number must be a number; the error names it."""
        for column in self.attribute_encoders[side].columns:
            value = attributes.get(column["name"])
            if column["kind"] in NUMERIC_KINDS and value is not None:
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise Invalid(f"{field}.{column['name']}", f"must be a number, got {value!r}") from None
                if not np.isfinite(number):
                    raise Invalid(f"{field}.{column['name']}", f"must be a finite number, got {value!r}")

    def usable(self, side: Side, attributes: dict, text: str, title: str | None = None) -> bool:
        """Whether anything here says what the entity is (an automatic template reads every attribute)."""
        given = {k for k, v in attributes.items() if v is not None and str(v).strip()}
        known = given if self._template(side) is None else given & self.known_attributes(side)
        return bool(known or text.strip() or (title or "").strip())

    def to_encode(self, side: Side, attributes: dict, text: str, title: str | None = None,
                  stated: bool = False) -> ToEncode:
        """What of a new entity the encoder gets (`to_encode_many` of one)."""
        return self.to_encode_many(side, [(attributes, text, title)], stated)[0]

    def to_encode_many(self, side: Side, entries: list[tuple[dict, str, str | None]],
                       stated: bool = False) -> list[ToEncode]:
        """What of each new entity, (attributes, free text, title), the encoder gets, rendered as one table: the
        rendered text when anything says what it is, and the free text alone when it states what it likes
        (`stated`).

        A user's stated interest goes to the ranker's text match only, not into the rendered text the generator
        reads, when their attributes say something on their own: the generator learnt from attributes as the
        templates render them, and free text beside them made its vector worse for real new users (held-out
        NDCG, `benchmarks/stated_interest_users.py`). A profile with nothing but free text renders it."""
        usable = [self.usable(side, *entry) for entry in entries]
        apart = [stated and bool(text.strip()) and self.usable(side, attributes, "", title)
                 for attributes, text, title in entries]
        rendered = self.texts(side, [(attributes, "" if away else text, title)
                                     for (attributes, text, title), away in zip(entries, apart)])
        return [ToEncode(ok, r if ok else "", text.strip() if stated else "", self.text_dim)
                for ok, r, (_, text, _) in zip(usable, rendered, entries)]

    def fields(self, side: Side, attributes: dict, title: str | None) -> dict:
        """The row a new entity's content is read from, as a table of the run's columns holds it."""
        template = self._template(side)
        columns = template_fields(template) - {"liked", "gender_word"}
        columns |= {c["name"] for c in self.attribute_encoders[side].columns}
        row = {name: None for name in sorted(columns)}
        row.update(attributes)
        if side == "item" and title is not None:
            row[self.roles(side).title] = title
        id_column = f"{side}_id"
        row.pop(id_column, None)
        return {id_column: "", **row}

    def _row(self, side: Side, attributes: dict, title: str | None) -> pd.DataFrame:
        return pd.DataFrame([self.fields(side, attributes, title)], dtype=object)

    def text(self, side: Side, attributes: dict, text: str = "", title: str | None = None) -> str:
        return self.texts(side, [(attributes, text, title)])[0]

    def _rendering_key(self, side: Side, fields: dict) -> str:
        """What a row's rendered text depends on: the fields its template names (a gender for `gender_word`),
        each read on its own (`clean_entity_table`); every field for the automatic template."""
        template = self._template(side)
        if template is None:
            return key_of([side, fields])
        named = template_fields(template)
        used = named | ({"gender"} if "gender_word" in named else set())
        return key_of([side, {k: v for k, v in fields.items() if k in used}])

    def texts(self, side: Side, entries: list[tuple[dict, str, str | None]]) -> list[str]:
        """`text` of many (attributes, free text, title) at once: the ones not remembered rendered as one table,
        not one per entity; the free text follows."""
        fields = [self.fields(side, attributes, title) for attributes, _, title in entries]

        def render_rows(at: list[int]) -> list[str]:
            rows = pd.DataFrame([fields[i] for i in at], dtype=object)
            extra = {"liked": pd.Series([""] * len(at))} if side == "user" else None
            return render(self._template(side), rows, f"{side}_id", roles=self.roles(side), extra=extra)

        rendered = self.rendered.many([self._rendering_key(side, f) for f in fields], render_rows)
        return [" ".join(part for part in (r, text.strip()) if part) for r, (_, text, _) in zip(rendered, entries)]

    def features(self, side: Side, text_vector: np.ndarray, attributes: dict | list[dict]) -> np.ndarray:
        """(n, text_dim + attribute dims) float32: the generator's input, for one entity (a dict of attributes,
        a text vector) or many (a list, a matrix of text vectors) at once."""
        many = attributes if isinstance(attributes, list) else [attributes]
        fields = [self.fields(side, a, None) for a in many]

        def encode_rows(at: list[int]) -> np.ndarray:
            return self.attribute_encoders[side].transform(pd.DataFrame([fields[i] for i in at], dtype=object))

        encoded = [c["name"] for c in self.attribute_encoders[side].columns]  # all the encoder reads of a row
        one_hots = self.one_hots.many([key_of([side, {name: f.get(name) for name in encoded}]) for f in fields],
                                      encode_rows)
        text_vector = np.asarray(text_vector, np.float32).reshape(len(many), -1)
        return np.concatenate([text_vector, np.asarray(one_hots, np.float32).reshape(len(many), -1)],
                              axis=1).astype(np.float32)
