"""The component registry: every optimizer, model, scheduler, augmentation, dataset and report figure by name.

Modelled on timm's registries (frozen metadata records, lower-case names, listing with a filter) and
simonw/llm's plugin loading (built-in plugin modules first, then the ``convbench`` entry points, an
environment variable to limit which load, a plugin that fails to import reported rather than fatal).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

import pluggy

from convbench import hookspecs
from convbench.errors import (
    CaseTimeoutError,
    ComponentArgumentError,
    ConvbenchError,
    DuplicateComponentError,
    PluginProblemWarning,
    UnknownComponentError,
    choices_hint,
)
from convbench.schedule import INTERVALS

#: kind -> hook name. The order is the order `convbench list` prints.
HOOKS: Mapping[str, str] = MappingProxyType(
    {
        "optimizer": "convbench_register_optimizers",
        "model": "convbench_register_models",
        "scheduler": "convbench_register_schedulers",
        "augmentation": "convbench_register_augmentations",
        "dataset": "convbench_register_datasets",
        "figure": "convbench_register_figures",
    }
)
KINDS: tuple[str, ...] = tuple(HOOKS)
#: The report's figure kinds (`convbench.report.figures.FigureKind`): registered like the training components,
#: but loaded on their own by `convbench report` (`get_figure_registry`), which needs no torch.
FIGURE = "figure"

#: Options `register` accepts per kind, beyond description and defaults, with their valid values.
KIND_OPTIONS: Mapping[str, Mapping[str, tuple[Any, ...]]] = MappingProxyType(
    {"scheduler": {"interval": INTERVALS}}
)

#: Arguments the engine passes itself (see `convbench.hookspecs`); never user defaults.
CONTEXT_NAMES = ("params", "lr", "input_shape", "num_outputs", "optimizer", "steps_per_epoch", "total_steps",
                 "epochs", "root", "download")

#: torch optimizer arguments that change how, not what, is computed: left out of listed defaults.
IMPLEMENTATION_SWITCHES = ("foreach", "capturable", "differentiable", "fused")

#: The built-in plugin module of each kind; it registers through the same hook a third-party package uses.
BUILTIN_PLUGIN_OF: Mapping[str, str] = MappingProxyType(
    {
        "optimizer": "convbench_plugins.optimizers",
        "model": "convbench_plugins.models",
        "scheduler": "convbench_plugins.schedulers",
        "augmentation": "convbench_plugins.augmentations",
        "dataset": "convbench_plugins.datasets",
        "figure": "convbench_plugins.figures",
    }
)
BUILTIN_PLUGINS: tuple[str, ...] = tuple(BUILTIN_PLUGIN_OF.values())
ENTRY_POINT_GROUP = "convbench"
LOAD_PLUGINS_ENV = "CONVBENCH_LOAD_PLUGINS"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

#: What plugin code may raise that is not the plugin's problem: the user pressed Ctrl-C, or the case's time
#: is up (`convbench.time_limit`: and a registry that skipped a plugin for it must not be cached). Anything
#: else a plugin raises while it is imported or registers, ``SystemExit`` from ``sys.exit`` included, is
#: the plugin's problem: it is skipped and reported, and the session goes on.
_NOT_THE_PLUGINS_FAULT = (KeyboardInterrupt, CaseTimeoutError)


def _describe(exc: BaseException) -> str:
    """"ImportError: needs jax"; "SystemExit: sys.exit(3)" for an exit, which has no message of its own."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Component:
    """One registered component: how to build it and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def accepted_kwargs(self, context: Iterable[str] = ()) -> list[str] | None:
        """Keyword arguments a user may set, or None when the factory takes ``**kwargs``."""
        params = _signature_params(self.factory)
        if params is None or any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        skip = set(context)
        return [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip
        ]

    def effective_defaults(self, context: Iterable[str] = CONTEXT_NAMES) -> dict[str, Any]:
        """What a case gets without kwargs: the factory's own defaults, overlaid by the registered ones."""
        skip = set(context) | set(IMPLEMENTATION_SWITCHES)
        own = {
            p.name: p.default
            for p in _signature_params(self.factory) or ()
            if p.default is not p.empty and p.name not in skip
        }
        return {**own, **self.defaults}

    def check_kwargs(self, kwargs: Mapping[str, Any], context: Iterable[str] = ()) -> None:
        """A one-line `ComponentArgumentError` for keyword arguments the factory does not take (before
        anything is built: the case check at collection calls it without data)."""
        accepted = self.accepted_kwargs(context)
        if accepted is None:
            return
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ComponentArgumentError(
                f"{self.kind} {self.name!r} does not accept {', '.join(repr(u) for u in unknown)}; "
                + choices_hint(unknown[0], accepted).replace("valid choices", "valid arguments")
            )

    def build(
        self,
        kwargs: Mapping[str, Any] | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        optional_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call the factory with context arguments and the user's kwargs over the defaults.

        ``optional_context`` entries are passed only to factories whose signature names them, so that a plain
        ``torch.optim.lr_scheduler.StepLR`` and a wrapper that needs ``total_steps`` register alike.
        Unknown kwargs and arguments the factory rejects become one-line `ComponentArgumentError`s.
        """
        context = dict(context or {})
        merged = {**self.defaults, **(kwargs or {})}
        self.check_kwargs(merged, context)
        named = {p.name for p in _signature_params(self.factory) or ()}
        for key, value in (optional_context or {}).items():
            # named explicitly: a factory's **kwargs usually forwards to a class that would choke on it
            if key in named and key not in merged:
                context[key] = value
        try:
            return self.factory(**context, **merged)
        except _NOT_THE_PLUGINS_FAULT:
            raise
        except (TypeError, ValueError) as exc:
            scalars = {k: v for k, v in context.items() if isinstance(v, (int, float, str, bool))}
            shown = ", ".join(f"{k}={v!r}" for k, v in {**scalars, **merged}.items()) or "no arguments"
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ComponentArgumentError(
                f"{self.kind} {self.name!r} rejected {shown}: {first_line}"
            ) from exc
        except Exception:  # a bug in the factory: its own traceback tells it
            raise
        except BaseException as exc:  # sys.exit in a factory: this case fails, the session goes on
            raise ConvbenchError(f"{self.kind} {self.name!r} from plugin {self.plugin!r} raised {_describe(exc)} "
                                 "while being built") from exc


def _signature_params(factory: Callable[..., Any]) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None


class Registry:
    """Components by kind and name. Built by `load_registry`; read-only for everyone else."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self.problems: list[str] = []
        self.plugins: list[str] = []

    def add(self, component: Component) -> None:
        if component.kind not in self._components:
            raise ConvbenchError(f"unknown component kind {component.kind!r}; " + choices_hint(component.kind, KINDS))
        existing = self._components[component.kind].get(component.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{component.kind} {component.name!r} from plugin {component.plugin!r} is already "
                f"registered by plugin {existing.plugin!r}"
            )
        self._components[component.kind][component.name] = component

    def add_all(self, components: Iterable[Component]) -> None:
        """Add several components, or none of them if any is a duplicate."""
        components = list(components)
        trial = Registry()
        for kind in KINDS:
            trial._components[kind] = dict(self._components[kind])
        for component in components:
            trial.add(component)
        for component in components:
            self.add(component)

    def get(self, kind: str, name: str) -> Component:
        if kind not in self._components:
            raise UnknownComponentError(f"unknown component kind {kind!r}; " + choices_hint(kind, KINDS))
        try:
            return self._components[kind][name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {kind} {name!r}; " + choices_hint(name, self._components[kind])
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.get_kind(kind))

    def get_kind(self, kind: str) -> Mapping[str, Component]:
        if kind not in self._components:
            raise UnknownComponentError(f"unknown component kind {kind!r}; " + choices_hint(kind, KINDS))
        return MappingProxyType(self._components[kind])

    def components(self, kind: str | None = None, pattern: str | None = None) -> list[Component]:
        """All components, optionally of one kind and with a name containing ``pattern``."""
        kinds = KINDS if kind is None else (kind,)
        found = []
        for k in kinds:
            for name in sorted(self.get_kind(k)):
                if pattern is None or pattern.lower() in name:
                    found.append(self._components[k][name])
        return found


def _make_register(kind: str, plugin: str, staged: list[Component]) -> hookspecs.Register:
    allowed = KIND_OPTIONS.get(kind, {})

    def register(
        name: str,
        factory: Callable[..., Any],
        *,
        description: str = "",
        defaults: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConvbenchError(
                f"{kind} name {name!r} is invalid: use lower-case letters, digits, '_', '-' or '.'"
            )
        if not callable(factory):
            raise ConvbenchError(f"{kind} {name!r}: factory {factory!r} is not callable")
        for key, value in options.items():
            if key not in allowed:
                raise ConvbenchError(
                    f"{kind} {name!r}: unknown registration option {key!r}; "
                    + choices_hint(key, allowed)
                )
            if value not in allowed[key]:
                raise ConvbenchError(
                    f"{kind} {name!r}: {key}={value!r} is invalid; valid choices: "
                    + ", ".join(map(str, allowed[key]))
                )
        full_options = {k: v[0] for k, v in allowed.items()} | options
        staged.append(
            Component(
                kind=kind,
                name=name,
                factory=factory,
                plugin=plugin,
                description=description or (inspect.getdoc(factory) or "").split("\n")[0],
                defaults=MappingProxyType(dict(defaults or {})),
                options=MappingProxyType(full_options),
            )
        )

    return register


def _entry_points_to_load(problems: list[str]) -> list[tuple[str, object]]:
    """Import the ``convbench`` entry points that ``CONVBENCH_LOAD_PLUGINS`` allows."""
    wanted_env = os.environ.get(LOAD_PLUGINS_ENV)
    wanted = None if wanted_env is None else {w.strip() for w in wanted_env.split(",") if w.strip()}
    loaded = []
    seen: set[str] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(ep.name)
        if wanted is not None and ep.name not in wanted:
            continue
        try:
            loaded.append((ep.name, ep.load()))
        except _NOT_THE_PLUGINS_FAULT:
            raise
        except BaseException as exc:  # a broken third-party plugin must not break the session, sys.exit included
            problems.append(f"plugin {ep.name!r} ({ep.value}) failed to import: {_describe(exc)}")
    return loaded


def load_registry(
    *,
    builtins: bool = True,
    entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    kinds: Iterable[str] | None = None,
) -> Registry:
    """Build a registry from the built-ins, the entry points and any extra (name, module) plugins.

    ``kinds`` limits it to those kinds (default: all): only their hooks are called and only their
    built-in modules imported, so that the report's figures load without the training components.

    Each plugin's registrations are applied all or nothing: a plugin whose hook raises, or that
    registers a name another plugin already has, is reported in `Registry.problems` (and warned
    about) and its registrations for that kind are skipped. Earlier plugins win, so a third-party
    package cannot silently replace a built-in.
    """
    wanted = KINDS if kinds is None else tuple(kinds)
    for kind in wanted:
        if kind not in HOOKS:
            raise ConvbenchError(f"unknown component kind {kind!r}; " + choices_hint(kind, KINDS))
    registry = Registry()
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    plugins: list[tuple[str, object]] = []
    if builtins:
        plugins += [(BUILTIN_PLUGIN_OF[kind], importlib.import_module(BUILTIN_PLUGIN_OF[kind])) for kind in KINDS
                    if kind in wanted]
    if entry_points:
        plugins += _entry_points_to_load(registry.problems)
    plugins += list(extra_plugins)

    for name, plugin in plugins:
        try:
            pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            registry.problems.append(f"plugin {name!r} is invalid: {exc}")
            continue
        registry.plugins.append(name)

    for name in registry.plugins:
        plugin = pm.get_plugin(name)
        others = [p for p in pm.get_plugins() if p is not plugin]
        for kind, hook_name in HOOKS.items():
            if kind not in wanted:
                continue
            caller = pm.subset_hook_caller(hook_name, remove_plugins=others)
            staged: list[Component] = []
            try:
                caller(register=_make_register(kind, name, staged))
                registry.add_all(staged)
            except _NOT_THE_PLUGINS_FAULT:
                raise
            except BaseException as exc:
                message = str(exc) if isinstance(exc, ConvbenchError) else _describe(exc)
                registry.problems.append(f"plugin {name!r} skipped for {kind}s: {message}")
    for problem in registry.problems:
        warnings.warn(problem, PluginProblemWarning, stacklevel=2)
    return registry


_registry: Registry | None = None
_figure_registry: Registry | None = None
#: conftest.py files of the running pytest session that implement convbench hooks: name -> module.
#: The pytest plugin adds them; multi-process cases send (name, file) pairs to their workers.
_conftest_plugins: dict[str, ModuleType] = {}


def get_registry() -> Registry:
    """The process-wide registry, built on first use (no import-time side effects)."""
    global _registry
    if _registry is None:
        _registry = load_registry(extra_plugins=list(_conftest_plugins.items()))
    return _registry


def get_figure_registry() -> Registry:
    """The figure kinds: those of the process-wide registry when it is built (a pytest session's, with its
    conftest plugins), else a registry of the figure kinds alone, built on first use without torch."""
    global _figure_registry
    if _registry is not None:
        return _registry
    if _figure_registry is None:
        _figure_registry = load_registry(kinds=(FIGURE,), extra_plugins=list(_conftest_plugins.items()))
    return _figure_registry


def add_conftest_plugin(name: str, module: ModuleType) -> None:
    """Make a conftest.py's convbench hooks part of the process-wide registry, like an installed plugin.

    A test folder can then declare its own models or datasets without packaging them.
    """
    if _conftest_plugins.get(name) is not module:
        _conftest_plugins[name] = module
        reset_registry()


def clear_conftest_plugins() -> None:
    """Forget the session's conftest plugins (the session ended)."""
    if _conftest_plugins:
        _conftest_plugins.clear()
        reset_registry()


def conftest_plugin_files() -> tuple[tuple[str, str], ...]:
    """(name, file) of each conftest plugin, for worker processes to import the same ones."""
    return tuple((name, str(module.__file__)) for name, module in _conftest_plugins.items())


def use_conftest_plugin_files(plugins: Iterable[tuple[str, str]]) -> None:
    """In a worker: import the session's conftest plugins by file, as the session has them."""
    for name, file in plugins:
        if name not in _conftest_plugins:
            module_name = "convbench_conftest_" + re.sub(r"\W", "_", name)
            spec = importlib.util.spec_from_file_location(module_name, file)
            if spec is None or spec.loader is None:
                raise ConvbenchError(f"cannot import the conftest plugin {name!r} from {file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
            spec.loader.exec_module(module)
            add_conftest_plugin(name, module)


def reset_registry() -> None:
    """Forget the process-wide registry, so the next `get_registry` reloads the plugins."""
    global _registry, _figure_registry
    _registry = _figure_registry = None
