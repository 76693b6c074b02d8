"""Which models serve an artifacts folder, and the encoder and generator stages over them.

- Generator: `distill` (DIR/distill, the towers) or `vae` (DIR/vae); `auto`
  takes DIR/serving.json's choice (the pipeline writes the one that won on
  validation), else distill.
- Encoder: the distilled student (DIR/encoder) when present, else the teacher
  named in the artifact's content spec. The generator was trained on the
  teacher's vectors; the student was distilled to reproduce them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from coldstart.config import ConfigError
from coldstart.models.artifact import MODEL_FILE, is_artifact
from coldstart.serving.content import NewContent, Side
from coldstart.text.encoder import ARTIFACT_FILE, EncoderConfig, TextEncoder

GENERATOR_FOLDERS = {"distill": "distill", "vae": "vae"}


def resolve_generator(artifacts: str | Path, choice: str = "auto") -> tuple[str, Path]:
    """(name, artifact folder) of the generator to serve."""
    artifacts = Path(artifacts)
    if choice == "auto":
        pick = artifacts / "serving.json"
        choice = json.loads(pick.read_text())["generator"] if pick.is_file() else "distill"
    if choice not in GENERATOR_FOLDERS:
        raise ConfigError(f"generator: expected distill, vae or auto, got {choice!r}")
    folder = artifacts / GENERATOR_FOLDERS[choice]
    if not is_artifact(folder):
        raise ConfigError(f"generator {choice}: no model artifact in {folder} (run the pipeline's {choice} stage)")
    return choice, folder


def content_spec(artifacts: str | Path, generator: str = "auto") -> dict:
    """The generator artifact's content spec: templates, attribute vocabularies, the teacher encoder."""
    _, folder = resolve_generator(artifacts, generator)
    return json.loads((folder / MODEL_FILE).read_text())["content"]


def resolve_encoder(artifacts: str | Path, spec: dict, choice: str = "auto") -> tuple[str, EncoderConfig]:
    """(student | teacher, its EncoderConfig)."""
    student = Path(artifacts) / "encoder"
    teacher = EncoderConfig.model_validate(spec["encoder"])
    if choice in ("auto", "student") and (student / ARTIFACT_FILE).is_file():
        # The student folder carries its own pooling and length; the device is this process's.
        return "student", teacher.model_copy(update={"model": str(student.resolve()), "pooling": "auto",
                                                     "max_length": None, "device": "auto", "dtype": "auto"})
    if choice == "student":
        raise ConfigError(f"encoder student: no distilled encoder in {student} (run `coldstart train encoder`)")
    return "teacher", teacher.model_copy(update={"device": "auto", "dtype": "auto"})


class ServingEncoder:
    """Text -> L2-normalised vector of the dimension the generator was trained on."""

    def __init__(self, artifacts: str | Path, spec: dict, choice: str = "auto"):
        self.kind, cfg = resolve_encoder(artifacts, spec, choice)
        self.encoder = TextEncoder(cfg)
        if self.encoder.dim != int(spec["text_dim"]):
            raise ConfigError(f"encoder {self.kind} ({cfg.model}) gives {self.encoder.dim}-d vectors; the generator "
                              f"was trained on {spec['text_dim']}-d ones")

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def embed(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


class ServingGenerator:
    """Content (text vector + attributes) -> a vector in the backbone's space, for new items and users."""

    def __init__(self, artifacts: str | Path, choice: str = "auto"):
        from coldstart.models.coldstart_model import load_cold_model

        self.name, self.folder = resolve_generator(artifacts, choice)
        self.meta, self.model, self.arrays = load_cold_model(self.folder)
        self.content = NewContent(self.meta["content"])

    @torch.inference_mode()
    def generate(self, side: Side, features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(features, np.float32))
        out = self.model.generate_items(x) if side == "item" else self.model.generate_users(x)
        return out.float().numpy()

    def item_vector(self, text_vector: np.ndarray, attributes: dict) -> np.ndarray:
        return self.generate("item", self.content.features("item", text_vector, attributes))[0]

    def user_vector(self, text_vector: np.ndarray, attributes: dict) -> np.ndarray:
        return self.generate("user", self.content.features("user", text_vector, attributes))[0]

    def catalogue_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of the artifact: backbone vectors for warm ones, generated for cold ones."""
        users = self.arrays["user_vectors"].astype(np.float32).copy()
        items = self.arrays["item_vectors"].astype(np.float32).copy()
        for side, vectors, warm, features in (("user", users, "warm_users", "user_features"),
                                              ("item", items, "warm_items", "item_features")):
            cold = np.flatnonzero(~self.arrays[warm].astype(bool))
            if len(cold):
                vectors[cold] = self.generate(side, self.arrays[features][cold])
        return users, items
