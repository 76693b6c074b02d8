"""When a search's winner is reused instead of trained again: only when the retrain would repeat it."""

from types import SimpleNamespace

import pandas as pd

from tuning.search import SearchOptions, SearchResult, retrain_would_stop_before_best, winning_trial_model


def test_a_retrain_stops_before_the_best_epoch_only_after_patience_epochs_without_improvement():
    scores = [0.1, 0.2, 0.15, 0.14, 0.3]  # two epochs without improvement, then the best
    assert retrain_would_stop_before_best(scores, patience=2)
    assert not retrain_would_stop_before_best(scores, patience=3)
    assert not retrain_would_stop_before_best([0.3, 0.2, 0.1], patience=1)  # the best came first
    assert not retrain_would_stop_before_best([0.2, 0.2, 0.3], patience=2)  # a tie is not an improvement


def _found(tmp_path, epochs_run: int, scores: list[float]) -> SearchResult:
    (tmp_path / "trials" / "t1" / "model").mkdir(parents=True)
    (tmp_path / "trials" / "t1" / "model" / "model.json").write_text("{}")
    trials = pd.DataFrame([{"trial_id": "t1", "epochs": epochs_run, "best": max(scores)},
                           {"trial_id": "t2", "epochs": 1, "best": 0.01}])
    return SearchResult(out=tmp_path, best_config=None, best_score=max(scores), trials=trials, seconds=0.0,
                        scores={"t1": scores, "t2": [0.01]})


def _job(epochs: int, patience: int, workers: int = 1):
    return SimpleNamespace(epochs=epochs, patience=patience, scale=SimpleNamespace(num_workers=workers))


def test_the_winning_trial_is_the_model_only_when_it_ran_what_the_job_runs(tmp_path):
    options = SearchOptions(trial_workers=1)
    found = _found(tmp_path, 3, [0.1, 0.2, 0.3])
    assert winning_trial_model(found, _job(3, 3), options) == tmp_path / "trials" / "t1" / "model"
    assert winning_trial_model(found, _job(12, 12), options) is None  # the job runs more epochs than the trial
    assert winning_trial_model(found, _job(3, 3, workers=2), options) is None  # other batches per worker
    stalled = _found(tmp_path / "b", 4, [0.2, 0.1, 0.1, 0.3])
    assert winning_trial_model(stalled, _job(4, 2), options) is None  # the retrain stops at epoch 2
    assert winning_trial_model(stalled, _job(4, 3), options) is not None


def test_a_one_worker_trial_trains_in_its_own_process_and_a_bigger_one_on_ray_train(monkeypatch, tmp_path):
    """The pipeline's searches run one-worker trials end to end (tests/integration/test_pipeline_stages.py);
    here, which way each kind of trial goes, without a cluster."""
    import ray.tune
    import ray.tune.integration.ray_train as tune_train

    from trainers.generator import GeneratorConfig
    from trainers.loop import LocalContext
    from tuning.jobs import search_job
    from tuning.search import SearchJob, run_trial

    calls = []
    monkeypatch.setattr(ray.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t7"))

    class TuneReportCallback:  # Ray's needs a live Tune session to be made
        pass

    monkeypatch.setattr(tune_train, "TuneReportCallback", TuneReportCallback)
    job = SearchJob("vae", GeneratorConfig, lambda cfg, **how: calls.append((cfg, how)), search_job("vae").space)
    base = GeneratorConfig(split=tmp_path, embeddings=tmp_path, backbone=tmp_path, out=tmp_path).model_dump(
        mode="json")
    for workers in (1, 2):
        run_trial({"lr": 0.002}, job, {**base, "scale": {**base["scale"], "num_workers": workers}}, str(tmp_path))
    (one, alone), (two, together) = calls
    assert one.lr == two.lr == 0.002 and one.out == tmp_path / "t7" / "model"
    assert isinstance(alone["context"], LocalContext) and alone["context"].folder == tmp_path / "t7" / "run"
    assert "callbacks" not in alone
    assert "context" not in together and isinstance(together["callbacks"][0], TuneReportCallback)
    assert two.scale.storage == tmp_path / "t7" / "runs"


def test_threads_that_would_contend_for_this_machines_cores_are_warned_about(caplog):
    """Four trials of two threads on a 2-core machine's local cluster (4 logical CPUs) ran epochs 2-3x slower
    than four of one thread: the search says so. One thread each, GPUs, or a cluster elsewhere: no warning."""
    from coldstart.config import ScaleOptions
    from tuning.search import warn_oversubscribed

    two = ScaleOptions(threads_per_worker=2)
    with caplog.at_level("WARNING", logger="tuning.search"):
        assert warn_oversubscribed(2, two, local=True, cores=2)
    assert "2 workers x 2 threads at once on 2 cores" in caplog.text
    assert not warn_oversubscribed(4, ScaleOptions(threads_per_worker=1), local=True, cores=2)
    assert not warn_oversubscribed(1, two, local=True, cores=2)
    assert not warn_oversubscribed(2, two, local=False, cores=2)
    assert not warn_oversubscribed(2, ScaleOptions(threads_per_worker=2, use_gpu=True), local=True, cores=2)
