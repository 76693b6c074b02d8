"""Check, without Ray, everything the serving replicas will load, so `coldstart serve` fails at once.

A replica that cannot start is retried by Ray Serve and reported minutes later
as "Failed to update the deployments"; the reason sits in a replica's log. So
before deploying, `check_artifacts` builds what the replicas build, with the
same constructors (the generator, the catalogue over DIR/split, the encoder's
choice), checks that the registration store can be written (a database store:
that it answers and lets this user read and insert), and raises a `ConfigError`
or `DataError` whose one line names the missing or bad path. On
success it returns facts to print: which generator and encoder, and why, and
how big the catalogue is.

The encoder is checked without loading its weights (a teacher may be a large
LLM): its config and tokenizer must load and its weights file must be there,
and its output width, read as `TextEncoder.dim` reads it (the student's
projection, else the model's hidden size), must be the generator's `text_dim`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from coldstart.config import ConfigError
from coldstart.data.schema import DataError, find_table, read_table
from coldstart.serving.catalogue import Catalogue
from coldstart.serving.config import ServeConfig
from coldstart.serving.served_models import ServingGenerator, pick_encoder, resolve_generator
from coldstart.serving.pg_connection import TABLE, connect, display_url, first_line, table_sql
from coldstart.serving.file_store import LOG_FILE, RegistrationStore
from coldstart.text.encoder import ARTIFACT_FILE, EncoderConfig, auto_classes, resolve_model_path
from coldstart.text.templates import template_fields

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def check_artifacts(cfg: ServeConfig) -> list[str]:
    """Facts about what will be served; raises ConfigError or DataError naming what is missing or bad."""
    artifacts = Path(cfg.artifacts)
    if not artifacts.is_dir():
        raise ConfigError(f"{artifacts}: artifacts folder not found (the --out of `coldstart pipeline`)")
    generator = _check_generator(artifacts, cfg.generator)
    facts = [f"generator: {generator.name} from {generator.folder} ({generator.reason})"]
    facts += _check_catalogue(artifacts, generator)
    facts.append(_check_encoder(artifacts, generator.meta["content"], cfg.encoder))
    facts.append(_check_store(cfg.store_location()))
    return facts


def _check_generator(artifacts: Path, choice: str) -> ServingGenerator:
    try:
        return ServingGenerator(artifacts, choice)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # noqa: BLE001 - a missing weights file, a state dict that does not fit, a bad spec
        # the constructor chose the folder before it failed: choose it again only to name it
        folder = resolve_generator(artifacts, choice)[1]
        raise DataError(f"cannot load the generator: {first_line(exc)}", file=folder) from None


def _check_catalogue(artifacts: Path, generator: ServingGenerator) -> list[str]:
    """The ranker's catalogue, built as a Ranker replica builds it (without the store)."""
    split = artifacts / "split"
    if not split.is_dir():
        raise DataError("folder not found: the ranker reads the split's items and train tables here (copy or "
                        "link the split the pipeline ran on)", file=split)
    items_path = find_table(split, "items")
    items = read_table(items_path)
    if "item_id" not in items.columns:
        raise DataError("missing column", file=items_path, column="item_id")
    # Catalogue.from_artifacts reindexes silently: an item the table lacks would just lose its title.
    missing = sorted({str(i) for i in generator.meta["item_ids"]} - set(items["item_id"].astype(str)))
    if missing:
        raise DataError(f"{len(missing)} of the artifact's {len(generator.meta['item_ids'])} items are not in this "
                        f"table: is it the split the pipeline ran on?", file=items_path, value=missing[0])
    # The folder against its own record (what the run resolved), never against a dataset's defaults.
    templates = generator.content.templates
    title = templates.title_column
    named = sorted(template_fields(templates.item) - set(items.columns))
    if named:
        raise DataError(f"missing the column(s) {', '.join(named)} that the run's item template {templates.item!r} "
                        f"names: is it the split the pipeline ran on?", file=items_path, column=named[0])
    if title is not None and title not in items.columns:
        raise DataError("missing the title column the run used: is it the split the pipeline ran on?",
                        file=items_path, column=title)
    train_path = find_table(split, "train")
    try:
        catalogue = Catalogue.from_artifacts(artifacts, generator)
    except (ConfigError, DataError):
        raise
    except Exception as exc:  # noqa: BLE001 - a column missing or of another type in train
        raise DataError(f"cannot build the ranker's catalogue: {first_line(exc)}", file=train_path) from None
    users = catalogue.users.values()
    warm_users = sum(u.warm for u in users)
    seen = sum(len(u.seen) for u in users)
    if warm_users and not seen:
        raise DataError("none of its interactions are of the artifact's users and items: is it the split the "
                        "pipeline ran on?", file=train_path)
    titles = f"titles from column {title!r}" if title is not None else "no titles (named-item matching off)"
    return [f"catalogue: {len(catalogue.item_ids)} items ({sum(catalogue.item_cold)} cold), "
            f"{len(catalogue.users)} users ({warm_users} warm), {seen} seen interactions, {titles}; from {split}"]


def _check_encoder(artifacts: Path, spec: dict, choice: str) -> str:
    kind, cfg, reason = pick_encoder(artifacts, spec, choice)
    dim = encoder_dim(cfg, kind)
    if dim != int(spec["text_dim"]):
        raise ConfigError(f"encoder {kind} ({cfg.model}) gives {dim}-d vectors; the generator was trained on "
                          f"{spec['text_dim']}-d ones")
    return f"encoder: {kind} {cfg.model}, {dim}-d ({reason})"


def encoder_dim(cfg: EncoderConfig, kind: str = "encoder") -> int:
    """The width of the vectors `TextEncoder(cfg)` will give, from its config files; config, tokenizer and
    weights must be there (a hub id resolves as the replica will resolve it)."""
    AutoConfig, _, AutoTokenizer = auto_classes()

    path = resolve_model_path(cfg.model)
    folder = Path(path)
    local = folder.is_dir()
    if not local and (folder.is_absolute() or path.startswith(".") or folder.exists()):
        raise ConfigError(f"encoder {kind}: model folder {path} not found")
    if local and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(f"encoder {kind}: no weights in {folder} (expected one of {', '.join(WEIGHT_FILES)})")
    try:
        hf_config = AutoConfig.from_pretrained(path, local_files_only=local)
        AutoTokenizer.from_pretrained(path, local_files_only=local)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, ... for a bad model
        raise ConfigError(f"encoder {kind}: cannot load {path}: {first_line(exc)}") from None
    if local and (folder / ARTIFACT_FILE).is_file():
        meta = json.loads((folder / ARTIFACT_FILE).read_text())
        if meta.get("projection"):
            return int(meta["projection"]["out"])
    if getattr(hf_config, "hidden_size", None) is None:
        raise ConfigError(f"encoder {kind}: {path}'s config has no hidden_size, which TextEncoder reads")
    return int(hf_config.hidden_size)


def _check_store(spec: Path | str) -> str:
    """A Ranker opens (creating when new) DIR/registry/registrations.log for appending, or connects to the
    database a postgresql:// URL names: it must be able to.

    Nothing is created here: `--smoke` serves from a scratch store, and the artifacts may be read-only then.
    """
    if not isinstance(spec, Path):
        return check_database(spec)
    folder = spec
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"registration store {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"registration store {folder}: {existing} is not writable")
    log_file = folder / LOG_FILE
    if not log_file.exists():
        return f"registration store: {folder} (new)"
    if not log_file.is_file() or not os.access(log_file, os.R_OK | os.W_OK):
        raise ConfigError(f"registration store {folder}: {log_file} is not a readable and writable file")
    try:
        records = len(RegistrationStore(folder).read_new())  # the log exists: opening it changes nothing
    except OSError as exc:
        raise ConfigError(f"registration store {folder}: cannot open it ({exc.strerror or exc})") from None
    return f"registration store: {folder} ({records} records to replay)"


def check_database(url: str, *, table: str = TABLE) -> str:
    """Preflight: connect and say what is there, creating nothing; ConfigError in one line otherwise."""
    import psycopg  # psycopg: optional, only a database store loads it

    shown = display_url(url)
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
            if not cur.fetchone()[0]:
                cur.execute("SELECT current_schema(), has_schema_privilege(current_schema(), 'CREATE')")
                schema, can_create = cur.fetchone()
                if schema is None or not can_create:
                    raise ConfigError(f"registration store {shown}: table {table} does not exist and this user "
                                      f"may not create it in schema {schema}")
                return f"registration store: {shown} (new table {table})"
            cur.execute("SELECT has_table_privilege(%s, 'SELECT, INSERT') AND "
                        "has_sequence_privilege(pg_get_serial_sequence(%s, 'id'), 'USAGE')", (table, table))
            if not cur.fetchone()[0]:
                raise ConfigError(f"registration store {shown}: this user may not read and insert into {table}")
            cur.execute(table_sql("SELECT count(*) FROM {table}", table))
            records = cur.fetchone()[0]
        return f"registration store: {shown}, table {table} ({records} records to replay)"
    except psycopg.Error as exc:
        raise ConfigError(f"registration store {shown}: {first_line(exc)}") from None
    finally:
        conn.close()
