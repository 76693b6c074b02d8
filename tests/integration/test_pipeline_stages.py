"""Every default pipeline stage on a shop's own catalogue, then the folder moved and served over HTTP.

The split is what a shop brings: CSV files, string ids (`cust-...`, `sku-...`),
an items table of `item_id, name, year, tags, notes` (no `title`, no `genres`:
the MovieLens templates do not apply), junk years (`n/a`, `19xx`), empty
names, comma-separated tags, a free-text column, no users table and no
split.json. A source dataset folder (other users, the same names) makes the
transfer stage run; without it the stage is skipped with its reason. The run is small (a few epochs, four trials per search) but every
stage is the real one, on the local Ray cluster; the searches' own promises
(ASHA stops weak trials, the best configuration retrains to its trial's score)
are checked on the stages' results.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from coldstart.cli import app
from coldstart.data.schema import find_table, read_table, save_dataset, validate
from coldstart.data.split import make_split
from coldstart.models.transfer import title_keys
from coldstart.ports import free_port
from coldstart.testing import make_tables

pytestmark = pytest.mark.slow

runner = CliRunner()

SMALL = ["--embed.replicas", "1", "--encoder.epochs", "1", "--encoder.batch-size", "32",
         "--backbone.epochs", "6", "--backbone.dim", "16", "--backbone.batch-size", "256", "--backbone.lr", "0.01",
         "--distill.epochs", "3", "--distill.batch-size", "256", "--vae.epochs", "3", "--vae.batch-size", "256",
         "--transfer.epochs", "3", "--transfer.batch-size", "256", "--transfer.dim", "16",
         "--tune.budget", "4", "--tune.epochs", "3", "--scale.num-workers", "1", "--ray.local-cpus", "4"]
STAGES = ["embed", "encoder", "backbone", "baselines", "distill", "tune-vae", "ensemble", "transfer"]


def _own_split(folder):
    """A shop's cold-item split in the shape it would write it by hand."""
    inter, items, users = make_tables(n_users=120, n_items=150, per_user=15, seed=3)
    rng = np.random.default_rng(0)
    ids = {f"i{j}": f"sku-{chr(97 + j % 26)}{j:04d}" for j in range(len(items))}
    items = pd.DataFrame({"item_id": items["item_id"].map(ids), "name": items["title"].str.replace("Movie", "Lamp"),
                          "year": items["year"].astype(object), "tags": items["genres"].str.replace("|", ", "),
                          "notes": [f"A lamp made {w}." for w in rng.choice(["slowly", "loudly", "twice"],
                                                                             len(items))]})
    items.loc[rng.choice(len(items), 8, replace=False), "year"] = "n/a"
    items.loc[rng.choice(len(items), 4, replace=False), "year"] = "19xx"
    items.loc[rng.choice(len(items), 5, replace=False), "name"] = ""
    inter = inter.assign(user_id="cust-" + inter["user_id"], item_id=inter["item_id"].map(ids))
    split = make_split(validate(inter, items, None), "items", seed=0)
    folder.mkdir(parents=True)
    for name in ("train", "warm_val", "warm_test", "cold_val", "cold_test"):
        split.sets[name].to_csv(folder / f"{name}.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    return folder, items


def _source(folder, items):
    """Other users (another seed) of the same titles under other ids: a legitimate source."""
    inter, _, users = make_tables(n_users=200, n_items=150, per_user=15, seed=11)
    src_items = items.assign(item_id="m" + items.index.astype(str)).drop(columns="notes")
    mapping = dict(zip([f"i{j}" for j in range(len(items))], src_items["item_id"]))
    save_dataset(validate(inter.assign(user_id="s" + inter["user_id"], item_id=inter["item_id"].map(mapping)),
                          src_items, users.assign(user_id="s" + users["user_id"]), name="source"), folder)
    return folder


@pytest.fixture(scope="module")
def pipeline_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    split, items = _own_split(root / "my-split")
    source = _source(root / "my-source", items)
    result = runner.invoke(app, ["pipeline", "--split", str(split), "--out", str(root / "out"), "--source",
                                 str(source), *SMALL])
    return root, result


def test_every_default_stage_runs_on_a_users_own_split(pipeline_run):
    root, result = pipeline_run
    assert result.exit_code == 0, result.output
    out = root / "out"
    ledger = json.loads((out / "stages.json").read_text())
    assert {name: ledger[name]["status"] for name in STAGES} == {name: "done" for name in STAGES}
    for folder in ("split", "embeddings", "encoder", "backbone", "knn-warm", "regression", "distill", "tune-vae",
                   "vae", "knn-bag", "knn-residual", "ensemble", "transfer/model", "transfer/generator",
                   "transfer/lam-0", "transfer/lam-1"):
        assert (out / folder).is_dir(), folder
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    rows = {"random", "popularity", "content-knn", "content-knn-llm", "llm-zero-shot", "backbone (MF-BPR)",
            "knn-warm", "regression (MLP, MSE)", "coldstart (distilled towers)", "coldstart (VAE generator, tuned)",
            "coldstart (knn-bag)", "coldstart (knn-bag + residual)", "coldstart (ensemble)",
            "transfer lam=0", "transfer lam=1 [source interactions]"}
    assert rows <= set(metrics)
    assert any(name.startswith("transfer tuned") for name in metrics)
    assert "[source interactions] learn the target's cold items" in (out / "report" / "report.md").read_text()
    for name, groups in metrics.items():
        assert np.isfinite(groups["cold"]["ndcg@20"]), name
    serving = json.loads((out / "serving.json").read_text())
    assert set(serving["cold_val_ndcg@20"]) == {"distill", "vae", "knn-warm", "regression", "knn-bag",
                                                "knn-residual", "ensemble", "transfer"}
    # What is served was chosen on the served path's validation evidence, recorded beside the choice, and its
    # row in the report was measured through the serving code path on val and test.
    evidence = serving["evidence"]
    assert set(evidence) == set(serving["cold_val_ndcg@20"]) and serving["generator"] in evidence
    assert evidence[serving["generator"]]["eligible"] or not any(e["eligible"] for e in evidence.values())
    assert serving["new_slots"][serving["generator"]] == evidence[serving["generator"]]["new_slots"]
    # the default is the generator without a training job that placed hidden warm items best (pseudo-cold folds)
    pseudo = {name: e["pseudo_cold_ndcg@20"] for name, e in evidence.items() if "pseudo_cold_ndcg@20" in e}
    assert {"knn-warm", "knn-bag", "knn-residual"} <= set(pseudo) and serving["default"] == max(pseudo, key=pseudo.get)
    assert serving["pseudo_cold"]["side"] == "item" and serving["pseudo_cold"]["entities"] > 0
    served = [name for name in metrics if name.startswith(f"served ({serving['generator']}, new items in ")]
    assert len(served) == 1 and metrics[served[0]] == serving["served"]["test"]
    assert serving["served"]["val"]["all"]["users"] > 0
    assert serving["encoder"] in ("student", "teacher")
    # a stated interest's map: fitted for the served generator where it refits without its job, else the mean
    stated = serving["stated_map"]
    assert stated["generator"] == serving["generator"] and ("columns" in stated) != ("none" in stated)
    assert 0 < serving["encoder_cosine"] <= 1 and 0 < serving["encoder_probe_cosine"] <= 1
    # transfer's generator knows the items its source taught by name and year: a registration of one gets what
    # the source taught, as the split's own cold items did (tests/unit/test_transfer_serving.py)
    known = json.loads((out / "transfer" / "generator" / "model.json").read_text())["config"]["known_keys"]
    names = set(title_keys(pd.read_csv(root / "my-split" / "items.csv", dtype=str), "name")) - {None}
    assert known and set(known) <= names
    report = (out / "report" / "report.md").read_text()
    assert all(f"| {name} | done |" in report for name in STAGES)
    # The junk went through the one reading: missing, never text that a template or a matcher trips on.
    texts = pd.read_parquet(out / "embeddings" / "items.parquet")["text"]
    assert not texts.str.contains("n/a|19xx|nan|<NA>").any()
    # What the run used is what it records: the automatic item template and the shop's `name` as the title.
    templates = json.loads((out / "embeddings" / "embed.json").read_text())["templates"]
    assert templates["item"] is None and templates["title_column"] == "name"
    assert texts.str.contains("tags: ").all() and not texts.str.contains("Genres").any()


def test_asha_cuts_weak_trials_short(pipeline_run):
    """Over the two searches' eight trials, ASHA stopped at least one at a rung. Which ones it stops depends
    on the order trials reach a rung (they run concurrently), so one search of four may finish them all."""

    root, result = pipeline_run
    assert result.exit_code == 0, result.output
    stopped = sum(int(pd.read_csv(root / "out" / stage / "results.csv")["stopped_early"].sum())
                  for stage in ("tune-vae", "transfer"))
    assert stopped >= 1


@pytest.mark.parametrize("stage", ["tune-vae", "transfer"])
def test_a_search_stops_weak_trials_and_its_winner_becomes_the_stages_model(pipeline_run, stage):
    """`coldstart tune vae|transfer` as the pipeline runs them: four trials, ASHA lets at least one finish
    (and cuts short only those it stopped), best.yaml holds the winner, and the stage's model is the winner:
    here a trial runs the job's epochs, so the stage takes the trial's own model instead of training it again
    (`tuning.search.winning_trial_model`), with the winning trial's best epoch and score."""

    from coldstart.config import load_config
    from trainers.generator import GeneratorConfig
    from trainers.transfer import TransferConfig

    root, result = pipeline_run
    assert result.exit_code == 0, result.output
    folder = root / "out" / stage
    trials = pd.read_csv(folder / "results.csv").sort_values("best", ascending=False)
    epochs = int(SMALL[SMALL.index("--tune.epochs") + 1])
    assert len(trials) == 4 and trials["error"].isna().all()
    assert (trials["epochs"] == epochs).sum() >= 1  # ASHA let at least one trial finish
    assert (trials["stopped_early"] == (trials["epochs"] < epochs)).all()
    config_class, fields = {"tune-vae": (GeneratorConfig, ("latent", "beta", "lr")),
                            "transfer": (TransferConfig, ("lam", "lr"))}[stage]
    if stage == "transfer":
        assert trials["lam"].between(0, 1).all() and trials["lam"].nunique() == 4
        assert (folder / "metric_vs_lam.png").stat().st_size > 1000
    best = load_config(config_class, folder / "best.yaml")
    top = trials.iloc[0]
    for field in fields:
        assert getattr(best, field) == pytest.approx(top[field]), field
    assert best.epochs == epochs  # so the stage's retrain of best.yaml runs what the trial ran
    model = json.loads((folder / "model" / "model.json").read_text())
    assert model["epoch"] == int(top["best_epoch"])
    assert model["metrics"]["cold_val_ndcg@20"] == pytest.approx(top["best"], abs=1e-6)
    trial = folder / "trials" / top["trial_id"] / "model"
    assert (folder / "model" / "weights.safetensors").read_bytes() == (trial / "weights.safetensors").read_bytes()


@contextlib.contextmanager
def _http(api):
    """`api` served over real HTTP by uvicorn in a thread, as `coldstart serve`'s replicas hold the same objects
    (the Serve app around them has its own tests in test_serve_http.py); yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_the_moved_folder_serves_and_a_rerun_reuses_every_stage(pipeline_run, tmp_path):
    """A shop's folder serves from its own record: the smoke over HTTP, then a new item registered with the
    shop's attributes (`name` as its title, comma-separated `tags`) reaches the list of a new user who likes
    items with its tags. On the MovieLens templates' record this folder was refused (no `title` column)."""
    import httpx

    from coldstart.serving.routes import create_api
    from coldstart.serving.config import ServeConfig
    from coldstart.serving.preflight import check_artifacts
    from coldstart.serving.service import local_service
    from coldstart.serving.smoke import run_smoke

    root, result = pipeline_run
    assert result.exit_code == 0, result.output
    moved = tmp_path / "elsewhere"
    shutil.copytree(root / "out", moved)
    shutil.rmtree(root / "my-split")  # the user's split is gone: the folder carries its own copy
    facts = check_artifacts(ServeConfig(artifacts=moved))
    assert any("titles from column 'name'" in f for f in facts), facts
    lines: list[str] = []
    with _http(create_api(local_service(moved, tmp_path / "store"))) as url:
        run_smoke(url, moved, echo=lines.append)  # `coldstart serve --smoke`'s requests
        items = read_table(find_table(moved / "split", "items"))
        horror = items.loc[items["tags"].fillna("").eq("Horror"), "item_id"].tolist()
        new = {"item_id": "sku-new-lamp", "title": "Lamp of Dread",
               "attributes": {"tags": "Horror", "year": 1999, "notes": "A lamp made slowly."}}
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.post("/v1/items", json=new).status_code == 201
            info = client.get("/v1/items/sku-new-lamp").json()
            answer = client.post("/v1/recommend", json={"profile": {"liked": horror[:5]}, "k": 20}).json()
    answers = [line for line in lines if line.startswith("-> ")]
    assert len(answers) == 8 and all(line.startswith("-> 20") for line in answers), lines
    registered = next(line for line in lines if line.startswith("\nPOST /v1/items"))
    assert '"name"' not in registered and '"tags"' in registered  # the shop's name went in as the title
    assert info["title"] == "Lamp of Dread" and info["registered"]
    assert "sku-new-lamp" in [i["item_id"] for i in answer["items"]], answer

    rerun = runner.invoke(app, ["pipeline", "--split", str(moved / "split"), "--out", str(moved), *SMALL])
    assert rerun.exit_code == 0, rerun.output
    ledger = json.loads((moved / "stages.json").read_text())
    assert [ledger[name]["status"] for name in STAGES[:-1]] == ["reused"] * 7
    assert ledger["transfer"]["status"] == "skipped" and "give --source" in ledger["transfer"]["reason"]
    report = (moved / "report" / "report.md").read_text()
    assert "| transfer | skipped | no source dataset" in report
    assert "coldstart (distilled towers)" in json.loads((moved / "report" / "metrics.json").read_text())

