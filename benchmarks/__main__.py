"""Run convbench's benchmarks and print one table of ratios measured side by side.

    python -m benchmarks                          # every benchmark, default repeats
    python -m benchmarks --only harness,data      # some of them
    python -m benchmarks --repeats 5 --json out.json   # keep the numbers to compare across commits
    python -m benchmarks --tiny --repeats 1       # a few steps each: checks that they run, not how fast

Each benchmark alternates its two sides in this process over the repeats (after a warm-up of each) and
reports their medians, their spread ((max - min) / median, shown as ± half of it) and the ratio B/A,
with the machine, torch version, threads and the load average at the start and end of each row.
Timing claims live here, never in pass/fail tests. On a shared machine the load column says how much
to trust a row: rerun when it is high.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import data_path, harness_overhead, speed_gain, sweep_cost, telemetry_cost
from benchmarks.timing import Comparison, environment, format_table

#: name -> (run(repeats, tiny), default repeats)
BENCHMARKS: dict[str, tuple[Callable[[int, bool], list[Comparison]], int]] = {
    "harness": (harness_overhead.run, 5),
    "data": (data_path.run, 3),
    "sweep": (sweep_cost.run, 2),
    "telemetry": (telemetry_cost.run, 5),
    "speed": (speed_gain.run, 3),
}


def parse_only(text: str | None) -> list[str]:
    if text is None:
        return list(BENCHMARKS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"python -m benchmarks: error: unknown benchmark {name!r}; valid choices: "
                             + ", ".join(BENCHMARKS))
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME[,NAME...]", help="benchmarks to run: " + ", ".join(BENCHMARKS))
    parser.add_argument("--repeats", type=int, metavar="N", help="timed repeats per side (default: per benchmark)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads (default 1, as the suites run on a shared machine)")
    parser.add_argument("--tiny", action="store_true", help="a few steps per case: checks that everything runs")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers and the environment here")
    args = parser.parse_args(argv)
    names = parse_only(args.only)
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    env = environment()
    print(f"# convbench benchmarks on {env['host']}: {env['cpu']}, {env['cores']} cores"
          + (f", {env['gpu']}" if env["gpu"] else "") + f"; torch {env['torch']}, {env['threads']} threads; "
          f"load average {' '.join(f'{x:.2f}' for x in env['load_avg'])}", flush=True)
    rows: list[Comparison] = []
    started = time.perf_counter()
    for name in names:
        run, default_repeats = BENCHMARKS[name]
        repeats = args.repeats or default_repeats
        print(f"... {name} ({repeats} repeats)", file=sys.stderr, flush=True)
        rows += run(repeats, args.tiny)
    print(format_table(rows))
    for row in rows:
        if row.extra:
            print(f"- {row.benchmark} {row.case} ({row.measure}): "
                  + "; ".join(f"{key}={_short(value)}" for key, value in row.extra.items()))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json is not None:
        args.json.write_text(json.dumps({"environment": env, "tiny": args.tiny,
                                         "results": [row.to_dict() for row in rows]}, indent=1) + "\n",
                             encoding="utf-8")
    return 0


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
