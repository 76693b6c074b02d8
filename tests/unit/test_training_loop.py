"""The one training skeleton (`trainers/loop.py`) without Ray: device placement, resume, early stopping.

A CPU has no second device, so the placement tests stand one in: the model's
parameters and buffers, and every tensor the code moves with
`coldstart.training.to_device` (the one door to the training device), are marked
as on the device, and so is whatever is computed from them or made with an
explicit `device=`. Any operation (a forward, a loss, a reduction, an index)
that mixes a marked tensor with an unmarked one of a dimension or more then
fails, as CUDA fails on a batch left on the CPU, a lookup table never moved, or
a mask or noise made inside a loss without `device=` (the bugs fixed before).
A copy across devices and a 0-d tensor (a Python number's stand-in) are legal
there, and here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

import coldstart.training as training
from trainers.testing import tiny_jobs
from trainers.loop import LocalContext, fit

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.randn, torch.rand, torch.randint,
             torch.tensor, torch.as_tensor, torch.linspace, torch.eye, torch.randperm}
LEAVES = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.tolist}  # off the device


def _placed(tensor) -> bool:
    return getattr(tensor, "_on_training_device", False)


def _mark(value):
    if isinstance(value, torch.Tensor):
        value._on_training_device = True
    return value


class TrainingDevice(TorchFunctionMode):
    """Every torch operation in its scope: fails where a CPU tensor meets one on the (stand-in) device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on = any(_placed(t) for t in tensors)
        strays = [t for t in tensors if not _placed(t) and t.dim() > 0]
        if on and strays and func is not torch.Tensor.copy_:
            raise AssertionError(f"{getattr(func, '__name__', func)}: a {tuple(strays[0].shape)} tensor on the CPU "
                                 "met tensors on the training device")
        out = func(*args, **kwargs)
        moved = func is torch.Tensor.to and (kwargs.get("device") is not None or
                                             any(isinstance(a, (torch.device, str)) for a in args[1:]))
        made = func in FACTORIES and kwargs.get("device") is not None
        if func not in LEAVES and (on or moved or made):
            tree_map(_mark, out)
        return out


@pytest.fixture
def training_device(monkeypatch):
    """(mark a model as on the device, the guard to train in); `to_device` marks what it moves."""
    real = training.to_device
    monkeypatch.setattr(training, "to_device", lambda value, device: tree_map(_mark, real(value, device)))

    def place(model):
        for tensor in [*model.parameters(), *model.buffers()]:
            _mark(tensor)
        return model

    return place, TrainingDevice


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return tiny_jobs(tmp_path_factory.mktemp("loop"))


def _fit_on_device(make, place, guard, folder):
    job = make(epochs=1)
    build = job.build_model
    job.build_model = lambda: place(build())
    with guard():
        return fit(job, LocalContext("cpu", folder=folder))


def test_every_job_trains_and_validates_with_no_cpu_tensor_meeting_the_device(jobs, training_device, tmp_path):
    """Would fail on a loop that leaves batches, lookup tables or inference inputs on the CPU, or a loss that
    makes a tensor without `device=`."""
    place, guard = training_device
    for name, make in jobs.items():
        stopping = _fit_on_device(make, place, guard, tmp_path / name)
        assert len(stopping.history) == 1, name
        assert (tmp_path / name / "best").is_dir() and (tmp_path / name / "optimizer.pt").is_file()


def test_the_guard_catches_the_placement_bugs_fixed_before(jobs, training_device, monkeypatch, tmp_path):
    """The check has teeth: a batch straight from the sampler, a lookup table left on the CPU, and the VAE's
    seen-items mask made without `device=` each fail it."""
    place, guard = training_device
    job = jobs["backbone"](epochs=1)
    model = place(job.build_model())
    users, pos, neg = next(iter(job.batches(0, 0, 1)))
    with guard(), pytest.raises(AssertionError, match="tensor on the CPU met tensors on the training device"):
        model(torch.as_tensor(users), torch.as_tensor(pos), torch.as_tensor(neg))
    with monkeypatch.context() as patch:
        patch.setattr(training.StepTraining, "place", lambda self, value, dtype=torch.float32: torch.as_tensor(
            np.asarray(value)).to(dtype))
        with pytest.raises(AssertionError, match="tensor on the CPU met"):
            _fit_on_device(jobs["distill"], place, guard, tmp_path / "tables")
    zeros = torch.zeros
    with monkeypatch.context() as patch:
        patch.setattr(torch, "zeros", lambda *a, device=None, **kw: zeros(*a, **kw))
        with pytest.raises(AssertionError, match="tensor on the CPU met"):
            _fit_on_device(jobs["vae"], place, guard, tmp_path / "mask")


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
    from trainers.testing import training_check

    rows = training_check("cpu", "gloo", ("fp32", "bf16"))
    assert {(r["job"], r["precision"]) for r in rows} == {(j, p) for j in ("backbone", "distill", "vae", "transfer",
                                                                            "encoder") for p in ("fp32", "bf16")}
    assert all(r["finite"] and r["device"] == "cpu" and r["epochs"] == 2 for r in rows)
    assert "metric reduction over gloo on cpu: ok" in capsys.readouterr().out


def test_an_fp16_run_keeps_its_loss_scale_across_a_resume(jobs, tmp_path, monkeypatch):
    """fp16 trains with a gradient scaler; its scale (halved on every overflow) comes back with the checkpoint,
    as a fresh scaler's 65536 would overflow again where the run had already learnt a smaller one."""
    make = jobs["backbone"]
    fit(make(epochs=2, patience=10), LocalContext(folder=tmp_path / "run"), precision="fp16")
    saved = torch.load(tmp_path / "run" / "scaler.pt", weights_only=True)
    saved["scale"] = 128.0
    torch.save(saved, tmp_path / "run" / "scaler.pt")
    seen = []
    real = training.StepTraining.train_epoch
    monkeypatch.setattr(training.StepTraining, "train_epoch",
                        lambda self, batches: (seen.append(self.scaler.get_scale()), real(self, batches))[1])
    fit(make(epochs=3, patience=10), LocalContext(folder=tmp_path / "run", resume=True), precision="fp16")
    assert seen == [128.0]


def test_fit_in_process_gives_back_the_best_epochs_model(jobs):
    """What benchmarks and tests measure: the model of the epoch early stopping kept, rebuilt from `best/`."""
    from trainers.loop import fit_in_process

    job = jobs["backbone"](epochs=6, patience=10)
    model, stopping = fit_in_process(job)
    assert not model.training
    assert job.validate(model)[0]["warm_val_ndcg@20"] == stopping.best["warm_val_ndcg@20"]


def test_tune_and_the_skeleton_count_patience_alike():
    from trainers.epochs import EarlyStopping

    assert EarlyStopping.stops_before_best([0.1, 0.2, 0.2, 0.2, 0.5], patience=2)  # stops at epoch 3, best is 4
    assert not EarlyStopping.stops_before_best([0.1, 0.2, 0.2, 0.5], patience=2)
    assert not EarlyStopping.stops_before_best([0.5, 0.1, 0.1, 0.1], patience=2)  # stops after the best
