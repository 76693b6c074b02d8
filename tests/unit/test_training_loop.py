"""The one training skeleton (`trainers/loop.py`) without Ray: device placement, resume, early stopping.

A CPU has no second device, so the placement test marks every tensor the code
moves with `coldstart.training.to_device` (the one door to the training device)
and fails when a model is called with an unmarked tensor, as CUDA fails when a
model on the GPU gets a batch left on the CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import coldstart.training as training
from benchmarks.training_jobs import tiny_jobs
from trainers.loop import LocalContext, fit


class Placed(torch.Tensor):
    """A CPU tensor standing for one on the training device; what is computed from it stays marked."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


@pytest.fixture
def marked_device(monkeypatch):
    """Every tensor a module is called with must have come through `to_device`."""
    real = training.to_device
    calls = []

    def to_device(value, device):
        moved = real(value, device)
        return _mark(moved)

    def _mark(value):
        if isinstance(value, torch.Tensor):
            return value if isinstance(value, Placed) else value.as_subclass(Placed)
        if isinstance(value, tuple):
            return tuple(_mark(v) for v in value)
        if isinstance(value, list):
            return [_mark(v) for v in value]
        if isinstance(value, dict):
            return {k: _mark(v) for k, v in value.items()}
        return value

    def check(module, args, kwargs):
        for tensor in _tensors((args, kwargs)):
            if not isinstance(tensor, (Placed, torch.nn.Parameter)):
                raise AssertionError(f"{type(module).__name__} got a {tuple(tensor.shape)} tensor that never "
                                     "went to the training device")
        calls.append(type(module).__name__)

    monkeypatch.setattr(training, "to_device", to_device)
    hooks = []

    def watch(model):
        # Our modules, not a Hugging Face model's insides (which index its own buffers, already on the device).
        theirs = {id(inner) for m in model.modules() if type(m).__module__.startswith("transformers.")
                  for inner in m.modules()}
        ours = [m for m in model.modules() if id(m) not in theirs]
        hooks.extend(m.register_forward_pre_hook(check, with_kwargs=True) for m in ours)
        return model

    yield watch, calls
    for hook in hooks:
        hook.remove()


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return tiny_jobs(tmp_path_factory.mktemp("loop"))


def test_every_job_feeds_its_model_only_tensors_placed_on_the_training_device(jobs, marked_device, tmp_path):
    """Would fail on a loop that leaves batches, lookup tables or inference inputs on the CPU."""
    watch, calls = marked_device
    for name, make in jobs.items():
        job = make(epochs=1)
        build = job.build_model
        job.build_model = lambda build=build: watch(build())
        calls.clear()
        stopping = fit(job, LocalContext("cpu", folder=tmp_path / name))
        assert len(stopping.history) == 1, name
        assert calls, f"{name}: the model was never called"
        assert (tmp_path / name / "best").is_dir() and (tmp_path / name / "optimizer.pt").is_file()


def test_the_marker_catches_a_batch_left_on_the_cpu(jobs, marked_device):
    """The check itself has teeth: the old loop's way (batches straight from the sampler) fails it."""
    watch, _ = marked_device
    job = jobs["backbone"](epochs=1)
    model = watch(job.build_model())
    users, pos, neg = next(iter(job.batches(0, 0, 1)))
    with pytest.raises(AssertionError, match="never went to the training device"):
        model(users, pos, neg)


def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(jobs, tmp_path):
    """Weights, Adam's moments, samplers and dropout all come back: the histories are equal to the last bit."""
    for name in ("backbone", "distill", "vae", "transfer", "encoder"):
        make = jobs[name]
        whole = fit(make(epochs=5, patience=10), LocalContext(folder=tmp_path / name / "whole"))
        fit(make(epochs=2, patience=10), LocalContext(folder=tmp_path / name / "parts"))
        resumed = fit(make(epochs=5, patience=10), LocalContext(folder=tmp_path / name / "parts", resume=True))
        assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4]
        assert resumed.state["restarts"] == 1
        speed = make().throughput  # the one figure that is a timing, not a result
        for a, b in zip(whole.history, resumed.history):
            assert a == {**b, speed: a[speed]}, name


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(jobs, tmp_path):
    from coldstart.models.coldstart_model import load_backbone

    job = jobs["backbone"](epochs=40, patience=2, lr=0.05)
    stopping = fit(job, LocalContext(folder=tmp_path / "run"))
    scores = [h["warm_val_ndcg@20"] for h in stopping.history]
    best = int(np.argmax(scores))
    assert stopping.best["epoch"] == best
    assert len(scores) < 40 and len(scores) - 1 - best == 2  # stopped two epochs after the best
    meta, _, _ = load_backbone(tmp_path / "run" / "best")
    assert meta["epoch"] == best and meta["selected_on"] == "warm_val_ndcg@20"
    again = jobs["backbone"]()
    model = again.build_model()
    model.load_state_dict(again.load(tmp_path / "run" / "best"))
    assert again.validate(model.eval())[0]["warm_val_ndcg@20"] == scores[best]


def test_checkpoints_follow_the_interval_and_the_final_epoch_always_has_one(jobs, tmp_path):
    """Every epoch reports; a checkpoint goes with an epoch only when the interval has passed, and with the last.
    A run resumed from a sparse checkpoint still ends exactly as an uninterrupted one."""
    written = []

    class Counting(LocalContext):
        def report(self, metrics, write):
            written.append(write is not None)
            super().report(metrics, write)

    make = jobs["backbone"]
    whole = fit(make(epochs=5, patience=10), Counting(folder=tmp_path / "sparse"), checkpoint_every_s=3600)
    assert written == [False, False, False, False, True] and len(whole.history) == 5
    assert json.loads((tmp_path / "sparse" / "state.json").read_text())["epoch"] == 4
    written.clear()
    fit(make(epochs=3, patience=10), Counting(folder=tmp_path / "every"), checkpoint_every_s=0)
    assert written == [True, True, True]
    resumed = fit(make(epochs=5, patience=10), LocalContext(folder=tmp_path / "every", resume=True),
                  checkpoint_every_s=3600)
    for a, b in zip(whole.history, resumed.history):
        assert a == {**b, "interactions_per_second": a["interactions_per_second"]}


def test_the_gpu_check_runs_every_job_through_torch_distributed(capsys):
    """`benchmarks/gpu_check.py` on a CPU with gloo: the same code a lent GPU runs with NCCL."""
    from benchmarks.gpu_check import training_check

    rows = training_check("cpu", "gloo", ("fp32", "bf16"))
    assert {(r["job"], r["precision"]) for r in rows} == {(j, p) for j in ("backbone", "distill", "vae", "transfer",
                                                                            "encoder") for p in ("fp32", "bf16")}
    assert all(r["finite"] and r["device"] == "cpu" and r["epochs"] == 2 for r in rows)
    assert "metric reduction over gloo on cpu: ok" in capsys.readouterr().out
