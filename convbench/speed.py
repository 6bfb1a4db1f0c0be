"""A case's speed options: reduced precision, the channels-last memory format and ``torch.compile``.

People train with mixed precision and compiled models, so a convergence study must be able to measure
them. Each option is a `Case` field (``precision``, ``channels_last``, ``compile``); this module checks
that the device can honour it and applies it, so that the engine's hot path holds only a context
manager and, for fp16, a gradient scaler.

What each option does, and what it never does silently:

- ``precision="fp32"`` (default): torch's own settings, untouched (IEEE fp32 matmuls; on CUDA torch
  lets cuDNN convolutions use TF32 by default, ``torch.backends.cudnn.conv.fp32_precision``).
- ``"bf16"`` / ``"fp16"``: forward pass and evaluation under ``torch.autocast`` with that dtype; the
  weights, gradients and optimizer state stay fp32. fp16 adds a ``torch.amp.GradScaler`` (skipped steps
  on overflow, as users run it). Both run on the CPU too (torch's CPU autocast has both dtypes since
  2.4, and a CPU gradient scaler), slowly where the CPU lacks native bf16/fp16 arithmetic. On CUDA, bf16
  needs a GPU with native bf16 (compute capability 8.0+): an older GPU is a one-line error, never an
  emulated run.
- ``"tf32"``: fp32 storage with TF32 tensor-core matmuls and convolutions (the new per-backend switches,
  ``fp32_precision = "tf32"``; put back after the case by `convbench.isolation`). Only CUDA GPUs of
  compute capability 8.0+ have TF32; anywhere else it is a one-line error.
- ``channels_last=True``: the model's weights and the device-resident images in NHWC order; for models
  with a 2-D convolution and 4-D (image) inputs only, else a one-line error.
- ``compile``: ``torch.compile`` of the model (``True`` is mode ``"default"``). The model is compiled
  before the training clock starts (`warm_up`), on a forward and backward pass whose effects are undone
  (weights, buffers, gradients and random streams are as they were), so that compilation is timed apart
  (``Timing.compile_s``) and training starts from the uncompiled run's state; ``Timing.first_step_s`` is
  the first training step's time. Compiled kernels may round differently, and inductor draws dropout
  masks its own way (unless ``torch._inductor.config.fallback_random``), so a compiled run is close to,
  not identical with, the uncompiled one. A failure to compile is a one-line `SpeedOptionError`.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from convbench.errors import CaseError, ConvbenchError
from convbench.speed_options import COMPILE_MODES as COMPILE_MODES
from convbench.speed_options import PRECISIONS as PRECISIONS
from convbench.speed_options import is_plain as is_plain

if TYPE_CHECKING:
    from convbench.case import Case
    from convbench.data import DatasetSplits

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: TF32 and native bf16 arrived with Ampere.
_AMPERE = (8, 0)


class SpeedOptionError(CaseError):
    """A speed option this machine, device or model cannot honour, or a model torch.compile cannot compile."""


# ----------------------------------------------------------------------------- device support
def check_device(precision: str, device: torch.device) -> None:
    """A one-line `SpeedOptionError` when ``device`` cannot run ``precision`` as asked."""
    if precision == "fp32":
        return
    if precision == "tf32":
        if device.type != "cuda":
            raise SpeedOptionError(f"precision='tf32' needs a CUDA GPU of compute capability 8.0+, but this case "
                                   f"runs on {device.type!r}; valid choices here: fp32, bf16, fp16")
        capability = torch.cuda.get_device_capability(device)
        if tuple(capability) < _AMPERE:
            raise SpeedOptionError(f"precision='tf32' needs compute capability 8.0+, but {_gpu_name(device)} has "
                                   f"{capability[0]}.{capability[1]}; valid choices here: fp32, fp16")
        return
    if not torch.amp.is_autocast_available(device.type):
        raise SpeedOptionError(f"precision={precision!r} needs torch.autocast, which torch {torch.__version__} "
                               f"lacks on {device.type!r}; valid choices here: fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        capability = torch.cuda.get_device_capability(device)
        raise SpeedOptionError(f"precision='bf16' needs a GPU with native bfloat16 (compute capability 8.0+), but "
                               f"{_gpu_name(device)} has {capability[0]}.{capability[1]}; "
                               "valid choices here: fp32, fp16")


def _gpu_name(device: torch.device) -> str:
    try:
        return repr(torch.cuda.get_device_name(device))
    except Exception:  # a name is only for the message
        return f"GPU {device}"


def check_images(input_shape: tuple[int, ...]) -> None:
    """channels_last is a layout of images: a one-line error for any other inputs."""
    if len(input_shape) != 3:
        raise SpeedOptionError(f"channels_last=True needs image inputs (channels, height, width), but the data set's "
                               f"inputs are shaped {tuple(input_shape)}; valid choices here: False")


def check_conv(model_name: str, module: torch.nn.Module) -> None:
    """channels_last is a layout for convolutions: a one-line error for a model without one."""
    if not any(isinstance(m, torch.nn.Conv2d) for m in module.modules()):
        raise SpeedOptionError(f"channels_last=True is for convolutional models, but model {model_name!r} has no "
                               "Conv2d layer; valid choices here: False")


# ----------------------------------------------------------------------------- applying the options
class Speed:
    """A case's speed options as the engine applies them to one run (one rank)."""

    def __init__(self, case: Case, device: torch.device) -> None:
        check_device(case.precision, device)
        self.case = case
        self.device = device
        self.precision = case.precision
        self.channels_last = case.channels_last
        self.compile_mode = case.compile
        dtype = _AUTOCAST_DTYPES.get(case.precision)
        #: The context a forward pass (training or evaluation) runs in. Attributes, not methods, as
        #: `backward` below: the training step calls both, and a method's extra frame is a measurable
        #: share of a small model's step (`python -m benchmarks --only harness`).
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            contextlib.nullcontext if dtype is None
            else lambda: torch.autocast(device_type=device.type, dtype=dtype))
        self.scaler: torch.amp.GradScaler | None = _scaler(device) if case.precision == "fp16" else None
        #: ``loss.backward()``, through the gradient scaler with fp16.
        self.backward: Callable[[torch.Tensor], None] = (
            torch.Tensor.backward if self.scaler is None else self._scaled_backward)

    def set_global_precision(self) -> None:
        """TF32 for this case's matmuls and convolutions; `convbench.isolation` puts the switches back."""
        if self.precision == "tf32":
            switch_tf32_on()

    def data(self, data: DatasetSplits) -> DatasetSplits:
        """The device-resident data in the case's memory format (images NHWC with channels_last)."""
        if not self.channels_last:
            return data
        check_images(data.input_shape)
        from dataclasses import replace

        def nhwc(split: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
            if split is None:
                return None
            return split[0].contiguous(memory_format=torch.channels_last), split[1]

        return replace(data, train=nhwc(data.train), val=nhwc(data.val), test=nhwc(data.test))

    def inputs(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What a training batch goes through after augmentation (an augmentation may return NCHW), or None."""
        if not self.channels_last:
            return None
        return lambda batch: batch.contiguous(memory_format=torch.channels_last)

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """The built model in the case's memory format (before DDP wraps it)."""
        if self.channels_last:
            check_conv(self.case.model, module)
            module = module.to(memory_format=torch.channels_last)
        return module

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` compiled (lazily: torch compiles on the first call, see `warm_up`), or as it is."""
        if not self.compile_mode:
            return model
        return torch.compile(model, mode=self.compile_mode)

    def optimizer_for_steps(self, optimizer: torch.optim.Optimizer) -> Any:
        """What `LRControl` steps: the optimizer, or with fp16 the optimizer stepped through the scaler."""
        return optimizer if self.scaler is None else ScaledOptimizer(optimizer, self.scaler)

    def _scaled_backward(self, loss: torch.Tensor) -> None:
        assert self.scaler is not None
        self.scaler.scale(loss).backward()


def _scaler(device: torch.device) -> torch.amp.GradScaler:
    """fp16's gradient scaler for ``device``; a one-line error where torch has none for it."""
    try:
        return torch.amp.GradScaler(device.type)
    except Exception as exc:  # a device type torch's scaler does not know
        raise SpeedOptionError(f"precision='fp16' needs a gradient scaler, which torch {torch.__version__} lacks on "
                               f"{device.type!r} ({type(exc).__name__}); valid choices here: fp32, bf16") from None


class ScaledOptimizer:
    """An optimizer whose ``step`` goes through a `torch.amp.GradScaler` (unscale, skip on inf/NaN, update);
    `LRControl` sees its ``param_groups`` as the optimizer's own, so warmup and schedulers work unchanged."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer = optimizer
        self.scaler = scaler

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)


# ----------------------------------------------------------------------------- compiling before the clock
def warm_up(speed: Speed, *, train_model: torch.nn.Module, eval_model: torch.nn.Module, module: torch.nn.Module,
            train_inputs: torch.Tensor, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            train_targets: torch.Tensor, eval_shapes: Iterator[torch.Tensor], device: torch.device) -> float:
    """Compile ``train_model`` (forward and backward of one training batch) and ``eval_model`` (one forward per
    evaluation batch shape) before training; the seconds it took. Everything the passes change is put back:
    gradients, buffers (BatchNorm statistics) and the random number generators (dropout); no optimizer steps.

    torch.compile compiles on a model's first call with each new input shape or mode, so without this the
    first training step and the first evaluation would hold the compilation, mixed into the clocks.
    """
    from convbench.clock import synchronize

    buffers = copy.deepcopy({name: b for name, b in module.named_buffers()})
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    started = time.perf_counter()
    try:
        was_training = module.training
        train_model.train()
        with speed.autocast():
            value = loss(train_model(train_inputs), train_targets)
        value.backward()
        eval_model.eval()
        with torch.no_grad(), speed.autocast():
            for batch in eval_shapes:
                eval_model(batch)
        train_model.train(was_training)
        eval_model.train(was_training)
        synchronize(device)
    except ConvbenchError:
        raise
    except Exception as exc:  # inductor, a C++ compiler, an unsupported op: one line, not pages
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SpeedOptionError(f"torch.compile(mode={speed.compile_mode!r}) failed for model {speed.case.model!r}: "
                               f"{type(exc).__name__}: {first}") from None
    seconds = time.perf_counter() - started
    for parameter in module.parameters():
        parameter.grad = None
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            buffer.copy_(buffers[name])
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    return seconds


def eval_batches(splits: dict[str, tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> Iterator[torch.Tensor]:
    """One evaluation batch of each shape the evaluator will use (full batches and each split's remainder)."""
    seen: set[int] = set()
    for inputs, _ in splits.values():
        n = inputs.shape[0]
        for size in (min(batch_size, n), n % batch_size):
            if size and size not in seen:
                seen.add(size)
                yield inputs[:size]


def switch_tf32_on() -> None:
    """TF32 matmuls and cuDNN convolutions, with the API this torch has: ``fp32_precision`` (torch 2.9 and
    later, where the older flags are deprecated) or ``allow_tf32`` (torch 2.4 to 2.8, which has no
    ``fp32_precision``: setting it raised AttributeError there)."""
    if _has_fp32_precision():
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _has_fp32_precision() -> bool:
    try:
        torch.backends.cuda.matmul.fp32_precision  # noqa: B018  (an attribute read decides the API)
    except AttributeError:
        return False
    return True
