"""What the served-path choice picks on a pipeline's folder, and how every candidate fared on test.

For each artifacts folder (a `coldstart pipeline` OUT, or one seed's OUT/seed-N),
`coldstart.serving.evidence.choose_served` is run again on validation (nothing
is written), then every candidate generator, with the share of slots for new
items it learnt on validation, is measured through the serving path on test: cold / warm / all
NDCG@20, beside the backbone's (warm vectors, old items alone). The rows say
which was served and which would have been best on test.

With `--slots`, for the served generator: test's all-items NDCG@20 with the slots
chosen on validation, with each fixed share, and with the pattern learnt on test
itself (an oracle: the most any slot pattern could add on test), against the
backbone's old items alone. How much of the all-items figure the slot choice
leaves on the table, and how much is the new items' ranking itself.

    python -m benchmarks.served OUT/seed-42 OUT/seed-43 OUT/seed-44 [--slots]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def audit(out: Path, slots: bool = False) -> dict:
    from coldstart.data.split import load_split
    from coldstart.evaluate import SplitData
    from coldstart.serving.catalogue import Catalogue
    from coldstart.serving.evidence import K, SHARES, choose_served, mixed, served_metrics
    from coldstart.serving.served_models import ServingGenerator
    from coldstart.serving.slots import Slots

    data = SplitData.from_split(load_split(out / "split"))
    choice = choose_served(out, data)
    rows = {}
    for name, evidence in choice["evidence"].items():
        catalogue = Catalogue.from_artifacts(out, ServingGenerator(out, name), encoder=None,
                                             new_slots=Slots.from_record(evidence["new_slots"]))
        test, _ = served_metrics(catalogue, data, on="test", ks=(K,))
        rows[name] = {"val": evidence, "test": {g: test[g][f"ndcg@{K}"] for g in test}}
        if name == choice["generator"] or "backbone" not in rows:
            on_test = mixed(catalogue, data, "test")
            reference = on_test.ndcg(None)
            if slots and name == choice["generator"]:
                chosen = Slots.from_record(evidence["new_slots"])
                rows["slots"] = {"chosen on val": (str(chosen), float(on_test.ndcg(chosen).mean())),
                                 "learnt on test (oracle)": (str(on_test.learnt()), float(on_test.ndcg(on_test.learnt()).mean())),
                                 **{f"share {s:g}": (str(Slots.share(s)), float(on_test.ndcg(Slots.share(s)).mean()))
                                    for s in SHARES}}
            rows.setdefault("backbone", {"val": choice["reference"],
                                         "test": {"warm": test["warm"][f"ndcg@{K}"],
                                                  "all": float(np.mean(reference))}})
    return {"choice": choice, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--slots", action="store_true", help="the served generator's test all-items NDCG@20 by slot "
                                                             "pattern, the test-learnt oracle among them")
    args = parser.parse_args()
    from coldstart.serving.slots import Slots

    for out in args.folders:
        result = audit(out, args.slots)
        choice, rows = result["choice"], result["rows"]
        backbone, by_slots = rows.pop("backbone"), rows.pop("slots", None)
        best = max(rows, key=lambda n: rows[n]["test"]["cold"])
        print(f"\n{out}: served {choice['generator']} (default {choice['default']}); best on test cold: {best}")
        print("| generator | new items' slots | cold val | cold test | warm test | all val | all test | all test vs backbone "
              "| cold-val vs default (items' 95%) | eligible |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            val, test = row["val"], row["test"]
            low, high = val.get("cold_val_vs_default", (float("nan"),) * 2)
            mark = " (served)" if name == choice["generator"] else ""
            print(f"| {name}{mark} | {Slots.from_record(val['new_slots'])} | {val['cold_val_ndcg@20']:.4f} | {test['cold']:.4f} | "
                  f"{test['warm']:.4f} | {val['all_val_ndcg@20']:.4f} | {test['all']:.4f} | "
                  f"{test['all'] / backbone['test']['all']:.3f}x | [{low:+.4f}, {high:+.4f}] | {val['eligible']} |")
        print(f"| backbone | | | | {backbone['test']['warm']:.4f} | "
              f"{backbone['val']['all_val_ndcg@20 (old items alone)']:.4f} | {backbone['test']['all']:.4f} | 1x | | |")
        if by_slots:
            print(f"\n{choice['generator']} on test, all items, by the slots kept for new items:")
            print("| slots | pattern | all test | vs backbone |\n|---|---|---|---|")
            for label, (pattern, value) in by_slots.items():
                print(f"| {label} | {pattern} | {value:.4f} | {value / backbone['test']['all']:.3f}x |")


if __name__ == "__main__":
    main()
