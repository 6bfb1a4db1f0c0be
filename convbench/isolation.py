"""Global torch state a case may change, put back when the case ends, so that no case changes the next.

A model, optimizer or plugin can change process-wide torch settings (``torch.set_default_dtype``,
``torch.set_grad_enabled``, a global module hook, the thread count, ...). Cases run one after another in
the session's process and on the reused worker pool, so such a change would silently alter every later
case, or make it fail. `CaseIsolation` snapshots the settings in `SETTINGS` before a case is prepared and
puts back whatever differs when the case ends (`convbench.launch` in this process, `convbench.pool` in the
workers). Putting back only what differs keeps an untouched session untouched: torch refuses to report
some precision settings once the legacy and the new API have both been used, and setting one side it did
not need to would do that.

What cannot be put back (a leaked ``torch.inference_mode()``, a torch function mode left on the stack,
inter-op threads once parallel work has begun) is reported by name: a pool then replaces its workers
before the next case, and this process warns (`IsolationWarning`). Random number generators are not in
the list: every case seeds them itself before it builds anything (`convbench.components.seed_everything`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.modules.module as module_hooks
import torch.optim.optimizer as optimizer_hooks
import torch.utils.deterministic


class IsolationWarning(UserWarning):
    """A case changed global torch state that cannot be put back in this process."""


@dataclass(frozen=True)
class Setting:
    """One piece of process-wide state: how to read it, and how to put it back (None: it can only be checked)."""

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None] | None = None


class _Unreadable:
    """A value torch refused to report (it raises after mixed legacy and new precision APIs)."""

    def __repr__(self) -> str:
        return "<unreadable>"


UNREADABLE = _Unreadable()


def _attribute(owner: Any, name: str) -> Setting:
    """A setting that is an attribute of a torch module (``torch.backends.cudnn.benchmark``, ...)."""
    label = f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"
    return Setting(label, lambda: getattr(owner, name), lambda value: setattr(owner, name, value))


def _hooks(owner: Any, name: str) -> Setting:
    """A global hook registry (an ordered dict that torch reads by name): its entries are put back in place,
    so that torch's handles, which keep a reference to the dict, still remove what they registered."""
    def put_back(entries: list[tuple[int, Any]]) -> None:
        hooks: MutableMapping[int, Any] = getattr(owner, name)
        hooks.clear()
        hooks.update(entries)

    return Setting(f"{owner.__name__}.{name}", lambda: list(getattr(owner, name).items()), put_back)


def _default_device() -> torch.device | None:
    """The device set by ``torch.set_default_device`` (None: no default set, tensors go to the CPU)."""
    context = getattr(torch._GLOBAL_DEVICE_CONTEXT, "device_context", None)
    return None if context is None else context.device


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


def _set_anomaly(value: tuple[bool, bool]) -> None:
    torch.set_anomaly_enabled(value[0], value[1])


def _fp32_precision(backend: str, op: str) -> Setting:
    """torch's newer per-backend precision setting (``torch.backends.cuda.matmul.fp32_precision`` and kin)."""
    return Setting(f"fp32_precision[{backend}.{op}]", lambda: torch._C._get_fp32_precision_getter(backend, op),
                   lambda value: torch._C._set_fp32_precision_setter(backend, op, value))


def _switch(name: str, owner: Any, getter: str, setter: str | None = None, unpack: bool = False) -> Setting:
    """A setting behind functions of ``owner`` (``torch._C``, ...), looked up when used: a torch older than
    the one that added them reads them as unreadable, never restored, instead of failing on import."""
    def put_back(value: Any) -> None:
        assert setter is not None
        function = getattr(owner, setter)
        if unpack:
            function(*value)
        else:
            function(value)

    return Setting(name, lambda: getattr(owner, getter)(), None if setter is None else put_back)


def _cublas(switch: str, unpack: bool = False) -> Setting:
    return _switch(f"torch.backends.cuda.matmul.{switch}", torch._C, f"_get_cublas_{switch}", f"_set_cublas_{switch}",
                   unpack)


def _sdp(kind: str) -> Setting:
    return _switch(f"torch.backends.cuda.{kind}_sdp_enabled", torch.backends.cuda, f"{kind}_sdp_enabled",
                   f"enable_{kind}_sdp")


#: Everything a case is isolated from, in the order it is put back: the legacy precision switches before
#: the newer per-backend ones that they also set, the default device before the function-mode stack it uses.
SETTINGS: tuple[Setting, ...] = (
    Setting("default dtype", torch.get_default_dtype, torch.set_default_dtype),
    Setting("default device", _default_device, torch.set_default_device),
    Setting("grad mode", torch.is_grad_enabled, torch.set_grad_enabled),
    Setting("inference mode", torch.is_inference_mode_enabled),
    _switch("torch function modes", torch._C, "_len_torch_function_stack"),
    Setting("num threads", torch.get_num_threads, torch.set_num_threads),
    Setting("num interop threads", torch.get_num_interop_threads, torch.set_num_interop_threads),
    Setting("deterministic algorithms",
            lambda: (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled()), _set_deterministic),
    _attribute(torch.utils.deterministic, "fill_uninitialized_memory"),
    Setting("anomaly detection", lambda: (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()),
            _set_anomaly),
    _switch("autograd multithreading", torch._C, "_is_multithreading_enabled", "_set_multithreading_enabled"),
    _attribute(torch.backends.cudnn, "enabled"),
    _attribute(torch.backends.cudnn, "benchmark"),
    _attribute(torch.backends.cudnn, "benchmark_limit"),
    _attribute(torch.backends.cudnn, "deterministic"),
    _attribute(torch.backends.cudnn, "allow_tf32"),
    _attribute(torch.backends.mkldnn, "enabled"),
    Setting("float32 matmul precision", torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    _cublas("allow_tf32"),
    _cublas("allow_fp16_reduced_precision_reduction", unpack=True),
    _cublas("allow_bf16_reduced_precision_reduction", unpack=True),
    _cublas("allow_fp16_accumulation"),
    *(_fp32_precision(backend, op) for backend, op in (
        ("generic", "all"), ("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn"),
        ("mkldnn", "matmul"), ("mkldnn", "conv"), ("mkldnn", "rnn"))),
    *(_sdp(kind) for kind in ("flash", "mem_efficient", "math", "cudnn")),
    *(_hooks(module_hooks, name) for name in (
        "_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_with_kwargs",
        "_global_forward_hooks_always_called", "_global_backward_pre_hooks", "_global_backward_hooks",
        "_global_module_registration_hooks", "_global_parameter_registration_hooks",
        "_global_buffer_registration_hooks")),
    _attribute(module_hooks, "_global_is_full_backward_hook"),
    *(_hooks(optimizer_hooks, name) for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")),
)


def _read(setting: Setting) -> Any:
    try:
        return setting.get()
    except Exception:  # torch refuses to report it in this state; it still counts as a value
        return UNREADABLE


def capture(settings: tuple[Setting, ...] = SETTINGS) -> dict[str, Any]:
    """The current value of every setting, by name."""
    return {setting.name: _read(setting) for setting in settings}


def restore(saved: Mapping[str, Any], settings: tuple[Setting, ...] = SETTINGS) -> list[str]:
    """Put back every setting that differs from ``saved``; the names of those that still differ afterwards.

    A setting torch would not report when it was saved is left as it is.
    """
    for setting in settings:
        value = saved[setting.name]
        if setting.set is None or value is UNREADABLE or _read(setting) == value:
            continue
        with contextlib.suppress(Exception):  # e.g. inter-op threads once parallel work began: reported below
            setting.set(value)
    now = capture(settings)
    return [name for name, value in saved.items() if value is not UNREADABLE and now[name] != value]


class CaseIsolation:
    """Global torch state saved when a case starts, put back once when it ends (`end`).

    Used around preparing and running every case: in this process by `convbench.launch`, in each pool
    worker by `convbench.pool`.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._saved: dict[str, Any] | None = capture()

    def end(self) -> list[str]:
        """Put the saved state back (once; later calls do nothing); the names of settings that could not be."""
        if self._saved is None:
            return []
        saved, self._saved = self._saved, None
        return restore(saved)

    def end_in_this_process(self) -> None:
        """`end`, and warn about what could not be put back: this process cannot start afresh."""
        unrestored = self.end()
        if unrestored:
            warnings.warn(f"{self.what} changed global torch state that cannot be put back ({', '.join(unrestored)}); "
                          "later cases in this process see it", IsolationWarning, stacklevel=3)
