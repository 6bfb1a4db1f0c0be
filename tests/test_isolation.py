"""No case changes what another case sees: neither the cached data sets nor global torch state, in this
process or on the reused worker pool. Each test runs a polluting case between two identical ones."""

from __future__ import annotations

import textwrap

import pytest

from convbench import launch
from convbench.case import Case
from convbench.data import clear_cache
from convbench.registry import reset_registry

POLLUTERS = '''
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

import convbench

#: Contexts entered and never left, so that nothing (not even garbage collection) puts their state back.
LEAKED = []


def leak_inference_mode():
    LEAKED.append(torch.inference_mode())
    LEAKED[-1].__enter__()


POLLUTIONS = {
    "forward_hook": lambda: register_module_forward_hook(lambda module, args, output: output * 2),
    "default_dtype": lambda: torch.set_default_dtype(torch.float64),
    "grad_mode": lambda: torch.set_grad_enabled(False),
    "num_threads": lambda: torch.set_num_threads(torch.get_num_threads() + 1),
    "deterministic": lambda: torch.use_deterministic_algorithms(True),
    "anomaly": lambda: torch.autograd.set_detect_anomaly(True),
    "matmul_precision": lambda: torch.set_float32_matmul_precision("medium"),
    "cudnn": lambda: setattr(torch.backends.cudnn, "benchmark", True),
    "default_device": lambda: torch.set_default_device("meta"),
    "inference_mode": leak_inference_mode,
}


class Polluter(nn.Module):
    """A linear model that, when its run's last evaluation ends, changes global torch state and leaves it.

    It pollutes that late so that it finishes its own run: only the cases after it can be harmed.
    """

    def __init__(self, input_shape, num_outputs, pollution="forward_hook", evaluations=3):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs)
        self.pollutions = pollution.split(",")
        self.evaluations = evaluations
        self.evaluated = 0

    def forward(self, x):
        return self.linear(x.flatten(1))

    def train(self, mode=True):
        if mode and not self.training:  # an evaluation has ended
            self.evaluated += 1
            if self.evaluated == self.evaluations:
                for pollution in self.pollutions:
                    POLLUTIONS[pollution]()
        return super().train(mode)


class InputEditor(nn.Module):
    """A linear model that writes into its input batch, in training or in evaluation."""

    def __init__(self, input_shape, num_outputs, when="eval"):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs)
        self.when = when

    def forward(self, x):
        if self.training == (self.when == "train"):
            x.mul_(1000.0).add_(7.0)
        return self.linear(x.flatten(1))


@convbench.hookimpl
def convbench_register_models(register):
    register("polluter", Polluter)
    register("input_editor", InputEditor)
'''

#: Three evaluations (steps 0, 3 and 6): the polluter pollutes after the third.
CLEAN = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=6, eval_every=3,
             eval_train_samples=500)


@pytest.fixture(scope="module")
def polluters(tmp_path_factory):
    """The polluting models, installed as an entry point that spawned workers load too; the module."""
    root = tmp_path_factory.mktemp("polluters")
    (root / "convbench_polluters.py").write_text(textwrap.dedent(POLLUTERS))
    dist_info = root / "convbench_polluters-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: convbench-polluters\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[convbench]\nconvbench_polluters = convbench_polluters\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))  # spawned workers start with the parent's sys.path
        patch.setenv("CONVBENCH_LOAD_PLUGINS", "convbench_polluters")
        reset_registry()
        import convbench_polluters

        yield convbench_polluters
        launch.close_pools()
    reset_registry()


def same_run(first, second) -> bool:
    """The same measurements (timings aside)."""
    return (first.curves["train"]["loss"] == second.curves["train"]["loss"] and first.final == second.final
            and first.best == second.best and first.steps == second.steps)


# ------------------------------------------------------------------------------------- data sets
@pytest.mark.parametrize("when", ["eval", "train"])
def test_a_model_that_writes_into_its_input_changes_no_other_case_data(polluters, when):
    clear_cache()  # the clean case loads the data set; the editor and the clean case again use the cache
    before = launch.run_case(CLEAN)
    edited = launch.run_case(CLEAN.replace(model="input_editor", model_kwargs={"when": when}))
    after = launch.run_case(CLEAN)
    assert same_run(before, after)
    if when == "eval":  # the editor's own evaluations saw what it wrote: it did write into the data
        assert edited.final["test_loss"] is None or edited.final["test_loss"] > 100 * before.final["test_loss"]
