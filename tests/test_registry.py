"""The plugin registry: built-ins, entry points, duplicates, unknown names, argument checking."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest
import torch

import convbench
from convbench.case import Case
from convbench.cli import main
from convbench.errors import (
    CaseTimeoutError,
    ComponentArgumentError,
    ConvbenchError,
    DuplicateComponentError,
    PluginProblemWarning,
    UnknownComponentError,
)
from convbench.launch import run_case
from convbench.registry import BUILTIN_PLUGINS, KINDS, Component, Registry, load_registry, reset_registry
from convbench.report.figures import FigureKind, FigureOptions

REQUIRED_BUILTINS = {
    "optimizer": {"sgd", "momentum", "nesterov", "adam", "rmsprop"},
    "model": {"softmax", "mlp", "lenet5", "tf_cnn"},
    "scheduler": {"step", "exponential"},
    "augmentation": {"rotation"},
    "dataset": {"mnist-5k", "mnist"},
}


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, convbench.hookimpl(function))
    return module


def install_entry_point(tmp_path, monkeypatch, module_name: str, source: str, entry_name: str | None = None):
    """A real installed distribution on sys.path with a `convbench` entry point."""
    (tmp_path / f"{module_name}.py").write_text(textwrap.dedent(source))
    dist_info = tmp_path / f"{module_name}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[convbench]\n{entry_name or module_name} = {module_name}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def builtins_only():
    return load_registry(entry_points=False)


def test_every_builtin_is_registered_by_its_builtin_module(builtins_only):
    for kind, names in REQUIRED_BUILTINS.items():
        assert names <= set(builtins_only.names(kind)), kind
        for name in names:
            assert builtins_only.get(kind, name).plugin in BUILTIN_PLUGINS
    assert builtins_only.problems == []


def test_unknown_name_is_one_line_with_close_matches_and_all_choices(builtins_only):
    with pytest.raises(UnknownComponentError) as info:
        builtins_only.get("optimizer", "adma")
    message = str(info.value)
    assert message.startswith("unknown optimizer 'adma'; did you mean ")
    assert "'adam'" in message.split("?")[0]
    assert message.endswith("valid choices: " + ", ".join(sorted(builtins_only.names("optimizer"))))
    assert "\n" not in message
    with pytest.raises(UnknownComponentError, match="unknown component kind 'optimiser'; did you mean 'optimizer'"):
        builtins_only.get("optimiser", "adam")


def test_listing_filters_by_kind_and_name(builtins_only):
    assert [c.name for c in builtins_only.components("optimizer", pattern="mom")] == ["momentum"]
    everything = builtins_only.components()
    assert {c.kind for c in everything} == set(KINDS)
    assert len(everything) == sum(len(builtins_only.names(k)) for k in KINDS)


def test_add_rejects_duplicates_naming_both_plugins():
    registry = Registry()
    registry.add(Component("optimizer", "adam", torch.optim.Adam, plugin="first"))
    with pytest.raises(DuplicateComponentError,
                       match="'adam' from plugin 'second' is already registered by plugin 'first'"):
        registry.add(Component("optimizer", "adam", torch.optim.SGD, plugin="second"))
    assert registry.get("optimizer", "adam").factory is torch.optim.Adam


def test_a_plugin_registering_a_taken_name_is_reported_and_skipped_whole():
    def convbench_register_optimizers(register):
        register("mine", torch.optim.SGD)
        register("adam", torch.optim.SGD)  # already a built-in

    with pytest.warns(PluginProblemWarning, match="'adam' from plugin 'squatter'"):
        registry = load_registry(entry_points=False, extra_plugins=[
            ("squatter", plugin_module("squatter", convbench_register_optimizers=convbench_register_optimizers))])
    assert registry.get("optimizer", "adam").factory is torch.optim.Adam
    assert "mine" not in registry.names("optimizer")  # all or nothing per plugin and kind
    assert len(registry.problems) == 1


def test_a_plugin_whose_hook_raises_is_reported_and_the_rest_still_load():
    def convbench_register_models(register):
        raise RuntimeError("boom")

    def convbench_register_optimizers(register):
        register("fine", torch.optim.SGD)

    broken = plugin_module("broken", convbench_register_models=convbench_register_models,
                           convbench_register_optimizers=convbench_register_optimizers)
    with pytest.warns(PluginProblemWarning, match="plugin 'broken' skipped for models: RuntimeError: boom"):
        registry = load_registry(entry_points=False, extra_plugins=[("broken", broken)])
    assert "fine" in registry.names("optimizer")
    assert "softmax" in registry.names("model")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("Bad Name", {}, "name 'Bad Name' is invalid"),
        ("ok", {"interval": "hourly"}, "interval='hourly' is invalid; valid choices: epoch, step"),
        ("ok", {"every": "step"}, "unknown registration option 'every'"),
    ],
)
def test_invalid_registrations_are_reported(name, options, message):
    def convbench_register_schedulers(register):
        register(name, torch.optim.lr_scheduler.StepLR, **options)

    with pytest.warns(PluginProblemWarning, match=message):
        load_registry(entry_points=False, extra_plugins=[
            ("odd", plugin_module("odd", convbench_register_schedulers=convbench_register_schedulers))])


def test_scheduler_interval_defaults_to_epoch(builtins_only):
    assert builtins_only.get("scheduler", "step").options["interval"] == "epoch"


def test_entry_point_plugins_load_and_record_their_plugin(tmp_path, monkeypatch):
    install_entry_point(tmp_path, monkeypatch, "convbench_fakeplug", """
        import torch
        import convbench

        @convbench.hookimpl
        def convbench_register_optimizers(register):
            register("fake-sgd", torch.optim.SGD, description="third-party", defaults={"momentum": 0.5})
    """)
    monkeypatch.delenv("CONVBENCH_LOAD_PLUGINS", raising=False)
    component = load_registry().get("optimizer", "fake-sgd")
    assert component.plugin == "convbench_fakeplug"
    assert component.defaults == {"momentum": 0.5}


def test_load_plugins_env_var_limits_entry_points(tmp_path, monkeypatch):
    install_entry_point(tmp_path, monkeypatch, "convbench_fakeplug2", """
        import torch
        import convbench

        @convbench.hookimpl
        def convbench_register_optimizers(register):
            register("fake2", torch.optim.SGD)
    """)
    monkeypatch.setenv("CONVBENCH_LOAD_PLUGINS", "")
    assert "fake2" not in load_registry().names("optimizer")
    monkeypatch.setenv("CONVBENCH_LOAD_PLUGINS", "something-else, convbench_fakeplug2")
    assert "fake2" in load_registry().names("optimizer")


def test_a_plugin_failing_to_import_is_reported_not_fatal(tmp_path, monkeypatch):
    install_entry_point(tmp_path, monkeypatch, "convbench_broken_import", "raise ImportError('needs jax')\n")
    monkeypatch.delenv("CONVBENCH_LOAD_PLUGINS", raising=False)
    with pytest.warns(PluginProblemWarning,
                      match="'convbench_broken_import' .* failed to import: ImportError: needs jax"):
        registry = load_registry()
    assert "adam" in registry.names("optimizer")


EXITS_AT_IMPORT = """
    import sys

    sys.exit(3)
"""
EXITS_IN_A_HOOK = """
    import sys

    import convbench

    @convbench.hookimpl
    def convbench_register_models(register):
        sys.exit(3)
"""


@pytest.mark.parametrize(("source", "module", "warning"), [
    (EXITS_AT_IMPORT, "convbench_exits_at_import",
     "plugin 'convbench_exits_at_import' (convbench_exits_at_import) failed to import: SystemExit: sys.exit(3)"),
    (EXITS_IN_A_HOOK, "convbench_exits_in_a_hook", "plugin 'convbench_exits_in_a_hook' skipped for models: "
                                                   "SystemExit: sys.exit(3)"),
], ids=["at_import", "in_a_hook"])
def test_convbench_list_survives_a_plugin_that_calls_sys_exit(tmp_path, monkeypatch, capsys, source, module, warning):
    install_entry_point(tmp_path, monkeypatch, module, source)
    monkeypatch.delenv("CONVBENCH_LOAD_PLUGINS", raising=False)
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "  softmax  " in out and "  adam  " in out  # everything else is listed
    assert f"convbench: warning: {warning}" in err.splitlines()


def test_a_case_runs_beside_a_plugin_that_calls_sys_exit(tmp_path, monkeypatch):
    install_entry_point(tmp_path, monkeypatch, "convbench_exits_for_a_case", EXITS_IN_A_HOOK)
    monkeypatch.delenv("CONVBENCH_LOAD_PLUGINS", raising=False)
    reset_registry()  # the process-wide registry, which a case uses, loads the plugin afresh
    try:
        with pytest.warns(PluginProblemWarning, match=r"'convbench_exits_for_a_case' skipped for models: SystemExit"):
            result = run_case(Case(model="softmax", optimizer="sgd", lr=0.5, steps=2, eval_train_samples=100))
        assert result.steps == 2
    finally:
        reset_registry()


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, CaseTimeoutError])
def test_ctrl_c_and_a_case_time_limit_in_a_plugin_hook_are_not_the_plugin_problem(interruption):
    def convbench_register_models(register):
        raise interruption("stop")

    with pytest.raises(interruption):
        load_registry(entry_points=False, extra_plugins=[
            ("interrupted", plugin_module("interrupted", convbench_register_models=convbench_register_models))])


def test_a_factory_that_calls_sys_exit_fails_its_case_in_one_line():
    def quits(**kwargs):
        sys.exit("no GPU here")

    with pytest.raises(ConvbenchError, match=r"^model 'quitter' from plugin 'quitting' raised SystemExit: "
                                             r"sys.exit\('no GPU here'\) while being built$"):
        Component("model", "quitter", quits, plugin="quitting").build()
    with pytest.raises(KeyboardInterrupt):
        Component("model", "interrupted", lambda: (_ for _ in ()).throw(KeyboardInterrupt), plugin="p").build()


def test_build_rejects_unknown_kwargs_listing_valid_ones(builtins_only):
    sgd = builtins_only.get("optimizer", "sgd")
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ComponentArgumentError) as info:
        sgd.build({"momentun": 0.9}, context={"params": params, "lr": 0.1})
    message = str(info.value)
    assert message.startswith("optimizer 'sgd' does not accept 'momentun'; did you mean 'momentum'?")
    assert "valid arguments:" in message and "weight_decay" in message and "params" not in message.split(":")[-1]


def test_build_turns_rejected_values_into_one_line_errors(builtins_only):
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ComponentArgumentError, match=r"optimizer 'momentum' rejected lr=0.1, momentum=-1") as info:
        builtins_only.get("optimizer", "momentum").build({"momentum": -1}, context={"params": params, "lr": 0.1})
    assert "\n" not in str(info.value)


def test_build_merges_user_kwargs_over_registered_defaults(builtins_only):
    params = [torch.nn.Parameter(torch.zeros(2))]
    nesterov = builtins_only.get("optimizer", "nesterov")
    optimizer = nesterov.build({"momentum": 0.5}, context={"params": params, "lr": 0.1})
    assert optimizer.defaults["momentum"] == 0.5 and optimizer.defaults["nesterov"] is True


def test_optional_context_reaches_only_factories_that_accept_it():
    seen = {}

    def wants_total(optimizer, total_steps):
        seen["total_steps"] = total_steps
        return "ok"

    def plain(optimizer, gamma=0.5):
        return "ok"

    context = {"optimizer": object()}
    optional = {"total_steps": 42, "steps_per_epoch": 7}
    Component("scheduler", "a", wants_total, plugin="t").build({}, context=context, optional_context=optional)
    assert seen == {"total_steps": 42}
    # `plain` does not take total_steps; passing it would be a TypeError
    assert Component("scheduler", "b", plain, plugin="t").build({}, context=context, optional_context=optional) == "ok"


# Every hookspec, exercised by a third-party-style plugin: registered, found, built and used.
def _probe_dataset(size: int = 8):
    from convbench.data import DatasetSplits

    return DatasetSplits(train=(torch.zeros(size, 2), torch.zeros(size, dtype=torch.long)), num_outputs=2)


class _ProbeFigure(FigureKind):
    """a figure of how many runs there are"""

    def applies(self, records, options):
        return len(records) > 1


HOOK_PROBES = {
    "optimizer": (lambda params, lr: torch.optim.SGD(params, lr=lr),
                  lambda: {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1},
                  lambda built: isinstance(built, torch.optim.SGD) and built.defaults["lr"] == 0.1),
    "model": (lambda input_shape, num_outputs: torch.nn.Linear(input_shape[0], num_outputs),
              lambda: {"input_shape": (3,), "num_outputs": 2},
              lambda built: built.weight.shape == (2, 3)),
    "scheduler": (lambda optimizer: torch.optim.lr_scheduler.ConstantLR(optimizer, factor=0.5, total_iters=1),
                  lambda: {"optimizer": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)},
                  lambda built: built.get_last_lr() == [0.5]),
    "augmentation": (lambda: (lambda batch: batch + 1),
                     dict,
                     lambda built: torch.equal(built(torch.zeros(2)), torch.ones(2))),
    "dataset": (_probe_dataset, dict, lambda built: built.train[0].shape == (8, 2)),
    "figure": (_ProbeFigure, dict, lambda built: built.applies([{}, {}], FigureOptions())
               and not built.applies([{}], FigureOptions())),
}


def test_every_hookspec_has_a_probe():
    assert set(HOOK_PROBES) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_hookspec_registers_a_usable_component(kind):
    factory, context, check = HOOK_PROBES[kind]
    hook_name = f"convbench_register_{kind}s"

    def hook(register):
        register(f"probe-{kind}", factory, description=f"probe {kind}")

    registry = load_registry(builtins=False, entry_points=False,
                             extra_plugins=[("probe", plugin_module("probe", **{hook_name: hook}))])
    component = registry.get(kind, f"probe-{kind}")
    assert (component.plugin, component.description) == ("probe", f"probe {kind}")
    assert check(component.build({}, context=context()))


def test_effective_defaults_show_the_library_defaults_under_registered_ones(builtins_only):
    nesterov = builtins_only.get("optimizer", "nesterov").effective_defaults()
    assert nesterov["momentum"] == 0.9 and nesterov["nesterov"] is True  # registered presets win
    assert nesterov["dampening"] == 0 and nesterov["weight_decay"] == 0  # torch's own defaults
    assert "params" not in nesterov and "lr" not in nesterov  # context, not user settings
    assert "foreach" not in nesterov  # an implementation switch, not a setting of the method
    assert builtins_only.get("model", "tf_cnn").effective_defaults() == {
        "filters": (32, 64), "hidden": 1024, "dropout": 0.5}
