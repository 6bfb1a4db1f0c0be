"""The checks `benchmarks/gpu_check.sh` runs on a CUDA machine; one table, exit status 1 on any failure.

    benchmarks/gpu_check.sh            # or: python -m benchmarks.gpu_check

Every check trains a small case on mnist-5k (bundled: no download) and asserts behaviour (the loss
fell, an option trains like fp32, telemetry came from NVML), not speed; the table shows time per step
beside fp32's for the speed options, for the record. Without a CUDA GPU it stops at once with one line
on stderr and exit status 2: nothing here can be checked on a CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from convbench.case import Case
from convbench.engine import RunSettings
from convbench.launch import close_pools, run_case
from convbench.result import RunResult
from convbench.speed import SpeedOptionError

CASE = Case(model="lenet5", dataset="mnist-5k", optimizer="adam", lr=1e-3, batch_size=128, steps=120, eval_every=60,
            eval_train_samples=500, device="cuda")
SETTINGS = RunSettings(telemetry_interval_s=0.2)
OPTIONS = [{"precision": "bf16"}, {"precision": "fp16"}, {"precision": "tf32"}, {"channels_last": True},
           {"compile": True}, {"precision": "bf16", "channels_last": True, "compile": True}]


@dataclass
class Row:
    check: str
    ok: bool | None  # None: skipped (what this machine cannot run, said why)
    seconds: float
    detail: str


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def learned(result: RunResult) -> None:
    expect(not result.diverged, f"diverged: {result.divergence}")
    expect(result.final_train_loss < 0.7 * result.initial_train_loss,
           f"the loss did not fall: {result.initial_train_loss:.3f} -> {result.final_train_loss:.3f}")


def check_nvml_run() -> str:
    result = run_case(CASE, SETTINGS)
    learned(result)
    expect(result.device.startswith("cuda"), f"trained on {result.device}")
    telemetry = result.telemetry
    expect(telemetry is not None and telemetry.sampler == "nvml",
           f"telemetry sampler {getattr(telemetry, 'sampler', None)!r}, reason: {getattr(telemetry, 'reason', None)}")
    device = telemetry.devices[0]
    expect(device.get("utilization_max") is not None, f"no GPU utilisation sampled: {device}")
    return (f"{result.device}, {telemetry.samples} NVML samples, util max {device['utilization_max']}%, "
            f"power mean {device.get('power_mean_w')} W, energy {result.energy.run_j if result.energy else None} J, "
            f"{result.samples_per_s:.0f} samples/s")


def check_option(option: dict, plain: RunResult) -> str:
    case = CASE.replace(**option)
    try:
        result = run_case(case, SETTINGS)
    except SpeedOptionError as exc:  # a GPU without the feature must refuse in one line, never emulate
        capability = torch.cuda.get_device_capability()
        expect(capability < (8, 0) and option.get("precision") in ("tf32", "bf16"), f"refused: {exc}")
        expect("\n" not in str(exc), "the refusal spans several lines")
        raise Skipped(f"refused in one line on compute capability {capability[0]}.{capability[1]}") from None
    learned(result)
    close = abs(result.final_train_loss - plain.final_train_loss) <= 0.15 * plain.final_train_loss + 0.02
    expect(close, f"final loss {result.final_train_loss:.4f} against fp32's {plain.final_train_loss:.4f}")
    detail = (f"loss {result.final_train_loss:.4f} (fp32 {plain.final_train_loss:.4f}), "
              f"s/step {result.timing.train_per_step_s / plain.timing.train_per_step_s:.2f}x fp32's")
    if case.compile:
        expect(result.timing.compile_s is not None and result.timing.first_step_s is not None, "compile_s not recorded")
        detail += f", compile {result.timing.compile_s:.1f} s, first step {result.timing.first_step_s:.3f} s"
    return detail


def check_throughput_fixture() -> str:
    with tempfile.TemporaryDirectory() as folder:
        suite = Path(folder) / "test_gpu_throughput.py"
        suite.write_text(textwrap.dedent("""
            import pytest
            from convbench import Case

            CASE = Case(model="lenet5", dataset="mnist-5k", optimizer="sgd", lr=0.05, batch_size=256, steps=1,
                        device="cuda")

            @pytest.mark.parametrize("case", [CASE.param()])
            def test_gpu_throughput(throughput, case):
                assert throughput(case, steps=20, rounds=3, warmup_steps=5)["samples_per_s"] > 0
            """), encoding="utf-8")
        out = Path(folder) / "out.json"
        done = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider",
                               "--benchmark-json", str(out), "--convbench-results", "none"],
                              cwd=folder, capture_output=True, text=True, timeout=300)
        expect(done.returncode == 0, "pytest exit status {}: {}".format(
            done.returncode, (done.stdout.strip().splitlines() or [""])[-1]))
        (bench,) = json.loads(out.read_text(encoding="utf-8"))["benchmarks"]
        measured = bench["extra_info"]["convbench_throughput"]
        return f"{measured['samples_per_s']:.0f} samples/s over {bench['stats']['rounds']} rounds"


def check_nccl_pair() -> str:
    if torch.cuda.device_count() < 2:
        raise Skipped(f"{torch.cuda.device_count()} GPU visible: the nccl case needs 2")
    from convbench.distributed import backend_for

    expect(backend_for(torch.device("cuda")) == "nccl", "the backend for CUDA is not nccl")
    plain = run_case(CASE.replace(world_size=2), SETTINGS)
    learned(plain)
    expect(plain.world_size == 2 and plain.device.startswith("cuda"), f"{plain.world_size} ranks on {plain.device}")
    fast = run_case(CASE.replace(world_size=2, precision="bf16"), SETTINGS) if torch.cuda.is_bf16_supported() else None
    if fast is not None:
        learned(fast)
    return (f"2 ranks, {plain.samples_per_s:.0f} samples/s, pool start-up {plain.timing.startup_s:.1f} s"
            + (f"; bf16 loss {fast.final_train_loss:.4f} (fp32 {plain.final_train_loss:.4f})" if fast else ""))


class Skipped(Exception):
    pass


def timed(name: str, check: Callable[[], str], rows: list[Row]) -> None:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except Skipped as exc:
        detail, ok = str(exc), None
    except Exception as exc:  # every failure is a row, and the checks after it still run
        detail, ok = f"{type(exc).__name__}: " + ((str(exc).strip().splitlines() or [""])[0])[:300], False
    rows.append(Row(name, ok, time.perf_counter() - started, detail))
    print(f"  {name}: {'ok' if ok else 'skipped' if ok is None else 'FAILED'}", file=sys.stderr, flush=True)


def main() -> int:
    if not torch.cuda.is_available():
        print(f"gpu_check: FAILED: no CUDA GPU visible to torch {torch.__version__} (CUDA build "
              f"{torch.version.cuda}; torch.cuda.is_available() is False): nothing was checked", file=sys.stderr)
        return 2
    capability = torch.cuda.get_device_capability()
    print(f"# gpu_check: {torch.cuda.device_count()} x {torch.cuda.get_device_name()} (compute capability "
          f"{capability[0]}.{capability[1]}), torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    rows: list[Row] = []
    try:
        timed("w1 cuda + NVML telemetry", check_nvml_run, rows)
        plain: list[RunResult] = []
        timed("w1 cuda fp32 (speed baseline)", lambda: _baseline(plain), rows)
        for option in OPTIONS:
            name = "speed " + ",".join(f"{k}={v}" for k, v in option.items())
            if plain:
                timed(name, lambda option=option: check_option(option, plain[0]), rows)
            else:
                rows.append(Row(name, False, 0.0, "no fp32 baseline"))
        timed("throughput fixture (pytest)", check_throughput_fixture, rows)
        timed("w2 nccl", check_nccl_pair, rows)
    finally:
        close_pools()
    print("| check | result | s | detail |\n|:--|:--|--:|:--|")
    for row in rows:
        result = "ok" if row.ok else "skipped" if row.ok is None else "FAILED"
        print(f"| {row.check} | {result} | {row.seconds:.1f} | {row.detail} |")
    failed = [row.check for row in rows if row.ok is False]
    print(f"gpu_check: {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _baseline(plain: list[RunResult]) -> str:
    result = run_case(CASE, SETTINGS)
    learned(result)
    plain.append(result)
    return f"loss {result.final_train_loss:.4f}, {result.timing.train_per_step_s * 1000:.2f} ms/step"


if __name__ == "__main__":
    sys.exit(main())
