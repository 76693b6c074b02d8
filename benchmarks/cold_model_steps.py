"""The cold models' CPU training: each job as it trained before this change and as it trains now.

Three changes to the training step, none to what a model computes:

- `coldstart.models.layers.Dropout` draws its CPU mask with `torch.rand` (torch's `bernoulli_`,
  behind `nn.Dropout`, is slower; the benchmark also times the two layers alone);
- the VAE decodes each row's posterior sample and prior mean with the content half of the
  decoder's first layer computed once (`EntityCVAE.decode_many`);
- the towers run each batch's users once, and measure a loss term of weight 0 outside the
  autograd graph (the regression baseline, alignment alone, backpropagated through all three);
- transfer runs its text tower once per distinct item of a step, not per row of each domain's batch.

"before" puts the old code back (`nn.Dropout`'s forward, two decodes, the old tower loss and
transfer forward, kept below); "now" is the code as it is. Each job is trained in this process on one thread, as a
Tune trial trains it, on a pipeline's artifacts (its split, embeddings and backbone, and the
best configs of its searches), the variants interleaved.

    python -m benchmarks.cold_model_steps --artifacts out/demo [--epochs 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml


def old_tower_loss(self, batch):
    """`TowerTraining.loss` before: every term in the graph, a tower pass per row of the batch."""
    from torch import nn

    from coldstart.models.mf import bpr_loss
    from coldstart.models.towers import ranking_distillation

    users, pos, neg = batch
    cands = torch.unique(torch.cat([pos, neg]))
    g_cands, h_users = self.model(self.item_x[cands], self.user_x[users])
    where = torch.searchsorted(cands, torch.stack([pos, neg]))
    g_pos, g_neg = g_cands[where[0]], g_cands[where[1]]
    U, V = self.U[users], self.V[cands]
    item_bpr = bpr_loss((U * g_pos).sum(-1), (U * g_neg).sum(-1))
    user_bpr = bpr_loss((h_users * self.V[pos]).sum(-1), (h_users * self.V[neg]).sum(-1))
    align = nn.functional.mse_loss(g_cands, V) + nn.functional.mse_loss(h_users, U)
    teacher = torch.softmax(self.teacher_logits(users, cands), dim=1)
    t = self.w.temperature
    distill = ranking_distillation(teacher, U @ g_cands.T / t) + ranking_distillation(teacher, h_users @ V.T / t)
    loss = self.w.bpr * (item_bpr + user_bpr) + self.w.align * align + self.w.distill * distill
    return loss, {"item_bpr": item_bpr, "user_bpr": user_bpr, "align": align, "distill": distill}


def old_transfer_forward(self, text, source, target):
    """`TransferModel.forward` before: the text tower over every pos and neg row of each domain."""
    from coldstart.models.mf import bpr_loss

    out = []
    for users_table, (users, pos, neg) in ((self.source_user, source), (self.target_user, target)):
        u = users_table(users)
        p, n = self.item_vectors(text[pos], pos), self.item_vectors(text[neg], neg)
        sq = (u.pow(2).sum() + self.item(pos).pow(2).sum() + self.item(neg).pow(2).sum()) / max(len(users), 1)
        out.append((bpr_loss((u * p).sum(-1), (u * n).sum(-1)), sq))
    return out


@contextlib.contextmanager
def before():
    from coldstart.models import layers, towers, transfer, vae

    saved = (layers.Dropout.forward, vae.EntityCVAE.decode_many, towers.TowerTraining.loss,
             transfer.TransferModel.forward)
    layers.Dropout.forward = torch.nn.Dropout.forward
    vae.EntityCVAE.decode_many = lambda self, zs, c: [self.decode(z, c) for z in zs]
    towers.TowerTraining.loss = old_tower_loss
    transfer.TransferModel.forward = old_transfer_forward
    try:
        yield
    finally:
        (layers.Dropout.forward, vae.EntityCVAE.decode_many, towers.TowerTraining.loss,
         transfer.TransferModel.forward) = saved


ONE = {"num_workers": 1, "threads_per_worker": 1}  # as a one-worker Tune trial trains


def jobs(artifacts: Path, epochs: int) -> dict:
    """name -> (run, config) for each cold model trained on `artifacts`."""
    from trainers import distill, generator, transfer

    def searched(folder: str) -> dict:
        return yaml.safe_load((artifacts / folder / "best.yaml").read_text())

    inputs = {"split": artifacts / "split", "embeddings": artifacts / "embeddings", "backbone": artifacts / "backbone"}
    fixed = {"epochs": epochs, "patience": epochs}
    return {
        "vae": (generator.run, lambda out: generator.GeneratorConfig.model_validate(
            {**searched("tune-vae"), **inputs, **fixed, "out": out, "scale": ONE})),
        "transfer": (transfer.run, lambda out: transfer.TransferConfig.model_validate(
            {**searched("transfer"), "target": artifacts / "split", "embeddings": artifacts / "embeddings",
             **fixed, "out": out, "scale": ONE})),
        "towers (distill)": (distill.run, lambda out: distill.DistillConfig(
            **inputs, **fixed, out=out, scale=ONE)),
        "regression (align alone)": (distill.run, lambda out: distill.DistillConfig(
            **inputs, **fixed, bpr=0.0, distill=0.0, align=1.0, out=out, scale=ONE)),
    }


def dropout_alone(repeats: int, shape=(1500, 448), p: float = 0.3, calls: int = 50) -> dict[str, list[float]]:
    """ms per forward and backward of torch's `nn.Dropout` and ours on one CPU tensor, interleaved."""
    from coldstart.models.layers import Dropout

    x = torch.randn(*shape, requires_grad=True)
    layers = {"nn.Dropout": torch.nn.Dropout(p), "coldstart Dropout": Dropout(p)}
    times: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(repeats):
        for name, layer in layers.items():
            layer(x).sum().backward()  # warm-up
            started = time.perf_counter()
            for _ in range(calls):
                layer(x).sum().backward()
            times[name].append((time.perf_counter() - started) / calls * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", type=Path, default=Path("out/demo"),
                        help="A pipeline's output folder with tune-vae/ and transfer/ (e.g. `make demo`'s).")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", nargs="*", help="Only these jobs (default: all; none: the dropout figure alone).")
    args = parser.parse_args()

    from trainers.loop import LocalContext

    torch.set_num_threads(1)
    drop = dropout_alone(args.repeats)
    print("dropout alone, one thread, 1,500 x 448 forward and backward: " + ", ".join(
        f"{name} {min(ms):.1f} ms" for name, ms in drop.items())
        + f" ({min(drop['nn.Dropout']) / min(drop['coldstart Dropout']):.2f}x)", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="cold-model-steps-"))
    seconds: dict[tuple[str, str], list[float]] = {}
    try:
        for name, (run, config) in jobs(args.artifacts, args.epochs).items():
            if args.jobs and name not in args.jobs:
                continue
            for repeat in range(args.repeats):
                for variant in ("before", "now"):
                    out = scratch / f"{name}-{variant}-{repeat}"
                    with before() if variant == "before" else contextlib.nullcontext():
                        started = time.perf_counter()
                        run(config(out / "model"), context=LocalContext("cpu", folder=out / "run"))
                        seconds.setdefault((name, variant), []).append(time.perf_counter() - started)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"{name} {variant}: {seconds[(name, variant)][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not seconds:
        return
    print(f"\n{args.epochs} epochs a run, one thread, in this process; best of {args.repeats} "
          f"(every run in brackets)\n")
    print("| job | before s | now s | speed-up |\n|---|---|---|---|")
    for name in dict.fromkeys(n for n, _ in seconds):
        old, new = seconds[(name, "before")], seconds[(name, "now")]
        runs = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
        print(f"| {name} | {min(old):.1f} ({runs(old)}) | {min(new):.1f} ({runs(new)}) | "
              f"{min(old) / min(new):.2f}x |")


if __name__ == "__main__":
    main()
