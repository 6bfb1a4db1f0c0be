"""`Case`: the frozen, validated description of one training run, and `grid` to parametrize suites.

A case holds the settings as published (the "full" scale). CPU-sized settings for quick runs are
declared next to them, in the case's ``scales`` mapping, and applied in one place, `Case.at_scale`,
which the `convergence` fixture calls with the session's ``--convbench-scale``. Put the ``scales`` on a
suite's base case and every case `grid` derives from it inherits them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from convbench import speed_options as speed
from convbench.errors import CaseError, choices_hint


def __tracebackhide__(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """pytest hides this module's frames (the dataclass's generated ``__init__`` included) from a
    `CaseError`'s traceback: an invalid case in a suite is reported at the suite's line that declares
    it, with the one-line message, not through the validation code. Other errors keep every frame."""
    return excinfo.errisinstance(CaseError)

SCALES: tuple[str, ...] = ("quick", "full")
DEFAULT_SCALE = "quick"
TARGET_SPLITS: tuple[str, ...] = ("auto", "train", "val", "test")
#: strong: the case's batch is the global batch, split over the ranks; weak: every rank takes the batch.
SCALINGS: tuple[str, ...] = ("strong", "weak")

AugmentationSpec = tuple[str, Mapping[str, Any]]


def format_number(value: Any) -> str:
    """Short, id-friendly numbers: 0.5 -> '0.5', 0.001 -> '1e-3', 100 -> '100'."""
    if isinstance(value, (list, tuple)):  # (32, 64) -> '32,64': no spaces or brackets in ids
        return ",".join(format_number(item) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.6e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Case:
    """Everything that determines one run: components, their kwargs, budget, seed, device, targets.

    ``batch_size=None`` means full-batch gradient descent. Give exactly one of ``epochs`` (may be
    fractional) and ``steps``. ``eval_every`` is in steps; by default convbench evaluates once per
    epoch (at least 4 and at most 50 times per run), plus before the first and after the last step.
    ``eval_train_samples``: the train split's metrics are measured on a fixed subset of this size.
    ``divergence_factor``: a run whose smoothed train loss exceeds this multiple of its first loss,
    or that produces NaN/Inf, is stopped and reported as diverged.
    """

    model: str
    optimizer: str
    lr: float
    dataset: str = "mnist-5k"
    batch_size: int | None = 100
    epochs: float | None = None
    steps: int | None = None
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    optimizer_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scheduler: str | None = None
    scheduler_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    augmentations: tuple[AugmentationSpec, ...] = ()
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0
    seed: int = 0
    shuffle: bool = True
    world_size: int = 1
    scaling: str = "strong"
    device: str = "auto"
    # speed options (convbench.speed): autocast precision, NHWC memory format, torch.compile (True or a mode)
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool | str = False
    eval_every: int | None = None
    eval_batch_size: int = 500
    eval_train_samples: int | None = 1_000  # was 10_000: see convbench.evaluation.MIN_EVALS
    target_accuracy: float | None = None
    target_loss: float | None = None
    target_split: str = "auto"
    stop_at_target: bool = False
    divergence_factor: float = 10.0
    max_curve_points: int = 500
    scales: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    label: str | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Case:
        # Catch misspelt fields here: the dataclass __init__ would raise a bare TypeError.
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in valid:
                raise CaseError(f"Case has no field {key!r}; " + choices_hint(key, valid))
        return super().__new__(cls)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("model_kwargs", "optimizer_kwargs", "dataset_kwargs", "scheduler_kwargs"):
            set_(self, name, _frozen_mapping(name, getattr(self, name)))
        set_(self, "augmentations", _normalize_augmentations(self.augmentations))
        set_(self, "scales", _normalize_scales(self.scales))
        if isinstance(self.lr, int) and not isinstance(self.lr, bool):
            set_(self, "lr", float(self.lr))
        set_(self, "compile", speed.normalize_compile(self.compile))  # True -> "default"
        self._validate()
        for scale in self.scales:  # a scale's overrides are checked now, not when a run at that scale starts
            try:
                dataclasses.replace(self, scales={}, **self._scale_overrides(scale))
            except CaseError as exc:
                raise CaseError(f"at scale {scale!r}: {exc}") from None

    def _validate(self) -> None:
        for name in ("model", "optimizer", "dataset"):
            self._check(isinstance(getattr(self, name), str) and bool(getattr(self, name)), name,
                        "a non-empty name")
        if "lr" in self.optimizer_kwargs:
            raise CaseError(
                f"set the learning rate with Case.lr, not optimizer_kwargs['lr']={self.optimizer_kwargs['lr']!r}"
            )
        self._check(self.scheduler is None or (isinstance(self.scheduler, str) and self.scheduler),
                 "scheduler", "a name or None")
        self._check(_is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0, "lr", "a positive number")
        self._check(self.batch_size is None or _is_positive_int(self.batch_size), "batch_size",
                 "a positive integer, or None for full-batch gradient descent")
        if (self.epochs is None) == (self.steps is None):
            raise CaseError(
                f"give exactly one of epochs and steps (got epochs={self.epochs!r}, steps={self.steps!r})"
            )
        self._check(self.epochs is None or (_is_number(self.epochs) and self.epochs > 0), "epochs",
                 "a positive number")
        self._check(self.steps is None or _is_positive_int(self.steps), "steps", "a positive integer")
        self._check(isinstance(self.warmup_steps, int) and not isinstance(self.warmup_steps, bool)
                    and self.warmup_steps >= 0, "warmup_steps", "a non-negative integer")
        self._check(_is_number(self.warmup_start_factor) and 0 <= self.warmup_start_factor <= 1,
                    "warmup_start_factor", "a number in [0, 1]")
        self._check(isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0,
                 "seed", "a non-negative integer")
        self._check(isinstance(self.shuffle, bool), "shuffle", "True or False")
        self._check(_is_positive_int(self.world_size), "world_size", "a positive integer")
        if self.scaling not in SCALINGS:
            raise CaseError(f"scaling={self.scaling!r} is invalid; " + choices_hint(str(self.scaling), SCALINGS))
        if self.scaling == "strong" and self.batch_size is not None and self.batch_size < self.world_size:
            raise CaseError(
                f"invalid batch_size={self.batch_size} for world_size={self.world_size} with strong scaling: every "
                "rank needs at least one sample; use a larger batch or scaling='weak'")
        self._check(isinstance(self.device, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device)
                    is not None, "device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.world_size > 1 and self.device not in ("auto", "cpu", "cuda"):
            # each rank takes its own GPU (rank r: cuda:r); one named device cannot serve them all
            raise CaseError(f"device={self.device!r} cannot be shared by world_size={self.world_size} ranks; valid "
                            "choices for a multi-device case: 'auto', 'cuda' (one GPU per rank) or 'cpu' (gloo)")
        speed.check_fields(self.precision, self.channels_last)  # speed options
        self._check(self.eval_every is None or _is_positive_int(self.eval_every), "eval_every",
                 "a positive number of steps or None")
        self._check(_is_positive_int(self.eval_batch_size), "eval_batch_size", "a positive integer")
        self._check(self.eval_train_samples is None or _is_positive_int(self.eval_train_samples),
                 "eval_train_samples", "a positive integer or None for the whole training set")
        self._check(self.target_accuracy is None or (_is_number(self.target_accuracy)
                 and 0 < self.target_accuracy <= 1), "target_accuracy", "a number in (0, 1]")
        self._check(self.target_loss is None or (_is_number(self.target_loss) and self.target_loss >= 0),
                 "target_loss", "a non-negative number")
        if self.target_split not in TARGET_SPLITS:
            raise CaseError(
                f"target_split={self.target_split!r} is invalid; " + choices_hint(self.target_split, TARGET_SPLITS)
            )
        self._check(isinstance(self.stop_at_target, bool), "stop_at_target", "True or False")
        self._check(_is_number(self.divergence_factor) and self.divergence_factor > 1, "divergence_factor",
                 "a number above 1")
        self._check(_is_positive_int(self.max_curve_points) and self.max_curve_points >= 2, "max_curve_points",
                 "an integer of at least 2")
        self._check(self.label is None or (isinstance(self.label, str) and self.label), "label",
                 "a non-empty string or None")

    def _check(self, ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise CaseError(f"invalid {name}={getattr(self, name)!r}: expected {expected}")

    # ----------------------------------------------------------------------------- derived views
    @property
    def id(self) -> str:
        """Readable pytest id, e.g. ``softmax-sgd-lr0.5-bs100``."""
        if self.label:
            return self.label
        tokens = [_token(name, getattr(self, name)) for name in _ID_FIELDS if _in_id(self, name)]
        tokens += [_token(name, getattr(self, name)) for name in _SHOWN_WHEN_SET
                   if getattr(self, name) != _DEFAULTS[name]]
        return "-".join(token for token in tokens if token)

    def at_scale(self, scale: str) -> Case:
        """This case with the overrides of scale profile ``scale`` applied."""
        if scale not in SCALES:
            raise CaseError(f"unknown scale {scale!r}; " + choices_hint(scale, SCALES))
        return dataclasses.replace(self, **self._scale_overrides(scale))

    def _scale_overrides(self, scale: str) -> dict[str, Any]:
        overrides = dict(self.scales.get(scale, {}))
        if self.label is None:
            overrides["label"] = self.id  # a case keeps its pytest id at every scale
        if "steps" in overrides and "epochs" not in overrides:
            overrides["epochs"] = None
        if "epochs" in overrides and "steps" not in overrides:
            overrides["steps"] = None
        return overrides

    def replace(self, **changes: Any) -> Case:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (no tuples, no mapping proxies)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def param(self, *marks: Any) -> Any:
        """This case as a ``pytest.param`` with its id."""
        return pytest.param(self, id=self.id, marks=marks)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))


_ID_FIELDS = ("model", "optimizer", "lr", "batch_size", "world_size")
#: Configuration fields an id shows when a case sets them (differs from the default), after `_ID_FIELDS`,
#: so that two cases declared apart (``.param()``) that differ only there get different ids. The data set
#: and the budget are not among them (the cases of a study share them, and a scale changes them); two
#: collected cases that still share an id are a collection error (`convbench.pytest_plugin`).
_SHOWN_WHEN_SET = ("model_kwargs", "optimizer_kwargs", "dataset_kwargs", "scheduler", "scheduler_kwargs",
                   "augmentations", "warmup_steps", "scaling", "shuffle",
                   "precision", "channels_last", "compile",  # speed options
                   "seed")


_DEFAULTS = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
             for f in dataclasses.fields(Case)}


def _in_id(case: Case, name: str) -> bool:
    return name != "world_size" or case.world_size != 1


def grid(base: Case, **axes: Iterable[Any]) -> list[Any]:
    """``pytest.param`` cases for the cartesian product of ``axes`` applied to ``base``.

    Ids start with the base id fields (model, optimizer, lr, batch size) and add a token for each
    other axis, e.g. ``grid(base, optimizer=["sgd", "adam"], lr=[0.1, 0.5],
    optimizer_kwargs=[{"momentum": 0.9}])`` gives ``softmax-sgd-lr0.1-bs100-momentum0.9`` and so on.
    """
    valid = [f.name for f in dataclasses.fields(Case)]
    for name in axes:
        if name not in valid:
            raise CaseError(f"grid axis {name!r} is not a Case field; " + choices_hint(name, valid))
    names = list(axes)
    values = [list(v) for v in axes.values()]
    for name, options in zip(names, values, strict=True):
        if not options:
            raise CaseError(f"grid axis {name!r} has no values")
    params, seen = [], {}
    for combo in itertools.product(*values):
        case = base.replace(**dict(zip(names, combo, strict=True)))
        if case.label is None:
            shown = case.id
            extra = [_token(n, v) for n, v in zip(names, combo, strict=True) if n not in _ID_FIELDS]
            case_id = "-".join([shown, *[e for e in extra if e and not _in_case_id(e, shown)]])
        else:
            case_id = case.label
        if case_id in seen:
            raise CaseError(f"grid gives two cases the id {case_id!r}; give the axes distinct values")
        seen[case_id] = case
        params.append(pytest.param(case.replace(label=case_id), id=case_id))
    return params


# --------------------------------------------------------------------------------- helpers
def _in_case_id(token: str, case_id: str) -> bool:
    """Whether ``case_id`` shows ``token`` already (each of its ``-`` parts, as whole parts)."""
    parts = case_id.split("-")
    return all(part in parts for part in token.split("-"))


def _token(name: str, value: Any) -> str:
    if name == "lr":
        return f"lr{format_number(value)}"
    if name == "batch_size":
        return "bsfull" if value is None else f"bs{value}"
    if name == "world_size":
        return f"w{value}"
    if name in ("model", "optimizer", "dataset", "scheduler", "label"):
        return str(value) if value is not None else f"no{name}"
    if name.endswith("_kwargs"):
        return "-".join(f"{k}{format_number(v)}" for k, v in dict(value).items())
    if name == "scaling":
        return str(value)
    if name == "shuffle":
        return "shuffled" if value else "fixed-order"
    if name == "warmup_steps":
        return f"warmup{value}"
    if name in ("precision", "channels_last", "compile"):  # speed options
        return "-".join(speed.id_tokens(**{"compile_mode" if name == "compile" else name: value}))
    if name == "augmentations":
        return "+".join(n for n, _ in _normalize_augmentations(value)) or "noaug"
    short = {"epochs": "ep", "seed": "seed", "steps": "steps"}.get(name, name)
    return f"{short}{format_number(value)}"


def _frozen_mapping(field_name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CaseError(f"{field_name} must be a mapping of keyword arguments, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise CaseError(f"{field_name} keys must be strings, got {key!r}")
    return MappingProxyType(dict(value))


def _normalize_augmentations(value: Any) -> tuple[AugmentationSpec, ...]:
    if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
        raise CaseError(
            f"augmentations must be a list of names or (name, kwargs) pairs, got {value!r}"
        )
    specs = []
    for item in value:
        if isinstance(item, str) and item:
            specs.append((item, MappingProxyType({})))
        elif (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], Mapping)):
            specs.append((item[0], _frozen_mapping(f"augmentation {item[0]!r} kwargs", item[1])))
        else:
            raise CaseError(f"augmentation {item!r} is invalid: give a name or a (name, kwargs) pair")
    return tuple(specs)


def _normalize_scales(value: Any) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(value, Mapping):
        raise CaseError(f"scales must map a scale name to field overrides, got {value!r}")
    fields = [f.name for f in dataclasses.fields(Case) if f.name != "scales"]
    normalized = {}
    for scale, overrides in value.items():
        if scale not in SCALES:
            raise CaseError(f"unknown scale {scale!r} in scales; " + choices_hint(str(scale), SCALES))
        if not isinstance(overrides, Mapping):
            raise CaseError(f"scales[{scale!r}] must be a mapping of Case fields, got {overrides!r}")
        for key in overrides:
            if key not in fields:
                raise CaseError(f"scales[{scale!r}] names no Case field {key!r}; " + choices_hint(key, fields))
        normalized[scale] = MappingProxyType(dict(overrides))
    return MappingProxyType(normalized)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
