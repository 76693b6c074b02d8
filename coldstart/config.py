"""Job configs: one pydantic model per job, read from YAML, then `--key value` overrides.

Overrides use dotted paths for nested fields and accept dashes for underscores:
`--split.seed 7`, `--generator.latent-dim 64`, `--dataset ml-1m`. A value is
parsed as YAML (so `64`, `0.3`, `true`, `[10, 20]` get their types) and pydantic
validates the result, so a typo in a key or a bad value is an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

T = TypeVar("T", bound=BaseModel)


class JobConfig(BaseModel):
    """Base of every job config: unknown keys are errors, so typos never pass silently.

    Path fields become absolute when the config is made: Ray workers run in
    another directory, where a relative path from the command line means nothing.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _absolute_paths(self):
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Path) and not value.is_absolute():
                object.__setattr__(self, name, value.resolve())
        return self


class RayOptions(BaseModel):
    """Where Ray jobs run; plain data, so the core can carry it without importing Ray."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(None, description="Cluster to join; default $RAY_ADDRESS, else start a local one.")
    local_cpus: int | None = Field(
        None, description="Logical CPUs of a local cluster (over-commit a small machine, e.g. 4 on 2 cores).")

    def join_address(self) -> str | None:
        """The cluster to join (`address`, else $RAY_ADDRESS); None: a local cluster on this machine."""
        return self.address or os.environ.get("RAY_ADDRESS") or None



class ScaleOptions(BaseModel):
    """How a Ray Train job runs: workers, devices, and how failures are survived."""

    model_config = ConfigDict(extra="forbid")
    num_workers: int = Field(2, gt=0, description="Ray Train workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Training precision: bf16 or fp16 run each batch step under autocast (GPU workers).")
    threads_per_worker: int = Field(1, gt=0, description="torch threads (and logical CPUs) per CPU worker.")
    max_failures: int = Field(2, ge=0, description="Worker failures survived, each resuming from the last checkpoint.")
    storage: Path | None = Field(None, description="Ray Train run storage (default: the output's folder / ray_results).")
    checkpoint_every_s: float = Field(
        30.0, ge=0, description="Seconds between checkpoints (weights, optimizer state, best model): an epoch "
                                "reports its metrics always, a checkpoint once this long has passed since the last, "
                                "and after the final epoch. A failure loses at most this much work; 0: every epoch.")
    kill_at_epoch: int | None = Field(None, description="Fault drill: the last rank SIGKILLs itself once at this "
                                                        "epoch, before any checkpoint of it exists (it waits for the "
                                                        "last one written; set checkpoint_every_s 0 so there is one).")

    def runs_root(self, folder: str | Path) -> Path:
        """Where Ray Train runs live: `storage`, else `folder`/ray_results (`folder`: the pipeline's OUT, or
        the folder that holds a job's output)."""
        return Path(self.storage or Path(folder) / "ray_results").resolve()


class ConfigError(ValueError):
    pass


class NotApplicable(ConfigError):
    """The data does not suit the job (a transfer source with no item in common, say): a pipeline skips the
    stage with this message instead of failing."""


def parse_overrides(args: list[str]) -> dict:
    """['--a.b', '1', '--c=x', '--flag'] -> {'a': {'b': 1}, 'c': 'x', 'flag': True}."""
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"expected an option like --key value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        i += 1
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = [p.replace("-", "_") for p in key.split(".")]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--{key}: '{part}' is set both as a value and as a section")
        node[parts[-1]] = parsed
    return out


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | dict | None = None) -> T:
    """Build `cls` from an optional YAML file plus overrides; errors name the field."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    if overrides:
        data = _merge(data, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(e) for e in exc.errors())
        raise ConfigError(f"invalid {cls.__name__}{f' in {path}' if path else ''}: {problems}") from exc


def _describe_error(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(root)"
    text = f"{where}: {error['msg']}"
    value = error.get("input")
    if value is not None and not isinstance(value, dict):
        text += f" (got {value!r})"
    return text


def describe(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(option, default, description) for every field, nested ones dotted: for --help."""
    rows = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        option = f"{prefix}{name.replace('_', '-')}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe(annotation, prefix=f"{option}."))
        else:
            default = "" if field.is_required() else repr(field.get_default(call_default_factory=True))
            rows.append((f"--{option}", default, field.description or ""))
    return rows


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
