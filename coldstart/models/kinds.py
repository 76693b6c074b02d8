"""The cold-start generators by kind: the table that rebuilds a saved generator from its `KIND` and config.

Each generator class enters itself where it is defined (`@cold_model`). What rebuilds generators reads the
table: an artifact's loader (`coldstart_model.load_cold_model`, which first imports the module of every
generator `coldstart.registry` lists) and an ensemble, whose members may be any generator, itself included.
The table lives in this leaf, which imports nothing of the project, so the ensemble's module and the loader
that imports every generator do not import each other.
"""

from __future__ import annotations

from typing import TypeVar

Generator = TypeVar("Generator", bound=type)

COLD_MODELS: dict[str, type] = {}


def cold_model(cls: Generator) -> Generator:
    """Enter a generator class in `COLD_MODELS` under its `KIND`."""
    COLD_MODELS[cls.KIND] = cls
    return cls
