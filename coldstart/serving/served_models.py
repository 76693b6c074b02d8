"""Which models serve an artifacts folder, and the encoder and generator stages over them.

- Generator: any the pipeline made, by its folder's name: `distill` (the
  towers), `vae`, `knn-warm`, `regression`, `ensemble`; `auto` takes
  DIR/serving.json's choice (the pipeline writes the one that won on
  validation), else distill.
- Encoder: `auto` takes DIR/serving.json's "encoder" when the pipeline recorded
  one (it keeps the teacher when the student does not reproduce it well
  enough), else the distilled student (DIR/encoder) when present, else the
  teacher named in the artifact's content spec. The generator was trained on
  the teacher's vectors; the student was distilled to reproduce them.

Each stage logs, once, which model it loaded and why.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from coldstart import artifacts
from coldstart.config import ConfigError
from coldstart.models.saved import MODEL_FILE, is_artifact
from coldstart.models.coldstart_model import load_cold_model, placed_items
from coldstart.models.transfer import title_keys
from coldstart.serving.config import GENERATOR_FOLDERS, Precision, Runtime
from coldstart.serving.memo import Memo
from coldstart.serving.new_content import NewContent, Side
from coldstart.text.encoder import ARTIFACT_FILE, EncoderConfig, TextEncoder

ENCODERS = ("student", "teacher")
SERVING_FILE = "serving.json"
# Stages that run at once (`PipelineConfig.parallel`) each update serving.json: one read-decide-write at a time,
# so a choice made before another stage's model existed cannot overwrite a later one.
SERVING_LOCK = threading.RLock()
STUDENT_FOLDER = "encoder"

log = logging.getLogger(__name__)


class Choice(NamedTuple):
    name: str  # distill | vae, or student | teacher
    source: Any  # the generator's artifact folder, or the encoder's EncoderConfig
    reason: str  # why this one: for the log line and `coldstart serve`'s preflight


def serving_record(artifacts: str | Path) -> dict:
    """DIR/serving.json, the pipeline's record of what to serve; {} when there is none."""
    path = Path(artifacts) / SERVING_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def update_serving(out: str | Path, **fields) -> dict:
    """Merge `fields` into OUT/serving.json (the generator and encoder serving uses) and return it."""
    with SERVING_LOCK:
        current = serving_record(out)
        current.update(fields)
        artifacts.write_json(Path(out) / SERVING_FILE, current)
    return current


def pick_generator(artifacts: str | Path, choice: str = "auto") -> Choice:
    """The generator to serve, its artifact folder, and why it was picked."""
    artifacts = Path(artifacts)
    reason, auto = "asked for", choice == "auto"
    if auto:
        record = serving_record(artifacts)
        if "generator" in record:
            choice = record["generator"]
            selected_on = record.get("selected_on", "cold_val_ndcg@20")
            scores = record.get(selected_on)
            reason = f"{artifacts / SERVING_FILE}'s choice" + (f" on {selected_on} {scores}" if scores else "")
            if choice not in GENERATOR_FOLDERS:
                raise ConfigError(f"{artifacts / SERVING_FILE}: generator {choice!r} is not one of "
                                  f"{', '.join(GENERATOR_FOLDERS)}")
        else:
            choice, reason = "distill", f"no {SERVING_FILE}: the default"
    if choice not in GENERATOR_FOLDERS:
        raise ConfigError(f"generator: expected auto or one of {', '.join(GENERATOR_FOLDERS)}, got {choice!r}")
    folder = artifacts / GENERATOR_FOLDERS[choice]
    if not is_artifact(folder):
        why = f" ({reason})" if auto else ""
        raise ConfigError(f"generator {choice}{why}: no model artifact in {folder} (run the pipeline's {choice} stage)")
    return Choice(choice, folder, reason)


def resolve_generator(artifacts: str | Path, choice: str = "auto") -> tuple[str, Path]:
    """(name, artifact folder) of the generator to serve."""
    name, folder, _ = pick_generator(artifacts, choice)
    return name, folder


def content_spec(artifacts: str | Path, generator: str = "auto") -> dict:
    """The generator artifact's content spec: templates, attribute vocabularies, the teacher encoder."""
    _, folder = resolve_generator(artifacts, generator)
    return json.loads((folder / MODEL_FILE).read_text())["content"]


def pick_encoder(artifacts: str | Path, spec: dict, choice: str = "auto") -> Choice:
    """The encoder to serve (student | teacher), its EncoderConfig, and why it was picked."""
    student = Path(artifacts) / STUDENT_FOLDER
    have_student = (student / ARTIFACT_FILE).is_file()
    reason, auto = "asked for", choice == "auto"
    if auto:
        record = serving_record(artifacts)
        if record.get("encoder") is not None:
            choice = record["encoder"]
            if choice not in ENCODERS:
                raise ConfigError(f"{Path(artifacts) / SERVING_FILE}: encoder {choice!r} is not student or teacher")
            cosine, threshold = record.get("encoder_cosine"), record.get("encoder_threshold")
            reason = f"{Path(artifacts) / SERVING_FILE}'s choice" + (
                f" (student-teacher cosine {cosine} against threshold {threshold})" if cosine is not None else "")
        elif have_student:
            choice, reason = "student", f"a distilled student in {student}"
        else:
            choice, reason = "teacher", f"no distilled student in {student}"
    teacher = EncoderConfig.model_validate(spec["encoder"])
    if choice == "student":
        if not have_student:
            why = f" ({reason})" if auto else ""
            raise ConfigError(f"encoder student{why}: no distilled encoder in {student} "
                              f"(run `coldstart train encoder`)")
        # The student folder carries its own pooling and length; the device is this process's.
        return Choice("student", teacher.model_copy(update={"model": str(student.resolve()), "pooling": "auto",
                                                            "max_length": None, "device": "auto",
                                                            "dtype": "auto"}), reason)
    return Choice("teacher", teacher.model_copy(update={"device": "auto", "dtype": "auto"}), reason)


def resolve_encoder(artifacts: str | Path, spec: dict, choice: str = "auto") -> tuple[str, EncoderConfig]:
    """(student | teacher, its EncoderConfig)."""
    kind, cfg, _ = pick_encoder(artifacts, spec, choice)
    return kind, cfg


class ServingEncoder:
    """Text -> L2-normalised vector of the dimension the generator was trained on."""

    def __init__(self, artifacts: str | Path, spec: dict, choice: str = "auto", precision: Precision = "auto",
                 runtime: Runtime = "auto"):
        """`precision`: auto (float32 on a CPU, bfloat16 on a GPU that has it), bfloat16, or int8 (on a CPU, the
        model's linear layers in dynamic int8, `TextEncoder.to_int8`; float32's auto elsewhere). `runtime`: what
        runs a float32 model on a CPU: onnx (ONNX Runtime, `TextEncoder.to_onnx`: the same vectors, sooner),
        torch, or auto (onnx where it loads and reproduces torch's vectors, else torch, saying why)."""
        self.kind, cfg, self.reason = pick_encoder(artifacts, spec, choice)
        if precision == "bfloat16":
            cfg = cfg.model_copy(update={"dtype": "bfloat16"})
        self.encoder = TextEncoder(cfg)
        if precision == "int8" and self.encoder.device.type == "cpu":
            self.encoder.to_int8()
        if precision != "auto":
            self.reason += f"; {precision}"
        if runtime == "onnx" or (runtime == "auto" and precision == "auto" and self.encoder.device.type == "cpu"):
            try:
                self.encoder.to_onnx()
                self.reason += "; ONNX Runtime"
            except Exception as exc:  # a model the exporter cannot take, or onnxruntime missing: torch runs it
                if runtime == "onnx":
                    raise ConfigError(f"encoder runtime onnx: {type(exc).__name__}: {exc}") from None
                self.reason += f"; torch (ONNX Runtime: {type(exc).__name__}: {str(exc)[:200]})"
        self.memo = Memo()
        if self.encoder.dim != int(spec["text_dim"]):
            raise ConfigError(f"encoder {self.kind} ({cfg.model}) gives {self.encoder.dim}-d vectors; the generator "
                              f"was trained on {spec['text_dim']}-d ones")
        log.info("encoder: %s %s (%s)", self.kind, cfg.model, self.reason)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors of `texts`, one batch for those the memo does not hold (a profile's rendered attributes
        repeat across new users; its free text mostly does not)."""
        texts = list(texts)
        if not texts:
            return self.encoder.encode(texts)
        vectors = self.memo.many(texts, lambda at: list(self.encoder.encode([texts[i] for i in at]).copy()))
        return np.stack(vectors)

    def embed(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


class ServingGenerator:
    """Content (text vector + attributes) -> a vector in the backbone's space, for new items and users."""

    def __init__(self, artifacts: str | Path, choice: str = "auto"):
        self.name, self.folder, self.reason = pick_generator(artifacts, choice)
        self.meta, self.model, self.arrays = load_cold_model(self.folder)
        self.content = NewContent(self.meta["content"])
        log.info("generator: %s from %s (%s)", self.name, self.folder, self.reason)

    def item_keys(self, entries: list[tuple[dict, str | None]]) -> list[str | None] | None:
        """The title keys of new items, (attributes, title) each, for a generator that knows items by title
        (transfer: the items its source knew); None for the others."""
        if not getattr(self.model, "known_keys", None):
            return None
        rows = pd.DataFrame([self.content.fields("item", attributes, title) for attributes, title in entries],
                            dtype=object)
        return title_keys(rows, self.content.roles("item").title)

    @torch.inference_mode()
    def generate(self, side: Side, features: np.ndarray,
                 titles: list[tuple[dict, str | None]] | None = None) -> np.ndarray:
        """`titles`: the new items' (attributes, title), for a generator that knows some items by title."""
        x = torch.as_tensor(np.asarray(features, np.float32))
        keys = self.item_keys(titles) if side == "item" and titles else None
        if side == "user":
            out = self.model.generate_users(x)
        else:
            out = self.model.generate_items(x) if keys is None else self.model.generate_items(x, keys=keys)
        return out.float().numpy()

    def item_vector(self, text_vector: np.ndarray, attributes: dict, title: str | None = None) -> np.ndarray:
        return self.generate("item", self.content.features("item", text_vector, attributes), [(attributes, title)])[0]

    def user_vector(self, text_vector: np.ndarray, attributes: dict) -> np.ndarray:
        return self.generate("user", self.content.features("user", text_vector, attributes))[0]

    def catalogue_text(self) -> np.ndarray:
        """The artifact's items' LLM text vectors (unit length; zeros for an item without text)."""
        text = self.arrays["item_features"][:, :self.content.text_dim].astype(np.float32)
        norms = np.linalg.norm(text, axis=1, keepdims=True)
        return text / np.where(norms > 0, norms, 1.0)

    def catalogue_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the artifact: the saved vectors of warm (and placed) ones, generated for the rest."""
        users = self.arrays["user_vectors"].astype(np.float32).copy()
        items = self.arrays["item_vectors"].astype(np.float32).copy()
        for side, vectors, placed, features in (("user", users, self.arrays["warm_users"].astype(bool),
                                                 "user_features"),
                                                ("item", items, placed_items(self.arrays), "item_features")):
            cold = np.flatnonzero(~placed)
            if len(cold):
                vectors[cold] = self.generate(side, self.arrays[features][cold])
        return users, items
