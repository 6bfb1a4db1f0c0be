"""Each speed option (`Case.precision`, ``channels_last``, ``compile``) against the plain fp32 run.

    python -m benchmarks --only speed [--repeats 3]

One small CNN trains with each option and without, alternately, on the machine's default device (a GPU
where there is one: that is where the options are meant to pay; on a CPU they mostly cost). The table
gives time per step; the final training losses are reported beside it (they must be close to fp32's).
A compiled run's compilation is timed apart (``Timing.compile_s``) and shown in the row's extras; it is
paid once per process and model, so the warm-up run holds it and the timed repeats do not. TF32 is
measured only on a CUDA GPU of compute capability 8.0+ (anywhere else it is a one-line error).
"""

from __future__ import annotations

import torch

from benchmarks.timing import Comparison, alternate, load_1min
from convbench.case import Case
from convbench.device import resolve_device
from convbench.engine import RunSettings, run_in_this_process
from convbench.result import RunResult
from convbench.speed_options import id_tokens

CASE = Case(model="lenet5", optimizer="adam", lr=1e-3, batch_size=128, steps=60, eval_every=60,
            eval_train_samples=500)
TINY = {"steps": 6, "eval_every": 6}
OPTIONS = [{"precision": "bf16"}, {"precision": "fp16"}, {"channels_last": True}, {"compile": True},
           {"precision": "bf16", "channels_last": True, "compile": True}]


def options_here() -> list[dict]:
    device = resolve_device("auto")
    options = list(OPTIONS)
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0):
        options.insert(0, {"precision": "tf32"})
    return options


def run(repeats: int, tiny: bool = False, compile_options: bool = True) -> list[Comparison]:
    base = CASE.replace(**TINY) if tiny else CASE
    rows = []
    for option in options_here():
        if "compile" in option and not compile_options:
            continue
        case = base.replace(**option)
        results: dict[str, list[RunResult]] = {"plain": [], "option": []}

        def timed(which: str, case: Case, results: dict[str, list[RunResult]] = results) -> float:
            # in this process, with the global torch state put back after each run (tf32 switches it on)
            result = run_in_this_process(case, RunSettings(telemetry_interval_s=None))
            results[which].append(result)
            return result.timing.train_s / result.steps

        load_start = load_1min()
        a, b = alternate(lambda base=base: timed("plain", base), lambda case=case: timed("option", case), repeats,
                         ("fp32 s/step", "option s/step"))
        extra = {"final_train_loss": {k: [r.final_train_loss for r in v] for k, v in results.items()},
                 "device": results["plain"][0].device}
        compile_s = [r.timing.compile_s for r in results["option"] if r.timing.compile_s is not None]
        if compile_s:
            extra["compile_s"] = compile_s
            extra["first_step_s"] = [r.timing.first_step_s for r in results["option"]]
        name = "-".join(id_tokens(case.precision, case.channels_last, case.compile))
        rows.append(Comparison("speed", f"{base.model} {name}", "s/step", a, b, extra=extra,
                               load=(load_start, load_1min())))
    return rows
