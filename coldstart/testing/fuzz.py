"""Malformed dataset and split folders, drawn from a seed, for the loader fuzz tests and the reliability benchmark.

Each case starts from a small valid folder and applies one mutation: a broken file (truncated,
bit-flipped, garbage, empty, invalid UTF-8, bad CSV quoting), a bad column (wrong type, nulls,
blanks, nested values, huge strings, duplicates, missing), or a bad side file (split.json,
mapping YAML). Some mutations leave the input valid (a BOM, CRLF, a 10 MB title); the loaders
must then succeed.

`run_case` feeds one case to its loader and classifies the outcome: "ok" (loaded), "clean" (a
DataError naming a file inside the case folder), or "unclean" (anything else, with the reason).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from coldstart.data.importer import ColumnMapping, import_dataset
from coldstart.data.schema import DataError, load_dataset, validate
from coldstart.data.split import load_split, make_split, save_split
from coldstart.testing import make_tables

HUGE = 10 * 1024 * 1024  # a 10 MB string


@dataclass
class Case:
    name: str
    target: str  # "load_dataset" | "validate" | "import_dataset" | "load_split"
    folder: Path
    frames: list | None = None  # validate() takes frames, not files


# --- file-level damage, any format -------------------------------------------------------------

def _truncate(path: Path, rng) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(rng.integers(0, max(len(raw) - 1, 1)))])


def _flip_bytes(path: Path, rng) -> None:
    raw = bytearray(path.read_bytes())
    for pos in rng.integers(0, len(raw), int(rng.integers(1, 16))):
        raw[pos] = int(rng.integers(0, 256))
    path.write_bytes(bytes(raw))


def _garbage(path: Path, rng) -> None:
    path.write_bytes(rng.bytes(int(rng.integers(1, 4096))))


def _empty(path: Path, rng) -> None:
    path.write_bytes(b"")


def _parquet_magic_then_garbage(path: Path, rng) -> None:
    path.write_bytes(b"PAR1" + rng.bytes(int(rng.integers(0, 512))) + b"PAR1")


FILE_DAMAGE: dict[str, Callable] = {"truncated": _truncate, "bit-flipped": _flip_bytes, "garbage": _garbage,
                                    "empty-file": _empty, "parquet-magic-garbage": _parquet_magic_then_garbage}


# --- CSV text damage ----------------------------------------------------------------------------

def _invalid_utf8(path: Path, rng) -> None:
    lines = path.read_bytes().split(b"\n")
    row = int(rng.integers(1, max(len(lines) - 1, 2)))
    lines[row] = lines[row][:3] + rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\x80"]) + lines[row][3:]
    path.write_bytes(b"\n".join(lines))


def _nul_bytes(path: Path, rng) -> None:
    raw = bytearray(path.read_bytes())
    pos = int(rng.integers(len(raw) // 2, len(raw)))
    path.write_bytes(bytes(raw[:pos]) + b"\x00" * int(rng.integers(1, 8)) + bytes(raw[pos:]))


def _unclosed_quote(path: Path, rng) -> None:
    lines = path.read_text().split("\n")
    row = int(rng.integers(1, max(len(lines) - 1, 2)))
    lines[row] = '"' + lines[row]
    path.write_text("\n".join(lines))


def _ragged_row(path: Path, rng) -> None:
    lines = path.read_text().split("\n")
    row = int(rng.integers(1, max(len(lines) - 1, 2)))
    lines[row] = lines[row] + ",x,y,z"
    path.write_text("\n".join(lines))


def _header_only(path: Path, rng) -> None:
    path.write_text(path.read_text().split("\n")[0] + "\n")


def _bom_and_crlf(path: Path, rng) -> None:  # still valid
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))


CSV_DAMAGE: dict[str, Callable] = {"invalid-utf8": _invalid_utf8, "nul-bytes": _nul_bytes,
                                   "unclosed-quote": _unclosed_quote, "ragged-row": _ragged_row,
                                   "header-only": _header_only, "bom-crlf": _bom_and_crlf}


# --- column damage (applied to the frame, then written) -----------------------------------------

def _id_column(frame: pd.DataFrame, rng) -> str:
    ids = [c for c in ("user_id", "item_id") if c in frame.columns]
    return str(rng.choice(ids))


def _column_damage(frame: pd.DataFrame, kind: str, rng) -> pd.DataFrame:
    frame = frame.copy()
    n = len(frame)
    col = _id_column(frame, rng)
    row = int(rng.integers(0, n))
    if kind == "drop-id-column":
        return frame.drop(columns=[col])
    if kind == "null-id":
        frame[col] = frame[col].astype(object)
        frame.loc[row, col] = None
    elif kind == "nan-float-id":
        frame[col] = np.arange(n, dtype=float)
        frame.loc[row, col] = np.nan
    elif kind == "blank-id":
        frame[col] = frame[col].astype(object)
        frame.loc[row, col] = " " * int(rng.integers(0, 3))
    elif kind == "huge-float-ids":  # distinct ids beyond float precision must not collapse
        frame[col] = 1e30 + np.arange(n, dtype=float) * 1e15
    elif kind == "bool-id":
        frame[col] = np.arange(n) % 2 == 0
    elif kind == "list-id":
        frame[col] = [[str(v), "x"] for v in frame[col]]
    elif kind == "struct-id":
        frame[col] = [{"id": str(v)} for v in frame[col]]
    elif kind == "bytes-id":
        frame[col] = [str(v).encode() + b"\xff" for v in frame[col]]
    elif kind == "huge-id":
        frame[col] = frame[col].astype(object)
        frame.loc[row, col] = "u" * HUGE
    elif kind == "huge-title" and "title" in frame.columns:
        frame["title"] = frame["title"].astype(object)
        frame.loc[row, "title"] = "T" * HUGE
    elif kind == "rating-text" and "rating" in frame.columns:
        frame["rating"] = frame["rating"].astype(str)
        frame.loc[row, "rating"] = "five stars"
    elif kind == "rating-struct" and "rating" in frame.columns:
        frame["rating"] = [{"stars": float(v)} for v in frame["rating"]]
    elif kind == "rating-list" and "rating" in frame.columns:
        frame["rating"] = [[float(v)] for v in frame["rating"]]
    elif kind == "rating-inf" and "rating" in frame.columns:
        frame.loc[row, "rating"] = np.inf
    elif kind == "timestamp-dates" and "timestamp" in frame.columns:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s")
    elif kind == "duplicate-id" and col in ("item_id",) and "title" in frame.columns:
        frame.loc[row, col] = frame.loc[(row + 1) % n, col]
    elif kind == "no-rows":
        frame = frame.iloc[:0]
    elif kind == "no-columns":
        frame = pd.DataFrame(index=range(n))
    elif kind == "unknown-ref" and "user_id" in frame.columns and "item_id" in frame.columns:
        frame.loc[row, "item_id"] = "no-such-item"
    return frame


COLUMN_DAMAGE = ("drop-id-column", "null-id", "nan-float-id", "blank-id", "huge-float-ids", "bool-id",
                 "list-id", "struct-id", "bytes-id", "huge-id", "huge-title", "rating-text", "rating-struct",
                 "rating-list", "rating-inf", "timestamp-dates", "duplicate-id", "no-rows", "no-columns",
                 "unknown-ref", "duplicate-column-names")


def _write(frame: pd.DataFrame, path: Path, *, duplicate_column: bool = False) -> None:
    if path.suffix == ".parquet":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if duplicate_column:  # parquet allows two columns of one name; pandas does not expect it
            table = table.append_column(table.schema.field(0).name, table.column(0))
        pq.write_table(table, path)
    else:
        if duplicate_column:
            frame = pd.concat([frame, frame.iloc[:, :1]], axis=1)
        frame.to_csv(path, index=False)


# --- the cases ----------------------------------------------------------------------------------

TABLES = ("interactions", "items", "users")
SPLIT_TABLES = ("train", "warm_val", "cold_val", "cold_test", "items")


def _write_dataset(folder: Path, rng, fmt: dict[str, str]) -> dict[str, Path]:
    inter, items, users = make_tables(n_users=12, n_items=20, per_user=6, seed=int(rng.integers(0, 1000)))
    folder.mkdir(parents=True)
    paths = {}
    for name, frame in zip(TABLES, (inter, items, users)):
        paths[name] = folder / f"{name}.{fmt[name]}"
        _write(frame, paths[name])
    return paths


def make_case(root: Path, index: int, seed: int) -> Case:
    """The `index`-th case of the stream drawn from `seed`, written under `root`."""
    rng = np.random.default_rng([seed, index])
    target = str(rng.choice(["load_dataset", "import_dataset", "validate", "load_split"], p=[.3, .25, .2, .25]))
    folder = root / f"case{index:04d}"
    fmt = {t: str(rng.choice(["parquet", "csv"])) for t in (*TABLES, *SPLIT_TABLES)}
    if target == "validate":  # frames in memory: only column damage reaches validate()
        frames = list(make_tables(n_users=12, n_items=20, per_user=6, seed=int(rng.integers(0, 1000))))
        index = int(rng.choice(3, p=[.45, .35, .2]))
        kind = str(rng.choice(COLUMN_DAMAGE))
        if kind == "duplicate-column-names":
            frames[index] = pd.concat([frames[index], frames[index].iloc[:, :1]], axis=1)
        else:
            frames[index] = _column_damage(frames[index], kind, rng)
        return Case(f"{target}/{TABLES[index]}/column:{kind}", target, folder, frames)
    if target == "load_split":
        ds = validate(*make_tables(n_users=16, n_items=24, per_user=6, seed=int(rng.integers(0, 1000))))
        split = make_split(ds, "items", seed=0)
        save_split(split, folder)
        for name in SPLIT_TABLES:  # rewrite some tables as CSV: the loaders read both
            if fmt[name] == "csv":
                frame = pd.read_parquet(folder / f"{name}.parquet")
                (folder / f"{name}.parquet").unlink()
                frame.to_csv(folder / f"{name}.csv", index=False)
        table = str(rng.choice([*SPLIT_TABLES, "split.json"]))
        path = folder / ("split.json" if table == "split.json" else f"{table}.{fmt[table]}")
        if table == "split.json":
            kind = str(rng.choice(["json-truncated", "json-garbage", "json-invalid-utf8", "json-list",
                                   "json-cold-number", "json-cold-wrong"]))
            _damage_split_json(path, kind, rng)
            return Case(f"{target}/{table}/{kind}", target, folder)
    else:
        paths = _write_dataset(folder / "src", rng, fmt)
        table = str(rng.choice(TABLES, p=[.45, .35, .2]))
        path = paths[table]
        if target == "import_dataset" and rng.random() < 0.15:
            kind = str(rng.choice(["yaml-garbage", "yaml-invalid-utf8", "yaml-duplicate-target"]))
            _write_mapping(folder / "mapping.yaml", kind, rng)
            return Case(f"{target}/mapping/{kind}", target, folder)
    families = ["file", "column"] + (["csv"] if path.suffix == ".csv" else [])
    family = str(rng.choice(families))
    if family == "file":
        kind = str(rng.choice(list(FILE_DAMAGE)))
        FILE_DAMAGE[kind](path, rng)
    elif family == "csv":
        kind = str(rng.choice(list(CSV_DAMAGE)))
        CSV_DAMAGE[kind](path, rng)
    else:
        kind = str(rng.choice(COLUMN_DAMAGE))
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if kind == "duplicate-column-names":
            _write(frame, path, duplicate_column=True)
        else:
            _write(_column_damage(frame, kind, rng), path)
    return Case(f"{target}/{table}/{family}:{kind}", target, folder)


def _damage_split_json(path: Path, kind: str, rng) -> None:
    text = path.read_text()
    if kind == "json-truncated":
        path.write_text(text[: int(rng.integers(1, len(text) - 1))])
    elif kind == "json-garbage":
        path.write_bytes(rng.bytes(64))
    elif kind == "json-invalid-utf8":
        path.write_bytes(b'{"cold": "items\xff\xfe"}')
    elif kind == "json-list":
        path.write_text("[1, 2, 3]")
    elif kind == "json-cold-number":
        path.write_text(json.dumps({**json.loads(text), "cold": 5}))
    elif kind == "json-cold-wrong":
        path.write_text(json.dumps({**json.loads(text), "cold": "users"}))


def _write_mapping(path: Path, kind: str, rng) -> None:
    if kind == "yaml-garbage":
        path.write_bytes(b"interactions: {user_id: [unclosed\n" + rng.bytes(32))
    elif kind == "yaml-invalid-utf8":
        path.write_bytes(b"interactions: {user_id: us\xff\xfeer}\n")
    else:  # two of our columns from one source column: the rename would make duplicate columns
        path.write_text("interactions: {user_id: user_id, item_id: user_id}\n")


# --- running a case -----------------------------------------------------------------------------

def run_case(case: Case) -> tuple[str, str]:
    """("ok" | "clean" | "unclean", detail)."""
    out = case.folder / "out"
    src = case.folder / "src"
    try:
        if case.target == "load_dataset":
            load_dataset(src)
        elif case.target == "validate":
            validate(*case.frames, files={k: str(case.folder / k) for k in TABLES})
        elif case.target == "import_dataset":
            mapping_file = case.folder / "mapping.yaml"
            mapping = ColumnMapping.from_yaml(mapping_file) if mapping_file.exists() else None
            import_dataset(src, out, mapping=mapping)
            load_dataset(out)  # what an import wrote must load back
        else:
            load_split(case.folder)
    except DataError as exc:
        if exc.file is None or not str(exc.file).startswith(str(case.folder)):
            return "unclean", f"DataError names no file of the input: {exc}"
        if case.target == "import_dataset" and _leftovers(case.folder):
            return "unclean", f"failed import left {_leftovers(case.folder)}"
        return "clean", str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - classifying every other exception is the point
        return "unclean", f"{type(exc).__name__}: {str(exc)[:200]}"
    return "ok", ""


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name == "out" or p.name.startswith(".out."))


def fuzz(root: Path, n: int, seed: int = 0) -> dict:
    """Run `n` cases; counts per outcome and the unclean ones with their reasons."""
    counts = {"ok": 0, "clean": 0, "unclean": 0}
    unclean = []
    for i in range(n):
        case = make_case(root, i, seed)
        outcome, detail = run_case(case)
        counts[outcome] += 1
        if outcome == "unclean":
            unclean.append((case.name, detail))
        shutil.rmtree(case.folder, ignore_errors=True)
    return {"inputs": n, **counts, "unclean_cases": unclean}
