"""One config object for the HTTP endpoint: what to load, where to listen, the request limits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from coldstart.registry import GENERATOR_FOLDERS
from coldstart.serving.slots import STATED_SHARE
from coldstart.serving.stores import STORE_ENV, StoreSpec, open_store, store_location


def _known_generator(choice: str) -> str:
    if choice != "auto" and choice not in GENERATOR_FOLDERS:
        raise ValueError(f"expected 'auto' or one of {', '.join(map(repr, GENERATOR_FOLDERS))}, got {choice!r}")
    return choice


# The serving encoder's arithmetic, and what runs it (`ServingEncoder`).
Precision = Literal["auto", "bfloat16", "int8"]
Runtime = Literal["auto", "torch", "onnx"]

# A generator by name (`coldstart.registry.GENERATOR_FOLDERS`: the generators a pipeline can leave in an
# artifacts folder, and their folders there), or `auto`: DIR/serving.json's choice.
GeneratorChoice = Annotated[str, AfterValidator(_known_generator)]


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifacts: Path = Field(..., description="Folder that `coldstart pipeline` wrote (split/, distill/, ...).")
    generator: GeneratorChoice = Field(
        "auto", description="Content -> collaborative vector model, by its folder in DIR; auto: DIR/serving.json's "
                            "choice (made on validation through the serving path), else distill.")
    encoder: Literal["auto", "student", "teacher"] = Field(
        "auto", description="Text encoder; auto: DIR/serving.json's choice (the student when the pipeline found it "
                           "faithful), else the student in DIR/encoder when present, else the teacher.")
    encoder_precision: Precision = Field(
        "auto", description="The encoder's arithmetic (benchmarks/encoder_int8.py, on a CPU against float32): auto "
                            "(float32 on a CPU, bfloat16 on a GPU that has it; what the pipeline embedded with); "
                            "bfloat16 (a profile's texts 1.4x sooner on a CPU with native bfloat16, vectors at "
                            "cosine 1.000, new items' served cold NDCG@20 0.99x); int8 (a CPU's dynamic int8: "
                            "2.1x sooner, cosine 0.975, 0.93x).")
    encoder_runtime: Runtime = Field(
        "auto", description="What runs a float32 encoder on a CPU: onnx (ONNX Runtime: the same vectors, a "
                            "profile's texts 1.86x sooner), torch, or auto (onnx where it loads and reproduces "
                            "torch's vectors, else torch).")
    store: StoreSpec = Field(
        None, description="Registration store: a folder (an append-only file log, for one machine) or a "
                          "postgresql:// URL (a database every ranker replica shares, for a cluster); default "
                          f"${STORE_ENV}, else DIR/registry.")
    text_weight: float = Field(1.0, ge=0, description="Weight of what a new user says they like (a profile's free "
                                                      "text, matched to items' text) against the collaborative "
                                                      "score, in units of the two scores' spreads; 0 ignores it.")
    stated_share: float = Field(STATED_SHARE, ge=0, le=1, description="Share of a list's first 10 slots for items that carry an "
                                "attribute value a user's text names (\"Mostly horror films for me\"), ranked by "
                                "the collaborative score (the user's vector then also leans to what users who "
                                "favour them watch); 0 keeps no slots.")
    proxy: Literal["haproxy", "ray"] = Field(
        "haproxy", description="What takes HTTP in front of the ingress replicas of a cluster `coldstart serve` "
                               "starts: haproxy (Ray Serve's HAProxy ingress: requests go straight to an ingress "
                               "replica's own HTTP server; a warm request takes a third of the time) or ray "
                               "(Serve's Python proxy actor, one hop more). A joined cluster keeps what it was "
                               "started with (RAY_SERVE_ENABLE_HA_PROXY=1 in its environment selects haproxy).")
    host: str = Field("127.0.0.1", description="HTTP bind address.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port.")
    api_key: str | None = Field(None, exclude=True,  # a secret: never in a dump, so never in Ray's init arguments
                                description="A write key (or env COLDSTART_API_KEY; read keys: COLDSTART_READ_KEY, "
                                            "COLDSTART_API_KEYS_FILE): with any key, requests need X-API-Key. "
                                            "Required to listen beyond loopback.")
    docs: bool = Field(False, description="Serve /docs and /openapi.json even behind keys (always without keys).")
    rate_limit: float = Field(1000.0, ge=0, description="Requests a second per caller (key, else address) per "
                                                       "ingress replica, bursts of twice that; over it, 429. 0: none.")
    max_body_bytes: int = Field(2 * 1024 * 1024, gt=0, description="Largest request body; larger is a 413.")
    request_timeout_s: float = Field(30.0, gt=0, description="A request unanswered this long is a 503.")

    def limits(self) -> dict:
        """What `coldstart.serving.routes.create_api` takes besides the service and the keys."""
        return {"docs": self.docs or None, "rate": self.rate_limit, "burst": max(1, int(2 * self.rate_limit)),
                "max_body_bytes": self.max_body_bytes, "timeout_s": self.request_timeout_s}
    torch_threads: int = Field(1, gt=0, description="Torch threads per replica (set explicitly: replicas share cores).")
    batch_size: int = Field(16, gt=0, description="Most requests the encoder replica batches into one forward pass "
                                                  "(each one or two texts: a profile's attributes and its words).")
    batch_wait_ms: float = Field(0.0, ge=0, description="How long the encoder waits to fill a batch. 0: it takes "
                                                        "what has queued while the last batch ran (concurrent "
                                                        "requests still share a pass), and a lone request does "
                                                        "not wait: new-user p50 23.89 -> 19.77 ms at concurrency 1, "
                                                        "86.89 -> 90.75 req/s at 8 (benchmarks/serve_latency.py).")
    encoder_gpus: float | None = Field(None, ge=0,
                                       description="GPUs per encoder replica (default: 1 where CUDA is present).")

    def store_location(self) -> Path | str:
        """Where registrations live: `store`, else $COLDSTART_STORE, else DIR/registry."""
        return store_location(self.artifacts, self.store)

    @property
    def store_dir(self) -> Path:
        """The store's folder; an error for a database store, which has none."""
        spec = self.store_location()
        if not isinstance(spec, Path):
            raise ValueError("the registration store is a database URL, not a folder: use store_location()")
        return spec

    def open_store(self):
        """The registration store `store_location()` names (`coldstart.serving.stores.Store`)."""
        return open_store(self.store_location())
