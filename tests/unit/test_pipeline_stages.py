"""The pipeline never loses finished work: skips with reasons, failures in the report, reuse of finished stages.

Fake stages (Ray-free) stand for the real ones; `tests/integration/test_pipeline_stages.py`
runs the real stages end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldstart.data.split import make_split, save_split
from coldstart.models.baselines import PopularityRecommender
from coldstart.pipeline import PipelineConfig, PipelineFailed, run_pipeline
from coldstart.stages import ModelStage, StageSkipped


@pytest.fixture
def split_dir(tmp_path, tiny):
    return save_split(make_split(tiny, "items", seed=0), tmp_path / "user-split")


class Calls:
    def __init__(self):
        self.runs: list[str] = []


def fake_stage(name, calls, *, needs=(), after=(), fail=False, skip=None, applies=None, key=lambda cfg: cfg.backbone,
               during=None):
    def run(data, cfg, out):
        calls.runs.append(name)
        if during:
            during()
        if fail:
            raise RuntimeError(f"{name} broke\nsecond line of the traceback")
        if skip:
            raise StageSkipped(skip)
        (out / name).mkdir(exist_ok=True)
        return {f"model-{name}": PopularityRecommender(data)}

    def load(data, cfg, out):
        return {f"model-{name}": PopularityRecommender(data)}

    return ModelStage(name, run, load, key, needs=needs, after=after, outputs=(name,),
                      applies=applies or (lambda data, cfg: None))


def _cfg(split_dir, out, **kw):
    return PipelineConfig(split=split_dir, out=out, baselines=["random"], **{"parallel": 1, **kw})


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failed_stage_is_reported_and_the_rest_still_run(split_dir, tmp_path, parallel):
    calls = Calls()
    stages = [fake_stage("a", calls), fake_stage("b", calls, fail=True), fake_stage("c", calls, needs=("b",)),
              fake_stage("d", calls, needs=("a",))]
    with pytest.raises(PipelineFailed, match="stage b failed: RuntimeError: b broke"):
        run_pipeline(_cfg(split_dir, tmp_path / "out", parallel=parallel), stages, progress=lambda m: None)
    assert sorted(calls.runs) == ["a", "b", "d"]  # c needs the failed b; d does not
    metrics = json.loads((tmp_path / "out" / "report" / "metrics.json").read_text())
    assert set(metrics) == {"random", "model-a", "model-d"}
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "| b | FAILED | RuntimeError: b broke |" in report
    assert "| c | skipped | needs the b stage(s), which did not finish |" in report
    assert "second line" not in report


def test_a_stage_that_does_not_apply_is_skipped_with_its_reason(split_dir, tmp_path):
    calls = Calls()
    stages = [fake_stage("a", calls, applies=lambda data, cfg: "no source dataset"),
              fake_stage("b", calls, skip="the source shares no item")]
    run_pipeline(_cfg(split_dir, tmp_path / "out"), stages, progress=lambda m: None)  # no failure: exits 0
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "| a | skipped | no source dataset |" in report and "| b | skipped | the source shares no item |" in report
    assert calls.runs == ["b"]


def test_a_rerun_reuses_finished_stages_and_retrains_what_changed(split_dir, tmp_path):
    calls = Calls()
    stages = [fake_stage("a", calls), fake_stage("b", calls, needs=("a",), key=lambda cfg: cfg.distill),
              fake_stage("c", calls, fail=True, key=lambda cfg: cfg.vae)]
    out = tmp_path / "out"
    with pytest.raises(PipelineFailed):
        run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["a", "b", "c"]

    stages[2] = fake_stage("c", calls, key=lambda cfg: cfg.vae)  # the cause is fixed
    calls.runs.clear()
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["c"]  # a and b were reused, not retrained
    ledger = json.loads((out / "stages.json").read_text())
    assert [ledger[n]["status"] for n in "abc"] == ["reused", "reused", "done"]
    assert set(json.loads((out / "report" / "metrics.json").read_text())) == {"random", "model-a", "model-b",
                                                                                "model-c"}
    calls.runs.clear()
    run_pipeline(_cfg(split_dir, out, distill={"epochs": 3}), stages, progress=lambda m: None)
    assert calls.runs == ["b"]  # only the stage whose configuration changed
    calls.runs.clear()
    run_pipeline(_cfg(split_dir, out, backbone={"epochs": 3}), stages, progress=lambda m: None)
    assert calls.runs == ["a", "b"]  # a changed, and b reads a
    calls.runs.clear()
    run_pipeline(_cfg(split_dir, out, backbone={"epochs": 3}, force=True), stages, progress=lambda m: None)
    assert calls.runs == ["a", "b", "c"]


def test_a_removed_artifact_is_retrained(split_dir, tmp_path):
    import shutil

    calls = Calls()
    stages = [fake_stage("a", calls)]
    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    shutil.rmtree(out / "a")
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["a", "a"]


def test_the_output_folder_holds_a_copy_of_the_given_split(split_dir, tmp_path):
    """Serving and later runs read OUT/split: the folder travels without the user's split."""
    import shutil

    from coldstart.data.split import load_split

    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out), [], progress=lambda m: None)
    shutil.rmtree(split_dir)
    copy = load_split(out / "split")
    assert copy.info["source"].endswith("user-split") and len(copy.train) > 0
    run_pipeline(_cfg(out / "split", out), [], progress=lambda m: None)  # the copy is itself a split


def test_a_stage_resumes_only_runs_of_its_own_configuration(split_dir, tmp_path):
    """Ray Train resumes any run it finds under a name: a retrained stage must not find the old one."""
    storages, found = [], []

    def run(data, cfg, out):
        storages.append(Path(cfg.scale.storage))
        found.append((storages[-1] / "snapshot").is_file())  # what Ray Train would resume from
        storages[-1].mkdir(parents=True, exist_ok=True)
        (storages[-1] / "snapshot").write_text("a run")
        (out / "a").mkdir(exist_ok=True)
        return {"model-a": PopularityRecommender(data)}

    stages = [ModelStage("a", run, None, lambda cfg: cfg.backbone, outputs=("a",))]
    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)  # no load: runs again, same settings
    run_pipeline(_cfg(split_dir, out, backbone={"lr": 0.01}), stages, progress=lambda m: None)
    assert storages[0] == storages[1] != storages[2]  # same configuration: the same runs, resumable
    assert found == [False, True, False]
    assert storages[0].parent == (out / "ray_results").resolve() and storages[0].name.startswith("a-")
    run_pipeline(_cfg(split_dir, out, backbone={"lr": 0.01}, force=True), stages, progress=lambda m: None)
    assert storages[3] == storages[2] and found[3] is False  # --force: nothing to resume from


def test_a_job_run_folder_is_keyed_by_its_whole_configuration(tmp_path):
    from trainers.backbone import BackboneConfig
    from trainers.loop import run_storage

    base = BackboneConfig(split=tmp_path / "split", out=tmp_path / "backbone")
    same = BackboneConfig(split=tmp_path / "split", out=tmp_path / "backbone")
    assert run_storage(base) == run_storage(same)
    assert run_storage(base).parent == tmp_path / "ray_results"
    assert run_storage(base.model_copy(update={"lr": 0.01})) != run_storage(base)
    moved = base.model_copy(update={"scale": base.scale.model_copy(update={"storage": tmp_path / "runs"})})
    assert run_storage(moved).parent == tmp_path / "runs" and run_storage(moved).name == run_storage(base).name


def test_texts_written_another_way_embed_again_and_retrain_what_reads_them(split_dir, tmp_path, monkeypatch):
    """The embed stage is keyed on the texts it would embed, not only on its options: after an upgrade that
    renders a text another way (a template change), a rerun embeds again and retrains the stages reading the
    embeddings; with the same code everything is reused."""
    from coldstart.text import templates
    from trainers.stages import embed_fingerprint

    calls = Calls()
    stages = [fake_stage("embed", calls, key=embed_fingerprint), fake_stage("towers", calls, needs=("embed",))]
    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["embed", "towers"]
    tidy = templates._tidy
    monkeypatch.setattr(templates, "_tidy", lambda text: tidy(text).replace("Genres:", "Genre:"))
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["embed", "towers", "embed", "towers"]


def test_a_rerun_by_another_coldstart_release_retrains(split_dir, tmp_path, monkeypatch):
    """Model code is not in a stage's configuration: artifacts of another release are trained again."""
    import coldstart

    calls = Calls()
    stages = [fake_stage("a", calls), fake_stage("b", calls, needs=("a",))]
    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["a", "b"]
    monkeypatch.setattr(coldstart, "__version__", coldstart.__version__ + ".post1")
    run_pipeline(_cfg(split_dir, out), stages, progress=lambda m: None)
    assert calls.runs == ["a", "b", "a", "b"]


def test_stages_that_do_not_read_each_other_run_side_by_side_and_the_report_keeps_the_listed_order(split_dir,
                                                                                                   tmp_path):
    """With `parallel` 2, b (which reads nothing of a) starts while a runs; c, which reads both, starts only
    after both have finished; the report lists rows and stages as configured, whichever finished first."""
    import threading

    calls, b_started, a_done = Calls(), threading.Event(), threading.Event()
    seen = {}

    def a_waits_for_b():
        seen["b ran beside a"] = b_started.wait(timeout=30)
        a_done.set()

    def c_checks():
        seen["a and b done before c"] = a_done.is_set() and "b" in calls.runs

    stages = [fake_stage("a", calls, during=a_waits_for_b), fake_stage("b", calls, during=b_started.set),
              fake_stage("c", calls, needs=("a", "b"), during=c_checks)]
    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out, parallel=2), stages, progress=lambda m: None)
    assert seen == {"b ran beside a": True, "a and b done before c": True}
    assert list(json.loads((out / "report" / "metrics.json").read_text())) == ["random", "model-a", "model-b",
                                                                               "model-c"]
    report = (out / "report" / "report.md").read_text()
    assert report.index("| a | done") < report.index("| b | done") < report.index("| c | done")


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_stage_waits_for_the_stages_it_reads_when_they_run_even_if_listed_after_it(split_dir, tmp_path,
                                                                                        parallel):
    """An ensemble reads whichever generators the run trains (`after`): it waits for them when they are in the
    run, listed before or after it, and runs without them when they are not."""
    calls = Calls()
    stages = [fake_stage("base", calls), fake_stage("ensemble", calls, needs=("base",), after=("towers", "vae")),
              fake_stage("towers", calls, needs=("base",))]
    run_pipeline(_cfg(split_dir, tmp_path / "out", parallel=parallel), stages, progress=lambda m: None)
    assert calls.runs == ["base", "towers", "ensemble"]


def test_an_error_outside_a_stage_reaches_the_caller_from_a_stage_run_beside_others(split_dir, tmp_path):
    """A stage's own failure is recorded; an error in what the pipeline does around it (here the report of its
    models) is not swallowed by the thread it ran in."""
    calls = Calls()

    def broken(data, cfg, out):
        (out / "x").mkdir(exist_ok=True)
        return {"model-x": object()}  # not a recommender: its evaluation raises

    stages = [fake_stage("a", calls), ModelStage("x", broken, None, lambda cfg: None, outputs=("x",))]
    with pytest.raises(Exception):
        run_pipeline(_cfg(split_dir, tmp_path / "out", parallel=2), stages, progress=lambda m: None)


def test_the_cluster_is_started_once_from_the_calling_thread_and_only_for_a_stage_that_trains(split_dir,
                                                                                            tmp_path):
    """Ray ties a cluster's processes to the thread that started it: started from a stage's thread, the cluster
    would die when that stage ended, under the stages still running. A rerun that reuses everything starts none."""
    import threading

    calls, starts = Calls(), []

    def start():
        starts.append(threading.current_thread() is threading.main_thread())
        calls.runs.append("start")

    stages = [fake_stage("a", calls), fake_stage("b", calls), fake_stage("c", calls, needs=("a",))]
    out = tmp_path / "out"
    run_pipeline(_cfg(split_dir, out, parallel=2), stages, progress=lambda m: None, start=start)
    assert starts == [True] and calls.runs[0] == "start" and sorted(calls.runs[1:]) == ["a", "b", "c"]
    run_pipeline(_cfg(split_dir, out, parallel=2), stages, progress=lambda m: None, start=start)
    assert starts == [True]  # every stage reused
