"""Per-epoch training metrics exported to Prometheus through Ray's metrics agent.

`ray.train.report` puts a run's metrics in the Train dashboard; these gauges and
counters put the same figures on the node's Prometheus endpoint, so Grafana can
chart every training and tuning run side by side with Serve's request metrics
(`cluster/monitoring/`). Ray prefixes each name with `ray_` on export, so
`coldstart_train_val_ndcg` is scraped as `ray_coldstart_train_val_ndcg`.

Tags: `job` is the Ray Train run name (`backbone-<out>`, `distill-<out>`), or
`<job>-<trial id>` for a Tune trial, `metric` the key the trainer reported
(`cold_val_ndcg@20`, ...).
"""

from __future__ import annotations

import functools
import math

EPOCHS = "coldstart_train_epochs_total"
THROUGHPUT = "coldstart_train_interactions_per_second"
TEXTS = "coldstart_train_texts_per_second"
VAL_NDCG = "coldstart_train_val_ndcg"
VALUE = "coldstart_train_metric"
NAMES = (EPOCHS, THROUGHPUT, TEXTS, VAL_NDCG, VALUE)


@functools.lru_cache(maxsize=None)
def _instruments() -> dict:
    """Created once per worker process (Ray registers each name once per process)."""
    from ray.util.metrics import Counter, Gauge  # ray: heavy, only the Ray path loads it

    return {
        EPOCHS: Counter(EPOCHS, description="Training epochs finished.", tag_keys=("job",)),
        THROUGHPUT: Gauge(THROUGHPUT, description="Training interactions per second in the last epoch.",
                          tag_keys=("job",)),
        TEXTS: Gauge(TEXTS, description="Texts per second in the last epoch of an encoder distillation.",
                     tag_keys=("job",)),
        VAL_NDCG: Gauge(VAL_NDCG, description="Validation NDCG of the last epoch, by metric "
                                              "(cold_val_ndcg@20, warm_val_ndcg@20, ...).",
                        tag_keys=("job", "metric")),
        VALUE: Gauge(VALUE, description="Every numeric figure a trainer reported for its last epoch.",
                     tag_keys=("job", "metric")),
    }


def record_epoch(metrics: dict, job: str | None = None) -> None:
    """Export one epoch's report; `job` defaults to the Ray Train run name of this worker."""
    if job is None:
        import ray.train  # ray: heavy, only the Ray path loads it

        job = ray.train.get_context().get_experiment_name()
    inst = _instruments()
    inst[EPOCHS].inc(1, tags={"job": job})
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        tags = {"job": job, "metric": key}
        inst[VALUE].set(float(value), tags=tags)
        if "ndcg" in key:
            inst[VAL_NDCG].set(float(value), tags=tags)
    if "interactions_per_second" in metrics:
        inst[THROUGHPUT].set(float(metrics["interactions_per_second"]), tags={"job": job})
    if "texts_per_second" in metrics:
        inst[TEXTS].set(float(metrics["texts_per_second"]), tags={"job": job})
