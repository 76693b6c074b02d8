import json

from typer.testing import CliRunner

from coldstart.cli import app
from coldstart.data.schema import save_dataset

runner = CliRunner()


def test_split_evaluate_and_pipeline_on_tiny_data(tmp_path, tiny):
    save_dataset(tiny, tmp_path / "ds")
    result = runner.invoke(app, ["data", "split", str(tmp_path / "ds"), "--cold", "items", "--out",
                                 str(tmp_path / "split")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", "--split", str(tmp_path / "split"), "--model", "popularity",
                                 "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"cold", "warm", "all"} and "ndcg@20" in metrics["cold"]
    result = runner.invoke(app, ["pipeline", "--split", str(tmp_path / "split"), "--out", str(tmp_path / "p"),
                                 "--stages", "[]"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p" / "report" / "metrics.json").read_text())
    assert set(report) == {"random", "popularity", "content-knn"}
    assert (tmp_path / "p" / "report" / "ndcg20.png").stat().st_size > 1000


def test_content_knn_without_attributes_to_compare_is_left_out_of_the_report_with_its_reason(tmp_path, tiny):
    """Items of ids and titles alone would all tie under content-knn (a random list named a baseline); users
    without attributes would get popularity under another name. The pipeline says so instead of a row, and on
    a user-cold split says that new users known by an id alone get the average user's list from every model."""
    from coldstart.data.schema import validate

    bare = validate(tiny.interactions, tiny.items[["item_id", "title"]], None, name="bare")
    cases = (("items", bare, "the items have no attributes"), ("users", bare, "the users have no attributes"),
             ("users", tiny, None))
    for n, (cold, data, reason) in enumerate(cases):
        case = tmp_path / str(n)
        save_dataset(data, case / "ds")
        split = runner.invoke(app, ["data", "split", str(case / "ds"), "--cold", cold, "--out", str(case / "split")])
        assert split.exit_code == 0, split.output
        result = runner.invoke(app, ["pipeline", "--split", str(case / "split"), "--out", str(case / "p"),
                                     "--stages", "[]"])
        assert result.exit_code == 0, result.output
        rows = set(json.loads((case / "p" / "report" / "metrics.json").read_text()))
        report = (case / "p" / "report" / "report.md").read_text()
        if reason:
            assert rows == {"random", "popularity"} and f"- content-knn (baseline): skipped: {reason}" in report
        else:
            assert rows == {"random", "popularity", "content-knn"} and "skipped" not in report
        # New users with nothing but an id: every cold model can only give them the average user's list.
        assert ("- new users: they come with an id alone" in report) == (cold == "users" and data is bare)


def test_bad_input_exits_2_with_a_message_naming_it(tmp_path):
    result = runner.invoke(app, ["evaluate", "--split", str(tmp_path / "nope"), "--model", "random", "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "split folder not found" in result.output
    result = runner.invoke(app, ["pipeline", "--seeed", "3"])
    assert result.exit_code == 2 and "seeed" in result.output


def test_import_with_flags(tmp_path, tiny):
    src = tmp_path / "src"
    src.mkdir()
    tiny.interactions.rename(columns={"user_id": "uid"}).to_csv(src / "interactions.csv", index=False)
    tiny.items.to_csv(src / "items.csv", index=False)
    result = runner.invoke(app, ["data", "import", str(src), "--out", str(tmp_path / "d"), "--user-col", "uid"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "interactions.parquet").is_file()


def test_pipeline_over_seeds_writes_mean_and_std(tmp_path, tiny):
    save_dataset(tiny, tmp_path / "ds")
    result = runner.invoke(app, ["pipeline", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "p"),
                                 "--stages", "[]", "--seeds", "[1, 2, 3]", "--baselines", "[random, popularity]"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "report" / "summary.json").read_text())
    cell = summary["popularity"]["warm"]["ndcg@20"]
    assert len(cell["values"]) == 3 and cell["std"] >= 0
    assert abs(cell["mean"] - sum(cell["values"]) / 3) < 1e-12
    assert "±" in (tmp_path / "p" / "report" / "summary.md").read_text()
    for seed in (1, 2, 3):
        assert (tmp_path / "p" / f"seed-{seed}" / "report" / "metrics.json").is_file()


def test_pipeline_over_one_seed_runs_that_seed(tmp_path, tiny):
    """`--seeds "[7]"` is seed 7's split, in OUT/seed-7, not the default seed's run in OUT."""
    save_dataset(tiny, tmp_path / "ds")
    args = ["pipeline", "--dataset", str(tmp_path / "ds"), "--stages", "[]", "--baselines", "[popularity]"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "one"), "--seeds", "[7]"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "one" / "split").exists()
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "direct"), "--seed", "7"])
    assert result.exit_code == 0, result.output
    for name in ("cold_test.parquet", "train.parquet"):
        assert (tmp_path / "one" / "seed-7" / "split" / name).read_bytes() == \
            (tmp_path / "direct" / "split" / name).read_bytes()


def test_tune_lists_the_jobs_fields_and_its_search_and_refuses_unknown_jobs():
    result = runner.invoke(app, ["tune", "vae", "--help-fields"])
    assert result.exit_code == 0, result.output
    for field in ("--beta", "--latent", "--search.budget", "--search.grace-period", "--split"):
        assert field in result.output
    result = runner.invoke(app, ["tune", "transfer", "--help-fields"])
    assert result.exit_code == 0 and "--lam" in result.output and "--source" in result.output
    result = runner.invoke(app, ["tune", "gan", "--help-fields"])
    assert result.exit_code == 2 and "unknown job 'gan'" in result.output


def test_train_transfer_names_a_bad_lam():
    result = runner.invoke(app, ["train", "transfer", "--target", "x", "--embeddings", "y", "--out", "z",
                                 "--lam", "1.5"])
    assert result.exit_code == 2 and "lam" in result.output
