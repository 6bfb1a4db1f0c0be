"""Does `convbench compare` pass identical code and fail real regressions? Runs the experiment and prints
what compare printed.

    python -m benchmarks.gate_experiment [--seeds 3] [--keep DIR]

A small suite (softmax regression on the offline MNIST sample, several seeds, and a throughput case)
is run four times, one after another, on this machine as it is (say what else was running when you
quote the result):

1. BASE;
2. the same code again (identical: compare must exit 0);
3. with a real slowdown: a conftest.py in the run's folder sleeps 5 ms in every forward pass (compare
   should exit 1, from the times, where the machine's load lets them be judged);
4. with a real accuracy drop: the learning rate divided by 20 under the same test names (compare must
   exit 1 from quality, which does not depend on the load).

Each run's `convbench compare BASE RUN` output and exit status are printed, with the share of runs that
were measured on a busy machine (their times are noted, not judged; see the README's compare section).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = '''
import os
import pytest
from convbench import Case

LR = 0.1 / float(os.environ.get("GATE_LR_DIVISOR", "1"))
CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=LR, batch_size=100, epochs=2,
            eval_every=35, eval_train_samples=500)
SEEDS = int(os.environ["GATE_SEEDS"])


@pytest.mark.parametrize("seed", range(SEEDS), ids=[f"softmax-seed{s}" for s in range(SEEDS)])
def test_softmax(convergence, seed):
    convergence(CASE.replace(seed=seed))


def test_softmax_speed(throughput):
    throughput(CASE, steps=10, rounds=7, warmup_steps=3)
'''

SLOWDOWN = '''
import time
import torch

_call = torch.nn.Module.__call__


def _slow_call(self, *args, **kwargs):
    if self.training and not any(True for _ in self.children()):  # once per forward of a leaf module
        time.sleep(0.005)
    return _call(self, *args, **kwargs)


torch.nn.Module.__call__ = _slow_call
'''

VARIANTS = {"base": {}, "identical": {}, "slowdown": {"conftest": SLOWDOWN}, "accuracy-drop": {"GATE_LR_DIVISOR": "20"}}


def run_variant(folder: Path, name: str, seeds: int) -> Path:
    """Run the suite as ``name`` asks, in a folder of its own; the path of its benchmark JSON."""
    here = folder / name
    here.mkdir()
    (here / "test_gate.py").write_text(SUITE, encoding="utf-8")
    variant = dict(VARIANTS[name])
    if "conftest" in variant:
        (here / "conftest.py").write_text(variant.pop("conftest"), encoding="utf-8")
    out = here / "out.json"
    env = {**os.environ, "GATE_SEEDS": str(seeds), **variant}
    subprocess.run([sys.executable, "-m", "pytest", str(here), "-q", "-p", "no:cacheprovider",
                    "--benchmark-json", str(out)], check=True, env=env, cwd=here, stdout=subprocess.DEVNULL)
    return out


def busy_share(path: Path) -> str:
    """How many of the file's runs and throughput cases recorded a busy machine."""
    entries = json.loads(path.read_text(encoding="utf-8"))["benchmarks"]
    loads = [(e["extra_info"].get("convbench") or e["extra_info"].get("convbench_throughput") or {})
             .get("machine_load") or {} for e in entries]
    return f"{sum(bool(load.get('busy')) for load in loads)}/{len(loads)} measured on a busy machine"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per case (compare judges times from 3)")
    parser.add_argument("--keep", type=Path, help="write the runs here instead of a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        outs = {name: run_variant(folder, name, args.seeds) for name in VARIANTS}
        for name, path in outs.items():
            print(f"== {name}: {busy_share(path)}")
        for name in ("identical", "slowdown", "accuracy-drop"):
            done = subprocess.run([sys.executable, "-m", "convbench.cli", "compare", str(outs["base"]),
                                   str(outs[name])], capture_output=True, text=True)
            print(f"\n== convbench compare base {name}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
