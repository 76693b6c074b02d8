"""The `coldstart` command line: the face over the core, trainers, tuning and serving.

Only this module reaches up to `trainers/`, `tuning/` and `serve/`, and only
inside the commands that need them, so `coldstart data ...` never starts Ray.
The data commands and the models' train commands (one per trainer that
`coldstart.registry` names, imported when it runs) are `coldstart.commands`'.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from coldstart import registry
from coldstart.serving.slots import STATED_SHARE
from coldstart.commands.common import OVERRIDES, friendly_errors, print_fields, progress
from coldstart.commands.data import data_app
from coldstart.commands.train import add_model_commands
from coldstart.config import ConfigError
from coldstart.data.schema import DataError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LLM-powered cold-start recommendation, trained and served on Ray.")
app.add_typer(data_app, name="data")
train_app = typer.Typer(no_args_is_help=True, help="Training jobs on Ray Train.")
app.add_typer(train_app, name="train")

GENERATORS = ", ".join(registry.GENERATOR_FOLDERS)  # serving's choices, for the help


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@app.command("evaluate")
@friendly_errors
def evaluate_cmd(
    split: Annotated[Path, typer.Option(help="Split folder.")],
    model: Annotated[str, typer.Option(help="A baseline (random, popularity, content-knn) or a model folder.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and metrics.md.")],
    on: Annotated[str, typer.Option(help="test or val")] = "test",
    seed: Annotated[int, typer.Option(help="Seed for the random baseline.")] = 0,
):
    """Evaluate one model on a split: metrics.json ({cold|warm|all: {metric@K: value}}) and a table."""
    from coldstart import artifacts
    from coldstart.data.split import load_split
    from coldstart.evaluate import SplitData, evaluate
    from coldstart.models import load_recommender
    from coldstart.report import markdown_table

    if on not in ("test", "val"):
        raise DataError(f"--on must be 'test' or 'val', got {on!r}")
    data = SplitData.from_split(load_split(split))
    metrics = evaluate(load_recommender(model, data, seed=seed), data, on=on)  # type: ignore[arg-type]
    artifacts.write_json(out / "metrics.json", metrics)
    table = markdown_table({model: metrics})
    artifacts.write_text(out / "metrics.md", table)
    typer.echo(table)


@app.command("pipeline", context_settings=OVERRIDES)
@friendly_errors
def pipeline_cmd(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; --key value overrides it.")] = None,
):
    """The main job: fetch, split, every model, evaluation and a report.

    Fields (set in --config YAML or as --key value): run `coldstart pipeline --help-fields`.
    """
    from coldstart.config import load_config
    from coldstart.pipeline import PipelineConfig, PipelineFailed, run_pipeline

    if "--help-fields" in ctx.args:
        print_fields(PipelineConfig)
        return
    cfg = load_config(PipelineConfig, config, ctx.args)
    stages, start = [], None
    if cfg.stages:
        from coldstart.stages import build_stages
        from trainers.common import ensure_ray
        from trainers.stages import stages as train_stages
        from tuning.stages import stages as tune_stages

        stages = build_stages(cfg, {**train_stages(), **tune_stages()})
        start = lambda: ensure_ray(cfg.ray)  # noqa: E731 - the cluster, started from this thread when needed
    try:
        run_pipeline(cfg, stages=stages, progress=progress, start=start)
    except PipelineFailed as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(1) from None


@app.command("embed", context_settings=OVERRIDES)
@friendly_errors
def embed_cmd(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; --key value overrides it.")] = None,
):
    """LLM embeddings of a split's items and users (Ray Data); a rerun embeds only new or changed texts.

    Needs --split DIR and --out DIR; `coldstart embed --help-fields` lists every field.
    """
    from coldstart.config import load_config
    from trainers.embed import EmbedConfig, run

    if "--help-fields" in ctx.args:
        print_fields(EmbedConfig)
        return
    result = run(load_config(EmbedConfig, config, ctx.args))
    typer.echo(f"{result.out}: embedded {result.embedded}, reused {result.reused} (from the vector cache "
               f"{result.cached}) "
               f"in {result.seconds:.1f} s ({result.texts_per_second:.0f} texts/s)")


@train_app.command("encoder", context_settings=OVERRIDES)
@friendly_errors
def train_encoder_cmd(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; --key value overrides it.")] = None,
):
    """Distil the teacher text encoder into a small student (Ray Train, DDP).

    Needs --embeddings DIR (from `coldstart embed`) and --out DIR; --help-fields lists every field.
    """
    from coldstart.config import load_config
    from trainers.distill_encoder import DistillEncoderConfig, run

    if "--help-fields" in ctx.args:
        print_fields(DistillEncoderConfig)
        return
    result = run(load_config(DistillEncoderConfig, config, ctx.args))
    for row in result.history:
        typer.echo(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, held-out cosine {row['val_cosine']:.4f}")
    typer.echo(f"student encoder written to {result.out} (best held-out cosine {result.best['val_cosine']:.4f}, "
               f"{result.seconds:.0f} s)")


add_model_commands(train_app)  # `coldstart train NAME` for each model with a trainer (`coldstart.registry`)


@app.command("tune", context_settings=OVERRIDES)
@friendly_errors
def tune_cmd(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help=" or ".join(spec.name for spec in registry.searchable()))],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; --key value overrides it.")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Trials to run (same as --search.budget).")] = None,
):
    """Ray Tune search (Optuna + ASHA on cold-val NDCG@20), then the best config trained in full.

    Takes the job's fields (as `coldstart train JOB`) plus --search.* ; --out is the search folder:
    results.csv/.md, best.yaml, model/ and, for transfer, lam-0/, lam-1/, comparison.md and metric_vs_lam.png.
    """
    from coldstart.config import load_config
    from tuning.jobs import tune_and_train, tune_config_class

    cls = tune_config_class(job)
    if "--help-fields" in ctx.args:
        print_fields(cls)
        return
    overrides = list(ctx.args) + (["--search.budget", str(budget)] if budget is not None else [])
    summary = tune_and_train(job, load_config(cls, config, overrides))
    typer.echo(summary["table"])
    typer.echo(f"best config: {summary['best_yaml']}; model: {summary['model']} ({summary['seconds']:.0f} s)")


@app.command("submit", context_settings=OVERRIDES)
@friendly_errors
def submit_cmd(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The coldstart command to run: embed, train, tune, pipeline, evaluate, recommend.")],
    address: Annotated[str, typer.Option(envvar="RAY_API_SERVER_ADDRESS",
                                         help="The cluster's dashboard, e.g. http://127.0.0.1:8265.")],
    runtime_env: Annotated[Optional[Path], typer.Option(help="runtime_env YAML (default cluster/runtime_env.yaml).")] = None,
    working_dir: Annotated[Optional[Path], typer.Option(help="Ship this folder instead of the runtime_env's.")] = None,
    submission_id: Annotated[Optional[str], typer.Option(help="Job id (default coldstart-JOB-time-pid).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the logs; exit 0 only if the job SUCCEEDED.")] = False,
):
    """Submit `coldstart JOB ARGS...` to a Ray cluster over the Jobs API (token from $RAY_AUTH_TOKEN or ~/.ray/auth_token).

    Example: coldstart submit train distill --address http://127.0.0.1:8265 --wait -- --split ... --out ...
    """
    from coldstart import submit

    args = [a for a in ctx.args if a != "--"]
    try:
        env = submit.load_runtime_env(runtime_env or submit.RUNTIME_ENV, working_dir)
        job_id = submit.submit(job, args, address, env, submission_id=submission_id).job_id
    except submit.SubmitError as exc:
        raise ConfigError(str(exc)) from None
    typer.echo(f"submitted {job_id} to {address}")
    if wait:
        status = submit.follow(address, job_id, typer.echo)
        typer.echo(f"job {job_id}: {status}")
        raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@app.command("serve")
@friendly_errors
def serve_cmd(
    artifacts: Annotated[Optional[Path], typer.Option(help="Folder that `coldstart pipeline` wrote: the variant \"main\". Against a running app (RAY_ADDRESS=auto), the folder it moves to without downtime.")] = None,
    variant: Annotated[Optional[list[str]], typer.Option(help="NAME=DIR: one more variant served beside main (an A/B test); repeat for more.")] = None,
    weight: Annotated[Optional[list[str]], typer.Option(help="NAME=W: a variant's share of users, by a stable hash of their id (default 1 each; 0: only by header X-Coldstart-Variant).")] = None,
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="HTTP bind address (loopback by default).")] = "127.0.0.1",
    generator: Annotated[str, typer.Option(help=f"auto (DIR/serving.json's choice) or a generator folder: {GENERATORS}.")] = "auto",
    encoder: Annotated[str, typer.Option(help="student, teacher or auto (DIR/serving.json's choice, else the student when DIR/encoder exists).")] = "auto",
    encoder_precision: Annotated[str, typer.Option(help="The encoder's arithmetic: auto (float32 on a CPU, bfloat16 on a GPU that has it: what the pipeline embedded with), bfloat16 (on a CPU with native bfloat16 a new user's texts 1.4x sooner, vectors at cosine 1.000, new items' served cold NDCG@20 0.99x float32's), int8 (a CPU's dynamic int8: 2.1x sooner, cosine 0.975, 0.93x).")] = "auto",
    encoder_runtime: Annotated[str, typer.Option(help="What runs a float32 encoder on a CPU: onnx (ONNX Runtime: the same vectors, a new user's texts 1.86x sooner), torch, or auto (onnx where it loads and reproduces torch's vectors, else torch).")] = "auto",
    store: Annotated[Optional[str], typer.Option(help="Registration store: a folder (one machine) or a postgresql:// URL (a cluster's replicas share it; password from PGPASSWORD or ~/.pgpass); default $COLDSTART_STORE, else DIR/registry.")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="COLDSTART_API_KEY", help="A write key: requests then need X-API-Key (read keys: COLDSTART_READ_KEY, or a COLDSTART_API_KEYS_FILE of 'SCOPE KEY' lines). Required with a --host beyond loopback.")] = None,
    generate_key: Annotated[bool, typer.Option(help="Make a write key in ~/.config/coldstart/api-keys (mode 0600; kept if it exists), serve with it, and print where it is.")] = False,
    docs: Annotated[bool, typer.Option(help="Serve /docs and /openapi.json behind keys too (always on without keys).")] = False,
    rate_limit: Annotated[float, typer.Option(help="Requests a second per caller and ingress replica; over it, 429. 0: none.")] = 1000.0,
    text_weight: Annotated[float, typer.Option(help="Weight of a new user's own words (free text matched to items' text) against the collaborative score; 0 ignores them.")] = 1.0,
    stated_share: Annotated[float, typer.Option(help="Share of a list's first 10 slots for items carrying an attribute value a new user's text names (\"Mostly horror films for me\"), ranked by the collaborative score (the user's vector then also leans to what users who favour them watch); 0 keeps no slots.")] = STATED_SHARE,
    num_cpus: Annotated[Optional[int], typer.Option(help="Logical CPUs of the local Ray cluster (default max(4, cores)).")] = None,
    proxy: Annotated[str, typer.Option(help="HTTP in front of the app on a local cluster: haproxy (Serve's HAProxy ingress, straight to an ingress replica) or ray (Serve's proxy actor, one hop more). A joined cluster keeps its own.")] = "haproxy",
    smoke: Annotated[bool, typer.Option(help="Answer one request of each kind, print them, and stop.")] = False,
):
    """Serve the HTTP API on Ray Serve (encoder -> generator -> ranker) until Ctrl-C.

    With RAY_ADDRESS=auto against a cluster where the app runs, move it to --artifacts (and --variant) without
    downtime: the new models start beside the old, registrations are made again with them, then requests move.
    """
    from pydantic import ValidationError

    from coldstart.serving.config import ServeConfig

    if generate_key:
        from coldstart.serving.keys import KEYS_FILE_ENV, generate_key_file

        os.environ[KEYS_FILE_ENV] = str(generate_key_file(Path("~/.config/coldstart/api-keys")))
        typer.echo(f"API keys in {os.environ[KEYS_FILE_ENV]} (send one as X-API-Key)")
    folders = _pairs(variant, "variant", Path)
    if artifacts is not None:
        if "main" in folders:
            raise ConfigError("variant: 'main' is --artifacts' name; give the other variants other names")
        folders = {"main": artifacts, **folders}
    if not folders:
        raise ConfigError("artifacts: give --artifacts DIR, or --variant NAME=DIR")
    weights = _pairs(weight, "weight", float)
    unknown = sorted(set(weights) - set(folders))
    if unknown:
        raise ConfigError(f"weight: no variant named {', '.join(unknown)} (serving {', '.join(folders)})")
    try:
        cfgs = {name: ServeConfig(artifacts=folder, port=port, host=host, generator=generator, encoder=encoder,
                                  encoder_precision=encoder_precision, encoder_runtime=encoder_runtime, store=store, api_key=api_key, text_weight=text_weight,
                                  stated_share=stated_share, proxy=proxy, docs=docs, rate_limit=rate_limit)
                for name, folder in folders.items()}
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    from coldstart.serving.preflight import check_artifacts

    # Everything the replicas will load, checked before Ray starts: a replica that cannot start would be
    # retried for minutes, its reason in a log; here it is one line and exit code 2.
    for cfg in cfgs.values():
        for fact in check_artifacts(cfg):
            progress(fact)
    from serve.local import run_local

    run_local(None, variants=cfgs, weights=weights, num_cpus=num_cpus, smoke=smoke, echo=typer.echo)


def _pairs(values: list[str] | None, option: str, cast) -> dict:
    """NAME=VALUE options as {name: cast(value)}; the error names the option and the value."""
    out = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise ConfigError(f"{option}: expected NAME=VALUE, got {value!r}")
        try:
            out[name] = cast(rest)
        except ValueError:
            raise ConfigError(f"{option}: {name}'s value {rest!r} is not a {cast.__name__}") from None
    return out


@app.command("recommend")
@friendly_errors
def recommend_cmd(
    artifacts: Annotated[Path, typer.Option(help="Folder that `coldstart pipeline` wrote.")],
    out: Annotated[Path, typer.Option(help="recs.parquet (one file), or a folder for part files.")],
    users: Annotated[str, typer.Option(help="'all' (warm, cold and registered users) or a file of user ids (parquet/CSV with user_id, or one per line).")] = "all",
    k: Annotated[int, typer.Option(help="Items per user.")] = 100,
    actors: Annotated[int, typer.Option(help="Ray Data actors, each holding the catalogue (0: no Ray, in this process).")] = 2,
    store: Annotated[Optional[str], typer.Option(help="Registration store to include, read only: a folder or a postgresql:// URL (default $COLDSTART_STORE, else DIR/registry).")] = None,
    generator: Annotated[str, typer.Option(help=f"auto (DIR/serving.json's choice) or a generator folder: {GENERATORS}.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Users per call of an actor.")] = 256,
):
    """Top-k items for every user (or a file of users) as a Ray Data job: parquet rows (user_id, rank, item_id, score, path).

    Example: coldstart recommend --artifacts out/demo --users all --k 100 --out recs.parquet
    """
    from pydantic import ValidationError

    from trainers.recommend import RecommendConfig, run

    try:
        cfg = RecommendConfig(artifacts=artifacts, out=out, users=users, k=k, actors=actors, store=store,
                              generator=generator, batch_size=batch_size)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    result = run(cfg)
    typer.echo(f"{result.out}: {result.rows} rows for {result.users} users ({result.registered_users} registered "
               f"users in the store) in {result.seconds:.1f} s")


def main() -> None:  # pragma: no cover - console entry for `python -m coldstart.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
