"""No case changes what another case sees: neither the cached data sets nor global torch state, in this
process or on the reused worker pool. Each test runs a polluting case between two identical ones."""

from __future__ import annotations

import textwrap
import warnings

import pytest
import torch
from packaging.version import Version

from convbench import isolation, launch
from convbench.case import Case
from convbench.data import clear_cache
from convbench.errors import ConvbenchError
from convbench.isolation import IsolationWarning
from convbench.registry import reset_registry


def skip_where_gloo_refuses_inference_tensors() -> None:
    """Before torch 2.6, gloo's worker threads do not inherit inference mode and refuse to write to tensors made
    in it (pytorch issues 86830, 126032): a case that leaks inference mode on the worker pool fails itself at its
    next collective (a RankFailedError that says so), before it leaves any state for a later case to see."""
    if Version(torch.__version__).release[:2] < (2, 6):
        pytest.skip("torch < 2.6: gloo's collectives fail on inference tensors, so the polluting case fails itself")


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

    def __init__(self, input_shape, num_outputs, pollution="forward_hook", evaluations=3, at_build=False):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs)
        self.pollutions = pollution.split(",")
        self.evaluations = evaluations
        self.evaluated = 0
        if at_build:  # while the case is prepared: it pollutes even if it never runs
            for pollution in self.pollutions:
                POLLUTIONS[pollution]()

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
RESTORABLE = ("forward_hook", "default_dtype", "grad_mode", "num_threads", "deterministic", "anomaly",
              "matmul_precision", "cudnn", "default_device")


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


# --------------------------------------------------------------------------- global torch state
@pytest.mark.parametrize("pollution", RESTORABLE)
def test_global_torch_state_a_case_changes_is_put_back_in_this_process(polluters, pollution):
    state = isolation.capture()
    before = launch.run_case(CLEAN)
    with launch.prepare(CLEAN.replace(model="polluter", model_kwargs={"pollution": pollution})) as polluting:
        polluting.run()
        changed = [name for name, value in isolation.capture().items() if value != state[name]]
        assert changed, f"{pollution} changed nothing"  # the polluter did pollute, and it lasted past its run
    assert isolation.capture() == state
    with warnings.catch_warnings():
        warnings.simplefilter("error", IsolationWarning)
        after = launch.run_case(CLEAN)
    assert same_run(before, after)


def test_state_that_cannot_be_put_back_is_named_in_a_warning(polluters):
    polluting = CLEAN.replace(model="polluter", model_kwargs={"pollution": "inference_mode"})
    try:
        with pytest.warns(IsolationWarning, match=r"case '.*polluter.*' changed global torch state that cannot be "
                                                  r"put back \(inference mode\); later cases in this process see it"):
            launch.run_case(polluting)
        assert torch.is_inference_mode_enabled()
    finally:
        while polluters.LEAKED:
            polluters.LEAKED.pop().__exit__(None, None, None)
    assert not torch.is_inference_mode_enabled()


def test_restore_puts_back_only_what_differs_and_reports_what_it_cannot():
    calls = []
    value = {"fixed": 1, "settable": 1}
    settings = (
        isolation.Setting("fixed", lambda: value["fixed"]),
        isolation.Setting("settable", lambda: value["settable"], lambda v: (calls.append(v), value.update(settable=v))),
        isolation.Setting("refuses", lambda: 1 / 0, lambda v: calls.append(("refuses", v))),
    )
    saved = isolation.capture(settings)
    assert saved["refuses"] is isolation.UNREADABLE
    assert isolation.restore(saved, settings) == [] and calls == []  # nothing differs: nothing is set
    value.update(fixed=2, settable=2)
    assert isolation.restore(saved, settings) == ["fixed"]
    assert calls == [1] and value["settable"] == 1  # an unreadable saved value is left alone


@pytest.mark.slow
def test_a_polluting_case_on_the_worker_pool_changes_no_later_case(polluters):
    clean = CLEAN.replace(world_size=2)
    before = launch.run_case(clean)
    launch.run_case(clean.replace(model="polluter", model_kwargs={"pollution": ",".join(RESTORABLE)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IsolationWarning)
        after = launch.run_case(clean)
    assert after.timing.pool_reused  # the same workers, with their state put back
    assert same_run(before, after)
    # state the workers cannot put back: the next case starts new workers
    skip_where_gloo_refuses_inference_tensors()
    with pytest.warns(IsolationWarning, match=r"cannot put back \(inference mode\); the next case starts new workers"):
        launch.run_case(clean.replace(model="polluter", model_kwargs={"pollution": "inference_mode"}))
    fresh = launch.run_case(clean)
    assert not fresh.timing.pool_reused
    assert same_run(before, fresh)


@pytest.mark.slow
def test_a_case_superseded_before_it_ran_leaves_no_state_to_the_next(polluters):
    skip_where_gloo_refuses_inference_tensors()
    clean = CLEAN.replace(world_size=2)
    before = launch.run_case(clean)
    polluting = launch.prepare(clean.replace(model="polluter",
                                             model_kwargs={"pollution": "inference_mode", "at_build": True}))
    # the next case takes the polluting case's place on the pool without it ever running
    with pytest.warns(IsolationWarning, match=r"cannot put back \(inference mode\); the next case starts new workers"):
        after = launch.run_case(clean)
    assert not after.timing.pool_reused and same_run(before, after)
    with pytest.raises(ConvbenchError, match="no longer prepared"):
        polluting.run()
    polluting.close()
