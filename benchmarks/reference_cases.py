"""Reference cases whose measured results (everything but the clocks) must not change in a refactor.

    python -m benchmarks.reference_cases OUT.json          # measure at this commit
    python -m benchmarks.reference_cases OUT.json --check BEFORE.json   # and compare with an earlier commit

The cases cover the loop's every exit and path: divergence, stop at the target, a step scheduler with
warm-up, reduce-on-plateau, full batch, parameter trajectories, augmentation and two DDP ranks. Times,
telemetry and host-specific fields are dropped; what remains (curves, metrics, step counts, verdicts) is
deterministic per seed on the CPU, so two commits that train the same way give byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from convbench import Case

CASES = [
    Case(model="softmax", optimizer="sgd", lr=50.0, epochs=1, batch_size=100, label="diverges"),
    Case(model="mlp", optimizer="adam", lr=1e-3, epochs=3, batch_size=100, target_accuracy=0.85,
         stop_at_target=True, label="stop-at-target"),
    Case(model="softmax", optimizer="momentum", lr=0.1, epochs=2, batch_size=50, scheduler="step",
         scheduler_kwargs={"step_size": 1, "gamma": 0.5}, warmup_steps=20, label="step-warmup"),
    Case(model="mlp", optimizer="sgd", lr=0.05, epochs=3, batch_size=200, scheduler="reduce_on_plateau",
         scheduler_kwargs={"patience": 0, "factor": 0.5}, label="plateau"),
    Case(model="linear_regression", optimizer="gd", lr=0.1, steps=60, batch_size=None,
         dataset="linear-regression", label="full-batch-trajectory"),
    Case(model="lenet5", optimizer="adam", lr=1e-3, steps=40, batch_size=64,
         augmentations=(("rotation", {"degrees": 10}),), eval_every=20, label="augmented"),
    Case(model="mlp", optimizer="sgd", lr=0.1, epochs=1, batch_size=100, world_size=2, label="ddp-w2"),
]
#: What depends on the host and the moment, not on the code: left out of the comparison.
_CLOCKS = ("timing", "telemetry", "samples_per_s", "device", "schema", "machine_load", "energy")


def measured(result: dict[str, Any]) -> dict[str, Any]:
    """The result without clocks and host-specific fields."""
    kept = {k: v for k, v in result.items() if k not in _CLOCKS}
    kept["target"] = {k: v for k, v in kept["target"].items() if k != "time_s"}
    kept["curves"] = {**kept["curves"], "eval": {k: v for k, v in kept["curves"]["eval"].items() if k != "time_s"}}
    return kept


def _differ(before: dict[str, Any], after: dict[str, Any], where: str = "field") -> bool:
    """Fields both commits record must be equal; a field only one records (a new one) is listed, not a change.
    The case is compared the same way, field by field: a new `Case` field is recorded with every case."""
    for name in sorted(set(before) ^ set(after)):
        print(f"{where} {name!r} only {'after' if name in after else 'before'}", file=sys.stderr)
    shared = set(before) & set(after)
    if where == "field" and "case" in shared:
        shared.discard("case")
        if _differ(before["case"], after["case"], "case field"):
            return True
    return any(before[name] != after[name] for name in shared)


def _differing_fields(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the fields both record and that differ (curves and case fields one level deeper)."""
    names = []
    for name in sorted(set(before) & set(after)):
        if before[name] == after[name]:
            continue
        if isinstance(before[name], dict) and isinstance(after[name], dict) and not prefix.count("."):
            names += _differing_fields(before[name], after[name], f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def main(argv: list[str] | None = None) -> int:
    from convbench.engine import RunSettings
    from convbench.launch import close_pools, run_case

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", type=Path, metavar="BEFORE", help="exit 1 unless OUT equals BEFORE")
    args = parser.parse_args(argv)
    settings = RunSettings(scale="full", telemetry_interval_s=None)
    try:
        results = {case.id: measured(run_case(case, settings).to_dict()) for case in CASES}
    finally:
        close_pools()
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.check is None:
        return 0
    # files written before a field joined _CLOCKS still hold it
    before = {name: {k: v for k, v in result.items() if k not in _CLOCKS}
              for name, result in json.loads(args.check.read_text(encoding="utf-8")).items()}
    differ = [name for name in sorted(set(before) | set(results))
              if name not in before or name not in results or _differ(before[name], results[name])]
    for name in differ:
        fields = _differing_fields(before.get(name, {}), results.get(name, {}))
        print(f"reference case {name}: results differ ({', '.join(fields) or 'missing'})", file=sys.stderr)
    print(f"{len(results) - len(differ)}/{len(results)} reference cases identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
