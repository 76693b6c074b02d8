"""One config object for the HTTP endpoint: what to load, where to listen, the request limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifacts: Path = Field(..., description="Folder that `coldstart pipeline` wrote (split/, distill/, ...).")
    generator: Literal["auto", "distill", "vae"] = Field(
        "auto", description="Content -> collaborative vector model; auto: DIR/serving.json's choice, else distill.")
    encoder: Literal["auto", "student", "teacher"] = Field(
        "auto", description="Text encoder; auto: DIR/serving.json's choice (the student when the pipeline found it "
                           "faithful), else the student in DIR/encoder when present, else the teacher.")
    store: Path | None = Field(None, description="Registration store folder (default DIR/registry).")
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port.")
    api_key: str | None = Field(None, description="If set (or env COLDSTART_API_KEY), /v1/* need header X-API-Key.")
    torch_threads: int = Field(1, gt=0, description="Torch threads per replica (set explicitly: replicas share cores).")
    batch_size: int = Field(16, gt=0, description="Most texts the encoder replica batches into one forward pass.")
    batch_wait_ms: float = Field(2.0, ge=0, description="How long the encoder waits to fill a batch.")
    encoder_gpus: float | None = Field(None, ge=0,
                                       description="GPUs per encoder replica (default: 1 where CUDA is present).")

    @property
    def store_dir(self) -> Path:
        return self.store or self.artifacts / "registry"
