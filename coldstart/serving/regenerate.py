"""Registrations made against other artifacts, re-generated with the models being served.

A registration record keeps what the client sent (title, attributes, text, liked
ids) beside the vector the serving models of the time made from it. When the
endpoint moves to new artifacts (a swap, or an A/B variant reading the same
store), the old vector belongs to another embedding space; `Regenerator` makes
the record's vectors again from its stored content, exactly as a registration
through the new models would, so every registered item and user is served by
the new model from its first request on. The text encoder is loaded on the first
record that needs it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from coldstart.serving.new_content import NewContent, Side
from coldstart.serving.served_models import ServingEncoder

log = logging.getLogger(__name__)


def _key(entry: tuple[dict, str, str | None]) -> tuple:
    attributes, text, title = entry
    return json.dumps(attributes, sort_keys=True, default=str), text, title


def content_vectors(content: NewContent, encode, generate, side: Side, attributes: dict, text: str,
                    title: str | None = None, stated: bool = False) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                            np.ndarray | None]:
    """(generated vector, LLM vector of the whole text, LLM vector of the free text alone) of an item or a user,
    None where there is nothing to encode: what `RecommendService` computes through its stages, in one call.
    `encode(texts) -> vectors`, `generate(side, text_vector, attributes, title) -> vector`."""
    plan = content.to_encode(side, attributes, text, title, stated)
    text_vector, stated_vector = plan.vectors(encode(plan.texts) if plan.texts else [])
    if not plan.usable:
        return None, text_vector, stated_vector
    return generate(side, plan.generator_input(text_vector), attributes, title), text_vector, stated_vector


class Regenerator:
    """A registration record of another space -> the same record with this space's vectors."""

    def __init__(self, artifacts: str | Path, generator, encoder_choice: str = "auto", precision: str = "auto",
                 runtime: str = "auto"):
        """`generator`: the `ServingGenerator` being served; the encoder is the one serving would pick, in the
        serving encoder's `precision` and `runtime` (`ServingEncoder`), so a record made again gets the vector a
        registration through the endpoint gets."""
        self.artifacts, self.generator, self.encoder_choice = artifacts, generator, encoder_choice
        self.precision, self.runtime = precision, runtime
        self._encoder = None
        self._prepared: dict[tuple, tuple] = {}

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = ServingEncoder(self.artifacts, self.generator.meta["content"], self.encoder_choice,
                                           precision=self.precision, runtime=self.runtime)
        return self._encoder

    def _generate(self, side: Side, text_vector: np.ndarray, attributes: dict, title: str | None) -> np.ndarray:
        if side == "item":
            return self.generator.item_vector(text_vector, attributes, title)
        return self.generator.user_vector(text_vector, attributes)

    def prepare(self, records: list[dict]) -> None:
        """Make the vectors of `records` (about to be made again) in batches: one rendered table, one encoding
        and one generator pass per side instead of one each, so a store of thousands of registrations is
        made again in seconds. `__call__` takes them from here; replaces what the last call prepared."""
        content, self._prepared = self.generator.content, {}
        work = {}
        for side in ("item", "user"):
            mine = [r for r in records if r.get("kind") == side]
            entries = [(r.get("attributes") or {}, r.get("text") or "", r.get("title")) for r in mine]
            plans = content.to_encode_many(side, entries, stated=side == "user")
            usable = [plan.usable for plan in plans]
            rendered = [plan.rendered for plan in plans]
            free = [plan.free for plan in plans]
            work[side] = (mine, entries, usable, rendered, free)
        texts = sorted({t for _, _, _, rendered, free in work.values() for t in rendered + free if t})
        if not texts:
            return
        encoded = dict(zip(texts, self.encoder.encode(texts)))
        zeros = np.zeros(content.text_dim, np.float32)
        for side, (mine, entries, usable, rendered, free) in work.items():
            made = [i for i, ok in enumerate(usable) if ok]
            vectors = {}
            if made:
                features = content.features(side, np.stack([encoded.get(rendered[i], zeros) for i in made]),
                                            [entries[i][0] for i in made])
                titles = [(entries[i][0], entries[i][2]) for i in made]
                vectors = dict(zip(made, self.generator.generate(side, features, titles)))
            for i, record in enumerate(mine):
                self._prepared[(side, record.get("id"), _key(entries[i]))] = (
                    vectors.get(i), encoded.get(rendered[i]), encoded.get(free[i]))

    def __call__(self, record: dict, space: str) -> dict:
        """For an item: `vector` and `text_vector` anew. For a user: `content_vector` (None when only liked ids
        describe them) and the stated interest's `text_vector`; the catalogue adds the liked items' share."""
        side = record["kind"]
        entry = (record.get("attributes") or {}, record.get("text") or "", record.get("title"))
        made = self._prepared.get((side, record.get("id"), _key(entry)))
        if made is None:
            made = content_vectors(self.generator.content, self.encoder.encode, self._generate, side, *entry,
                                   stated=side == "user")
        vector, text_vector, stated = made
        fresh = {**record, "space": space, "generator": self.generator.name, "regenerated_from": record.get("space")}
        if side == "item":
            fresh.update(vector=vector, text_vector=text_vector)
        else:
            fresh.update(content_vector=vector, text_vector=stated)
            fresh.pop("vector", None)
        return fresh
