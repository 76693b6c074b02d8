"""Data: the canonical schema, loaders, MovieLens, imports and cold-start splits."""

from coldstart.data.schema import DataError, Dataset, load_dataset, save_dataset, validate

__all__ = ["DataError", "Dataset", "load_dataset", "save_dataset", "validate"]
